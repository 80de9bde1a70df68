"""The systemd files: the service, its user, and a tmpfs for the debug log.

- ``hostcore.service`` runs ``hostcore serve`` as the ``hostcore`` user, hardened
  (read-only system, no home, private /tmp, no new privileges), writing only the
  directories systemd makes for it. ``Type=exec``: hostcore does not implement
  sd_notify, so ``Type=notify`` (and a watchdog) would fail its start.
- ``sysusers.d/hostcore.conf`` makes the user and every group the unit names, so a
  group the unit asks for always exists (a missing one fails the start).
- The debug log is written always (DEBUG and up): on a mount unit's tmpfs, it never
  wears the SD card and is gone at boot. Its size holds the rotated files.
- A directory outside systemd's bases (``data_dir = "/srv/hostcore"``) is made by
  ``tmpfiles.d/hostcore.conf`` instead and opened by ``ReadWritePaths=``.
"""

from __future__ import annotations

import string
from pathlib import Path

from hostcore.config import Settings
from hostcore.deploy.model import (
    LOGS_BASE,
    RUNTIME_BASE,
    SERVICE_GROUP,
    SERVICE_NAME,
    SERVICE_USER,
    STATE_BASE,
    Deployment,
    Target,
    deployment,
)

UNIT_DIR = Path("/etc/systemd/system")
SERVICE_UNIT = UNIT_DIR / f"{SERVICE_NAME}.service"
SYSUSERS_FILE = Path(f"/etc/sysusers.d/{SERVICE_NAME}.conf")
TMPFILES_FILE = Path(f"/etc/tmpfiles.d/{SERVICE_NAME}.conf")
# The run directory: hostcore gives it to the socket's group itself at start
# (hostcore.listen), search only, so nginx reaches the socket and lists nothing.
RUNTIME_DIRECTORY_MODE = 0o710
LOGS_DIRECTORY_MODE = 0o700
# When hostcore does not rotate by size (logging.max_bytes = 0), the tmpfs gets this.
DEFAULT_DEBUG_TMPFS_BYTES = 64 * 1024 * 1024
ADDRESS_FAMILIES = "AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_BLUETOOTH"
_UNESCAPED = frozenset(string.ascii_letters + string.digits + ":_.")


def render_systemd(settings: Settings, target: Target | None = None) -> dict[Path, str]:
    """The unit, the sysusers snippet, the debug log's mount and any tmpfiles lines."""
    deploy = deployment(settings, target)
    files = {
        SERVICE_UNIT: service_unit(deploy),
        SYSUSERS_FILE: sysusers(deploy),
        UNIT_DIR / mount_unit_name(deploy.debug_dir): debug_mount(deploy),
    }
    tmpfiles = tmpfiles_lines(deploy)
    if tmpfiles:
        files[TMPFILES_FILE] = tmpfiles
    return files


def escape_path(path: Path) -> str:
    """A path as systemd names its mount unit (``systemd-escape --path``)."""
    parts = [part for part in str(path).split("/") if part]
    if not parts:
        return "-"
    escaped = []
    for part in parts:
        chars = [c if c in _UNESCAPED else _hex(c) for c in part]
        if part.startswith("."):
            chars[0] = "\\x2e"
        escaped.append("".join(chars))
    return "-".join(escaped)


def _hex(char: str) -> str:
    return "".join(f"\\x{byte:02x}" for byte in char.encode())


def mount_unit_name(path: Path) -> str:
    return f"{escape_path(path)}.mount"


def _under(path: Path, base: Path) -> str | None:
    """``path`` relative to a systemd base directory, or None when outside it."""
    if path != base and path.is_relative_to(base):
        return str(path.relative_to(base))
    return None


def _directories(deploy: Deployment) -> tuple[list[str], list[Path]]:
    """The ``*Directory=`` lines for the directories under systemd's bases, and the
    directories outside them (made by tmpfiles.d, opened by ReadWritePaths=)."""
    lines: list[str] = []
    outside: list[Path] = []
    state = _under(deploy.data_dir, STATE_BASE)
    if state is None:
        outside.append(deploy.data_dir)
    else:
        lines += [f"StateDirectory={state}", f"StateDirectoryMode={deploy.data_dir_mode:04o}"]
    logs = _under(deploy.log_dir, LOGS_BASE)
    if logs is None:
        outside.append(deploy.log_dir)
    else:
        # The debug directory is the tmpfs's mount point: listed, so systemd gives it
        # (the tmpfs's root) to hostcore on every start.
        lines += [
            f"LogsDirectory={logs} {logs}/debug",
            f"LogsDirectoryMode={LOGS_DIRECTORY_MODE:04o}",
        ]
    runtime = _under(deploy.run_dir, RUNTIME_BASE)
    if runtime is None:
        outside.append(deploy.run_dir)
    else:
        lines += [
            f"RuntimeDirectory={runtime}",
            f"RuntimeDirectoryMode={RUNTIME_DIRECTORY_MODE:04o}",
        ]
    if deploy.socket.parent != deploy.run_dir:
        outside.append(deploy.socket.parent)
    return lines, outside


def tmpfiles_lines(deploy: Deployment) -> str:
    _, outside = _directories(deploy)
    if not outside:
        return ""
    lines = [
        "# hostcore's directories outside /var/lib, /var/log and /run (rendered by",
        "# `hostcore deploy systemd`): made at boot, or now with `systemd-tmpfiles --create`.",
    ]
    for path in dict.fromkeys(outside):
        lines.append(f"d {path} 0700 {SERVICE_USER} {SERVICE_GROUP} -")
    return "\n".join(lines) + "\n"


def service_unit(deploy: Deployment) -> str:
    settings = deploy.settings
    directory_lines, outside = _directories(deploy)
    lines = [
        "# hostcore's service, rendered by `hostcore deploy systemd` from the effective",
        "# configuration: render it again after changing the directories, the socket or",
        "# which plugins are enabled.",
        "[Unit]",
        "Description=hostcore host-control API",
        "After=network.target dbus.service",
        f"RequiresMountsFor={deploy.debug_dir}",
        "",
        "[Service]",
        "# hostcore does not implement sd_notify: the start is done once it is running.",
        "Type=exec",
        f"User={SERVICE_USER}",
        f"Group={SERVICE_GROUP}",
    ]
    groups = deploy.supplementary_groups
    lines += [f"# {reason}" for reason in _group_reasons(deploy)]
    lines.append(f"SupplementaryGroups={' '.join(groups)}")
    if deploy.environment:
        lines += [
            "# Values hostcore.toml does not hold, so that the service uses what this unit",
            "# prepares. They override /etc/hostcore/hostcore.toml: change them here.",
        ]
        lines += [f"Environment={name}={value}" for name, value in deploy.environment.items()]
    lines += [
        f"ExecStart={deploy.executable} serve",
        "# Re-reads the configuration and replaces workers without failing a request.",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=2",
        "# SIGTERM to hostcore, which stops its workers gracefully; the rest after the timeout.",
        "KillMode=mixed",
        f"TimeoutStopSec={settings.server.graceful_timeout_s + 5}",
        "UMask=0077",
        *directory_lines,
    ]
    if outside:
        lines.append(f"ReadWritePaths={' '.join(str(p) for p in dict.fromkeys(outside))}")
    if _under(deploy.log_dir, LOGS_BASE) is None:
        lines += [
            "# The debug log's tmpfs, hostcore's (LogsDirectory= does this under /var/log).",
            f"ExecStartPre=+/usr/bin/install -d -o {SERVICE_USER} -g {SERVICE_GROUP} -m 0700 "
            f"{deploy.debug_dir}",
        ]
    lines += [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "# The families hostcore and its plugins use: the socket, D-Bus and outbound HTTP,",
        "# netlink (links, routes, nl80211), and Bluetooth sockets for a plugin that opens them.",
        f"RestrictAddressFamilies={ADDRESS_FAMILIES}",
    ]
    capabilities = " ".join(deploy.capabilities)
    if capabilities:
        lines.append(
            f"# {capabilities}: the network and Wi-Fi plugins change links, addresses, routes"
            " and radios."
        )
    else:
        lines.append("# No capabilities: no enabled plugin changes the kernel's network state.")
    lines += [
        f"CapabilityBoundingSet={capabilities}",
        f"AmbientCapabilities={capabilities}",
        "# Per process: every connection nginx may hold (its upstream's max_conns plus each",
        "# nginx worker's idle keep-alive ones) may land on one worker, plus 3 descriptors per",
        "# store connection (database.pool_size) and per process the runner starts",
        "# (runner.max_concurrency), plus a reserve for logs, D-Bus, netlink and the listener.",
        f"LimitNOFILE={deploy.open_files_limit}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _group_reasons(deploy: Deployment) -> list[str]:
    reasons = {
        deploy.socket_group: "the socket's group (hostcore hands the socket to it)",
        "systemd-journal": "the system journal (system plugin's logs)",
        "netdev": "wpa_supplicant's D-Bus policy (Wi-Fi)",
        "_lldpd": "lldpd's control socket (network plugin's LLDP)",
    }
    return [
        f"{group}: {reasons.get(group, 'an enabled plugin')}"
        for group in deploy.supplementary_groups
    ]


def sysusers(deploy: Deployment) -> str:
    lines = [
        "# hostcore's system user, and the groups its unit names (rendered by",
        "# `hostcore deploy systemd`); `systemd-sysusers` applies it now, and at boot.",
        f'u {SERVICE_USER} - "hostcore API" {deploy.data_dir} /usr/sbin/nologin',
    ]
    lines += [f"g {group} -" for group in deploy.supplementary_groups]
    return "\n".join(lines) + "\n"


def debug_tmpfs_bytes(deploy: Deployment) -> int:
    """The current file, the rotated ones (logging.backup_count), and one more file of
    room: what hostcore rotates in process, or logrotate rotates by the same numbers."""
    logging = deploy.settings.logging
    if logging.max_bytes == 0:
        return DEFAULT_DEBUG_TMPFS_BYTES
    return logging.max_bytes * (logging.backup_count + 2)


def debug_mount(deploy: Deployment) -> str:
    size = debug_tmpfs_bytes(deploy)
    return "\n".join(
        [
            "# hostcore's debug log on tmpfs (rendered by `hostcore deploy systemd`): DEBUG",
            "# lines never reach the SD card, and are gone at boot. hostcore.service requires",
            "# it (RequiresMountsFor=) and gives its root to the hostcore user (LogsDirectory=).",
            "[Unit]",
            "Description=hostcore debug log (tmpfs)",
            "",
            "[Mount]",
            "What=tmpfs",
            f"Where={deploy.debug_dir}",
            "Type=tmpfs",
            f"Options=mode=0700,size={size},nosuid,nodev,noexec",
            "",
        ]
    )

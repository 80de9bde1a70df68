"""What a deployment is: the effective settings resolved into the facts every file needs.

The renderers (systemd, nginx, polkit, logrotate) read one :class:`Deployment`, so the
unit, the site, the rules and the rotation can never disagree about a path, a user or
a socket. Rules, each with its reason:

- **A value configured in ``/etc/hostcore/hostcore.toml`` stays there.** The service
  reads that file (and re-reads it on reload), and so does every ``hostcore`` command
  an admin runs: it is the one place to change a setting.
- **Every other deployment value is carried by the unit** (``Environment=``): a value
  left at its default is replaced by the production one (``/var/lib/hostcore``, the
  socket in the run directory, nginx's group), and one that came from the environment,
  ``--set`` or ``--config`` would not reach the service otherwise. The environment is
  above the files, so the unit and the service cannot disagree.
- **Privileges follow the enabled plugins**, nothing more: ``CAP_NET_ADMIN`` for the
  network and Wi-Fi plugins' changes, the D-Bus policy groups of the daemons they
  call (Debian 12's policies, read from ``/usr/share/dbus-1/system.d`` and
  ``/etc/dbus-1/system.d``), the journal's group for the system plugin's logs.
"""

from __future__ import annotations

import grp
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hostcore.config import SYSTEM_CONFIG, Settings, validate_plugin_settings
from hostcore.security.secret_files import group_reads_a_secret

SERVICE_USER = "hostcore"
SERVICE_GROUP = "hostcore"
SERVICE_NAME = "hostcore"
# Debian's nginx runs its workers as www-data (``user www-data;`` in nginx.conf).
WEB_USER = "www-data"
WEB_GROUP = "www-data"
SOCKET_NAME = "hostcore.sock"

STATE_BASE = Path("/var/lib")
LOGS_BASE = Path("/var/log")
RUNTIME_BASE = Path("/run")
PRODUCTION_DIRS = {
    "data_dir": STATE_BASE / SERVICE_NAME,
    "log_dir": LOGS_BASE / SERVICE_NAME,
    "run_dir": RUNTIME_BASE / SERVICE_NAME,
}
DOCUMENTED_VENV = Path("/opt/hostcore/venv")

# Connections nginx may hold open to hostcore (its upstream's max_conns, shared by
# nginx's workers), and the idle ones each nginx worker keeps for reuse.
UPSTREAM_MAX_CONNECTIONS = 512
UPSTREAM_KEEPALIVE = 16
# Descriptors a hostcore process holds besides connections and the store: the
# listener, log files, epoll, D-Bus and netlink sockets, signal pipes, the imported
# libraries' files, an outbound HTTP call.
RESERVED_DESCRIPTORS = 128
SYSTEMD_DEFAULT_SOFT_NOFILE = 1024
# Each SQLite connection holds the database, its WAL and its shared-memory file; each
# process the runner starts holds stdin, stdout and stderr pipes.
DESCRIPTORS_PER_STORE_CONNECTION = 3
DESCRIPTORS_PER_CHILD = 3

NETWORK_ADMIN_PLUGINS = ("network", "wifi")
# Groups a D-Bus policy or a socket asks for, by plugin. BlueZ's policy on Debian 12
# admits every user (``context="default"``), so the Bluetooth plugin needs none.
PLUGIN_GROUPS = {
    "system": ("systemd-journal",),  # journalctl reads the whole system journal
    "wifi": ("netdev",),  # wpa_supplicant's policy: root and netdev only
}
# Groups used only when present: lldpd's control socket is 0660 to _lldpd, and the
# group exists only where lldpd is installed (a missing group fails the unit's start).
OPTIONAL_PLUGIN_GROUPS = {"network": ("_lldpd",)}


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class Target:
    """What the settings do not say: where hostcore is installed, the host's name and
    CPUs, the certificate, and which groups exist here."""

    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    server_name: str = "_"
    cert: Path = Path("/etc/ssl/certs/hostcore.crt")
    key: Path = Path("/etc/ssl/private/hostcore.key")
    access_log: Path = Path("/var/log/nginx/hostcore.access.log")
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    group_exists: Callable[[str], bool] = _group_exists


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    target: Target
    data_dir: Path
    log_dir: Path
    run_dir: Path
    socket: Path
    socket_mode: int
    socket_group: str
    trusted_proxies: tuple[str, ...]
    environment: dict[str, str]
    plugins: frozenset[str]
    allowed_units: tuple[str, ...]

    @property
    def app_log(self) -> Path:
        return self.log_dir / "app.log"

    @property
    def debug_dir(self) -> Path:
        return self.log_dir / "debug"

    @property
    def debug_log(self) -> Path:
        return self.debug_dir / "debug.log"

    @property
    def multiprocess(self) -> bool:
        return self.settings.server.workers > 1

    @property
    def rotates_in_process(self) -> bool:
        """One process rotates its own files by size (hostcore.logging); several do not."""
        return not self.multiprocess and self.settings.logging.max_bytes > 0

    @property
    def capabilities(self) -> tuple[str, ...]:
        if any(name in self.plugins for name in NETWORK_ADMIN_PLUGINS):
            return ("CAP_NET_ADMIN",)
        return ()

    @property
    def supplementary_groups(self) -> tuple[str, ...]:
        """The socket's group (hostcore gives the socket and its directory to it, which
        needs membership), then each enabled plugin's."""
        groups = [self.socket_group]
        for plugin in sorted(self.plugins):
            groups += PLUGIN_GROUPS.get(plugin, ())
            groups += [
                g for g in OPTIONAL_PLUGIN_GROUPS.get(plugin, ()) if self.target.group_exists(g)
            ]
        return tuple(dict.fromkeys(g for g in groups if g != SERVICE_GROUP))

    @property
    def data_dir_mode(self) -> int:
        """What hostcore itself makes the data directory (hostcore.security.secret_files)."""
        return 0o711 if group_reads_a_secret(self.settings) else 0o700

    @property
    def upstream_connections(self) -> int:
        """The most connections nginx can hold to hostcore: max_conns, which idle kept-alive
        connections may exceed by each nginx worker's keepalive (nginx's documentation)."""
        return UPSTREAM_MAX_CONNECTIONS + UPSTREAM_KEEPALIVE * self.target.cpus

    @property
    def open_files_limit(self) -> int:
        """LimitNOFILE, per process: every upstream connection may land on one worker."""
        needed = (
            self.upstream_connections
            + DESCRIPTORS_PER_STORE_CONNECTION * self.settings.database.pool_size
            + DESCRIPTORS_PER_CHILD * self.settings.runner.max_concurrency
            + RESERVED_DESCRIPTORS
        )
        return max(needed, SYSTEMD_DEFAULT_SOFT_NOFILE)  # never below what it would have

    @property
    def executable(self) -> Path:
        return self.target.bin_dir / "hostcore"


def _from_system_config(settings: Settings, key: str) -> bool:
    return settings.source_of(key) == str(SYSTEM_CONFIG.absolute())


def _is_default(settings: Settings, key: str) -> bool:
    return settings.source_of(key) == "default"


def deployment(settings: Settings, target: Target | None = None) -> Deployment:
    """The deployment the effective ``settings`` describe (see the module's rules)."""
    target = target or Target()
    environment: dict[str, str] = {}

    def carried(key: str, value: str) -> None:
        if not _from_system_config(settings, key):
            environment[f"HOSTCORE_{key.upper().replace('.', '__')}"] = value

    dirs: dict[str, Path] = {}
    for key, production in PRODUCTION_DIRS.items():
        dirs[key] = production if _is_default(settings, key) else getattr(settings, key)
        carried(key, str(dirs[key]))
    server = settings.server
    socket = server.uds if server.uds is not None else dirs["run_dir"] / SOCKET_NAME
    carried("server.uds", str(socket))
    group = server.uds_group if server.uds_group is not None else WEB_GROUP
    carried("server.uds_group", group)
    if not _is_default(settings, "server.uds_mode"):
        carried("server.uds_mode", f"{server.uds_mode:03o}")
    # nginx's workers, by the kernel's credentials of the socket's peer: a header sent
    # straight to the socket by anyone else (hostcore's own user included) is not read.
    proxies = (
        (f"user:{WEB_USER}",)
        if _is_default(settings, "server.trusted_proxies")
        else tuple(server.trusted_proxies)
    )
    carried("server.trusted_proxies", ",".join(proxies))
    plugins = frozenset(
        name
        for name in ("auth", "system", "network", "wifi", "bluetooth")
        if settings.plugins.is_enabled(name)
    )
    return Deployment(
        settings=settings,
        target=target,
        data_dir=dirs["data_dir"],
        log_dir=dirs["log_dir"],
        run_dir=dirs["run_dir"],
        socket=socket,
        socket_mode=server.uds_mode,
        socket_group=group,
        trusted_proxies=proxies,
        environment=environment,
        plugins=plugins,
        allowed_units=_allowed_units(settings) if "system" in plugins else (),
    )


def _allowed_units(settings: Settings) -> tuple[str, ...]:
    from hostcore.builtin.system.schemas import SystemSettings

    checked = validate_plugin_settings(settings, "system", SystemSettings)
    assert isinstance(checked, SystemSettings)
    return tuple(checked.allowed_units)

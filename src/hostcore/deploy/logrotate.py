"""Rotation of hostcore's log files, matching what its processes do (hostcore.logging).

- One process (``server.workers = 1``) with ``logging.max_bytes`` set rotates its
  files itself, by size: logrotate must leave them alone (a file it moves would still
  be written through the process's open descriptor).
- Several processes never rotate: each opens the files with ``O_APPEND`` through a
  handler that reopens a file as soon as it has been moved. So logrotate moves them
  (no ``copytruncate``: no line is lost between the copy and the truncation), makes
  no new file (``nocreate``: hostcore makes its own, 0600) and signals nobody (a
  SIGHUP would re-read the configuration, which rotation has no reason to do).
- ``app.log`` goes with Debian's daily logrotate run: weekly, or sooner past
  ``logging.max_bytes``, keeping ``logging.backup_count`` files.
- ``debug/debug.log`` is on a small tmpfs and written always: a daily run could let it
  fill the tmpfs, so its own timer checks it every quarter of an hour, rotating past
  ``logging.max_bytes`` and keeping ``logging.backup_count`` files (the tmpfs holds
  them and one file more, :func:`hostcore.deploy.systemd.debug_tmpfs_bytes`).
"""

from __future__ import annotations

from pathlib import Path

from hostcore.config import Settings
from hostcore.deploy.model import SERVICE_GROUP, SERVICE_NAME, SERVICE_USER, Deployment, Target
from hostcore.deploy.model import deployment as deployment_of

LOGROTATE_FILE = Path(f"/etc/logrotate.d/{SERVICE_NAME}")
DEBUG_LOGROTATE_FILE = Path(f"/etc/{SERVICE_NAME}/logrotate-debug.conf")
DEBUG_STATE_FILE = Path(f"/var/lib/logrotate/{SERVICE_NAME}-debug.status")
DEBUG_SERVICE = Path(f"/etc/systemd/system/{SERVICE_NAME}-debug-logrotate.service")
DEBUG_TIMER = Path(f"/etc/systemd/system/{SERVICE_NAME}-debug-logrotate.timer")
DEBUG_CHECK_INTERVAL = "minutely"  # logrotate is cheap; a busy debug log fills a tmpfs fast
DEFAULT_DEBUG_MAXSIZE = 16 * 1024 * 1024
LOGROTATE = Path("/usr/sbin/logrotate")


def render_logrotate(settings: Settings, target: Target | None = None) -> dict[Path, str]:
    deploy = deployment_of(settings, target)
    if deploy.rotates_in_process:
        return {LOGROTATE_FILE: in_process_note(deploy)}
    return {
        LOGROTATE_FILE: app_rules(deploy),
        DEBUG_LOGROTATE_FILE: debug_rules(deploy),
        DEBUG_SERVICE: debug_service(),
        DEBUG_TIMER: debug_timer(),
    }


def in_process_note(deploy: Deployment) -> str:
    return "\n".join(
        [
            "# hostcore's logs (rendered by `hostcore deploy logrotate`): nothing to do.",
            "# One process (server.workers = 1) rotates its own files past",
            f"# logging.max_bytes ({deploy.settings.logging.max_bytes}), keeping",
            f"# logging.backup_count ({deploy.settings.logging.backup_count}); logrotate must",
            "# not move them. Render this again when server.workers changes to more than 1.",
            "",
        ]
    )


def _common(deploy: Deployment) -> list[str]:
    return [
        f"su {SERVICE_USER} {SERVICE_GROUP}",
        "missingok",
        "notifempty",
        "nocreate",
        f"rotate {deploy.settings.logging.backup_count}",
    ]


def _stanza(path: Path, options: list[str]) -> list[str]:
    return [f"{path} {{", *(f"    {option}" for option in options), "}"]


def app_rules(deploy: Deployment) -> str:
    max_bytes = deploy.settings.logging.max_bytes
    options = [*_common(deploy), "weekly"]
    if max_bytes:
        options.append(f"maxsize {max_bytes}")
    options += ["compress", "delaycompress"]
    lines = [
        "# hostcore's app.log (rendered by `hostcore deploy logrotate`). Its processes",
        "# reopen a moved file by themselves: no copytruncate, no signal, and hostcore",
        "# makes the new file (0600). Render this again if server.workers becomes 1.",
        *_stanza(deploy.app_log, options),
        "",
    ]
    return "\n".join(lines)


def debug_rules(deploy: Deployment) -> str:
    max_bytes = deploy.settings.logging.max_bytes or DEFAULT_DEBUG_MAXSIZE
    options = [*_common(deploy), f"size {max_bytes}"]
    lines = [
        "# hostcore's debug log on tmpfs (rendered by `hostcore deploy logrotate`), rotated",
        f"# by {DEBUG_TIMER.name}: uncompressed, it is in memory and short-lived.",
        *_stanza(deploy.debug_log, options),
        "",
    ]
    return "\n".join(lines)


def debug_service() -> str:
    return "\n".join(
        [
            "# Rotates hostcore's debug log (rendered by `hostcore deploy logrotate`).",
            "[Unit]",
            "Description=Rotate hostcore's debug log",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart={LOGROTATE} --state {DEBUG_STATE_FILE} {DEBUG_LOGROTATE_FILE}",
            "",
        ]
    )


def debug_timer() -> str:
    return "\n".join(
        [
            "# Checks hostcore's debug log often enough that it cannot fill its tmpfs.",
            "[Unit]",
            "Description=Rotate hostcore's debug log",
            "",
            "[Timer]",
            f"OnCalendar={DEBUG_CHECK_INTERVAL}",
            "AccuracySec=1min",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )

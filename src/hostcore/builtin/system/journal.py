"""Log entries from the systemd journal, read through ``journalctl --output=json``.

The journal has no D-Bus API for reading, and its file format is only stable
through libsystemd, so this is the one place the system plugin runs a command.

journalctl is asked for the newest ``limit`` entries *newest first*
(``--reverse``), so that when the runner's output cap cuts the stream, the
entries lost are the oldest ones; :func:`read_logs` then returns them oldest
first, newest last, like ``journalctl -n``.

When no journal exists at all (journald never ran; journalctl says "No
journal files were found") or hostcore may not read it, that is
:class:`~hostcore.errors.Unavailable`, a 503 that names the cause: an empty
list would claim the host logged nothing. Older journalctl versions exit
quietly with no output when there are no files; that reads as an empty list.
Any other failure is :class:`~hostcore.errors.CommandFailed` naming the exit
status only: journalctl's stderr quotes arguments and paths, so it goes to the
log instead.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from hostcore.errors import CommandFailed, Unavailable
from hostcore.runner import CommandResult, Runner, describe_exit

logger = logging.getLogger(__name__)

# The fields read below; journalctl adds __CURSOR and the timestamps by itself.
OUTPUT_FIELDS = ("MESSAGE", "PRIORITY", "_SYSTEMD_UNIT", "SYSLOG_IDENTIFIER", "_PID", "_HOSTNAME")
_USEC_PER_S = 1_000_000
_LOGGED_STDERR_CHARS = 1000


class LogEntryRead(BaseModel):
    """One journal entry."""

    time: float = Field(description="When it was logged (epoch seconds).")
    priority: int | None = Field(description="Syslog priority: 0 emerg ... 7 debug.")
    unit: str | None = Field(description="The systemd unit that logged it.")
    identifier: str | None = Field(description="The syslog identifier (usually the program).")
    message: str
    pid: int | None
    hostname: str | None
    cursor: str | None = Field(description="The journal's position of the entry.")


def journalctl_argv(
    *, units: Sequence[str] | None, priority: int | None, since: float | None, limit: int
) -> list[str]:
    """The journalctl command; values ride in ``--option=value``, so none reads as an option."""
    argv = [
        "journalctl",
        "--output=json",
        f"--output-fields={','.join(OUTPUT_FIELDS)}",
        # Without --all, journalctl replaces fields over 4 KiB with null.
        "--all",
        "--no-pager",
        "--reverse",
        f"--lines={limit}",
    ]
    argv += [f"--unit={unit}" for unit in units or ()]
    if priority is not None:
        argv.append(f"--priority={priority}")
    if since is not None:
        argv.append(f"--since=@{math.floor(since)}")
    return argv


async def read_logs(
    runner: Runner,
    *,
    units: Sequence[str] | None,
    priority: int | None,
    since: float | None,
    limit: int,
    timeout_s: float | None = None,
) -> list[LogEntryRead]:
    """The newest ``limit`` entries matching the filters, oldest first.

    ``units=None`` reads every unit; an empty list matches nothing. ``priority``
    keeps that level and more urgent ones; ``since`` is epoch seconds.
    """
    if limit < 1 or (units is not None and not units):
        return []
    argv = journalctl_argv(units=units, priority=priority, since=since, limit=limit)
    result = await runner.run(argv, timeout_s=timeout_s)
    entries = parse_journal_json(result.stdout, limit)
    if not entries:
        _raise_for_no_entries(result)
    entries.reverse()
    return entries


def _raise_for_no_entries(result: CommandResult) -> None:
    """Raise when journalctl printed nothing because it failed, not because nothing matched."""
    stderr = result.stderr_text
    if "No journal files were found" in stderr:
        raise Unavailable("the systemd journal is not available: no journal files were found")
    if "insufficient permissions" in stderr:
        raise Unavailable(
            "the systemd journal is not readable by hostcore: run it as a member of the "
            "systemd-journal group"
        )
    if not result.ok:
        detail = f"journalctl {describe_exit(result.returncode)}"
        logger.warning("%s; stderr ends: %r", detail, stderr[-_LOGGED_STDERR_CHARS:])
        raise CommandFailed(detail)


def parse_journal_json(stdout: bytes, limit: int) -> list[LogEntryRead]:
    """Entries from journalctl's JSON lines, in the order printed, at most ``limit``.

    A line that is not a JSON object, or lacks a timestamp or a message, is
    skipped: journalctl never prints one, but a cut stream ends in half a line.
    """
    entries: list[LogEntryRead] = []
    for line in stdout.splitlines():
        if len(entries) >= limit:
            break
        entry = _entry(line)
        if entry is not None:
            entries.append(entry)
    return entries


def _entry(line: bytes) -> LogEntryRead | None:
    try:
        fields = json.loads(line)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    timestamp = _integer(fields.get("__REALTIME_TIMESTAMP"))
    message = _text(fields.get("MESSAGE"))
    if timestamp is None or message is None:
        return None
    return LogEntryRead(
        time=timestamp / _USEC_PER_S,
        priority=_integer(fields.get("PRIORITY")),
        unit=_text(fields.get("_SYSTEMD_UNIT")),
        identifier=_text(fields.get("SYSLOG_IDENTIFIER")),
        message=message,
        pid=_integer(fields.get("_PID")),
        hostname=_text(fields.get("_HOSTNAME")),
        cursor=_text(fields.get("__CURSOR")),
    )


def _text(value: Any) -> str | None:
    """A field's value as text.

    journalctl prints a field as a string, as an array of byte values when it
    is not valid UTF-8 or holds control characters, and as an array of those
    when the entry repeats the field (the first one is kept).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        if all(isinstance(byte, int) and 0 <= byte <= 255 for byte in value):
            return bytes(value).decode("utf-8", errors="replace")
        return _text(value[0])
    return None


def _integer(value: Any) -> int | None:
    text = _text(value)
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text)

"""Journal entries: the JSON parser on fixtures, the journalctl command, and failures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from hostcore.builtin.system.journal import (
    LogEntryRead,
    journalctl_argv,
    parse_journal_json,
    read_logs,
)
from hostcore.config import RunnerSettings
from hostcore.errors import CommandFailed, CommandNotFound, Unavailable
from hostcore.runner import Runner
from tests.builtin.system.fakes import ScriptedRunner

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "journal"
REVERSE = (FIXTURES / "reverse.jsonl").read_bytes()
MALFORMED = (FIXTURES / "malformed.jsonl").read_bytes()


# --- parsing ------------------------------------------------------------------------


def test_parse_keeps_journalctl_order_and_reads_every_field() -> None:
    entries = parse_journal_json(REVERSE, 100)

    assert [entry.identifier for entry in entries] == [
        "sshd",
        "panel-ui",
        "kernel",
        "nginx",
        "systemd",
    ]
    assert entries[0] == LogEntryRead(
        time=1714564805.1009,
        priority=6,
        unit="ssh.service",
        identifier="sshd",
        message=(
            "Accepted publickey for pi from 192.168.1.20 port 51022 ssh2: "
            "ED25519 SHA256:q4nV0vJ8Yl0Zf0b3cF8m0kq1q2w3e4r5t6y7u8i9o0p"
        ),
        pid=1187,
        hostname="kitchen-panel",
        cursor=(
            "s=8a7b6c5d4e3f40a1b2c3d4e5f6a7b8c9;i=1a2b4;b=5f3c1d2ab7e94c0f9d6e8a1b2c3d4e5f;"
            "m=d6e17964;t=617633a270564;x=d3c278451ef988c4"
        ),
    )


def test_parse_decodes_a_message_given_as_bytes() -> None:
    panel = parse_journal_json(REVERSE, 100)[1]

    assert panel.message == "\x1b[32mready\x1b[0m on :8080"


def test_parse_leaves_absent_fields_none() -> None:
    kernel = parse_journal_json(REVERSE, 100)[2]

    assert kernel.unit is None
    assert kernel.pid is None
    assert (kernel.identifier, kernel.priority) == ("kernel", 4)


def test_parse_stops_at_the_limit() -> None:
    entries = parse_journal_json(REVERSE, 2)

    assert [entry.identifier for entry in entries] == ["sshd", "panel-ui"]


def test_parse_skips_what_is_not_an_entry() -> None:
    entries = parse_journal_json(MALFORMED, 100)

    assert [entry.message for entry in entries] == [
        "(root) CMD (run-parts /etc/cron.hourly)",  # the pre-v246 spaced format
        "no priority, odd pid",
        "first value",  # a repeated field: the first value
        "temp \ufffd\ufffd ok",  # invalid UTF-8, replaced
    ]
    odd = entries[1]
    assert (odd.priority, odd.pid, odd.unit) == (None, None, None)
    assert entries[2].identifier == "app"


def test_parse_counts_only_entries_against_the_limit() -> None:
    entries = parse_journal_json(MALFORMED, 2)

    assert [entry.identifier for entry in entries] == ["cron", "logger"]


@pytest.mark.parametrize(
    "stdout",
    [b"", b"\n\n", b"not json at all", b'{"MESSAGE": "x"}', b'"a string"', b"\xff\xfe"],
)
def test_parse_of_nothing_usable_is_empty(stdout: bytes) -> None:
    assert parse_journal_json(stdout, 10) == []


# --- the command --------------------------------------------------------------------


def test_argv_with_every_filter() -> None:
    argv = journalctl_argv(
        units=["ssh.service", "nginx.service"], priority=3, since=1714564800.9, limit=50
    )

    assert argv == [
        "journalctl",
        "--output=json",
        "--output-fields=MESSAGE,PRIORITY,_SYSTEMD_UNIT,SYSLOG_IDENTIFIER,_PID,_HOSTNAME",
        "--all",
        "--no-pager",
        "--reverse",
        "--lines=50",
        "--unit=ssh.service",
        "--unit=nginx.service",
        "--priority=3",
        "--since=@1714564800",
    ]


def test_argv_without_filters() -> None:
    argv = journalctl_argv(units=None, priority=None, since=None, limit=10)

    assert argv[-1] == "--lines=10"
    assert not [arg for arg in argv if arg.startswith(("--unit", "--priority", "--since"))]


def test_argv_never_lets_a_value_read_as_an_option() -> None:
    argv = journalctl_argv(units=["--file=/etc/shadow"], priority=0, since=0.0, limit=1)

    assert "--unit=--file=/etc/shadow" in argv
    assert all(arg.startswith("--") or arg == "journalctl" for arg in argv)
    assert "--file=/etc/shadow" not in argv


# --- reading ------------------------------------------------------------------------


async def test_read_logs_returns_the_newest_entries_oldest_first() -> None:
    runner = ScriptedRunner(REVERSE)

    entries = await read_logs(
        runner, units=["ssh.service"], priority=6, since=1714564700.0, limit=5, timeout_s=3.0
    )

    assert [entry.identifier for entry in entries] == [
        "systemd",
        "nginx",
        "kernel",
        "panel-ui",
        "sshd",
    ]
    assert runner.commands == [
        (
            journalctl_argv(units=["ssh.service"], priority=6, since=1714564700.0, limit=5),
            3.0,
        )
    ]


async def test_read_logs_for_no_units_runs_nothing() -> None:
    runner = ScriptedRunner(REVERSE)

    assert await read_logs(runner, units=[], priority=None, since=None, limit=5) == []
    assert runner.commands == []


async def test_read_logs_with_nothing_logged_is_empty() -> None:
    runner = ScriptedRunner(b"")

    assert await read_logs(runner, units=None, priority=None, since=None, limit=5) == []


async def test_no_journal_files_is_unavailable() -> None:
    runner = ScriptedRunner(b"", stderr=b"No journal files were found.\n")

    with pytest.raises(Unavailable, match="systemd journal is not available: no journal files"):
        await read_logs(runner, units=None, priority=None, since=None, limit=5)


async def test_a_journal_hostcore_may_not_read_is_unavailable_with_the_fix() -> None:
    runner = ScriptedRunner(
        b"",
        returncode=1,
        stderr=b"No journal files were opened due to insufficient permissions.\n",
    )

    with pytest.raises(Unavailable, match="member of the systemd-journal group"):
        await read_logs(runner, units=None, priority=None, since=None, limit=5)


async def test_another_journalctl_failure_is_command_failed_without_its_stderr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hostcore.builtin.system.journal")
    runner = ScriptedRunner(b"", returncode=1, stderr=b"Failed to parse timestamp: @1e300\n")

    with pytest.raises(CommandFailed) as caught:
        await read_logs(runner, units=None, priority=None, since=None, limit=5)

    assert caught.value.detail == "journalctl exited with status 1"
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert "Failed to parse timestamp: @1e300" in record.getMessage()


async def test_a_journalctl_killed_by_a_signal_says_so() -> None:
    runner = ScriptedRunner(b"", returncode=-9, stderr=b"")

    with pytest.raises(CommandFailed) as caught:
        await read_logs(runner, units=None, priority=None, since=None, limit=5)

    assert caught.value.detail == "journalctl was killed by signal SIGKILL"


async def test_entries_printed_before_a_failure_are_kept() -> None:
    runner = ScriptedRunner(REVERSE, returncode=1, stderr=b"Error was encountered while opening")

    entries = await read_logs(runner, units=None, priority=None, since=None, limit=5)

    assert len(entries) == 5


async def test_without_journalctl_it_is_unavailable() -> None:
    runner = ScriptedRunner(error=CommandNotFound("required command 'journalctl' is not installed"))

    with pytest.raises(Unavailable, match="'journalctl' is not installed"):
        await read_logs(runner, units=None, priority=None, since=None, limit=5)


async def test_the_real_journalctl_gives_entries_or_says_why_not() -> None:
    runner = Runner(RunnerSettings(timeout_s=5.0))
    result: Any
    try:
        result = await read_logs(runner, units=None, priority=None, since=None, limit=3)
    except Unavailable as exc:  # no journal here, or journalctl not installed
        result = exc

    if isinstance(result, list):
        assert len(result) <= 3
        assert all(isinstance(entry, LogEntryRead) for entry in result)
    else:
        assert "journal" in result.detail

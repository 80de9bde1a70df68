"""The running server as the CLI finds it: the pid file, the reload outcome, and what
``hostcore reload`` says when there is no server, another process, or no answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostcore.control import (
    PID_FILE,
    RELOAD_FILE,
    ReloadOutcome,
    ServerRecord,
    read_outcome,
    request_reload,
)
from hostcore.errors import ControlError
from tests.helpers import STOP_TIMEOUT_S, mode, wait_for

# The child stands in for a server: its command line names hostcore, as a server's does.
FAKE_SERVER = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from hostcore.control import ServerRecord

    record = ServerRecord(Path(sys.argv[1]))
    if sys.argv[2] == "answers":
        signal.signal(signal.SIGHUP, lambda *_: record.reloaded(applied=True, detail="ok"))
    else:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    record.started()
    time.sleep(60)
    """
)


@pytest.fixture
def fake_server(tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(behaviour: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-c", FAKE_SERVER, str(tmp_path), behaviour, "hostcore"]
        )
        started.append(process)
        wait_for(lambda: (tmp_path / PID_FILE).exists(), 30, "the fake server's pid file")
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def test_the_record_writes_a_private_pid_file_and_each_outcome_with_a_new_serial(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    record = ServerRecord(run_dir)
    record.started()
    assert (run_dir / PID_FILE).read_text() == f"{os.getpid()}\n"
    assert mode(run_dir / PID_FILE) == 0o600 and mode(run_dir) == 0o700
    assert read_outcome(run_dir) is None
    record.reloaded(applied=False, detail="unknown key x")
    record.reloaded(applied=True, detail="configuration reloaded")
    assert read_outcome(run_dir) == ReloadOutcome(os.getpid(), 2, True, "configuration reloaded")
    assert mode(run_dir / RELOAD_FILE) == 0o600
    assert sorted(path.name for path in run_dir.iterdir()) == [PID_FILE, RELOAD_FILE]


def test_only_the_process_that_wrote_the_files_removes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = ServerRecord(tmp_path)
    record.started()
    record.reloaded(applied=True, detail="ok")
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)  # a forked worker unwinding
    record.stopped()
    assert (tmp_path / PID_FILE).exists() and (tmp_path / RELOAD_FILE).exists()
    monkeypatch.setattr(os, "getpid", lambda: pid)
    record.stopped()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ["", "{", "not json"])
def test_a_missing_or_unparsable_outcome_is_no_outcome(tmp_path: Path, content: str) -> None:
    (tmp_path / RELOAD_FILE).write_text(content)
    assert read_outcome(tmp_path / "elsewhere") is None
    assert read_outcome(tmp_path) is None


def test_without_a_pid_file_no_server_is_running(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=f"no hostcore server is running \\(no {tmp_path}/"):
        request_reload(tmp_path, timeout_s=5)


def test_a_pid_file_that_is_not_a_number_is_named(tmp_path: Path) -> None:
    (tmp_path / PID_FILE).write_text("hostcore\n")
    with pytest.raises(ControlError, match=f"cannot read {tmp_path}/{PID_FILE}"):
        request_reload(tmp_path, timeout_s=5)


def test_a_pid_that_is_gone_or_not_a_hostcore_server_gets_no_signal(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / PID_FILE).write_text(f"{other.pid}\n")
        with pytest.raises(ControlError, match=f"names pid {other.pid}, which is not a hostcore"):
            request_reload(tmp_path, timeout_s=5)
        assert other.poll() is None, "sleep got no SIGHUP (it would have ended it)"
    finally:
        other.kill()
        other.wait(timeout=STOP_TIMEOUT_S)
    with pytest.raises(ControlError, match=f"pid {other.pid} is gone"):
        request_reload(tmp_path, timeout_s=5)


def test_a_reload_returns_the_outcome_the_server_wrote(fake_server: object, tmp_path: Path) -> None:
    process = fake_server("answers")  # type: ignore[operator]
    outcome = request_reload(tmp_path, timeout_s=30)
    assert outcome == ReloadOutcome(process.pid, 1, True, "ok")
    again = request_reload(tmp_path, timeout_s=30)
    assert again.serial == 2, "a new outcome, not the one already on disk"
    assert json.loads((tmp_path / RELOAD_FILE).read_text())["serial"] == 2


def test_a_server_that_does_not_answer_is_reported_with_the_timeout(
    fake_server: object, tmp_path: Path
) -> None:
    process = fake_server("ignores")  # type: ignore[operator]
    with pytest.raises(ControlError, match=rf"\(pid {process.pid}\) did not answer within 0.2 s"):
        request_reload(tmp_path, timeout_s=0.2)
    assert process.poll() is None, "the signal did not stop it"

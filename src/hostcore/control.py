"""The running server as the CLI finds it: its pid, and the outcome of its last reload.

``hostcore serve`` writes ``<run_dir>/hostcore.pid``. On SIGHUP the server re-reads
its configuration and writes the outcome to ``<run_dir>/hostcore.reload``;
``hostcore reload`` sends the signal and waits for that outcome, so a refused
configuration is reported to whoever asked (``systemctl reload`` shows it), not
only in the log. Both files are the server's own (0600) and removed when the
process that wrote them stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from hostcore.errors import ControlError
from hostcore.files import replace_file

PID_FILE = "hostcore.pid"
RELOAD_FILE = "hostcore.reload"
POLL_INTERVAL_S = 0.05


@dataclass(frozen=True)
class ReloadOutcome:
    pid: int
    serial: int
    applied: bool
    detail: str


class ServerRecord:
    """What a running server keeps in ``run_dir`` for the CLI."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.pid = os.getpid()
        self.serial = 0

    def started(self) -> None:
        """Call once the server handles SIGHUP: until then the signal would stop it."""
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(self.run_dir / PID_FILE, f"{self.pid}\n")

    def reloaded(self, *, applied: bool, detail: str) -> None:
        self.serial += 1
        outcome = {"pid": self.pid, "serial": self.serial, "applied": applied, "detail": detail}
        _write(self.run_dir / RELOAD_FILE, json.dumps(outcome) + "\n")

    def stopped(self) -> None:
        # gunicorn's workers are forks of this process and unwind through its frames:
        # only the process that wrote the files removes them.
        if os.getpid() != self.pid:
            return
        for name in (PID_FILE, RELOAD_FILE):
            with contextlib.suppress(OSError):  # the server is stopping: nothing to add
                (self.run_dir / name).unlink(missing_ok=True)


def request_reload(run_dir: Path, *, timeout_s: float) -> ReloadOutcome:
    """Send SIGHUP to the server that runs from ``run_dir`` and wait for its outcome."""
    pid = server_pid(run_dir)
    before = read_outcome(run_dir)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ControlError(f"no hostcore server is running (pid {pid} is gone)") from None
    except PermissionError:
        raise ControlError(
            f"not allowed to signal the server (pid {pid}): run this as its user or root"
        ) from None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outcome = read_outcome(run_dir)
        if outcome is not None and outcome != before and outcome.pid == pid:
            return outcome
        time.sleep(POLL_INTERVAL_S)
    raise ControlError(f"the server (pid {pid}) did not answer within {timeout_s:g} s")


def read_outcome(run_dir: Path) -> ReloadOutcome | None:
    try:
        found = json.loads((run_dir / RELOAD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return ReloadOutcome(
        int(found["pid"]), int(found["serial"]), bool(found["applied"]), str(found["detail"])
    )


def server_pid(run_dir: Path) -> int:
    path = run_dir / PID_FILE
    try:
        pid = int(path.read_text().strip())
    except FileNotFoundError:
        raise ControlError(f"no hostcore server is running (no {path})") from None
    except (OSError, ValueError) as exc:
        raise ControlError(f"cannot read {path}: {exc}") from None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raise ControlError(f"no hostcore server is running (pid {pid} is gone)") from None
    if b"hostcore" not in command:
        raise ControlError(f"{path} names pid {pid}, which is not a hostcore server")
    return pid


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole, so a reader never sees half a file."""
    replace_file(path, text.encode())

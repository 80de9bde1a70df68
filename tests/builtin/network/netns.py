"""Throwaway network namespaces for the network plugin's tests: real kernel state, removed after.

Each namespace gets a unique name (``hc`` + a random suffix, within IFNAMSIZ-like
limits so ``ip netns`` accepts it) and is deleted at teardown together with the
processes the test started in it (by PID; nothing else is stopped). Traffic
stays inside namespaces the test made.

Creating a namespace needs root (CI runs as root): elsewhere the tests skip and
say so, and under ``CI=true`` a missing capability fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

NETNS_DIR = Path("/run/netns")
STOP_GRACE_S = 5.0


def require_namespaces(*commands: str) -> None:
    """Skip (fail under CI) unless this process can make namespaces and has ``commands``."""
    problem = None
    if os.geteuid() != 0:
        problem = "creating network namespaces needs root (CI runs the suite as root)"
    elif shutil.which("ip") is None:
        problem = "the ip command (iproute2) is not installed"
    else:
        missing = [command for command in commands if shutil.which(command) is None]
        if missing:
            problem = f"{', '.join(missing)} not installed (.ci/run installs them)"
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the namespace tests: {problem}")
    pytest.skip(problem)


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=30)


@dataclass
class Netns:
    """One namespace: ``ip`` commands in it, and processes started in it (stopped at teardown)."""

    name: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def ip(self, *args: str) -> str:
        output: str = run(["ip", "-n", self.name, *args]).stdout
        return output

    def exec_argv(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` also gives it a mount namespace
        of its own, with /sys showing this namespace's devices)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(self.exec_argv(*argv), check=check)

    def start(self, *argv: str, **popen: object) -> subprocess.Popen[bytes]:
        """A long-running process in the namespace, stopped (by its PID) at teardown."""
        process = subprocess.Popen(self.exec_argv(*argv), **popen)  # type: ignore[call-overload]
        self.processes.append(process)
        return process

    def index(self, ifname: str) -> int:
        return int(self.ip("-o", "link", "show", "dev", ifname).split(":", 1)[0])

    def stop_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def unique_name(prefix: str = "hc") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[list[Netns]]:
    """``count`` fresh namespaces with ``lo`` up, deleted (with their processes) afterwards."""
    made: list[Netns] = []
    try:
        for _ in range(count):
            namespace = Netns(unique_name())
            run(["ip", "netns", "add", namespace.name])
            made.append(namespace)
            namespace.ip("link", "set", "lo", "up")
        yield made
    finally:
        for namespace in made:
            namespace.stop_processes()
            run(["ip", "netns", "delete", namespace.name], check=False)


def veth(a: Netns, a_name: str, b: Netns, b_name: str, *, up: bool = True) -> None:
    """A veth pair with one end in each namespace."""
    a.ip("link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name)
    if up:
        a.ip("link", "set", a_name, "up")
        b.ip("link", "set", b_name, "up")

"""Shared helpers for the HTTP benchmarks: start servers, wait until ready, run wrk, parse.

Everything here listens and connects on loopback (127.0.0.1) only, on ports the
kernel hands out as free. Every server is a child process started here and
stopped by its own PID (terminate, then kill after a timeout); every loop is
bounded in attempts and in time.

Typical use::

    with Workdir() as work, ServerGroup(work.path) as group:
        bare = group.start(bare_spec(work.path, free_port()))
        core = group.start(hostcore_spec(work.path, free_port(), "hostcore"))
        for server in group:
            wait_ready(server, "/api/v1/health")
        result = run_wrk(bare.url("/api/v1/health"), duration_s=5, connections=32, threads=1)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar

LOOPBACK = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PYTHON = sys.executable
HEALTH_PATH = "/api/v1/health"

# The uvicorn settings `hostcore serve` uses for one process (src/hostcore/serve.py,
# uvicorn_config): loop auto (uvicorn's default), lifespan on, no uvicorn access log, no
# Server header, no proxy headers (hostcore resolves X-Forwarded-For itself), graceful
# shutdown 10 s (server.graceful_timeout_s default), keep-alive 5 s. Keep in step with
# serve.py. The bare app gets the same through uvicorn's CLI. Two differences remain:
# hostcore passes log_config=None and installs its own logging (the CLI installs
# uvicorn's), and hostcore serves with its own protocol (src/hostcore/protocol.py: an
# httptools protocol with header limits and timeouts) where the bare app has uvicorn's
# httptools one (--http auto); bench/protocol.py measures that difference alone.
UVICORN_FLAGS: tuple[str, ...] = (
    "--loop",
    "auto",
    "--http",
    "auto",
    "--lifespan",
    "on",
    "--no-access-log",
    "--no-server-header",
    "--no-proxy-headers",
    "--timeout-graceful-shutdown",
    "10",
)

STOP_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0
POLL_INTERVAL_S = 0.1
WRK_TIMEOUT = "5s"  # wrk's per-request timeout; a slower answer counts as a socket error


T = TypeVar("T")


class BenchError(Exception):
    """The benchmark cannot run or its measurement is invalid."""


class MissingToolError(BenchError):
    pass


# --- processes ---------------------------------------------------------------------------


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise MissingToolError("wrk not found on PATH: install wrk: apt-get install wrk")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def base_environment() -> dict[str, str]:
    """This process's environment without any HOSTCORE_* variable, so no config leaks in."""
    return {key: value for key, value in os.environ.items() if not key.startswith("HOSTCORE_")}


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server process; ``port`` is on 127.0.0.1."""

    name: str
    argv: tuple[str, ...]
    port: int
    cwd: Path
    env: Mapping[str, str]
    description: str = ""

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"


def bare_spec(
    workdir: Path,
    port: int,
    *,
    name: str = "bare",
    app: str = "bare_app:app",
    extra_env: Mapping[str, str] | None = None,
) -> ServerSpec:
    """A baseline app in bench/ (default bare_app.py) under uvicorn's CLI, with hostcore's
    uvicorn settings; ``extra_env`` is added to its environment."""
    argv = (
        PYTHON,
        "-m",
        "uvicorn",
        "--app-dir",
        str(BENCH_DIR),
        app,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        *UVICORN_FLAGS,
    )
    env = base_environment()
    env.update(extra_env or {})
    return ServerSpec(
        name=name,
        argv=argv,
        port=port,
        cwd=workdir,
        env=env,
        description=f"uvicorn {app} " + " ".join(UVICORN_FLAGS),
    )


def hostcore_spec(
    workdir: Path,
    port: int,
    name: str = "hostcore",
    *,
    access_log: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> ServerSpec:
    """``python -m hostcore serve`` (one uvicorn process) with its own data/log/run dirs.

    The process runs with cwd = its own directory under ``workdir`` so no
    ./hostcore.toml is picked up; HOSTCORE_* from the caller's environment are dropped.
    """
    home = workdir / name
    for sub in ("data", "log", "run"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = base_environment()
    env.update(
        {
            "HOSTCORE_DATA_DIR": str(home / "data"),
            "HOSTCORE_LOG_DIR": str(home / "log"),
            "HOSTCORE_RUN_DIR": str(home / "run"),
            "HOSTCORE_LOGGING__ACCESS_LOG": "true" if access_log else "false",
        }
    )
    env.update(extra_env or {})
    argv = (PYTHON, "-m", "hostcore", "serve", "--host", LOOPBACK, "--port", str(port))
    return ServerSpec(
        name=name,
        argv=argv,
        port=port,
        cwd=home,
        env=env,
        description=f"python -m hostcore serve (access log {'on' if access_log else 'off'})"
        + "".join(f" {key}={value}" for key, value in (extra_env or {}).items()),
    )


class Server:
    """One started server process; its stdout and stderr go to a file."""

    def __init__(self, spec: ServerSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                spec.argv,
                cwd=spec.cwd,
                env=dict(spec.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Our own session: a Ctrl-C at the terminal reaches us, and we stop it.
                start_new_session=True,
            )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return self.spec.url(path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used (Linux /proc), or None."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM this PID, SIGKILL it after ``timeout_s``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    self.proc.wait(timeout=KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    return None
        return self.proc.returncode


class ServerGroup:
    """Servers started in a block and always stopped when it ends (error or Ctrl-C too)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.servers: list[Server] = []

    def start(self, spec: ServerSpec) -> Server:
        if any(s.name == spec.name for s in self.servers):
            raise BenchError(f"two servers named {spec.name}")
        server = Server(spec, self.log_dir / f"{spec.name}.out")
        self.servers.append(server)
        return server

    def __iter__(self) -> Iterator[Server]:
        return iter(self.servers)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        # Signal every process first, then wait: shutdowns overlap instead of queueing.
        for server in self.servers:
            if server.alive():
                server.proc.terminate()
        for server in self.servers:
            server.stop()


class Workdir:
    """A private temporary directory, removed at the end unless ``keep``."""

    def __init__(self, *, keep: bool = False, prefix: str = "hostcore-bench-") -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self.keep = keep

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so ``with`` blocks stop the servers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


# --- HTTP checks -------------------------------------------------------------------------

# No proxy, ever: a proxy from the environment must not sit between us and 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


def _require_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if host != LOOPBACK:
        raise BenchError(f"refusing {url}: benchmarks talk to {LOOPBACK} only")


def fetch(
    url: str, *, timeout_s: float = 2.0, headers: Mapping[str, str] | None = None
) -> HttpReply:
    """One GET; HTTP errors are returned as replies, connection errors raise OSError."""
    _require_loopback(url)
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return HttpReply(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return HttpReply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def wait_ready(server: Server, path: str = HEALTH_PATH, *, timeout_s: float = 20.0) -> HttpReply:
    """Poll ``path`` until it answers 200; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    attempts = int(timeout_s / POLL_INTERVAL_S) + 1
    last_error = "no attempt made"
    for _ in range(attempts):
        if not server.alive():
            raise BenchError(
                f"{server.name} exited with code {server.proc.returncode} before it was ready:\n"
                + server.log_tail()
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            reply = fetch(server.url(path), timeout_s=min(1.0, remaining))
        except OSError as exc:
            last_error = str(exc)
        else:
            if reply.status == 200:
                return reply
            last_error = f"HTTP {reply.status}"
        time.sleep(POLL_INTERVAL_S)
    raise BenchError(
        f"{server.name} not ready at {server.url(path)} after {timeout_s:g}s ({last_error}):\n"
        + server.log_tail()
    )


# --- wrk ---------------------------------------------------------------------------------

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TIME_RE = re.compile(r"^([0-9.]+)(us|ms|s|m|h)$")
_RPS_RE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_DIST_RE = re.compile(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", re.MULTILINE)
_AVG_RE = re.compile(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", re.MULTILINE)
_TOTAL_RE = re.compile(r"^\s+(\d+) requests in (\S+),", re.MULTILINE)
_SOCKET_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_time(text: str) -> float:
    """wrk's time strings ("812.00us", "1.23ms", "2.00s", "1.00m") in seconds."""
    match = _TIME_RE.match(text.strip())
    if match is None:
        raise BenchError(f"cannot parse wrk time {text!r}")
    return float(match.group(1)) * _TIME_UNITS[match.group(2)]


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    requests: int
    duration_s: float
    latency_avg_s: float
    latency_max_s: float
    percentiles_s: dict[str, float]  # "50", "75", "90", "99"
    socket_errors: dict[str, int]
    non_2xx: int
    raw: str = field(repr=False)

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def error_summary(self) -> str:
        parts = [f"{k} {v}" for k, v in self.socket_errors.items() if v]
        if self.non_2xx:
            parts.append(f"non-2xx/3xx {self.non_2xx}")
        return ", ".join(parts) or "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "requests_per_s": self.requests_per_s,
            "requests": self.requests,
            "duration_s": self.duration_s,
            "latency_avg_s": self.latency_avg_s,
            "latency_max_s": self.latency_max_s,
            "latency_percentiles_s": self.percentiles_s,
            "socket_errors": self.socket_errors,
            "non_2xx": self.non_2xx,
        }


def parse_wrk(output: str) -> WrkResult:
    """Parse the text wrk prints with ``--latency``."""
    rps = _RPS_RE.search(output)
    total = _TOTAL_RE.search(output)
    avg = _AVG_RE.search(output)
    percentiles = {p: parse_time(t) for p, t in _DIST_RE.findall(output)}
    if rps is None or total is None or avg is None or len(percentiles) != 4:
        raise BenchError("unexpected wrk output (was --latency given?):\n" + output)
    sockets = _SOCKET_RE.search(output)
    socket_errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    if sockets is not None:
        socket_errors = dict(zip(socket_errors, map(int, sockets.groups()), strict=True))
    non_2xx = _NON2XX_RE.search(output)
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        requests=int(total.group(1)),
        duration_s=parse_time(total.group(2)),
        latency_avg_s=parse_time(avg.group(1)),
        latency_max_s=parse_time(avg.group(3)),
        percentiles_s=percentiles,
        socket_errors=socket_errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        raw=output,
    )


def run_wrk(
    url: str,
    *,
    duration_s: int,
    connections: int,
    threads: int,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> WrkResult:
    """Load ``url`` with wrk for ``duration_s`` seconds; bounded by a process timeout.
    ``env`` replaces :func:`base_environment`; ``prefix`` runs wrk through a command
    (``taskset --cpu-list 0``)."""
    _require_loopback(url)
    if connections < threads:
        raise BenchError("wrk needs at least as many connections as threads")
    argv = [
        *prefix,
        require_wrk(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration_s}s",
        f"--timeout={WRK_TIMEOUT}",
        "--latency",
        *extra_args,
        url,
    ]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration_s + 30,
            check=False,
            env=dict(env) if env is not None else base_environment(),
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {duration_s + 30}s") from exc
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    return parse_wrk(done.stdout)


@dataclass(frozen=True)
class Measurement:
    """One wrk run against one server, with the server's CPU time spent during it."""

    server: str
    result: WrkResult
    server_cpu_s: float | None

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.server_cpu_s is None or self.result.requests == 0:
            return None
        return self.server_cpu_s / self.result.requests * 1e6

    @property
    def cpu_utilization(self) -> float | None:
        if self.server_cpu_s is None or self.result.duration_s == 0:
            return None
        return self.server_cpu_s / self.result.duration_s

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            **self.result.to_json(),
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_us_per_request": self.cpu_us_per_request,
        }


def measure(
    server: Server, path: str, *, duration_s: int, connections: int, threads: int
) -> Measurement:
    """wrk against one server, plus the CPU time that server used meanwhile."""
    return measure_with(
        server, path, duration_s=duration_s, connections=connections, threads=threads
    )


def measure_with(
    server: Server,
    path: str,
    *,
    duration_s: int,
    connections: int,
    threads: int,
    extra_args: Sequence[str] = (),
) -> Measurement:
    """``measure`` with ``extra_args`` for wrk (``header_args``, ``COUNT_SENT_ARGS``)."""
    if not server.alive():
        raise BenchError(
            f"{server.name} exited (code {server.proc.returncode}):\n" + server.log_tail()
        )
    cpu_before = server.cpu_seconds()
    result = run_wrk(
        server.url(path),
        duration_s=duration_s,
        connections=connections,
        threads=threads,
        extra_args=extra_args,
    )
    cpu_after = server.cpu_seconds()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Measurement(server.name, result, cpu)


# --- statistics and formatting -----------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f}ms"
    return f"{seconds:.2f}s"


def rotated(items: Sequence[str], shift: int) -> list[str]:
    """``items`` rotated left by ``shift``: round r starts with a different server."""
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages as text ("?" where there are none)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def say(message: str, *, to_stderr: bool = False) -> None:
    print(message, file=sys.stderr if to_stderr else sys.stdout, flush=True)


def require_environment() -> None:
    for module in ("uvicorn", "fastapi", "hostcore"):
        if importlib.util.find_spec(module) is None:
            raise BenchError(f"{module} is not importable: run with the project's .venv/bin/python")


def software() -> dict[str, str]:
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return {
        "python": sys.version.split()[0],
        "uvicorn": version("uvicorn"),
        "fastapi": version("fastapi"),
        "starlette": version("starlette"),
        "loop (auto)": loop,
        "http (auto)": http,
    }


def start_and_run(
    name: str, run: Callable[[], T], *, stopped: str
) -> tuple[T, dict[str, Any]] | int:
    """What every benchmark does around its measurement: check the tools, stop cleanly on
    SIGTERM, note the host, run. Returns (result, host facts), or the exit code on failure."""
    try:
        require_wrk()
        require_environment()
    except BenchError as exc:
        say(f"{name}: {exc}", to_stderr=True)
        return 2
    stop_on_sigterm()
    host: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg(),
        "software": software(),
    }
    try:
        result = run()
    except KeyboardInterrupt:
        say(f"{name}: interrupted; {stopped}", to_stderr=True)
        return 130
    except BenchError as exc:
        say(f"{name}: {exc}", to_stderr=True)
        say(f"{name}: FAIL (could not measure)", to_stderr=True)
        return 2
    host["loadavg_end"] = loadavg()
    return result, host


# --- authenticated load: tokens, request counts, the activity table ---------------------

# A wrk script that counts the requests wrk writes (its request() runs once per request),
# so requests still in flight when a run ends, which wrk's "N requests in" leaves out
# because it counts responses, are counted too. It prints "requests sent: N" at the end.
COUNT_SENT_SCRIPT = BENCH_DIR / "count_sent.lua"
COUNT_SENT_ARGS: tuple[str, ...] = ("--script", str(COUNT_SENT_SCRIPT))
_SENT_RE = re.compile(r"^requests sent: (\d+)$", re.MULTILINE)


def header_args(headers: Mapping[str, str]) -> list[str]:
    """wrk arguments adding ``headers`` to every request."""
    args: list[str] = []
    for name, value in headers.items():
        args += ["--header", f"{name}: {value}"]
    return args


def parse_sent(output: str) -> int:
    """The count printed by COUNT_SENT_SCRIPT in wrk's output."""
    match = _SENT_RE.search(output)
    if match is None:
        raise BenchError(f"no 'requests sent' line in wrk's output (was {COUNT_SENT_SCRIPT} used?)")
    return int(match.group(1))


def issue_token(
    spec: ServerSpec, client: str, *, scopes: Sequence[str] = (), timeout_s: float = 60.0
) -> str:
    """``hostcore token issue --client NAME`` with the server's environment and cwd.

    The client (and its scopes) must be configured in ``spec.env``, e.g.
    ``HOSTCORE_AUTH__CLIENTS__BENCH__SCOPES='["system:read"]'``. Returns the access token.
    """
    argv = [PYTHON, "-m", "hostcore", "token", "issue", "--client", client]
    for scope in scopes:
        argv += ["--scope", scope]
    try:
        done = subprocess.run(
            argv,
            cwd=spec.cwd,
            env=dict(spec.env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"hostcore token issue did not finish within {timeout_s:g}s") from exc
    if done.returncode != 0:
        raise BenchError(f"hostcore token issue failed ({done.returncode}): {done.stderr.strip()}")
    try:
        token = json.loads(done.stdout)["access_token"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError("hostcore token issue printed no access_token") from exc
    if not isinstance(token, str) or not token:
        raise BenchError("hostcore token issue printed an empty access_token")
    return token


def store_path(spec: ServerSpec) -> Path:
    """The SQLite store of a hostcore server started from ``hostcore_spec``."""
    return Path(spec.env["HOSTCORE_DATA_DIR"]) / "hostcore.db"


def activity_rows(db_path: Path, route: str) -> dict[tuple[str, str | None, int], int]:
    """Rows of the activity table for one route template, counted by method, principal and
    status. Read-only; call it after the server has stopped (it flushes on shutdown)."""
    if not db_path.is_file():
        raise BenchError(f"no store at {db_path}")
    uri = db_path.resolve().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=10.0)
    try:
        rows = connection.execute(
            "SELECT method, principal, status, count(*) FROM activity WHERE route = ? "
            "GROUP BY method, principal, status",
            (route,),
        ).fetchall()
    except sqlite3.Error as exc:
        raise BenchError(f"cannot read the activity table in {db_path}: {exc}") from exc
    finally:
        connection.close()
    return {(str(m), None if p is None else str(p), int(s)): int(n) for m, p, s, n in rows}


# A rate limit the benchmarks never reach: the limiter still runs (counts every request,
# adds the X-RateLimit-* headers), but no request is refused with 429.
UNREACHED_RATE_LIMIT = "100000000/minute"


def client_env(client: str, scopes: Sequence[str]) -> dict[str, str]:
    """HOSTCORE_* variables configuring one client with ``scopes`` (for hostcore_spec)."""
    return {f"HOSTCORE_AUTH__CLIENTS__{client.upper()}__SCOPES": json.dumps(list(scopes))}


def add_load_options(
    parser: argparse.ArgumentParser, *, per: str, min_ratio: float, ratio_help: str
) -> None:
    """The options every benchmark here has: load shape, its gate's ratio, the run's output.

    ``per`` names what one wrk run loads ("server", "target", "path")."""
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--duration", type=int, default=5, help=f"seconds of load per {per} per round (default 5)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help=f"seconds of warm-up load per {per} (default 2)"
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--min-ratio", type=float, default=min_ratio, help=f"{ratio_help} (default {min_ratio})"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=20.0, help="seconds to wait for each server"
    )
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the temp dir (servers' logs, store)"
    )
    parser.add_argument(
        "--json", dest="as_json", action="store_true", help="print the results as JSON on stdout"
    )


def check_load_options(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    extra: Sequence[tuple[bool, str]] = (),
) -> None:
    """Refuse out-of-range options (``parser.error`` exits 2), ``extra`` checks included."""
    checks = [
        (1 <= args.rounds <= 100, "--rounds must be 1..100"),
        (1 <= args.duration <= 600, "--duration must be 1..600"),
        (0 <= args.warmup <= 600, "--warmup must be 0..600"),
        (1 <= args.threads <= 64, "--threads must be 1..64"),
        (args.threads <= args.connections <= 10_000, "--connections must be threads..10000"),
        (0 < args.min_ratio <= 10, "--min-ratio must be in (0, 10]"),
        (0 < args.ready_timeout <= 300, "--ready-timeout must be in (0, 300]"),
        *extra,
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)


def rounds_json(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every measured round as JSON: its order and each target's result."""
    return [
        {"order": order, "results": {name: m.to_json() for name, m in row.items()}}
        for order, row in zip(raw["orders"], raw["rounds"], strict=True)
    ]


def report(
    as_json: bool, document: Mapping[str, Any], text: Callable[[], str], verdict: str
) -> None:
    """The JSON document on stdout (verdict on stderr), or the text report and the verdict."""
    if as_json:
        print(json.dumps(document, indent=2))
        say(verdict, to_stderr=True)
    else:
        say(text())
        say(verdict)


def add_server_option(parser: argparse.ArgumentParser, what: str) -> None:
    """--server NAME:VAR=VALUE,...: more hostcore servers with extra settings."""
    parser.add_argument(
        "--server",
        dest="extra_servers",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE[,VAR=VALUE...]",
        help=f"also measure hostcore with these extra environment variables, {what} "
        "(repeatable), e.g. --server no-activity:HOSTCORE_ACTIVITY__ENABLED=false",
    )


def check_server_option(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, reserved: Sequence[str]
) -> None:
    """Parse --server values in place; names must be unique and not ``reserved``."""
    try:
        args.extra_servers = tuple(parse_server_option(text) for text in args.extra_servers)
    except ValueError as exc:
        parser.error(str(exc))
    names = [*reserved, *(name for name, _ in args.extra_servers)]
    if len(set(names)) != len(names):
        parser.error(f"--server names must be unique and not one of {', '.join(reserved)}")


def parse_server_option(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:VAR=VALUE,VAR=VALUE`` for --server; only HOSTCORE_* variables."""
    name, sep, assignments = text.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,30}", name):
        raise ValueError(f"--server {text!r}: expected NAME:VAR=VALUE[,VAR=VALUE...]")
    env: dict[str, str] = {}
    for item in filter(None, assignments.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.startswith("HOSTCORE_"):
            raise ValueError(f"--server {text!r}: {item!r} is not HOSTCORE_VAR=VALUE")
        env[key.strip()] = value
    if not env:
        raise ValueError(f"--server {text!r}: no variables given")
    return name, env


def fmt_opt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def summarize_target(measurements: Sequence[Measurement]) -> dict[str, Any]:
    """Medians (and spread) over the rounds of one target's measurements."""
    rps = [m.result.requests_per_s for m in measurements]
    p99 = [m.result.percentiles_s["99"] for m in measurements]
    cpu = [c for m in measurements if (c := m.cpu_us_per_request) is not None]
    util = [u for m in measurements if (u := m.cpu_utilization) is not None]
    return {
        "requests_per_s_median": median(rps),
        "requests_per_s_min": min(rps),
        "requests_per_s_max": max(rps),
        "latency_p50_s_median": median([m.result.percentiles_s["50"] for m in measurements]),
        "latency_p99_s_median": median(p99),
        "latency_p99_s_worst": max(p99),
        "server_cpu_us_per_request_median": median(cpu) if cpu else None,
        "server_cpu_utilization_median": median(util) if util else None,
        "errors": sum(m.result.errors for m in measurements),
    }


def target_table(
    per: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
    *,
    label: str,
    width: int,
    p99_worst: bool = False,
) -> list[str]:
    """The per-target table of ``summarize_target`` results, header and rule included."""
    header = (
        f"{label:<{width}}{'req/s med':>10}{'min':>8}{'max':>8}{'p50':>10}"
        + (f"{'p99 med':>10}{'p99 worst':>11}" if p99_worst else f"{'p99':>10}")
        + f"{'cpu us/req':>12}{'cpu util':>10}{'errors':>8}"
    )
    lines = [header, "-" * len(header)]
    for name in names:
        s = per[name]
        worst = f"{format_time(s['latency_p99_s_worst']):>11}" if p99_worst else ""
        lines.append(
            f"{name:<{width}}{s['requests_per_s_median']:>10.0f}{s['requests_per_s_min']:>8.0f}"
            f"{s['requests_per_s_max']:>8.0f}{format_time(s['latency_p50_s_median']):>10}"
            f"{format_time(s['latency_p99_s_median']):>10}{worst}"
            f"{fmt_opt(s['server_cpu_us_per_request_median'], '{:.1f}'):>12}"
            f"{fmt_opt(s['server_cpu_utilization_median'], '{:.0%}'):>10}{s['errors']:>8}"
        )
    return lines

"""`hostcore serve` for real: one uvicorn process, and gunicorn with uvicorn workers on a socket;
a reload checked in this process (``reread``), and the data directory's mode
(``secure_data_dir``)."""

from __future__ import annotations

import grp
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from fastapi import FastAPI

from hostcore import files
from hostcore import serve as serve_module
from hostcore.config import Settings
from hostcore.control import ReloadOutcome, ServerRecord, read_outcome
from hostcore.errors import ConfigError
from hostcore.logging import LOG_FORMAT, SafeFormatter
from hostcore.security.secret_files import load_client_secrets
from hostcore.serve import CliLayers, reread, secure_data_dir
from tests.helpers import (
    STOP_TIMEOUT_S,
    accepts,
    answers,
    free_port,
    hostcore_command,
    isolated_environ,
    mode,
    run_hostcore,
    stop_group,
    wait_for,
)

pytestmark = pytest.mark.integration


class Server:
    def __init__(self, process: subprocess.Popen[bytes], log_dir: Path) -> None:
        self.process = process
        self.log_dir = log_dir

    def app_log(self) -> str:
        path = self.log_dir / "app.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def run(*args: str) -> Server:
        process = subprocess.Popen(
            hostcore_command("serve", *args),
            env=isolated_environ(tmp_path),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(process)
        return Server(process, tmp_path / "log")

    yield run
    for process in started:
        stop_group(process)


def test_gunicorn_with_two_workers_on_a_unix_socket(start: object, tmp_path: Path) -> None:
    sock = tmp_path / "run" / "hostcore.sock"
    sock.parent.mkdir(parents=True)
    server: Server = start(  # type: ignore[operator]
        "--workers", "2", "--uds", str(sock), "--set", "logging.access_log=true"
    )
    client = httpx2.Client(
        transport=httpx2.HTTPTransport(uds=str(sock)), base_url="http://hostcore"
    )
    with client:
        wait_for(lambda: accepts(sock), 30, "gunicorn to listen on the socket")
        wait_for(lambda: answers(client, "/api/v1/health"), 30, "gunicorn to answer")
        for n in range(20):
            response = client.get("/api/v1/health", headers={"X-Request-ID": f"uds-{n}"})
            assert response.json() == {"status": "ok"}
            assert response.headers["x-request-id"] == f"uds-{n}"
        assert client.get("/api/v1/plugins").status_code == 200

    wait_for(lambda: "uds-19" in server.app_log(), 10, "the access lines")
    log = server.app_log()
    assert "starting gunicorn with 2 uvicorn workers" in log
    booted = set(re.findall(r"\[(\d+)\] gunicorn.error \[-\] Booting worker with pid: \1", log))
    assert len(booted) == 2, log
    master = re.findall(r"\[(\d+)\] gunicorn.error \[-\] Listening at: unix:", log)
    assert master == [str(server.process.pid)], "the master logs in hostcore's format"
    access_pids = set(re.findall(r"\[(\d+)\] hostcore\.access \[uds-\d+\]", log))
    assert access_pids <= booted and access_pids, "workers log in hostcore's format"
    builders = re.findall(r"\[(\d+)\] hostcore\.app \[-\] app built", log)
    assert builders == [str(server.process.pid)], "workers fork from the master's app"
    assert (tmp_path / "log" / "debug" / "debug.log").is_file()

    assert server.stop() == 0
    assert not sock.exists(), "gunicorn removes its socket on a clean stop"
    assert "Shutting down: Master" in server.app_log()


def test_single_uvicorn_process_on_tcp(start: object, tmp_path: Path) -> None:
    # A module in the working directory is never imported in the server's place.
    (tmp_path / "uvicorn.py").write_text("raise SystemExit(7)\n")
    port = free_port()
    server: Server = start("--port", str(port))  # type: ignore[operator]
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as client:
        wait_for(lambda: answers(client, "/api/v1/health"), 30, "uvicorn to answer")
        assert "text/html" in client.get("/").headers["content-type"]
        assert client.get("/docs").status_code == 200
    # The command replaced itself with the server (same pid), leaving its CLI behind.
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:4] == [b"-P", b"-m", b"hostcore.server_main"]
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete, so a
    # supervisor sees the signal; systemd counts that as a clean stop.
    assert server.stop() in (0, -signal.SIGTERM)
    log = server.app_log()
    assert "hostcore 0.1.0 ready" in log
    assert "Application shutdown complete." in log


def test_reload_hands_cli_layers_to_the_reloaded_process(start: object, tmp_path: Path) -> None:
    port = free_port()
    server: Server = start(  # type: ignore[operator]
        "--reload", "--port", str(port), "--set", "server.docs=false"
    )
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as client:
        wait_for(lambda: answers(client, "/api/v1/health"), 30, "uvicorn --reload to answer")
        assert client.get("/docs").status_code == 404, "--set reached the reloaded process"
    server.stop()


# --- the socket, errors before the start, reload ----------------------------------------

MAX_REQUESTS = 20_000  # the client below stops at this many, whatever happens
RELOAD_TIMEOUT_S = 60


def fresh_connections(**transport: object) -> httpx2.Client:
    """A client that opens a connection per request, as nginx does towards its upstream."""
    return httpx2.Client(
        transport=httpx2.HTTPTransport(
            limits=httpx2.Limits(max_keepalive_connections=0),
            **transport,
        ),
        base_url="http://hostcore",
        timeout=30,
    )


class Hammer:
    """Requests one after another from a thread, each outcome kept in order."""

    def __init__(self, client: httpx2.Client, path: str) -> None:
        self.client = client
        self.path = path
        self.outcomes: list[int | str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(MAX_REQUESTS):
            if self.stop.is_set():
                return
            try:
                self.outcomes.append(self.client.get(self.path).status_code)
            except httpx2.TransportError as exc:
                self.outcomes.append(repr(exc))

    def __enter__(self) -> Hammer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(RELOAD_TIMEOUT_S)


@pytest.mark.parametrize("mode", ["uvicorn", "gunicorn"])
def test_both_modes_give_the_socket_the_same_mode_group_and_directory(
    start: object, tmp_path: Path, mode: str
) -> None:
    sock = tmp_path / "missing" / "run" / "hostcore.sock"
    workers = ["--workers", "2"] if mode == "gunicorn" else []
    server: Server = start(*workers, "--uds", str(sock))  # type: ignore[operator]
    wait_for(lambda: accepts(sock), 30, f"{mode} to listen on the socket")
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o710
    with fresh_connections(uds=str(sock)) as client:
        wait_for(lambda: answers(client, "/api/v1/health"), 30, f"{mode} to answer")
        assert client.get("/api/v1/plugins").status_code == 200  # a rate-limited route
    # Workers share their rate-limit counters through a file; one process keeps its own.
    shared_counters = tmp_path / "run" / "ratelimit.shm"
    assert shared_counters.exists() == (mode == "gunicorn")
    server.stop()
    assert not sock.exists()


def test_a_port_in_use_is_one_line_before_the_store_is_touched(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_hostcore(
            "serve", "--port", str(port), env=isolated_environ(tmp_path), cwd=tmp_path
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"hostcore: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(is another server running there?)"
    ]
    assert not (tmp_path / "data" / "hostcore.db").exists(), "no migration ran"


def test_a_socket_in_a_directory_hostcore_cannot_create_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_hostcore(
        "serve",
        "--uds",
        str(blocker / "run" / "s.sock"),
        env=isolated_environ(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"hostcore: cannot prepare the socket directory {blocker}/run")


def test_a_run_directory_hostcore_cannot_create_is_one_line_before_it_listens(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**isolated_environ(tmp_path), "HOSTCORE_RUN_DIR": str(blocker / "run")}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_hostcore("serve", "--port", str(port), env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"hostcore: cannot create the run directory {blocker}/run: Not a directory"
    ]
    assert not (tmp_path / "data" / "hostcore.db").exists(), "no migration ran"


def test_workers_on_an_ipv6_host(start: object) -> None:
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
    port = free_port()
    server: Server = start("--workers", "2", "--host", "::1", "--port", str(port))  # type: ignore[operator]
    with httpx2.Client(base_url=f"http://[::1]:{port}") as client:
        wait_for(lambda: answers(client, "/api/v1/health"), 30, "gunicorn on [::1]")
    assert f"on [::1]:{port}" in server.app_log()
    assert server.stop() == 0


def reload_during_requests(
    server: Server, client: httpx2.Client, config: Path, reload: Callable[[], None]
) -> list[int | str]:
    """Change the config while requests flow, reload, and return every request's outcome."""
    wait_for(lambda: answers(client, "/api/v1/health"), 30, "the server to answer")
    assert client.get("/docs").status_code == 200
    with Hammer(client, "/api/v1/health") as hammer:
        wait_for(lambda: len(hammer.outcomes) >= 20, 30, "requests before the reload")
        config.write_text("[server]\ndocs = false\n")
        before = len(hammer.outcomes)
        reload()
        wait_for(lambda: client.get("/docs").status_code == 404, RELOAD_TIMEOUT_S, "the reload")
        after = len(hammer.outcomes)
        wait_for(lambda: len(hammer.outcomes) >= after + 20, 30, "requests after the reload")
    assert after > before, "requests were under way while the server reloaded"
    return hammer.outcomes


def test_sighup_reloads_gunicorn_without_failing_a_request(start: object, tmp_path: Path) -> None:
    config = tmp_path / "hostcore-extra.toml"
    config.write_text("")
    sock = tmp_path / "run" / "hostcore.sock"
    server: Server = start(  # type: ignore[operator]
        "--workers", "2", "--uds", str(sock), "--config", str(config)
    )
    wait_for(lambda: accepts(sock), 30, "gunicorn to listen")
    with fresh_connections(uds=str(sock)) as client:
        outcomes = reload_during_requests(
            server, client, config, lambda: server.process.send_signal(signal.SIGHUP)
        )
    assert set(outcomes) == {200}, [o for o in outcomes if o != 200][:5]
    log = server.app_log()
    assert "configuration reloaded" in log
    builders = re.findall(r"\[(\d+)\] hostcore\.app \[-\] app built", log)
    assert builders == [str(server.process.pid)] * 2, "the master builds each app, once"
    pid_file = tmp_path / "run" / "hostcore.pid"
    assert pid_file.read_text() == f"{server.process.pid}\n", "hostcore reload finds the master"
    assert server.stop() == 0
    assert "Shutting down: Master" in server.app_log(), "gunicorn still logs after a reload"
    assert not pid_file.exists()


def test_hostcore_reload_reloads_one_uvicorn_process_without_failing_a_request(
    start: object, tmp_path: Path
) -> None:
    config = tmp_path / "hostcore-extra.toml"
    config.write_text("")
    port = free_port()
    server: Server = start("--port", str(port), "--config", str(config))  # type: ignore[operator]
    reloaded: list[subprocess.CompletedProcess[str]] = []

    def reload() -> None:
        reloaded.append(run_hostcore("reload", env=isolated_environ(tmp_path), cwd=tmp_path))

    with fresh_connections() as client:
        client.base_url = httpx2.URL(f"http://127.0.0.1:{port}")
        outcomes = reload_during_requests(server, client, config, reload)
    assert set(outcomes) == {200}, [o for o in outcomes if o != 200][:5]
    assert reloaded[0].returncode == 0, reloaded[0].stderr
    assert reloaded[0].stdout == f"hostcore (pid {server.process.pid}): configuration reloaded\n"
    assert server.process.poll() is None, "the same process serves on"


def test_a_refused_reload_is_reported_and_the_server_keeps_its_configuration(
    start: object, tmp_path: Path
) -> None:
    config = tmp_path / "hostcore-extra.toml"
    config.write_text("")
    port = free_port()
    server: Server = start("--port", str(port), "--config", str(config))  # type: ignore[operator]
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as client:
        wait_for(lambda: answers(client, "/api/v1/health"), 30, "uvicorn to answer")
        config.write_text("[server]\ndocs = false\nno_such_key = 1\n")
        result = run_hostcore("reload", env=isolated_environ(tmp_path), cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            "hostcore: configuration not reloaded, the server keeps its own: invalid "
            f"configuration: unknown key server.no_such_key (from --config {config})"
        ]
        assert client.get("/docs").status_code == 200, "the old configuration serves on"
    assert "configuration not reloaded" in server.app_log()


def test_reload_without_a_running_server_is_one_line(tmp_path: Path) -> None:
    result = run_hostcore("reload", env=isolated_environ(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr
        == f"hostcore: no hostcore server is running (no {tmp_path}/run/hostcore.pid)\n"
    )


# --- a reload checked in this process (reread), and the data directory's mode -------------

KEPT = ["server.host", "server.port", "server.uds", "run_dir"]


@pytest.fixture
def server_environ(hostcore_environ: Path) -> Path:
    """The environment a reload reads (``CliLayers.load``); returns the run directory."""
    return hostcore_environ / "run"


@pytest.fixture
def record(server_environ: Path) -> Iterator[ServerRecord]:
    """The record of a server that has started: a reload writes its outcome there."""
    started = ServerRecord(server_environ)
    started.started()
    yield started
    started.stopped()


def test_a_reload_to_a_store_url_that_cannot_be_used_is_refused_without_its_password(
    server_environ: Path, record: ServerRecord, caplog: pytest.LogCaptureFixture
) -> None:
    current = CliLayers().load()
    bad_store = CliLayers(
        overrides=("database.url=postgresql+nosuchdriver://hc:hunter2@db.local/hc",)
    )
    with caplog.at_level(logging.INFO, logger="hostcore.serve"):
        assert reread(current, bad_store, record, kept=KEPT, single_process=True) is None
    outcome = read_outcome(server_environ)
    assert outcome is not None and not outcome.applied
    assert outcome.detail.startswith(
        "database.url postgresql+nosuchdriver://hc:********@db.local/hc cannot be used"
    ), outcome.detail
    assert "hunter2" not in outcome.detail and "hunter2" not in caplog.text
    assert (
        f"configuration not reloaded, the server keeps its own: {outcome.detail}" in caplog.messages
    )
    assert "configuration reloaded" not in caplog.messages


def test_a_reload_whose_app_fails_to_build_for_any_reason_is_refused_and_logged(
    server_environ: Path,
    record: ServerRecord,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not only ConfigError and PluginError: whatever building the app raises, the server
    keeps its app, and the outcome names the failure's type, never its text."""
    current = CliLayers().load()

    def failing(settings: Settings, **options: object) -> FastAPI:
        raise RuntimeError("no pool for postgresql://hc:hunter2@db.local/hc")

    monkeypatch.setattr(serve_module, "create_app", failing)
    with caplog.at_level(logging.INFO, logger="hostcore.serve"):
        assert reread(current, CliLayers(), record, kept=KEPT, single_process=True) is None
    outcome = read_outcome(server_environ)
    assert outcome == ReloadOutcome(os.getpid(), 1, False, "building the app failed: RuntimeError")
    failure = next(
        r
        for r in caplog.records
        if r.getMessage() == "building the app from the new configuration failed"
    )
    assert failure.levelno == logging.ERROR
    assert failure.exc_info is not None and failure.exc_info[0] is RuntimeError
    failure.request_id = "-"
    logged = SafeFormatter(LOG_FORMAT).format(failure)
    assert "RuntimeError: no pool for postgresql://hc:********@db.local/hc" in logged
    assert "hunter2" not in logged
    assert (
        "configuration not reloaded, the server keeps its own: "
        "building the app failed: RuntimeError" in caplog.messages
    )


def test_a_reload_names_each_changed_key_that_waits_for_the_next_start(
    server_environ: Path, record: ServerRecord, caplog: pytest.LogCaptureFixture
) -> None:
    current = CliLayers().load()
    moved = CliLayers(overrides=("server.port=9123", "server.docs=false"))
    with caplog.at_level(logging.INFO, logger="hostcore.serve"):
        reloaded = reread(current, moved, record, kept=KEPT, single_process=True)
    assert reloaded is not None and reloaded.settings.server.docs is False
    assert reloaded.settings.server.port == 9123 != current.server.port
    assert read_outcome(server_environ) == ReloadOutcome(
        os.getpid(), 1, True, "configuration reloaded (server.port: at the next start)"
    )
    assert "server.port changed: takes effect at the next start" in caplog.messages

    same_listener = CliLayers(overrides=("server.docs=false",))
    assert reread(current, same_listener, record, kept=KEPT, single_process=True) is not None
    assert read_outcome(server_environ) == ReloadOutcome(
        os.getpid(), 2, True, "configuration reloaded"
    )


@pytest.fixture
def own_group() -> str:
    """A group that exists and that this process may give its files to."""
    return grp.getgrgid(os.getgid()).gr_name


@pytest.fixture
def someone_elses_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file in the test belongs to another user, as hostcore.files sees it."""
    monkeypatch.setattr(files.os, "geteuid", lambda: os.getuid() + 4242)


@pytest.mark.parametrize(
    "group_reads",
    [
        ("auth.clients.panel.secret_group={group}",),
        ("auth.clients.panel.shared_secret=true", "auth.secret_group={group}"),
    ],
    ids=["a client's secret", "the shared secret"],
)
def test_a_data_directory_a_group_passes_through_stays_0711_start_after_start(
    settings_factory: Callable[..., Settings],
    own_group: str,
    group_reads: tuple[str, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_factory(
        'auth.clients.panel.scopes=["*"]', *(item.format(group=own_group) for item in group_reads)
    )
    secure_data_dir(settings)  # the first start: created private
    load_client_secrets(settings)  # made passable for the group that reads a secret
    assert mode(settings.data_dir) == 0o711
    with caplog.at_level(logging.WARNING, logger="hostcore.files"):
        for _ in range(2):  # the next start, a reload
            secure_data_dir(settings)
            assert mode(settings.data_dir) == 0o711
    assert caplog.records == [], "nothing was tightened"


def test_a_passable_data_directory_of_another_user_is_accepted_when_a_group_reads_a_secret(
    settings_factory: Callable[..., Settings], own_group: str, someone_elses_files: None
) -> None:
    settings = settings_factory(
        'auth.clients.panel.scopes=["*"]', f"auth.clients.panel.secret_group={own_group}"
    )
    settings.data_dir.mkdir(mode=0o711)
    settings.data_dir.chmod(0o711)
    for _ in range(2):
        secure_data_dir(settings)
        assert mode(settings.data_dir) == 0o711


def test_without_a_group_read_secret_a_passable_data_directory_is_tightened_or_refused(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_factory()
    settings.data_dir.mkdir(mode=0o711)
    settings.data_dir.chmod(0o711)
    secure_data_dir(settings)
    assert mode(settings.data_dir) == 0o710, "ours: only the group's search bit is kept"

    settings.data_dir.chmod(0o711)
    monkeypatch.setattr(files.os, "geteuid", lambda: os.getuid() + 4242)
    with pytest.raises(ConfigError, match=r"is mode 0o711 and owned by .*make it 0o710"):
        secure_data_dir(settings)
    assert mode(settings.data_dir) == 0o711, "another user's directory is left as it is"


async def test_one_process_ticks_once_a_second_and_a_signal_wakes_it_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn's own loop ticks ten times a second, idle or not."""
    import asyncio

    import uvicorn

    monkeypatch.setattr(serve_module, "TICK_S", 3600.0)  # only a wake-up can tick
    signals = serve_module._Signals()
    try:
        server = serve_module._ReloadingServer(uvicorn.Config(FastAPI()), signals, lambda: None)
        ticks: list[int] = []

        async def on_tick(counter: int) -> bool:
            ticks.append(counter)
            return len(ticks) >= 3

        monkeypatch.setattr(server, "on_tick", on_tick)
        loop_task = asyncio.create_task(server.main_loop())
        await asyncio.sleep(0.3)
        assert ticks == [0], "no tick without a reason within the tick's second"
        server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler calls
        await asyncio.sleep(0.05)
        assert len(ticks) == 2
        signals._handle(signal.SIGHUP, None)  # a reload request
        await asyncio.wait_for(loop_task, 5.0)
        assert ticks == [0, 10, 20], "each tick refreshes the Date header (a multiple of 10)"
    finally:
        signals.restore()


def test_a_gunicorn_reload_lets_the_replaced_app_go(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The master forks every worker from its app: one it replaced must not stay behind."""
    import gc
    import weakref

    from hostcore import workers
    from hostcore.app import create_app

    first = create_app(settings)
    replaced = weakref.ref(first)
    server = workers.HostcoreGunicorn(
        settings, first, listener_fd=0, layers=CliLayers(), record=ServerRecord(tmp_path),
        debug=False,
    )  # fmt: skip
    del first
    assert server.wsgi() is replaced()
    second = create_app(settings)
    monkeypatch.setattr(
        workers, "reread", lambda *_a, **_k: serve_module.Reloaded(settings, second)
    )
    server.reload()
    assert server.wsgi() is second, "new workers fork from the new app"
    gc.freeze()  # what the next fork does
    try:
        assert replaced() is None
    finally:
        gc.unfreeze()


def test_the_server_image_reports_a_bad_configuration_in_one_line(tmp_path: Path) -> None:
    import json
    import sys

    env = isolated_environ(tmp_path)
    env["HOSTCORE_CLI_LAYERS"] = json.dumps({"config": None, "set": ["server.port=0"]})
    done = subprocess.run(
        [sys.executable, "-m", "hostcore.server_main"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr.startswith("hostcore: invalid configuration") and done.stderr.count("\n") == 1
    )

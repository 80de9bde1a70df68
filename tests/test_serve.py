"""`hostcore serve` for real: one uvicorn process, and gunicorn with uvicorn workers on a socket."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.conftest import free_port, hostcore_command, isolated_environ, wait_for

pytestmark = pytest.mark.integration

STOP_TIMEOUT_S = 20


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


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a server and every worker it forked, even when a test failed midway."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return


def accepts(path: Path) -> bool:
    """A plain connect: httpx2 leaks its socket when a unix-socket connect fails."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def answers(client: httpx2.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx2.TransportError:
        return False


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
    assert (tmp_path / "log" / "debug" / "debug.log").is_file()

    assert server.stop() == 0
    assert not sock.exists(), "gunicorn removes its socket on a clean stop"
    assert "Shutting down: Master" in server.app_log()


def test_single_uvicorn_process_on_tcp(start: object, tmp_path: Path) -> None:
    port = free_port()
    server: Server = start("--port", str(port))  # type: ignore[operator]
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as client:
        wait_for(lambda: answers(client, "/api/v1/health"), 30, "uvicorn to answer")
        assert "text/html" in client.get("/").headers["content-type"]
        assert client.get("/docs").status_code == 200
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


def test_asgi_import_string_for_external_servers(tmp_path: Path) -> None:
    sock = tmp_path / "asgi.sock"
    env = isolated_environ(tmp_path, HOSTCORE_SERVER__DOCS="false")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "--bind",
            f"unix:{sock}",
            "--no-control-socket",
            "hostcore.asgi:app",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: accepts(sock), 30, "gunicorn to listen")
        transport = httpx2.HTTPTransport(uds=str(sock))
        with httpx2.Client(transport=transport, base_url="http://hostcore") as client:
            wait_for(lambda: answers(client, "/api/v1/health"), 30, "the app to answer")
            assert client.get("/docs").status_code == 404, "the environment layer was read"
        assert (tmp_path / "log" / "app.log").is_file()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_TIMEOUT_S) == 0
    finally:
        stop_group(process)

"""Import strings for ASGI servers: the app is built on first lookup, never at import."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from fastapi import FastAPI

import hostcore.app
import hostcore.asgi
from tests.helpers import (
    STOP_TIMEOUT_S,
    accepts,
    answers,
    isolated_environ,
    stop_group,
    wait_for,
)


def test_app_factory_reads_nothing_at_import() -> None:
    assert "_app" in vars(hostcore.asgi) and hostcore.asgi._app is None
    assert callable(hostcore.app.create_app)


def test_the_app_is_built_on_the_first_lookup_and_only_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[FastAPI] = []

    def build() -> FastAPI:
        built.append(FastAPI())
        return built[-1]

    monkeypatch.setattr(hostcore.asgi, "_app", None)
    monkeypatch.setattr(hostcore.asgi, "create_app_from_environment", build)
    assert built == []
    first = hostcore.asgi.app
    assert hostcore.asgi.app is first
    assert built == [first]


def test_any_other_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"'hostcore\.asgi' has no attribute 'application'"):
        hostcore.asgi.application  # noqa: B018 - the lookup is the test


@pytest.mark.integration
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

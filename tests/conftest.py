from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hostcore.app import create_app
from hostcore.config import Settings, load_settings
from hostcore.plugins import PluginRegistry, PluginSource, object_source

ROOT = Path(__file__).resolve().parent.parent
NOWHERE = Path("/nonexistent/hostcore.toml")


def isolated_environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for hostcore subprocesses: own dirs, no HOSTCORE_* from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTCORE_")}
    env.update(
        HOSTCORE_DATA_DIR=str(tmp_path / "data"),
        HOSTCORE_LOG_DIR=str(tmp_path / "log"),
        HOSTCORE_RUN_DIR=str(tmp_path / "run"),
        HOSTCORE_AUTH__CLIENTS__TESTER__SCOPES='["*"]',
    )
    env.update(extra)
    return env


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from explicit layers only: never the machine's /etc or ./hostcore.toml."""

    def make(*overrides: str, config_file: Path | None = None, **environ: str) -> Settings:
        return load_settings(
            config_file=config_file,
            overrides=list(overrides),
            environ=isolated_environ(tmp_path, **environ),
            system_config=NOWHERE,
            local_config=NOWHERE,
        )

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def app_factory(settings: Settings) -> Callable[..., FastAPI]:
    """Build an app with exactly the given plugins (name -> module or object)."""

    def make(
        plugins: dict[str, object] | None = None, *, app_settings: Settings | None = None
    ) -> FastAPI:
        sources: list[PluginSource] = [
            object_source(name, obj) for name, obj in (plugins or {}).items()
        ]
        used = app_settings or settings
        return create_app(used, registry=PluginRegistry.load(used, sources=sources))

    return make


@pytest.fixture
def client_for() -> Iterator[Callable[[FastAPI], TestClient]]:
    """A TestClient running the app's lifespan, holding a real all-scopes token."""
    clients: list[TestClient] = []

    def make(app: FastAPI, *, authenticated: bool = True) -> TestClient:
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        if authenticated:
            client.headers.update(bearer(client))
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def hostcore_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hostcore", *args]


def run_hostcore(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        hostcore_command(*args),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def bearer(
    client: TestClient, scopes: list[str] | None = None, name: str = "tester"
) -> dict[str, str]:
    """Authorization headers with a real token minted by the running app."""
    runtime = client.app.state.security  # type: ignore[attr-defined]
    assert client.portal is not None, "use the client inside its context (client_for)"
    info = client.portal.call(runtime.issue, "client", name, scopes or ["*"])
    return {"Authorization": f"Bearer {info.access_token}"}


def failed_plugin_reason(client: TestClient, name: str) -> str:
    """Why plugin ``name`` failed (as auth:admin sees it), after checking its paths answer 503."""
    admin = bearer(client, ["auth:admin"])
    listing = {p["name"]: p for p in client.get("/api/v1/plugins", headers=admin).json()}
    assert listing[name]["state"] == "failed", listing[name]
    refused = client.get(f"/api/v1/{name}/anything")
    assert refused.status_code == 503
    assert refused.json()["error"] == "PluginUnavailable"
    reason: str = listing[name]["reason"]
    assert reason not in refused.json()["detail"], "exception texts are for auth:admin only"
    return reason

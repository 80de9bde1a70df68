"""Helpers for the security suite: a probe plugin, apps with a chosen peer, crafted credentials."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.testclient import TestClient

import hostcore.builtin.auth
from hostcore.app import create_app
from hostcore.config import Settings, load_settings
from hostcore.hookspecs import hookimpl
from hostcore.plugins import PluginRegistry, object_source
from hostcore.security import hmac as signing
from hostcore.security import users
from hostcore.security.deps import Authenticated, RequireScope
from hostcore.security.password_policy import PasswordPolicy
from hostcore.security.runtime import SecurityRuntime
from tests.conftest import NOWHERE, hostcore_command, isolated_environ, wait_for
from tests.test_serve import accepts, answers, stop_group

LOOPBACK = ("127.0.0.1", 50123)
REMOTE = ("203.0.113.5", 1234)


class Probe:
    """A plugin with one route per scope, an echo of what a signed request carried, and a socket."""

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"probe:read": "Read probes.", "probe:write": "Write probes."}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter()

        @router.get("/read", dependencies=[RequireScope("probe:read")])
        async def read(principal: Authenticated) -> dict[str, str]:
            return {"subject": principal.subject}

        @router.post("/write", dependencies=[RequireScope("probe:write")])
        async def write(request: Request) -> dict[str, Any]:
            return {"body": (await request.body()).decode(), "query": request.url.query}

        @router.get("/items/{name}", dependencies=[RequireScope("probe:read")])
        async def item(name: str) -> dict[str, str]:
            return {"name": name}

        @router.websocket("/ws", dependencies=[RequireScope("probe:read")])
        async def socket(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_json({"hello": "probe"})
            await websocket.close()

        return router


def plugins() -> dict[str, object]:
    return {"auth": hostcore.builtin.auth, "probe": Probe()}


@pytest.fixture
def serve(
    settings: Settings, app_factory: Callable[..., FastAPI]
) -> Iterator[Callable[..., TestClient]]:
    """An app with the auth and probe plugins, its lifespan running, called from ``address``."""
    clients: list[TestClient] = []

    def make(
        app_settings: Settings | None = None, *, address: tuple[str, int] = LOOPBACK
    ) -> TestClient:
        app = app_factory(plugins(), app_settings=app_settings or settings)
        client = TestClient(app, raise_server_exceptions=False, client=address)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for a module's tests that change nothing another test could notice."""
    root = tmp_path_factory.mktemp("shared-app")
    settings = load_settings(
        environ=isolated_environ(root), system_config=NOWHERE, local_config=NOWHERE
    )
    sources = [object_source(name, obj) for name, obj in plugins().items()]
    app = create_app(settings, registry=PluginRegistry.load(settings, sources=sources))
    with TestClient(app, raise_server_exceptions=False, client=LOOPBACK) as client:
        yield client


def runtime_of(client: TestClient) -> SecurityRuntime:
    runtime: SecurityRuntime = client.app.state.security  # type: ignore[attr-defined]
    return runtime


def add_user(client: TestClient, username: str, password: str, role: str) -> None:
    """A user in the app's store, added as ``hostcore user add`` would."""
    runtime = runtime_of(client)

    async def work(runtime: SecurityRuntime) -> None:
        policy = PasswordPolicy.from_settings(runtime.auth)
        async with runtime.db.session() as session, session.begin():
            await users.add(session, username, password, role, policy=policy)

    assert client.portal is not None
    client.portal.call(work, runtime)


def hmac_secret(client: TestClient, name: str = "tester") -> bytes:
    """The secret client ``name`` signs with (a made-up one for a client not on the list)."""
    path = runtime_of(client).settings.hmac_secret_path(name)
    return signing.read_secret(path) if path.exists() else b"u" * 64


def signed(
    client: TestClient,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    name: str = "tester",
    now: float | None = None,
    nonce: str | None = None,
    secret: bytes | None = None,
) -> dict[str, str]:
    """The four signing headers for a request, as a local tool would compute them."""
    return signing.signed_headers(
        hmac_secret(client, name) if secret is None else secret,
        method=method,
        path=path,
        query=query,
        client=name,
        body=body,
        now=now,
        nonce=nonce,
    )


def assert_error(response: httpx2.Response, status: int, error: str, detail: str) -> None:
    """The one error shape: exact status, error class name, and the detail (a substring)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == error, body
    assert detail in body["detail"], body


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- a real server: gunicorn with two workers on a unix socket ------------------------------

RATE_LIMITED_ROUTE = "GET /api/v1/auth/tokens"
RATE_LIMIT = 5
# These tests mint tokens in bursts (until both workers have answered): far more than
# the default login limit, which tests/security/test_logins.py checks on its own.
SERVER_CONFIG = f"""
[ratelimit.routes]
"{RATE_LIMITED_ROUTE}" = "{RATE_LIMIT}/minute"
"POST /api/v1/auth/token" = "1000/minute"
"""
ACCESS_LINE = re.compile(r"\[(\d+)\] hostcore\.access \[([A-Za-z0-9._:-]+)\] ")


@dataclass
class Sent:
    request_id: str
    sent_at: float
    response: httpx2.Response


@dataclass
class RealServer:
    """``hostcore serve --workers 2`` on a unix socket, and the CLI pointed at the same store."""

    root: Path
    env: dict[str, str]
    sock: Path
    process: subprocess.Popen[bytes]
    # Every secret a test used against this server: no log may contain any of them.
    secrets: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def hmac_secret(self, client: str = "tester") -> bytes:
        """The secret the server made for ``client`` on its first start."""
        return signing.read_secret(self.data_dir / "secrets" / f"{client}.secret")

    @property
    def console(self) -> list[Path]:
        return [self.root / "server.stdout", self.root / "server.stderr"]

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            hostcore_command(*args),
            env=self.env,
            cwd=self.root,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def connection(self) -> httpx2.Client:
        transport = httpx2.HTTPTransport(uds=str(self.sock))
        return httpx2.Client(transport=transport, base_url="http://hostcore", timeout=10)

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        request_id: str | None = None,
    ) -> Sent:
        """One request on a connection of its own, so the kernel may hand it to either worker."""
        request_id = request_id or f"sec-{uuid.uuid4().hex[:12]}"
        with self.connection() as http:
            sent_at = time.time()
            response = http.request(
                method,
                path,
                headers={**(headers or {}), "X-Request-ID": request_id},
                content=content,
            )
        return Sent(request_id, sent_at, response)

    def burst(self, count: int, make: Callable[[int], Sent]) -> list[Sent]:
        """``count`` requests at once, from as many threads."""
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(make, range(count)))

    def app_log(self) -> str:
        path = self.log_dir / "app.log"
        return path.read_text() if path.exists() else ""

    def workers_of(self, sent: list[Sent]) -> dict[str, str]:
        """request id -> pid of the worker that wrote its access line."""
        wanted = {item.request_id for item in sent}
        found: dict[str, str] = {}

        def logged() -> bool:
            found.update(
                (request_id, pid)
                for pid, request_id in ACCESS_LINE.findall(self.app_log())
                if request_id in wanted
            )
            return wanted <= set(found)

        wait_for(logged, 10, "the access lines of the requests")
        return found


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    root = tmp_path_factory.mktemp("real-server")
    sock = root / "run" / "hostcore.sock"
    sock.parent.mkdir(mode=0o700)
    config = root / "server.toml"
    config.write_text(SERVER_CONFIG)
    env = isolated_environ(
        root,
        HOSTCORE_SERVER__UDS=str(sock),
        HOSTCORE_SERVER__WORKERS="2",
        HOSTCORE_AUTH__CLIENTS__LIMITED__SCOPES='["*"]',
        # The access line names the worker (pid) that served each request id.
        HOSTCORE_LOGGING__ACCESS_LOG="true",
    )
    with (root / "server.stdout").open("wb") as out, (root / "server.stderr").open("wb") as err:
        process = subprocess.Popen(
            hostcore_command("serve", "--config", str(config)),
            env=env,
            cwd=root,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    server = RealServer(root, env, sock, process)
    try:
        wait_for(lambda: accepts(sock), 30, "gunicorn to listen on the socket")
        with server.connection() as http:
            wait_for(lambda: answers(http, "/api/v1/health"), 30, "the workers to answer")
        yield server
    finally:
        stop_group(process)

"""Helpers the test modules share; fixtures live in the conftest files and use these.

- processes and waiting: an isolated environment, ``hostcore`` as a command, bounded
  waits, stopping a server with its workers;
- credentials: real tokens from a running app, HMAC-signed headers, the one error shape;
- plugins the tests register as objects (no entry point needed);
- a real uvicorn server in a thread of the test process (``ServerThread``);
- ``hostcore serve --workers 2`` on a unix socket (``RealServer``).

Domain fakes stay with their tests: ``tests/builtin/system/fakes.py`` (daemons on a
private D-Bus) and ``tests/builtin/system/trees.py`` (captured /proc and /sys trees).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx2
import jwt
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text

import hostcore.builtin.auth
from hostcore.config import ServerSettings
from hostcore.db.engine import Database
from hostcore.errors import NotFound
from hostcore.hookspecs import hookimpl
from hostcore.protocol import server_protocols
from hostcore.security import hmac as signing
from hostcore.security import users
from hostcore.security.deps import Authenticated, Public, RequireScope
from hostcore.security.password_policy import PasswordPolicy
from hostcore.security.runtime import SecurityRuntime

ROOT = Path(__file__).resolve().parent.parent
NOWHERE = Path("/nonexistent/hostcore.toml")
STOP_TIMEOUT_S = 20
TOKEN_PATH = "/api/v1/auth/token"

AppFactory = Callable[..., FastAPI]
"""The ``app_factory`` fixture: ``app_factory({name: plugin}, app_settings=...)``."""
ClientFor = Callable[[FastAPI], TestClient]
"""The ``client_for`` fixture: a running TestClient holding an all-scopes token."""

# --- processes and waiting -------------------------------------------------------------


def postgres_url() -> str:
    """The PostgreSQL database of the store tests (``HOSTCORE_TEST_POSTGRES_URL``, made by
    .ci/postgres.sh): skipped without one, and a failure in CI, which must provide it."""
    url = os.environ.get("HOSTCORE_TEST_POSTGRES_URL")
    if url is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must provide HOSTCORE_TEST_POSTGRES_URL (see .ci/postgres.sh)")
        pytest.skip("set HOSTCORE_TEST_POSTGRES_URL to a PostgreSQL database (.ci/postgres.sh)")
    return url


async def empty_postgres(url: str) -> None:
    """Drop everything in the database's public schema: each test starts from nothing."""
    db = Database(url)
    async with db.engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await db.dispose()


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until ``predicate`` holds; ``timeout`` only guards against a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def wait_until(predicate: Callable[[], bool], limit_s: float, what: str) -> None:
    """``wait_for`` for a test on the event loop: other tasks run while it polls."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {limit_s}s waiting for {what}")


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


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], status: int, *fragments: str
) -> None:
    """A CLI failure: the exit status, and one ``hostcore: …`` line naming each fragment."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert result.stderr.startswith("hostcore: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


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


def mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


# --- credentials and answers -----------------------------------------------------------


def runtime_of(client: TestClient) -> SecurityRuntime:
    runtime: SecurityRuntime = client.app.state.security  # type: ignore[attr-defined]
    return runtime


def bearer(
    client: TestClient,
    scopes: list[str] | None = None,
    name: str = "tester",
    *,
    ttl_s: int | None = None,
) -> dict[str, str]:
    """Authorization headers with a real token minted by the running app."""
    runtime = runtime_of(client)
    assert client.portal is not None, "use the client inside its context (client_for)"
    info = client.portal.call(runtime.issue, "client", name, scopes or ["*"], ttl_s)
    return {"Authorization": f"Bearer {info.access_token}"}


def authorization(token: str) -> dict[str, str]:
    """The header that sends ``token`` as a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def kid_of(token: str) -> str:
    """The signing key a token names (its header is not verified)."""
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def post_signed(
    client: TestClient, body: dict[str, object], name: str = "tester"
) -> httpx2.Response:
    """``POST /api/v1/auth/token`` with ``body``, HMAC-signed as client ``name``."""
    content = json.dumps(body).encode()
    headers = {
        **signed(client, "POST", TOKEN_PATH, body=content, name=name),
        "content-type": "application/json",
    }
    return client.post(TOKEN_PATH, content=content, headers=headers)


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


def activity_rows(client: TestClient, request_id: str) -> list[tuple[Any, ...]]:
    """(principal, method, route, status) of each activity row of ``request_id``, once the
    app's recorder has written what it holds (a SQLite store in the data directory)."""
    runtime = runtime_of(client)
    assert runtime.activity is not None and client.portal is not None
    client.portal.call(runtime.activity.flush)
    database = runtime.settings.data_dir / "hostcore.db"
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT principal, method, route, status FROM activity WHERE request_id = ?",
            (request_id,),
        ).fetchall()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- plugins the tests register ---------------------------------------------------------

LOOPBACK = ("127.0.0.1", 50123)
REMOTE = ("203.0.113.5", 1234)
WHOAMI = "/api/v1/auth/whoami"
PROBE_READ = "/api/v1/probe/read"
PROBE_WRITE = "/api/v1/probe/write"
Serve = Callable[..., TestClient]
"""The ``serve`` fixture: ``serve(settings, address=...)`` starts an auth-and-probe app."""


class EchoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word: str = "echo"


class Echo:
    """A healthy plugin with a route, settings and a scope."""

    @hookimpl
    def hostcore_settings_model(self) -> type[BaseModel]:
        return EchoSettings

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"echo:read": "Read echoes."}

    @hookimpl
    def hostcore_routes(self, config: EchoSettings) -> APIRouter:
        router = APIRouter(dependencies=[RequireScope("echo:read")])

        @router.get("/word")
        async def word() -> dict[str, str]:
            return {"word": config.word}

        @router.get("/missing")
        async def missing() -> None:
            raise NotFound("there is no such thing")

        @router.get("/crash")
        async def crash() -> None:
            raise RuntimeError("secret internals /etc/shadow")

        return router


class Broken:
    """A plugin whose startup raises."""

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter(dependencies=[Public])

        @router.get("/thing")
        async def thing() -> dict[str, str]:
            return {"thing": "never served"}

        return router

    @hookimpl
    async def hostcore_startup(self) -> None:
        raise OSError("device /dev/widget not found")


class Mounting:
    """A plugin that serves static files at a fixed mount."""

    def __init__(self, directory: Path, mount: str = "/ui") -> None:
        self.directory = directory
        self.mount = mount

    @hookimpl
    def hostcore_static_mounts(self) -> dict[str, Path]:
        return {self.mount: self.directory}


class Lifecycle:
    """Records startup, shutdown and health calls."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    async def hostcore_startup(self, app: FastAPI, config: Any) -> None:
        self.events.append("startup")
        app.state.lifecycle_started = True

    @hookimpl
    def hostcore_shutdown(self, app: FastAPI) -> None:
        self.events.append("shutdown")

    @hookimpl
    async def hostcore_health(self) -> dict[str, Any]:
        return {"status": "degraded", "detail": "fan slow"}


class TeapotError(Exception):
    pass


class Teapot:
    """A plugin mapping its own exception to a response."""

    @hookimpl
    def hostcore_exception_handlers(self) -> dict[type[Exception], Any]:
        async def teapot(request: Any, exc: TeapotError) -> JSONResponse:
            return JSONResponse({"error": "Teapot", "detail": str(exc)}, status_code=418)

        return {TeapotError: teapot}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter(dependencies=[Public])

        @router.get("/brew")
        async def brew() -> None:
            raise TeapotError("short and stout")

        return router


class Plain:
    """A plugin with no hooks at all, usable under any name."""


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


def auth_and_probe() -> dict[str, object]:
    """The plugins of the security tests' apps: the auth plugin and a Probe."""
    return {"auth": hostcore.builtin.auth, "probe": Probe()}


# --- a real uvicorn server in a thread of the test process --------------------------------

SERVER_START_TIMEOUT_S = 10


def loopback_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(64)
    return sock


class ServerThread:
    """A real uvicorn server in a thread of the test process, on loopback or a unix socket.

    For tests of what happens on the wire (hostcore.protocol, the log sinks) without
    the seconds a server process takes to start. The server stops when the ``with``
    block ends: its thread is joined, bounded in time.
    """

    def __init__(
        self,
        app: Any,
        server: ServerSettings | None = None,
        *,
        listener: socket.socket | None = None,
        **config: Any,
    ) -> None:
        self.listener = listener or loopback_listener()
        options = {
            "log_config": None,
            "lifespan": "off",
            "access_log": False,
            "timeout_graceful_shutdown": 5,
            **server_protocols(server or ServerSettings()),
            **config,
        }
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.listener]}, daemon=True
        )

    @property
    def address(self) -> Any:
        return self.listener.getsockname()

    def connect(self) -> socket.socket:
        family = self.listener.family
        client = socket.socket(family, socket.SOCK_STREAM)
        client.settimeout(STOP_TIMEOUT_S)
        client.connect(self.address)
        return client

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for(lambda: self.server.started, SERVER_START_TIMEOUT_S, "the server thread to start")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT_S)
        assert not self.thread.is_alive(), "the server thread did not stop"


def read_response(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


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


def start_real_server(
    root: Path, *args: str, argv_prefix: Sequence[str] = (), **environ: str
) -> RealServer:
    """``hostcore serve --workers 2`` on ``root/run/hostcore.sock`` with the access log on
    (it names the worker of each request id), ``environ`` added, run through
    ``argv_prefix`` (``ip netns exec NAME``) when given; returned once the workers
    answer. Stop it with ``stop_group(server.process)``."""
    sock = root / "run" / "hostcore.sock"
    sock.parent.mkdir(mode=0o700, exist_ok=True)
    env = isolated_environ(
        root,
        HOSTCORE_SERVER__UDS=str(sock),
        HOSTCORE_SERVER__WORKERS="2",
        HOSTCORE_LOGGING__ACCESS_LOG="true",
        **environ,
    )
    with (root / "server.stdout").open("wb") as out, (root / "server.stderr").open("wb") as err:
        process = subprocess.Popen(
            [*argv_prefix, *hostcore_command("serve", *args)],
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
    except BaseException:
        stop_group(process)
        raise
    return server

"""The client against a real uvicorn server that checks signatures from what it received."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hostcore.client import HostcoreClient
from hostcore.config import Settings
from hostcore.errors import ConfigError
from hostcore.security import hmac as signing
from tests.helpers import accepts, free_port, wait_for

SECRET = secrets.token_hex(32).encode()
START_TIMEOUT_S = 5


async def echo(request: Request) -> JSONResponse:
    """Verify the signature from the raw request, and report what the app saw."""
    body = await request.body()
    headers = request.headers
    try:
        timestamp = signing.parse_timestamp(headers.get(signing.TIMESTAMP_HEADER, ""))
    except ValueError:
        return JSONResponse({"matched": False})
    matched = signing.signature_matches(
        SECRET,
        headers.get(signing.SIGNATURE_HEADER, ""),
        method=request.method,
        path=request.scope["raw_path"].decode("ascii"),
        query=request.scope["query_string"].decode("latin-1"),
        client=headers.get(signing.CLIENT_HEADER, ""),
        timestamp=timestamp,
        nonce=headers.get(signing.NONCE_HEADER, ""),
        body_sha256=signing.body_digest(body),
    )
    return JSONResponse(
        {
            "matched": matched,
            "method": request.method,
            "path": request.scope["path"],
            "params": [list(pair) for pair in request.query_params.multi_items()],
            "json": json.loads(body) if body else None,
            "content_type": headers.get("content-type"),
        }
    )


app = Starlette(
    routes=[Route("/{rest:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
)


@contextmanager
def serving(**options: Any) -> Iterator[None]:
    """Run uvicorn in a thread for the duration of the block."""
    config = uvicorn.Config(
        app, lifespan="off", ws="none", loop="asyncio", log_config=None, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), START_TIMEOUT_S, "uvicorn")
        assert server.started, "uvicorn did not start"
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module", params=["h11", "httptools"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    chosen = free_port()
    with serving(host="127.0.0.1", port=chosen, http=request.param):
        yield chosen


@pytest.fixture
def connect(port: int) -> Iterator[Callable[..., HostcoreClient]]:
    opened: list[HostcoreClient] = []

    def make(secret: bytes = SECRET, client: str = "cli") -> HostcoreClient:
        made = HostcoreClient(base_url=f"http://127.0.0.1:{port}", client=client, secret=secret)
        opened.append(made)
        return made

    yield make
    for made in opened:
        made.close()


CASES: list[tuple[str, str, Any, Any]] = [
    ("GET", "/system", None, None),
    ("GET", "/files/a b/ü/x%2Fy", {"q": "a b+c&d=e/?#%", "ü": "✓ 日本", "empty": ""}, None),
    ("GET", "/tags", [("tag", "b"), ("tag", "a"), ("a", "~-._")], None),
    ("POST", "/items", {"dry run": "yes"}, {"name": "café ☕", "n": [1, 2.5, None], "o": {}}),
    ("PUT", "/items/1", None, {"text": 'line\nnext "quoted" \\ \u2028'}),
    ("PATCH", "/items/1", None, []),
    ("DELETE", "/items/1", {"force": "1"}, None),
]


@pytest.mark.parametrize(("method", "path", "params", "body"), CASES)
def test_signs_what_goes_over_the_wire(
    connect: Callable[..., HostcoreClient], method: str, path: str, params: Any, body: Any
) -> None:
    response = connect().request(method, path, params=params, json=body)
    assert response.status_code == 200
    seen = response.json()
    assert seen["matched"] is True
    assert seen["method"] == method
    assert seen["path"] == path.replace("%2F", "/")
    pairs = list(params.items()) if isinstance(params, dict) else params or []
    assert seen["params"] == [list(pair) for pair in pairs]
    assert seen["json"] == body
    assert seen["content_type"] == (None if body is None else "application/json")


def test_conveniences(connect: Callable[..., HostcoreClient]) -> None:
    with connect() as client:
        responses = [
            client.get("/a", params={"x": "1"}),
            client.post("/a", json={"x": 1}),
            client.put("/a", json={"x": 2}),
            client.patch("/a", json={"x": 3}),
            client.delete("/a"),
        ]
    assert [r.json()["method"] for r in responses] == ["GET", "POST", "PUT", "PATCH", "DELETE"]
    assert all(r.json()["matched"] for r in responses)


def test_a_query_in_the_path_joins_the_params(connect: Callable[..., HostcoreClient]) -> None:
    seen = connect().get("/search?b=2&a=1", params={"c": "3"}).json()
    assert seen["matched"] is True
    assert seen["params"] == [["b", "2"], ["a", "1"], ["c", "3"]]


def test_another_secret_does_not_match(connect: Callable[..., HostcoreClient]) -> None:
    seen = connect(secret=b"w" * 32).post("/items", json={"x": 1}).json()
    assert seen["matched"] is False


def test_every_request_has_a_fresh_nonce(connect: Callable[..., HostcoreClient]) -> None:
    client = connect()
    nonces = {client.get("/").request.headers[signing.NONCE_HEADER] for _ in range(3)}
    assert len(nonces) == 3


@pytest.fixture
def uds(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "s.sock"
    with serving(uds=str(path)):
        wait_for(lambda: accepts(path), START_TIMEOUT_S, "the unix socket")
        yield path


def test_unix_socket(uds: Path) -> None:
    with HostcoreClient(uds=uds, client="cli", secret=SECRET) as client:
        seen = client.post("/items", params={"a b": "ü"}, json={"name": "café"}).json()
    assert seen["matched"] is True
    assert seen["params"] == [["a b", "ü"]]
    assert seen["json"] == {"name": "café"}


def write_secret(path: Path, secret: bytes) -> Path:
    path.write_bytes(secret + b"\n")
    return path


def test_from_settings_unix_socket_and_own_secret(
    uds: Path, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(
        f"server.uds={uds}",
        f"auth.hmac_secret_file={write_secret(tmp_path / 'shared', b'x' * 64)}",
        f"auth.clients.tool.secret_file={write_secret(tmp_path / 'tool', SECRET)}",
        "auth.clients.other.shared_secret=true",
    )
    with HostcoreClient.from_settings(settings, "tool") as tool:
        assert tool.get("/").json()["matched"] is True
    with HostcoreClient.from_settings(settings, "other") as other:
        assert other.get("/").json()["matched"] is False


def test_from_settings_signs_with_the_clients_own_file_in_the_secrets_directory(
    uds: Path, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(f"server.uds={uds}", f"data_dir={tmp_path / 'data'}")
    secrets_dir = tmp_path / "data" / "secrets"
    secrets_dir.mkdir(parents=True)
    write_secret(secrets_dir / "panel.secret", SECRET)
    write_secret(secrets_dir / "hmac.secret", b"x" * 64)
    with HostcoreClient.from_settings(settings, "panel") as panel:
        assert panel.get("/").json()["matched"] is True
    with pytest.raises(ConfigError, match="cannot read HMAC secret"):
        HostcoreClient.from_settings(settings, "ghost")


def test_from_settings_reaches_a_wildcard_host_on_loopback(
    port: int, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(
        "server.host=0.0.0.0",
        f"server.port={port}",
        f"auth.hmac_secret_file={write_secret(tmp_path / 'shared', SECRET)}",
        "auth.clients.cli.shared_secret=true",
    )
    with HostcoreClient.from_settings(settings, "cli") as client:
        assert client.base_url == f"http://127.0.0.1:{port}"
        assert client.get("/").json()["matched"] is True


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("::", "http://[::1]:8123"),
        ("::1", "http://[::1]:8123"),
        ("10.0.0.2", "http://10.0.0.2:8123"),
    ],
)
def test_from_settings_base_url(
    host: str, base_url: str, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(
        f"server.host={host}",
        "server.port=8123",
        f"data_dir={tmp_path}",
    )
    settings.hmac_secret_path("cli").parent.mkdir(parents=True)
    write_secret(settings.hmac_secret_path("cli"), SECRET)
    with HostcoreClient.from_settings(settings, "cli") as client:
        assert client.base_url == base_url


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"base_url": "http://127.0.0.1:1", "uds": "/nonexistent.sock"},
        {"base_url": "http://127.0.0.1:1", "client": "Not Valid"},
    ],
)
def test_constructor_refuses(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"base_url|client"):
        HostcoreClient(**{"client": "cli", "secret": SECRET, **arguments})


def test_relative_paths_are_refused() -> None:
    with HostcoreClient(base_url="http://127.0.0.1:1", client="cli", secret=SECRET) as client:
        for path in ("system", "http://elsewhere/system"):
            with pytest.raises(ValueError, match="must start with '/'"):
                client.get(path)


def test_the_address_names_the_url_or_the_unix_socket(tmp_path: Path) -> None:
    """What error messages name: where the requests go."""
    with HostcoreClient(base_url="http://127.0.0.1:8123", client="cli", secret=SECRET) as tcp:
        assert tcp.address == "http://127.0.0.1:8123"
    with HostcoreClient(uds=tmp_path / "s.sock", client="cli", secret=SECRET) as local:
        assert local.address == f"unix socket {tmp_path / 's.sock'}"

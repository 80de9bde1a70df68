"""The outermost layer: request context and id, liveness, refusals before routing (each
counted against the caller's address), the response headers every answer carries, the
last-resort 500, and the record of every request and websocket."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator

import httpx2
import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

import hostcore.builtin.auth
from hostcore.config import Settings
from hostcore.context import context_of
from hostcore.hookspecs import hookimpl
from hostcore.middleware import RequestContextMiddleware, RequestIds
from hostcore.security.deps import Public
from tests.helpers import (
    AppFactory,
    Broken,
    ClientFor,
    Echo,
    Serve,
    activity_rows,
    assert_error,
    bearer,
)


@pytest.fixture
def client(app_factory: AppFactory, client_for: ClientFor) -> TestClient:
    return client_for(app_factory({"echo": Echo()}))


def test_health_is_liveness(client: TestClient) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    probe = client.head("/api/v1/health")
    assert probe.status_code == 200 and probe.content == b""
    assert probe.headers["content-length"] == "15"


def test_500_never_leaks_and_is_logged_with_the_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.get("/api/v1/echo/crash", headers={"X-Request-ID": "crash-1"})
    assert response.status_code == 500
    assert response.json() == {
        "error": "InternalError",
        "detail": "internal server error (request id crash-1)",
    }
    assert "shadow" not in response.text and "Traceback" not in response.text
    assert response.headers["x-request-id"] == "crash-1"
    record = next(r for r in caplog.records if r.getMessage().startswith("unhandled error"))
    assert record.exc_info is not None
    assert "secret internals" in str(record.exc_info[1])


# --- request ids and limits -----------------------------------------------------------


def test_request_id_is_generated(client: TestClient) -> None:
    first = client.get("/api/v1/health").headers["x-request-id"]
    second = client.get("/api/v1/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


def test_well_formed_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/api/v1/health", headers={"X-Request-ID": "panel-42.a_b:c"})
    assert response.headers["x-request-id"] == "panel-42.a_b:c"


@pytest.mark.parametrize("bad", ["", "x" * 200, "a b", "a\u00e9", "-leading", "a;rm -rf /"])
def test_malformed_request_id_is_replaced(client: TestClient, bad: str) -> None:
    response = client.get("/api/v1/health", headers={"X-Request-ID": bad.encode("utf-8")})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_huge_body_is_refused_before_it_is_read(
    app_factory: AppFactory, client_for: ClientFor, settings_factory: Callable[..., Settings]
) -> None:
    seen: list[int] = []

    class Upload:
        @hookimpl
        def hostcore_routes(self) -> APIRouter:
            router = APIRouter(dependencies=[Public])

            @router.post("/blob")
            async def blob(payload: dict[str, str]) -> dict[str, int]:
                seen.append(len(payload))
                return {"keys": len(payload)}

            return router

    settings = settings_factory("server.max_body_bytes=2048")
    client = client_for(app_factory({"up": Upload()}, app_settings=settings))
    big = {"data": "x" * 4096}
    response = client.post("/api/v1/up/blob", json=big)
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLarge"

    def chunks() -> object:
        yield b'{"data": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}'

    chunked = client.post(
        "/api/v1/up/blob", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    assert seen == []
    assert client.post("/api/v1/up/blob", json={"a": "b"}).json() == {"keys": 1}


def test_the_liveness_probe_needs_no_credentials(client: TestClient) -> None:
    for method in ("GET", "HEAD"):
        answer = client.request(method, "/api/v1/health", headers={"Authorization": "Bearer x"})
        assert answer.status_code == 200, "liveness never authenticates"


def test_a_malformed_content_length_is_400_before_routing(client: TestClient) -> None:
    answer = client.post("/api/v1/echo/word", content=b"{}", headers={"Content-Length": "1e3"})
    assert answer.status_code == 400
    assert answer.json() == {"error": "BadRequest", "detail": "Content-Length is not a number"}


def test_every_answer_carries_the_request_id_and_the_callers_budget(client: TestClient) -> None:
    for path in ("/api/v1/echo/word", "/api/v1/echo/missing", "/api/v1/nothing"):
        answer = client.get(path, headers={"X-Request-ID": "budget-1"})
        assert answer.headers["x-request-id"] == "budget-1"
        assert int(answer.headers["x-ratelimit-remaining"]) >= 0, path


def test_request_ids_are_unique_and_differ_between_processes() -> None:
    ids = RequestIds()
    first = {ids.of(None) for _ in range(1000)}
    assert len(first) == 1000
    other = RequestIds()
    assert other.of(None)[:16] != ids.of(None)[:16], "a new process gets a new prefix"
    assert ids.of(b"given-7") == "given-7"


async def test_the_context_is_on_the_scope_for_the_whole_request() -> None:
    seen = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        context = context_of(scope)
        assert context is not None
        seen.append((context.request_id, context.client, context.local))
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    middleware = RequestContextMiddleware(
        app,
        max_body_bytes=1024,
        access_log_enabled=False,
        unavailable=lambda path: None,
        caller=lambda scope: ("192.0.2.1", False),
    )
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(b"x-request-id", b"ctx-1")],
    }
    await middleware(scope, receive, send)
    assert seen == [("ctx-1", "192.0.2.1", False)]
    assert (b"x-request-id", b"ctx-1") in sent[0]["headers"]  # type: ignore[operator]


# --- every refusal counts against the caller's address ------------------------------------

MAX_BODY = 1024  # the smallest limit the settings allow
REFUSED_LIMIT = 2


class Sink:
    """A public route that reads whatever body it is sent."""

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter(dependencies=[Public])

        @router.post("/blob")
        async def blob(request: Request) -> dict[str, int]:
            return {"bytes": len(await request.body())}

        return router


@pytest.fixture
def refusing(
    app_factory: AppFactory, client_for: ClientFor, settings_factory: Callable[..., Settings]
) -> TestClient:
    """An app with a failed plugin, a small body limit and few refusals per address."""
    settings = settings_factory(
        f"server.max_body_bytes={MAX_BODY}",
        f'ratelimit.routes={{"ANY <refused>": "{REFUSED_LIMIT}/minute"}}',
    )
    app = app_factory({"broken": Broken(), "sink": Sink()}, app_settings=settings)
    return client_for(app, authenticated=False)


def chunks(size: int) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked), ``size`` bytes in all."""
    for _ in range(size // 256):
        yield b"x" * 256


REFUSALS: dict[str, tuple[int, Callable[[TestClient], httpx2.Response]]] = {
    "a failed plugin's path": (503, lambda client: client.get("/api/v1/broken/thing")),
    "a malformed Content-Length": (
        400,
        lambda client: client.post(
            "/api/v1/sink/blob", content=b"{}", headers={"Content-Length": "1e3"}
        ),
    ),
    "a Content-Length over the limit": (
        413,
        lambda client: client.post("/api/v1/sink/blob", content=b"x" * (MAX_BODY + 1)),
    ),
    "a chunked body over the limit": (
        413,
        lambda client: client.post("/api/v1/sink/blob", content=chunks(MAX_BODY * 2)),
    ),
}


@pytest.mark.parametrize("kind", list(REFUSALS))
def test_a_refusal_counts_against_the_address_and_becomes_429_past_its_limit(
    refusing: TestClient, kind: str
) -> None:
    status, send = REFUSALS[kind]
    answers = [send(refusing) for _ in range(REFUSED_LIMIT + 1)]
    assert [answer.status_code for answer in answers] == [status] * REFUSED_LIMIT + [429]
    assert_error(answers[-1], 429, "TooManyRequests", f"rate limit of {REFUSED_LIMIT} exceeded")
    assert int(answers[-1].headers["retry-after"]) >= 1
    within = refusing.post("/api/v1/sink/blob", content=b"x" * MAX_BODY)
    assert within.json() == {"bytes": MAX_BODY}, "a request hostcore does not refuse is its own"


def test_refusals_of_every_kind_share_one_count(refusing: TestClient) -> None:
    statuses = [send(refusing).status_code for _, send in REFUSALS.values()]
    assert statuses == [503, 400, 429, 429]


# --- websockets: counted, and recorded like requests ---------------------------------------


def test_a_websocket_is_recorded_101_when_accepted_and_403_when_closed_before(
    serve: Serve,
) -> None:
    client = serve()
    accepted = {**bearer(client), "X-Request-ID": "ws-accepted"}
    with client.websocket_connect("/api/v1/probe/ws", headers=accepted) as socket:
        assert socket.receive_json() == {"hello": "probe"}
    with (
        pytest.raises((WebSocketDisconnect, WebSocketDenialResponse)),
        client.websocket_connect("/api/v1/probe/ws", headers={"X-Request-ID": "ws-refused"}),
    ):
        pass
    assert activity_rows(client, "ws-accepted") == [
        ("client:tester", "WS", "/api/v1/probe/ws", 101)
    ]
    assert activity_rows(client, "ws-refused") == [(None, "WS", "/api/v1/probe/ws", 403)]


def test_a_websocket_to_a_failed_plugin_is_closed_counted_and_recorded(
    app_factory: AppFactory, client_for: ClientFor, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(f'ratelimit.routes={{"ANY <refused>": "{REFUSED_LIMIT}/minute"}}')
    app = app_factory({"auth": hostcore.builtin.auth, "broken": Broken()}, app_settings=settings)
    client = client_for(app, authenticated=False)
    for n in range(REFUSED_LIMIT + 1):
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect("/api/v1/broken/feed", headers={"X-Request-ID": f"ws-{n}"}),
        ):
            pass
        assert closed.value.code == 1013, "try again later, even past the limit"
        assert [row[1:] for row in activity_rows(client, f"ws-{n}")] == [("WS", "<unmatched>", 403)]
    assert client.get("/api/v1/broken/thing").status_code == 429, "the websockets counted"


def test_a_websocket_has_an_access_line_when_the_access_log_is_on(
    serve: Serve, settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    client = serve(settings_factory("logging.access_log=true"))
    with (
        caplog.at_level(logging.INFO, logger="hostcore.access"),
        client.websocket_connect("/api/v1/probe/ws", headers=bearer(client)) as socket,
    ):
        assert socket.receive_json() == {"hello": "probe"}
    lines = [r.getMessage() for r in caplog.records if r.name == "hostcore.access"]
    assert any("/api/v1/probe/ws 101 " in line for line in lines), lines

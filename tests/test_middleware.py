"""The outermost layer: request context and id, liveness, refusals before routing, the
response headers every answer carries, the last-resort 500."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from hostcore.config import Settings
from hostcore.context import context_of
from hostcore.hookspecs import hookimpl
from hostcore.middleware import RequestContextMiddleware, RequestIds
from hostcore.security.deps import Public
from tests.helpers import AppFactory, ClientFor, Echo


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

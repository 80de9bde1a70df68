"""Admission: once per request, for the route Starlette chose, before the body is read and
before any plugin code runs; every route (hostcore's own too, and websockets) goes through
it, and is counted once, under its template."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

import hostcore.builtin.auth
from hostcore.config import Settings
from hostcore.hookspecs import hookimpl
from hostcore.security.admission import AdmittedRoute, AdmittedWebSocketRoute
from hostcore.security.deps import Authenticated, OptionalPrincipal, Public, RequireScope
from tests.helpers import (
    PROBE_READ,
    Serve,
    activity_rows,
    assert_error,
    bearer,
    signed,
)

ANONYMOUS = {"Authorization": ""}


class Overlapping:
    """Routes whose paths overlap, so only Starlette's order decides which one runs."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.bodies_read = 0

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"maze:read": "Read.", "maze:write": "Write."}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter()
        read = [RequireScope("maze:read")]
        plugin = self

        async def plugin_dependency() -> None:
            plugin.ran.append("dependency")

        @router.get("/items/{name}", dependencies=read)
        async def by_name(name: str) -> dict[str, str]:
            return {"route": "by_name"}

        @router.get("/items/latest", dependencies=read)  # shadowed by the one above
        async def latest() -> dict[str, str]:
            return {"route": "latest"}

        @router.get("/things/latest", dependencies=read)
        async def things_latest() -> dict[str, str]:
            return {"route": "things_latest"}

        @router.get("/things/{name}", dependencies=read)
        async def things_by_name(name: str) -> dict[str, str]:
            return {"route": "things_by_name"}

        @router.post(
            "/things/{name}",
            dependencies=[RequireScope("maze:write"), Depends(plugin_dependency)],
        )
        async def things_write(name: str, request: Request) -> dict[str, str]:
            plugin.bodies_read += 1
            await request.body()
            return {"route": "things_write"}

        @router.get("/open", dependencies=[Public])
        async def open_route(caller: OptionalPrincipal) -> dict[str, str | None]:
            return {"route": "open_route", "caller": caller.subject if caller else None}

        @router.get("/me")
        def me_sync(principal: Authenticated) -> dict[str, str]:
            return {"route": "me_sync", "subject": principal.subject}

        return router


@pytest.fixture
def admitted_client(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> Callable[..., TestClient]:
    def make(plugins: dict[str, object], settings: Settings | None = None) -> TestClient:
        app = app_factory({"auth": hostcore.builtin.auth, **plugins}, app_settings=settings)
        return client_for(app)

    return make


def test_every_route_is_built_with_the_admitted_route_class(
    admitted_client: Callable[..., TestClient],
) -> None:
    client = admitted_client({"maze": Overlapping()})
    api_routes = [r for r in client.app.router.routes if hasattr(r, "dependant")]  # type: ignore[attr-defined]
    admitted = (AdmittedRoute, AdmittedWebSocketRoute)
    assert api_routes and all(isinstance(r, admitted) for r in api_routes)


def test_the_route_that_runs_is_the_route_admitted(
    admitted_client: Callable[..., TestClient],
) -> None:
    client = admitted_client({"maze": Overlapping()})
    writer = bearer(client, ["maze:write"])
    cases = [
        ("GET", "/api/v1/maze/items/thing", "by_name"),
        ("GET", "/api/v1/maze/items/latest", "by_name"),
        ("GET", "/api/v1/maze/things/latest", "things_latest"),
        ("GET", "/api/v1/maze/things/other", "things_by_name"),
        ("GET", "/api/v1/maze/open", "open_route"),
    ]
    for method, path, route in cases:
        assert client.request(method, path).json()["route"] == route, path
        # The scope of the route that ran is the one checked: a writer may not read.
        if route != "open_route":
            assert client.request(method, path, headers=writer).status_code == 403
    assert client.post("/api/v1/maze/things/x", headers=writer).json()["route"] == "things_write"
    not_allowed = client.delete("/api/v1/maze/things/other")
    assert not_allowed.status_code == 405
    assert not_allowed.headers["allow"] == "GET, HEAD, POST", "every route at the path counts"
    assert client.get("/api/v1/maze/nothing").status_code == 404


def test_a_refused_request_runs_no_plugin_code_and_reads_no_body(
    admitted_client: Callable[..., TestClient],
) -> None:
    plugin = Overlapping()
    client = admitted_client({"maze": plugin})
    path = "/api/v1/maze/things/other"
    reader = bearer(client, ["maze:read"])
    assert_error(
        client.post(path, headers=reader, content=b"x" * 1000), 403, "Forbidden", "maze:write"
    )
    assert_error(client.post(path, headers=ANONYMOUS), 401, "Unauthorized", "no credentials")
    assert plugin.ran == [] and plugin.bodies_read == 0
    assert client.post(path, headers=bearer(client, ["maze:write"])).status_code == 200
    assert plugin.ran == ["dependency"] and plugin.bodies_read == 1


def test_401_says_how_to_authenticate(admitted_client: Callable[..., TestClient]) -> None:
    client = admitted_client({"maze": Overlapping()})
    for headers in (ANONYMOUS, {"Authorization": "Bearer junk"}):
        refused = client.get("/api/v1/maze/things/x", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="hostcore"'


@pytest.mark.parametrize("stray", ["X-Hostcore-Nonce", "X-Hostcore-Client", "X-Hostcore-Timestamp"])
def test_a_signing_header_without_a_signature_is_no_credential(
    admitted_client: Callable[..., TestClient], stray: str
) -> None:
    """A Public route answers it as it answers anyone; a route that needs a caller says
    there are no credentials."""
    client = admitted_client({"maze": Overlapping()})
    headers = {**ANONYMOUS, stray: "x"}
    assert client.get("/api/v1/plugins", headers=headers).status_code == 200
    refused = client.get("/api/v1/maze/things/x", headers=headers)
    assert_error(refused, 401, "Unauthorized", "no credentials")


def test_the_principal_reaches_async_and_sync_endpoints(
    admitted_client: Callable[..., TestClient],
) -> None:
    client = admitted_client({"maze": Overlapping()})
    assert client.get("/api/v1/maze/me").json() == {"route": "me_sync", "subject": "client:tester"}
    assert client.get("/api/v1/maze/open").json()["caller"] == "client:tester"
    assert client.get("/api/v1/maze/open", headers=ANONYMOUS).json()["caller"] is None
    assert_error(
        client.get("/api/v1/maze/open", headers={"Authorization": "Bearer junk"}),
        401,
        "Unauthorized",
        "",
    )


def test_one_request_counts_once_against_the_limit(
    settings_factory: Callable[..., Settings], admitted_client: Callable[..., TestClient]
) -> None:
    limited = settings_factory(
        'ratelimit.routes={"GET /api/v1/maze/things/{name}": "4/minute",'
        ' "GET /api/v1/maze/open": "2/minute"}'
    )
    client = admitted_client({"maze": Overlapping()}, limited)
    remaining = [
        client.get("/api/v1/maze/things/x").headers["x-ratelimit-remaining"] for _ in range(4)
    ]
    assert remaining == ["3", "2", "1", "0"]
    assert client.get("/api/v1/maze/things/x").status_code == 429
    statuses = [client.get("/api/v1/maze/open", headers=ANONYMOUS).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_a_get_route_answers_head_admitted_and_counted_as_the_get(
    settings_factory: Callable[..., Settings], admitted_client: Callable[..., TestClient]
) -> None:
    limited = settings_factory('ratelimit.routes={"GET /api/v1/maze/things/{name}": "4/minute"}')
    client = admitted_client({"maze": Overlapping()}, limited)
    got = client.get("/api/v1/maze/things/x")
    head = client.head("/api/v1/maze/things/x")
    assert head.status_code == 200
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["x-ratelimit-remaining"] == "2", "one limit for GET and HEAD"
    assert client.head("/api/v1/maze/things/x", headers=ANONYMOUS).status_code == 401
    writer = bearer(client, ["maze:write"])  # the same client, with a narrower token
    assert client.head("/api/v1/maze/things/x", headers=writer).status_code == 403
    assert client.head("/api/v1/maze/things/x").status_code == 200
    assert client.head("/api/v1/maze/things/x").status_code == 429


def test_a_path_is_counted_under_the_route_that_answers_it(
    settings_factory: Callable[..., Settings], admitted_client: Callable[..., TestClient]
) -> None:
    # "/things/latest\\n" is not the fixed route (Starlette's "$" would have matched it
    # before the newline): the pattern answers it, and its limit counts it.
    limited = settings_factory('ratelimit.routes={"GET /api/v1/maze/things/latest": "1/minute"}')
    client = admitted_client({"maze": Overlapping()}, limited)
    assert client.get("/api/v1/maze/things/latest").status_code == 200
    assert client.get("/api/v1/maze/things/latest").status_code == 429
    answered = client.get("/api/v1/maze/things/latest%0A")
    assert answered.status_code == 200 and answered.json()["route"] == "things_by_name"


class TwoScopes:
    """A router-wide scope and a route-level one: the caller needs both."""

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"pair:read": "Read.", "pair:admin": "Administer."}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter(dependencies=[RequireScope("pair:read")])

        @router.get("/both", dependencies=[RequireScope("pair:admin")])
        async def both() -> dict[str, str]:
            return {"route": "both"}

        return router


def test_every_declared_scope_is_required(admitted_client: Callable[..., TestClient]) -> None:
    client = admitted_client({"pair": TwoScopes()})
    for held, status in ((["pair:read"], 403), (["pair:admin"], 403), (["pair:*"], 200)):
        assert client.get("/api/v1/pair/both", headers=bearer(client, held)).status_code == status


class PublicRouterScopedRoute:
    """A router-wide Public with one route that needs a scope: the scope governs."""

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"mixed:read": "Read."}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter(dependencies=[Public])

        @router.get("/open")
        async def open_route() -> dict[str, str]:
            return {"route": "open"}

        @router.get("/closed", dependencies=[RequireScope("mixed:read")])
        async def closed() -> dict[str, str]:
            return {"route": "closed"}

        return router


def test_a_real_scope_governs_over_a_router_wide_public(
    admitted_client: Callable[..., TestClient],
) -> None:
    client = admitted_client({"mixed": PublicRouterScopedRoute()})
    assert_error(client.get("/api/v1/mixed/closed", headers=ANONYMOUS), 401, "Unauthorized", "")
    reader = bearer(client, ["mixed:read"])
    first = client.get("/api/v1/mixed/closed", headers=reader)
    second = client.get("/api/v1/mixed/closed", headers=reader)
    assert first.status_code == second.status_code == 200
    assert int(first.headers["x-ratelimit-remaining"]) - 1 == int(
        second.headers["x-ratelimit-remaining"]
    ), "counted once per request"
    assert client.get("/api/v1/mixed/open", headers=ANONYMOUS).status_code == 200


class Overridable:
    """A plugin route with its own dependency and exception: FastAPI's machinery applies."""

    class Surprise(Exception):
        pass

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"over:read": "Read."}

    @hookimpl
    def hostcore_exception_handlers(self) -> dict[type[Exception], Any]:
        from fastapi.responses import JSONResponse

        async def handle(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"error": "Surprise", "detail": "handled"}, status_code=418)

        return {Overridable.Surprise: handle}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter(dependencies=[RequireScope("over:read")])

        @router.get("/value")
        async def value(number: Annotated[int, Depends(real_number)]) -> dict[str, int]:
            return {"number": number}

        @router.get("/surprise")
        async def surprise() -> None:
            raise Overridable.Surprise

        return router


async def real_number() -> int:
    return 1


def test_plugin_routes_get_fastapis_overrides_and_the_plugins_handlers(
    admitted_client: Callable[..., TestClient],
) -> None:
    client = admitted_client({"over": Overridable()})
    assert client.get("/api/v1/over/value").json() == {"number": 1}
    client.app.dependency_overrides[real_number] = lambda: 2  # type: ignore[attr-defined]
    assert client.get("/api/v1/over/value").json() == {"number": 2}
    assert client.get("/api/v1/over/surprise").status_code == 418
    assert client.get("/api/v1/over/value", headers=ANONYMOUS).status_code == 401


def test_hostcores_own_routes_are_limited_by_address(
    settings_factory: Callable[..., Settings], admitted_client: Callable[..., TestClient]
) -> None:
    limited = settings_factory(
        'ratelimit.routes={"GET /api/v1/plugins": "2/minute", "GET /.well-known/jwks.json":'
        ' "1/minute", "GET /api/v1/openapi.json": "1/minute", "GET /": "1/minute",'
        ' "GET /static/docs": "1/minute"}'
    )
    client = admitted_client({}, limited)
    plugins = [client.get("/api/v1/plugins", headers=ANONYMOUS).status_code for _ in range(3)]
    assert plugins == [200, 200, 429]
    for path in (
        "/.well-known/jwks.json",
        "/api/v1/openapi.json",
        "/",
        "/static/docs/swagger-ui.css",
    ):
        assert client.get(path, headers=ANONYMOUS).status_code == 200, path
        assert client.get(path, headers=ANONYMOUS).status_code == 429, path


def test_unmatched_requests_count_against_the_address(
    settings_factory: Callable[..., Settings], admitted_client: Callable[..., TestClient]
) -> None:
    limited = settings_factory(
        'ratelimit.routes={"GET <unmatched>": "3/minute", "DELETE /api/v1/maze/open": "1/minute"}'
    )
    client = admitted_client({"maze": Overlapping()}, limited)
    statuses = [client.get(f"/nothing/{n}", headers=ANONYMOUS).status_code for n in range(4)]
    assert statuses == [404, 404, 404, 429]
    assert client.delete("/api/v1/maze/open").status_code == 405
    assert client.delete("/api/v1/maze/open").status_code == 429


def test_admitted_and_refused_requests_are_recorded_under_their_route(
    admitted_client: Callable[..., TestClient],
) -> None:
    client = admitted_client({"maze": Overlapping()})
    client.get("/api/v1/maze/things/x", headers={"X-Request-ID": "ok-1"})
    client.get("/api/v1/maze/things/x", headers={**ANONYMOUS, "X-Request-ID": "no-1"})
    client.get("/api/v1/maze/nowhere", headers={"X-Request-ID": "lost-1"})
    assert activity_rows(client, "ok-1") == [
        ("client:tester", "GET", "/api/v1/maze/things/{name}", 200)
    ]
    assert activity_rows(client, "no-1") == [(None, "GET", "/api/v1/maze/things/{name}", 401)]
    assert activity_rows(client, "lost-1") == [(None, "GET", "<unmatched>", 404)]


# --- websockets -----------------------------------------------------------------------


def test_websocket_route_with_a_scope_admits_a_token_holder(serve: Serve) -> None:
    client = serve()
    with client.websocket_connect("/api/v1/probe/ws", headers=bearer(client)) as socket:
        assert socket.receive_json() == {"hello": "probe"}
    headers = signed(client, "GET", "/api/v1/probe/ws")
    with client.websocket_connect("/api/v1/probe/ws", headers=headers) as socket:
        assert socket.receive_json() == {"hello": "probe"}


@pytest.mark.parametrize("credential", ["none", "junk token", "missing scope"])
def test_websocket_refusal_is_a_clean_close(serve: Serve, credential: str) -> None:
    client = serve()
    headers = {
        "none": {},
        "junk token": {"Authorization": "Bearer junk"},
        "missing scope": bearer(client, ["other:read"]),
    }[credential]
    with (
        pytest.raises((WebSocketDisconnect, WebSocketDenialResponse)) as refused,
        client.websocket_connect("/api/v1/probe/ws", headers=headers) as socket,
    ):
        socket.receive_json()
    if isinstance(refused.value, WebSocketDenialResponse):
        assert refused.value.status_code in (401, 403)
    else:
        assert refused.value.code in (1008, 4401, 4403)


# --- one template, one count ----------------------------------------------------------


def test_principal_limit_is_per_route(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    limited = settings_factory('ratelimit.routes={"GET /api/v1/probe/items/{name}": "2/minute"}')
    client = serve(limited)
    headers = bearer(client)
    statuses = [
        client.get(f"/api/v1/probe/items/n{n}", headers=headers).status_code for n in range(3)
    ]
    assert statuses == [200, 200, 429], "one template counts every item"
    assert client.get(PROBE_READ, headers=headers).status_code == 200

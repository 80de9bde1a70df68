"""The security gate: it finds the route FastAPI will run, admits or refuses before it,
answers snapshot routes itself, and is never the only guard."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Response
from fastapi.testclient import TestClient

import hostcore.builtin.auth
from hostcore.config import Settings
from hostcore.errors import Forbidden, PluginError, Unavailable
from hostcore.fastlane import snapshot
from hostcore.hookspecs import hookimpl
from hostcore.security.deps import Public, RequireScope
from hostcore.security.gate import RouteTable, gated_route
from tests.conftest import bearer
from tests.security.conftest import assert_error, runtime_of

SNAPSHOT = "/api/v1/probe/snapshot"
SNAPSHOT_BODY = b'{"sample":1}'


class Overlapping:
    """Routes whose paths overlap, so only FastAPI's order decides which one runs."""

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"maze:read": "Read.", "maze:write": "Write."}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter()
        read = [RequireScope("maze:read")]

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

        @router.post("/things/{name}", dependencies=[RequireScope("maze:write")])
        async def things_write(name: str) -> dict[str, str]:
            return {"route": "things_write"}

        @router.get("/open", dependencies=[Public])
        async def open_route() -> dict[str, str]:
            return {"route": "open_route"}

        return router


class Snapshots:
    """A snapshot route, and a count of how often FastAPI's endpoint ran instead."""

    def __init__(self) -> None:
        self.endpoint_calls = 0
        self.body: bytes | Exception = SNAPSHOT_BODY

    def provide(self, app: FastAPI) -> bytes:
        assert isinstance(app, FastAPI)
        if isinstance(self.body, Exception):
            raise self.body
        return self.body

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"probe:read": "Read probes."}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter()

        @router.get("/snapshot", dependencies=[RequireScope("probe:read")])
        @snapshot(self.provide)
        async def sample() -> Response:
            self.endpoint_calls += 1
            return Response(self.provide(FastAPI()), media_type="application/json")

        return router


@pytest.fixture
def gated_client(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> Callable[[dict[str, object]], TestClient]:
    def make(plugins: dict[str, object]) -> TestClient:
        app = app_factory({"auth": hostcore.builtin.auth, **plugins})
        return client_for(app)

    return make


def test_the_gate_finds_the_route_fastapi_runs(
    gated_client: Callable[[dict[str, object]], TestClient],
) -> None:
    client = gated_client({"maze": Overlapping()})
    table: RouteTable = client.app.state.route_table  # type: ignore[attr-defined]
    assert sum(1 for gated in table if gated.template.startswith("/api/v1/maze/")) == 6
    requests = [
        ("GET", "/api/v1/maze/items/thing"),
        ("GET", "/api/v1/maze/items/latest"),
        ("GET", "/api/v1/maze/things/latest"),
        ("GET", "/api/v1/maze/things/other"),
        ("POST", "/api/v1/maze/things/other"),
        ("GET", "/api/v1/maze/open"),
    ]
    for method, path in requests:
        ran = client.request(method, path).json()["route"]
        found = table.lookup(method, path)
        assert found is not None and found.route.name == ran, (method, path)
    # What no route answers is FastAPI's to refuse (404, 405): the gate lets it through.
    assert table.lookup("DELETE", "/api/v1/maze/things/other") is None
    assert table.lookup("GET", "/api/v1/maze/nothing") is None
    assert client.delete("/api/v1/maze/things/other").status_code == 405
    assert client.get("/api/v1/maze/nothing").status_code == 404


def test_the_gate_refuses_before_the_route_runs(
    gated_client: Callable[[dict[str, object]], TestClient],
) -> None:
    client = gated_client({"maze": Overlapping()})
    reader = bearer(client, ["maze:read"])
    path = "/api/v1/maze/things/other"
    assert_error(client.post(path, headers=reader), 403, "Forbidden", "maze:write")
    assert_error(client.post(path, headers={"Authorization": ""}), 401, "Unauthorized", "Bearer")
    assert client.post(path, headers=bearer(client, ["maze:write"])).status_code == 200


def test_one_request_counts_once_against_the_limit(
    settings_factory: Callable[..., Settings],
    app_factory: Callable[..., FastAPI],
    client_for: Callable[..., TestClient],
) -> None:
    limited = settings_factory(
        'ratelimit.routes={"GET /api/v1/maze/things/{name}": "4/minute",'
        ' "GET /api/v1/maze/open": "2/minute"}'
    )
    client = client_for(
        app_factory({"auth": hostcore.builtin.auth, "maze": Overlapping()}, app_settings=limited)
    )
    remaining = [
        client.get("/api/v1/maze/things/x").headers["x-ratelimit-remaining"] for _ in range(4)
    ]
    assert remaining == ["3", "2", "1", "0"]
    assert client.get("/api/v1/maze/things/x").status_code == 429
    anonymous = {"Authorization": ""}
    statuses = [client.get("/api/v1/maze/open", headers=anonymous).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_without_the_gate_the_dependency_still_guards(
    gated_client: Callable[[dict[str, object]], TestClient],
) -> None:
    client = gated_client({"maze": Overlapping()})
    table: RouteTable = client.app.state.route_table  # type: ignore[attr-defined]
    table.__init__()  # type: ignore[misc]  # forget every route
    assert len(table) == 0
    path = "/api/v1/maze/things/other"
    assert_error(client.post(path, headers=bearer(client, ["maze:read"])), 403, "Forbidden", "")
    assert_error(client.post(path, headers={"Authorization": ""}), 401, "Unauthorized", "")
    admitted = client.post(path, headers=bearer(client, ["maze:write"]))
    assert admitted.status_code == 200
    assert "x-ratelimit-remaining" in admitted.headers


def activity_rows(client: TestClient, request_id: str) -> list[tuple[Any, ...]]:
    runtime = runtime_of(client)
    assert runtime.activity is not None and client.portal is not None
    client.portal.call(runtime.activity.flush)
    database = runtime.settings.data_dir / "hostcore.db"
    with sqlite3.connect(Path(database)) as connection:
        return connection.execute(
            "SELECT principal, method, route, status FROM activity WHERE request_id = ?",
            (request_id,),
        ).fetchall()


def test_a_snapshot_route_is_answered_by_the_gate(
    gated_client: Callable[[dict[str, object]], TestClient],
) -> None:
    plugin = Snapshots()
    client = gated_client({"probe": plugin})
    answered = client.get(SNAPSHOT, headers={"X-Request-ID": "snap-ok"})
    assert answered.status_code == 200
    assert answered.content == SNAPSHOT_BODY
    assert answered.headers["content-type"] == "application/json"
    assert answered.headers["x-request-id"] == "snap-ok"
    assert int(answered.headers["x-ratelimit-remaining"]) >= 0
    assert plugin.endpoint_calls == 0, "FastAPI's endpoint did not run"
    assert activity_rows(client, "snap-ok") == [("client:tester", "GET", SNAPSHOT, 200)]

    assert_error(
        client.get(SNAPSHOT, headers={"Authorization": "", "X-Request-ID": "snap-401"}),
        401,
        "Unauthorized",
        "Bearer <token>",
    )
    assert activity_rows(client, "snap-401") == [(None, "GET", SNAPSHOT, 401)]
    other = bearer(client, ["auth:admin"])
    assert_error(client.get(SNAPSHOT, headers=other), 403, "Forbidden", "probe:read")
    assert client.post(SNAPSHOT).status_code == 405


def test_a_snapshot_provider_error_is_the_usual_json_error(
    gated_client: Callable[[dict[str, object]], TestClient],
) -> None:
    plugin = Snapshots()
    client = gated_client({"probe": plugin})
    plugin.body = Unavailable("the sampler has not run yet")
    assert_error(client.get(SNAPSHOT), 503, "Unavailable", "the sampler has not run yet")


@pytest.mark.parametrize("kind", ["query", "path", "post"])
def test_a_snapshot_route_takes_no_parameters_and_answers_get_only(kind: str) -> None:
    router = APIRouter()
    mark = snapshot(lambda app: b"{}")
    if kind == "query":

        @router.get("/s", dependencies=[RequireScope("probe:read")])
        @mark
        async def with_query(limit: int = 1) -> Response:
            return Response(b"{}")

    elif kind == "path":

        @router.get("/s/{name}", dependencies=[RequireScope("probe:read")])
        @mark
        async def with_path(name: str) -> Response:
            return Response(b"{}")

    else:

        @router.post("/s", dependencies=[RequireScope("probe:read")])
        @mark
        async def posted() -> Response:
            return Response(b"{}")

    route = router.routes[0]
    with pytest.raises(PluginError, match="is a snapshot"):
        gated_route("/api/v1/probe" + route.path, route)  # type: ignore[attr-defined,arg-type]


def _snapshot_router(kind: str) -> APIRouter:
    """A snapshot route that declares more than the gate could check on its own."""

    async def refuse_everyone() -> None:
        raise Forbidden("nobody")

    if kind == "public-router":
        router = APIRouter(dependencies=[Public])
        extra: list[Any] = [RequireScope("probe:read")]
    else:
        router = APIRouter(dependencies=[RequireScope("probe:read")])
        extra = [RequireScope("auth:admin")] if kind == "two-scopes" else [Depends(refuse_everyone)]

    @router.get("/s", dependencies=extra)
    @snapshot(lambda app: b"{}")
    async def sample() -> Response:
        return Response(b"{}")

    return router


@pytest.mark.parametrize("kind", ["two-scopes", "public-router", "guard"])
def test_a_snapshot_route_has_one_declaration_and_nothing_else(kind: str) -> None:
    route = _snapshot_router(kind).routes[0]
    with pytest.raises(PluginError, match="exactly one declaration"):
        gated_route("/api/v1/probe/s", route)  # type: ignore[arg-type]


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
    gated_client: Callable[[dict[str, object]], TestClient],
) -> None:
    client = gated_client({"mixed": PublicRouterScopedRoute()})
    table: RouteTable = client.app.state.route_table  # type: ignore[attr-defined]
    found = table.lookup("GET", "/api/v1/mixed/closed")
    assert found is not None and found.scope == "mixed:read"
    anonymous = {"Authorization": ""}
    assert_error(client.get("/api/v1/mixed/closed", headers=anonymous), 401, "Unauthorized", "")
    reader = bearer(client, ["mixed:read"])
    first = client.get("/api/v1/mixed/closed", headers=reader)
    second = client.get("/api/v1/mixed/closed", headers=reader)
    assert first.status_code == second.status_code == 200
    assert int(first.headers["x-ratelimit-remaining"]) - 1 == int(
        second.headers["x-ratelimit-remaining"]
    ), "counted once per request"
    assert client.get("/api/v1/mixed/open", headers=anonymous).status_code == 200


@pytest.mark.parametrize("suffix", ["%0A", "%0D", "%00", "%09x", "%7F"])
def test_a_path_with_a_control_character_is_refused(
    settings_factory: Callable[..., Settings],
    app_factory: Callable[..., FastAPI],
    client_for: Callable[..., TestClient],
    suffix: str,
) -> None:
    # Routing's "$" matches before a trailing newline: /things/latest%0A would run the
    # fixed route while the gate counted the pattern's limit. Nothing gets that far.
    limited = settings_factory('ratelimit.routes={"GET /api/v1/maze/things/latest": "2/minute"}')
    client = client_for(
        app_factory({"auth": hostcore.builtin.auth, "maze": Overlapping()}, app_settings=limited)
    )
    for _ in range(2):
        assert client.get("/api/v1/maze/things/latest").status_code == 200
    assert client.get("/api/v1/maze/things/latest").status_code == 429
    assert_error(
        client.get(f"/api/v1/maze/things/latest{suffix}"),
        400,
        "BadRequest",
        "control character",
    )

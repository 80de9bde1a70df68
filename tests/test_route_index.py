"""hostcore.route_index: a request tries only the routes its path can match."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import BaseRoute, Match, Mount, Route, Router

from hostcore.app import create_app
from hostcore.config import Settings
from hostcore.route_index import RouteIndex, path_key, route_key
from tests.helpers import bearer


def route(path: str) -> Route:
    return Route(path, lambda request: None)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/api/v1/system/stats", "/api/v1/system"),
        ("/api/v1/system", "/api/v1/system"),
        ("/api/v1/system/", "/api/v1/system"),
        ("/api/v1", None),
        ("/", None),
    ],
)
def test_a_path_is_keyed_by_its_first_three_segments(path: str, key: str | None) -> None:
    assert path_key(path) == key


@pytest.mark.parametrize(
    ("candidate", "key"),
    [
        (route("/api/v1/network/interfaces/{ifname}"), "/api/v1/network"),
        (route("/api/v1/health"), "/api/v1/health"),
        (route("/api/v1/{plugin}/x"), None),  # a parameter within the first three
        (route("/api/v1/sys{tem}"), None),
        (route("/docs"), None),
        (Mount("/static/docs", routes=[]), None),
        (Mount("/api/v1/files", routes=[]), "/api/v1/files"),
    ],
)
def test_a_route_is_keyed_only_by_segments_every_path_it_matches_has(
    candidate: BaseRoute, key: str | None
) -> None:
    assert route_key(candidate) == key


def test_a_request_tries_only_its_groups_routes_and_answers_as_before(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[str] = []
    original = Route.matches

    def counting(self: Route, scope: dict[str, object]) -> tuple[Match, dict[str, object]]:
        tried.append(self.path)
        return original(self, scope)  # type: ignore[arg-type]

    monkeypatch.setattr(Route, "matches", counting)
    with TestClient(create_app(settings_factory()), raise_server_exceptions=False) as client:
        client.headers.update(bearer(client))
        tried.clear()
        assert client.get("/api/v1/system/info").status_code in (200, 503)
        assert tried and all(
            path.startswith("/api/v1/system/") or route_key(route(path)) is None for path in tried
        )
        assert client.delete("/api/v1/system/info").status_code == 405
        assert client.get("/api/v1/system/nothing").status_code == 404
        assert client.get("/api/v1/nothing/here").status_code == 404
        assert client.get("/.well-known/jwks.json").status_code == 200


def test_a_route_added_after_the_first_request_is_found(
    settings_factory: Callable[..., Settings],
) -> None:
    app = create_app(settings_factory())
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/api/v1/late/added").status_code == 404
        late = APIRouter()

        @late.get("/api/v1/late/added")
        async def added() -> dict[str, str]:
            return {"late": "yes"}

        app.router.routes.extend(late.routes)
        assert client.get("/api/v1/late/added").json() == {"late": "yes"}


def indexed_app(frontend: Path | None = None) -> FastAPI:
    """A plain FastAPI app with the index installed as hostcore installs it (after every
    route, a ``frontend`` build directory's low-priority routes included)."""
    app = FastAPI(redirect_slashes=False)

    @app.get("/api/v1/a/{item}")
    async def param(item: str) -> str:
        return "param"

    @app.get("/api/v1/a/fixed")
    async def fixed() -> str:
        return "fixed"

    @app.get("/api/v1/b/x")
    async def other() -> str:
        return "b"

    if frontend is not None:
        app.frontend("/", directory=frontend)
    app.router.middleware_stack = RouteIndex(app.router)
    return app


def test_a_route_replaced_or_moved_in_place_is_seen() -> None:
    app = indexed_app()
    with TestClient(app) as client:
        assert client.get("/api/v1/a/fixed").json() == "param"  # listed first
        routes = app.router.routes
        moved = next(r for r in routes if getattr(r, "path", "") == "/api/v1/a/fixed")
        routes.insert(0, routes.pop(routes.index(moved)))
        assert client.get("/api/v1/a/fixed").json() == "fixed"
        replacement = APIRouter()

        @replacement.get("/api/v1/b/x")
        async def new() -> str:
            return "new b"

        index = next(i for i, r in enumerate(routes) if getattr(r, "path", "") == "/api/v1/b/x")
        routes[index] = replacement.routes[0]
        assert client.get("/api/v1/b/x").json() == "new b"


def test_the_routers_default_is_the_live_one() -> None:
    app = indexed_app()
    with TestClient(app) as client:
        assert client.get("/api/v1/none/here").status_code == 404

        async def teapot(scope: object, receive: object, send: Any) -> None:
            await send({"type": "http.response.start", "status": 418, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        app.router.default = teapot  # type: ignore[assignment]
        assert client.get("/api/v1/none/here").status_code == 418


def test_a_router_with_its_own_middleware_gets_no_index() -> None:
    router = Router(routes=[], middleware=[Middleware(GZipMiddleware)])
    with pytest.raises(ValueError, match="without its own middleware"):
        RouteIndex(router)


def test_the_routers_own_dispatch_runs_its_low_priority_routes_too(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("FRONT")
    app = indexed_app(frontend=tmp_path)
    with TestClient(app) as client:
        assert client.get("/").text == "FRONT"
        assert client.get("/api/v1/a/fixed").json() == "param"

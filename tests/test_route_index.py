"""hostcore.route_index: a request tries only the routes its path can match."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Match, Mount, Route

from hostcore.app import create_app
from hostcore.config import Settings
from hostcore.route_index import path_key, route_key
from tests.helpers import bearer


def route(path: str) -> Route:
    return Route(path, lambda request: None)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/api/v1/system/stats", ("api", "v1", "system")),
        ("/api/v1/system", ("api", "v1", "system")),
        ("/api/v1/system/", ("api", "v1", "system")),
        ("/api/v1", None),
        ("/", None),
    ],
)
def test_a_path_is_keyed_by_its_first_three_segments(
    path: str, key: tuple[str, ...] | None
) -> None:
    assert path_key(path) == key


@pytest.mark.parametrize(
    ("candidate", "key"),
    [
        (route("/api/v1/network/interfaces/{ifname}"), ("api", "v1", "network")),
        (route("/api/v1/health"), ("api", "v1", "health")),
        (route("/api/v1/{plugin}/x"), None),  # a parameter within the first three
        (route("/api/v1/sys{tem}"), None),
        (route("/docs"), None),
        (Mount("/static/docs", routes=[]), None),
        (Mount("/api/v1/files", routes=[]), ("api", "v1", "files")),
    ],
)
def test_a_route_is_keyed_only_by_segments_every_path_it_matches_has(
    candidate: BaseRoute, key: tuple[str, ...] | None
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

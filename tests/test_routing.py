"""A plugin's routes join the app flat, included routers too, as include_router serves them;
a router with its own lifespan or frontend routes fails its plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.responses import PlainTextResponse

from hostcore.errors import PluginError, error_responses
from hostcore.hookspecs import hookimpl
from hostcore.routing import add_routes_flat
from hostcore.security.admission import AdmittedRoute
from hostcore.security.deps import Authenticated, Public, RequireScope
from tests.helpers import AppFactory, ClientFor, Echo, bearer, failed_plugin_reason

PREFIX = "/api/v1/nest"


class Leaf(BaseModel):
    name: str


def nested_router() -> APIRouter:
    """Three levels: the plugin's router includes one that includes another, each adding
    a prefix, tags, dependencies (declarations) and responses."""
    inner = APIRouter(tags=["inner"], responses=error_responses(404))

    @inner.get("/leaf/{name}", responses=error_responses(422))
    async def leaf(name: str) -> Leaf:
        return Leaf(name=name)

    @inner.post("/leaf", status_code=201, summary="Make a leaf")
    async def make_leaf(body: Leaf) -> Leaf:
        return body

    middle = APIRouter(dependencies=[RequireScope("nest:read")], tags=["middle"])

    @middle.get("/branch")
    async def branch() -> dict[str, str]:
        return {"at": "branch"}

    middle.include_router(inner, prefix="/inner", responses=error_responses(403))

    outer = APIRouter()

    @outer.get("/root", dependencies=[Public])
    async def root() -> dict[str, str]:
        return {"at": "root"}

    @outer.get("/me")
    async def me(principal: Authenticated) -> dict[str, str]:
        return {"subject": principal.subject}

    outer.include_router(middle, prefix="/middle", responses=error_responses(401))
    return outer


class Nest:
    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"nest:read": "Read the nest."}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        return nested_router()


def plugin_part(document: dict[str, Any]) -> dict[str, Any]:
    """The plugin's paths, without their 422 (hostcore documents the body it sends)."""
    return {
        path: {
            method: {
                **operation,
                "responses": {k: v for k, v in operation["responses"].items() if k != "422"},
            }
            for method, operation in item.items()
        }
        for path, item in document["paths"].items()
        if path.startswith(PREFIX)
    }


def test_the_openapi_document_is_the_one_include_router_gives(
    app_factory: Callable[..., FastAPI],
) -> None:
    hostcore_app = app_factory({"nest": Nest()})
    reference = FastAPI()
    reference.include_router(nested_router(), prefix=PREFIX, tags=["nest"])
    ours, theirs = hostcore_app.openapi(), reference.openapi()
    assert plugin_part(ours) == plugin_part(theirs)
    assert sorted(plugin_part(ours)) == [
        f"{PREFIX}/me",
        f"{PREFIX}/middle/branch",
        f"{PREFIX}/middle/inner/leaf",
        f"{PREFIX}/middle/inner/leaf/{{name}}",
        f"{PREFIX}/root",
    ]
    assert ours["components"]["schemas"]["Leaf"] == theirs["components"]["schemas"]["Leaf"]
    leaf = ours["paths"][f"{PREFIX}/middle/inner/leaf/{{name}}"]["get"]["responses"]["422"]
    assert leaf["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/hostcore.ValidationErrorRead"
    }
    assert "422" not in ours["paths"][f"{PREFIX}/root"]["get"]["responses"], "it takes no input"


def test_included_routes_are_flat_admitted_and_keep_their_routers_declarations(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    app = app_factory({"nest": Nest()})
    flat = [r for r in app.router.routes if getattr(r, "path", "").startswith(PREFIX)]
    assert len(flat) == 5 and all(isinstance(r, AdmittedRoute) for r in flat)
    client = client_for(app)
    reader, other = bearer(client, ["nest:read"]), bearer(client, ["other:read"])
    leaf = f"{PREFIX}/middle/inner/leaf/oak"
    assert client.get(leaf, headers=reader).json() == {"name": "oak"}
    assert client.get(leaf, headers=other).status_code == 403, "the middle router's scope"
    assert (
        client.post(f"{PREFIX}/middle/inner/leaf", json={"name": "elm"}, headers=reader).status_code
        == 201
    )
    assert client.get(f"{PREFIX}/root", headers={"Authorization": ""}).json() == {"at": "root"}
    assert client.get(f"{PREFIX}/me", headers=other).json() == {"subject": "client:tester"}


def test_a_route_that_is_not_a_fastapi_route_is_refused_before_anything_is_added() -> None:
    from starlette.responses import PlainTextResponse

    router = APIRouter()

    @router.get("/fine", dependencies=[Public])
    async def fine() -> dict[str, str]:
        return {}

    async def raw(request: Any) -> PlainTextResponse:
        return PlainTextResponse("raw")

    inner = APIRouter()
    inner.add_route("/raw", raw)
    router.include_router(inner, prefix="/in")
    app = FastAPI()
    before = len(app.router.routes)
    with pytest.raises(PluginError, match=r"route /in/raw is not a FastAPI route"):
        add_routes_flat(app, router, prefix=PREFIX)
    assert len(app.router.routes) == before, "nothing half-added"


def test_an_included_router_with_a_lifespan_is_refused() -> None:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: object) -> Any:
        yield

    inner = APIRouter(lifespan=lifespan)

    @inner.get("/x", dependencies=[Public])
    async def x() -> dict[str, str]:
        return {}

    router = APIRouter()
    router.include_router(inner)
    with pytest.raises(PluginError, match="hostcore_startup"):
        add_routes_flat(FastAPI(), router, prefix=PREFIX)


# --- routers a plugin may not return --------------------------------------------------


class RouterWithLifespan:
    """A router that brings its own lifespan: hostcore would not run it, so it refuses."""

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        @asynccontextmanager
        async def lifespan(app: object) -> AsyncIterator[None]:
            yield

        router = APIRouter(lifespan=lifespan)

        @router.get("/word", dependencies=[Public])
        async def word() -> dict[str, str]:
            return {"word": "hi"}

        return router


def test_a_router_with_its_own_lifespan_fails_the_plugin(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    client = client_for(app_factory({"life": RouterWithLifespan()}))
    assert "hostcore_startup" in failed_plugin_reason(client, "life")


class RouterWithFrontend:
    """router.frontend(...) routes live outside router.routes: hostcore refuses them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter()

        @router.get("/word", dependencies=[Public])
        async def word() -> dict[str, str]:
            return {"word": "hi"}

        router.frontend("/ui", directory=self.directory)
        return router


def test_a_router_with_frontend_routes_fails_the_plugin(
    app_factory: AppFactory, client_for: ClientFor, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<p>hi</p>")
    client = client_for(app_factory({"front": RouterWithFrontend(tmp_path)}))
    assert "hostcore_static_mounts" in failed_plugin_reason(client, "front")


def test_plugin_routes_are_flat_with_the_plugin_tag(app_factory: AppFactory) -> None:
    app = app_factory({"echo": Echo()})
    paths = [getattr(route, "path", "") for route in app.router.routes]
    assert "/api/v1/echo/word" in paths, "one list, matched once: no nested router"
    operation = app.openapi()["paths"]["/api/v1/echo/word"]["get"]
    assert operation["tags"][0] == "echo"

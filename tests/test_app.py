"""create_app and its plugins: a plugin that fails is answered 503 while the rest serve on,
mounts and routes may not overlap, hooks must return what they promise, a plugin may not
take over hostcore's exception handlers, and every route declares who may call it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from hostcore.errors import NotFound, PluginError
from hostcore.hookspecs import hookimpl
from hostcore.security.deps import Public, RequireScope
from tests.helpers import (
    PROBE_READ,
    AppFactory,
    Broken,
    ClientFor,
    Echo,
    Mounting,
    Probe,
    bearer,
    failed_plugin_reason,
)


def test_failed_plugin_answers_503_and_the_rest_keep_serving(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    client = client_for(app_factory({"broken": Broken(), "echo": Echo()}))
    refused = client.get("/api/v1/broken/thing")
    assert refused.status_code == 503
    assert refused.json() == {
        "error": "PluginUnavailable",
        "detail": "plugin broken is unavailable",
    }
    assert client.get("/api/v1/echo/word").status_code == 200
    assert client.get("/api/v1/health").status_code == 200
    listing = {p["name"]: p for p in client.get("/api/v1/plugins").json()}
    assert listing["broken"]["state"] == "failed"
    assert listing["broken"]["health"] == {
        "status": "down",
        "detail": "startup failed: OSError: device /dev/widget not found",
    }
    assert listing["echo"]["state"] == "ok"


def test_failed_plugin_static_mount_answers_503(
    app_factory: AppFactory, client_for: ClientFor, tmp_path: Path
) -> None:
    class BrokenPanel(Mounting):
        @hookimpl
        def hostcore_startup(self) -> None:
            raise RuntimeError("no display")

    (tmp_path / "index.html").write_text("x")
    client = client_for(app_factory({"panel": BrokenPanel(tmp_path)}))
    assert client.get("/ui/").status_code == 503


def test_mount_conflict_fails_startup_naming_both(app_factory: AppFactory, tmp_path: Path) -> None:
    with pytest.raises(
        PluginError, match=r"mount /ui of plugin two .* overlaps mount /ui of plugin one"
    ):
        app_factory({"one": Mounting(tmp_path), "two": Mounting(tmp_path)})


def test_nested_mount_conflict_fails(app_factory: AppFactory, tmp_path: Path) -> None:
    with pytest.raises(
        PluginError, match=r"mount /ui/extra of plugin two .* overlaps mount /ui of plugin one"
    ):
        app_factory({"one": Mounting(tmp_path), "two": Mounting(tmp_path, "/ui/extra")})


def test_mount_over_core_route_fails(app_factory: AppFactory, tmp_path: Path) -> None:
    with pytest.raises(
        PluginError, match=r"mount /api of plugin grab .* covers route .* hostcore core"
    ):
        app_factory({"grab": Mounting(tmp_path, "/api")})
    with pytest.raises(PluginError, match="overlaps mount /static/docs of hostcore core"):
        app_factory({"grab": Mounting(tmp_path, "/static")})


def test_route_under_another_plugins_mount_fails(app_factory: AppFactory, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"route /api/v1/echo/word of plugin echo .* lies under"):
        app_factory({"cover": Mounting(tmp_path, "/api/v1/echo"), "echo": Echo()})


def test_routes_hook_must_return_a_router(app_factory: AppFactory, client_for: ClientFor) -> None:
    class Wrong:
        @hookimpl
        def hostcore_routes(self) -> object:
            return {"/x": None}

    client = client_for(app_factory({"wrong": Wrong(), "echo": Echo()}))
    assert "must return an APIRouter" in failed_plugin_reason(client, "wrong")
    assert client.get("/api/v1/echo/word").status_code == 200


def test_plugin_may_not_replace_core_handlers(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    class Greedy:
        @hookimpl
        def hostcore_exception_handlers(self) -> dict[type[Exception], object]:
            return {Exception: lambda request, exc: None}

    client = client_for(app_factory({"greedy": Greedy()}))
    reason = failed_plugin_reason(client, "greedy")
    assert "may not handle Exception: hostcore's own handler" in reason


@pytest.mark.parametrize("shared", [ValueError, NotFound])
def test_plugin_may_not_handle_exceptions_other_plugins_raise(
    app_factory: AppFactory, client_for: ClientFor, shared: type[Exception]
) -> None:
    class Greedy:
        @hookimpl
        def hostcore_exception_handlers(self) -> dict[type[Exception], object]:
            return {shared: lambda request, exc: None}

    client = client_for(app_factory({"greedy": Greedy()}))
    assert f"may not handle {shared.__name__}" in failed_plugin_reason(client, "greedy")


def test_a_raising_routes_hook_fails_only_that_plugin(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    class Faulty:
        @hookimpl
        def hostcore_routes(self) -> APIRouter:
            raise KeyError("missing table")

    client = client_for(app_factory({"faulty": Faulty(), "echo": Echo()}))
    assert "failed to build routes: KeyError" in failed_plugin_reason(client, "faulty")
    assert client.get("/api/v1/echo/word").status_code == 200


def test_failed_plugin_websockets_are_closed(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    class Streaming(Broken):
        @hookimpl
        def hostcore_routes(self) -> APIRouter:
            router = APIRouter(dependencies=[Public])

            @router.websocket("/feed")
            async def feed(websocket: WebSocket) -> None:
                await websocket.accept()
                await websocket.send_text("data")

            return router

    client = client_for(app_factory({"stream": Streaming()}))
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect("/api/v1/stream/feed"),
    ):
        pass
    assert closed.value.code == 1013


def test_an_app_starts_again_in_another_event_loop(app_factory: AppFactory) -> None:
    """Each TestClient runs its own loop: the second start must not trip over the first."""
    app = app_factory({"echo": Echo()})
    for _ in range(2):
        with TestClient(app) as client:
            assert client.get("/api/v1/echo/word", headers=bearer(client)).status_code == 200


# --- every plugin route declares who may call it --------------------------------------


class Undeclared:
    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter()

        @router.get("/open")
        async def wide_open() -> dict[str, str]:
            return {"open": "yes"}

        return router


class UnknownScope:
    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter(dependencies=[RequireScope("nobody:defines")])

        @router.get("/thing")
        async def thing() -> dict[str, str]:
            return {}

        return router


class PlainStarletteRoute:
    """A route added with Starlette's add_route: it cannot declare a scope at all."""

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter()

        async def raw(request: Request) -> PlainTextResponse:
            return PlainTextResponse("served without authentication")

        router.add_route("/raw", raw)
        return router


def test_a_route_without_a_declared_scope_fails_its_plugin(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    client = client_for(app_factory({"undeclared": Undeclared(), "probe": Probe()}))
    assert client.get(PROBE_READ).status_code == 200, "the other plugins keep serving"
    reason = failed_plugin_reason(client, "undeclared")
    assert "route /open of plugin undeclared declares no scope" in reason


def test_a_route_requiring_an_undefined_scope_fails_its_plugin(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    client = client_for(app_factory({"unknown": UnknownScope()}))
    assert re.search(
        r"nobody:defines.*which no plugin defines", failed_plugin_reason(client, "unknown")
    )


def test_a_plain_starlette_route_fails_its_plugin(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    """A route added with add_route() could not carry a declaration at all."""
    client = client_for(app_factory({"plain": PlainStarletteRoute()}))
    assert "route /raw is not a FastAPI route" in failed_plugin_reason(client, "plain")

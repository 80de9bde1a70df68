from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from hostcore import __version__
from hostcore.config import Settings
from hostcore.errors import NotFound, PluginError
from hostcore.hookspecs import hookimpl
from hostcore.security.deps import Public
from tests.helpers import Broken, Echo, Mounting, bearer, failed_plugin_reason

AppFactory = Callable[..., FastAPI]
ClientFor = Callable[[FastAPI], TestClient]


@pytest.fixture
def client(app_factory: AppFactory, client_for: ClientFor) -> TestClient:
    return client_for(app_factory({"echo": Echo()}))


def test_app_factory_reads_nothing_at_import() -> None:
    import hostcore.app
    import hostcore.asgi

    assert "_app" in vars(hostcore.asgi) and hostcore.asgi._app is None
    assert callable(hostcore.app.create_app)


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


def test_plugins_lists_version_state_and_health(
    app_factory: AppFactory, client_for: ClientFor, settings_factory: Callable[..., Settings]
) -> None:
    app = app_factory(
        {"echo": Echo(), "off": Echo()}, app_settings=settings_factory("plugins.disabled=off")
    )
    client = client_for(app)
    listing = client.get("/api/v1/plugins").json()
    assert listing == [
        {
            "name": "echo",
            "version": __version__,
            "distribution": "local",
            "builtin": False,
            "state": "ok",
            "reason": None,
            "scopes": {"echo:read": "Read echoes."},
            "health": {"status": "ok"},
        },
        {
            "name": "off",
            "version": __version__,
            "distribution": "local",
            "builtin": False,
            "state": "disabled",
            "reason": "disabled by configuration",
            "scopes": {},
            "health": {"status": "disabled"},
        },
    ]
    # A disabled plugin has no routes at all.
    assert client.get("/api/v1/off/word").status_code == 404


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


# --- errors ------------------------------------------------------------------------


def test_404_is_json(client: TestClient) -> None:
    response = client.get("/api/v1/nothing/here")
    assert response.status_code == 404
    assert response.json() == {
        "error": "NotFound",
        "detail": "no route matches GET /api/v1/nothing/here",
    }


def test_405_is_json_and_keeps_allow(client: TestClient) -> None:
    response = client.delete("/api/v1/health")
    assert response.status_code == 405
    assert response.json()["error"] == "MethodNotAllowed"
    assert response.headers["allow"] == "GET"


def test_422_keeps_the_field_list_without_echoing_input(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    class Strict:
        @hookimpl
        def hostcore_routes(self) -> APIRouter:
            router = APIRouter(dependencies=[Public])

            @router.get("/n")
            async def n(count: int) -> dict[str, int]:
                return {"count": count}

            return router

    client = client_for(app_factory({"strict": Strict()}))
    response = client.get("/api/v1/strict/n", params={"count": "$(reboot)"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "ValidationError"
    assert body["errors"] == [
        {
            "loc": ["query", "count"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]
    assert "$(reboot)" not in response.text


def test_domain_error_maps_to_its_status(client: TestClient) -> None:
    response = client.get("/api/v1/echo/missing")
    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "detail": "there is no such thing"}


# --- docs and landing page --------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_every_asset_from_hostcore(client: TestClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
    assets += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html.text)
    assert assets, "the page references no assets"
    for asset in assets:
        assert asset.startswith("/"), f"{page} loads {asset} from outside hostcore"
        assert client.get(asset).status_code == 200, asset
    assert "cdn" not in html.text and "googleapis" not in html.text


def test_openapi_document_lives_under_the_api(client: TestClient) -> None:
    document = client.get("/api/v1/openapi.json").json()
    assert document["info"]["version"] == __version__
    assert "/api/v1/echo/word" in document["paths"]
    assert client.get("/openapi.json").status_code == 404


def test_docs_can_be_turned_off(
    app_factory: AppFactory, client_for: ClientFor, settings_factory: Callable[..., Settings]
) -> None:
    client = client_for(app_factory(app_settings=settings_factory("server.docs=false")))
    for path in ("/docs", "/redoc", "/api/v1/openapi.json", "/static/docs/swagger-ui.css"):
        assert client.get(path).status_code == 404, path
    assert "turned off" in client.get("/").text


def test_landing_page_names_server_plugins_and_docs(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    page = client_for(app_factory({"echo": Echo(), "broken": Broken()})).get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f"hostcore {__version__}" in page.text
    assert re.search(r"<td>echo</td>.*<td class=\"ok\">ok</td>", page.text)
    assert re.search(r"<td>broken</td>.*<td class=\"failed\">failed</td>", page.text)
    assert 'href="/docs"' in page.text and 'href="/redoc"' in page.text


@pytest.mark.parametrize(
    ("report", "status"),
    [
        ({"status": "sideways"}, "unknown"),
        ("fine", "unknown"),
        ({"status": "ok", "x": object()}, "unknown"),
    ],
)
def test_malformed_health_reports_do_not_break_the_list(
    app_factory: AppFactory, client_for: ClientFor, report: object, status: str
) -> None:
    class Odd:
        @hookimpl
        def hostcore_health(self) -> object:
            return report

    response = client_for(app_factory({"odd": Odd()})).get("/api/v1/plugins")
    assert response.status_code == 200
    assert response.json()[0]["health"]["status"] == status


def test_failed_plugin_websockets_are_closed(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    from starlette.websockets import WebSocket, WebSocketDisconnect

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


def test_422_is_documented_with_its_field_list(client: TestClient) -> None:
    from hostcore.errors import error_responses

    assert error_responses(422)[422]["model"].__name__ == "ValidationErrorRead"


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


def test_plugin_routes_are_flat_with_the_plugin_tag(app_factory: AppFactory) -> None:
    app = app_factory({"echo": Echo()})
    paths = [getattr(route, "path", "") for route in app.router.routes]
    assert "/api/v1/echo/word" in paths, "one list, matched once: no nested router"
    operation = app.openapi()["paths"]["/api/v1/echo/word"]["get"]
    assert operation["tags"][0] == "echo"


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


def test_an_app_starts_again_in_another_event_loop(app_factory: AppFactory) -> None:
    """Each TestClient runs its own loop: the second start must not trip over the first."""
    app = app_factory({"echo": Echo()})
    for _ in range(2):
        with TestClient(app) as client:
            assert client.get("/api/v1/echo/word", headers=bearer(client)).status_code == 200

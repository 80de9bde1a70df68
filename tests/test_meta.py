"""hostcore's own routes: the plugin list (what anonymous callers see, how often health
hooks run), the landing page, the API document and the offline docs."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hostcore import __version__, meta
from hostcore.config import Settings
from hostcore.hookspecs import hookimpl
from tests.helpers import AppFactory, Broken, ClientFor, Echo, bearer

ANONYMOUS = {"Authorization": ""}


@pytest.fixture
def client(app_factory: AppFactory, client_for: ClientFor) -> TestClient:
    return client_for(app_factory({"echo": Echo()}))


class Counted:
    """A plugin whose health hook counts its calls and reports a detail."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    async def hostcore_health(self) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0)
        return {"status": "degraded", "detail": "fan at 80 % (/dev/fan0)"}


def test_anonymous_callers_see_states_not_reasons(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    client = client_for(app_factory({"broken": Broken(), "echo": Echo(), "fan": Counted()}))
    listing = {p["name"]: p for p in client.get("/api/v1/plugins", headers=ANONYMOUS).json()}
    assert listing["broken"]["state"] == "failed"
    assert listing["broken"]["reason"] is None
    assert listing["broken"]["health"] == {"status": "down"}
    assert listing["fan"]["health"] == {"status": "degraded"}
    assert listing["echo"]["health"] == {"status": "ok"}


def test_auth_admin_sees_reasons_and_health_details(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    client = client_for(app_factory({"broken": Broken(), "fan": Counted()}))
    for headers in (bearer(client, ["auth:admin"]), bearer(client, ["*"])):
        listing = {p["name"]: p for p in client.get("/api/v1/plugins", headers=headers).json()}
        assert "OSError: device /dev/widget not found" in listing["broken"]["reason"]
        assert listing["fan"]["health"]["detail"] == "fan at 80 % (/dev/fan0)"
    reader = bearer(client, ["fan:read"])
    listing = {p["name"]: p for p in client.get("/api/v1/plugins", headers=reader).json()}
    assert listing["broken"]["reason"] is None, "another scope is not enough"


def test_a_health_hook_runs_at_most_once_per_interval(
    app_factory: Callable[..., FastAPI],
    client_for: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(meta, "HEALTH_MAX_AGE_S", 3600.0)
    fan = Counted()
    client = client_for(app_factory({"fan": fan}))
    for _ in range(20):
        assert client.get("/api/v1/plugins").status_code == 200
    assert fan.calls == 1


def test_concurrent_listings_share_one_health_check(
    app_factory: Callable[..., FastAPI],
    client_for: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(meta, "HEALTH_MAX_AGE_S", 3600.0)
    fan = Counted()
    app = app_factory({"fan": fan})
    checks = meta.HealthChecks(app.state.registry)
    plugin = app.state.registry["fan"]

    async def ask_many() -> list[dict[str, Any]]:
        return await asyncio.gather(*(checks.report(plugin, app) for _ in range(10)))

    reports = asyncio.run(ask_many())
    assert fan.calls == 1 and all(r["status"] == "degraded" for r in reports)


def test_an_expired_report_is_checked_again(
    app_factory: Callable[..., FastAPI],
    client_for: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(meta, "HEALTH_MAX_AGE_S", 0.0)
    fan = Counted()
    client = client_for(app_factory({"fan": fan}))
    for _ in range(3):
        client.get("/api/v1/plugins")
    assert fan.calls == 3


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


# --- docs and landing page ------------------------------------------------------------


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

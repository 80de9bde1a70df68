"""hostcore's own routes: the plugin list (what anonymous callers see, health hooks rate)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hostcore import meta
from hostcore.hookspecs import hookimpl
from tests.helpers import Broken, Echo, bearer

ANONYMOUS = {"Authorization": ""}


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

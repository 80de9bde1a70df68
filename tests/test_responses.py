"""Encoded answers with an entity tag: the same bytes for every poller, 304 for a current copy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel

from hostcore.config import Settings
from hostcore.hookspecs import hookimpl
from hostcore.responses import CONDITIONAL_GET, Encoded, revalidated
from hostcore.security.deps import RequireScope

RPI = Path(__file__).resolve().parent / "fixtures" / "system" / "rpi"


class Reading(BaseModel):
    value: int


class Meter:
    """A plugin that keeps one encoded reading and answers it with revalidated()."""

    def __init__(self) -> None:
        self.encoded = Encoded.of(Reading(value=1))
        self.encodings = 1

    def change(self, value: int) -> None:
        self.encoded = Encoded.of(Reading(value=value))
        self.encodings += 1

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"meter:read": "Read the meter."}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter()
        meter = self

        @router.get(
            "/reading",
            dependencies=[RequireScope("meter:read")],
            response_model=Reading,
            openapi_extra=CONDITIONAL_GET,
        )
        async def reading(request: Request) -> Response:
            return revalidated(request, meter.encoded)

        return router


def test_the_same_bytes_carry_an_etag_and_no_cache(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    meter = Meter()
    client = client_for(app_factory({"meter": meter}))
    first, second = client.get("/api/v1/meter/reading"), client.get("/api/v1/meter/reading")
    assert first.json() == {"value": 1} and first.content == second.content
    assert first.headers["etag"] == second.headers["etag"] == meter.encoded.etag
    assert first.headers["cache-control"] == "no-cache"
    assert meter.encodings == 1, "encoded once, answered twice"


@pytest.mark.parametrize("sent", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
def test_a_current_copy_gets_304_without_a_body(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient], sent: str
) -> None:
    meter = Meter()
    client = client_for(app_factory({"meter": meter}))
    etag = client.get("/api/v1/meter/reading").headers["etag"]
    revalidated_copy = client.get(
        "/api/v1/meter/reading", headers={"If-None-Match": sent.format(etag=etag)}
    )
    assert revalidated_copy.status_code == 304
    assert revalidated_copy.content == b""
    assert revalidated_copy.headers["etag"] == etag


def test_a_tag_in_any_if_none_match_line_counts(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    """Several header lines are one list (RFC 9110 §5.3): the second line's tag matches."""
    meter = Meter()
    client = client_for(app_factory({"meter": meter}))
    etag = client.get("/api/v1/meter/reading").headers["etag"]
    lines = [("If-None-Match", '"other"'), ("If-None-Match", etag)]
    assert client.get("/api/v1/meter/reading", headers=lines).status_code == 304


def test_an_encoded_body_built_directly_gets_its_headers() -> None:
    encoded = Encoded(b"[1]", '"v1"')
    assert encoded.headers == (
        (b"etag", b'"v1"'),
        (b"cache-control", b"no-cache"),
        (b"content-type", b"application/json"),
        (b"content-length", b"3"),
    )
    assert encoded.revalidation_headers == encoded.headers[:2]
    assert Encoded.of(Reading(value=1)).headers[2:] == (
        (b"content-type", b"application/json"),
        (b"content-length", b"11"),
    )


def test_a_stale_or_hostile_tag_gets_the_new_body(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    meter = Meter()
    client = client_for(app_factory({"meter": meter}))
    etag = client.get("/api/v1/meter/reading").headers["etag"]
    meter.change(2)
    for sent in (etag, '"' + "x" * 5000 + '"', "\t,,\t"):
        answer = client.get("/api/v1/meter/reading", headers={"If-None-Match": sent})
        assert answer.status_code == 200 and answer.json() == {"value": 2}


def test_revalidation_still_needs_admission(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    client = client_for(app_factory({"meter": Meter()}))
    etag = client.get("/api/v1/meter/reading").headers["etag"]
    refused = client.get(
        "/api/v1/meter/reading", headers={"If-None-Match": etag, "Authorization": ""}
    )
    assert refused.status_code == 401


def test_the_conditional_get_is_documented(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> None:
    client = client_for(app_factory({"meter": Meter()}))
    operation = client.get("/api/v1/openapi.json").json()["paths"]["/api/v1/meter/reading"]["get"]
    assert "304" in operation["responses"]
    assert [p["name"] for p in operation["parameters"]] == ["If-None-Match"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Reading"}


def test_system_stats_revalidate_until_the_next_sample(
    settings_factory: Callable[..., Settings], client_for: Callable[..., TestClient]
) -> None:
    from hostcore.app import create_app

    client = client_for(create_app(settings_factory(f"plugins.system.root={RPI}")))
    first = client.get("/api/v1/system/stats")
    assert first.status_code == 200 and first.json()["cpu"]["count"] >= 1
    etag = first.headers["etag"]
    again = client.get("/api/v1/system/stats", headers={"If-None-Match": etag})
    system = client.app.state.system  # type: ignore[attr-defined]
    if again.status_code == 200:  # a new sample was taken in between
        assert again.headers["etag"] != etag
    else:
        assert again.status_code == 304
    system.collector.sample()  # a new sample, so a new tag
    newer = client.get("/api/v1/system/stats", headers={"If-None-Match": etag})
    assert newer.status_code == 200 and newer.headers["etag"] != etag

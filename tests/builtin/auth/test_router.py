"""The auth plugin's routes against hostile input: bounded numbers, no coercion."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import hostcore.builtin.auth

ClientFor = Callable[[FastAPI], TestClient]


@pytest.fixture
def api(app_factory: Callable[..., FastAPI], client_for: ClientFor) -> TestClient:
    return client_for(app_factory({"auth": hostcore.builtin.auth}))


@pytest.mark.parametrize("path", ["/api/v1/auth/activity", "/api/v1/auth/activity/stats"])
@pytest.mark.parametrize(
    "since",
    ["inf", "nan", "1e300", "253402300800", pytest.param("1" + "0" * 400, id="1e400-in-digits")],
)
def test_activity_since_must_be_a_finite_epoch_before_the_year_10000(
    api: TestClient, path: str, since: str
) -> None:
    response = api.get(path, params={"since": since})

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "since"]


@pytest.mark.parametrize("ttl_s", ["600", True, 600.0])
def test_a_token_lifetime_must_be_a_json_integer_and_is_never_coerced(
    api: TestClient, ttl_s: object
) -> None:
    response = api.post("/api/v1/auth/token", json={"ttl_s": ttl_s})

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "ttl_s"]


def test_a_token_request_with_well_typed_fields_still_works(api: TestClient) -> None:
    response = api.post("/api/v1/auth/token", json={"ttl_s": 600, "scopes": ["auth:admin"]})

    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == 600

"""The auth plugin's routes over HTTP: getting a token (a user's login, a client's signed
request or token, an admin's token for another client), who may rotate keys and read the
activity record, and hostile input (bounded numbers, no coercion).

The rules behind the token endpoint are tested without HTTP in test_service.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import hostcore.builtin.auth
from hostcore.config import Settings
from tests.helpers import (
    WHOAMI,
    ClientFor,
    Serve,
    add_user,
    assert_error,
    authorization,
    bearer,
    post_signed,
    runtime_of,
)

TOKEN = "/api/v1/auth/token"
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def api(app_factory: Callable[..., FastAPI], client_for: ClientFor) -> TestClient:
    return client_for(app_factory({"auth": hostcore.builtin.auth}))


# --- hostile input ----------------------------------------------------------------------


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


# --- a user's login -------------------------------------------------------------------


def test_user_login_gives_a_token_with_the_roles_scopes(serve: Serve) -> None:
    client = serve()
    add_user(client, "alice", PASSWORD, "viewer")
    response = client.post(TOKEN, json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.text
    issued = response.json()
    assert issued["token_type"] == "bearer"
    assert issued["subject"] == "user:alice"
    assert issued["scopes"] == ["*:read"]
    assert issued["expires_in"] == 3600
    whoami = client.get(WHOAMI, headers=authorization(issued["access_token"])).json()
    assert whoami["subject"] == "user:alice" and whoami["kind"] == "user"
    assert (
        client.get("/api/v1/probe/read", headers=authorization(issued["access_token"])).status_code
        == 200
    )
    write = client.post("/api/v1/probe/write", headers=authorization(issued["access_token"]))
    assert_error(write, 403, "Forbidden", "this needs the scope probe:write")


def test_user_cannot_ask_for_more_than_the_role_grants(serve: Serve) -> None:
    client = serve()
    add_user(client, "victor", PASSWORD, "viewer")
    response = client.post(
        TOKEN, json={"username": "victor", "password": PASSWORD, "scopes": ["auth:admin"]}
    )
    assert_error(response, 403, "Forbidden", "user victor may not have the scopes: auth:admin")
    widened = client.post(
        TOKEN, json={"username": "victor", "password": PASSWORD, "scopes": ["*:*"]}
    )
    assert_error(widened, 403, "Forbidden", "may not have the scopes: *:*")
    narrower = client.post(
        TOKEN, json={"username": "victor", "password": PASSWORD, "scopes": ["probe:read"]}
    )
    assert narrower.json()["scopes"] == ["probe:read"]


def test_a_login_with_a_lone_surrogate_in_the_password_is_a_failed_login(serve: Serve) -> None:
    client = serve()
    add_user(client, "alice", PASSWORD, "viewer")
    body = json.dumps({"username": "alice", "password": PASSWORD})[:-2] + '\\ud800"}'
    response = client.post(TOKEN, content=body, headers={"content-type": "application/json"})
    assert_error(response, 401, "Unauthorized", "invalid username or password")


def test_login_with_a_client_name_is_refused(serve: Serve) -> None:
    client = serve()
    response = client.post(TOKEN, json={"username": "a", "password": PASSWORD, "client": "tester"})
    assert_error(response, 400, "BadRequest", "needs username and password, and no client")


# --- a client's own token, a token for another client ---------------------------------


def test_a_client_gets_its_own_token_by_a_signed_request(serve: Serve) -> None:
    client = serve()
    response = post_signed(client, {"scopes": ["probe:read"], "ttl_s": 600})
    issued = response.json()
    assert issued["subject"] == "client:tester"
    assert issued["scopes"] == ["probe:read"]
    assert issued["expires_in"] == 600
    assert (
        client.get("/api/v1/probe/read", headers=authorization(issued["access_token"])).status_code
        == 200
    )


def test_unauthenticated_token_request_is_refused(serve: Serve) -> None:
    client = serve()
    assert_error(client.post(TOKEN, json={}), 401, "Unauthorized", "no credentials")
    assert_error(
        client.post(TOKEN, json={"client": "tester"}), 401, "Unauthorized", "no credentials"
    )


def test_token_for_scopes_the_client_lacks_is_403(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(settings_factory('auth.clients.panel.scopes=["probe:read"]'))
    response = post_signed(client, {"scopes": ["probe:write"]}, name="panel")
    assert_error(response, 403, "Forbidden", "may not have the scopes: probe:write")
    wildcard = post_signed(client, {"scopes": ["probe:*"]}, name="panel")
    assert_error(wildcard, 403, "Forbidden", "may not have the scopes: probe:*")


def test_token_for_another_client_needs_auth_admin(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(settings_factory('auth.clients.panel.scopes=["probe:read"]'))
    panel = bearer(client, ["probe:read"], name="panel")
    refused = client.post(TOKEN, json={"client": "tester"}, headers=panel)
    assert_error(refused, 403, "Forbidden", "needs the scope auth:admin")
    signed_refused = post_signed(client, {"client": "tester"}, name="panel")
    assert_error(signed_refused, 403, "Forbidden", "needs the scope auth:admin")

    admin = bearer(client, ["auth:admin"])
    minted = client.post(TOKEN, json={"client": "panel"}, headers=admin)
    assert minted.status_code == 200, minted.text
    assert minted.json()["subject"] == "client:panel"
    assert minted.json()["scopes"] == ["probe:read"]
    beyond = client.post(TOKEN, json={"client": "panel", "scopes": ["probe:write"]}, headers=admin)
    assert_error(beyond, 403, "Forbidden", "client panel may not have the scopes: probe:write")
    ghost = client.post(TOKEN, json={"client": "ghost"}, headers=admin)
    assert_error(ghost, 404, "NotFound", "no client ghost")


def test_a_user_token_cannot_mint_a_client_token_of_the_same_name(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(settings_factory('auth.roles.reader=["*:read"]'))
    add_user(client, "tester", PASSWORD, "reader")
    login = client.post(TOKEN, json={"username": "tester", "password": PASSWORD}).json()
    response = client.post(TOKEN, json={}, headers=authorization(login["access_token"]))
    assert_error(response, 403, "Forbidden", "needs the scope auth:admin")


def test_a_narrow_token_cannot_mint_a_wider_one(serve: Serve) -> None:
    client = serve()
    narrow = bearer(client, ["probe:read"])
    for scopes in (["*"], ["probe:write"], ["probe:*"], ["auth:admin"]):
        response = client.post(TOKEN, json={"scopes": scopes}, headers=narrow)
        assert_error(response, 403, "Forbidden", "may not have the scopes")
    same = client.post(TOKEN, json={}, headers=narrow)
    assert same.json()["scopes"] == ["probe:read"], "by default: what the credential has"


def test_a_token_cannot_outlive_itself_by_minting_a_successor(serve: Serve) -> None:
    client = serve()
    runtime = runtime_of(client)
    assert client.portal is not None
    parent = client.portal.call(runtime.issue, "client", "tester", ["probe:read"], 60)
    response = client.post(TOKEN, json={}, headers=authorization(parent.access_token))
    if response.status_code == 200:
        assert response.json()["expires_at"] <= parent.expires_at, response.json()
    else:
        assert_error(response, 403, "Forbidden", "")


def test_revoking_a_token_revokes_the_tokens_got_with_it_at_any_depth(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    """A leaked token may have been used to get others (for itself, or with auth:admin
    for another client): revoking it by jti revokes those too, and nothing else."""
    client = serve(settings_factory('auth.clients.other.scopes=["probe:read"]'))
    runtime = runtime_of(client)
    assert client.portal is not None
    leaked = client.portal.call(runtime.issue, "client", "tester", ["*"])
    child = client.post(TOKEN, json={}, headers=authorization(leaked.access_token)).json()
    grandchild = client.post(TOKEN, json={}, headers=authorization(child["access_token"])).json()
    for_another = client.post(
        TOKEN, json={"client": "other"}, headers=authorization(leaked.access_token)
    ).json()
    sibling = bearer(client)  # got another way: not revoked with it
    admin = bearer(client)
    revoked = client.delete(f"/api/v1/auth/tokens/{leaked.jti}", headers=admin)
    assert revoked.json() == {"revoked": 4}
    for token in (child, grandchild, for_another):
        refused = client.get(WHOAMI, headers=authorization(token["access_token"]))
        assert refused.status_code == 401, token["subject"]
    assert client.get(WHOAMI, headers=authorization(leaked.access_token)).status_code == 401
    assert client.get(WHOAMI, headers=sibling).status_code == 200
    assert client.get(WHOAMI, headers=admin).status_code == 200


def test_ttl_is_bounded(serve: Serve, settings_factory: Callable[..., Settings]) -> None:
    client = serve(settings_factory("auth.max_token_ttl_s=600"))
    too_long = post_signed(client, {"ttl_s": 601})
    assert_error(too_long, 400, "BadRequest", "ttl_s may be at most 600")
    too_short = post_signed(client, {"ttl_s": 5})
    assert too_short.status_code == 422


# --- keys and the activity record need auth:admin -------------------------------------


def test_rotation_needs_auth_admin(serve: Serve) -> None:
    client = serve()
    reader = bearer(client, ["*:read"])
    assert_error(
        client.post("/api/v1/auth/keys/rotate", headers=reader), 403, "Forbidden", "auth:admin"
    )
    assert_error(client.get("/api/v1/auth/keys", headers=reader), 403, "Forbidden", "auth:admin")


def test_activity_needs_auth_admin(serve: Serve) -> None:
    client = serve()
    reader = bearer(client, ["*:read"])
    for path in ("/api/v1/auth/activity", "/api/v1/auth/activity/stats"):
        assert_error(client.get(path, headers=reader), 403, "Forbidden", "auth:admin")
        assert_error(client.get(path), 401, "Unauthorized", "no credentials")

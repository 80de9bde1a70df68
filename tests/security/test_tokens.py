"""Getting tokens (login, signed request, CLI, admin for others), keys and their rotation.

Also: no private key material in any HTTP answer, and a revocation that is
committed late (the store was busy) still reaches the workers.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from hostcore.config import Settings
from hostcore.security.runtime import SecurityRuntime
from tests.helpers import (
    add_user,
    assert_error,
    authorization,
    b64url,
    bearer,
    isolated_environ,
    run_hostcore,
    runtime_of,
    signed,
)

TOKEN = "/api/v1/auth/token"
WHOAMI = "/api/v1/auth/whoami"
Serve = Callable[..., TestClient]
PASSWORD = "correct-horse-battery-staple"


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def signed_post(
    client: TestClient, body: dict[str, object], name: str = "tester"
) -> dict[str, str]:
    content = json.dumps(body).encode()
    return {
        **signed(client, "POST", TOKEN, body=content, name=name),
        "content-type": "application/json",
    }


def post_signed(
    client: TestClient, body: dict[str, object], name: str = "tester"
) -> httpx2.Response:
    content = json.dumps(body).encode()
    return client.post(TOKEN, content=content, headers=signed_post(client, body, name))


# --- users -------------------------------------------------------------------------------


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


def test_failed_logins_all_say_the_same(serve: Serve) -> None:
    client = serve()
    add_user(client, "alice", PASSWORD, "admin")
    attempts = {
        "wrong password": {"username": "alice", "password": "not-her-password"},
        "unknown user": {"username": "mallory", "password": PASSWORD},
        "impossible name": {"username": "Robert'); DROP", "password": PASSWORD},
        "empty password": {"username": "alice", "password": ""},
    }
    bodies = {}
    for case, body in attempts.items():
        response = client.post(TOKEN, json=body)
        assert response.status_code == 401, (case, response.text)
        bodies[case] = response.json()
    assert all(
        body == {"error": "Unauthorized", "detail": "invalid username or password"}
        for body in bodies.values()
    ), bodies


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


def test_login_with_a_client_name_is_refused(serve: Serve) -> None:
    client = serve()
    response = client.post(TOKEN, json={"username": "a", "password": PASSWORD, "client": "tester"})
    assert_error(response, 400, "BadRequest", "needs username and password, and no client")


# --- clients --------------------------------------------------------------------------------


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


def test_ttl_is_bounded(serve: Serve, settings_factory: Callable[..., Settings]) -> None:
    client = serve(settings_factory("auth.max_token_ttl_s=600"))
    too_long = post_signed(client, {"ttl_s": 601})
    assert_error(too_long, 400, "BadRequest", "ttl_s may be at most 600")
    too_short = post_signed(client, {"ttl_s": 5})
    assert too_short.status_code == 422


def test_token_issue_cli_prints_a_token_the_api_accepts(serve: Serve, tmp_path: Path) -> None:
    client = serve()
    result = run_hostcore(
        "token",
        "issue",
        "--client",
        "tester",
        "--scope",
        "x:y",
        env=isolated_environ(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    issued = json.loads(result.stdout)
    assert issued["token_type"] == "bearer"
    assert issued["subject"] == "client:tester"
    assert issued["scopes"] == ["x:y"]
    token = issued["access_token"]
    assert kid_of(token) == runtime_of(client).signing_key.kid  # type: ignore[union-attr]
    whoami = client.get(WHOAMI, headers=authorization(token))
    assert whoami.json()["scopes"] == ["x:y"]
    assert_error(
        client.get("/api/v1/probe/read", headers=authorization(token)),
        403,
        "Forbidden",
        "probe:read",
    )
    listed = client.get(
        "/api/v1/auth/tokens", params={"subject": "client:tester"}, headers=bearer(client)
    ).json()
    assert issued["jti"] in {row["jti"] for row in listed}
    assert token not in json.dumps(listed), "the store keeps the jti, never the token"


# --- keys -----------------------------------------------------------------------------------

PUBLIC_JWK_FIELDS = {"kty", "crv", "x", "kid", "alg", "use"}
KEY_FIELDS = {"kid", "algorithm", "created_at", "retired_at", "verify_until", "active"}


def private_material(runtime: SecurityRuntime) -> list[str]:
    """Every spelling of every private key this worker holds."""
    spellings = []
    for key in runtime.verifier.keys.values():
        raw = key.signing.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        spellings += [raw.hex(), b64url(raw), base64.b64encode(raw).decode()]
    return spellings


def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(
    serve: Serve,
) -> None:
    client = serve()
    runtime = runtime_of(client)
    before = bearer(client)
    old_kid = kid_of(before["Authorization"].removeprefix("Bearer "))

    rotated = client.post("/api/v1/auth/keys/rotate", headers=before)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert set(new) == KEY_FIELDS
    assert new["active"] is True and new["kid"] != old_kid

    assert client.get(WHOAMI, headers=before).status_code == 200, "old token still verifies"
    fresh = post_signed(client, {}).json()["access_token"]
    assert kid_of(fresh) == new["kid"]
    assert client.get(WHOAMI, headers=authorization(fresh)).status_code == 200

    jwks = client.get("/.well-known/jwks.json").json()
    assert {key["kid"] for key in jwks["keys"]} == {old_kid, new["kid"]}
    assert all(set(key) == PUBLIC_JWK_FIELDS for key in jwks["keys"]), jwks

    keys = {key["kid"]: key for key in client.get("/api/v1/auth/keys", headers=before).json()}
    old = keys[old_kid]
    assert old["active"] is False and old["retired_at"] is not None
    grace = runtime.auth.max_token_ttl_s + runtime.auth.leeway_s
    assert old["verify_until"] == pytest.approx(old["retired_at"] + grace)
    assert keys[new["kid"]]["active"] is True


def test_no_http_answer_carries_private_key_material(serve: Serve) -> None:
    client = serve()
    admin = bearer(client)
    answers = [client.post("/api/v1/auth/keys/rotate", headers=admin).text]
    answers += [client.get("/.well-known/jwks.json").text]
    answers += [client.get("/api/v1/auth/keys", headers=admin).text]
    answers += [client.get("/api/v1/auth/tokens", headers=admin).text]
    for key in client.get("/.well-known/jwks.json").json()["keys"]:
        assert "d" not in key
    secrets = private_material(runtime_of(client))
    assert len(secrets) == 6, "two keys, three spellings each"
    for answer in answers:
        for secret in secrets:
            assert secret not in answer


def test_rotation_needs_auth_admin(serve: Serve) -> None:
    client = serve()
    reader = bearer(client, ["*:read"])
    assert_error(
        client.post("/api/v1/auth/keys/rotate", headers=reader), 403, "Forbidden", "auth:admin"
    )
    assert_error(client.get("/api/v1/auth/keys", headers=reader), 403, "Forbidden", "auth:admin")


# --- revocation that reaches the store late -----------------------------------------------


def test_a_revocation_committed_late_is_still_enforced(serve: Serve, settings: Settings) -> None:
    """revoked_at is stamped before the UPDATE waits for the write lock (up to busy_timeout)."""
    client = serve()
    admin = bearer(client)
    victim = bearer(client)
    jti = jwt.decode(
        victim["Authorization"].removeprefix("Bearer "), options={"verify_signature": False}
    )["jti"]
    assert client.get(WHOAMI, headers=victim).status_code == 200
    assert client.get(WHOAMI, headers=admin).status_code == 200

    # Another writer (a worker flushing activity, a backup, a migration) holds the lock.
    writer = sqlite3.connect(settings.data_dir / "hostcore.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    answers: list[int] = []
    revoker = threading.Thread(
        target=lambda: answers.append(
            client.delete(f"/api/v1/auth/tokens/{jti}", headers=admin).status_code
        )
    )
    revoker.start()
    time.sleep(3.0)
    writer.execute("COMMIT")
    writer.close()
    revoker.join(timeout=10)
    assert answers == [200]

    time.sleep(1.0)
    response = client.get(WHOAMI, headers=victim)
    assert_error(response, 401, "Unauthorized", "token has been revoked")

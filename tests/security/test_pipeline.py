"""The request pipeline in one process: every refusal, with its status and JSON error.

Bearer tokens (forged, tampered, expired, for someone else), scopes, HMAC-signed
requests (stale, replayed, tampered, remote, behind proxies), the per-address
rate limit for failed attempts, the activity record, and the startup check
that every plugin route declares who may call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from hostcore.config import Settings
from hostcore.db.engine import Database
from hostcore.hookspecs import hookimpl
from hostcore.security import tokens
from hostcore.security.deps import RequireScope
from tests.helpers import (
    LOOPBACK,
    REMOTE,
    Probe,
    add_user,
    assert_error,
    authorization,
    b64url,
    b64url_decode,
    b64url_json,
    bearer,
    failed_plugin_reason,
    hmac_secret,
    runtime_of,
    signed,
)

WHOAMI = "/api/v1/auth/whoami"
PROBE_READ = "/api/v1/probe/read"
PROBE_WRITE = "/api/v1/probe/write"
Serve = Callable[..., TestClient]

# --- crafted tokens -------------------------------------------------------------------


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for client tester; a change to None drops the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "hostcore",
        "aud": "hostcore",
        "sub": "client:tester",
        "jti": str(uuid.uuid4()),
        "scopes": ["*"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def mint(client: TestClient, kid: str | None = "", **changes: Any) -> str:
    """A token signed with the server's real private key: only the claims are wrong."""
    key = runtime_of(client).signing_key
    assert key is not None
    headers = {"kid": key.kid if kid == "" else kid} if kid is not None else {}
    return jwt.encode(claims(**changes), key.signing, algorithm=key.algorithm, headers=headers)


def signing_kid(client: TestClient) -> str:
    key = runtime_of(client).signing_key
    assert key is not None
    return key.kid


def by_hand(client: TestClient, header: dict[str, Any]) -> str:
    """Valid claims and a real Ed25519 signature under a header PyJWT would not write."""
    key = runtime_of(client).signing_key
    assert key is not None
    signing_input = f"{b64url_json(header)}.{b64url_json(claims())}"
    return f"{signing_input}.{b64url(key.signing.sign(signing_input.encode()))}"


def unsigned(client: TestClient, *, with_kid: bool) -> str:
    header: dict[str, str] = {"alg": "none", "typ": "JWT"}
    if with_kid:
        key = runtime_of(client).signing_key
        assert key is not None
        header["kid"] = key.kid
    return f"{b64url_json(header)}.{b64url_json(claims())}."


def public_key_variants(client: TestClient) -> dict[str, bytes]:
    """What an attacker can read from the JWKS and try as an HMAC key."""
    jwk = client.get("/.well-known/jwks.json").json()["keys"][0]
    raw = b64url_decode(jwk["x"])
    pem = Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {"raw": raw, "pem": pem, "jwk-x": jwk["x"].encode()}


def hs256_with(client: TestClient, secret: bytes) -> str:
    """Algorithm confusion, by hand: PyJWT refuses a PEM as an HMAC key, an attacker does not."""
    key = runtime_of(client).signing_key
    assert key is not None
    signing_input = f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}."
    signing_input += b64url_json(claims())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def flip_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    raw = bytearray(b64url_decode(signature))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{b64url(bytes(raw))}"


def swap_payload(token: str, **changes: Any) -> str:
    """Keep header and signature, replace the claims (e.g. widen the scopes)."""
    head, _, signature = token.split(".")
    return f"{head}.{b64url_json(claims(**changes))}.{signature}"


def test_no_credentials_is_401(shared: TestClient) -> None:
    response = shared.get(WHOAMI)
    assert_error(response, 401, "Unauthorized", "no credentials")


@pytest.mark.parametrize(
    "header",
    ["Basic dGVzdGVyOnNlY3JldA==", "Bearer", "Bearer    ", "Token abc"],
)
def test_authorization_header_must_be_bearer(shared: TestClient, header: str) -> None:
    response = shared.get(WHOAMI, headers={"Authorization": header})
    assert_error(response, 401, "Unauthorized", "must be 'Bearer <token>'")


@pytest.mark.parametrize("token", ["abc", "abc.def", "a.b.c", "bm90IGpzb24.e30.", "!!!.@@@.###"])
def test_malformed_token(shared: TestClient, token: str) -> None:
    response = shared.get(WHOAMI, headers=authorization(token))
    assert_error(response, 401, "Unauthorized", "token is malformed")


def test_overlong_token_is_refused(shared: TestClient) -> None:
    client = shared
    token = mint(client, padding="x" * 5000)
    assert_error(client.get(WHOAMI, headers=authorization(token)), 401, "Unauthorized", "too long")


# (how the token is forged, the detail the server answers)
FORGERIES: dict[str, tuple[Callable[[TestClient], str], str]] = {
    "alg none, real kid": (
        lambda c: unsigned(c, with_kid=True),
        "token algorithm does not match its signing key",
    ),
    "alg none, no kid": (
        lambda c: unsigned(c, with_kid=False),
        "token names an unknown signing key",
    ),
    "unknown kid": (lambda c: mint(c, kid="0123456789abcdef"), "unknown signing key"),
    "no kid": (lambda c: mint(c, kid=None), "unknown signing key"),
    "numeric kid": (lambda c: by_hand(c, {"alg": "EdDSA", "kid": 7}), "token is malformed"),
    "kid of a list": (
        lambda c: by_hand(c, {"alg": "EdDSA", "kid": [signing_kid(c)]}),
        "token is malformed",
    ),
    "flipped signature byte": (lambda c: flip_signature(mint(c)), "token signature is invalid"),
    "widened payload": (
        lambda c: swap_payload(mint(c, scopes=["probe:read"]), scopes=["*"]),
        "token signature is invalid",
    ),
    "expired": (
        lambda c: mint(
            c, iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200, exp=int(time.time()) - 3600
        ),
        "token has expired",
    ),
    "expired beyond the leeway": (
        lambda c: mint(c, exp=int(time.time()) - 31 - 2),
        "token has expired",
    ),
    "not yet valid": (lambda c: mint(c, nbf=int(time.time()) + 3600), "token is not valid yet"),
    "issued in the future": (
        lambda c: mint(c, iat=int(time.time()) + 3600, nbf=int(time.time()) + 3600),
        "not valid yet",
    ),
    "wrong audience": (lambda c: mint(c, aud="someone-else"), "token is for another audience"),
    "wrong issuer": (lambda c: mint(c, iss="evil"), "token is from another issuer"),
    "no jti": (lambda c: mint(c, jti=None), "token lacks the jti claim"),
    "no exp": (lambda c: mint(c, exp=None), "token lacks the exp claim"),
    "no scopes": (lambda c: mint(c, scopes=None), "token lacks the scopes claim"),
    "scopes not a list": (lambda c: mint(c, scopes="*"), "token scopes are malformed"),
    "subject of another kind": (lambda c: mint(c, sub="robot:tester"), "subject is malformed"),
    "client not on the list": (lambda c: mint(c, sub="client:ghost"), "no longer allowed"),
    "lifetime beyond max_token_ttl_s": (
        lambda c: mint(c, exp=int(time.time()) + 7 * 86400 + 1),
        "token lifetime is longer than auth.max_token_ttl_s",
    ),
    "lifetime beyond max_token_ttl_s, issued long ago": (
        lambda c: mint(c, iat=int(time.time()) - 30 * 86400, nbf=int(time.time()) - 30 * 86400),
        "token lifetime is longer than auth.max_token_ttl_s",
    ),
    "user token without a role": (lambda c: mint(c, sub="user:alice"), "lacks the role claim"),
    "user token of a role no longer configured": (
        lambda c: mint(c, sub="user:alice", role="ghost"),
        "role ghost is no longer configured",
    ),
}


@pytest.mark.parametrize("case", list(FORGERIES))
def test_forged_or_invalid_token_is_refused(shared: TestClient, case: str) -> None:
    forge, detail = FORGERIES[case]
    client = shared
    response = client.get(WHOAMI, headers=authorization(forge(client)))
    assert_error(response, 401, "Unauthorized", detail)


@pytest.mark.parametrize("variant", ["raw", "pem", "jwk-x"])
def test_hs256_signed_with_the_public_key_is_refused(shared: TestClient, variant: str) -> None:
    client = shared
    token = hs256_with(client, public_key_variants(client)[variant])
    response = client.get(WHOAMI, headers=authorization(token))
    assert_error(response, 401, "Unauthorized", "token algorithm does not match its signing key")


def test_crafting_helpers_produce_tokens_the_server_accepts(shared: TestClient) -> None:
    """The forgeries above fail for the one reason they name, not for a broken helper."""
    client = shared
    assert (
        client.get(WHOAMI, headers=authorization(mint(client))).json()["subject"] == "client:tester"
    )
    hand_made = by_hand(client, {"alg": "EdDSA", "typ": "JWT", "kid": signing_kid(client)})
    assert client.get(WHOAMI, headers=authorization(hand_made)).status_code == 200
    within_leeway = mint(client, exp=int(time.time()) - 5)
    assert client.get(WHOAMI, headers=authorization(within_leeway)).status_code == 200
    as_list = mint(client, aud=["other", "hostcore"])
    assert client.get(WHOAMI, headers=authorization(as_list)).status_code == 200
    longest = mint(client, exp=int(time.time()) + 7 * 86400)
    assert client.get(WHOAMI, headers=authorization(longest)).status_code == 200
    user = mint(client, sub="user:alice", role="viewer", scopes=["probe:read"])
    assert client.get(WHOAMI, headers=authorization(user)).json()["subject"] == "user:alice"


def test_a_failed_token_is_not_cached_as_good(shared: TestClient) -> None:
    client = shared
    token = flip_signature(mint(client))
    for _ in range(3):
        assert client.get(WHOAMI, headers=authorization(token)).status_code == 401


def test_revoked_token_is_refused_at_once_by_the_revoking_worker(serve: Serve) -> None:
    client = serve()
    admin = bearer(client)
    token = bearer(client)["Authorization"].removeprefix("Bearer ")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert client.get(WHOAMI, headers=authorization(token)).status_code == 200  # now cached
    revoked = client.delete(f"/api/v1/auth/tokens/{jti}", headers=admin)
    assert revoked.json() == {"revoked": 1}
    assert_error(client.get(WHOAMI, headers=authorization(token)), 401, "Unauthorized", "revoked")
    again = client.delete(f"/api/v1/auth/tokens/{jti}", headers=admin)
    assert_error(again, 404, "NotFound", f"no live token {jti}")


def test_revoking_by_subject_refuses_every_token_of_it(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(settings_factory('auth.clients.panel.scopes=["probe:read"]'))
    panel = [bearer(client, ["probe:read"], name="panel") for _ in range(2)]
    tester = bearer(client)
    for headers in panel:
        assert client.get(PROBE_READ, headers=headers).status_code == 200
    gone = client.delete("/api/v1/auth/tokens/by-subject/client:panel", headers=tester)
    assert gone.json() == {"revoked": 2}
    for headers in panel:
        assert_error(client.get(PROBE_READ, headers=headers), 401, "Unauthorized", "revoked")
    assert client.get(WHOAMI, headers=tester).status_code == 200


def issued_in_the_past(client: TestClient, seconds_ago: float, ttl_s: int) -> tuple[str, str]:
    """A token issued and recorded as the issuer does, ``seconds_ago``: (token, jti)."""
    runtime = runtime_of(client)
    key = runtime.signing_key
    assert key is not None and client.portal is not None
    info = tokens.encode(
        key, runtime.auth, "client", "tester", ["*"], ttl_s, now=time.time() - seconds_ago
    )

    async def record() -> None:
        async with runtime.db.session() as session, session.begin():
            await tokens.record(session, info, "client")

    client.portal.call(record)
    return info.access_token, info.jti


@pytest.mark.parametrize("how", ["jti", "subject", "everything"])
def test_a_token_inside_its_expiry_leeway_can_be_revoked(
    serve: Serve, settings: Settings, how: str
) -> None:
    client = serve()
    admin = bearer(client)
    token, jti = issued_in_the_past(client, seconds_ago=65, ttl_s=60)  # expired 5 s ago
    assert client.get(WHOAMI, headers=authorization(token)).status_code == 200, (
        "the leeway accepts it"
    )
    if how == "jti":
        revoked = client.delete(f"/api/v1/auth/tokens/{jti}", headers=admin)
    elif how == "subject":
        revoked = client.delete("/api/v1/auth/tokens/by-subject/client:tester", headers=admin)
    else:
        revoked = client.delete("/api/v1/auth/tokens", params={"confirm": True}, headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] >= 1
    assert_error(client.get(WHOAMI, headers=authorization(token)), 401, "Unauthorized", "revoked")
    restarted = serve(settings)
    assert_error(
        restarted.get(WHOAMI, headers=authorization(token)), 401, "Unauthorized", "revoked"
    )


# --- scopes ----------------------------------------------------------------------------


def test_missing_scope_is_403_naming_it(shared: TestClient) -> None:
    client = shared
    reader = bearer(client, ["probe:read"])
    assert client.get(PROBE_READ, headers=reader).status_code == 200
    response = client.post(PROBE_WRITE, headers=reader)
    assert_error(response, 403, "Forbidden", "this needs the scope probe:write")
    admin_only = client.get("/api/v1/auth/tokens", headers=reader)
    assert_error(admin_only, 403, "Forbidden", "this needs the scope auth:admin")


@pytest.mark.parametrize(
    ("granted", "allowed"),
    [
        (["probe:*"], True),
        (["*:write"], True),
        (["*"], True),
        (["*:read"], False),
        (["other:write"], False),
        (["probe:writer"], False),
    ],
)
def test_wildcard_grants(shared: TestClient, granted: list[str], allowed: bool) -> None:
    client = shared
    response = client.post(PROBE_WRITE, headers=bearer(client, granted))
    assert response.status_code == (200 if allowed else 403), response.text


def test_authenticated_routes_need_no_particular_scope(shared: TestClient) -> None:
    client = shared
    response = client.get(WHOAMI, headers=bearer(client, ["x:y"]))
    assert response.json()["scopes"] == ["x:y"]


def test_narrowing_a_clients_scopes_in_config_narrows_its_live_tokens(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    wide = serve(settings_factory('auth.clients.panel.scopes=["probe:read", "probe:write"]'))
    token = bearer(wide, ["probe:read", "probe:write"], name="panel")
    everything = bearer(wide, ["probe:*"], name="panel")
    assert wide.post(PROBE_WRITE, headers=token).status_code == 200

    # The same store, restarted with a narrower grant (a config change and a reload).
    narrow = serve(settings_factory('auth.clients.panel.scopes=["probe:read"]'))
    for headers in (token, everything):
        assert narrow.get(PROBE_READ, headers=headers).status_code == 200
        assert_error(narrow.post(PROBE_WRITE, headers=headers), 403, "Forbidden", "probe:write")
        assert narrow.get(WHOAMI, headers=headers).json()["scopes"] == ["probe:read"]
    minted = narrow.post("/api/v1/auth/token", json={"scopes": ["probe:write"]}, headers=token)
    assert_error(minted, 403, "Forbidden", "may not have the scopes: probe:write")


def test_narrowing_a_roles_scopes_in_config_narrows_its_users_live_tokens(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    wide = serve(settings_factory('auth.roles.operator=["probe:*"]'))
    add_user(wide, "olga", "correct-horse-battery-staple", "operator")
    login = wide.post(
        "/api/v1/auth/token",
        json={"username": "olga", "password": "correct-horse-battery-staple"},
    )
    token = authorization(login.json()["access_token"])
    assert wide.post(PROBE_WRITE, headers=token).status_code == 200

    narrow = serve(settings_factory('auth.roles.operator=["*:read"]'))
    assert narrow.get(PROBE_READ, headers=token).status_code == 200
    assert_error(narrow.post(PROBE_WRITE, headers=token), 403, "Forbidden", "probe:write")
    assert narrow.get(WHOAMI, headers=token).json()["scopes"] == ["probe:read"]


# --- HMAC-signed requests ------------------------------------------------------------------


def test_signed_request_from_loopback_is_the_client(shared: TestClient) -> None:
    client = shared
    response = client.get(WHOAMI, headers=signed(client, "GET", WHOAMI))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": "client:tester",
        "kind": "client",
        "scopes": ["*"],
        "expires_at": None,
    }


def test_signed_request_with_body_and_query(shared: TestClient) -> None:
    client = shared
    body = b'{"x": 1}'
    headers = signed(client, "POST", PROBE_WRITE, query="b=2&a=1", body=body)
    response = client.post(f"{PROBE_WRITE}?b=2&a=1", content=body, headers=headers)
    assert response.json() == {"body": '{"x": 1}', "query": "b=2&a=1"}


def test_signed_request_covers_the_raw_percent_encoded_path(shared: TestClient) -> None:
    client = shared
    path = "/api/v1/probe/items/my%20item"
    response = client.get(path, headers=signed(client, "GET", path))
    assert response.json() == {"name": "my item"}, response.text
    other = signed(client, "GET", "/api/v1/probe/items/my%2520item")
    assert_error(client.get(path, headers=other), 401, "Unauthorized", "signature is invalid")


@pytest.mark.parametrize("skew", [-301, 301, -10_000])
def test_stale_timestamp_is_refused(shared: TestClient, skew: int) -> None:
    client = shared
    headers = signed(client, "GET", WHOAMI, now=time.time() + skew)
    assert_error(client.get(WHOAMI, headers=headers), 401, "Unauthorized", "stale")


def test_timestamp_inside_the_window_is_accepted(shared: TestClient) -> None:
    client = shared
    headers = signed(client, "GET", WHOAMI, now=time.time() - 250)
    assert client.get(WHOAMI, headers=headers).status_code == 200


def test_reused_nonce_is_a_replay(shared: TestClient) -> None:
    client = shared
    headers = signed(client, "GET", WHOAMI)
    assert client.get(WHOAMI, headers=headers).status_code == 200
    assert_error(client.get(WHOAMI, headers=headers), 401, "Unauthorized", "replay")


def test_nonce_is_spent_across_clients_and_routes(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(settings_factory('auth.clients.panel.scopes=["probe:read"]'))
    nonce = "n" * 32
    first = client.get(WHOAMI, headers=signed(client, "GET", WHOAMI, nonce=nonce))
    assert first.status_code == 200
    other = signed(client, "GET", PROBE_READ, name="panel", nonce=nonce)
    assert_error(client.get(PROBE_READ, headers=other), 401, "Unauthorized", "replay")


def test_a_refused_signature_does_not_spend_the_nonce(shared: TestClient) -> None:
    client = shared
    nonce = "m" * 32
    bad = signed(client, "GET", WHOAMI, nonce=nonce, secret=b"w" * 32)
    assert client.get(WHOAMI, headers=bad).status_code == 401
    good = signed(client, "GET", WHOAMI, nonce=nonce)
    assert client.get(WHOAMI, headers=good).status_code == 200


def test_tampered_body_is_refused(shared: TestClient) -> None:
    client = shared
    headers = signed(client, "POST", PROBE_WRITE, body=b'{"amount": 1}')
    response = client.post(PROBE_WRITE, content=b'{"amount": 9}', headers=headers)
    assert_error(response, 401, "Unauthorized", "request signature is invalid")


@pytest.mark.parametrize(
    ("signed_query", "sent_query"),
    [("a=1", "a=2"), ("a=1", "a=1&b=2"), ("a=1&a=2", "a=2&a=1"), ("", "a=1")],
)
def test_tampered_query_is_refused(shared: TestClient, signed_query: str, sent_query: str) -> None:
    client = shared
    headers = signed(client, "POST", PROBE_WRITE, query=signed_query)
    response = client.post(f"{PROBE_WRITE}?{sent_query}", headers=headers)
    assert_error(response, 401, "Unauthorized", "request signature is invalid")


def test_reordered_query_still_verifies(shared: TestClient) -> None:
    client = shared
    headers = signed(client, "POST", PROBE_WRITE, query="a=1&b=2")
    assert client.post(f"{PROBE_WRITE}?b=2&a=1", headers=headers).status_code == 200


def test_signature_for_another_path_or_method_is_refused(shared: TestClient) -> None:
    client = shared
    other_path = signed(client, "GET", PROBE_READ)
    assert_error(client.get(WHOAMI, headers=other_path), 401, "Unauthorized", "invalid")
    other_method = signed(client, "GET", PROBE_WRITE)
    assert_error(client.post(PROBE_WRITE, headers=other_method), 401, "Unauthorized", "invalid")


def test_signature_for_another_client_name_is_refused(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(settings_factory('auth.clients.panel.scopes=["probe:read"]'))
    headers = signed(client, "GET", WHOAMI, name="panel")
    headers["X-Hostcore-Client"] = "tester"
    assert_error(client.get(WHOAMI, headers=headers), 401, "Unauthorized", "invalid")


@pytest.mark.parametrize("name", ["ghost", "Tester", "tester\n", "a" * 80])
def test_unknown_client_is_refused(shared: TestClient, name: str) -> None:
    client = shared
    headers = signed(client, "GET", WHOAMI, name="ghost")
    headers["X-Hostcore-Client"] = name
    assert_error(client.get(WHOAMI, headers=headers), 401, "Unauthorized", "unknown client")


def test_wrong_secret_is_refused(shared: TestClient) -> None:
    client = shared
    headers = signed(client, "GET", WHOAMI, secret=b"not-the-secret-" * 3)
    assert_error(client.get(WHOAMI, headers=headers), 401, "Unauthorized", "invalid")


@pytest.mark.parametrize(
    ("header", "value", "detail"),
    [
        ("X-Hostcore-Timestamp", "12e3", "malformed timestamp"),
        ("X-Hostcore-Timestamp", "", "malformed timestamp"),
        ("X-Hostcore-Nonce", "short", "malformed nonce"),
        ("X-Hostcore-Nonce", "x" * 16 + "/", "malformed nonce"),
        ("X-Hostcore-Signature", "ZZ", "invalid"),
    ],
)
def test_malformed_signing_headers(
    shared: TestClient, header: str, value: str, detail: str
) -> None:
    client = shared
    headers = signed(client, "GET", WHOAMI)
    headers[header] = value
    assert_error(client.get(WHOAMI, headers=headers), 401, "Unauthorized", detail)


def test_client_with_a_secret_file_is_not_signed_by_another_clients_secret(
    serve: Serve, settings_factory: Callable[..., Settings], tmp_path: Any
) -> None:
    own = tmp_path / "deployer.secret"
    own.write_text("d" * 64 + "\n")
    own.chmod(0o600)
    client = serve(
        settings_factory(
            'auth.clients.deployer.scopes=["probe:read"]',
            f"auth.clients.deployer.secret_file={own}",
        )
    )
    others = signed(client, "GET", WHOAMI, name="deployer", secret=hmac_secret(client))
    assert_error(client.get(WHOAMI, headers=others), 401, "Unauthorized", "invalid")
    mine = signed(client, "GET", WHOAMI, name="deployer", secret=b"d" * 64)
    assert client.get(WHOAMI, headers=mine).json()["subject"] == "client:deployer"


def test_signed_request_from_a_remote_peer_is_refused(serve: Serve) -> None:
    client = serve(address=REMOTE)
    response = client.get(WHOAMI, headers=signed(client, "GET", WHOAMI))
    assert_error(response, 401, "Unauthorized", "accepted only from this host")


def test_forwarded_for_from_an_untrusted_peer_does_not_make_it_local(serve: Serve) -> None:
    client = serve(address=REMOTE)
    for forwarded in ("127.0.0.1", "::1", "127.0.0.1, 127.0.0.1"):
        headers = {**signed(client, "GET", WHOAMI), "X-Forwarded-For": forwarded}
        response = client.get(WHOAMI, headers=headers)
        assert_error(response, 401, "Unauthorized", "accepted only from this host")


def test_behind_a_remote_proxy_no_forwarded_address_is_local(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    # A remote proxy's 127.0.0.1 is that proxy's host, not this one: only a proxy on this
    # host can vouch for a local client (docs/security.md, "Proxies and the unix socket").
    proxied = settings_factory('server.trusted_proxies=["203.0.113.0/24"]')
    client = serve(proxied, address=REMOTE)
    for forwarded in ("127.0.0.1", "::ffff:127.0.0.1", "unix", "198.51.100.7", "127.0.0.1, ::1"):
        headers = {**signed(client, "GET", WHOAMI), "X-Forwarded-For": forwarded}
        response = client.get(WHOAMI, headers=headers)
        assert_error(response, 401, "Unauthorized", "only from this host")
    missing = signed(client, "GET", WHOAMI)
    assert_error(client.get(WHOAMI, headers=missing), 401, "Unauthorized", "only from this host")


def test_behind_a_loopback_proxy_a_forwarded_loopback_client_is_local(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    proxied = settings_factory('server.trusted_proxies=["127.0.0.1"]')
    client = serve(proxied, address=LOOPBACK)
    for forwarded in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        headers = {**signed(client, "GET", WHOAMI), "X-Forwarded-For": forwarded}
        assert client.get(WHOAMI, headers=headers).status_code == 200, forwarded
    # The client prepends a loopback hop; the proxy appends the real address.
    spoofed = {**signed(client, "GET", WHOAMI), "X-Forwarded-For": "127.0.0.1, 198.51.100.7"}
    assert_error(client.get(WHOAMI, headers=spoofed), 401, "Unauthorized", "only from this host")


def test_a_loopback_proxy_forwarding_a_remote_client_is_refused(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    proxied = settings_factory('server.trusted_proxies=["127.0.0.1"]')
    client = serve(proxied, address=LOOPBACK)
    remote = {**signed(client, "GET", WHOAMI), "X-Forwarded-For": "198.51.100.7"}
    assert_error(client.get(WHOAMI, headers=remote), 401, "Unauthorized", "only from this host")
    assert client.get(WHOAMI, headers=signed(client, "GET", WHOAMI)).status_code == 200


def test_bearer_tokens_work_from_remote_peers(serve: Serve) -> None:
    client = serve(address=REMOTE)
    assert client.get(WHOAMI, headers=bearer(client)).status_code == 200


# --- rate limit (one process; tests/security/test_revocation_workers.py has two) ------------


def test_failed_attempts_count_against_the_address(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    limited = settings_factory('ratelimit.routes={"GET /api/v1/auth/whoami": "3/minute"}')
    client = serve(limited)
    in_use = bearer(client)
    assert client.get(WHOAMI, headers=in_use).status_code == 200
    remaining = []
    for _ in range(3):
        response = client.get(WHOAMI, headers=authorization("garbage"))
        assert response.status_code == 401
        remaining.append(response.headers["x-ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]
    refused = client.get(WHOAMI, headers=authorization("garbage"))
    assert_error(refused, 429, "TooManyRequests", "rate limit of 3 exceeded")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) >= time.time()
    # A caller whose token this worker already verified is counted as itself, not as the
    # address; a token it has not seen would need a signature check, which an address
    # over its limit does not get.
    assert client.get(WHOAMI, headers=in_use).status_code == 200
    assert_error(client.get(WHOAMI, headers=bearer(client)), 429, "TooManyRequests", "rate limit")


def test_principal_limit_is_per_route(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    limited = settings_factory('ratelimit.routes={"GET /api/v1/probe/items/{name}": "2/minute"}')
    client = serve(limited)
    headers = bearer(client)
    statuses = [
        client.get(f"/api/v1/probe/items/n{n}", headers=headers).status_code for n in range(3)
    ]
    assert statuses == [200, 200, 429], "one template counts every item"
    assert client.get(PROBE_READ, headers=headers).status_code == 200


# --- activity ---------------------------------------------------------------------------


def test_activity_records_principal_route_and_status(serve: Serve) -> None:
    client = serve()
    runtime = runtime_of(client)
    admin = bearer(client)
    reader = bearer(client, ["probe:read"])
    client.get(WHOAMI, headers={**admin, "X-Request-ID": "act-ok"})
    client.post(PROBE_WRITE, headers={**reader, "X-Request-ID": "act-denied"})
    client.get(PROBE_READ, headers={"X-Request-ID": "act-anonymous"})
    client.get("/api/v1/probe/items/thing", headers={**reader, "X-Request-ID": "act-item"})
    client.get("/api/v1/nowhere/at/all", headers={"X-Request-ID": "act-404"})
    client.get(WHOAMI, headers={**signed(client, "GET", WHOAMI), "X-Request-ID": "act-hmac"})
    assert runtime.activity is not None
    assert client.portal is not None
    client.portal.call(runtime.activity.flush)

    rows = client.get("/api/v1/auth/activity", headers=admin).json()
    by_id = {row["request_id"]: row for row in rows}
    expected = {
        "act-ok": ("client:tester", "GET", WHOAMI, 200),
        "act-denied": ("client:tester", "POST", PROBE_WRITE, 403),
        "act-anonymous": (None, "GET", PROBE_READ, 401),
        "act-item": ("client:tester", "GET", "/api/v1/probe/items/{name}", 200),
        "act-404": (None, "GET", "<unmatched>", 404),
        "act-hmac": ("client:tester", "GET", WHOAMI, 200),
    }
    for request_id, (principal, method, route, status) in expected.items():
        row = by_id[request_id]
        assert (row["principal"], row["method"], row["route"], row["status"]) == (
            principal,
            method,
            route,
            status,
        ), row
        assert row["client"] == "127.0.0.1"
        assert row["duration_ms"] >= 0

    denied = client.get("/api/v1/auth/activity", params={"status": 403}, headers=admin).json()
    assert [row["request_id"] for row in denied] == ["act-denied"]
    anonymous = client.get("/api/v1/auth/activity", params={"status": 401}, headers=admin).json()
    assert {row["principal"] for row in anonymous} == {None}
    mine = client.get(
        "/api/v1/auth/activity", params={"principal": "client:tester", "limit": 2}, headers=admin
    ).json()
    assert len(mine) == 2 and {row["principal"] for row in mine} == {"client:tester"}
    assert mine[0]["request_id"] == "act-hmac", "newest first"
    future = client.get(
        "/api/v1/auth/activity", params={"since": time.time() + 3600}, headers=admin
    ).json()
    assert future == []

    stats = client.get("/api/v1/auth/activity/stats", headers=admin).json()
    by_principal = {row["principal"]: row for row in stats}
    assert by_principal["client:tester"]["requests"] == 4
    assert by_principal["client:tester"]["denied"] == 1
    assert by_principal[None]["denied"] == 1
    assert by_principal[None]["requests"] == 2


POSTGRES_URL = os.environ.get("HOSTCORE_TEST_POSTGRES_URL")


async def empty_postgres(url: str) -> None:
    db = Database(url)
    async with db.engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await db.dispose()


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        "postgresql",
    ],
)
def test_one_odd_request_does_not_stop_the_activity_record(
    serve: Serve, settings_factory: Callable[..., Settings], backend: str
) -> None:
    overrides = []
    if backend == "postgresql":
        if POSTGRES_URL is None:
            pytest.skip("set HOSTCORE_TEST_POSTGRES_URL to a PostgreSQL database")
        asyncio.run(empty_postgres(POSTGRES_URL))
        overrides.append(f"database.url={POSTGRES_URL}")
    client = serve(settings_factory(*overrides))
    runtime = runtime_of(client)
    assert runtime.activity is not None and client.portal is not None
    admin = bearer(client)
    try:
        odd = client.request("UNSUBSCRIBE", WHOAMI, headers={"X-Request-ID": "odd-method"})
        assert odd.status_code == 405
        client.get(WHOAMI, headers={**admin, "X-Request-ID": "after-odd-method"})
        client.portal.call(runtime.activity.flush)
        rows = client.get("/api/v1/auth/activity", headers=admin).json()
        assert "after-odd-method" in {row["request_id"] for row in rows}
    finally:
        # Close the recorder here, so rows it cannot write fail this test, not the shutdown.
        with contextlib.suppress(Exception):
            client.portal.call(runtime.activity.close)
        runtime.activity = None


def test_activity_needs_auth_admin(serve: Serve) -> None:
    client = serve()
    reader = bearer(client, ["*:read"])
    for path in ("/api/v1/auth/activity", "/api/v1/auth/activity/stats"):
        assert_error(client.get(path, headers=reader), 403, "Forbidden", "auth:admin")
        assert_error(client.get(path), 401, "Unauthorized", "no credentials")


# --- every plugin route declares who may call it ----------------------------------------


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


def test_websocket_route_with_a_scope_admits_a_token_holder(serve: Serve) -> None:
    client = serve()
    with client.websocket_connect("/api/v1/probe/ws", headers=bearer(client)) as socket:
        assert socket.receive_json() == {"hello": "probe"}
    headers = signed(client, "GET", "/api/v1/probe/ws")
    with client.websocket_connect("/api/v1/probe/ws", headers=headers) as socket:
        assert socket.receive_json() == {"hello": "probe"}


@pytest.mark.parametrize("credential", ["none", "junk token", "missing scope"])
def test_websocket_refusal_is_a_clean_close(serve: Serve, credential: str) -> None:
    client = serve()
    headers = {
        "none": {},
        "junk token": {"Authorization": "Bearer junk"},
        "missing scope": bearer(client, ["other:read"]),
    }[credential]
    with (
        pytest.raises((WebSocketDisconnect, WebSocketDenialResponse)) as refused,
        client.websocket_connect("/api/v1/probe/ws", headers=headers) as socket,
    ):
        socket.receive_json()
    if isinstance(refused.value, WebSocketDenialResponse):
        assert refused.value.status_code in (401, 403)
    else:
        assert refused.value.code in (1008, 4401, 4403)

"""Bearer tokens: what the verifier accepts and refuses (forged, tampered, expired, for
someone else, beyond the configured lifetime), revocation inside the expiry leeway, and
scopes narrowed by the configuration for tokens already issued.

Crafted tokens are signed with the server's real private key, so each is refused for
the one reason its case names.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient

from hostcore.config import Settings
from hostcore.security import tokens
from tests.helpers import (
    PROBE_READ,
    PROBE_WRITE,
    WHOAMI,
    Serve,
    add_user,
    assert_error,
    authorization,
    b64url,
    b64url_decode,
    b64url_json,
    bearer,
    runtime_of,
)

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


# --- what the verifier refuses --------------------------------------------------------


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


# --- revocation inside the expiry leeway ----------------------------------------------


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


# --- scopes narrowed by the configuration ---------------------------------------------


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


# --- revocation in the store ------------------------------------------------------------


async def test_a_revocation_by_jti_follows_the_tokens_got_with_it(any_store: Any) -> None:
    """On each backend: the token, what was got with it and with those, and nothing else;
    one already past expiry and leeway is not counted."""
    from hostcore.security.models import IssuedToken

    now = time.time()
    lineage = {"root": None, "child": "root", "grandchild": "child", "second": "root"}
    others = {"unrelated": None, "stale": "root"}
    async with any_store.session() as session, session.begin():
        for jti, parent in {**lineage, **others}.items():
            expires = now - 3600 if jti == "stale" else now + 3600
            session.add(
                IssuedToken(
                    jti=jti,
                    subject="client:tester",
                    kind="client",
                    scopes="*",
                    kid="k",
                    issued_at=now - 60,
                    expires_at=expires,
                    parent_jti=parent,
                )
            )
    async with any_store.session() as session, session.begin():
        assert await tokens.revoke(session, leeway_s=30, jti="root") == 4
    async with any_store.session() as session:
        revoked = {jti for jti, _ in await tokens.revoked_since(session, 0.0)}
    assert revoked == set(lineage)

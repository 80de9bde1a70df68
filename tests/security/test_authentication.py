"""The Authenticator: credentials to a principal (the bearer header, HMAC-signed requests:
stale, replayed, tampered, for another path or client, from a remote peer), and what a
guess costs."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import hostcore.builtin.auth
from hostcore.config import Settings
from hostcore.security.authentication import credential_headers
from tests.helpers import (
    PROBE_READ,
    PROBE_WRITE,
    REMOTE,
    WHOAMI,
    Serve,
    assert_error,
    b64url,
    b64url_json,
    bearer,
    runtime_of,
    signed,
)


def with_unknown_kid(client: TestClient, n: int) -> str:
    """A well-signed token naming a kid this server never made (a forger's, or a new key)."""
    key = runtime_of(client).signing_key
    assert key is not None
    header = {"alg": "EdDSA", "typ": "JWT", "kid": f"made-up-{n}"}
    signing_input = f"{b64url_json(header)}.{b64url_json({'sub': 'client:tester'})}"
    return f"{signing_input}.{b64url(key.signing.sign(signing_input.encode()))}"


# --- what a guess costs ------------------------------------------------------------------


@pytest.fixture
def client(
    app_factory: Callable[..., FastAPI], client_for: Callable[..., TestClient]
) -> TestClient:
    return client_for(app_factory({"auth": hostcore.builtin.auth}))


def test_unknown_kids_refresh_the_keys_at_most_once_a_second(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_of(client)
    refreshes: list[int] = []
    real_refresh = runtime.authenticator._refresh_keys

    async def counting_refresh() -> None:
        refreshes.append(1)
        await real_refresh()

    monkeypatch.setattr(runtime.authenticator, "_refresh_keys", counting_refresh)
    monkeypatch.setattr("hostcore.security.authentication.KEY_REFRESH_EVERY_S", 3600.0)
    for n in range(20):
        refused = client.get(
            WHOAMI, headers={"Authorization": f"Bearer {with_unknown_kid(client, n)}"}
        )
        assert refused.status_code == 401
        assert refused.json()["detail"] == "token names an unknown signing key"
    assert len(refreshes) == 1, "one store read for twenty made-up kids"


def test_a_key_made_by_another_worker_is_found_by_one_refresh(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_of(client)
    assert client.portal is not None
    rotated = client.portal.call(runtime.rotate_key)
    # Another worker rotated: this one still has the old view of the keys.
    runtime.verifier.keys.pop(rotated.kid)
    assert client.get(WHOAMI, headers=bearer(client)).status_code == 200


def test_an_address_over_its_limit_gets_no_signature_check(
    settings_factory: Callable[..., Settings],
    app_factory: Callable[..., FastAPI],
    client_for: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limited = settings_factory('ratelimit.routes={"GET /api/v1/auth/whoami": "2/minute"}')
    client = client_for(app_factory({"auth": hostcore.builtin.auth}, app_settings=limited))
    junk = {"Authorization": "Bearer " + "x" * 40}
    assert [client.get(WHOAMI, headers=junk).status_code for _ in range(2)] == [401, 401]
    checks: list[str] = []
    verifier = runtime_of(client).verifier
    real = verifier._verify_fully

    def counted(token: str, now: float) -> object:
        checks.append(token)
        return real(token, now)

    monkeypatch.setattr(verifier, "_verify_fully", counted)
    assert client.get(WHOAMI, headers=junk).status_code == 429
    assert checks == [], "refused before the token was parsed or its signature checked"


def test_empty_credential_headers_are_no_credentials() -> None:
    scope = {"headers": [(b"authorization", b""), (b"x-hostcore-signature", b"abc")]}
    assert credential_headers(scope) == {"x-hostcore-signature": "abc"}


# --- bearer tokens: the header --------------------------------------------------------


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


# --- HMAC-signed requests -------------------------------------------------------------


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


# Beyond the 300 s window by more than a timestamp's whole-second resolution: a signed
# timestamp is int(now), so "301 s ahead" can arrive 300.1 s ahead and pass.
@pytest.mark.parametrize("skew", [-302, 302, -10_000])
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


# --- signed requests only from this host, tokens from anywhere ------------------------


def test_signed_request_from_a_remote_peer_is_refused(serve: Serve) -> None:
    client = serve(address=REMOTE)
    response = client.get(WHOAMI, headers=signed(client, "GET", WHOAMI))
    assert_error(response, 401, "Unauthorized", "accepted only from this host")


def test_bearer_tokens_work_from_remote_peers(serve: Serve) -> None:
    client = serve(address=REMOTE)
    assert client.get(WHOAMI, headers=bearer(client)).status_code == 200

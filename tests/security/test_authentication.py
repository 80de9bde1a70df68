"""The Authenticator on its own: credentials to a principal, and what it costs a guesser."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import hostcore.builtin.auth
from hostcore.config import Settings
from hostcore.security.authentication import credential_headers
from tests.helpers import b64url, b64url_json, bearer, runtime_of

WHOAMI = "/api/v1/auth/whoami"


def with_unknown_kid(client: TestClient, n: int) -> str:
    """A well-signed token naming a kid this server never made (a forger's, or a new key)."""
    key = runtime_of(client).signing_key
    assert key is not None
    header = {"alg": "EdDSA", "typ": "JWT", "kid": f"made-up-{n}"}
    signing_input = f"{b64url_json(header)}.{b64url_json({'sub': 'client:tester'})}"
    return f"{signing_input}.{b64url(key.signing.sign(signing_input.encode()))}"


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

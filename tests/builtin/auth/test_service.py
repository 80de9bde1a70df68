"""The auth plugin's service without HTTP: who may get which token.

A narrow credential never mints a wider token, nor one that outlives it; a token for
another client needs auth:admin and stays within that client's grant; a user gets the
scopes of its role. ``caller`` is the principal admission would hand the route.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hostcore.builtin.auth import service
from hostcore.builtin.auth.schemas import TokenCreate
from hostcore.config import Settings
from hostcore.context import Principal, PrincipalKind
from hostcore.errors import BadRequest, Forbidden, NotFound, Unauthorized
from hostcore.security.tokens import IssuedTokenInfo
from tests.helpers import Serve, add_user, runtime_of

PASSWORD = "correct-horse-battery-staple"


def principal(
    scopes: set[str],
    *,
    name: str = "tester",
    kind: PrincipalKind = "client",
    expires_at: float | None = None,
) -> Principal:
    return Principal(kind=kind, name=name, scopes=frozenset(scopes), expires_at=expires_at)


@pytest.fixture
def client(serve: Serve, settings_factory: Callable[..., Settings]) -> TestClient:
    return serve(settings_factory('auth.clients.panel.scopes=["probe:read"]'))


def issue(app: TestClient, caller: Principal | None, /, **body: Any) -> IssuedTokenInfo:
    """``service.issue_token`` on the app's loop, as the token route calls it."""
    assert app.portal is not None
    request = TokenCreate.model_validate(body)
    return app.portal.call(service.issue_token, runtime_of(app), caller, request)


# --- a client's token for itself ---------------------------------------------------------


def test_a_narrow_credential_never_mints_a_wider_token(client: TestClient) -> None:
    narrow = principal({"probe:read"})
    for wider in (["*"], ["probe:write"], ["probe:*"], ["probe:read", "auth:admin"]):
        with pytest.raises(Forbidden, match="this credential may not have the scopes"):
            issue(client, narrow, scopes=wider)
    assert issue(client, narrow).scopes == ["probe:read"], "by default, what it holds"
    assert issue(client, principal({"probe:*"}), scopes=["probe:read"]).scopes == ["probe:read"]


def test_a_token_never_outlives_the_token_that_minted_it(client: TestClient) -> None:
    expires_at = time.time() + 120
    parent = principal({"*"}, expires_at=expires_at)
    for ttl_s in (None, 3600):
        successor = issue(client, parent, **({} if ttl_s is None else {"ttl_s": ttl_s}))
        assert successor.expires_at <= expires_at
    signed = principal({"*"})  # an HMAC-signed request expires with the request
    assert issue(client, signed, ttl_s=3600).expires_at > expires_at


def test_an_expired_credential_mints_nothing(client: TestClient) -> None:
    with pytest.raises(Forbidden, match="this credential has expired"):
        issue(client, principal({"*"}, expires_at=time.time() - 1))


def test_without_credentials_only_a_login_gets_a_token(client: TestClient) -> None:
    with pytest.raises(Unauthorized, match="no credentials"):
        issue(client, None)
    with pytest.raises(Unauthorized, match="no credentials"):
        issue(client, None, client="tester")


def test_a_lifetime_beyond_max_token_ttl_s_is_refused(client: TestClient) -> None:
    longest = runtime_of(client).auth.max_token_ttl_s
    with pytest.raises(BadRequest, match=f"ttl_s may be at most {longest}"):
        issue(client, principal({"*"}), ttl_s=longest + 1)


# --- a token for another client -----------------------------------------------------------


def test_a_token_for_another_client_needs_auth_admin(client: TestClient) -> None:
    with pytest.raises(Forbidden, match="needs the scope auth:admin"):
        issue(client, principal({"probe:read"}), client="panel")
    a_user_named_tester = principal({"*:read"}, kind="user")
    with pytest.raises(Forbidden, match="needs the scope auth:admin"):
        issue(client, a_user_named_tester)


def test_an_admin_mints_within_the_other_clients_grant_only(client: TestClient) -> None:
    admin = principal({"auth:admin"})
    assert issue(client, admin, client="panel").scopes == ["probe:read"]
    with pytest.raises(Forbidden, match="client panel may not have the scopes: probe:write"):
        issue(client, admin, client="panel", scopes=["probe:write"])
    with pytest.raises(NotFound, match="no client ghost"):
        issue(client, admin, client="ghost")


# --- a user's login -----------------------------------------------------------------------


def test_a_user_gets_the_scopes_of_its_role_and_no_more(client: TestClient) -> None:
    add_user(client, "alice", PASSWORD, "viewer")
    login = {"username": "alice", "password": PASSWORD}
    issued = issue(client, None, **login)
    assert (issued.subject, issued.scopes) == ("user:alice", ["*:read"])
    with pytest.raises(Forbidden, match="user alice may not have the scopes: probe:write"):
        issue(client, None, **login, scopes=["probe:write"])


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice"},
        {"password": PASSWORD},
        {"username": "alice", "password": PASSWORD, "client": "tester"},
    ],
)
def test_a_login_needs_username_and_password_and_no_client(
    client: TestClient, body: dict[str, str]
) -> None:
    with pytest.raises(BadRequest, match="a user login needs username and password"):
        issue(client, principal({"*"}), **body)


def test_an_unknown_role_is_named_with_the_configured_ones(client: TestClient) -> None:
    runtime = runtime_of(client)
    with pytest.raises(BadRequest, match="unknown role 'ghost'; configured roles: "):
        service.role_scopes(runtime, "ghost")
    assert service.role_scopes(runtime, "viewer") == ["*:read"]

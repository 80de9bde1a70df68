"""The declarations a route makes (RequireScope, Authenticated, Public): what they require
together, and that they never authenticate on their own."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from hostcore.context import Principal
from hostcore.errors import Forbidden
from hostcore.security.deps import (
    DECLARATION_ATTRIBUTE,
    PUBLIC,
    Authenticated,
    Public,
    Requirement,
    RequireScope,
    declared_permissions,
    is_declaration,
    requirement_of,
)
from tests.helpers import PROBE_READ, PROBE_WRITE, WHOAMI, assert_error, bearer

# --- scopes over HTTP -----------------------------------------------------------------


def test_missing_scope_is_403_naming_it(shared: TestClient) -> None:
    client = shared
    reader = bearer(client, ["probe:read"])
    assert client.get(PROBE_READ, headers=reader).status_code == 200
    response = client.post(PROBE_WRITE, headers=reader)
    assert_error(response, 403, "Forbidden", "this needs the scope probe:write")
    admin_only = client.get("/api/v1/auth/tokens", headers=reader)
    assert_error(admin_only, 403, "Forbidden", "this needs the scope auth:admin")


def test_authenticated_routes_need_no_particular_scope(shared: TestClient) -> None:
    client = shared
    response = client.get(WHOAMI, headers=bearer(client, ["x:y"]))
    assert response.json()["scopes"] == ["x:y"]


# --- what the declarations require ----------------------------------------------------


def test_a_declaration_never_authenticates_on_its_own() -> None:
    """Served by a plain FastAPI app (no hostcore admission), a declared route fails closed."""
    app = FastAPI()

    @app.get("/who")
    async def who(principal: Authenticated) -> dict[str, str]:
        return {"subject": principal.subject}

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/who", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 500


def test_forbidden_is_raised_for_the_first_missing_scope() -> None:
    requirement = requirement_of(["public", "a:read", "b:write"])
    principal = Principal(kind="client", name="x", scopes=frozenset({"a:read"}))
    with pytest.raises(Forbidden, match="b:write"):
        requirement.check(principal)


@pytest.mark.parametrize(
    ("declared", "public", "scopes"),
    [
        (["public"], True, ()),
        (["authenticated"], False, ()),
        (["public", "authenticated"], False, ()),
        (["public", "a:read"], False, ("a:read",)),
        (["a:read", "b:write", "a:read"], False, ("a:read", "b:write")),
        ([], True, ()),
    ],
)
def test_a_real_scope_or_authenticated_outranks_public_and_every_scope_counts_once(
    declared: list[str], public: bool, scopes: tuple[str, ...]
) -> None:
    assert requirement_of(declared) == Requirement(public=public, scopes=scopes)


def test_a_principal_holding_every_declared_scope_passes_the_check() -> None:
    requirement = requirement_of(["a:read", "b:write"])
    for held in ({"a:read", "b:write"}, {"*"}, {"a:*", "b:*"}):
        requirement.check(Principal(kind="client", name="x", scopes=frozenset(held)))


@pytest.mark.parametrize("permission", ["read", "", "system"])
def test_a_scope_must_look_like_area_and_action(permission: str) -> None:
    with pytest.raises(ValueError, match="must look like 'area:action'"):
        RequireScope(permission)


def test_one_declaration_per_scope_is_made_and_marked_as_one() -> None:
    first, second = RequireScope("a:read"), RequireScope("a:read")
    assert first.dependency is second.dependency
    assert getattr(first.dependency, DECLARATION_ATTRIBUTE) == "a:read"
    assert getattr(Public.dependency, DECLARATION_ATTRIBUTE) == PUBLIC


async def needs_write(principal: Annotated[Principal, RequireScope("b:write")]) -> None:
    """A dependency of a route that declares a scope of its own."""


async def nested_endpoint(caller: Authenticated, _: Annotated[None, Depends(needs_write)]) -> None:
    """A route with its own declaration and one nested in a dependency."""


def test_declarations_are_found_in_nested_dependencies_in_order() -> None:
    route = APIRoute("/x", nested_endpoint, dependencies=[RequireScope("a:read")])
    assert declared_permissions(route.dependant) == ["a:read", "authenticated", "b:write"]
    declarations = [d for d in route.dependant.dependencies if is_declaration(d)]
    assert len(declarations) == 2, "the nested one belongs to needs_write, not the route"

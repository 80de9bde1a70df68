"""The one dependency every route declares: ``RequireScope("system:read")``.

It gives the route the caller's ``Principal``, after authenticating the
caller, applying the rate limit (per principal; per client address for
callers that fail to authenticate) and checking the scope. For plugin routes
the security gate (gate.py) has done that work before routing, and this
dependency only reads its result and re-checks the scope; for anything the
gate did not admit (a websocket), it does the whole check itself. ``Public``
is the declaration for a plugin route that anyone may call (it is still
rate-limited by address).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from hostcore.errors import Forbidden
from hostcore.security.acl import allows
from hostcore.security.runtime import (
    GATED_KEY,
    PRINCIPAL_KEY,
    SecurityRuntime,
    body_of,
    route_key,
)
from hostcore.security.tokens import Principal

SCOPE_ATTRIBUTE = "hostcore_scope"
PUBLIC = "public"
AUTHENTICATED = "authenticated"


def runtime_of(request: HTTPConnection) -> SecurityRuntime:
    runtime: SecurityRuntime = request.app.state.security
    return runtime


async def _authenticate(request: HTTPConnection) -> Principal:
    admitted: Principal | None = request.scope.get(PRINCIPAL_KEY)
    if admitted is not None:
        return admitted  # authenticated and rate-limited by the gate
    return await runtime_of(request).admit(
        request.scope, route_key(request.scope), request.headers.get, body_of(request)
    )


def authorize(principal: Principal, scope: str) -> None:
    """403 unless ``principal`` holds ``scope`` (``Authenticated`` needs none)."""
    if scope != AUTHENTICATED and not allows(principal.scopes, scope):
        raise Forbidden(f"this needs the scope {scope}")


@cache
def _checker(scope: str) -> Callable[[HTTPConnection], Awaitable[Principal]]:
    async def require(request: HTTPConnection) -> Principal:
        principal = await _authenticate(request)
        authorize(principal, scope)
        return principal

    setattr(require, SCOPE_ATTRIBUTE, scope)
    return require


def RequireScope(scope: str) -> Any:  # noqa: N802 - reads as a declaration on the route
    """``Depends`` that admits callers holding ``scope`` and gives their Principal."""
    if scope != AUTHENTICATED and ":" not in scope:
        raise ValueError(f"scope {scope!r} must look like 'area:action'")
    return Depends(_checker(scope))


async def _public(request: HTTPConnection) -> None:
    if GATED_KEY not in request.scope:  # else rate-limited by the gate
        runtime_of(request).hit_address(route_key(request.scope), request.scope)


setattr(_public, SCOPE_ATTRIBUTE, PUBLIC)

Public: Any = Depends(_public)
"""Declares a plugin route open to anyone (rate-limited per client address)."""

Authenticated = Annotated[Principal, RequireScope(AUTHENTICATED)]
"""Any authenticated caller, whatever their scopes."""


def declared_scopes(dependant: Any) -> list[str]:
    """Every declaration (RequireScope/Authenticated/Public) in a route's dependencies, in order."""
    found: list[str] = []
    for dependency in dependant.dependencies:
        scope = getattr(dependency.call, SCOPE_ATTRIBUTE, None)
        if scope is not None:
            found.append(str(scope))
        found.extend(declared_scopes(dependency))
    return found


def declared_scope(dependant: Any) -> str | None:
    """The declaration that governs a route: its first real scope, else ``Authenticated``,
    else ``Public``. All of them are checked; this is the one the security gate checks."""
    scopes = declared_scopes(dependant)
    for candidate in scopes:
        if candidate not in (PUBLIC, AUTHENTICATED):
            return candidate
    if AUTHENTICATED in scopes:
        return AUTHENTICATED
    return PUBLIC if scopes else None


async def _runtime(request: HTTPConnection) -> SecurityRuntime:
    # async: a plain def dependency would be run in the threadpool on every request.
    return runtime_of(request)


SecurityDep = Annotated[SecurityRuntime, Depends(_runtime)]
"""This worker's security runtime (tokens, keys, rate limits)."""

"""The declaration every route makes: who may call it.

``RequireScope("system:read")`` (the caller must hold the scope),
``Authenticated`` (any authenticated caller) or ``Public`` (anyone; still
rate-limited by address). A route declares in ``dependencies=[...]`` (its
own or its router's), or takes the caller as a parameter::

    @router.get("/whoami")
    async def whoami(principal: Authenticated) -> WhoAmIRead: ...

    @router.get("/state", dependencies=[RequireScope("probe:read")])
    async def state() -> StateRead: ...

The declaration is read once, when hostcore adds the route
(:mod:`hostcore.security.admission`), and enforced before FastAPI reads the
body or runs any dependency; the dependency itself only hands the admitted
principal to a route that asks for it. A route hostcore did not admit gets a
500 from it rather than an unchecked caller: the declaration never
authenticates on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from hostcore.context import Principal, context_of
from hostcore.errors import Forbidden, HostcoreError
from hostcore.security.acl import allows
from hostcore.security.runtime import SecurityRuntime

DECLARATION_ATTRIBUTE = "hostcore_permission"
PUBLIC = "public"
AUTHENTICATED = "authenticated"


class NotAdmitted(HostcoreError):
    """A declaration was reached on a request admission did not handle: a wiring bug."""

    status_code = 500


@dataclass(frozen=True, slots=True)
class Requirement:
    """Everything a route's declarations ask of the caller.

    ``public``: anyone may call; credentials, when sent, are still verified.
    ``scopes``: every real scope declared (all must be held); empty with
    ``public`` False means any authenticated caller.
    """

    public: bool
    scopes: tuple[str, ...]

    def check(self, principal: Principal) -> None:
        """403 naming the first declared scope ``principal`` lacks."""
        for permission in self.scopes:
            if not allows(principal.scopes, permission):
                raise Forbidden(f"this needs the scope {permission}")


def declared_permissions(dependant: Any) -> list[str]:
    """Every declaration in a route's dependencies (nested ones included), in order."""
    found: list[str] = []
    for dependency in dependant.dependencies:
        permission = getattr(dependency.call, DECLARATION_ATTRIBUTE, None)
        if permission is not None:
            found.append(str(permission))
        found.extend(declared_permissions(dependency))
    return found


def requirement_of(permissions: list[str]) -> Requirement:
    """What the declarations together require: a real scope or ``Authenticated`` outranks
    a router-wide ``Public``, and every real scope must be held."""
    scopes = tuple(dict.fromkeys(p for p in permissions if p not in (PUBLIC, AUTHENTICATED)))
    public = not scopes and AUTHENTICATED not in permissions
    return Requirement(public=public, scopes=scopes)


def is_declaration(dependant: Any) -> bool:
    """Whether a (sub-)dependant is one of the declarations above."""
    return hasattr(dependant.call, DECLARATION_ATTRIBUTE)


def _admitted(request: HTTPConnection) -> Principal | None:
    context = context_of(request.scope)
    if context is None or context.route is None:
        raise NotAdmitted("this route was not admitted by hostcore")
    return context.principal


@cache
def _declaration(permission: str) -> Callable[[HTTPConnection], Awaitable[Principal | None]]:
    requirement = requirement_of([permission])

    async def admitted(request: HTTPConnection) -> Principal | None:
        principal = _admitted(request)
        if principal is not None:
            requirement.check(principal)
        elif not requirement.public:
            raise NotAdmitted("this route was admitted without a caller")
        return principal

    setattr(admitted, DECLARATION_ATTRIBUTE, permission)
    return admitted


def RequireScope(permission: str) -> Any:  # noqa: N802 - reads as a declaration on the route
    """Declares that callers must hold ``permission``; as a parameter, gives their Principal."""
    if permission != AUTHENTICATED and ":" not in permission:
        raise ValueError(f"scope {permission!r} must look like 'area:action'")
    return Depends(_declaration(permission))


Public: Any = Depends(_declaration(PUBLIC))
"""Declares a route open to anyone (rate-limited per client address)."""

Authenticated = Annotated[Principal, RequireScope(AUTHENTICATED)]
"""Any authenticated caller, whatever their scopes; as a parameter, their Principal."""

OptionalPrincipal = Annotated[Principal | None, Public]
"""Public, and the caller's Principal when they sent valid credentials (None otherwise)."""


async def _security_runtime(request: HTTPConnection) -> SecurityRuntime:
    # async: a plain def dependency would be run in the threadpool on every request.
    runtime: SecurityRuntime = request.app.state.security
    return runtime


SecurityDep = Annotated[SecurityRuntime, Depends(_security_runtime)]
"""This worker's security runtime (tokens, keys, rate limits), for a route that needs it."""

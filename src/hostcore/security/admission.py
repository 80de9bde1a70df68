"""Admission: the one place a caller is authenticated, rate-limited and authorized.

Every route hostcore serves (its own and every plugin's) is built with
:class:`AdmittedRoute` (or :class:`AdmittedWebSocketRoute`), so admission
runs once per request, for the route Starlette's single match chose, in
the route's own handler: before FastAPI reads the body and before any
dependency or endpoint runs. What a route requires is read from its
declarations (:mod:`hostcore.security.deps`) once, when the route is built;
per request, admission is:

1. no credential: count the request against the caller's address, then
   refuse it (401) unless the route is ``Public``;
2. a credential: verify it. A token already verified in this worker is a
   dictionary lookup; before anything expensive (a signature check, a key
   refresh, an HMAC nonce written to the store) an address that has used up
   its limit is refused (429) without the work. A refused credential counts
   against the address and gets 401, so guessing costs the guesser; a good
   one does not, so a caller who shares an address with a guesser keeps
   working with a token it already uses;
3. count the request against the principal (429 past the limit);
4. check every scope the route declared (403 naming the first one missing).

The principal, the rate-limit result and the route template are left on the
request's :class:`~hostcore.context.RequestContext`, where the activity
record, the response headers and the declarations read them.

Why in the route and not in a middleware: only the route Starlette chose
knows what it requires, and a middleware that looked it up would keep a
second route table beside Starlette's, which drifts from it. Why not as a
FastAPI dependency: FastAPI reads the body before it solves dependencies,
so a refused request would have been read in full, and each dependency
costs a solve on every request. The declarations therefore do not run as
dependencies at all (they are left out of the dependant FastAPI's handler
solves); one that is a parameter (``principal: Authenticated``) only hands
over the principal admission found.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from hostcore.context import UNMATCHED, context_of, current_context
from hostcore.errors import (
    WS_POLICY_VIOLATION,
    WS_TRY_AGAIN_LATER,
    HostcoreError,
    Unauthorized,
)
from hostcore.security.authentication import credential_headers
from hostcore.security.deps import (
    NotAdmitted,
    Requirement,
    declared_permissions,
    is_declaration,
    requirement_of,
)

if TYPE_CHECKING:
    from hostcore.security.runtime import SecurityRuntime

NO_CREDENTIALS = "no credentials: send a bearer token or an HMAC-signed request"


def runtime_of(scope: Scope) -> SecurityRuntime:
    runtime: SecurityRuntime = scope["app"].state.security
    return runtime


def admit_at_once(
    scope: Scope, runtime: SecurityRuntime, requirement: Requirement, key: str, template: str
) -> bool:
    """Admit the caller of ``scope`` to the route at ``template`` or raise, when that
    needs no waiting: no credential, or a bearer token this worker has verified before
    (the ordinary case). False: the credential needs :func:`admit`.

    ``key`` names what the rate limit counts ("GET /api/v1/auth/whoami").
    """
    context = context_of(scope)
    if context is None:
        raise HostcoreError("request reached a route without hostcore's request context")
    context.route = template
    credentials = credential_headers(scope)
    if not credentials:
        runtime.count_address(key, context)
        if requirement.public:
            return True
        raise Unauthorized(NO_CREDENTIALS)
    authorization = credentials.get("authorization")
    if authorization is None:
        return False
    try:
        principal = runtime.authenticator.verify_at_once(authorization)
    except Unauthorized:
        runtime.count_address(key, context)
        raise
    if principal is None:
        return False
    context.principal = principal
    runtime.count(principal.subject, key, context)
    requirement.check(principal)
    return True


async def admit(
    connection: HTTPConnection,
    runtime: SecurityRuntime,
    requirement: Requirement,
    key: str,
    template: str,
) -> None:
    """Admit the caller of ``connection`` to the route at ``template`` or raise: the whole
    sequence, which may wait (a first check of a token, an HMAC nonce in the store)."""
    if not admit_at_once(connection.scope, runtime, requirement, key, template):
        await admit_waiting(connection, runtime, requirement, key)


async def admit_waiting(
    connection: HTTPConnection, runtime: SecurityRuntime, requirement: Requirement, key: str
) -> None:
    """The rest of admission, after :func:`admit_at_once` said False."""
    scope = connection.scope
    context = context_of(scope)
    assert context is not None  # admit_at_once has checked
    credentials = credential_headers(scope)

    def check_address() -> None:
        runtime.check_address(key, context)

    body = connection.body if isinstance(connection, Request) else _no_body
    try:
        principal = await runtime.authenticator.verify(
            scope, credentials.get, body, local=context.local, before_expensive=check_address
        )
    except Unauthorized:
        runtime.count_address(key, context)
        raise
    context.principal = principal
    runtime.count(principal.subject, key, context)
    requirement.check(principal)


async def _no_body() -> bytes:
    return b""  # a websocket handshake has no body; it signs the empty one


def _handler_dependant(dependant: Any) -> Any:
    """What FastAPI's handler solves per request: the route's dependant without the
    declarations admission has enforced.

    A declaration in ``dependencies=[...]`` gives nothing to anyone and is dropped. One
    bound to a parameter of the endpoint (``principal: Authenticated``) is dropped too,
    and the endpoint is wrapped to receive the admitted principal under that name, when
    it is a plain function or coroutine function; for anything else (a generator
    endpoint) the declaration stays and FastAPI solves it, to the same effect.
    """
    call = dependant.call
    injectable = inspect.iscoroutinefunction(call) or (
        inspect.isfunction(call)
        and not inspect.isgeneratorfunction(call)
        and not inspect.isasyncgenfunction(call)
    )
    names = [sub.name for sub in dependant.dependencies if is_declaration(sub) and sub.name]
    if names and not injectable:
        kept = [sub for sub in dependant.dependencies if not is_declaration(sub) or sub.name]
        return dataclasses.replace(dependant, dependencies=kept)
    kept = [sub for sub in dependant.dependencies if not is_declaration(sub)]
    if names:
        call = _with_principal(call, names)
    return dataclasses.replace(dependant, dependencies=kept, call=call)


def _with_principal(endpoint: Callable[..., Any], names: list[str]) -> Callable[..., Any]:
    """``endpoint``, given the admitted principal as each of ``names``."""

    def give_principal(values: dict[str, Any]) -> None:
        context = current_context.get()
        if context is None or context.route is None:
            raise NotAdmitted("this route was not admitted by hostcore")
        for name in names:
            values[name] = context.principal

    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def injected(**values: Any) -> Any:
            give_principal(values)
            return await endpoint(**values)

        return injected

    @functools.wraps(endpoint)
    def injected_sync(**values: Any) -> Any:
        give_principal(values)
        return endpoint(**values)

    return injected_sync


class AdmittedRoute(APIRoute):
    """An ``APIRoute`` whose handler admits the caller before FastAPI's handler runs."""

    requirement: Requirement
    _fixed: bool
    _literal: str
    # Every method some route serves at this path (set once all routes are added): a
    # 405 names them all, not only this route's own.
    allowed: frozenset[str] = frozenset()

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        self._fixed = "{" not in self.path
        self._literal = self.path.split("{", 1)[0]
        self.requirement = requirement = requirement_of(declared_permissions(self.dependant))
        template = self.path
        keys = {method: f"{method} {template}" for method in self.methods or ()}
        if "GET" in keys:
            keys.setdefault("HEAD", keys["GET"])  # a HEAD is the GET without its body
        declared = self.dependant
        # FastAPI builds its handler from self.dependant; it solves this one per request,
        # while the route keeps the declared one (OpenAPI reads it).
        self.dependant = _handler_dependant(declared)
        try:
            handler = super().get_route_handler()
        finally:
            self.dependant = declared

        runtime: SecurityRuntime | None = None  # the app's, found at the first request

        async def admitted(request: Request) -> Response:
            nonlocal runtime
            if runtime is None:
                runtime = runtime_of(request.scope)
            key = keys[request.method]
            if not admit_at_once(request.scope, runtime, requirement, key, template):
                await admit_waiting(request, runtime, requirement, key)
            return await handler(request)

        return admitted

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Starlette tries the routes in order, each with its regular expression; most
        # are not the one, and a comparison of the path's fixed part says so for a
        # fraction of the cost. What does compare goes to Starlette's match.
        path = scope["path"] if not scope.get("root_path") else get_route_path(scope)
        literal = self._literal
        if path != literal if self._fixed else not path.startswith(literal):
            return Match.NONE, {}
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette's Route.handle, without the layers an included route needs (every
        # route of hostcore's is flat): the method is allowed, or it is a 405. A GET
        # route answers HEAD too (RFC 9110 §9.3.2; the server sends no body), unless
        # another route at the path serves HEAD itself: Starlette prefers its full match.
        methods: set[str] | frozenset[str] = self.methods or frozenset()
        method = scope["method"]
        if method in methods or (method == "HEAD" and "GET" in methods):
            await self.app(scope, receive, send)
            return
        # A 405 is an unmatched request as far as the limit is concerned.
        context = context_of(scope)
        if context is not None:
            runtime_of(scope).count_address(f"{scope['method']} {self.path}", context)
        allow = ", ".join(sorted(self.allowed or methods))
        raise HTTPException(status_code=405, headers={"Allow": allow})


class AdmittedWebSocketRoute(APIWebSocketRoute):
    """A websocket route: the handshake is admitted like a request, or closed."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.requirement = requirement_of(declared_permissions(self.dependant))
        session = self.app
        requirement = self.requirement
        key = f"WS {self.path}"
        template = self.path

        async def admitted(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                connection = HTTPConnection(scope, receive)
                await admit(connection, runtime_of(scope), requirement, key, template)
            except HostcoreError as exc:
                code = WS_TRY_AGAIN_LATER if exc.status_code in (429, 503) else WS_POLICY_VIOLATION
                await send({"type": "websocket.close", "code": code, "reason": exc.detail[:120]})
                return
            await session(scope, receive, send)

        self.app = admitted


class CountedByAddress:
    """An app mounted under ``prefix`` (static files): its requests count against the
    caller's address, like those of a ``Public`` route."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = context_of(scope)
        if context is not None:
            context.route = self.prefix
            runtime_of(scope).count_address(f"{_method(scope)} {self.prefix}", context)
        await self.app(scope, receive, send)


def _method(scope: Scope) -> str:
    method: str = scope.get("method", "WS")  # a websocket handshake has none
    return method


def counting_unmatched(not_found: ASGIApp) -> ASGIApp:
    """The router's answer to a request no route matches, counted against the caller's
    address first: nobody sends unlimited requests, of any path, for free."""

    async def unmatched(scope: Scope, receive: Receive, send: Send) -> None:
        context = context_of(scope)
        if context is not None:
            runtime_of(scope).count_address(f"{_method(scope)} {UNMATCHED}", context)
        await not_found(scope, receive, send)

    return unmatched

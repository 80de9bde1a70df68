"""The security gate: authenticate, authorize and rate-limit before any route runs.

DESIGN.md §1 puts these steps in front of the plugin route, and they run on
every request, so they are pure ASGI here rather than FastAPI dependency work.
At startup ``RouteTable`` learns every plugin route: its full path template,
methods and the scope it declared with ``RequireScope``/``Public``/
``Authenticated``. Per request the gate finds the route (a dict lookup for
fixed paths), admits or refuses the caller, leaves the ``Principal`` on the
ASGI scope, and hands over to FastAPI, whose ``RequireScope`` dependency then
only reads it. A request the table does not know (404s, docs, static files,
websockets) goes on untouched, and a route the gate did not admit still gets
the whole check from its dependency: the table is a fast path, never the only
guard.

A route whose endpoint is marked with :func:`hostcore.fastlane.snapshot` is
answered here, after the gate, from bytes its plugin keeps ready: no routing,
no dependency resolution (the stats sample every consumer polls).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostcore.errors import HostcoreError, PluginError, error_response
from hostcore.fastlane import SNAPSHOT_ATTRIBUTE, Snapshot
from hostcore.security.deps import PUBLIC, SCOPE_ATTRIBUTE, authorize, declared_scope
from hostcore.security.hmac import CLIENT_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from hostcore.security.runtime import GATED_KEY, SecurityRuntime

_CREDENTIAL_HEADERS = frozenset(
    name.lower().encode()
    for name in ("authorization", CLIENT_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
)


@dataclass(frozen=True)
class GatedRoute:
    """One FastAPI route as the gate sees it."""

    template: str
    route: APIRoute
    scope: str
    methods: frozenset[str]
    regex: re.Pattern[str]
    snapshot: Snapshot | None
    # "GET /api/v1/system/stats": the rate-limit key, one per method.
    keys: dict[str, str] = field(default_factory=dict)


def _answerable_by_the_gate(dependant: Any) -> bool:
    """No parameters, and no dependency but the one scope declaration: the gate skips
    FastAPI's dependency resolution, so anything else would be skipped with it."""
    if (
        dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
    ):
        return False
    declarations = [sub for sub in dependant.dependencies if hasattr(sub.call, SCOPE_ATTRIBUTE)]
    return (
        len(dependant.dependencies) == 1
        and len(declarations) == 1
        and not any(sub.dependencies for sub in declarations)
    )


def gated_route(template: str, route: APIRoute) -> GatedRoute | None:
    """The gate's view of ``route`` at ``template``; None when it declares no scope."""
    scope = declared_scope(route.dependant)
    if scope is None:
        return None
    methods = frozenset(route.methods or ())
    snapshot: Snapshot | None = getattr(route.endpoint, SNAPSHOT_ATTRIBUTE, None)
    if snapshot is not None and (
        not methods <= {"GET", "HEAD"} or not _answerable_by_the_gate(route.dependant)
    ):
        raise PluginError(
            f"route {template} is a snapshot: it must be GET with exactly one declaration "
            "(RequireScope, Authenticated or Public) and no other dependency or parameter "
            "(the gate answers it without running FastAPI's dependencies)"
        )
    regex, _, _ = compile_path(template)
    return GatedRoute(
        template=template,
        route=route,
        scope=scope,
        methods=methods,
        regex=regex,
        snapshot=snapshot,
        keys={method: f"{method} {template}" for method in methods},
    )


class RouteTable:
    """Finds the gated route FastAPI will choose for a path, in the same order."""

    def __init__(self, routes: Iterable[GatedRoute] = ()) -> None:
        self._ordered: list[GatedRoute] = []
        self._fixed: dict[str, list[GatedRoute]] = {}
        self._patterned: list[GatedRoute] = []
        for route in routes:
            self.add(route)

    def add(self, route: GatedRoute) -> None:
        fixed = "{" not in route.template
        # A fixed path an earlier pattern already matches is FastAPI's to decide.
        shadowed = fixed and any(earlier.regex.match(route.template) for earlier in self._patterned)
        self._ordered.append(route)
        if fixed and not shadowed:
            self._fixed.setdefault(route.template, []).append(route)
        else:
            self._patterned.append(route)

    def __len__(self) -> int:
        return len(self._ordered)

    def __iter__(self) -> Iterator[GatedRoute]:
        return iter(self._ordered)

    def lookup(self, method: str, path: str) -> GatedRoute | None:
        candidates = self._fixed.get(path)
        if candidates is not None:
            for route in candidates:
                if method in route.methods:
                    return route
        for route in self._patterned:
            if method in route.methods and route.regex.match(path):
                return route
        return None


def _route_path(scope: Scope) -> str:
    """The path routing sees (Starlette's rule: the path below ``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


async def _read_body(receive: Receive) -> bytes:
    """The whole body. Its size is bounded by the request-context middleware's limit."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body the gate already read, then the real one."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class SecurityGate:
    """Pure ASGI middleware; sits inside the request-context middleware."""

    def __init__(self, app: ASGIApp, *, table: RouteTable, runtime: SecurityRuntime) -> None:
        self.app = app
        self.table = table
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        gated = self.table.lookup(method, _route_path(scope))
        if gated is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = gated.route  # for the activity record, also when refused here
        scope[GATED_KEY] = True
        try:
            receive = await self._admit(gated, method, scope, receive)
            if gated.snapshot is not None:
                body = gated.snapshot.provider(scope["app"])
        except HostcoreError as exc:
            await error_response(exc, method, scope["path"])(scope, receive, send)
            return
        if gated.snapshot is None:
            await self.app(scope, receive, send)
            return
        headers = [
            (b"content-type", gated.snapshot.media_type_header),
            (b"content-length", b"%d" % len(body)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _admit(
        self, gated: GatedRoute, method: str, scope: Scope, receive: Receive
    ) -> Receive:
        """Rate-limit, authenticate and authorize; the receive the app must use after."""
        key = gated.keys[method]
        if gated.scope == PUBLIC:
            self.runtime.hit_address(key, scope)
            return receive
        found: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in _CREDENTIAL_HEADERS:
                found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        body: bytes | None = None

        async def read_body() -> bytes:
            nonlocal body
            body = await _read_body(receive)
            return body

        try:
            principal = await self.runtime.admit(scope, key, _lookup(found), read_body)
        finally:
            if body is not None:
                receive = _replay(body, receive)
        authorize(principal, gated.scope)
        return receive


def _lookup(found: dict[str, str]) -> Callable[[str], str | None]:
    def header(name: str) -> str | None:
        return found.get(name.lower())

    return header

"""Try only the routes a request's path can match, chosen by its first segments.

Starlette tries an app's routes in order until one matches, so each route a
plugin adds costs every request to a route listed after it: a plugin of a
dozen routes made ``GET /system/stats`` measurably slower. Most routes start
with a fixed ``/api/v1/<plugin>/``, and a path whose first three segments
differ from a route's cannot match it. So the app's routes are grouped by
those segments; a route whose fixed part (before its first parameter) is
shorter, a mount above them, or one without a path, belongs to every group.
A request then runs Starlette's own loop (``Router.app``) over its group, in
the app's order: the first full match, a partial match (405), or the app's
404, exactly as over the whole list, because the routes left out are ones
whose fixed prefix already differs from the path.

The groups are rebuilt when the app's routes change (a route added after the
first request included).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Router
from starlette.types import Receive, Scope, Send

KEY_SEGMENTS = 3

Key = tuple[str, ...]


def path_key(path: str) -> Key | None:
    """The first ``KEY_SEGMENTS`` segments of a request's path; None for a shorter path."""
    parts = path.split("/", KEY_SEGMENTS + 1)
    if len(parts) <= KEY_SEGMENTS:
        return None
    return tuple(parts[1 : KEY_SEGMENTS + 1])


def route_key(route: BaseRoute) -> Key | None:
    """The segments every path the route matches starts with; None when they are not fixed."""
    path = getattr(route, "path", None)
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    fixed, brace, _ = path.partition("{")
    parts = fixed.split("/")[1:]
    if brace:
        parts = parts[:-1]  # the segment the parameter is in is not fixed
    if len(parts) < KEY_SEGMENTS or any(part == "" for part in parts[:KEY_SEGMENTS]):
        return None
    return tuple(parts[:KEY_SEGMENTS])


class RouteIndex:
    """The router's dispatch (its ``middleware_stack``), over the routes of one group."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._built_for: tuple[int, int] | None = None
        self._groups: dict[Key, Router] = {}
        self._rest = router

    def _group(self, routes: Sequence[BaseRoute]) -> Router:
        return Router(routes=routes, redirect_slashes=self.router.redirect_slashes,
                      default=self.router.default)  # fmt: skip

    def _build(self, routes: list[BaseRoute]) -> None:
        keys = [route_key(route) for route in routes]
        found = {key for key in keys if key is not None}
        self._groups = {
            key: self._group([r for r, k in zip(routes, keys, strict=True) if k in (key, None)])
            for key in found
        }
        self._rest = self._group([r for r, k in zip(routes, keys, strict=True) if k is None])
        self._built_for = (len(routes), id(routes[-1]) if routes else 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self.router
        if scope["type"] == "lifespan" or router.redirect_slashes:
            await router.app(scope, receive, send)  # a redirect may cross groups
            return
        routes = router.routes
        if self._built_for != (len(routes), id(routes[-1]) if routes else 0):
            self._build(routes)
        path = scope["path"] if not scope.get("root_path") else get_route_path(scope)
        key = path_key(path)
        group = self._groups.get(key, self._rest) if key is not None else self._rest
        if "router" not in scope:
            scope["router"] = router
        await group.app(scope, receive, send)

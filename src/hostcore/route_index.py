"""Try only the routes a request's path can match, chosen by its first segments.

The router tries an app's routes in order until one matches, so each route a
plugin adds costs every request to a route listed after it: a plugin of a
dozen routes made ``GET /system/stats`` measurably slower. Most routes start
with a fixed ``/api/v1/<plugin>/``, and a path whose first three segments
differ from a route's cannot match it. So the app's routes are grouped by
those segments; a route whose fixed part (before its first parameter) is
shorter, a mount above them, or one without a path (an included router),
belongs to every group.

A request then runs the router's own dispatch (``type(router).app``: FastAPI's,
with its form limits, scope bookkeeping and low-priority routes) over a view of
the router whose ``routes`` are its group, in the app's order, and whose every
other attribute (``default``, ``lifespan`` …) is the live router's. The answer
is the one the whole list would give: the routes left out are ones whose fixed
prefix already differs from the path.

The groups are rebuilt whenever the route list changes: it is replaced by a list
that counts its own changes (any mutation, in place or not), and a list assigned
in its place is noticed by identity. Installed only on a router without
router-level middleware (its dispatch is the router's ``app``), and bypassed for
``redirect_slashes``, whose redirect may cross groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, SupportsIndex

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Router
from starlette.types import Receive, Scope, Send

KEY_SEGMENTS = 3

Key = str  # "/api/v1/system": a path's first three segments


def path_key(path: str) -> Key | None:
    """The first three segments of a request's path (``/api/v1/system``); None for a
    shorter path. Found with three ``find``s: this runs for every request."""
    first = path.find("/", 1)
    if first < 0:
        return None
    second = path.find("/", first + 1)
    if second < 0:
        return None
    third = path.find("/", second + 1)
    return path if third < 0 else path[:third]


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
    return "/" + "/".join(parts[:KEY_SEGMENTS])


def _counted(name: str) -> Callable[..., Any]:
    method = getattr(list, name)

    def changing(self: CountedList, *args: Any) -> Any:
        self.changes += 1
        return method(self, *args)

    changing.__name__ = name
    return changing


class CountedList(list[BaseRoute]):
    """A route list that counts every change made to it."""

    changes = 0

    append = _counted("append")
    extend = _counted("extend")
    insert = _counted("insert")
    remove = _counted("remove")
    pop = _counted("pop")
    clear = _counted("clear")
    sort = _counted("sort")
    reverse = _counted("reverse")
    __setitem__ = _counted("__setitem__")
    __delitem__ = _counted("__delitem__")

    def __iadd__(self, other: Iterable[BaseRoute]) -> CountedList:  # type: ignore[override,misc]
        self.changes += 1
        return super().__iadd__(other)

    def __imul__(self, count: SupportsIndex) -> CountedList:
        self.changes += 1
        return super().__imul__(count)


class _Group:
    """The router as one group sees it: these routes, and the live router for the rest
    (what the dispatch reads on every request as properties, the rarer rest through
    ``__getattr__``)."""

    __slots__ = ("_router", "routes")

    def __init__(self, router: Router, routes: list[BaseRoute]) -> None:
        self._router = router
        self.routes = routes

    @property
    def form_limits(self) -> Any:
        return getattr(self._router, "form_limits", None)

    @property
    def redirect_slashes(self) -> bool:
        return self._router.redirect_slashes

    @property
    def default(self) -> Any:
        return self._router.default

    def __getattr__(self, name: str) -> Any:
        return getattr(self._router, name)


class RouteIndex:
    """The router's dispatch (its ``middleware_stack``), over the routes of one group."""

    def __init__(self, router: Router) -> None:
        if router.middleware_stack != router.app:
            raise ValueError("the route index goes only on a router without its own middleware")
        self.router = router
        self._dispatch = type(router).app
        self._built_for: CountedList | None = None
        self._built_changes = -1
        self._groups: dict[Key, _Group] = {}
        self._rest = _Group(router, [])

    def _build(self, routes: CountedList) -> None:
        changes = routes.changes  # taken first: a change meanwhile rebuilds again
        listed = list(routes)
        keys = [route_key(route) for route in listed]
        groups = {
            key: _Group(
                self.router, [r for r, k in zip(listed, keys, strict=True) if k in (key, None)]
            )
            for key in {key for key in keys if key is not None}
        }
        rest = _Group(self.router, [r for r, k in zip(listed, keys, strict=True) if k is None])
        self._groups, self._rest = groups, rest
        self._built_for, self._built_changes = routes, changes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self.router
        if scope["type"] == "lifespan" or router.redirect_slashes:
            await self._dispatch(router, scope, receive, send)
            return
        routes = router.routes
        if routes is not self._built_for or routes.changes != self._built_changes:
            if not isinstance(routes, CountedList):
                routes = router.routes = CountedList(routes)
            self._build(routes)
        path = scope["path"] if not scope.get("root_path") else get_route_path(scope)
        key = path_key(path)
        group = self._groups.get(key, self._rest) if key is not None else self._rest
        if "router" not in scope:
            scope["router"] = router
        await self._dispatch(group, scope, receive, send)  # type: ignore[arg-type]

"""Adding a router's routes to the app flat, instead of ``include_router``.

``include_router`` keeps the included router nested, and FastAPI matches a
nested router's routes twice per request (once to choose the router, once to
choose the route) and once more for every router nested before the one that
answers. For an ordinary plugin route that cost more than the whole security
pipeline (``bench/auth.py``, whoami). A flat list is matched once, in order.

Every argument of ``add_api_route`` is an attribute of the ``APIRoute`` it
built, already combined with its router's defaults (dependencies, responses,
tags, response class ...), so a route is re-added with exactly what it was
declared with, under the prefix. The OpenAPI document stays the same.
"""

from __future__ import annotations

import inspect

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute

from hostcore.errors import PluginError

_ROUTE_ARGUMENTS = tuple(
    name
    for name in inspect.signature(APIRouter.add_api_route).parameters
    if name not in ("self", "path", "endpoint", "route_class_override")
)


def add_routes_flat(
    app: FastAPI, router: APIRouter, *, prefix: str = "", tag: str | None = None
) -> list[APIRoute | APIWebSocketRoute]:
    """Add ``router``'s routes to ``app`` at ``prefix`` + path, ``tag`` first; the new routes.

    A router's own startup/shutdown handlers or lifespan would not run (and would run
    outside hostcore's failure isolation if they did): such a router is refused.
    """
    if (
        router.on_startup
        or router.on_shutdown
        or type(router.lifespan_context).__name__ != "_DefaultLifespan"
    ):
        raise PluginError(
            "a router with its own startup/shutdown handlers or lifespan: use the "
            "hostcore_startup and hostcore_shutdown hooks instead"
        )
    if getattr(router, "_low_priority_routes", None):
        raise PluginError(
            "a router with frontend routes (router.frontend): serve files through the "
            "hostcore_static_mounts hook instead"
        )
    router_form_limits = dict(getattr(router, "form_limits", None) or {})
    added: list[APIRoute | APIWebSocketRoute] = []
    for route in router.routes:
        if isinstance(route, APIRoute):
            options = {name: getattr(route, name) for name in _ROUTE_ARGUMENTS}
            if router_form_limits and "form_limits" in options:
                # The router's form limits, which a nested router applied per request;
                # the route's own win, as they did there.
                options["form_limits"] = {**router_form_limits, **(route.form_limits or {})}
            if tag is not None:
                options["tags"] = [tag, *(t for t in route.tags if t != tag)]
            app.router.add_api_route(
                prefix + route.path, route.endpoint, route_class_override=type(route), **options
            )
        elif isinstance(route, APIWebSocketRoute):
            app.router.add_api_websocket_route(
                prefix + route.path,
                route.endpoint,
                name=route.name,
                dependencies=route.dependencies,
            )
        else:
            raise PluginError(
                f"route {getattr(route, 'path', route)} is not a FastAPI route: declare "
                "routes with the router's decorators"
            )
        flat = app.router.routes[-1]
        assert isinstance(flat, APIRoute | APIWebSocketRoute)
        added.append(flat)
    return added

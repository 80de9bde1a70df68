"""Adding a router's routes to the app flat, each built with hostcore's admitted route class.

``include_router`` keeps the included router nested, and FastAPI matches a
nested router's routes twice per request (once to choose the router, once to
choose the route) and once more for every router nested before the one that
answers. A flat list is matched once, in order.

A plugin's router may itself include other routers: FastAPI's
``iter_route_contexts`` gives every route with what its routers add
(prefixes, dependencies, tags, responses, response class …) already
combined, exactly as ``include_router`` would serve it, so each is re-added
under the plugin's prefix with those options. The OpenAPI document is the
one ``include_router`` gives (``tests/test_routing.py`` compares them).

Every route is re-added with :class:`~hostcore.security.admission.AdmittedRoute`
(mixed into a plugin's own route class, when it has one): that is what makes
admission run for it.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute, APIWebSocketRoute, RouteContext, iter_route_contexts

from hostcore.errors import PluginError, error_responses
from hostcore.security.admission import AdmittedRoute, AdmittedWebSocketRoute

_ROUTE_ARGUMENTS = tuple(
    name
    for name in inspect.signature(APIRouter.add_api_route).parameters
    if name not in ("self", "path", "endpoint", "route_class_override", "form_limits")
)


_ADMITTED: dict[type[APIRoute], type[AdmittedRoute]] = {APIRoute: AdmittedRoute}


def admitted_class(route_class: type[APIRoute]) -> type[AdmittedRoute]:
    """``AdmittedRoute``, or a subclass that is also the plugin's own route class."""
    if issubclass(route_class, AdmittedRoute):
        return route_class
    found = _ADMITTED.get(route_class)
    if found is None:
        name = f"Admitted{route_class.__name__}"
        found = _ADMITTED[route_class] = type(name, (AdmittedRoute, route_class), {})
    return found


def route_of(context: RouteContext) -> APIRoute | APIWebSocketRoute:
    """The route a context stands for (flat_routes has checked it is a FastAPI one)."""
    route = context.original_route
    assert isinstance(route, APIRoute | APIWebSocketRoute)
    return route


def _has_own_lifespan(context: Any) -> bool:
    """Whether a router's lifespan context is more than FastAPI's default one.

    ``include_router`` replaces the including router's context with one that enters
    both; that merged context is taken apart again here. Anything not recognised
    counts as a lifespan of the plugin's own, and is refused.
    """
    if type(context).__name__ == "_DefaultLifespan":
        return False
    merged = inspect.unwrap(context)
    code = getattr(merged, "__code__", None)
    cells = getattr(merged, "__closure__", None)
    if code is None or cells is None or code.co_name != "merged_lifespan":
        return True
    parts = dict(zip(code.co_freevars, (cell.cell_contents for cell in cells), strict=True))
    if set(parts) != {"original_context", "nested_context"}:
        return True
    return any(_has_own_lifespan(part) for part in parts.values())


def _check_router(router: APIRouter) -> None:
    if router.on_startup or router.on_shutdown or _has_own_lifespan(router.lifespan_context):
        raise PluginError(
            "a router with its own startup/shutdown handlers or lifespan: use the "
            "hostcore_startup and hostcore_shutdown hooks instead"
        )
    if getattr(router, "_low_priority_routes", None):
        raise PluginError(
            "a router with frontend routes (router.frontend): serve files through the "
            "hostcore_static_mounts hook instead"
        )


def _routers(router: APIRouter) -> list[APIRouter]:
    """``router`` and every router included in it, at any depth."""
    found = [router]
    for route in router.routes:
        included = getattr(route, "original_router", None)
        if isinstance(included, APIRouter):
            found.extend(_routers(included))
    return found


def flat_routes(router: APIRouter) -> list[RouteContext]:
    """Every route ``router`` serves, included routers' too, with what its routers add.

    A router's own startup/shutdown handlers or lifespan would not run (and would run
    outside hostcore's failure isolation if they did): such a router is refused, as is
    a route that is not a FastAPI route (it could not declare who may call it).
    """
    for each in _routers(router):
        _check_router(each)
    contexts = list(iter_route_contexts(router.routes))
    for context in contexts:
        if not isinstance(context.original_route, APIRoute | APIWebSocketRoute):
            raise PluginError(
                f"route {context.path} is not a FastAPI route: declare routes with the "
                "router's decorators (static files go through hostcore_static_mounts)"
            )
    return contexts


def _takes_input(route: APIRoute) -> bool:
    """Whether a route validates any input (so it can answer 422)."""
    return route.body_field is not None or bool(get_flat_params(route.dependant))


def allow_all_methods_of_each_path(app: FastAPI) -> None:
    """Let each route's 405 name every method some route serves at its path."""
    methods: dict[str, set[str]] = {}
    for route in app.router.routes:
        if isinstance(route, AdmittedRoute):
            methods.setdefault(route.path, set()).update(route.methods or ())
    for route in app.router.routes:
        if isinstance(route, AdmittedRoute):
            served = methods[route.path]
            route.allowed = frozenset(served | {"HEAD"} if "GET" in served else served)


def add_routes_flat(
    app: FastAPI, router: APIRouter, *, prefix: str = "", tag: str | None = None
) -> list[APIRoute | APIWebSocketRoute]:
    """Add ``router``'s routes (see :func:`flat_routes`) to ``app`` at ``prefix`` + path,
    ``tag`` first; the new routes."""
    router_form_limits = dict(getattr(router, "form_limits", None) or {})
    added: list[APIRoute | APIWebSocketRoute] = []
    for context in flat_routes(router):
        original = route_of(context)
        endpoint = original.endpoint if context.endpoint is None else context.endpoint
        path = prefix + str(context.path)
        if isinstance(original, APIRoute):
            options: dict[str, Any] = {name: getattr(context, name) for name in _ROUTE_ARGUMENTS}
            # The router's form limits, which a nested router applied per request; the
            # route's own win, as they did there.
            options["form_limits"] = {**router_form_limits, **(original.form_limits or {})}
            if tag is not None:
                options["tags"] = [tag, *(t for t in options["tags"] or () if t != tag)]
            if _takes_input(original) and 422 not in (options["responses"] or {}):
                # FastAPI would document its own 422 body, not the one hostcore sends.
                options["responses"] = {**error_responses(422), **(options["responses"] or {})}
            app.router.add_api_route(
                path,
                endpoint,
                route_class_override=admitted_class(type(original)),
                **options,
            )
            flat = app.router.routes[-1]
            assert isinstance(flat, APIRoute)
        else:
            flat = AdmittedWebSocketRoute(
                path,
                endpoint,
                name=context.name,
                dependencies=list(context.dependencies),
                dependency_overrides_provider=app,
            )
            app.router.routes.append(flat)
        added.append(flat)
    return added

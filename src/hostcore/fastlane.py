"""Snapshot routes: answered from ready bytes right after the security gate.

Some routes are polled by every consumer and answer with data a plugin keeps
ready anyway (the system plugin's stats sample, refreshed once a second). For
them, FastAPI's routing and dependency resolution would cost more than the
answer. Mark the endpoint::

    @router.get("/stats", dependencies=[RequireScope("system:read")],
                response_model=StatsRead)
    @snapshot(lambda app: app.state.stats_json())
    async def stats(request: Request) -> Response:
        return Response(request.app.state.stats_json(), media_type="application/json")

and hostcore's gate (``hostcore.security.gate``) authenticates the caller,
checks the scope, applies the rate limit, records the activity row and then
sends ``provider(app)`` itself. The endpoint stays what OpenAPI documents and
what answers if the gate is ever bypassed, so it must give the same bytes.

The provider runs on the event loop for every request: it must return at once
(no I/O, no awaiting). It may raise a ``HostcoreError`` (``Unavailable`` …),
which becomes the usual JSON error. A snapshot route answers GET only, takes
no parameters and has no dependency but its one declaration (RequireScope,
Authenticated or Public): FastAPI's dependencies do not run for it, so
anything else would be skipped. Startup fails naming the route otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI

SNAPSHOT_ATTRIBUTE = "hostcore_snapshot"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Snapshot:
    provider: Callable[[FastAPI], bytes]
    media_type: str = "application/json"

    @property
    def media_type_header(self) -> bytes:
        return self.media_type.encode("latin-1")


def snapshot(
    provider: Callable[[FastAPI], bytes], *, media_type: str = "application/json"
) -> Callable[[F], F]:
    """Serve the decorated GET endpoint from ``provider(app)`` once the gate admits the caller."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, SNAPSHOT_ATTRIBUTE, Snapshot(provider, media_type))
        return endpoint

    return mark

"""What hostcore knows about the request being served, as one typed object per request.

This module is the bottom of hostcore's layers: it imports nothing of hostcore,
so errors, logging, the middleware, the security pipeline and plugins all read
the same object without importing each other. The request-context middleware
creates a :class:`RequestContext` for every HTTP and websocket request and
keeps it in the ASGI scope's ``state`` (``request.state.hostcore`` in a
route); admission fills in the principal and the rate-limit result; the
activity record and the error handler read it.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

PrincipalKind = Literal["client", "user"]
NO_REQUEST = "-"
STATE_KEY = "hostcore"
UNMATCHED = "<unmatched>"  # no route: the raw path would let anyone grow cardinality
# The scope extension where hostcore's server protocol puts a unix-socket peer's credentials.
PEER_EXTENSION = "hostcore.peer"

# The id of the request being served, for every log line written while serving it.
request_id_var: ContextVar[str] = ContextVar("hostcore_request_id", default=NO_REQUEST)


class Peer(NamedTuple):
    """Who is at the other end of a unix socket, as the kernel says (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int


def peer_extension(peer: Peer) -> dict[object, object]:
    """The scope extension that carries ``peer`` (ASGI extensions are dicts)."""
    return {"pid": peer.pid, "uid": peer.uid, "gid": peer.gid}


def peer_of(scope: Any) -> Peer | None:
    """The unix-socket peer of a request; None over TCP or under another server."""
    extensions = scope.get("extensions")
    found = extensions.get(PEER_EXTENSION) if extensions else None
    if found is None:
        return None
    return Peer(found["pid"], found["uid"], found["gid"])


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a client (local service, app) or a user, with their scopes.

    ``subject`` (``client:panel``) is derived once: the rate limit and the activity
    record ask for it on every request.
    """

    kind: PrincipalKind
    name: str
    scopes: frozenset[str]
    jti: str | None = None
    expires_at: float | None = None
    subject: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject", f"{self.kind}:{self.name}")


class RateLimitResult(NamedTuple):
    """The outcome of one hit, with what the client is told about its budget (a tuple:
    one is made per request)."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    retry_after_s: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        """ASGI response headers (lower-case names, as ASGI requires)."""
        headers = [
            (b"x-ratelimit-limit", b"%d" % self.limit),
            (b"x-ratelimit-remaining", b"%d" % self.remaining),
            (b"x-ratelimit-reset", b"%d" % math.ceil(self.reset_at)),
        ]
        if not self.allowed:
            headers.append((b"retry-after", b"%d" % self.retry_after_s))
        return headers


@dataclass(slots=True)
class RequestContext:
    """One request as hostcore sees it.

    ``client`` is the caller's address (the peer's, or the forwarded client's
    behind a trusted proxy; ``"unix"`` for a unix-socket peer, ``"unknown"`` for a
    forwarded hop that is not an address); ``local`` says whether the caller is on
    this host, which HMAC-signed requests require.
    ``route`` is the template of the route that admitted the request (``None``
    while no route has).
    """

    request_id: str
    client: str
    local: bool
    principal: Principal | None = None
    rate_limit: RateLimitResult | None = None
    route: str | None = None


# The request being served, for code that has no scope at hand (an endpoint wrapper).
# A server runs each request in its own task, so a request never sees another's.
current_context: ContextVar[RequestContext | None] = ContextVar(
    "hostcore_request_context", default=None
)


def context_of(scope: Any) -> RequestContext | None:
    """The context of the request ``scope`` describes; None outside hostcore's middleware."""
    state = scope.get("state")
    if state is None:
        return None
    found = state.get(STATE_KEY)
    return found if isinstance(found, RequestContext) else None


def attach(scope: Any, context: RequestContext) -> None:
    """Keep ``context`` with the request (the server gives each request its own ``state``)."""
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    state[STATE_KEY] = context
    request_id_var.set(context.request_id)
    current_context.set(context)

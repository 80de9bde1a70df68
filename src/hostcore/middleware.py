"""Pure ASGI middleware around every request: it runs on the hot path, so it stays lean.

One pass does what every request needs before any route runs: the request id
(taken from ``X-Request-ID`` when well-formed, else generated, echoed back and
put on every log line), the body-size limit, the 503 for routes of a failed
plugin, the last-resort 500 (logged with the request id, never a traceback to
the client) and the access line.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostcore.errors import (
    WS_TRY_AGAIN_LATER,
    BadRequest,
    PayloadTooLarge,
    PluginUnavailable,
    error_response,
)
from hostcore.logging import request_id_var

REQUEST_ID_HEADER = b"x-request-id"
# Keys this middleware shares with the security pipeline on the ASGI scope.
CLIENT_KEY = "hostcore.client"
RATE_LIMIT_KEY = "hostcore.ratelimit"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# A decoded path with a control character (%0A ...) is never a real route. Routing's
# "$" would still match before a trailing newline, so such a path could reach another
# route than the one the security gate looked up.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")

LIVENESS_PATH = "/api/v1/health"
LIVENESS_BODY = b'{"status":"ok"}'
LIVENESS_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(LIVENESS_BODY)).encode()),
]
UNMATCHED = "<unmatched>"  # no route: the raw path would let anyone grow cardinality

access_log = logging.getLogger("hostcore.access")


def route_template(scope: Scope) -> str:
    """The matched route's full path template (``/api/v1/auth/tokens/{jti}``): every
    route sits flat on the app's router (hostcore.routing), so its path is the template."""
    route = scope.get("route")
    if route is None:
        return LIVENESS_PATH if scope.get("path") == LIVENESS_PATH else UNMATCHED
    return str(getattr(route, "path", UNMATCHED))


log = logging.getLogger(__name__)


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        access_log_enabled: bool,
        unavailable: Callable[[str], PluginUnavailable | None],
        resolve_client: Callable[[Scope], str] | None = None,
        observe: Callable[[Scope, int, float], None] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log_enabled = access_log_enabled
        self.unavailable = unavailable
        self.resolve_client = resolve_client
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id: bytes | None = None
        content_length: bytes | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = value
            elif name == b"content-length":
                content_length = value
        if request_id is None or not _VALID_REQUEST_ID.match(request_id):
            request_id = os.urandom(16).hex().encode()
        request_id_var.set(request_id.decode())
        if self.resolve_client is not None:
            scope[CLIENT_KEY] = self.resolve_client(scope)
        if (
            scope["type"] == "http"
            and scope["path"] == LIVENESS_PATH
            and scope["method"] in ("GET", "HEAD")
        ):
            await self._liveness(scope, send, request_id)
            return
        if scope["type"] == "websocket":
            if self.unavailable(scope["path"]) is not None:
                await send({"type": "websocket.close", "code": WS_TRY_AGAIN_LATER})
                return
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 0
        refused_by_us = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if refused_by_us and status:
                return  # we already answered 413; whatever the app says now is moot
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id)]
                limit = scope.get(RATE_LIMIT_KEY)
                if limit is not None and status != 429:
                    headers.extend(limit.headers())
                message["headers"] = headers
            await send(message)

        async def refuse(exc: Exception) -> None:
            await error_response(exc, scope["method"], scope["path"])(
                scope, receive, send_with_request_id
            )

        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            # A body without Content-Length (chunked) is counted as it arrives; past the
            # limit the client gets 413 and the app sees a disconnect.
            nonlocal received, refused_by_us
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not status:
                        await refuse(PayloadTooLarge(f"request body exceeds {limit} bytes"))
                    refused_by_us = True
                    return {"type": "http.disconnect"}
            return message

        try:
            refusal = self._refusal(scope, content_length)
            if refusal is not None:
                await refuse(refusal)
            elif content_length is None:
                await self.app(scope, limited_receive, send_with_request_id)
            else:
                await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            if refused_by_us:
                return
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if status == 0:
                await refuse(exc)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            if self.observe is not None:
                self.observe(scope, status, duration_ms)
            if self.access_log_enabled:
                access_log.info(
                    "%s %s %d %.1fms", scope["method"], scope["path"], status, duration_ms
                )

    async def _liveness(self, scope: Scope, send: Send, request_id: bytes) -> None:
        """Liveness, answered before routing: load balancers probe it often, and it must
        answer even when a route is wedged. The route in meta.py documents it."""
        started = time.perf_counter()
        headers = [*LIVENESS_HEADERS, (REQUEST_ID_HEADER, request_id)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else LIVENESS_BODY
        await send({"type": "http.response.body", "body": body})
        duration_ms = (time.perf_counter() - started) * 1000
        if self.observe is not None:
            self.observe(scope, 200, duration_ms)
        if self.access_log_enabled:
            access_log.info("%s %s 200 %.1fms", scope["method"], LIVENESS_PATH, duration_ms)

    def _refusal(self, scope: Scope, content_length: bytes | None) -> Exception | None:
        if _CONTROL_CHARACTER.search(scope["path"]):
            return BadRequest("the request path contains a control character")
        unavailable = self.unavailable(scope["path"])
        if unavailable is not None:
            return unavailable
        if content_length is not None:
            try:
                length = int(content_length)
            except ValueError:
                return BadRequest("Content-Length is not a number")
            if length > self.max_body_bytes:
                return PayloadTooLarge(
                    f"request body of {length} bytes exceeds the limit of {self.max_body_bytes}"
                )
        return None

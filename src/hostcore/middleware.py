"""The outermost layer: what every request needs before and after any route runs.

Pure ASGI, because it runs on every request. In order:

- the request context (:mod:`hostcore.context`): the request id (the
  client's ``X-Request-ID`` when well-formed, else a new one; echoed back and
  on every log line) and the caller's address;
- the liveness probe, answered here and nowhere else (it must answer even
  when a route is wedged; it touches nothing);
- refusals that need no route: a route of a failed plugin (503), a body over
  the limit (413), a malformed ``Content-Length`` (400);
- the response headers every answer carries (request id, rate-limit state);
- the last-resort 500 (logged with the request id, never a traceback to the
  client), and the record of the request (activity row, access line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from itertools import count

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostcore.context import RequestContext, attach
from hostcore.error_handling import error_response
from hostcore.errors import (
    WS_TRY_AGAIN_LATER,
    BadRequest,
    PayloadTooLarge,
    PluginUnavailable,
    TooManyRequests,
)

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")

LIVENESS_PATH = "/api/v1/health"
LIVENESS_BODY = b'{"status":"ok"}'
LIVENESS_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", b"%d" % len(LIVENESS_BODY)),
]

access_log = logging.getLogger("hostcore.access")
log = logging.getLogger(__name__)

Caller = Callable[[Scope], tuple[str, bool]]
Observer = Callable[[Scope, RequestContext, int, float], None]


class RequestIds:
    """Unique ids without a system call per request: a random prefix per process and a
    counter. Renewed after a fork, so two workers never share a prefix."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = count(1)

    def of(self, given: bytes | None) -> str:
        """The client's id when well-formed, else a new one."""
        if given is not None and _VALID_REQUEST_ID.match(given):
            return given.decode("ascii")
        return f"{self._prefix}{next(self._counter):016x}"


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        access_log_enabled: bool,
        unavailable: Callable[[str], PluginUnavailable | None],
        caller: Caller,
        observe: Observer | None = None,
        count_refused: Callable[[RequestContext], None] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log_enabled = access_log_enabled
        self.unavailable = unavailable
        self.caller = caller
        self.observe = observe
        self.count_refused = count_refused
        self.request_ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given_id: bytes | None = None
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                given_id = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        client, local = self.caller(scope)
        context = RequestContext(self.request_ids.of(given_id), client, local)
        attach(scope, context)
        if kind == "websocket":
            await self._websocket(scope, receive, send, context)
            return
        if scope["path"] == LIVENESS_PATH and scope["method"] in ("GET", "HEAD"):
            await self._liveness(scope, send, context)
            return
        started = time.perf_counter()
        response = _Response(send, context)
        try:
            refusal = self._refusal(scope, context, length)
            if refusal is not None:
                await error_response(refusal, scope["method"], scope["path"])(
                    scope, receive, response.send
                )
            elif chunked:
                # No Content-Length to check in advance: count the body as it comes.
                body = _BodyLimit(receive, self.max_body_bytes, scope, response, self._counted)
                await self.app(scope, body.receive, response.send)
            else:
                # With neither header a request has no body (RFC 9112 §6.3).
                await self.app(scope, receive, response.send)
        except Exception as exc:
            if not response.closed:
                log.exception("unhandled error in %s %s", scope["method"], scope["path"])
                if not response.status:
                    await error_response(exc, scope["method"], scope["path"])(
                        scope, receive, response.send
                    )
        finally:
            self._record(scope, context, response.status, started)

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, context: RequestContext
    ) -> None:
        """A websocket is recorded like a request once it ends: 101 when its handshake was
        accepted, 403 when it was closed before (what the server answers then)."""
        started = time.perf_counter()
        accepted = False

        async def watched(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
            await send(message)

        try:
            if self.unavailable(scope["path"]) is not None:
                if self.count_refused is not None:
                    with contextlib.suppress(TooManyRequests):
                        self.count_refused(context)
                await send({"type": "websocket.close", "code": WS_TRY_AGAIN_LATER})
                return
            await self.app(scope, receive, watched)
        finally:
            self._record(scope, context, 101 if accepted else 403, started)

    async def _liveness(self, scope: Scope, send: Send, context: RequestContext) -> None:
        """Liveness, answered before routing: probes ask often, and it must answer even
        when a route is wedged. The route in meta.py documents it in OpenAPI."""
        started = time.perf_counter()
        context.route = LIVENESS_PATH
        headers = [*LIVENESS_HEADERS, (REQUEST_ID_HEADER, context.request_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else LIVENESS_BODY
        await send({"type": "http.response.body", "body": body})
        self._record(scope, context, 200, started)

    def _refusal(
        self, scope: Scope, context: RequestContext, raw_length: bytes | None
    ) -> Exception | None:
        """Why hostcore answers this request itself, if it does. A refusal counts against
        the caller's address like any request (429 once it is over the limit)."""
        refusal = self._why_refused(scope, raw_length)
        if refusal is None:
            return None
        return self._counted(refusal, context)

    def _why_refused(self, scope: Scope, raw_length: bytes | None) -> Exception | None:
        unavailable = self.unavailable(scope["path"])
        if unavailable is not None:
            return unavailable
        if raw_length is None:
            return None
        if not raw_length.isdigit():
            return BadRequest("Content-Length is not a number")
        length = int(raw_length)
        if length > self.max_body_bytes:
            return PayloadTooLarge(
                f"request body of {length} bytes exceeds the limit of {self.max_body_bytes}"
            )
        return None

    def _counted(self, refusal: Exception, context: RequestContext) -> Exception:
        if self.count_refused is not None:
            try:
                self.count_refused(context)
            except TooManyRequests as exc:
                return exc
        return refusal

    def _record(self, scope: Scope, context: RequestContext, status: int, started: float) -> None:
        duration_ms = (time.perf_counter() - started) * 1000
        if self.observe is not None:
            self.observe(scope, context, status, duration_ms)
        if self.access_log_enabled:
            method = scope.get("method", "WS")  # a websocket's scope has none
            access_log.info("%s %s %d %.1fms", method, scope["path"], status, duration_ms)


class _Response:
    """The app's ``send``, adding the headers every answer carries; it knows the status and
    whether hostcore has already answered on the app's behalf (``closed``)."""

    __slots__ = ("_send", "closed", "context", "status")

    def __init__(self, send: Send, context: RequestContext) -> None:
        self._send = send
        self.context = context
        self.status = 0
        self.closed = False

    async def send(self, message: Message) -> None:
        if self.closed:
            return  # hostcore answered (413) while the app was still reading
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = [
                *message.get("headers", ()),
                (REQUEST_ID_HEADER, self.context.request_id.encode()),
            ]
            limit = self.context.rate_limit
            if limit is not None and self.status != 429:
                headers.extend(limit.headers())
            message["headers"] = headers
        await self._send(message)


class _BodyLimit:
    """A body without Content-Length (chunked) is counted as it arrives; past the limit
    the client gets 413 and the app sees a disconnect."""

    __slots__ = ("_receive", "counted", "limit", "received", "response", "scope")

    def __init__(
        self,
        receive: Receive,
        limit: int,
        scope: Scope,
        response: _Response,
        counted: Callable[[Exception, RequestContext], Exception],
    ) -> None:
        self._receive = receive
        self.limit = limit
        self.scope = scope
        self.response = response
        self.counted = counted
        self.received = 0

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        if self.received <= self.limit:
            return message
        if not self.response.status:
            too_large = PayloadTooLarge(f"request body exceeds {self.limit} bytes")
            refusal = self.counted(too_large, self.response.context)
            await error_response(refusal, self.scope["method"], self.scope["path"])(
                self.scope, self._receive, self.response.send
            )
        self.response.closed = True
        return {"type": "http.disconnect"}

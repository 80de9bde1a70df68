"""``GET /api/v1/events`` (Server-Sent Events) and ``/api/v1/ws`` (a websocket).

Both are admitted like every route (rate-limited, recorded in activity). A stream ends
when its token expires (it sleeps until then at most) or as soon as this worker learns
it was revoked (the revocation poll, twice a second, tells the hub); a heartbeat goes
out every ``HEARTBEAT_S`` so proxies keep it open. Nothing polls per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from hostcore.context import Principal
from hostcore.errors import (
    WS_POLICY_VIOLATION,
    BadRequest,
    HostcoreError,
    Unauthorized,
    Unavailable,
    error_responses,
)
from hostcore.events.hub import MAX_TOPICS, Event, EventHub, Subscriber
from hostcore.security.deps import Authenticated, OptionalPrincipal

EVENTS_PATH = "/api/v1/events"
WS_PATH = "/api/v1/ws"
HEARTBEAT_S = 15.0
AUTH_WAIT_S = 5.0  # for a websocket's first message when it came without a header
MESSAGES_PER_S = 10  # a websocket's messages, sustained (beyond: it is closed)
TOPIC_PATTERN = r"^[a-z][a-z0-9_.-]{0,79}$"
TOPICS_PATTERN = r"^[a-z][a-z0-9_.-]{0,79}(,[a-z][a-z0-9_.-]{0,79}){0,15}$"
MAX_MESSAGE_BYTES = 4096


def _hub(app: Any) -> EventHub:
    hub = getattr(app.state, "events", None)
    if not isinstance(hub, EventHub):
        raise Unavailable("events are not available")
    return hub


def end_reason(app: Any, subscriber: Subscriber) -> str | None:
    """Why the stream must end now (its token expired or was revoked, the server stops);
    None while it may go on."""
    principal = subscriber.principal
    if subscriber.ended is not None:
        return subscriber.ended
    if principal.expires_at is not None and time.time() >= principal.expires_at:
        return "the token expired"
    if principal.jti is not None and principal.jti in app.state.security.verifier.revoked:
        return "the token was revoked"
    return None


def next_wake_s(subscriber: Subscriber, last_beat: float) -> float:
    """Until the next heartbeat, or the token's expiry if sooner: nothing polls."""
    wait = HEARTBEAT_S - (time.monotonic() - last_beat)
    expires = subscriber.principal.expires_at
    if expires is not None:
        wait = min(wait, expires - time.time())
    return max(wait, 0.0)


def sse_frame(event: Event) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event.id.encode(),
        event.topic.encode(),
        event.data,
    )


async def _stream(
    app: Any,
    hub: EventHub,
    subscriber: Subscriber,
    checked: list[tuple[str, Event | None]],
    last_event_id: str | None,
) -> AsyncIterator[bytes]:
    last_beat = time.monotonic()
    reported = 0
    try:
        hub.opened(subscriber, checked=True)  # the request checked the limit
        hub.attach(subscriber, checked, last_event_id=last_event_id)
        yield b"retry: 2000\n\n"
        while True:
            while subscriber.queue:
                if subscriber.dropped != reported:
                    reported = subscriber.dropped
                    yield b'event: dropped\ndata: {"dropped":%d}\n\n' % reported
                yield sse_frame(subscriber.pop())
            if (reason := end_reason(app, subscriber)) is not None:
                yield b"event: end\ndata: %s\n\n" % json.dumps({"reason": reason}).encode()
                return
            if time.monotonic() - last_beat >= HEARTBEAT_S:
                last_beat = time.monotonic()
                yield b": heartbeat\n\n"
            subscriber.wake.clear()
            if not subscriber.queue:
                # A disconnect cancels this generator (Starlette listens for it).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(next_wake_s(subscriber, last_beat)):
                        await subscriber.wake.wait()
    finally:
        hub.unsubscribe(subscriber)


def events_router() -> APIRouter:
    router = APIRouter(tags=["events"])

    @router.get(
        EVENTS_PATH,
        summary="A Server-Sent Events stream of the topics asked for",
        response_class=StreamingResponse,
        responses={
            **error_responses(401, 403, 404, 422, 429, 503),
            200: {"content": {"text/event-stream": {}}, "description": "The event stream"},
        },
    )
    async def events(
        request: Request,
        principal: Authenticated,
        topics: Annotated[str, Query(pattern=TOPICS_PATTERN)],
        last_event_id: Annotated[str | None, Header(max_length=80)] = None,
    ) -> StreamingResponse:
        """Topics as ``?topics=a,b``. A topic that does not exist, or another caller's
        job, is 404; one the caller may not read is 403 (never a silently empty
        stream). ``jobs.<id>`` and ``plugins`` begin with their current state, so a
        client reconnecting (``Last-Event-ID``) has missed nothing."""
        hub = _hub(request.app)
        # Refusals are answered here, with their status; the subscription itself is
        # made by the stream, which alone ends it (a response never sent holds none).
        hub.may_open(principal)
        checked = await hub.check(principal, list(dict.fromkeys(topics.split(","))))
        return StreamingResponse(
            _stream(request.app, hub, Subscriber(principal), checked, last_event_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.websocket(WS_PATH)
    async def websocket(websocket: WebSocket, caller: OptionalPrincipal) -> None:
        """Authenticated by a bearer header or, since browsers cannot set one, by a
        first message ``{"type": "auth", "token": ...}``; then ``subscribe`` and
        ``unsubscribe`` messages with ``topics``."""
        await websocket.accept()
        app = websocket.app
        try:
            principal = caller or await _first_message_auth(websocket)
            hub = _hub(app)
            subscriber = Subscriber(principal)
            hub.opened(subscriber)
        except HostcoreError as exc:
            await _close(websocket, exc.detail)
            return
        except WebSocketDisconnect:
            return
        receiving = asyncio.create_task(_receive(websocket, hub, subscriber))
        # However the client side ends, the sender wakes and the subscriber goes.
        receiving.add_done_callback(lambda _: subscriber.wake.set())
        try:
            await _send_events(websocket, app, subscriber, receiving)
        finally:
            receiving.cancel()
            with contextlib.suppress(BaseException):
                await receiving
            hub.unsubscribe(subscriber)

    return router


async def _text(websocket: WebSocket) -> str:
    """The next text message; a binary one is refused, a disconnect ends the socket."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if not isinstance(text, str):
        raise BadRequest("messages are JSON text")
    return text


async def _first_message_auth(websocket: WebSocket) -> Principal:
    try:
        async with asyncio.timeout(AUTH_WAIT_S):
            message = await _text(websocket)
    except TimeoutError:
        raise Unauthorized("no credentials: send a bearer token first") from None
    request = _parse(message)
    token = request.get("token")
    if request.get("type") != "auth" or not isinstance(token, str) or len(token) > 4096:
        raise Unauthorized("the first message must be {'type': 'auth', 'token': ...}")
    principal: Principal = await websocket.app.state.security.authenticator.verify_token(token)
    await websocket.send_text(json.dumps({"type": "authenticated", "subject": principal.subject}))
    return principal


def _parse(message: str) -> dict[str, Any]:
    if len(message) > MAX_MESSAGE_BYTES:
        raise BadRequest("message too large")
    try:
        parsed = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…", nested past the stack
        raise BadRequest("messages are JSON objects") from None
    if not isinstance(parsed, dict):
        raise BadRequest("messages are JSON objects")
    return parsed


async def _receive(websocket: WebSocket, hub: EventHub, subscriber: Subscriber) -> None:
    valid = re.compile(TOPIC_PATTERN)
    budget, refilled = float(MESSAGES_PER_S), time.monotonic()
    while True:
        text = await _text(websocket)
        now = time.monotonic()
        budget = min(float(MESSAGES_PER_S), budget + (now - refilled) * MESSAGES_PER_S)
        refilled = now
        if budget < 1:
            subscriber.end(f"more than {MESSAGES_PER_S} messages a second")
            return
        budget -= 1
        try:
            request = _parse(text)
            kind, topics = request.get("type"), request.get("topics")
            if (
                kind not in ("subscribe", "unsubscribe")
                or not isinstance(topics, list)
                or not 0 < len(topics) <= MAX_TOPICS
                or not all(isinstance(t, str) and valid.match(t) for t in topics)
            ):
                raise BadRequest("send {'type': 'subscribe' | 'unsubscribe', 'topics': [...]}")
            if kind == "subscribe":
                await hub.subscribe(subscriber, topics)
            else:
                hub.unsubscribe(subscriber, topics)
            reply = {"type": f"{kind}d", "topics": sorted(subscriber.topics)}
        except HostcoreError as exc:
            reply = {"type": "error", "error": exc.name, "detail": exc.detail}
        await websocket.send_text(json.dumps(reply))
        subscriber.wake.set()


async def _send_events(
    websocket: WebSocket, app: Any, subscriber: Subscriber, receiving: asyncio.Task[None]
) -> None:
    last_beat = time.monotonic()
    reported = 0
    while not receiving.done():
        while subscriber.queue:
            if subscriber.dropped != reported:
                reported = subscriber.dropped
                await websocket.send_text(json.dumps({"type": "dropped", "dropped": reported}))
            event = subscriber.pop()
            head = f'{{"type":"event","topic":{json.dumps(event.topic)},"id":"{event.id}"'
            await websocket.send_text(f'{head},"data":{event.data.decode()}}}')
        if (reason := end_reason(app, subscriber)) is not None:
            await _close(websocket, reason)
            return
        if time.monotonic() - last_beat >= HEARTBEAT_S:
            last_beat = time.monotonic()
            await websocket.send_text('{"type":"ping"}')
        subscriber.wake.clear()
        if not subscriber.queue and not receiving.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_wake_s(subscriber, last_beat)):
                    await subscriber.wake.wait()
    error = receiving.exception() if receiving.done() and not receiving.cancelled() else None
    if isinstance(error, HostcoreError):  # a binary frame: refused as such
        await _close(websocket, error.detail)
    elif not isinstance(error, WebSocketDisconnect) and (reason := end_reason(app, subscriber)):
        await _close(websocket, reason)  # too many messages


async def _close(websocket: WebSocket, reason: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.close(code=WS_POLICY_VIOLATION, reason=reason[:120])

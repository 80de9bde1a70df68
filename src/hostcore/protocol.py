"""hostcore's HTTP/1.1 server protocol: uvicorn's httptools protocol with limits.

uvicorn builds one protocol object per connection; ``server_protocols`` gives the
classes ``hostcore serve`` hands to uvicorn, alone or in each gunicorn worker.
What they add, each with its reason:

- The request line and headers are at most ``server.max_header_bytes`` bytes and
  ``server.max_headers`` fields, else 431 and the connection closes. httptools has
  no limit of its own and keeps a header's value whole in memory until it ends, so
  bytes are counted as they arrive, before the parser sees them.
- A client has ``server.header_timeout_s`` to send its request line and headers
  (from connecting, or from the first byte of a request on a kept-alive
  connection), and ``server.body_timeout_s`` more for the body (counted from
  the headers' deadline), else 408 and the connection closes; a connection that
  sent nothing is closed without an answer.
  An idle kept-alive connection is closed by uvicorn after
  ``server.keepalive_timeout_s``. So a slow client cannot hold a file descriptor
  (slowloris). Time the app takes is not limited here, nor time the server itself
  does not read (a paused read: backpressure or a pipelined request waiting).
- Deadlines are checked by one timer per server, not armed per request: per
  request the cost is a clock read and a few stores (``bench/protocol.py``
  measures it against uvicorn's own protocol).
- A unix-socket peer's credentials (``SO_PEERCRED``: pid, uid, gid), read once per
  connection, are in every request's scope, HTTP and websocket, as
  ``scope["extensions"]["hostcore.peer"]``: the trust model reads them
  (:mod:`hostcore.security.proxies`).
- A response's head and body leave in one write, one ``send`` system call: the
  head is held until the body comes (Starlette sends it in the same turn of the
  event loop), and until the end of that turn at the latest, so a streamed
  response's head is never late. On loopback a ``send`` is the whole TCP path,
  sender and receiver, and uvicorn makes two per response.
- A graceful stop still answers a connection that was accepted but had not sent
  its request yet (it was in flight when the server stopped accepting), with
  ``Connection: close``, rather than closing it unanswered: a reload fails no
  request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import struct
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from hostcore.config import ServerSettings
from hostcore.context import PEER_EXTENSION, Peer, peer_extension
from hostcore.error_handling import error_payload
from hostcore.errors import HostcoreError, RequestHeadersTooLarge, RequestTimeout

NO_DEADLINE = math.inf
SWEEP_INTERVAL_S = 0.5
# After a graceful stop begins, how long an accepted connection has to start its request.
STOPPING_GRACE_S = 1.0
# After a refusal, how long what the client still sends is read and dropped: closing with
# unread data makes the kernel reset the connection, and the client may never see the answer.
LINGER_S = 2.0
_UCRED = struct.Struct("3i")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    @classmethod
    def of(cls, server: ServerSettings) -> Limits:
        return cls(
            server.max_header_bytes,
            server.max_headers,
            server.header_timeout_s,
            server.body_timeout_s,
        )


def server_protocols(server: ServerSettings) -> dict[str, Any]:
    """``uvicorn.Config`` arguments: the protocols bound to these limits, and keep-alive."""

    class Bound(HostcoreHttpProtocol):
        limits = Limits.of(server)

    return {
        "http": Bound,
        "ws": HostcoreWebSocketProtocol,
        "ws_max_size": server.max_ws_message_bytes,
        "timeout_keep_alive": server.keepalive_timeout_s,
    }


def peer_credentials(transport: asyncio.BaseTransport) -> Peer | None:
    """The kernel's credentials of a unix-socket peer; None for TCP."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    return Peer(*_UCRED.unpack(raw))


class _Connection:
    """hostcore's state of one connection, in one slotted object rather than six more
    attributes on the protocol: uvicorn's protocol has 28 already, and past 30 CPython
    (3.11) stops sharing instance dict keys, which slows every attribute access uvicorn
    makes on every request."""

    __slots__ = ("deadline", "head_left", "lingering", "peer", "stopping", "writer")

    def __init__(self) -> None:
        self.writer: _Coalescing | None = None
        self.deadline = NO_DEADLINE
        # Bytes the request head being received may still use; None while a body arrives.
        self.head_left: int | None = None
        self.lingering = False
        self.peer: dict[object, object] | None = None
        self.stopping = False


class HostcoreHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[Limits] = Limits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.hostcore = _Connection()

    # --- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        state = self.hostcore
        state.writer = _Coalescing(transport, self.loop)
        peer = peer_credentials(transport)
        state.peer = None if peer is None else peer_extension(peer)
        state.head_left = self.limits.max_header_bytes
        state.deadline = self.loop.time() + self.limits.header_timeout_s
        _deadlines_of(self.server_state, self.loop).watch()

    def data_received(self, data: bytes) -> None:
        state = self.hostcore
        left = state.head_left
        if left is not None:
            if state.deadline == NO_DEADLINE:
                state.deadline = self.loop.time() + self.limits.header_timeout_s
            if len(data) > left:
                self._beyond_head(data)
                return
            state.head_left = left - len(data)
        self._feed(data)

    def _beyond_head(self, data: bytes) -> None:
        """More than the head may still use: parse that much, then what follows its end."""
        state = self.hostcore
        while not state.lingering:
            left = state.head_left
            if left is None or len(data) <= left:
                self.data_received(data)
                return
            state.head_left = 0
            if left:
                self._feed(data[:left])
            if self.transport.is_closing() or state.lingering:
                return
            if state.head_left == 0:
                limit = self.limits.max_header_bytes
                self._refuse(RequestHeadersTooLarge(f"request head exceeds {limit} bytes"))
                return
            data = data[left:]
            if state.head_left is not None and state.deadline == NO_DEADLINE:
                state.deadline = self.loop.time() + self.limits.header_timeout_s

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, and a refusal raised in a parser callback."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HostcoreError):
                self._refuse(exc.__context__)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _send_held(self) -> None:
        """What a response left in the coalescing writer goes now: before anything the
        protocol itself writes or a close it makes (a HEAD answer's head, a stream's last
        chunk or a 100 Continue may be held until the end of the turn)."""
        if self.hostcore.writer is not None:
            self.hostcore.writer.flush()

    def send_400_response(self, msg: str) -> None:
        self._send_held()
        super().send_400_response(msg)

    def handle_websocket_upgrade(self) -> None:
        self._send_held()
        super().handle_websocket_upgrade()

    def timeout_keep_alive_handler(self) -> None:
        self._send_held()
        super().timeout_keep_alive_handler()

    def shutdown(self) -> None:
        self._send_held()
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            # Accepted before the server stopped accepting, or kept alive between two
            # requests (as nginx keeps them): the request under way, or one already on its
            # way, is answered (with Connection: close) within the grace; closing at once
            # would reset it.
            state = self.hostcore
            state.stopping = True
            state.deadline = min(state.deadline, self.loop.time() + STOPPING_GRACE_S)
            return
        super().shutdown()

    # --- parser callbacks -------------------------------------------------------------

    def on_headers_complete(self) -> None:
        if len(self.headers) > self.limits.max_headers:
            raise RequestHeadersTooLarge(f"more than {self.limits.max_headers} header fields")
        state = self.hostcore
        state.head_left = None
        # The body's time counts from the head's deadline: no clock read per request.
        deadline = state.deadline
        if deadline == NO_DEADLINE:  # a head that began in the chunk that ended the last
            deadline = self.loop.time() + self.limits.header_timeout_s
        state.deadline = deadline + self.limits.body_timeout_s
        if state.peer is not None:
            self.scope["extensions"] = {PEER_EXTENSION: state.peer}
        # Per request, so the base class by name: Python 3.11's super() without arguments
        # builds a frame object on every call.
        HttpToolsProtocol.on_headers_complete(self)
        cycle = self.cycle
        if cycle is not None:
            # Its task has not run yet: it writes through the coalescing writer only.
            cycle.transport = state.writer  # type: ignore[assignment]
            if state.stopping:
                cycle.keep_alive = False

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        state = self.hostcore
        state.head_left = self.limits.max_header_bytes
        state.deadline = NO_DEADLINE

    # --- refusals ---------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """The deadline passed: 408 for a request under way, a silent close for none."""
        state = self.hostcore
        if self.transport.is_closing():
            return
        if state.lingering:
            self.transport.close()
            return
        cycle = self.cycle
        waiting = cycle is not None and cycle.waiting_for_100_continue
        if self.flow.read_paused or waiting:
            # hostcore stopped reading (backpressure, a pipelined request), or the client
            # waits for the app to ask for the body (Expect: 100-continue): not its delay.
            state.deadline = now + self.limits.body_timeout_s
            return
        if state.head_left is None:
            if cycle is not None and cycle.response_started:
                self._close()  # answered already (say 413) while the body still trickles
            else:
                self._refuse(RequestTimeout("the request body did not arrive in time"))
        elif state.head_left < self.limits.max_header_bytes:
            self._refuse(RequestTimeout("the request headers did not arrive in time"))
        else:
            self._close()

    def _refuse(self, error: HostcoreError) -> None:
        """Answer ``error`` (unless a response is half sent), then close the connection."""
        cycle = self.cycle
        log.debug("refused a request from %s: %s", self.client or "unix", error.detail)
        self._send_held()
        if cycle is None or cycle.response_complete or not cycle.response_started:
            status, body, _ = error_payload(error, "", "")
            content = json.dumps(body, separators=(",", ":")).encode()
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(content),
                b"connection: close\r\n\r\n",
                content,
            ]
            self.transport.write(b"".join(head))
        self._disconnect_app()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Lingering close: no more to send, what still arrives is dropped, then close.
        self.transport.write_eof()
        state = self.hostcore
        state.lingering = True
        state.head_left = -1  # every chunk is beyond: data_received drops it
        self.flow.resume_reading()
        state.deadline = self.loop.time() + LINGER_S

    def _close(self) -> None:
        self._send_held()
        self.transport.close()
        self._disconnect_app()

    def _disconnect_app(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app, if it runs, reads a disconnect; whatever it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()


class _Coalescing:
    """The transport as a request's cycle sees it: what it writes is held until its next
    write, sent with it, or sent at the end of the event loop's turn at the latest. A
    response's head and body (one turn) become one write; a streamed response's chunks
    leave when the turn that produced them ends. Its order is the cycle's order; its close
    sends what is held first, and so does the protocol before anything it writes or
    closes itself (``HostcoreHttpProtocol._send_held``)."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()


class HostcoreWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol, with the unix-socket peer's credentials in the scope."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = peer_credentials(transport)
        self._peer = None if peer is None else peer_extension(peer)

    async def run_asgi(self) -> None:
        if self._peer is not None:
            self.scope.setdefault("extensions", {})[PEER_EXTENSION] = self._peer
        await super().run_asgi()


class _Deadlines:
    """One timer per server that expires the connections whose deadline has passed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self._loop = loop
        self._connections = connections
        self._timer: asyncio.TimerHandle | None = None

    def watch(self) -> None:
        if self._timer is None:
            self._timer = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self._loop.time()
        expired = [
            connection
            for connection in self._connections
            if isinstance(connection, HostcoreHttpProtocol) and connection.hostcore.deadline <= now
        ]
        for connection in expired:
            connection.expire(now)
        if self._connections:
            self.watch()


_DEADLINES: weakref.WeakKeyDictionary[ServerState, _Deadlines] = weakref.WeakKeyDictionary()


def _deadlines_of(server_state: ServerState, loop: asyncio.AbstractEventLoop) -> _Deadlines:
    found = _DEADLINES.get(server_state)
    if found is None:
        found = _DEADLINES[server_state] = _Deadlines(loop, server_state.connections)
    return found

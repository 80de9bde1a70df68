"""hostcore's HTTP protocol on the wire: header limits, slow clients, peers, graceful stops."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from hostcore.config import ServerSettings
from hostcore.context import peer_of
from tests.helpers import ServerThread, body_of, read_response, status_of, unix_listener, wait_for

TIGHT = ServerSettings(
    max_header_bytes=2048, max_headers=16, header_timeout_s=0.5, body_timeout_s=0.5
)


class Calls:
    """What reached the app, in order."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def echo(request: Request) -> JSONResponse:
            body = await request.body()
            peer = peer_of(request.scope)
            self.seen.append({"path": request.url.path, "body": body, "peer": peer})
            return JSONResponse({"bytes": len(body), "peer": peer and peer._asdict()})

        async def socket_peer(websocket: WebSocket) -> None:
            await websocket.accept()
            peer = peer_of(websocket.scope)
            await websocket.send_json({"peer": peer and peer._asdict()})
            await websocket.close()

        return Starlette(
            routes=[
                Route("/echo", echo, methods=["GET", "POST"]),
                WebSocketRoute("/ws", socket_peer),
            ]
        )


@pytest.fixture
def calls() -> Calls:
    return Calls()


def request(path: str = "/echo", headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{'POST' if body else 'GET'} {path} HTTP/1.1", "Host: test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def send_all_tolerating_a_close(client: socket.socket, data: bytes) -> None:
    """Send until done or until the server, having answered, stops reading."""
    view = memoryview(data)
    while view:
        try:
            sent = client.send(view[:65536])
        except (BrokenPipeError, ConnectionResetError):
            return
        view = view[sent:]


def assert_refusal(response: bytes, status: int, error: str) -> None:
    assert status_of(response) == status, response[:200]
    assert b"connection: close" in response.lower()
    assert json.loads(body_of(response))["error"] == error


def test_a_header_of_64_mib_gets_431_before_the_app_sees_it(calls: Calls) -> None:
    with ServerThread(calls.app(), TIGHT) as server, server.connect() as client:
        head = b"GET /echo HTTP/1.1\r\nHost: test\r\nX-Big: "
        client.settimeout(20)
        send_all_tolerating_a_close(client, head + b"a" * (64 * 1024 * 1024))
        response = read_response(client)
    assert_refusal(response, 431, "RequestHeadersTooLarge")
    assert b"exceeds 2048 bytes" in response
    assert calls.seen == []


def test_a_head_just_within_the_byte_limit_reaches_the_app(calls: Calls) -> None:
    bare = request(headers={"Connection": "close", "X-Fill": ""})
    fill = "f" * (TIGHT.max_header_bytes - len(bare))
    with ServerThread(calls.app(), TIGHT) as server:
        with server.connect() as client:
            client.sendall(request(headers={"Connection": "close", "X-Fill": fill}))
            assert status_of(read_response(client)) == 200
        with server.connect() as client:
            client.sendall(request(headers={"Connection": "close", "X-Fill": fill + "f"}))
            assert_refusal(read_response(client), 431, "RequestHeadersTooLarge")
    assert len(calls.seen) == 1


def test_too_many_header_fields_get_431(calls: Calls) -> None:
    allowed = {f"X-H{n}": "v" for n in range(TIGHT.max_headers - 2)}  # plus Host, Connection
    with ServerThread(calls.app(), TIGHT) as server:
        with server.connect() as client:
            client.sendall(request(headers={"Connection": "close", **allowed}))
            assert status_of(read_response(client)) == 200
        with server.connect() as client:
            client.sendall(request(headers={"Connection": "close", **allowed, "X-One": "more"}))
            response = read_response(client)
    assert_refusal(response, 431, "RequestHeadersTooLarge")
    assert b"more than 16 header fields" in response
    assert len(calls.seen) == 1


def test_headers_that_stop_arriving_get_408_and_a_close(calls: Calls) -> None:
    with ServerThread(calls.app(), TIGHT) as server, server.connect() as client:
        client.sendall(b"GET /echo HTTP/1.1\r\nHost: test\r\nX-Slow: dri")
        response = read_response(client)
    assert_refusal(response, 408, "RequestTimeout")
    assert b"headers did not arrive in time" in response
    assert calls.seen == []


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(calls: Calls) -> None:
    with ServerThread(calls.app(), TIGHT) as server, server.connect() as client:
        assert read_response(client) == b""


def test_a_body_that_stops_arriving_gets_408_and_the_app_a_disconnect(calls: Calls) -> None:
    with ServerThread(calls.app(), TIGHT) as server, server.connect() as client:
        client.sendall(request(body=b"x" * 100)[:-90])
        response = read_response(client)
    assert_refusal(response, 408, "RequestTimeout")
    assert b"body did not arrive in time" in response
    assert calls.seen == [], "the app read a disconnect, not a short body"


def test_a_slow_app_is_not_cut_by_the_client_timeouts() -> None:
    async def slow(request: Request) -> JSONResponse:
        body = await request.body()
        await asyncio.sleep(TIGHT.body_timeout_s + TIGHT.header_timeout_s + 0.5)
        return JSONResponse({"bytes": len(body)})

    app = Starlette(routes=[Route("/slow", slow, methods=["POST"])])
    with ServerThread(app, TIGHT) as server, server.connect() as client:
        client.sendall(request("/slow", {"Connection": "close"}, body=b"abc"))
        response = read_response(client)
    assert status_of(response) == 200
    assert json.loads(body_of(response)) == {"bytes": 3}


def test_a_client_waiting_for_100_continue_is_not_cut_while_the_app_has_not_asked() -> None:
    async def late_reader(request: Request) -> JSONResponse:
        await asyncio.sleep(TIGHT.header_timeout_s + TIGHT.body_timeout_s + 0.5)
        return JSONResponse({"bytes": len(await request.body())})

    app = Starlette(routes=[Route("/late", late_reader, methods=["POST"])])
    head = request("/late", {"Connection": "close", "Expect": "100-continue"}, body=b"abc")[:-3]
    with ServerThread(app, TIGHT) as server, server.connect() as client:
        client.sendall(head)
        assert client.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        client.sendall(b"abc")
        response = read_response(client)
    assert status_of(response) == 200
    assert json.loads(body_of(response)) == {"bytes": 3}


def test_a_kept_alive_connection_gets_fresh_deadlines_for_each_request(calls: Calls) -> None:
    server_settings = TIGHT.model_copy(update={"keepalive_timeout_s": 5})
    with ServerThread(calls.app(), server_settings) as server, server.connect() as client:
        for n in range(2):
            client.sendall(request(f"/echo?n={n}", body=b"hello"))
            assert status_of(client.recv(65536)) == 200
            # Idle for longer than the header and body timeouts: only keep-alive's applies.
            time.sleep(TIGHT.header_timeout_s + TIGHT.body_timeout_s)
        client.sendall(request(headers={"Connection": "close"}))
        assert status_of(read_response(client)) == 200
    assert len(calls.seen) == 3


def test_a_unix_socket_peer_has_its_credentials_in_the_scope(calls: Calls, tmp_path: Path) -> None:
    listener = unix_listener(tmp_path / "s.sock")
    mine = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}
    with ServerThread(calls.app(), listener=listener) as server, server.connect() as client:
        client.sendall(request(headers={"Connection": "close"}))
        response = read_response(client)
    assert json.loads(body_of(response))["peer"] == mine


def test_a_websocket_on_the_unix_socket_has_its_peer_in_the_scope(
    calls: Calls, tmp_path: Path
) -> None:
    from websockets.sync.client import unix_connect

    path = tmp_path / "s.sock"
    with (
        ServerThread(calls.app(), listener=unix_listener(path)),
        unix_connect(str(path), uri="ws://test/ws") as websocket,
    ):
        answer = json.loads(websocket.recv(timeout=10))
    assert answer["peer"] == {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}


def test_a_tcp_peer_has_no_credentials(calls: Calls) -> None:
    with ServerThread(calls.app()) as server, server.connect() as client:
        client.sendall(request(headers={"Connection": "close"}))
        assert json.loads(body_of(read_response(client)))["peer"] is None


def test_a_graceful_stop_answers_a_connection_accepted_before_it(calls: Calls) -> None:
    with ServerThread(calls.app()) as server, server.connect() as client:
        wait_for(lambda: bool(server.server.server_state.connections), 10, "the accept")
        server.server.should_exit = True
        wait_for(lambda: not server.server.servers[0].is_serving(), 10, "the stop to begin")
        client.sendall(request())
        response = read_response(client)
    assert status_of(response) == 200
    assert b"connection: close" in response.lower()


# --- one write per response ---------------------------------------------------------------


class RecordingTransport:
    """The parts of a transport the coalescing writer uses, recording its writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def coalescing() -> tuple[Any, RecordingTransport]:
    from hostcore.protocol import _Coalescing

    transport = RecordingTransport()
    return _Coalescing(transport, asyncio.get_running_loop()), transport  # type: ignore[arg-type]


async def test_a_head_and_body_written_in_one_turn_leave_in_one_write() -> None:
    writer, transport = await coalescing()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    writer.write(b"ok")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    await asyncio.sleep(0)  # the end-of-turn flush finds nothing held
    assert len(transport.writes) == 1


async def test_what_is_held_leaves_at_the_end_of_the_turn_in_order() -> None:
    writer, transport = await coalescing()
    writer.write(b"head")
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"head"]
    writer.write(b"chunk-1")
    writer.write(b"chunk-2")
    writer.write(b"chunk-3")
    await asyncio.sleep(0)
    assert b"".join(transport.writes) == b"headchunk-1chunk-2chunk-3"


async def test_a_close_sends_what_is_held_first_and_a_closed_transport_gets_nothing() -> None:
    writer, transport = await coalescing()
    writer.write(b"last words")
    writer.close()
    assert transport.writes == [b"last words"] and transport.closed
    writer.write(b"too late")
    await asyncio.sleep(0)
    assert transport.writes == [b"last words"]


def test_a_streamed_response_s_head_arrives_before_its_body_is_produced() -> None:
    """The head is not held for the body: a client that waits for the head (an event
    stream) gets it while the app waits for the client."""
    head_seen = asyncio.Event()

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await head_seen.wait()  # set only once the client has the head
        await send({"type": "http.response.body", "body": b"data", "more_body": False})

    with ServerThread(stream) as server, server.connect() as client:
        client.sendall(request("/", {"Connection": "close"}))
        head = client.recv(65536)
        assert status_of(head) == 200 and b"transfer-encoding: chunked" in head.lower()
        loop = server.server.servers[0].get_loop()  # type: ignore[union-attr]
        loop.call_soon_threadsafe(head_seen.set)
        rest = read_response(client)
    assert b"data" in head + rest


class WireTransport(RecordingTransport):
    """A transport for driving the protocol directly: writes, closes and EOF in order."""

    def write(self, data: bytes) -> None:
        self.writes.append(b"<WRITE AFTER CLOSE>" if self.closed else bytes(data))

    def close(self) -> None:
        self.writes.append(b"<CLOSE>")
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.writes.append(b"<EOF>")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.mark.parametrize(
    ("method", "streamed", "then", "expected"),
    [
        # A stop after a whole response: the connection is kept for the stopping grace (a
        # request already on its way is answered, with Connection: close), not reset.
        ("HEAD", False, "shutdown", [b"HTTP/1.1 200 OK"]),
        ("GET", True, "shutdown", [b"HTTP/1.1 200 OK", b"1\r\na\r\n", b"0\r\n\r\n"]),
        ("HEAD", False, "bad bytes", [b"HTTP/1.1 200 OK", b"HTTP/1.1 400", b"<CLOSE>"]),
    ],
    ids=["head-then-stop", "stream-then-stop", "head-then-garbage"],
)
async def test_what_the_protocol_writes_or_closes_itself_comes_after_what_a_response_held(
    method: str, streamed: bool, then: str, expected: list[bytes]
) -> None:
    """A response's last bytes may be held until the end of the turn (a HEAD answer has no
    body write; a stream's last chunk follows a yield): a close or an answer the protocol
    makes in the same turn (a graceful stop, a parse error) sends them first."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from hostcore.protocol import server_protocols

    protocol: Any = None

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if streamed:
            await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": b""})
        if then == "shutdown":
            protocol.shutdown()
        else:
            protocol.data_received(b"\x00garbage\r\n\r\n")

    loop = asyncio.get_running_loop()
    config = Config(app=app, lifespan="off", log_level="critical")
    protocol = server_protocols(ServerSettings())["http"](config, ServerState(), {}, _loop=loop)
    transport = WireTransport()
    protocol.connection_made(transport)
    protocol.data_received(f"{method} / HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(transport.writes) == len(expected), transport.writes
    for written, start in zip(transport.writes, expected, strict=True):
        assert written.startswith(start), transport.writes
    if then == "shutdown":
        assert protocol.hostcore.stopping  # closed when the grace ends, if nothing came

"""A real uvicorn server in a thread of the test process, on loopback or a unix socket.

For tests of what happens on the wire (hostcore.protocol, the log sinks) without
the seconds a server process takes to start. The server stops when the ``with``
block ends: its thread is joined, bounded in time.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from hostcore.config import ServerSettings
from hostcore.protocol import server_protocols
from tests.conftest import wait_for

START_TIMEOUT_S = 10
STOP_TIMEOUT_S = 20


def loopback_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(64)
    return sock


class ServerThread:
    def __init__(
        self,
        app: Any,
        server: ServerSettings | None = None,
        *,
        listener: socket.socket | None = None,
        **config: Any,
    ) -> None:
        self.listener = listener or loopback_listener()
        options = {
            "log_config": None,
            "lifespan": "off",
            "access_log": False,
            "timeout_graceful_shutdown": 5,
            **server_protocols(server or ServerSettings()),
            **config,
        }
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.listener]}, daemon=True
        )

    @property
    def address(self) -> Any:
        return self.listener.getsockname()

    def connect(self) -> socket.socket:
        family = self.listener.family
        client = socket.socket(family, socket.SOCK_STREAM)
        client.settimeout(STOP_TIMEOUT_S)
        client.connect(self.address)
        return client

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for(lambda: self.server.started, START_TIMEOUT_S, "the server thread to start")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT_S)
        assert not self.thread.is_alive(), "the server thread did not stop"


def read_response(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]

"""Netlink sockets of pyroute2's async classes, received through ``loop.add_reader``.

pyroute2 receives through ``loop.create_datagram_endpoint``, which uvloop (the
servers' event loop) refuses for a netlink socket ("cannot open a UDP handle,
invalid family 16"). :func:`with_reader_endpoint` gives a pyroute2 socket class
whose endpoint reads the same non-blocking socket with ``add_reader`` instead
and feeds pyroute2's own protocol object, so parsing and request matching stay
pyroute2's, on every event loop. The network plugin (rtnetlink) and the Wi-Fi
plugin (nl80211) both build on it; nothing here imports pyroute2.
"""

from __future__ import annotations

import asyncio
import select
import socket
from typing import Any

_RECEIVE_BYTES = 256 * 1024  # what asyncio's own datagram transport reads at once
_DATAGRAMS_PER_WAKE = 64
_NLMSG_HEADER_BYTES = 16


class ReaderTransport:
    """The part of a datagram transport pyroute2 uses (its protocol is fed, then it is
    aborted and closed), over ``loop.add_reader``: works on every event loop.

    ``datagrams`` counts what arrived, as it arrives, and :meth:`pending` says whether
    more is waiting in the socket: a subscriber can tell "something changed" at once,
    before pyroute2's queue is read."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: Any):
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._buffer = bytearray(_RECEIVE_BYTES)
        self._fd: int | None = sock.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self.datagrams = 0
        sock.setblocking(False)
        loop.add_reader(self._fd, self._readable)
        protocol.connection_made(self)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def pending(self) -> bool:
        return self._fd is not None and bool(self._poll.poll(0))

    def _readable(self) -> None:
        # A bounded batch per wake-up: a flood of notifications cannot hold the loop.
        for _ in range(_DATAGRAMS_PER_WAKE):
            if self._fd is None:
                return
            try:
                size = self._sock.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.datagrams += 1  # ENOBUFS: some were lost
                self._protocol.error_received(error)
                return
            self.datagrams += 1
            if size >= _NLMSG_HEADER_BYTES:  # the kernel may send an empty datagram
                self._protocol.datagram_received(bytes(self._buffer[:size]), None)

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._fd = None


def with_reader_endpoint(base: type[Any]) -> type[Any]:
    """``base`` (a pyroute2 async socket class) receiving through :class:`ReaderTransport`."""
    from pyroute2.netlink.core import CoreDatagramProtocol

    class ReaderSocket(base):  # type: ignore[misc]
        async def setup_endpoint(self) -> None:
            if getattr(self.local, "transport", None) is not None:
                return
            protocol = CoreDatagramProtocol(
                self.connection_lost, self.enqueue, self._error_event, self.status
            )
            self.local.transport = ReaderTransport(self.event_loop, self.socket, protocol)
            self.local.protocol = protocol

    ReaderSocket.__name__ = ReaderSocket.__qualname__ = f"Reader{base.__name__}"
    return ReaderSocket

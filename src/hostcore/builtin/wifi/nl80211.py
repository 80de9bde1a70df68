"""nl80211 through pyroute2's async generic-netlink socket, on every event loop.

* **The socket** is pyroute2's ``AsyncNL80211`` receiving through
  :mod:`hostcore.netlink_reader` (uvloop refuses pyroute2's own endpoint for
  netlink), with a marshal that fixes two things pyroute2 0.9.7 drops: a dump
  that fails while running ends with ``NLMSG_DONE`` carrying a negative errno
  (raised here, where pyroute2 answers a silently empty list), and
  ``NLM_F_DUMP_INTR`` (the kernel's data changed mid-dump, as when a scan ends:
  raised as EINTR, and the dump is made again).
* **One socket per event loop**, requests in turn, as the network plugin keeps
  its rtnetlink socket; a socket that failed itself is dropped.
* **No nl80211** (a kernel without cfg80211, as on the machines the tests run
  on): the family lookup answers ENOENT, which is a 503 naming what is missing,
  not a "no such link".
* **Tests** hand in a socket-shaped fake kernel through ``socket_factory``
  (pyroute2's ``use_socket``); production opens a real netlink socket.
* pyroute2 is imported on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from hostcore.errors import Conflict, HostcoreError, NotFound, Unavailable, UpstreamFailed
from hostcore.netlink_reader import with_reader_endpoint
from hostcore.netns import socket_in

NO_NL80211 = "Wi-Fi is not available: the kernel has no nl80211 (cfg80211 is not loaded)"
DUMP_ATTEMPTS = 3  # a dump interrupted by a change is made again, this many times at most
NETLINK_GENERIC = 16
_DONE_WITH_ERRNO_BYTES = 20  # an nlmsghdr and the int of NLMSG_DONE's payload


@functools.cache
def _socket_class() -> Any:
    # pyroute2 logs a traceback at WARNING for every attribute it cannot decode, and a
    # neighbour's access point decides what its information elements hold (hostcore
    # reads them from the raw bytes): that is no warning about this host.
    logging.getLogger("pyroute2.netlink").setLevel(logging.ERROR)

    from pyroute2.netlink import NLM_F_ACK_TLVS, NLM_F_DUMP_INTR, NLMSG_DONE, nlmsg
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nl80211 import AsyncNL80211, MarshalNl80211

    class Marshal(MarshalNl80211):  # type: ignore[misc]
        def parse_one_message(
            self, key: int, flags: int, sequence_number: int, data: Any, offset: int, length: int
        ) -> Any:
            if (
                key == NLMSG_DONE
                and length >= _DONE_WITH_ERRNO_BYTES
                and not flags & NLM_F_ACK_TLVS
            ):
                (code,) = struct.unpack_from("=i", data, offset + 16)
                if code < 0:
                    done = nlmsg(data, offset=offset)
                    done.decode()
                    done["header"]["error"] = NetlinkError(-code, "dump failed")
                    return done
            message = super().parse_one_message(key, flags, sequence_number, data, offset, length)
            if flags & NLM_F_DUMP_INTR and message["header"].get("error") is None:
                message["header"]["error"] = NetlinkError(errno.EINTR, "dump interrupted")
            return message

    class Nl80211Socket(with_reader_endpoint(AsyncNL80211)):  # type: ignore[misc]
        marshal_class = Marshal

    return Nl80211Socket


def command(name: str) -> int:
    """The number of ``NL80211_CMD_<name>``."""
    from pyroute2.netlink.nl80211 import NL80211_NAMES

    number: int = NL80211_NAMES[f"NL80211_CMD_{name}"]
    return number


def nl80211_error(error: BaseException, action: str) -> HostcoreError:
    """What a refused nl80211 request means for the caller (the kernel's text is not kept)."""
    code = getattr(error, "code", None)
    if code in (errno.ENODEV, errno.ENOENT):
        return NotFound(f"cannot {action}: no such wireless interface")
    if code == errno.EBUSY:
        return Conflict(f"cannot {action}: the interface is busy")
    if code in (errno.EPERM, errno.EACCES):
        return Unavailable(f"cannot {action}: hostcore lacks CAP_NET_ADMIN")
    if code in (errno.EOPNOTSUPP, errno.EINVAL):
        return Unavailable(f"cannot {action}: the driver does not support it")
    name = errno.errorcode.get(code, "an error") if isinstance(code, int) else "an error"
    return UpstreamFailed(f"the kernel refused to {action} ({name})")


class Nl80211:
    """nl80211 requests over one kept socket per event loop.

    ``socket_factory`` gives the socket object pyroute2 talks through (tests: a fake
    kernel's); None opens a real netlink socket, inside ``namespace`` when given (a
    named namespace's file). ``timeout_s`` bounds each request.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        socket_factory: Callable[[], Any] | None = None,
        namespace: Path | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.socket_factory = socket_factory
        self.namespace = namespace
        self._kept: tuple[Any, Any, asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    async def _open(self) -> tuple[Any, Any]:
        given = self.socket_factory() if self.socket_factory is not None else None
        if given is None and self.namespace is not None:
            try:
                fd = await asyncio.to_thread(socket_in, self.namespace, NETLINK_GENERIC)
            except OSError as error:
                raise Unavailable("cannot enter the network namespace") from error
            given = socket.socket(fileno=fd)
        socket_class = _socket_class()
        nl = socket_class(use_socket=given) if given is not None else socket_class()
        try:
            async with asyncio.timeout(self.timeout_s):
                await nl.bind()  # the family lookup
        except BaseException as error:
            nl.close()
            if given is not None:
                given.close()
            if isinstance(error, asyncio.CancelledError):
                raise
            if getattr(error, "code", None) == errno.ENOENT:
                raise Unavailable(NO_NL80211) from error
            if isinstance(error, TimeoutError):
                raise Unavailable("nl80211 did not answer the family lookup in time") from error
            raise Unavailable(f"cannot open nl80211 ({type(error).__name__})") from error
        return nl, given

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        while True:
            kept = self._kept
            if kept is None or kept[2] is not loop:
                nl, given = await self._open()
                if self._kept is None or self._kept[2] is not loop:
                    self.close()
                    self._kept = (nl, given, loop, asyncio.Lock())
                else:
                    nl.close()
                    if given is not None:
                        given.close()
                continue
            lock = kept[3]
            await lock.acquire()
            if self._kept is kept:
                break
            lock.release()
        try:
            yield kept[0]
        except BaseException as error:
            # The kernel's refusal (an errno, raised as a hostcore error from it) leaves the
            # socket as it was; anything else (the socket failed, a request was given up
            # midway with its answer still queued) gets a fresh one next time. So does an
            # interrupted dump: its rest is still coming, and until it is read the kernel
            # refuses the socket another dump (EBUSY).
            refusal = error.__cause__ if isinstance(error, HostcoreError) else error
            code = getattr(refusal, "code", None)
            if (not isinstance(code, int) or code == errno.EINTR) and self._kept is kept:
                self.close()
            raise
        finally:
            lock.release()

    async def _ask(
        self, name: str, attrs: Sequence[tuple[str, Any]], flags: int, action: str
    ) -> list[Any]:
        """Send ``NL80211_CMD_<name>`` and read its whole answer (a dump's messages, or a
        doit's reply and ACK), the kernel's refusal turned into a hostcore error."""
        from pyroute2.netlink.nl80211 import nl80211cmd

        message = nl80211cmd()
        message["cmd"] = command(name)
        message["attrs"] = [list(attr) for attr in attrs]
        async with self.session() as nl:
            try:
                async with asyncio.timeout(self.timeout_s):
                    answer = await nl.nlm_request(message, msg_type=nl.prid, msg_flags=flags)
                    return [found async for found in answer]
            except TimeoutError as error:
                raise Unavailable(f"nl80211 did not answer in time ({action})") from error
            except Exception as error:
                raise nl80211_error(error, action) from error

    async def dump(
        self, name: str, attrs: Sequence[tuple[str, Any]] = (), *, action: str
    ) -> list[Any]:
        """Every message of the ``NL80211_CMD_<name>`` dump; made again when interrupted."""
        from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST

        for attempt in range(DUMP_ATTEMPTS):
            try:
                return await self._ask(name, attrs, NLM_F_REQUEST | NLM_F_DUMP, action)
            except HostcoreError as error:
                interrupted = getattr(error.__cause__, "code", None) == errno.EINTR
                if not interrupted or attempt == DUMP_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def request(self, name: str, attrs: Sequence[tuple[str, Any]], *, action: str) -> None:
        """``NL80211_CMD_<name>``, answered by the kernel's ACK (or its refusal)."""
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST

        await self._ask(name, attrs, NLM_F_REQUEST | NLM_F_ACK, action)

    @contextlib.asynccontextmanager
    async def listen(self, groups: Sequence[str]) -> AsyncIterator[AsyncIterator[Any]]:
        """nl80211's notifications of the multicast ``groups`` (scan, mlme, config …),
        on a socket of their own that joins them before the block runs."""
        listener, given = await self._open()

        async def messages() -> AsyncIterator[Any]:
            while True:  # pyroute2 hands multicast over a datagram at a time
                async for message in listener.get():
                    yield message

        try:
            for group in groups:
                listener.add_membership(group)
            yield messages()
        finally:
            listener.close()
            if given is not None:
                given.close()

    async def scan(self, ifindex: int, *, timeout_s: float) -> bool:
        """Trigger a scan on ``ifindex`` and wait for its end: True when the kernel has new
        results, False when it aborted the scan. ``Unavailable`` after ``timeout_s``.

        pyroute2's ``IW.scan`` waits without a timeout and ignores an abort. Here the
        listener joins the "scan" group *before* the trigger is sent (the end may come
        before the trigger's answer is read), and only this interface's events count
        (every interface's scans are multicast), from the kernel's "scan started" on (the
        end of a scan someone else made just before is not this one's)."""
        ended = {command("NEW_SCAN_RESULTS"): True, command("SCAN_ABORTED"): False}
        started = command("TRIGGER_SCAN")
        async with self.listen(["scan"]) as events:
            await self.request(
                "TRIGGER_SCAN", [("NL80211_ATTR_IFINDEX", ifindex)], action="start a scan"
            )
            ours = False  # the end of a scan that ended before ours began is not ours
            try:
                async with asyncio.timeout(timeout_s):
                    async for event in events:
                        if event.get_attr("NL80211_ATTR_IFINDEX") != ifindex:
                            continue
                        ours = ours or event["cmd"] == started
                        if ours and event["cmd"] in ended:
                            return ended[event["cmd"]]
            except TimeoutError as error:
                raise Unavailable(f"the scan did not end within {timeout_s:g} s") from error
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            kept[0].close()
            if kept[1] is not None:
                kept[1].close()

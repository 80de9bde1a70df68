"""Rtnetlink through pyroute2's async API, in the device's own namespace or a named one.

* **Async only.** ``AsyncIPRoute`` runs in the event loop; pyroute2's sync
  classes cannot run inside one.
* **Named namespaces without a process.** pyroute2's ``netns=`` forks a child
  behind hostcore's runner. Instead :func:`hostcore.netns.socket_in` opens the
  netlink socket inside the namespace, and ``AsyncIPRoute(fileno=…)`` talks to
  that namespace from the loop.
* **Any event loop.** pyroute2 receives through ``create_datagram_endpoint``,
  which uvloop (the servers' loop) refuses for a netlink socket: the socket class
  receives through ``add_reader`` instead (:mod:`hostcore.netlink_reader`).
* **Imported on first use.** pyroute2 is large; a server that never answers a
  network request never loads it.
* **Kernel errors become hostcore errors** here, by errno, with details that say
  what was asked, never what the kernel sent back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostcore.builtin.network.models import AddressRead, NeighbourRead, RouteRead
from hostcore.builtin.network.rtnl import (
    Link,
    Message,
    parse_address,
    parse_link,
    parse_neighbour,
    parse_route,
)
from hostcore.errors import Conflict, HostcoreError, NotFound, Unavailable, UpstreamFailed
from hostcore.netlink_reader import ReaderTransport, with_reader_endpoint
from hostcore.netns import namespace_names, socket_in

if TYPE_CHECKING:
    from pyroute2 import AsyncIPRoute

THIS_NAMESPACE = Path("/proc/self/ns/net")
# RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR (linux/rtnetlink.h)
LINK_AND_ADDRESS_GROUPS = 0x1 | 0x10 | 0x100


@functools.cache
def _route_socket_class() -> Any:
    from pyroute2 import AsyncIPRoute

    return with_reader_endpoint(AsyncIPRoute)


def same_namespace(a: Path, b: Path) -> bool:
    """Whether two namespace files (``/run/netns/x``, ``/proc/self/ns/net``) are one
    namespace: the same inode of the namespace filesystem."""
    try:
        first, second = a.stat(), b.stat()
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


class NotSupported(Unavailable):
    """The kernel lacks what was asked for (EOPNOTSUPP: a module or feature absent)."""


def kernel_error(error: BaseException, action: str) -> HostcoreError:
    """What a refused netlink request means for the caller."""
    code = getattr(error, "code", None)
    if not isinstance(code, int):
        code = getattr(error, "errno", None)
    if code in (errno.ENODEV, errno.ENOENT):
        return NotFound(f"cannot {action}: no such link")
    if code in (errno.EEXIST, errno.EBUSY):
        return Conflict(f"cannot {action}: {os.strerror(code).lower()}")
    if code in (errno.EPERM, errno.EACCES):
        return Unavailable(f"cannot {action}: hostcore lacks CAP_NET_ADMIN")
    if code == errno.EOPNOTSUPP:
        return NotSupported(f"cannot {action}: the kernel does not support it")
    name = errno.errorcode.get(code, "an error") if isinstance(code, int) else "an error"
    return UpstreamFailed(f"the kernel refused to {action} ({name})")


class Netlink:
    """Rtnetlink sessions: one socket kept for the device's own namespace (per event loop,
    requests in turn), a fresh one per request for a named namespace.

    ``own`` replaces this process's namespace as "the device's own" (tests point it at a
    namespace they made); production leaves it None.
    """

    def __init__(self, netns_dir: Path, *, own: Path | None = None) -> None:
        self.netns_dir = netns_dir
        self.own = own
        self._kept: AsyncIPRoute | None = None
        self._kept_loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    def namespace_path(self, name: str) -> Path:
        if name not in namespace_names(self.netns_dir):
            raise NotFound(f"no network namespace named {name}")
        return self.netns_dir / name

    def is_own(self, netns: str | None) -> bool:
        """Whether ``netns`` names the device's own namespace (None does; so may a name,
        when hostcore itself runs in a named namespace)."""
        if netns is None:
            return True
        return same_namespace(self.namespace_path(netns), self.own or THIS_NAMESPACE)

    async def _open(self, namespace: Path | None) -> AsyncIPRoute:
        route_socket = _route_socket_class()
        if namespace is None:
            route: AsyncIPRoute = route_socket()
            return route
        try:
            fd = await asyncio.to_thread(socket_in, namespace, socket.NETLINK_ROUTE)
        except OSError as error:
            raise Unavailable("cannot enter the network namespace") from error
        route = route_socket(fileno=fd)
        return route

    @contextlib.asynccontextmanager
    async def session(self, netns: str | None) -> AsyncIterator[AsyncIPRoute]:
        """A socket for ``netns`` (None: the device's own) for the length of the block."""
        if netns is not None:
            route = await self._open(self.namespace_path(netns))
            try:
                yield route
            finally:
                route.close()
            return
        loop = asyncio.get_running_loop()
        while True:
            if self._kept is None or self._kept_loop is not loop:
                fresh = await self._open(self.own)
                if self._kept is None or self._kept_loop is not loop:
                    self.close()
                    self._kept, self._kept_loop, self._lock = fresh, loop, asyncio.Lock()
                else:
                    fresh.close()  # another request made one while this one waited
            kept, lock = self._kept, self._lock
            assert lock is not None
            await lock.acquire()
            if kept is self._kept:
                break
            lock.release()  # replaced while this request waited: take the new one's turn
        try:
            yield kept
        except asyncio.CancelledError:
            # A request given up mid-answer (its caller went away) leaves the rest of the
            # answer queued in pyroute2: a fresh socket next time, not a growing backlog.
            if kept is self._kept:
                self.close()
            raise
        finally:
            lock.release()

    async def dump(self, netns: str | None, what: str) -> list[Message]:
        """Every ``link``, ``addr``, ``route`` or ``neigh`` entry; filtering is the caller's
        (pyroute2's filters differ by object type and version)."""
        async with self.session(netns) as route:
            try:
                return [message async for message in await getattr(route, what)("dump")]
            except Exception as error:
                self._discard_if_broken(route, error)
                raise kernel_error(error, f"list {what}s") from error

    async def request(
        self, netns: str | None, action: str, call: Callable[[AsyncIPRoute], Awaitable[Any]]
    ) -> Any:
        """``call(socket)``, its kernel errors turned into hostcore's (``action`` names it)."""
        async with self.session(netns) as route:
            try:
                return await call(route)
            except HostcoreError:
                raise
            except Exception as error:
                self._discard_if_broken(route, error)
                raise kernel_error(error, action) from error

    def _discard_if_broken(self, route: AsyncIPRoute, error: BaseException) -> None:
        """Stop keeping the own namespace's socket when it failed itself (anything but the
        kernel's answer to a request, which carries an errno as ``code``)."""
        if route is self._kept and not isinstance(getattr(error, "code", None), int):
            self.close()

    # -- what the service asks --

    async def links(self, netns: str | None) -> list[Link]:
        return [link for m in await self.dump(netns, "link") if (link := parse_link(m))]

    async def addresses(self, netns: str | None) -> list[tuple[int, AddressRead]]:
        return [found for m in await self.dump(netns, "addr") if (found := parse_address(m))]

    async def routes(self, netns: str | None, names: Mapping[int, str]) -> list[RouteRead]:
        return [r for m in await self.dump(netns, "route") if (r := parse_route(m, names))]

    async def neighbours(self, netns: str | None, names: Mapping[int, str]) -> list[NeighbourRead]:
        return [n for m in await self.dump(netns, "neigh") if (n := parse_neighbour(m, names))]

    async def link(self, netns: str | None, index: int) -> Link:
        found = await self.request(
            netns, "read the link", lambda route: route.link("get", index=index)
        )
        link = parse_link(found[0]) if found else None
        if link is None:
            raise NotFound("cannot read the link: no such link")
        return link

    async def set_up(self, netns: str | None, index: int, up: bool) -> None:
        state = "up" if up else "down"
        await self.request(
            netns,
            f"set the link {state}",
            lambda route: route.link("set", index=index, state=state),
        )

    async def add_vlan(self, netns: str | None, parent: int, name: str, vlan_id: int) -> None:
        await self.request(
            netns,
            "add the VLAN",
            lambda route: route.link("add", ifname=name, kind="vlan", link=parent, vlan_id=vlan_id),
        )

    async def delete_link(self, netns: str | None, index: int) -> None:
        await self.request(netns, "delete the link", lambda route: route.link("del", index=index))

    async def route_interface(self, address: str, *, source: str | None = None) -> int | None:
        """The index of the interface the device's own namespace reaches ``address``
        through, from ``source`` when given (policy rules may choose by source): the
        route ``ip route get`` shows."""
        if source is not None:
            try:
                return await self._route_get(address, source)
            except HostcoreError:
                pass  # not an address of this namespace (any more): the plain lookup
        return await self._route_get(address, None)

    async def _route_get(self, address: str, source: str | None) -> int | None:
        options = {"dst": address} if source is None else {"dst": address, "src": source}
        found = await self.request(
            None, "look up the route", lambda route: route.route("get", **options)
        )
        index = found[0].get("RTA_OIF") if found else None
        return index if isinstance(index, int) else None

    async def watch(
        self,
        on_message: Callable[[Message], None],
        *,
        netns: str | None = None,
        on_bound: Callable[[ReaderTransport], None] | None = None,
    ) -> None:
        """Call ``on_message`` for each link and address change until cancelled; ``on_bound``
        once subscribed, with the transport that counts what arrives (a change after that
        is reported: the socket queues it).

        Raises when notifications were lost (the socket's queue overflowed: ENOBUFS)."""
        namespace = self.own if netns is None else self.namespace_path(netns)
        route = await self._open(namespace)
        try:
            await route.bind(groups=LINK_AND_ADDRESS_GROUPS)
            await route.setup_endpoint()
            if on_bound is not None:
                on_bound(route.local.transport)
            while True:
                async for message in route.get():
                    on_message(message)
        finally:
            route.close()

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()
        self._kept = None
        self._kept_loop = None

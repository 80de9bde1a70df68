"""The device's own links and addresses, kept in memory and current by the kernel.

Every consumer polls the interface list, and a netlink dump decoded by pyroute2
costs milliseconds of CPU per request on a Pi. So the first read subscribes to
the kernel's link and address notifications (``RTMGRP_LINK``, ``RTMGRP_IPV4_IFADDR``,
``RTMGRP_IPV6_IFADDR``) and then dumps. The next read dumps again only if a
notification arrived since: counted as it is received, or still waiting in the
socket (one ``poll``), so a read that follows a change the kernel has made sees it
even before the notification is processed. The subscription comes first, so a
change made during the dump is never missed either.

If the subscription ends (a lost notification overflows its queue: ENOBUFS), the
table is stale until a read subscribes again, which the next read does before it
dumps. Counters are not kept: they change on every packet and are read when asked.
Named namespaces are dumped per request; only the device's own is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hostcore.builtin.network.models import AddressRead
from hostcore.builtin.network.netlink import Netlink
from hostcore.builtin.network.rtnl import Link, Message
from hostcore.netlink_reader import ReaderTransport

logger = logging.getLogger(__name__)

Listener = Callable[[Message], None]


@dataclass(frozen=True)
class Snapshot:
    version: tuple[int, int]
    taken_at: float  # monotonic: lifetimes in ``addresses`` count down from here
    links: list[Link]
    addresses: dict[int, list[AddressRead]]

    @property
    def names(self) -> dict[int, str]:
        return {link.index: link.name for link in self.links}


class LinkTable:
    def __init__(self, netlink: Netlink) -> None:
        self.netlink = netlink
        self.generation = 0  # bumped for what the feed cannot count
        self._feed: ReaderTransport | None = None
        self._snapshot: Snapshot | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._watch_loop: asyncio.AbstractEventLoop | None = None
        self._listeners: set[Listener] = set()
        self._dumping: asyncio.Lock | None = None

    def _changed(self, message: Message) -> None:
        for listener in list(self._listeners):
            listener(message)

    @contextlib.contextmanager
    def listening(self, listener: Listener) -> Iterator[None]:
        """``listener`` gets each notification while the block runs (the events source)."""
        self._listeners.add(listener)
        try:
            yield
        finally:
            self._listeners.discard(listener)

    async def watching(self) -> asyncio.Task[None]:
        """The subscription of this event loop, made (and waited for) when there is none."""
        loop = asyncio.get_running_loop()
        watcher = self._watcher
        if watcher is not None and self._watch_loop is loop and not watcher.done():
            return watcher
        if watcher is not None:
            watcher.cancel()
        bound: asyncio.Future[None] = loop.create_future()
        self._feed = None
        self._watcher = loop.create_task(self._watch(bound), name="hostcore-network-links")
        self._watch_loop = loop
        self._dumping = asyncio.Lock()
        self.generation += 1  # whatever happened before this subscription is unknown
        await asyncio.wait({bound, self._watcher}, return_when=asyncio.FIRST_COMPLETED)
        return self._watcher

    async def _watch(self, bound: asyncio.Future[None]) -> None:
        def subscribed(feed: ReaderTransport) -> None:
            self._feed = feed
            # A read while this subscription was being made may have dumped before a
            # change it will never be told about: nothing read before now is current.
            self.generation += 1
            bound.set_result(None)

        try:
            await self.netlink.watch(self._changed, on_bound=subscribed)
        except Exception:
            # Once per lost subscription that had worked; a subscription that cannot be
            # made at all (every read tries again) is logged at DEBUG, not per request.
            level = logging.WARNING if self._feed is not None else logging.DEBUG
            logger.log(level, "lost the kernel's link notifications; reading afresh", exc_info=True)
        finally:
            self._feed = None

    def version(self) -> tuple[int, int]:
        """Changes whenever the links or addresses may have: each time while unsubscribed."""
        feed = self._feed
        if feed is None or feed.closed or feed.pending():
            self.generation += 1
        return self.generation, feed.datagrams if feed is not None else 0

    async def snapshot(self) -> Snapshot:
        await self.watching()
        assert self._dumping is not None
        async with self._dumping:  # requests arriving together share one dump
            kept = self._snapshot
            version = self.version()
            if kept is not None and kept.version == version:
                return kept
            links = await self.netlink.links(None)
            addresses: dict[int, list[AddressRead]] = {}
            for index, address in await self.netlink.addresses(None):
                addresses.setdefault(index, []).append(address)
            self._snapshot = Snapshot(version, time.monotonic(), links, addresses)
            return self._snapshot

    def invalidate(self) -> None:
        """Dump again on the next read (after a change this process made itself)."""
        self.generation += 1

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self._watcher = None
        self._snapshot = None

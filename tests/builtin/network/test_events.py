"""``network.links``: the kernel's notifications, coalesced into one event per interface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from hostcore.builtin.network import _link_events
from hostcore.builtin.network.models import LinkEventRead
from hostcore.builtin.network.netlink import Netlink
from hostcore.builtin.network.schemas import NetworkSettings
from hostcore.builtin.network.service import NetworkService
from hostcore.config import RunnerSettings
from hostcore.netns import NETNS_DIR_DEFAULT
from hostcore.runner import Runner
from tests.builtin.network.netns import Netns

# Bounds a wait that only a missing event would reach.
EVENT_WAIT_S = 10.0


class Published:
    def __init__(self) -> None:
        self.events: list[LinkEventRead] = []
        self.arrived = asyncio.Event()

    def __call__(self, event: LinkEventRead) -> None:
        self.events.append(event)
        self.arrived.set()

    async def until(self, change: str, name: str) -> LinkEventRead:
        async with asyncio.timeout(EVENT_WAIT_S):
            while True:
                for event in self.events:
                    if (event.change, event.name) == (change, name):
                        return event
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def service(one_namespace: Netns, tmp_path: Path) -> AsyncIterator[NetworkService]:
    config = NetworkSettings(root=tmp_path)
    netlink = Netlink(NETNS_DIR_DEFAULT, own=one_namespace.path)
    made = NetworkService(config, Runner(RunnerSettings()), netlink=netlink)
    yield made
    await made.stop()


async def test_links_that_appear_change_and_go_are_published_with_their_state(
    one_namespace: Netns, service: NetworkService
) -> None:
    ns = one_namespace
    published = Published()
    app = SimpleNamespace(state=SimpleNamespace(network=service))
    source = asyncio.create_task(_link_events(app, published))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.2)  # subscribed before the first change
        await asyncio.to_thread(ns.ip, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        added = await published.until("added", "va")
        await asyncio.to_thread(ns.ip, "addr", "add", "10.90.0.1/24", "dev", "va")
        await asyncio.to_thread(ns.ip, "link", "set", "va", "up")
        changed = await published.until("changed", "va")
        await asyncio.to_thread(ns.ip, "link", "del", "va")
        removed = await published.until("removed", "va")
    finally:
        source.cancel()
    assert added.interface is not None and added.interface.kind == "veth"
    assert changed.interface is not None
    assert removed.interface is None and removed.index == added.index
    assert any(e.name == "vb" and e.change == "added" for e in published.events)


async def test_changes_while_the_subscription_was_lost_are_published_once_it_is_back(
    one_namespace: Netns, service: NetworkService
) -> None:
    ns = one_namespace
    ns.ip("link", "add", "gone0", "type", "veth", "peer", "name", "gone1")
    published = Published()
    app = SimpleNamespace(state=SimpleNamespace(network=service))
    source = asyncio.create_task(_link_events(app, published))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.2)  # subscribed, the list seen
        watcher = await service.table.watching()
        watcher.cancel()  # as when notifications overflow the socket's queue
        await asyncio.gather(watcher, return_exceptions=True)
        await asyncio.to_thread(
            ns.ip, "link", "add", "lost0", "type", "veth", "peer", "name", "lost1"
        )
        await asyncio.to_thread(ns.ip, "link", "del", "gone0")
        added = await published.until("added", "lost0")
        removed = await published.until("removed", "gone0")
    finally:
        source.cancel()
    assert added.interface is not None and removed.interface is None

"""The device's own links kept in memory: one dump per change, never a stale read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hostcore.builtin.network.linktable import LinkTable
from hostcore.builtin.network.netlink import Netlink
from hostcore.builtin.network.rtnl import Link
from hostcore.builtin.network.schemas import NetworkSettings
from hostcore.builtin.network.service import NetworkService
from hostcore.config import RunnerSettings
from hostcore.netns import NETNS_DIR_DEFAULT
from hostcore.runner import Runner
from tests.builtin.network.netns import Netns


class CountingNetlink(Netlink):
    def __init__(self, netns_dir: Path, *, own: Path) -> None:
        super().__init__(netns_dir, own=own)
        self.dumps = 0

    async def links(self, netns: str | None) -> list[Link]:
        self.dumps += 1
        return await super().links(netns)


@pytest.fixture
async def table(one_namespace: Netns) -> AsyncIterator[LinkTable]:
    made = LinkTable(CountingNetlink(NETNS_DIR_DEFAULT, own=one_namespace.path))
    yield made
    made.close()
    made.netlink.close()


def dumps(table: LinkTable) -> int:
    assert isinstance(table.netlink, CountingNetlink)
    return table.netlink.dumps


async def test_reads_without_a_change_share_one_dump(table: LinkTable) -> None:
    first = await table.snapshot()
    again = await asyncio.gather(*(table.snapshot() for _ in range(10)))
    assert all(snapshot is first for snapshot in again)
    assert dumps(table) == 1


async def test_a_change_made_elsewhere_is_seen_by_the_very_next_read(
    one_namespace: Netns, table: LinkTable
) -> None:
    await table.snapshot()
    for number in range(5):
        # No await between the change and the read: the notification is still in the
        # socket or only just counted, never processed by the loop yet.
        one_namespace.ip(
            "link", "add", f"va{number}", "type", "veth", "peer", "name", f"vb{number}"
        )
        names = {link.name for link in (await table.snapshot()).links}
        assert f"va{number}" in names
        one_namespace.ip("link", "set", f"va{number}", "up")
        link = next(x for x in (await table.snapshot()).links if x.name == f"va{number}")
        assert link.admin_up


async def test_an_address_change_is_seen_too(one_namespace: Netns, table: LinkTable) -> None:
    await table.snapshot()
    one_namespace.ip("addr", "add", "10.99.0.1/8", "dev", "lo")
    addresses = (await table.snapshot()).addresses[1]
    assert "10.99.0.1" in {a.address for a in addresses}


async def test_without_its_subscription_the_table_reads_afresh_and_subscribes_again(
    one_namespace: Netns, table: LinkTable
) -> None:
    await table.snapshot()
    watcher = await table.watching()
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    one_namespace.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")

    assert "va" in {link.name for link in (await table.snapshot()).links}
    assert not (await table.watching()).done()


async def test_the_encoded_list_keeps_its_etag_until_a_change_and_lifetimes_count_down(
    one_namespace: Netns, tmp_path: Path
) -> None:
    netlink = Netlink(NETNS_DIR_DEFAULT, own=one_namespace.path)
    service = NetworkService(
        NetworkSettings(root=tmp_path), Runner(RunnerSettings()), netlink=netlink
    )
    try:
        first = await service.interfaces_encoded()
        assert (await service.interfaces_encoded()) is first
        one_namespace.ip("-6", "addr", "add", "2001:db8::9/64", "dev", "lo", "valid_lft", "600",
                         "preferred_lft", "600")  # fmt: skip
        changed = await service.interfaces_encoded()
        assert changed.etag != first.etag and b"2001:db8::9" in changed.body

        snapshot = await service.table.snapshot()
        later = service._from_snapshot(snapshot, {}, snapshot.taken_at + 100)
        address = next(a for i in later for a in i.addresses if a.address == "2001:db8::9")
        assert address.valid_lifetime_s is not None and 490 <= address.valid_lifetime_s <= 500
    finally:
        await service.stop()


class SlowToSubscribe(CountingNetlink):
    """Its subscription takes a while: reads arrive meanwhile, and so does a change."""

    def __init__(self, netns_dir: Path, *, own: Path) -> None:
        super().__init__(netns_dir, own=own)
        self.may_bind = asyncio.Event()

    async def watch(self, *args: Any, **kwargs: Any) -> None:
        await self.may_bind.wait()
        await super().watch(*args, **kwargs)


async def test_a_change_while_the_subscription_is_made_is_not_lost(one_namespace: Netns) -> None:
    netlink = SlowToSubscribe(NETNS_DIR_DEFAULT, own=one_namespace.path)
    table = LinkTable(netlink)
    try:
        first = asyncio.create_task(table.snapshot())  # starts subscribing, waits for it
        await asyncio.sleep(0)
        early = await table.snapshot()  # dumps before the subscription exists
        one_namespace.ip("link", "add", "late0", "type", "veth", "peer", "name", "late1")
        netlink.may_bind.set()
        await first
        assert "late0" not in {link.name for link in early.links}
        assert "late0" in {link.name for link in (await table.snapshot()).links}
    finally:
        table.close()
        netlink.close()

"""A link backend with 802.1Q VLANs, for the success path this machine's kernel cannot run.

The kernel here has no 8021q module, so adding a VLAN answers EOPNOTSUPP (the 503
path, tested against the real kernel). :class:`VlanNetlink` is the real
:class:`~hostcore.builtin.network.netlink.Netlink` of a test namespace with VLAN
links kept in memory on top (in its own namespace; named ones stay real), behaving
as the kernel's do: the parent must exist, a taken name or a (parent, id) pair
already in use is EEXIST, a VLAN is created down with its parent's MAC and MTU,
and deleting the parent deletes its VLANs.
"""

from __future__ import annotations

import errno
from pathlib import Path

from hostcore.builtin.network.models import InterfaceCounters
from hostcore.builtin.network.netlink import Netlink, kernel_error
from hostcore.builtin.network.rtnl import ARPHRD_ETHER, Link

IFF_BROADCAST_MULTICAST = 0x2 | 0x1000
FIRST_FAKE_INDEX = 1000
ZERO = InterfaceCounters(**dict.fromkeys(InterfaceCounters.model_fields, 0))


class VlanNetlink(Netlink):
    def __init__(self, netns_dir: Path, *, own: Path) -> None:
        super().__init__(netns_dir, own=own)
        self.vlans: dict[int, Link] = {}

    async def links(self, netns: str | None) -> list[Link]:
        real = await super().links(netns)
        if netns is not None:
            return real
        present = {link.index for link in real}
        for index in [i for i, vlan in self.vlans.items() if vlan.parent not in present]:
            del self.vlans[index]  # the kernel removes a VLAN with its parent
        return real + list(self.vlans.values())

    async def link(self, netns: str | None, index: int) -> Link:
        if netns is None and index in self.vlans:
            return self.vlans[index]
        return await super().link(netns, index)

    async def add_vlan(self, netns: str | None, parent: int, name: str, vlan_id: int) -> None:
        if netns is not None:  # named namespaces keep the real kernel's answer
            await super().add_vlan(netns, parent, name, vlan_id)
            return
        links = {link.index: link for link in await self.links(netns)}
        if parent not in links:
            raise kernel_error(OSError(errno.ENODEV, "no parent"), "add the VLAN")
        taken = any(link.name == name for link in links.values()) or any(
            v.parent == parent and v.vlan_id == vlan_id for v in self.vlans.values()
        )
        if taken:
            raise kernel_error(OSError(errno.EEXIST, "exists"), "add the VLAN")
        index = max([FIRST_FAKE_INDEX, *self.vlans]) + 1
        self.vlans[index] = Link(
            index=index,
            name=name,
            kind="vlan",
            mac=links[parent].mac,
            mtu=links[parent].mtu,
            operstate="down",
            flags=IFF_BROADCAST_MULTICAST,
            carrier=False,
            master=None,
            parent=parent,
            vlan_id=vlan_id,
            link_type=ARPHRD_ETHER,
            counters=ZERO,
        )

    async def delete_link(self, netns: str | None, index: int) -> None:
        if netns is None and self.vlans.pop(index, None) is not None:
            return
        await super().delete_link(netns, index)

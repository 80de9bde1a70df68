"""The network service's rules against real kernel state in throwaway namespaces.

The service's "own" namespace is a namespace the test made (``Netlink(own=…)``), and
its root a fixture tree, so nothing here reads or changes the host's network.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hostcore.builtin.network.models import InterfaceCounters
from hostcore.builtin.network.netlink import Netlink
from hostcore.builtin.network.schemas import NetworkSettings, VlanCreate
from hostcore.builtin.network.service import Caller, NetworkService, _Sample
from hostcore.builtin.network.sysfs import device_facts
from hostcore.config import RunnerSettings
from hostcore.errors import BadRequest, Conflict, Forbidden, NotFound, Unavailable
from hostcore.netns import NETNS_DIR_DEFAULT
from hostcore.runner import Runner
from tests.builtin.network.fake_links import VlanNetlink
from tests.builtin.network.netns import Netns, veth

ServiceFactory = Callable[..., NetworkService]


def sys_tree(root: Path) -> Path:
    """A /sys/class/net as a Raspberry Pi 4 shows it: a wired port at 1 Gb/s full duplex,
    and a Wi-Fi interface (no speed while not associated)."""
    eth = root / "sys/class/net/va"
    if eth.exists():
        return root
    (eth / "device").mkdir(parents=True)
    (eth / "speed").write_text("1000\n")
    (eth / "duplex").write_text("full\n")
    (eth / "device/driver").symlink_to("../../../bus/mdio_bus/drivers/bcmgenet")
    wlan = root / "sys/class/net/vb"
    (wlan / "wireless").mkdir(parents=True)
    (wlan / "speed").write_text("-1\n")
    return root


@pytest.fixture
async def service_in(tmp_path: Path) -> AsyncIterator[ServiceFactory]:
    """``service_in(ns, vlans=False, **settings)``: a service whose own namespace is ``ns``."""
    made: list[NetworkService] = []

    def make(namespace: Netns, *, vlans: bool = False, **settings: object) -> NetworkService:
        config = NetworkSettings.model_validate({"root": sys_tree(tmp_path), **settings})
        kind = VlanNetlink if vlans else Netlink
        netlink = kind(NETNS_DIR_DEFAULT, own=namespace.path)
        made.append(NetworkService(config, Runner(RunnerSettings()), netlink=netlink))
        return made[-1]

    yield make
    for service in made:
        await service.stop()


@pytest.fixture
def wired(two_namespaces: tuple[Netns, Netns]) -> tuple[Netns, Netns]:
    """``a`` (10.70.0.1 on va, default route through it, and a spare vc/vd pair) wired
    to ``b`` (10.70.0.2 on vb)."""
    a, b = two_namespaces
    veth(a, "va", b, "vb")
    a.ip("addr", "add", "10.70.0.1/24", "dev", "va")
    b.ip("addr", "add", "10.70.0.2/24", "dev", "vb")
    a.ip("route", "add", "default", "via", "10.70.0.2")
    a.ip("link", "add", "vc", "type", "veth", "peer", "name", "vd")
    a.ip("link", "set", "vc", "up")
    return a, b


async def test_interfaces_join_links_addresses_and_the_sysfs_facts(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    found = {i.name: i for i in await service_in(a).interfaces()}

    va = found["va"]
    assert (va.kind, va.speed_mbps, va.duplex, va.driver) == ("veth", 1000, "full", "bcmgenet")
    assert [x.address for x in va.addresses if x.family == "inet"] == ["10.70.0.1"]
    assert va.operstate == "up" and va.carrier is True and va.netns is None
    assert found["vc"].parent == "vd" and found["vd"].parent == "vc"
    assert found["lo"].addresses[0].address == "127.0.0.1"


async def test_an_ethernet_device_with_a_wireless_directory_is_wireless(
    one_namespace: Netns, service_in: ServiceFactory, tmp_path: Path
) -> None:
    # A veth reports its kind; a Wi-Fi device is a plain Ethernet-type link that sysfs
    # marks wireless, which a macvlan's kind cannot fake: so check the rule itself.
    service = service_in(one_namespace)
    one_namespace.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    link = next(link for link in await service.netlink.links(None) if link.name == "vb")
    ethernet = type(link)(**{**link.__dict__, "kind": "ethernet"})
    facts = device_facts(service.class_net, "vb")
    assert service._interface(ethernet, [], {}, facts, None).kind == "wireless"
    assert facts.speed_mbps is None  # -1 while not associated


async def test_an_unknown_interface_is_404_and_a_named_namespace_has_no_sysfs_facts(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, b = wired
    service = service_in(a)
    with pytest.raises(NotFound, match="no interface named nope"):
        await service.interface("nope")
    vb = await service.interface("vb", netns=b.name)
    assert vb.netns == b.name and vb.speed_mbps is None and vb.driver is None


def counters(rx: int, tx: int) -> InterfaceCounters:
    values = dict.fromkeys(InterfaceCounters.model_fields, 0)
    values.update(rx_bytes=rx, tx_bytes=tx, rx_packets=rx // 100, tx_packets=tx // 100)
    return InterfaceCounters(**values)


def test_rates_come_from_a_sample_at_least_a_fifth_of_a_second_back(
    one_namespace: Netns, service_in: ServiceFactory
) -> None:
    service = service_in(one_namespace)
    key = (None, 2)
    assert service._rates(key, _Sample(100.0, counters(0, 0))) is None  # nothing to compare
    first = service._rates(key, _Sample(101.0, counters(1000, 500)))
    assert first is not None and (first.rx_bytes_per_s, first.tx_bytes_per_s) == (1000, 500)
    # A poll 0.05 s later still compares with a sample far enough back.
    quick = service._rates(key, _Sample(101.05, counters(1100, 500)))
    assert quick is not None and quick.interval_s == 1.05
    later = service._rates(key, _Sample(102.0, counters(3000, 500)))
    assert later is not None and later.rx_bytes_per_s == 2000 and later.interval_s == 1.0


def test_no_rate_across_a_counter_reset_or_a_long_pause(
    one_namespace: Netns, service_in: ServiceFactory
) -> None:
    service = service_in(one_namespace)
    key = (None, 2)
    service._rates(key, _Sample(100.0, counters(5000, 5000)))
    assert service._rates(key, _Sample(101.0, counters(10, 10))) is None  # recreated link
    assert service._rates(key, _Sample(1000.0, counters(20, 20))) is None  # 15 minutes on


async def test_stats_count_real_traffic_and_rate_it_on_the_second_read(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    service = service_in(a)
    first = await service.stats("va")
    assert first.rates is None
    send = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(50): s.sendto(b'x' * 1000, ('10.70.0.2', 9))"
    )
    await asyncio.to_thread(a.run, sys.executable, "-c", send)
    await asyncio.sleep(0.25)  # the rate needs a baseline a fifth of a second back

    second = await service.stats("va")

    assert second.counters.tx_bytes - first.counters.tx_bytes >= 50 * 1000
    assert second.rates is not None and second.rates.tx_bytes_per_s > 0
    assert second.rates.interval_s >= 0.2


async def test_the_interface_of_the_callers_own_connection_is_never_set_down(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    service = service_in(a)

    with pytest.raises(Forbidden, match="va is protected"):
        await service.set_state("va", "down", Caller("10.70.0.2"))  # the caller's route is va
    with pytest.raises(Forbidden):
        await service.set_state("va", "down", Caller("unix"))  # unknown caller: default-route links
    assert (await service.interface("va")).admin_up
    local = await service.set_state("va", "down", Caller("127.0.0.1"))  # a local caller uses lo
    assert local.admin_up is False
    assert (
        await service.set_state("va", "up", Caller("10.70.0.2"))
    ).admin_up  # up is always allowed


async def test_a_configured_protected_interface_is_refused_and_others_change(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    service = service_in(a, protected_interfaces=["vc"])
    with pytest.raises(Forbidden):
        await service.set_state("vc", "down", Caller("127.0.0.1"))
    unprotected = service_in(a, protect_caller_interface=False)
    assert (await unprotected.set_state("va", "down", Caller("10.70.0.2"))).admin_up is False
    assert "state DOWN" in a.ip("-o", "link", "show", "va")


async def test_a_named_namespace_is_changed_without_the_own_namespace_rules(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, b = wired
    service = service_in(a, protected_interfaces=["vb"])
    changed = await service.set_state("vb", "down", Caller("unix"), netns=b.name)
    assert changed.admin_up is False and "state DOWN" in b.ip("-o", "link", "show", "vb")


async def test_a_vlan_on_this_kernel_is_503_naming_8021q(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    with pytest.raises(Unavailable, match=r"802\.1Q") as raised:
        await service_in(a).create_vlan(VlanCreate(parent="va", vlan_id=5))
    assert "8021q" in raised.value.detail


async def test_a_vlan_is_created_read_and_deleted(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    service = service_in(a, vlans=True)

    made = await service.create_vlan(VlanCreate(parent="va", vlan_id=100))
    named = await service.create_vlan(VlanCreate(parent="va", vlan_id=200, name="mgmt"))

    assert (made.name, made.kind, made.vlan_id, made.parent) == ("va.100", "vlan", 100, "va")
    assert (named.name, named.vlan_id) == ("mgmt", 200)
    assert {"va.100", "mgmt"} <= {i.name for i in await service.interfaces()}
    await service.delete_vlan("va.100", Caller("127.0.0.1"))
    assert "va.100" not in {i.name for i in await service.interfaces()}


async def test_vlan_mistakes_are_refused_before_the_kernel_is_asked(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    a.ip("link", "add", "parent-1234567", "type", "veth", "peer", "name", "pp")
    service = service_in(a, vlans=True)
    await service.create_vlan(VlanCreate(parent="va", vlan_id=7))

    with pytest.raises(Conflict, match="exists"):
        await service.create_vlan(VlanCreate(parent="va", vlan_id=8, name="vc"))
    with pytest.raises(Conflict):  # the id is taken on that parent (the kernel's EEXIST)
        await service.create_vlan(VlanCreate(parent="va", vlan_id=7, name="other"))
    with pytest.raises(Conflict, match="not an Ethernet"):
        await service.create_vlan(VlanCreate(parent="lo", vlan_id=9))
    with pytest.raises(BadRequest, match="give a name"):
        await service.create_vlan(VlanCreate(parent="parent-1234567", vlan_id=4094))
    with pytest.raises(NotFound):
        await service.create_vlan(VlanCreate(parent="nope", vlan_id=9))


async def test_only_a_vlan_is_deleted_through_the_vlan_endpoint(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    service = service_in(a, vlans=True)
    with pytest.raises(Conflict, match="vc is a veth link"):
        await service.delete_vlan("vc", Caller("127.0.0.1"))
    with pytest.raises(NotFound):
        await service.delete_vlan("va.9", Caller("127.0.0.1"))
    assert "vc" in {i.name for i in await service.interfaces()}


async def test_namespaces_list_their_interfaces(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, b = wired
    found = {n.name: n.interfaces for n in await service_in(a).namespaces()}
    assert sorted(found[b.name]) == ["lo", "vb"]
    assert sorted(found[a.name]) == ["lo", "va", "vc", "vd"]


async def test_the_own_namespace_reached_by_its_name_keeps_its_protection(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    with pytest.raises(Forbidden):
        await service_in(a).set_state("va", "down", Caller("unix"), netns=a.name)


async def test_the_ports_of_a_protected_bridge_and_a_protected_links_lower_device_are_guarded(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    a.ip("link", "add", "br0", "type", "bridge")
    a.ip("link", "set", "vd", "master", "br0")  # vd: a port of br0; its peer vc
    a.ip("link", "set", "br0", "up")
    a.ip("addr", "add", "10.72.0.1/24", "dev", "br0")
    service = service_in(a)
    caller = Caller("10.72.0.9")  # comes in through br0
    for name in ("br0", "vd", "vc"):
        with pytest.raises(Forbidden):
            await service.set_state(name, "down", caller)
    assert (await service.set_state("va", "down", caller)).admin_up is False


async def test_an_ipv6_link_local_caller_is_found_in_the_neighbour_table(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    a.ip("-6", "neigh", "add", "fe80::2", "lladdr", "02:00:00:00:00:02", "dev", "vc", "nud",
         "permanent")  # fmt: skip
    service = service_in(a)
    with pytest.raises(Forbidden):
        await service.set_state("vc", "down", Caller("fe80::2"))
    assert (await service.set_state("va", "down", Caller("fe80::2"))).admin_up is False


async def test_policy_routing_by_the_connections_own_address_is_followed(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    a.ip("link", "set", "vd", "up")
    a.ip("addr", "add", "10.73.0.1/24", "dev", "vc")
    a.ip("route", "add", "default", "via", "10.73.0.2", "dev", "vc", "table", "100")
    a.ip("rule", "add", "from", "10.70.0.1", "lookup", "100")
    service = service_in(a)
    caller = Caller("192.0.2.7", local_address="10.70.0.1")  # answered through vc
    with pytest.raises(Forbidden):
        await service.set_state("vc", "down", caller)
    assert (await service.set_state("va", "down", caller)).admin_up is False


async def test_every_path_of_a_multipath_route_to_the_caller_is_guarded(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    a.ip("link", "set", "vd", "up")
    a.ip("addr", "add", "10.74.0.1/24", "dev", "vc")
    a.ip("route", "add", "192.0.2.0/24", "nexthop", "via", "10.70.0.2", "dev", "va",
         "nexthop", "via", "10.74.0.2", "dev", "vc")  # fmt: skip
    service = service_in(a, protected_interfaces=[])
    for name in ("va", "vc"):
        with pytest.raises(Forbidden):
            await service.set_state(name, "down", Caller("192.0.2.7"))


async def test_an_unroutable_caller_falls_back_to_the_default_route_rule_not_an_error(
    one_namespace: Netns, service_in: ServiceFactory
) -> None:
    ns = one_namespace
    ns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    ns.ip("link", "set", "va", "up")
    changed = await service_in(ns).set_state("va", "down", Caller("203.0.113.9"))
    assert changed.admin_up is False  # no route at all: nothing carries the caller


async def test_a_protected_vlan_is_not_deleted(
    wired: tuple[Netns, Netns], service_in: ServiceFactory
) -> None:
    a, _ = wired
    service = service_in(a, vlans=True, protected_interfaces=["va.100"])
    await service.create_vlan(VlanCreate(parent="va", vlan_id=100))
    with pytest.raises(Forbidden):
        await service.delete_vlan("va.100", Caller("127.0.0.1"))

"""The netlink layer against the real kernel, in namespaces the tests make and remove."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hostcore.builtin.network.netlink import Netlink, kernel_error
from hostcore.errors import Conflict, NotFound, Unavailable, UpstreamFailed
from hostcore.netlink_reader import ReaderTransport
from hostcore.netns import NETNS_DIR_DEFAULT
from tests.builtin.network.netns import Netns, veth

# Bounds a wait that only a hang would reach.
HANG_GUARD_S = 30.0


@pytest.fixture
async def own() -> AsyncIterator[Callable[[Netns], Netlink]]:
    """``own(ns)``: a Netlink whose "own" namespace is the test's (the host's is never
    touched), closed after the test."""
    made: list[Netlink] = []

    def make(namespace: Netns) -> Netlink:
        made.append(Netlink(NETNS_DIR_DEFAULT, own=namespace.path))
        return made[-1]

    yield make
    for netlink in made:
        netlink.close()


async def test_a_veth_pair_a_bridge_and_a_macvlan_read_as_the_kernel_has_them(
    one_namespace: Netns, own: Callable[[Netns], Netlink]
) -> None:
    ns = one_namespace
    ns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    ns.ip("link", "add", "br0", "type", "bridge")
    ns.ip("link", "set", "vb", "master", "br0")
    ns.ip("link", "add", "mv0", "link", "va", "type", "macvlan")
    ns.ip("link", "set", "va", "mtu", "1400", "address", "02:00:00:00:00:0a")
    ns.ip("link", "set", "va", "up")

    links = {link.name: link for link in await own(ns).links(None)}

    assert set(links) == {"lo", "va", "vb", "br0", "mv0"}
    assert links["lo"].kind == "loopback" and links["lo"].mac is None
    assert links["va"].kind == "veth" and links["va"].parent == links["vb"].index
    assert links["va"].mac == "02:00:00:00:00:0a" and links["va"].mtu == 1400
    assert links["va"].admin_up and "up" in links["va"].flag_names
    assert links["va"].operstate == "lowerlayerdown"  # its peer is down
    assert links["vb"].master == links["br0"].index and not links["vb"].admin_up
    assert links["br0"].kind == "bridge"
    assert links["mv0"].kind == "macvlan" and links["mv0"].parent == links["va"].index
    assert links["va"].counters is not None and links["va"].counters.rx_bytes >= 0


async def test_addresses_show_prefix_scope_and_lifetimes(
    one_namespace: Netns, own: Callable[[Netns], Netlink]
) -> None:
    ns = one_namespace
    ns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    ns.ip("addr", "add", "10.20.0.1/24", "brd", "+", "dev", "va")
    ns.ip(
        "-6",
        "addr",
        "add",
        "2001:db8::1/64",
        "dev",
        "va",
        "valid_lft",
        "300",
        "preferred_lft",
        "200",
    )
    netlink = own(ns)
    index = {link.name: link.index for link in await netlink.links(None)}["va"]

    found = {a.address: a for i, a in await netlink.addresses(None) if i == index}

    v4, v6 = found["10.20.0.1"], found["2001:db8::1"]
    assert (v4.family, v4.prefix_length, v4.scope, v4.broadcast) == (
        "inet",
        24,
        "global",
        "10.20.0.255",
    )
    assert not v4.dynamic and v4.valid_lifetime_s is None
    assert (v6.family, v6.prefix_length) == ("inet6", 64)
    assert v6.dynamic and v6.valid_lifetime_s is not None and 0 < v6.valid_lifetime_s <= 300
    assert v6.preferred_lifetime_s is not None and v6.preferred_lifetime_s <= 200
    assert "tentative" in v6.flags  # duplicate address detection cannot run on a down link
    assert "127.0.0.1" in {a.address for _, a in await netlink.addresses(None)}


async def test_routes_of_every_table_and_neighbours(
    two_namespaces: tuple[Netns, Netns], own: Callable[[Netns], Netlink]
) -> None:
    a, b = two_namespaces
    veth(a, "va", b, "vb")
    a.ip("addr", "add", "10.30.0.1/24", "dev", "va")
    a.ip("route", "add", "10.31.0.0/16", "via", "10.30.0.9", "dev", "va", "metric", "50")
    a.ip("route", "add", "default", "via", "10.30.0.254", "table", "100")
    a.ip(
        "neigh", "add", "10.30.0.7", "lladdr", "02:00:00:00:00:07", "dev", "va", "nud", "permanent"
    )
    netlink = own(a)
    names = {link.index: link.name for link in await netlink.links(None)}

    routes = await netlink.routes(None, names)
    neighbours = await netlink.neighbours(None, names)

    by = {(r.table, r.destination): r for r in routes}
    static = by[(254, "10.31.0.0/16")]
    assert (static.gateway, static.interface, static.metric, static.protocol) == (
        "10.30.0.9",
        "va",
        50,
        "boot",
    )
    assert by[(254, "10.30.0.0/24")].protocol == "kernel"
    assert (
        by[(254, "10.30.0.0/24")].scope == "link"
        and by[(254, "10.30.0.0/24")].source == "10.30.0.1"
    )
    assert by[(100, "default")].gateway == "10.30.0.254"
    assert by[(255, "10.30.0.1/32")].type == "local"
    assert any(r.family == "inet6" for r in routes)
    permanent = next(n for n in neighbours if n.address == "10.30.0.7")
    assert (permanent.mac, permanent.interface, permanent.state) == (
        "02:00:00:00:00:07",
        "va",
        ["permanent"],
    )


async def test_a_multipath_route_lists_its_next_hops(
    one_namespace: Netns, own: Callable[[Netns], Netlink]
) -> None:
    ns = one_namespace
    for end in ("a", "b"):
        ns.ip("link", "add", f"v{end}", "type", "veth", "peer", "name", f"p{end}")
        ns.ip("link", "set", f"v{end}", "up")
        ns.ip("link", "set", f"p{end}", "up")
    ns.ip("addr", "add", "10.40.0.1/24", "dev", "va")
    ns.ip("addr", "add", "10.41.0.1/24", "dev", "vb")
    ns.ip("route", "add", "10.50.0.0/16", "nexthop", "via", "10.40.0.2", "dev", "va", "weight", "1",
          "nexthop", "via", "10.41.0.2", "dev", "vb", "weight", "3")  # fmt: skip
    netlink = own(ns)
    names = {link.index: link.name for link in await netlink.links(None)}

    route = next(r for r in await netlink.routes(None, names) if r.destination == "10.50.0.0/16")

    hops = {(h.gateway, h.interface, h.weight) for h in route.nexthops}
    assert hops == {("10.40.0.2", "va", 1), ("10.41.0.2", "vb", 3)}


async def test_set_up_and_down_changes_the_kernel_state(
    one_namespace: Netns, own: Callable[[Netns], Netlink]
) -> None:
    ns = one_namespace
    ns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    netlink = own(ns)
    index = ns.index("va")

    await netlink.set_up(None, index, True)
    assert (await netlink.link(None, index)).admin_up
    assert "UP" in ns.ip("-o", "link", "show", "va").split(">")[0]
    await netlink.set_up(None, index, False)
    assert not (await netlink.link(None, index)).admin_up


async def test_a_vlan_on_a_kernel_without_8021q_is_503_and_nothing_is_made(
    one_namespace: Netns, own: Callable[[Netns], Netlink]
) -> None:
    ns = one_namespace
    ns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    netlink = own(ns)

    with pytest.raises(Unavailable) as raised:
        await netlink.add_vlan(None, ns.index("va"), "va.5", 5)

    assert "does not support" in raised.value.detail
    assert "va.5" not in {link.name for link in await netlink.links(None)}


async def test_deleting_a_link_that_went_away_is_404(
    one_namespace: Netns, own: Callable[[Netns], Netlink]
) -> None:
    ns = one_namespace
    ns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    netlink = own(ns)
    index = ns.index("va")
    await netlink.delete_link(None, index)

    with pytest.raises(NotFound):
        await netlink.delete_link(None, index)
    assert {link.name for link in await netlink.links(None)} == {"lo"}


async def test_a_named_namespace_is_reached_through_its_own_socket(
    two_namespaces: tuple[Netns, Netns], own: Callable[[Netns], Netlink]
) -> None:
    a, b = two_namespaces
    veth(a, "va", b, "vb")
    netlink = Netlink(NETNS_DIR_DEFAULT)

    in_b = {link.name for link in await netlink.links(b.name)}
    in_a = {link.name for link in await netlink.links(a.name)}

    assert in_b == {"lo", "vb"} and in_a == {"lo", "va"}
    with pytest.raises(NotFound, match="no network namespace named hcnothere"):
        await netlink.links("hcnothere")


async def test_a_file_under_the_namespace_directory_that_is_no_namespace_is_503(
    tmp_path: Path,
) -> None:
    (tmp_path / "plain").write_text("not a namespace")
    with pytest.raises(Unavailable, match="cannot enter"):
        await Netlink(tmp_path).links("plain")


async def test_the_route_towards_an_address_names_the_interface(
    two_namespaces: tuple[Netns, Netns], own: Callable[[Netns], Netlink]
) -> None:
    a, b = two_namespaces
    veth(a, "va", b, "vb")
    a.ip("addr", "add", "10.60.0.1/24", "dev", "va")
    netlink = own(a)

    assert await netlink.route_interface("10.60.0.8") == a.index("va")
    assert await netlink.route_interface("127.0.0.1") == a.index("lo")


async def test_watch_reports_links_as_they_come_and_go(
    one_namespace: Netns, own: Callable[[Netns], Netlink]
) -> None:
    ns = one_namespace
    events: list[tuple[str, int]] = []
    seen = asyncio.Event()

    def on_message(message: object) -> None:
        events.append((message.get("event"), message.get("index")))  # type: ignore[attr-defined]
        seen.set()

    watcher = asyncio.create_task(own(ns).watch(on_message))
    try:
        await asyncio.sleep(0.1)  # the watch binds before the change
        await asyncio.to_thread(ns.ip, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        await asyncio.wait_for(seen.wait(), 5)
        index = ns.index("va")
        await asyncio.to_thread(ns.ip, "link", "del", "va")
        async with asyncio.timeout(5):
            while ("RTM_DELLINK", index) not in events:
                seen.clear()
                await seen.wait()
    finally:
        watcher.cancel()
    assert ("RTM_NEWLINK", index) in events


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (errno.ENODEV, NotFound),
        (errno.EEXIST, Conflict),
        (errno.EPERM, Unavailable),
        (errno.EOPNOTSUPP, Unavailable),
        (errno.EINVAL, UpstreamFailed),
    ],
)
def test_kernel_errors_map_by_errno_and_say_what_was_asked(code: int, error: type) -> None:
    mapped = kernel_error(OSError(code, "kernel text"), "set the link up")
    assert isinstance(mapped, error)
    assert "set the link up" in mapped.detail and "kernel text" not in mapped.detail


async def test_a_fifo_planted_as_a_namespace_is_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "trap")
    with pytest.raises(Unavailable, match="cannot enter"):
        # Bounded only so that a regression fails instead of hanging the suite.
        await asyncio.wait_for(Netlink(tmp_path).links("trap"), HANG_GUARD_S)


async def test_a_name_for_the_own_namespace_is_known_as_the_own(
    two_namespaces: tuple[Netns, Netns],
) -> None:
    a, b = two_namespaces
    netlink = Netlink(NETNS_DIR_DEFAULT, own=a.path)
    assert netlink.is_own(None) and netlink.is_own(a.name) and not netlink.is_own(b.name)


async def test_requests_given_up_midway_leave_the_next_ones_correct(
    one_namespace: Netns, own: Callable[[Netns], Netlink]
) -> None:
    ns = one_namespace
    ns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    netlink = own(ns)
    expected = {"lo", "va", "vb"}
    for attempt in range(30):
        given_up = asyncio.create_task(netlink.dump(None, "link"))
        for _ in range(attempt % 4):
            await asyncio.sleep(0)  # cancelled at a different point each time
        given_up.cancel()
        together = await asyncio.gather(*(netlink.links(None) for _ in range(3)))
        assert all({link.name for link in links} == expected for links in together)


async def test_the_reader_passes_whole_datagrams_on_and_drops_empty_ones() -> None:
    kernel, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    received: list[bytes] = []
    arrived = asyncio.Event()

    class Protocol:
        def connection_made(self, transport: object) -> None:
            pass

        def datagram_received(self, data: bytes, addr: object) -> None:
            received.append(data)
            arrived.set()

        def error_received(self, error: OSError) -> None:
            raise AssertionError(error)

    transport = ReaderTransport(asyncio.get_running_loop(), ours, Protocol())
    try:
        kernel.send(b"")
        kernel.send(b"\x10" + bytes(15))
        await asyncio.wait_for(arrived.wait(), HANG_GUARD_S)
        assert received == [b"\x10" + bytes(15)] and transport.datagrams == 2
    finally:
        transport.close()
        kernel.close()
        ours.close()

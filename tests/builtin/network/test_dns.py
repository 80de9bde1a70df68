"""DNS configuration: resolv.conf as glibc reads it, and systemd-resolved's servers when the
file hands every query to resolved's stub (a fake resolved on a private bus)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import BusType, Message, MessageFlag
from dbus_fast.aio import MessageBus

from hostcore.builtin.network.dns import (
    MAX_RESOLV_CONF_BYTES,
    DnsRead,
    DnsServerRead,
    Resolved,
    parse_resolv_conf,
    read_dns,
)
from hostcore.dbus import DEFAULT_SYSTEM_BUS_ADDRESS
from hostcore.errors import Forbidden, Unavailable
from tests.builtin.network.fakes import (
    ACCESS_DENIED,
    IFNAMES,
    FakeResolved,
    FakeResolvedFactory,
    ResolvedDomain,
    ResolvedServer,
)
from tests.builtin.system.fakes import PrivateBus
from tests.helpers import wait_until

FIXTURES = Path(__file__).parents[2] / "fixtures" / "network" / "dns"
# Bounds a wait that only a hang would reach.
HANG_GUARD_S = 30.0
# A read timeout no test waits out: where a read must end for another reason, at once.
NEVER_S = 3600.0


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8", "replace")  # as read_dns decodes


def server(
    address: str,
    interface: str | None = None,
    *,
    port: int | None = None,
    server_name: str | None = None,
) -> DnsServerRead:
    return DnsServerRead(address=address, port=port, interface=interface, server_name=server_name)


@pytest.fixture
def make_root(tmp_path: Path) -> Callable[[str], Path]:
    """A root directory whose etc/resolv.conf is a copy of the named fixture."""

    def make(name: str) -> Path:
        (tmp_path / "etc").mkdir(exist_ok=True)
        shutil.copyfile(FIXTURES / name, tmp_path / "etc" / "resolv.conf")
        return tmp_path

    return make


@pytest.fixture
def resolved_factory(private_bus: str) -> Iterator[FakeResolvedFactory]:
    """``make(servers=..., domains=..., dns_ex=..., unresponsive=...)``: a started fake."""
    with contextlib.ExitStack() as stops:

        def make(**options: Any) -> FakeResolved:
            fake = FakeResolved(private_bus, **options)
            stops.callback(fake.stop)
            return fake.start()

        yield make


@pytest.fixture
def fake_resolved(resolved_factory: FakeResolvedFactory) -> FakeResolved:
    return resolved_factory()


@pytest.fixture
async def resolved(private_bus: str) -> AsyncIterator[Resolved]:
    """The client, on the private bus through $DBUS_SYSTEM_BUS_ADDRESS as in production."""
    client = Resolved(timeout_s=2.0)
    yield client
    await client.close()


# --- parse_resolv_conf ----------------------------------------------------------------


def test_a_debian_dhclient_file_gives_its_nameservers_and_search_domain() -> None:
    conf = parse_resolv_conf(fixture_text("debian-dhclient.conf"))

    assert conf == DnsRead(
        source="resolv.conf",
        nameservers=[server("192.168.1.1"), server("fd00:cafe::1")],
        search=["home.arpa"],
        options=[],
        stub=False,
    )


def test_resolveds_stub_file_points_at_the_stub() -> None:
    conf = parse_resolv_conf(fixture_text("resolved-stub.conf"))

    assert conf == DnsRead(
        source="resolv.conf",
        nameservers=[server("127.0.0.53")],
        search=["corp.example.com", "lan"],
        options=["edns0", "trust-ad"],
        stub=True,
    )


def test_a_networkmanager_file() -> None:
    conf = parse_resolv_conf(fixture_text("networkmanager.conf"))

    assert conf.nameservers == [server("10.0.0.2"), server("10.0.0.3"), server("2001:db8::53")]
    assert conf.search == ["corp.example.com", "example.com"]
    assert not conf.stub


def test_only_the_first_three_nameservers_count_as_in_glibc() -> None:
    conf = parse_resolv_conf(fixture_text("networkmanager-four-servers.conf"))

    assert [ns.address for ns in conf.nameservers] == ["10.0.0.2", "10.0.0.3", "2001:db8::53"]


def test_an_ipv6_nameserver_with_a_scope_names_its_interface() -> None:
    conf = parse_resolv_conf(fixture_text("ipv6-scope.conf"))

    assert conf.nameservers == [
        server("fe80::1", "eth0"),
        server("fe80::2", "3"),  # an index: read_dns names it when it can
        server("2001:db8::35"),
    ]
    assert conf.options == ["inet6", "rotate"]


def test_comments_start_in_the_first_column_and_words_after_an_address_are_ignored() -> None:
    conf = parse_resolv_conf(fixture_text("comments.conf"))

    assert conf.nameservers == [server("9.9.9.9"), server("149.112.112.112")]
    assert conf.search == ["example.com", "example.net"]


def test_options_add_up_over_every_options_line() -> None:
    conf = parse_resolv_conf(fixture_text("comments.conf"))

    assert conf.options == ["ndots:2", "timeout:1", "attempts:2"]


def test_garbage_lines_are_skipped_and_good_lines_after_them_still_count() -> None:
    conf = parse_resolv_conf(fixture_text("garbage.conf"))

    # Among the skipped: 010.0.0.1 and 10.1 (inet_aton's old forms), an IPv4 address with
    # a scope, NAMESERVER, a line ending in CR (glibc keeps the CR in the word, too).
    assert conf.nameservers == [server("192.0.2.53")]
    assert conf.search == ["ok.example"]
    assert conf.options == []


@pytest.mark.parametrize(
    ("fixture", "search"),
    [
        ("domain-then-search.conf", ["second.example", "third.example"]),
        ("search-then-domain.conf", ["third.example"]),  # domain: its first word only
    ],
)
def test_the_last_of_domain_and_search_wins(fixture: str, search: list[str]) -> None:
    assert parse_resolv_conf(fixture_text(fixture)).search == search


def test_a_search_line_without_a_value_does_not_clear_the_list() -> None:
    conf = parse_resolv_conf("search example.com\nsearch\nsearch \t\ndomain\n")

    assert conf.search == ["example.com"]


def test_a_name_too_long_for_dns_is_no_search_domain() -> None:
    label = "a" * 63
    long_name = ".".join([label] * 4)  # 255 characters
    conf = parse_resolv_conf(f"search ok.example {long_name} {'b' * 64}.example .\n")

    assert conf.search == ["ok.example", "."]


def test_an_empty_file_configures_nothing() -> None:
    assert parse_resolv_conf("") == DnsRead(
        source="resolv.conf", nameservers=[], search=[], options=[], stub=False
    )


@pytest.mark.parametrize(
    ("text", "stub"),
    [
        ("nameserver 127.0.0.53\n", True),
        ("nameserver 127.0.0.54\n", True),
        ("nameserver 127.0.0.53\nnameserver 127.0.0.54\n", True),
        ("nameserver 127.0.0.53\nnameserver 192.0.2.53\n", False),  # a hand-made mix
        ("nameserver 127.0.0.1\n", False),
        ("# nameserver 127.0.0.53\n", False),
    ],
)
def test_the_stub_is_a_file_naming_only_resolveds_listeners(text: str, stub: bool) -> None:
    assert parse_resolv_conf(text).stub is stub


# --- read_dns with systemd-resolved -------------------------------------------------


async def test_the_stub_file_with_resolved_reports_resolveds_upstream_servers(
    make_root: Callable[[str], Path], fake_resolved: FakeResolved, resolved: Resolved
) -> None:
    answer = await read_dns(make_root("resolved-stub.conf"), resolved, IFNAMES)

    assert answer == DnsRead(
        source="systemd-resolved",
        nameservers=[
            server("9.9.9.9", port=853, server_name="dns.quad9.net"),
            server("2620:fe::fe", server_name="dns.quad9.net"),
            server("192.168.1.1", "eth0"),
            server("fe80::1", "eth0"),
            server("10.8.0.1", "wg0", port=5353),
        ],
        search=["corp.example.com", "lan"],
        options=[],
        stub=True,
    )
    assert fake_resolved.members() == ["GetAll"]


async def test_routing_only_domains_are_not_search_domains(
    make_root: Callable[[str], Path], resolved_factory: FakeResolvedFactory, resolved: Resolved
) -> None:
    resolved_factory(
        domains=[
            ResolvedDomain("example.com", route_only=True),
            ResolvedDomain("lan", ifindex=2),
            ResolvedDomain(".", ifindex=5, route_only=True),
        ]
    )

    answer = await read_dns(make_root("resolved-stub.conf"), resolved, IFNAMES)

    assert answer.search == ["lan"]


async def test_a_domain_of_several_links_is_listed_once_where_it_first_appears(
    make_root: Callable[[str], Path], resolved_factory: FakeResolvedFactory, resolved: Resolved
) -> None:
    resolved_factory(
        domains=[
            ResolvedDomain("b.example", ifindex=2),
            ResolvedDomain("a.example", ifindex=5),
            ResolvedDomain("b.example", ifindex=5),
        ]
    )

    answer = await read_dns(make_root("resolved-stub.conf"), resolved, IFNAMES)

    assert answer.search == ["b.example", "a.example"]


async def test_a_resolved_without_dnsex_is_read_from_dns_without_ports_or_names(
    make_root: Callable[[str], Path], resolved_factory: FakeResolvedFactory, resolved: Resolved
) -> None:
    fake = resolved_factory(dns_ex=False)

    answer = await read_dns(make_root("resolved-stub.conf"), resolved, IFNAMES)

    assert answer.source == "systemd-resolved"
    assert answer.nameservers == [
        server("9.9.9.9"),
        server("2620:fe::fe"),
        server("192.168.1.1", "eth0"),
        server("fe80::1", "eth0"),
        server("10.8.0.1", "wg0"),
    ]
    assert fake.members() == ["GetAll"], "one call, whichever properties resolved has"


async def test_a_server_of_a_link_no_longer_named_carries_its_index(
    make_root: Callable[[str], Path], resolved_factory: FakeResolvedFactory, resolved: Resolved
) -> None:
    resolved_factory(servers=[ResolvedServer("192.0.2.1", ifindex=9)])

    answer = await read_dns(make_root("resolved-stub.conf"), resolved, IFNAMES)

    assert answer.nameservers == [server("192.0.2.1", "9")]


async def test_resolved_is_never_started_by_a_read(
    make_root: Callable[[str], Path], fake_resolved: FakeResolved, resolved: Resolved
) -> None:
    await read_dns(make_root("resolved-stub.conf"), resolved, IFNAMES)

    ((_member, flags),) = fake_resolved.received
    assert flags & MessageFlag.NO_AUTOSTART


async def test_a_file_not_pointing_at_the_stub_wins_and_resolved_is_not_asked(
    make_root: Callable[[str], Path], fake_resolved: FakeResolved, resolved: Resolved
) -> None:
    answer = await read_dns(make_root("networkmanager.conf"), resolved, IFNAMES)

    assert answer.source == "resolv.conf"
    assert [ns.address for ns in answer.nameservers] == ["10.0.0.2", "10.0.0.3", "2001:db8::53"]
    assert fake_resolved.received == []


async def test_without_resolved_on_the_bus_the_stub_file_is_the_answer(
    make_root: Callable[[str], Path], resolved: Resolved
) -> None:
    answer = await read_dns(make_root("resolved-stub.conf"), resolved, IFNAMES)

    assert answer == parse_resolv_conf(fixture_text("resolved-stub.conf"))
    assert answer.source == "resolv.conf"
    assert answer.stub


async def test_without_a_bus_at_all_the_stub_file_is_the_answer(
    make_root: Callable[[str], Path], tmp_path: Path
) -> None:
    nobody = Resolved(address=f"unix:path={tmp_path}/no-bus-here", timeout_s=NEVER_S)

    answer = await read_dns(make_root("resolved-stub.conf"), nobody, IFNAMES)

    assert answer.source == "resolv.conf"
    await nobody.close()


async def test_a_bus_socket_nobody_listens_on_is_no_bus(
    make_root: Callable[[str], Path], tmp_path: Path
) -> None:
    path = tmp_path / "stale_bus_socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # bound, never listening: connecting is refused
        nobody = Resolved(address=f"unix:path={path}", timeout_s=NEVER_S)

        assert await nobody.servers(IFNAMES) is None
        await nobody.close()


async def test_without_a_client_the_stub_file_is_the_answer(
    make_root: Callable[[str], Path],
) -> None:
    answer = await read_dns(make_root("resolved-stub.conf"), None, IFNAMES)

    assert answer.source == "resolv.conf"
    assert answer.nameservers == [server("127.0.0.53")]


async def test_a_hanging_resolved_is_unavailable_within_the_timeout(
    make_root: Callable[[str], Path], resolved_factory: FakeResolvedFactory
) -> None:
    fake = resolved_factory(unresponsive=True)
    client = Resolved(timeout_s=0.2)

    with pytest.raises(Unavailable) as caught:
        async with asyncio.timeout(HANG_GUARD_S):
            await read_dns(make_root("resolved-stub.conf"), client, IFNAMES)

    assert caught.value.detail == "systemd-resolved did not answer within 0.2 s"
    assert fake.swallowed == ["GetAll"], "asked, never answered"
    await client.close()


async def test_a_read_resolved_hangs_on_does_not_hold_up_the_next_once_it_answers(
    make_root: Callable[[str], Path], resolved_factory: FakeResolvedFactory
) -> None:
    fake = resolved_factory(unresponsive=True)
    client = Resolved(timeout_s=NEVER_S)  # only cancelling can end the stuck read
    root = make_root("resolved-stub.conf")
    stuck = asyncio.create_task(read_dns(root, client, IFNAMES))
    await wait_until(lambda: bool(fake.swallowed), HANG_GUARD_S, "the read to hang")

    fake.unresponsive = False
    answer = await read_dns(root, client, IFNAMES)

    assert not stuck.done(), "answered on the same connection while the first still waits"
    assert answer.source == "systemd-resolved"
    stuck.cancel()
    await client.close()


async def test_resolved_exiting_mid_read_is_unavailable_at_once(
    make_root: Callable[[str], Path], resolved_factory: FakeResolvedFactory
) -> None:
    fake = resolved_factory(unresponsive=True)
    client = Resolved(timeout_s=NEVER_S)  # only resolved's exit can end the read
    stuck = asyncio.create_task(read_dns(make_root("resolved-stub.conf"), client, IFNAMES))
    await wait_until(lambda: bool(fake.swallowed), HANG_GUARD_S, "the read to hang")

    fake.stop()

    with pytest.raises(Unavailable) as caught:
        async with asyncio.timeout(HANG_GUARD_S):
            await stuck
    assert caught.value.detail == (
        "systemd-resolved did not answer GetAll (org.freedesktop.DBus.Error.NoReply)"
    )
    await client.close()


async def test_an_error_from_resolved_is_named_but_its_message_is_not_quoted(
    make_root: Callable[[str], Path], fake_resolved: FakeResolved, resolved: Resolved
) -> None:
    fake_resolved.error = (ACCESS_DENIED, "policy says no to uid 0 for /etc/secret")

    with pytest.raises(Forbidden) as caught:
        await read_dns(make_root("resolved-stub.conf"), resolved, IFNAMES)

    assert caught.value.detail == (
        "systemd-resolved refused GetAll: org.freedesktop.DBus.Error.AccessDenied"
    )


# --- read_dns and the file ----------------------------------------------------------


async def test_a_missing_resolv_conf_is_an_empty_answer_and_resolved_is_not_asked(
    tmp_path: Path, fake_resolved: FakeResolved, resolved: Resolved
) -> None:
    answer = await read_dns(tmp_path, resolved, IFNAMES)

    assert answer == DnsRead(
        source="resolv.conf", nameservers=[], search=[], options=[], stub=False
    )
    assert fake_resolved.received == []


async def test_a_dangling_symlink_is_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").symlink_to(tmp_path / "run" / "stub-resolv.conf")

    answer = await read_dns(tmp_path, None, IFNAMES)

    assert answer.nameservers == []


async def test_a_resolv_conf_that_is_no_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "etc" / "resolv.conf").mkdir(parents=True)

    with pytest.raises(Unavailable, match=r"etc/resolv\.conf is not a regular file$"):
        await read_dns(tmp_path, None, IFNAMES)


async def test_a_numeric_scope_is_named_through_ifnames(
    make_root: Callable[[str], Path],
) -> None:
    answer = await read_dns(make_root("ipv6-scope.conf"), None, {3: "wlan0"})

    assert [(ns.address, ns.interface) for ns in answer.nameservers] == [
        ("fe80::1", "eth0"),
        ("fe80::2", "wlan0"),
        ("2001:db8::35", None),
    ]


async def test_an_oversized_resolv_conf_is_read_up_to_the_limit_in_whole_lines(
    tmp_path: Path,
) -> None:
    head = "nameserver 192.0.2.1\nsearch first.example\n"
    # The next search line starts ten bytes before the limit: cut, it would read "exa".
    padding = "#" * (MAX_RESOLV_CONF_BYTES - len(head) - 10 - 1) + "\n"
    cut = "search example.com\n"
    tail = "nameserver 192.0.2.2\n"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").write_text(head + padding + cut + tail)

    answer = await read_dns(tmp_path, None, IFNAMES)

    assert answer.nameservers == [server("192.0.2.1")]
    assert answer.search == ["first.example"]


# --- the connection -----------------------------------------------------------------


async def _connections(address: str) -> int:
    """How many clients the bus daemon has, besides the one asking."""
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="ListNames",
            )
        )
    finally:
        bus.disconnect()
    (names,) = reply.body
    return sum(1 for name in names if name.startswith(":") and name != bus.unique_name)


async def test_concurrent_first_reads_share_one_lazily_made_connection(
    private_bus: str, make_root: Callable[[str], Path], fake_resolved: FakeResolved
) -> None:
    client = Resolved(timeout_s=2.0)
    assert not client.connected
    root = make_root("resolved-stub.conf")

    answers = await asyncio.gather(*(read_dns(root, client, IFNAMES) for _ in range(10)))

    assert {answer.source for answer in answers} == {"systemd-resolved"}
    assert await _connections(private_bus) == 2, "the fake's and the client's"
    assert fake_resolved.members() == ["GetAll"] * 10
    await client.close()


async def test_it_reconnects_after_the_bus_restarts(
    private_bus_daemon: PrivateBus, fake_resolved: FakeResolved, resolved: Resolved
) -> None:
    assert await resolved.servers(IFNAMES) is not None
    fake_resolved.stop()
    private_bus_daemon.restart()
    fake_resolved.start()
    await wait_until(lambda: not resolved.connected, HANG_GUARD_S, "the client to see the drop")

    found = await resolved.servers(IFNAMES)

    assert found is not None
    assert resolved.connected


async def test_close_then_use_again(fake_resolved: FakeResolved) -> None:
    client = Resolved(timeout_s=2.0)
    await client.close()  # before any connection: nothing to do
    await client.servers(IFNAMES)

    await client.close()
    await client.close()

    assert await client.servers(IFNAMES) is not None
    await client.close()
    assert not client.connected


def test_closed_in_one_event_loop_it_works_in_the_next(fake_resolved: FakeResolved) -> None:
    """As across test clients: each runs the app's lifespan on its own loop."""
    client = Resolved(timeout_s=2.0)

    async def read() -> int:
        try:
            found = await client.servers(IFNAMES)
            assert found is not None
            return len(found[0])
        finally:
            await client.close()

    assert asyncio.run(read()) == asyncio.run(read()) == 5


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Resolved(timeout_s=0)


def test_the_default_address_is_the_standard_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)

    assert Resolved(timeout_s=1.0).address == DEFAULT_SYSTEM_BUS_ADDRESS


async def test_a_scope_of_thousands_of_digits_is_no_interface_and_no_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/resolv.conf").write_text(
        f"nameserver fe80::1%{'7' * 5000}\nnameserver fe80::2%7\n"
    )
    found = await read_dns(tmp_path, None, {7: "eth0"})
    interfaces = {server.address: server.interface for server in found.nameservers}
    assert interfaces["fe80::2"] == "eth0"
    assert interfaces.get("fe80::1") != "eth0"

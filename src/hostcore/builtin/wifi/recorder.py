"""Record this device's nl80211 answers into a test fixture (``hostcore-nl80211-fixture/1``).

::

    python -m hostcore.builtin.wifi.recorder --out pi4.json
    sudo python -m hostcore.builtin.wifi.recorder --out pi4.json --trigger-scan wlan0

* **The product's own requests.** Every request goes through :class:`Nl80211`, as the
  Wi-Fi plugin sends it. Its ``socket_factory`` hands out a real netlink socket
  wrapped so that it keeps a copy of every datagram it receives, before pyroute2
  parses it: the file holds the kernel's bytes, attributes pyroute2 cannot decode
  included. Tests wrap a fake kernel's socket the same way.
* **What is kept.** For each request, the nl80211 messages of its answer, one netlink
  message each. Datagram boundaries, ``NLMSG_DONE``, ACKs and empty datagrams are
  not: the fake kernel makes them again for each request, and stamps its sequence
  number and port id. A dump made again after ``NLM_F_DUMP_INTR`` counts once: only
  its last attempt is kept.
* **The exchanges, in order:** the family lookup, the split wiphy dump, the wiphy
  dump without the split (big radios fail it: that is tolerated), the interface dump,
  then with ``--trigger-scan`` a scan on that interface (the "scan" group's events,
  needs CAP_NET_ADMIN), the station and scan dumps of each interface (a refusal,
  such as a monitor interface's, is noted in ``meta.skipped``), and the GET_REG dump
  (on a kernel without it, the request for the global domain, noted too).
* **Neighbours are pseudonymised** unless ``--no-scrub``: see :class:`Scrubber`.
* **The format** is the one the tests' ``Fixture.from_json`` reads; it is written
  here because hostcore does not import its tests.
* **An existing file is kept** unless ``--force``: a recording of another device is
  not replaced by mistake, and the check comes before the radio is used.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import importlib.metadata
import json
import os
import secrets
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

import hostcore
from hostcore.builtin.wifi import ies
from hostcore.builtin.wifi.nl80211 import Nl80211
from hostcore.builtin.wifi.parsers import merge_phys, parse_interface
from hostcore.builtin.wifi.schemas import WifiSettings
from hostcore.cli_support import RUNTIME_ERROR, fail, run_or_exit
from hostcore.errors import HostcoreError, NotFound, UpstreamFailed

FORMAT = "hostcore-nl80211-fixture/1"
KINDS = (
    "wiphy_split",
    "wiphy",
    "interfaces",
    "stations",
    "scan",
    "reg",
    "scan_started",
    "scan_done",
    "scan_aborted",
)
SPLIT_WIPHY_DUMP = ("NL80211_ATTR_SPLIT_WIPHY_DUMP", b"")
# pyroute2 gives the sockets it opens itself these buffers: the recording's sockets
# behave as the product's do (a scan's burst of events fits).
SOCKET_BUFFER_BYTES = 1 << 20

# Numbers of linux/netlink.h, linux/genetlink.h and linux/nl80211.h.
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence number, port id
NLA_HEADER = struct.Struct("=HH")  # length, type
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
GENL_HEADER_END = NLMSG_HEADER.size + 4  # genlmsghdr: command, version, reserved
NETLINK_GENERIC = 16  # the socket protocol
GENL_ID_CTRL = 0x10
NLMSG_DONE = 3
CTRL_CMD_NEWFAMILY = 1
CMD_NEW_STATION = 19
SCAN_EVENTS = {33: "scan_started", 34: "scan_done", 35: "scan_aborted"}  # TRIGGER_SCAN, …
ATTR_IFINDEX = 3
ATTR_MAC = 6
ATTR_SCAN_SSIDS = 45
ATTR_BSS = 47
ATTR_SSID = 52
ATTR_MLD_ADDR = 314
BSS_ADDRESSES = frozenset({1, 18, 22})  # BSSID, PARENT_BSSID, MLD_ADDR
BSS_ELEMENTS = frozenset({6, 11})  # INFORMATION_ELEMENTS, BEACON_IES
MAC_BYTES = 6

PSEUDONYM_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
# A printable character of each UTF-8 length: a pseudonym keeps every byte length.
SAME_LENGTH_CHARACTER = {2: "\u00e9", 3: "\u20ac", 4: "\U0001f600"}
NOT_UTF8_BYTE = 0xE9  # a lead byte with no continuation: the pseudonym is no UTF-8 either


# --------------------------------------------------------------------------- the tap


class TappedSocket:
    """A socket that keeps a copy of every datagram pyroute2's reader receives through
    it (hostcore's reader calls ``recv_into`` and nothing else to receive); every
    other call is the wrapped socket's."""

    def __init__(self, wrapped: Any, datagrams: list[bytes]) -> None:
        self._wrapped = wrapped
        self._datagrams = datagrams

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        size: int = self._wrapped.recv_into(buffer, nbytes, flags)
        self._datagrams.append(bytes(memoryview(buffer)[:size]))
        return size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class Tap:
    """A ``socket_factory`` for :class:`Nl80211`: ``open_socket``'s sockets, tapped.
    ``datagrams`` holds what every one of them received, in order."""

    def __init__(self, open_socket: Callable[[], Any]) -> None:
        self.open_socket = open_socket
        self.datagrams: list[bytes] = []

    def __call__(self) -> TappedSocket:
        return TappedSocket(self.open_socket(), self.datagrams)


def open_netlink_socket() -> socket.socket:
    """A generic netlink socket, as pyroute2 opens its own."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_GENERIC)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    return sock


# --------------------------------------------------------------------------- netlink bytes


def messages_of(datagrams: Iterable[bytes]) -> Iterator[bytes]:
    """The netlink messages of ``datagrams``, each from its ``nlmsghdr`` on."""
    for datagram in datagrams:
        offset = 0
        while offset + NLMSG_HEADER.size <= len(datagram):
            (length,) = struct.unpack_from("=I", datagram, offset)
            if length < NLMSG_HEADER.size or offset + length > len(datagram):
                break
            yield datagram[offset : offset + length]
            offset += (length + 3) & ~3


def attributes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of the netlink attributes in ``data[start:end]``."""
    offset = start
    while offset + NLA_HEADER.size <= end:
        length, kind = NLA_HEADER.unpack_from(data, offset)
        if length < NLA_HEADER.size or offset + length > end:
            return
        yield kind & NLA_TYPE_MASK, offset + NLA_HEADER.size, offset + length
        offset += (length + 3) & ~3


def _header(message: bytes) -> tuple[int, int, int, int, int]:
    header: tuple[int, int, int, int, int] = NLMSG_HEADER.unpack_from(message)
    return header


def _family_reply(datagrams: Sequence[bytes]) -> bytes:
    for message in messages_of(datagrams):
        if _header(message)[1] == GENL_ID_CTRL and message[NLMSG_HEADER.size] == CTRL_CMD_NEWFAMILY:
            return message
    raise UpstreamFailed("the family lookup was answered, but not through the tap")


def answer(datagrams: Sequence[bytes], family_id: int) -> list[bytes]:
    """The nl80211 messages answering the last request in ``datagrams``: a dump's, up to
    its ``NLMSG_DONE`` (one made again after an interruption, on a fresh socket, answered
    twice); a request's reply. Multicast (sequence number 0) is no answer."""
    answers: list[list[bytes]] = [[]]
    for message in messages_of(datagrams):
        _, kind, _, sequence, _ = _header(message)
        if sequence == 0:
            continue
        if kind == NLMSG_DONE:
            answers.append([])
        elif kind == family_id:
            answers[-1].append(message)
    return answers[-2] if len(answers) > 1 else answers[0]


def scan_events(datagrams: Sequence[bytes], family_id: int, ifindex: int) -> dict[str, list[bytes]]:
    """The "scan" group's events about ``ifindex`` in ``datagrams``, by kind."""
    found: dict[str, list[bytes]] = {kind: [] for kind in SCAN_EVENTS.values()}
    for message in messages_of(datagrams):
        _, kind, _, sequence, _ = _header(message)
        command = message[NLMSG_HEADER.size] if len(message) > NLMSG_HEADER.size else None
        if kind != family_id or sequence != 0 or command not in SCAN_EVENTS:
            continue
        if any(
            t == ATTR_IFINDEX and struct.unpack_from("=I", message, s)[0] == ifindex
            for t, s, e in attributes(message, GENL_HEADER_END, len(message))
            if e - s == 4
        ):
            found[SCAN_EVENTS[command]].append(message)
    return found


# --------------------------------------------------------------------------- scrubbing


class Scrubber:
    """Pseudonyms for the neighbours in a recording, written over the originals in
    place with values of the same length: no netlink or element length changes, so
    every message stays valid.

    * A MAC address (a BSSID, its parent's, an MLD address, a station's) keeps its
      OUI; its last three bytes become a salted hash. The device's own are kept.
    * An SSID (the SSID element of a BSS's elements, ``NL80211_ATTR_SSID``, the SSIDs
      a scan probed for) keeps its length in bytes: a printable character becomes one
      of the same UTF-8 length, others stay. So a hidden SSID (empty, all zero) stays
      hidden, a UTF-8 one stays UTF-8, and one that is no UTF-8 stays none.
    * The salt is new for each recording: within one file a network has one pseudonym,
      so the interface's SSID, the station and the BSS still match each other.
    * Vendor elements (a WPS device name …) are not scrubbed: review them.
    """

    def __init__(self, own_macs: Iterable[bytes]) -> None:
        self.own_macs = frozenset(own_macs)
        self._salt = secrets.token_bytes(16)

    def _digest(self, data: bytes) -> bytes:
        return hashlib.sha256(self._salt + data).digest()

    def mac(self, mac: bytes) -> bytes:
        if len(mac) != MAC_BYTES or mac in self.own_macs:
            return mac
        return mac[:3] + self._digest(mac)[:3]

    def ssid(self, ssid: bytes) -> bytes:
        digest = self._digest(ssid)

        def letter(position: int) -> str:
            return PSEUDONYM_LETTERS[digest[position % len(digest)] % len(PSEUDONYM_LETTERS)]

        try:
            text = ssid.decode("utf-8")
        except UnicodeDecodeError:
            return bytes(
                ord(letter(i)) if 0x20 <= b < 0x7F else NOT_UTF8_BYTE if b >= 0x80 else b
                for i, b in enumerate(ssid)
            )
        return "".join(
            c
            if not c.isprintable()
            else letter(i)
            if len(c.encode()) == 1
            else SAME_LENGTH_CHARACTER[len(c.encode())]
            for i, c in enumerate(text)
        ).encode()

    def message(self, message: bytes) -> bytes:
        """``message`` (one nl80211 message) with its neighbours pseudonymised."""
        data = bytearray(message)
        command = data[NLMSG_HEADER.size] if len(data) > NLMSG_HEADER.size else None
        for kind, start, end in attributes(data, GENL_HEADER_END, len(data)):
            if kind in (ATTR_MAC, ATTR_MLD_ADDR) and command == CMD_NEW_STATION:
                data[start:end] = self.mac(bytes(data[start:end]))
            elif kind == ATTR_SSID:
                data[start:end] = self.ssid(bytes(data[start:end]))
            elif kind == ATTR_SCAN_SSIDS:
                for _, probed, probed_end in attributes(data, start, end):
                    data[probed:probed_end] = self.ssid(bytes(data[probed:probed_end]))
            elif kind == ATTR_BSS:
                self._bss(data, start, end)
        return bytes(data)

    def _bss(self, data: bytearray, start: int, end: int) -> None:
        for kind, value, value_end in attributes(data, start, end):
            if kind in BSS_ADDRESSES:
                data[value:value_end] = self.mac(bytes(data[value:value_end]))
            elif kind in BSS_ELEMENTS:
                offset = value
                for element, body in ies.elements(bytes(data[value:value_end])):
                    if element == ies.SSID:
                        data[offset + 2 : offset + 2 + len(body)] = self.ssid(body)
                    offset += 2 + len(body)


# --------------------------------------------------------------------------- recording


@dataclass
class Recording:
    """What :func:`record` captured, as the fixture format holds it."""

    family_id: int
    groups: dict[str, int]
    family: bytes
    messages: dict[str, list[bytes]]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The ``hostcore-nl80211-fixture/1`` document (base64, one string a message)."""

        def text(message: bytes) -> str:
            return base64.b64encode(message).decode()

        return json.dumps(
            {
                "format": FORMAT,
                "meta": self.meta,
                "family": {
                    "name": "nl80211",
                    "id": self.family_id,
                    "groups": self.groups,
                    "reply": text(self.family),
                },
                "messages": {
                    kind: [text(m) for m in found] for kind, found in self.messages.items()
                },
            },
            indent=1,
            sort_keys=True,
        )


def _drivers(phys: Iterable[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for phy in phys:
        try:
            found[phy] = Path(f"/sys/class/ieee80211/{phy}/device/driver").readlink().name
        except OSError:
            found[phy] = None
    return found


async def record(
    open_socket: Callable[[], Any],
    *,
    trigger_scan: str | None = None,
    scrub: bool = True,
    settings: WifiSettings | None = None,
) -> Recording:
    """Record the nl80211 answers of the kernel behind ``open_socket``'s sockets.

    ``trigger_scan`` names an interface to scan on (CAP_NET_ADMIN; the radio leaves
    its channel for a few seconds); a refused or unfinished scan fails the recording.
    ``settings`` bounds each request and the scan (the plugin's defaults if None)."""
    settings = settings or WifiSettings()
    tap = Tap(open_socket)
    nl80211 = Nl80211(timeout_s=settings.nl80211_timeout_s, socket_factory=tap)
    messages: dict[str, list[bytes]] = {kind: [] for kind in KINDS}
    skipped: list[str] = []
    try:
        async with nl80211.session() as nl:  # the family lookup
            family_id: int = nl.prid
            groups = {str(name): int(number) for name, number in nl.mcast_groups.items()}
        family = _family_reply(tap.datagrams)

        async def keep(
            kind: str, name: str, attrs: Sequence[tuple[str, Any]] = (), *, action: str
        ) -> list[Any]:
            start = len(tap.datagrams)
            decoded = await nl80211.dump(name, attrs, action=action)
            messages[kind] += answer(tap.datagrams[start:], family_id)
            return decoded

        phys = merge_phys(
            await keep("wiphy_split", "GET_WIPHY", [SPLIT_WIPHY_DUMP], action="list radios")
        )
        try:
            await keep("wiphy", "GET_WIPHY", action="list radios without the split")
        except HostcoreError as error:
            skipped.append(f"GET_WIPHY without the split: {error.detail}")
        interfaces = [
            found
            for m in await keep("interfaces", "GET_INTERFACE", action="list wireless interfaces")
            if (found := parse_interface(m)) is not None
        ]
        if trigger_scan is not None:
            target = next((i for i in interfaces if i.name == trigger_scan), None)
            if target is None:
                raise NotFound(f"no wireless interface named {trigger_scan}")
            start = len(tap.datagrams)
            await nl80211.scan(target.index, timeout_s=settings.scan_timeout_s)
            messages.update(scan_events(tap.datagrams[start:], family_id, target.index))
        for interface in interfaces:
            for kind, name, what in (
                ("stations", "GET_STATION", "list stations"),
                ("scan", "GET_SCAN", "read scan results"),
            ):
                try:
                    await keep(kind, name, [("NL80211_ATTR_IFINDEX", interface.index)], action=what)
                except HostcoreError as error:
                    skipped.append(f"{name} {interface.name}: {error.detail}")
        try:
            await keep("reg", "GET_REG", action="read the regulatory domain")
        except HostcoreError as error:  # an older kernel: no GET_REG dump
            skipped.append(f"GET_REG dump (the global domain recorded instead): {error.detail}")
            start = len(tap.datagrams)
            await nl80211.request("GET_REG", [], action="read the regulatory domain")
            messages["reg"] = answer(tap.datagrams[start:], family_id)
    finally:
        nl80211.close()
    if scrub:
        own = {
            bytes(m[s:e])
            for m in messages["interfaces"]
            for kind, s, e in attributes(m, GENL_HEADER_END, len(m))
            if kind == ATTR_MAC
        }
        scrubber = Scrubber(own)
        messages = {kind: [scrubber.message(m) for m in found] for kind, found in messages.items()}
    uname = os.uname()
    meta = {
        "source": "recorded",
        "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernel": uname.release,
        "machine": uname.machine,
        "drivers": await asyncio.to_thread(_drivers, [phy.name for phy in phys]),
        "scrubbed": scrub,
        "skipped": skipped,
        "hostcore": hostcore.__version__,
        "pyroute2": importlib.metadata.version("pyroute2"),
    }
    return Recording(family_id, groups, family, messages, meta)


def write(recording: Recording, out: Path, *, force: bool) -> None:
    """Write ``recording`` to ``out``; a file already there only with ``force``
    (``FileExistsError`` otherwise, whoever made it meanwhile)."""
    with out.open("w" if force else "x", encoding="utf-8") as file:
        file.write(recording.to_json() + "\n")


# --------------------------------------------------------------------------- command line


def command_line(open_socket: Callable[[], Any] = open_netlink_socket) -> typer.Typer:
    """The recorder's command; ``open_socket`` gives the sockets (tests: a fake kernel's)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)

    @app.command()
    def main(
        out: Annotated[
            Path, typer.Option(help="The fixture file to write.", dir_okay=False, metavar="FILE")
        ],
        trigger_scan: Annotated[
            str | None,
            typer.Option(
                metavar="IFNAME",
                help="Scan on this interface and record the scan events (CAP_NET_ADMIN; "
                "the radio leaves its channel for a few seconds).",
            ),
        ] = None,
        scrub: Annotated[
            bool,
            typer.Option(help="Pseudonymise the neighbours' MAC addresses and SSIDs."),
        ] = True,
        force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    ) -> None:
        """Record this device's nl80211 answers into a hostcore-nl80211-fixture/1 file."""
        if out.exists() and not force:
            fail(f"{out} exists: --force replaces it")
        recording = run_or_exit(record(open_socket, trigger_scan=trigger_scan, scrub=scrub))
        try:
            write(recording, out, force=force)
        except FileExistsError:
            fail(f"{out} exists: --force replaces it")
        except OSError as error:
            fail(f"cannot write {out}: {error.strerror}", RUNTIME_ERROR)
        counts = ", ".join(f"{kind} {len(found)}" for kind, found in recording.messages.items())
        typer.echo(f"wrote {out}: {counts}")
        for note in recording.meta["skipped"]:
            typer.echo(f"skipped {note}", err=True)

    return app


if __name__ == "__main__":
    command_line()(prog_name="python -m hostcore.builtin.wifi.recorder")

"""The host's DNS resolver configuration: /etc/resolv.conf, and systemd-resolved's servers.

Where the answer comes from, and why:

- ``/etc/resolv.conf`` is what glibc's resolver (and most others) reads, so it is the
  answer unless it only hands queries on. :func:`parse_resolv_conf` reads it as glibc
  2.26 and later do (``resolv/res_init.c``); its docstring lists the rules.
- When every server it names is systemd-resolved's stub listener (127.0.0.53, or
  127.0.0.54), the file says nothing about where queries go: resolved's upstream
  servers and search domains do. They are read from resolved's Manager object on the
  system D-Bus (``org.freedesktop.resolve1(5)``) by :class:`Resolved`, which never
  starts resolved (``NO_AUTO_START``): reading settings must not change the host.
- resolved is only asked when the file points at it. A file that names other
  servers is what glibc uses, whatever resolved (in its "foreign" or "uplink"
  mode) knows.

What can go wrong: resolved not on the bus, or no bus at all, is no error (the file
is the answer, as it is for glibc); resolved or the bus not answering within the
timeout, or a lost connection, is :class:`~hostcore.errors.Unavailable`, as is a
resolv.conf that exists but cannot be read. Nothing quotes the file or the daemon's
error text: the log has the daemon's message, the file stays on the host.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus
from pydantic import BaseModel, Field

from hostcore.dbus import (
    PROPERTIES_INTERFACE,
    DBusService,
    dbus_error,
    describe_address,
)
from hostcore.dbus_connection import BusConnection
from hostcore.errors import Unavailable
from hostcore.files import read_up_to

logger = logging.getLogger(__name__)

RESOLV_CONF = "etc/resolv.conf"
# Read at most this much of resolv.conf: a real one is well under 1 KiB, and this
# bounds the work an odd one can cause. The rest is ignored, and said so in the log.
MAX_RESOLV_CONF_BYTES = 64 * 1024
# glibc's MAXNS (<resolv.h>): it uses the first three valid nameservers and ignores
# the rest (NetworkManager writes a note saying so above a fourth).
MAXNS = 3
# glibc 2.26 lifted the old search-list limits (MAXDNSRCH, six domains of 256
# characters in all): every name is used, so every name is reported; the read limit
# above bounds them. A name longer than a domain name can be (253 characters, labels of
# 63) can never complete a query, so it is left out.
MAX_DOMAIN_CHARS = 253
MAX_LABEL_CHARS = 63
STUB_ADDRESSES = frozenset({"127.0.0.53", "127.0.0.54"})

RESOLVED = DBusService(
    "systemd-resolved",
    "org.freedesktop.resolve1",
    "/org/freedesktop/resolve1",
    "org.freedesktop.resolve1.Manager",
)
# Linux's address families, as resolved reports them.
_AF_INET, _AF_INET6 = 2, 10
_ADDRESS_BYTES = {_AF_INET: 4, _AF_INET6: 16}
# The Manager's properties read here and their signatures (org.freedesktop.resolve1(5)):
# DNSEx (systemd 246 and later) adds each server's port and TLS name to what DNS has.
_DNS_EX, _DNS_EX_SIGNATURE = "DNSEx", "a(iiayqs)"
_DNS, _DNS_SIGNATURE = "DNS", "a(iiay)"
_DOMAINS, _DOMAINS_SIGNATURE = "Domains", "a(isb)"
# Replies meaning resolved is not on the bus (not running; never started, see above).
_NOT_ON_BUS = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)
# What connecting raises when there is no bus daemon at that address at all.
_NO_BUS = (FileNotFoundError, ConnectionRefusedError)
# resolv.conf errors that mean there is no file to read (a dangling symlink included),
# which glibc takes as an empty file, and so does the answer.
_NO_FILE = frozenset({errno.ENOENT, errno.ENOTDIR})
# Closing waits this long for the bus to acknowledge; the socket is shut down either way.
_SPACE = re.compile(r"[ \t]+")


# --- schemas ------------------------------------------------------------------------


class DnsServerRead(BaseModel):
    """A DNS server the host sends queries to."""

    address: str = Field(description="Its IPv4 or IPv6 address, without a scope.")
    port: int | None = Field(
        description="Its port; None for the protocol's default (53, or 853 for DNS over TLS)."
    )
    interface: str | None = Field(
        description=(
            "The interface it is reached through (an IPv6 scope in resolv.conf, or the "
            "link systemd-resolved uses it for); None for a server of every interface. "
            "An interface index as text when no interface has a name for it."
        )
    )
    server_name: str | None = Field(
        description=(
            "The name its TLS certificate is checked against (SNI), for DNS over TLS; "
            "None when none is set."
        )
    )


class DnsRead(BaseModel):
    """Where the host's DNS queries go, and the domains short names are tried in."""

    source: Literal["resolv.conf", "systemd-resolved"] = Field(
        description=(
            "systemd-resolved when resolv.conf hands every query to its stub and it "
            "answered; else resolv.conf."
        )
    )
    nameservers: list[DnsServerRead] = Field(
        description=(
            "In the order they are tried. From resolv.conf, the first three (glibc uses no "
            "more); empty when it names none or does not exist, and glibc then asks "
            "127.0.0.1."
        )
    )
    search: list[str] = Field(
        description=(
            "Search domains, in order: a name with fewer dots than ndots is tried in each. "
            "From systemd-resolved, every link's, without the routing-only ones (~domain). "
            "Empty when resolv.conf sets none: glibc then searches the domain of the host "
            "name (after its first dot), if it has one."
        )
    )
    options: list[str] = Field(
        description="resolv.conf's options (ndots:2, edns0, ...), as written; empty from "
        "systemd-resolved."
    )
    stub: bool = Field(
        description=(
            "Whether resolv.conf names only systemd-resolved's stub listener (127.0.0.53 "
            "or 127.0.0.54) as its nameserver."
        )
    )


# --- resolv.conf --------------------------------------------------------------------


def parse_resolv_conf(text: str) -> DnsRead:
    """resolv.conf as glibc reads it (``res_init.c``, 2.26 and later):

    - Lines end at ``\\n`` only; a line starting with ``#`` or ``;`` is a comment.
    - A keyword starts its line and is followed by a space or a tab (an indented or
      upper-case keyword is no keyword); words are separated by spaces and tabs.
    - ``nameserver`` takes its first word, an IPv4 address or an IPv6 one with an
      optional ``%scope`` (the interface); the rest of the line is ignored. Only the
      first :data:`MAXNS` valid ones count. An address :mod:`ipaddress` rejects is
      skipped, inet_aton's old forms (``10.1``, ``0x0a.0.0.1``, ``010.0.0.1``) included.
    - ``search`` (all its words) and ``domain`` (its first word) each replace the
      search list: the last such line wins. Without a value the line is ignored.
    - ``options`` words add up over every such line.
    - Anything else (``sortlist``, unknown keywords, garbage) is ignored.
    """
    nameservers: list[DnsServerRead] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.split("\n"):
        if line.startswith(("#", ";")):
            continue
        keyword, rest = _keyword(line)
        words = [word for word in _SPACE.split(rest) if word]
        if not words:
            continue
        if keyword == "nameserver":
            server = _nameserver(words[0])
            if server is not None and len(nameservers) < MAXNS:
                nameservers.append(server)
        elif keyword == "search":
            search = [word for word in words if _is_domain(word)]
        elif keyword == "domain":
            search = [words[0]] if _is_domain(words[0]) else []
        elif keyword == "options":
            options += [word for word in words if word.isprintable()]
    stub = bool(nameservers) and all(server.address in STUB_ADDRESSES for server in nameservers)
    return DnsRead(
        source="resolv.conf", nameservers=nameservers, search=search, options=options, stub=stub
    )


def _keyword(line: str) -> tuple[str, str]:
    """The line's first word, ended by its first space or tab, and the rest."""
    match = re.search(r"[ \t]", line)
    if match is None:
        return line, ""
    return line[: match.start()], line[match.end() :]


def _nameserver(word: str) -> DnsServerRead | None:
    address, percent, scope = word.partition("%")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    if percent and parsed.version == 4:
        return None  # inet_aton takes no scope; glibc tries it as IPv6, which fails
    return DnsServerRead(address=str(parsed), port=None, interface=scope or None, server_name=None)


def _is_domain(name: str) -> bool:
    """Whether ``name`` can be a search domain: printable ASCII, the lengths DNS allows."""
    if name == ".":
        return True
    if not (name.isascii() and name.isprintable()):
        return False
    labels = name.removesuffix(".").split(".")
    return len(name.removesuffix(".")) <= MAX_DOMAIN_CHARS and all(
        0 < len(label) <= MAX_LABEL_CHARS for label in labels
    )


def _read_resolv_conf(path: Path) -> str | None:
    """The first :data:`MAX_RESOLV_CONF_BYTES` of the file at ``path``, up to its last whole
    line; None when there is no such file. Blocking: run it in a thread."""
    try:
        # Non-blocking: a FIFO put in its place must not hang the thread that opens it.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in _NO_FILE:
            return None
        raise Unavailable(f"cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unavailable(f"{path} is not a regular file")
        data = read_up_to(fd, MAX_RESOLV_CONF_BYTES + 1)
    except OSError as exc:
        raise Unavailable(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_RESOLV_CONF_BYTES:
        logger.warning(
            "%s is longer than %d bytes: the rest is ignored", path, MAX_RESOLV_CONF_BYTES
        )
        data = data[:MAX_RESOLV_CONF_BYTES].rpartition(b"\n")[0]
    return data.decode("utf-8", "replace")


# --- systemd-resolved ---------------------------------------------------------------


class Resolved:
    """systemd-resolved's DNS servers and search domains, read over the system D-Bus.

    One connection (:class:`hostcore.dbus_connection.BusConnection`, as the system
    plugin's): :meth:`close` it before its loop ends. ``timeout_s`` bounds each read,
    connecting included.
    """

    def __init__(self, *, address: str | None = None, timeout_s: float) -> None:
        self._bus = BusConnection(address=address, timeout_s=timeout_s)
        self.timeout_s = timeout_s

    @property
    def address(self) -> str:
        return self._bus.address

    @property
    def connected(self) -> bool:
        """Whether a connection is up (as far as this process has noticed yet)."""
        return self._bus.connected

    async def servers(
        self, ifnames: Mapping[int, str]
    ) -> tuple[list[DnsServerRead], list[str]] | None:
        """resolved's DNS servers (global ones first, in its order) and search domains (its
        global and every link's, once each, routing-only domains left out); None when
        resolved is not on the bus or there is no bus. ``ifnames`` names the links."""
        props = await self._manager_properties()
        if props is None:
            return None
        return _servers(props, ifnames), _search_domains(props)

    async def _manager_properties(self) -> dict[str, Variant] | None:
        """The Manager's properties, all in one call: a resolved older than DNSEx simply
        has none, and DNS is read instead."""
        message = Message(
            destination=RESOLVED.name,
            path=RESOLVED.path,
            interface=PROPERTIES_INTERFACE,
            member="GetAll",
            signature="s",
            body=[RESOLVED.interface],
            flags=MessageFlag.NO_AUTOSTART,
        )
        bus: MessageBus | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    bus = await self._bus.get()
                except Unavailable as exc:
                    if not isinstance(exc.__cause__, _NO_BUS):
                        raise
                    logger.debug("no system D-Bus at %s (%s)", self.address, exc.__cause__)
                    return None
                reply = await bus.call(message)
        except TimeoutError:
            if bus is None:
                where = describe_address(self.address)
                raise Unavailable(
                    f"the system D-Bus ({where}) did not answer within {self.timeout_s:g} s"
                ) from None
            raise Unavailable(
                f"{RESOLVED.label} did not answer within {self.timeout_s:g} s"
            ) from None
        except (OSError, EOFError) as exc:
            assert bus is not None  # connecting's own errors are Unavailable already
            raise self._lost(bus) from exc
        if reply is None:
            # dbus-fast ends calls pending on a connection that closed without an error.
            raise self._lost(bus)
        if reply.message_type is MessageType.ERROR:
            if reply.error_name in _NOT_ON_BUS:
                return None
            error = dbus_error(RESOLVED, "GetAll", reply.error_name or "")
            text = str(reply.body[0]) if reply.body else ""
            logger.warning("%s; it said %s: %r", error.detail, reply.error_name, text)
            raise error
        (props,) = reply.body
        return dict(props)

    def _lost(self, bus: MessageBus) -> Unavailable:
        self._bus.forget(bus)
        return Unavailable(f"the system D-Bus connection was lost while asking {RESOLVED.label}")

    async def close(self) -> None:
        """Disconnect; a later read connects again."""
        await self._bus.close()


def _property(props: Mapping[str, Variant], name: str, signature: str) -> list[Any] | None:
    """A property's value, if resolved has it with the signature documented for it."""
    value = props.get(name)
    if not isinstance(value, Variant) or value.signature != signature:
        return None
    return list(value.value)


def _servers(props: Mapping[str, Variant], ifnames: Mapping[int, str]) -> list[DnsServerRead]:
    entries = _property(props, _DNS_EX, _DNS_EX_SIGNATURE)
    if entries is None:
        plain = _property(props, _DNS, _DNS_SIGNATURE)
        if plain is None:
            raise Unavailable(f"{RESOLVED.label} did not report its DNS servers")
        entries = [(*entry, 0, "") for entry in plain]
    servers = []
    for ifindex, family, packed, port, server_name in entries:
        if _ADDRESS_BYTES.get(family) != len(packed):
            logger.warning("%s reported a DNS server of family %d: skipped", RESOLVED.label, family)
            continue
        servers.append(
            DnsServerRead(
                address=str(ipaddress.ip_address(bytes(packed))),
                port=port or None,
                interface=_ifname(ifindex, ifnames),
                server_name=server_name or None,
            )
        )
    return servers


def _search_domains(props: Mapping[str, Variant]) -> list[str]:
    found = _property(props, _DOMAINS, _DOMAINS_SIGNATURE) or []
    # dict: each domain once, in the order resolved lists them (global ones first).
    return list(dict.fromkeys(domain for _ifindex, domain, route_only in found if not route_only))


def _ifname(ifindex: int, ifnames: Mapping[int, str]) -> str | None:
    if ifindex == 0:
        return None
    return ifnames.get(ifindex, str(ifindex))


# --- the answer ---------------------------------------------------------------------


async def read_dns(root: Path, resolved: Resolved | None, ifnames: Mapping[int, str]) -> DnsRead:
    """The host's DNS configuration: ``<root>/etc/resolv.conf``, or systemd-resolved's
    upstream servers and search domains when the file names only its stub and it answers
    (``resolved`` None: the file only).

    No resolv.conf (a dangling symlink included) reads as an empty one, as glibc reads it:
    empty lists (glibc then asks 127.0.0.1, and searches the host name's domain), and
    resolved is not asked, since nothing points queries at it. A numeric IPv6 scope in the
    file is named through ``ifnames``.

    Raises :class:`~hostcore.errors.Unavailable` when the file cannot be read, and when
    resolved or the bus does not answer in time.
    """
    text = await asyncio.to_thread(_read_resolv_conf, root / RESOLV_CONF)
    conf = parse_resolv_conf(text or "")
    if conf.stub and resolved is not None:
        found = await resolved.servers(ifnames)
        if found is not None:
            nameservers, search = found
            return DnsRead(
                source="systemd-resolved",
                nameservers=nameservers,
                search=search,
                options=[],
                stub=True,
            )
    return conf.model_copy(
        update={"nameservers": [_named_scope(server, ifnames) for server in conf.nameservers]}
    )


def _named_scope(server: DnsServerRead, ifnames: Mapping[int, str]) -> DnsServerRead:
    scope = server.interface
    # An interface index: ASCII digits, bounded (int() of thousands of digits raises).
    if scope is None or not (scope.isascii() and scope.isdigit() and len(scope) <= 10):
        return server
    if int(scope) not in ifnames:
        return server
    return server.model_copy(update={"interface": ifnames[int(scope)]})

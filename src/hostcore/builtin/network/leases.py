"""The IPv4 DHCP leases the host's DHCP clients keep on disk.

Four clients are read, each in the format its own source writes (checked against it,
and the test fixtures are files the real clients wrote):

- **dhcpcd** (``var/lib/dhcpcd/<ifname>.lease``; on a wireless interface
  ``<ifname>-<ssid>.lease``): the server's DHCPACK as it came off the wire
  (``write_lease`` in dhcpcd's ``dhcp.c``). A small, strict decoder reads it:
  the BOOTP header, the magic cookie, then options up to the end option, each one
  bounds-checked; a repeated option is concatenated (RFC 3396) and options overloaded
  into the ``file`` and ``sname`` fields (option 52) are read too. dhcpcd writes the
  file when it binds or renews, and dates the lease by the file's mtime itself, so
  that is ``obtained``. ``*.lease6`` files (DHCPv6 replies) are not read: a lease here
  is an IPv4 one.
- **dhclient** (ISC, ``var/lib/dhcp/dhclient*.leases``): ``lease { ... }`` blocks
  appended as leases are bound (``write_client_lease``); the last block for an
  interface is its current lease. Times are UTC (``4 2026/11/30 12:00:00``) or, with
  ``db-time-format local``, ``epoch <seconds>``; ``never`` is no expiry. dhclient sets
  ``expire`` to the time it bound plus the lease time, so ``obtained`` is the one minus
  the other.
- **systemd-networkd** (``run/systemd/netif/leases/<ifindex>``): ``KEY=VALUE`` lines
  (``dhcp_lease_save``). ``LIFETIME`` is whole seconds up to systemd 254 and a
  timespan (``12h``, ``1d 6h``, ``infinity``) from 255 on. networkd rewrites the file
  whenever it saves the link's state, so its mtime does not date the lease:
  ``obtained`` and ``expires`` stay ``None``. The file is named by interface index;
  the caller's ``ifnames`` (from netlink) names it.
- **NetworkManager** (``var/lib/NetworkManager``): ``internal-<uuid>-<ifname>.lease``
  from its internal client, in networkd's format (since NetworkManager 1.22 it holds
  only ``ADDRESS``, written when a lease is granted or extended: the mtime is
  ``obtained``), and ``dhclient-<uuid>-<ifname>.lease`` in dhclient's format.

One lease is reported per interface and client: when several files hold one (dhcpcd
and NetworkManager keep a file per wireless network or connection, dhclient may have
both ``dhclient.leases`` and ``dhclient.<ifname>.leases``), the most recently written
file is the current one. An expired lease is still reported: ``expires`` says so.

What a file may do to the reader, and why it cannot do more:

- Nothing in a file raises. A file that is malformed, truncated, larger than
  :data:`MAX_LEASE_FILE_BYTES`, unreadable, not a regular file or a symbolic link
  (opened with ``O_NOFOLLOW``, so a link planted in a lease directory leads nowhere)
  is skipped with a DEBUG line naming the file, never quoting it: lease files hold
  client identifiers and host names.
- At most :data:`MAX_FILES_PER_DIRECTORY` files are read per directory, so a
  directory full of files costs bounded work.
- Every string reported is checked: addresses are dotted IPv4, an interface name is
  one Linux would accept (else the lease is dropped), a domain is printable ASCII of
  at most :data:`MAX_DOMAIN_CHARS` characters (else it is ``None``), and lists hold
  at most :data:`MAX_ADDRESSES` addresses.
- Every path is fixed here, under ``root`` (``/`` in production, a fixture tree in
  tests); none comes from a caller. Reading blocks: call :func:`read_leases` from a
  thread.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import stat
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hostcore.files import read_up_to

logger = logging.getLogger(__name__)

LeaseClient = Literal["dhcpcd", "dhclient", "systemd-networkd", "NetworkManager"]

DHCPCD_DIRECTORY = "var/lib/dhcpcd"
DHCLIENT_DIRECTORY = "var/lib/dhcp"
NETWORKD_DIRECTORY = "run/systemd/netif/leases"
NETWORKMANAGER_DIRECTORY = "var/lib/NetworkManager"

# dhcpcd's file is one DHCP message (576 bytes unless the link's MTU allows more);
# dhclient appends a block per renewal and rewrites the file down to the current leases
# after 20 of them. A file larger than this is no lease file.
MAX_LEASE_FILE_BYTES = 64 * 1024
MAX_FILES_PER_DIRECTORY = 256
# One option carries at most 63 addresses; real servers send one to four.
MAX_ADDRESSES = 32
# A domain name's longest text form (RFC 1035: 255 octets on the wire).
MAX_DOMAIN_CHARS = 253
# Linux's IFNAMSIZ counts the terminating NUL.
MAX_IFNAME_CHARS = 15
# A lease time of 2**32 - 1 seconds means infinite (RFC 2131, 3.3).
INFINITE_LEASE_S = 0xFFFFFFFF


class LeaseRead(BaseModel):
    """One interface's current IPv4 DHCP lease, as its DHCP client recorded it."""

    model_config = ConfigDict(frozen=True)

    interface: str = Field(description="The interface the lease is for.")
    client: LeaseClient = Field(description="The DHCP client whose lease file this is.")
    address: str = Field(description="The leased IPv4 address, dotted.")
    prefix_length: int | None = Field(
        description="The subnet's prefix length, from the subnet mask option; None when "
        "the server sent none (or one that is not a prefix)."
    )
    server: str | None = Field(
        description="The DHCP server's identifier (option 54), the address it answers on."
    )
    routers: list[str] = Field(description="Default gateways (option 3), in the server's order.")
    dns: list[str] = Field(description="DNS servers (option 6), in the server's order.")
    domain: str | None = Field(
        description="The domain name (option 15); None when absent or not printable ASCII."
    )
    lease_time_s: int | None = Field(
        description="How long the lease was granted for, in seconds; None when it is "
        "infinite or the file does not say."
    )
    obtained: datetime | None = Field(
        description="When the lease was bound or last renewed (UTC); None when the "
        "client does not record it (systemd-networkd)."
    )
    expires: datetime | None = Field(
        description="When the lease runs out (UTC), possibly in the past; None when it "
        "is infinite or the client does not record enough to tell."
    )


def read_leases(root: Path, ifnames: Mapping[int, str]) -> list[LeaseRead]:
    """The current lease of every interface and client found under ``root``, sorted by
    interface, then client. ``ifnames`` maps interface indexes to names (netlink's):
    systemd-networkd names its files by index, and an index not in it is shown as its
    decimal string. Blocking: call it from a thread."""
    names = {index: name for index, name in ifnames.items() if _valid_ifname(name)}
    found = [
        *_dhcpcd_leases(root / DHCPCD_DIRECTORY, set(names.values())),
        *_dhclient_leases(root / DHCLIENT_DIRECTORY),
        *_networkd_leases(root / NETWORKD_DIRECTORY, names),
        *_networkmanager_leases(root / NETWORKMANAGER_DIRECTORY),
    ]
    current: dict[tuple[str, str], _Found] = {}
    for item in found:
        key = (item.lease.interface, item.lease.client)
        held = current.get(key)
        if held is None or (item.written_ns, item.file) > (held.written_ns, held.file):
            current[key] = item
    return [current[key].lease for key in sorted(current)]


@dataclass(frozen=True, slots=True)
class _Found:
    lease: LeaseRead
    written_ns: int  # the file's mtime: of two leases for one interface the newer wins
    file: str


class _Malformed(ValueError):
    """A lease file that is not what its client writes; the message names the problem
    and never quotes the file."""


# --- reading files ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LeaseFile:
    name: str
    path: Path  # for log lines only: the file is opened by name under its directory
    data: bytes
    mtime_ns: int

    @property
    def mtime(self) -> datetime | None:
        return _utc_from_timestamp(self.mtime_ns / 1e9)


def _lease_files(directory: Path, wanted: Callable[[str], bool]) -> Iterator[_LeaseFile]:
    """The readable regular files in ``directory`` whose names are ``wanted``, by name."""
    try:
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            logger.debug("lease directory %s skipped: %s", directory, exc.strerror)
        return
    try:
        for name in _wanted_names(directory_fd, directory, wanted):
            lease_file = _read_lease_file(directory_fd, directory, name)
            if lease_file is not None:
                yield lease_file
    finally:
        os.close(directory_fd)


def _wanted_names(directory_fd: int, directory: Path, wanted: Callable[[str], bool]) -> list[str]:
    names: list[str] = []
    try:
        with os.scandir(directory_fd) as entries:
            for entry in entries:
                if not wanted(entry.name):
                    continue
                if len(names) == MAX_FILES_PER_DIRECTORY:
                    logger.debug(
                        "lease directory %s has more than %d lease files: the rest are skipped",
                        directory,
                        MAX_FILES_PER_DIRECTORY,
                    )
                    break
                names.append(entry.name)
    except OSError as exc:
        logger.debug("lease directory %s skipped: %s", directory, exc.strerror)
        return []
    return sorted(names)


def _read_lease_file(directory_fd: int, directory: Path, name: str) -> _LeaseFile | None:
    path = directory / name
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        # Non-blocking, so that a FIFO put in a lease directory cannot hang the reader.
        fd = os.open(name, flags, dir_fd=directory_fd)
    except OSError as exc:
        reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        logger.debug("lease file %s skipped: %s", path, reason)
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            logger.debug("lease file %s skipped: not a regular file", path)
            return None
        data = read_up_to(fd, MAX_LEASE_FILE_BYTES + 1)
    except OSError as exc:
        logger.debug("lease file %s skipped: %s", path, exc.strerror)
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_LEASE_FILE_BYTES:
        logger.debug("lease file %s skipped: larger than %d bytes", path, MAX_LEASE_FILE_BYTES)
        return None
    return _LeaseFile(name, path, data, info.st_mtime_ns)


def _skipped(lease_file: _LeaseFile, problem: object) -> None:
    logger.debug("lease file %s skipped: %s", lease_file.path, problem)


# --- values -----------------------------------------------------------------------------


def _valid_ifname(name: str) -> bool:
    """Whether Linux would take ``name`` for an interface (``dev_valid_name``), limited
    further to printable ASCII."""
    return (
        0 < len(name) <= MAX_IFNAME_CHARS
        and name not in (".", "..")
        and all("!" <= char <= "~" and char not in "/:" for char in name)
    )


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def _ipv4_list(texts: Sequence[str]) -> list[str]:
    """The addresses of a list, or none of them when one is not an address."""
    addresses = [_ipv4(text) for text in texts[:MAX_ADDRESSES]]
    return [address for address in addresses if address is not None] if all(addresses) else []


def _prefix_length(mask: str | None) -> int | None:
    """The prefix length of a dotted netmask, None when its ones are not contiguous."""
    if mask is None:
        return None
    host_bits = ~int(ipaddress.IPv4Address(mask)) & 0xFFFFFFFF
    if host_bits & (host_bits + 1):
        return None
    return 32 - host_bits.bit_length()


def _domain(text: str | None) -> str | None:
    if text is None:
        return None
    domain = text.rstrip("\0").strip()
    if not 0 < len(domain) <= MAX_DOMAIN_CHARS:
        return None
    return domain if all(" " <= char <= "~" for char in domain) else None


def _lease_time(seconds: int | None) -> int | None:
    return None if seconds is None or seconds >= INFINITE_LEASE_S else seconds


def _utc_from_timestamp(seconds: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _plus(start: datetime | None, seconds: int | None) -> datetime | None:
    if start is None or seconds is None:
        return None
    try:
        return start + timedelta(seconds=seconds)
    except OverflowError:
        return None


# --- dhcpcd: the DHCP message -----------------------------------------------------------

_BOOTREPLY = 2
_YIADDR = slice(16, 20)
_SNAME = slice(44, 108)
_FILE = slice(108, 236)
_MAGIC_COOKIE = bytes((99, 130, 83, 99))
_OPTIONS_START = 240  # the fixed BOOTP header (236 bytes), then the cookie
_OPTION_PAD, _OPTION_END = 0, 255
_SUBNET_MASK, _ROUTERS, _DNS_SERVERS, _DOMAIN_NAME = 1, 3, 6, 15
_LEASE_TIME, _OVERLOAD, _MESSAGE_TYPE, _SERVER_ID = 51, 52, 53, 54
_DHCPACK = 5
# Option 52's value: which of the header's fields carry options too, in the order
# RFC 2131 (4.1) reads them after the options field.
_OVERLOAD_FIELDS: dict[int, tuple[slice, ...]] = {1: (_FILE,), 2: (_SNAME,), 3: (_FILE, _SNAME)}


def _dhcp_options(message: bytes) -> dict[int, bytes]:
    """The options of a BOOTREPLY, each code once (RFC 3396 concatenation)."""
    if len(message) < _OPTIONS_START:
        raise _Malformed("shorter than a DHCP message")
    if message[0] != _BOOTREPLY:
        raise _Malformed("not a BOOTP reply")
    if message[_OPTIONS_START - 4 : _OPTIONS_START] != _MAGIC_COOKIE:
        raise _Malformed("no DHCP magic cookie")
    options: dict[int, bytearray] = {}
    _scan_options(message[_OPTIONS_START:], options)
    overload = options.get(_OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in _OVERLOAD_FIELDS:
            raise _Malformed("an invalid option overload")
        for field in _OVERLOAD_FIELDS[overload[0]]:
            _scan_options(message[field], options)
    return {code: bytes(value) for code, value in options.items()}


def _scan_options(area: bytes, options: dict[int, bytearray]) -> None:
    position = 0
    while position < len(area):
        code = area[position]
        if code == _OPTION_PAD:
            position += 1
            continue
        if code == _OPTION_END:
            return
        if position + 1 >= len(area) or position + 2 + area[position + 1] > len(area):
            raise _Malformed("a DHCP option runs past the end")
        end = position + 2 + area[position + 1]
        options.setdefault(code, bytearray()).extend(area[position + 2 : end])
        position = end
    raise _Malformed("DHCP options without an end option")


def _option_address(value: bytes | None) -> str | None:
    return str(ipaddress.IPv4Address(value)) if value is not None and len(value) == 4 else None


def _option_addresses(value: bytes | None) -> list[str]:
    if value is None or len(value) % 4:
        return []
    count = min(len(value) // 4, MAX_ADDRESSES)
    return [str(ipaddress.IPv4Address(value[4 * i : 4 * i + 4])) for i in range(count)]


def _option_seconds(value: bytes | None) -> int | None:
    return int.from_bytes(value, "big") if value is not None and len(value) == 4 else None


def _option_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def _parse_dhcpcd_lease(message: bytes, interface: str, obtained: datetime | None) -> LeaseRead:
    options = _dhcp_options(message)
    message_type = options.get(_MESSAGE_TYPE)
    # A BOOTP server's reply has no message type; a DHCP one must be the ACK.
    if message_type is not None and message_type != bytes((_DHCPACK,)):
        raise _Malformed("not a DHCPACK")
    address = ipaddress.IPv4Address(message[_YIADDR])
    if address.is_unspecified:
        raise _Malformed("no leased address")
    lease_time = _lease_time(_option_seconds(options.get(_LEASE_TIME)))
    return LeaseRead(
        interface=interface,
        client="dhcpcd",
        address=str(address),
        prefix_length=_prefix_length(_option_address(options.get(_SUBNET_MASK))),
        server=_option_address(options.get(_SERVER_ID)),
        routers=_option_addresses(options.get(_ROUTERS)),
        dns=_option_addresses(options.get(_DNS_SERVERS)),
        domain=_domain(_option_text(options.get(_DOMAIN_NAME))),
        lease_time_s=lease_time,
        obtained=obtained,
        expires=_plus(obtained, lease_time),
    )


def _dhcpcd_interface(stem: str, known: Collection[str]) -> str | None:
    """The interface of ``<ifname>.lease`` or, on a wireless one, ``<ifname>-<ssid>.lease``.

    An interface name may hold a ``-`` too, so a known interface (the longest that fits)
    is preferred; then the whole stem, when it can be an interface name; then what comes
    before its first ``-``.
    """
    fitting = [name for name in known if stem == name or stem.startswith(f"{name}-")]
    if fitting:
        return max(fitting, key=len)
    for candidate in (stem, stem.partition("-")[0]):
        if _valid_ifname(candidate):
            return candidate
    return None


def _dhcpcd_leases(directory: Path, known: Collection[str]) -> Iterator[_Found]:
    for lease_file in _lease_files(directory, lambda name: name.endswith(".lease")):
        interface = _dhcpcd_interface(lease_file.name.removesuffix(".lease"), known)
        if interface is None:
            _skipped(lease_file, "no interface name in the file name")
            continue
        try:
            lease = _parse_dhcpcd_lease(lease_file.data, interface, lease_file.mtime)
        except _Malformed as problem:
            _skipped(lease_file, problem)
            continue
        yield _Found(lease, lease_file.mtime_ns, lease_file.name)


# --- dhclient: lease { ... } blocks -----------------------------------------------------

# ISC's lexer (common/conflex.c), as far as a lease file needs it: quoted strings with
# backslash escapes, "#" comments to the end of the line, punctuation, and words.
_DHCLIENT_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<punctuation>[{};,])
    | (?P<word>[^\s{};,"\#]+)
    """,
    re.VERBOSE | re.DOTALL,
)
_DHCLIENT_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)
_DHCLIENT_CONTROL_ESCAPES = {"t": "\t", "r": "\r", "n": "\n", "b": "\b"}
_DHCLIENT_DATE = "%Y/%m/%d %H:%M:%S"
_NEVER = "never"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["string", "punctuation", "word"]
    text: str  # a string's text is unquoted and unescaped


def _dhclient_unescape(match: re.Match[str]) -> str:
    octal, hexadecimal, other = match.groups()
    if octal is not None:
        return chr(int(octal, 8) & 0xFF)
    if hexadecimal is not None:
        return chr(int(hexadecimal, 16))
    return _DHCLIENT_CONTROL_ESCAPES.get(other, other)


def _dhclient_tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _DHCLIENT_TOKEN.match(text, position)
        if match is None:
            raise _Malformed("an unterminated string")
        position = match.end()
        if match["string"] is not None:
            unescaped = _DHCLIENT_ESCAPE.sub(_dhclient_unescape, match[0][1:-1])
            tokens.append(_Token("string", unescaped))
        elif match["punctuation"] is not None:
            tokens.append(_Token("punctuation", match[0]))
        elif match["word"] is not None:
            tokens.append(_Token("word", match[0]))
    return tokens


def _dhclient_lease_blocks(tokens: list[_Token]) -> list[list[list[_Token]]]:
    """The statements of each top-level ``lease { ... }`` block, in file order.

    Other blocks (``lease6``, with its nested ``ia-na`` ones) and top-level statements
    (``default-duid``) are passed over; a statement inside a nested block is not one of
    the lease's. Braces are counted, not recursed into, so nesting costs no stack.
    """
    blocks: list[list[list[_Token]]] = []
    depth = 0
    statement: list[_Token] = []
    body: list[list[_Token]] | None = None
    for token in tokens:
        if token.kind != "punctuation" or token.text == ",":
            statement.append(token)
        elif token.text == "{":
            if depth == 0:
                body = [] if statement == [_Token("word", "lease")] else None
            depth += 1
            statement = []
        elif token.text == "}":
            if depth == 0 or statement:
                raise _Malformed("unbalanced braces")
            depth -= 1
            if depth == 0 and body is not None:
                blocks.append(body)
                body = None
        else:  # ";"
            if depth == 1 and body is not None:
                body.append(statement)
            statement = []
    if depth or statement:
        raise _Malformed("cut short inside a statement or block")
    return blocks


def _dhclient_words(tokens: Sequence[_Token]) -> list[str] | None:
    """``a, b, c`` as ``["a", "b", "c"]``; None when it is not a comma-separated list."""
    words = [token.text for token in tokens[::2] if token.kind == "word"]
    separators = tokens[1::2]
    if len(words) != (len(tokens) + 1) // 2 or any(
        token != _Token("punctuation", ",") for token in separators
    ):
        return None
    return words


def _dhclient_time(tokens: Sequence[_Token]) -> datetime | str | None:
    """``4 2026/11/30 12:00:00`` (UTC), ``epoch 1796040000`` or ``never``."""
    words = [token.text for token in tokens if token.kind == "word"]
    if len(words) != len(tokens):
        return None
    if words == [_NEVER]:
        return _NEVER
    if len(words) == 2 and words[0] == "epoch" and (seconds := _whole(words[1])) is not None:
        return _utc_from_timestamp(seconds)
    if len(words) == 3 and words[0].isdigit():
        try:
            return datetime.strptime(f"{words[1]} {words[2]}", _DHCLIENT_DATE).replace(tzinfo=UTC)
        except ValueError:
            return None
    return None


def _dhclient_lease(statements: list[list[_Token]], client: LeaseClient) -> LeaseRead | None:
    interface = address = mask = server = domain = None
    routers: list[str] = []
    dns: list[str] = []
    lease_seconds: int | None = None
    expire: datetime | str | None = None
    for statement in statements:
        if not statement or statement[0].kind != "word":
            continue
        keyword, rest = statement[0].text, statement[1:]
        if keyword == "interface" and len(rest) == 1 and rest[0].kind == "string":
            interface = rest[0].text
        elif keyword == "fixed-address" and len(rest) == 1 and rest[0].kind == "word":
            address = _ipv4(rest[0].text)
        elif keyword == "expire":
            expire = _dhclient_time(rest)
        elif keyword == "option" and len(rest) >= 2 and rest[0].kind == "word":
            name, value = rest[0].text, rest[1:]
            words = _dhclient_words(value) or []
            if name == "subnet-mask" and len(words) == 1:
                mask = _ipv4(words[0])
            elif name == "routers":
                routers = _ipv4_list(words)
            elif name == "domain-name-servers":
                dns = _ipv4_list(words)
            elif name == "dhcp-server-identifier" and len(words) == 1:
                server = _ipv4(words[0])
            elif name == "dhcp-lease-time" and len(words) == 1 and _whole(words[0]) is not None:
                lease_seconds = _whole(words[0])
            elif name == "domain-name" and len(value) == 1 and value[0].kind == "string":
                domain = _domain(value[0].text)
    if interface is None or not _valid_ifname(interface) or address is None:
        return None
    lease_time = _lease_time(lease_seconds)
    written_expiry = expire if isinstance(expire, datetime) else None
    # dhclient's expire is the time it bound plus the lease time, infinite or not.
    obtained = _plus(written_expiry, -lease_seconds) if lease_seconds is not None else None
    infinite = lease_seconds is not None and lease_time is None
    return LeaseRead(
        interface=interface,
        client=client,
        address=address,
        prefix_length=_prefix_length(mask),
        server=server,
        routers=routers,
        dns=dns,
        domain=domain,
        lease_time_s=lease_time,
        obtained=obtained,
        expires=None if infinite else written_expiry,
    )


def _parse_dhclient_leases(text: str, client: LeaseClient) -> list[LeaseRead]:
    """The last complete lease in the file for each interface it names."""
    current: dict[str, LeaseRead] = {}
    for statements in _dhclient_lease_blocks(_dhclient_tokens(text)):
        lease = _dhclient_lease(statements, client)
        if lease is not None:
            current[lease.interface] = lease
    return list(current.values())


def _dhclient_file_leases(lease_file: _LeaseFile, client: LeaseClient) -> Iterator[_Found]:
    try:
        leases = _parse_dhclient_leases(lease_file.data.decode("utf-8", "replace"), client)
    except _Malformed as problem:
        _skipped(lease_file, problem)
        return
    for lease in leases:
        yield _Found(lease, lease_file.mtime_ns, lease_file.name)


def _dhclient_leases(directory: Path) -> Iterator[_Found]:
    def wanted(name: str) -> bool:
        return name.startswith("dhclient") and name.endswith(".leases")

    for lease_file in _lease_files(directory, wanted):
        yield from _dhclient_file_leases(lease_file, "dhclient")


# --- systemd-networkd and NetworkManager's internal client: KEY=VALUE -------------------

_ENV_KEY = re.compile(r"[A-Z][A-Z0-9_]*")
_NETWORKD_FILE = re.compile(r"[1-9][0-9]{0,9}")
# systemd's format_timespan() units, in seconds (a year is 365.25 days, a month 1/12 of it).
_TIMESPAN_UNITS = {
    "y": 31_557_600,
    "month": 2_629_800,
    "w": 604_800,
    "d": 86_400,
    "h": 3_600,
    "min": 60,
    "s": 1,
}
_TIMESPAN_PART = re.compile(r"([0-9]{1,10})(y|month|w|d|h|min|s)")
_MAX_WHOLE_DIGITS = 12  # beyond any lease time or date a file can sensibly hold


def _whole(text: str) -> int | None:
    """A non-negative number of ASCII digits, bounded; None for anything else (``²``,
    Arabic-Indic digits and 5000-digit numbers included: they are no lease data)."""
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_WHOLE_DIGITS):
        return None
    return int(text)


def _env_values(text: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of a systemd-style private state file; the last one wins."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.strip().partition("=")
        if separator and _ENV_KEY.fullmatch(key):
            values[key] = value.strip()
    return values


def _networkd_seconds(text: str | None) -> int | None:
    """``LIFETIME``: whole seconds (systemd 254 and older) or a timespan such as
    ``1d 6h`` (255 and later); None for ``infinity`` or anything else."""
    if text is None:
        return None
    if (whole := _whole(text)) is not None:
        return whole
    parts = text.split()
    if not 0 < len(parts) <= len(_TIMESPAN_UNITS):
        return None
    seconds = 0
    for part in parts:
        match = _TIMESPAN_PART.fullmatch(part)
        if match is None:
            return None
        seconds += int(match[1]) * _TIMESPAN_UNITS[match[2]]
    return seconds


def _parse_networkd_lease(
    text: str, interface: str, client: LeaseClient, obtained: datetime | None
) -> LeaseRead:
    values = _env_values(text)
    address = _ipv4(values.get("ADDRESS", ""))
    if address is None:
        raise _Malformed("no leased address")
    lease_time = _lease_time(_networkd_seconds(values.get("LIFETIME")))
    return LeaseRead(
        interface=interface,
        client=client,
        address=address,
        prefix_length=_prefix_length(_ipv4(values.get("NETMASK", ""))),
        server=_ipv4(values.get("SERVER_ADDRESS", "")),
        routers=_ipv4_list(values.get("ROUTER", "").split()),
        dns=_ipv4_list(values.get("DNS", "").split()),
        domain=_domain(values.get("DOMAINNAME")),
        lease_time_s=lease_time,
        obtained=obtained,
        expires=_plus(obtained, lease_time),
    )


def _networkd_leases(directory: Path, ifnames: Mapping[int, str]) -> Iterator[_Found]:
    def wanted(name: str) -> bool:
        return _NETWORKD_FILE.fullmatch(name) is not None

    for lease_file in _lease_files(directory, wanted):
        index = int(lease_file.name)
        interface = ifnames.get(index, lease_file.name)
        text = lease_file.data.decode("utf-8", "replace")
        try:
            # networkd rewrites the file with the link's state: its mtime is no lease time.
            lease = _parse_networkd_lease(text, interface, "systemd-networkd", None)
        except _Malformed as problem:
            _skipped(lease_file, problem)
            continue
        yield _Found(lease, lease_file.mtime_ns, lease_file.name)


# nm_dhcp_utils_get_leasefile_path(): "<plugin>-<connection uuid>-<ifname>.lease"; the
# uuid's fixed shape tells where an interface name holding "-" begins.
_NETWORKMANAGER_FILE = re.compile(
    r"(?P<plugin>internal|dhclient)-"
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"-(?P<ifname>.+)\.lease"
)


def _networkmanager_leases(directory: Path) -> Iterator[_Found]:
    def wanted(name: str) -> bool:
        return _NETWORKMANAGER_FILE.fullmatch(name) is not None

    for lease_file in _lease_files(directory, wanted):
        match = _NETWORKMANAGER_FILE.fullmatch(lease_file.name)
        if match is None:
            continue
        if match["plugin"] == "dhclient":
            yield from _dhclient_file_leases(lease_file, "NetworkManager")
            continue
        interface = match["ifname"]
        if not _valid_ifname(interface):
            _skipped(lease_file, "no interface name in the file name")
            continue
        text = lease_file.data.decode("utf-8", "replace")
        try:
            lease = _parse_networkd_lease(text, interface, "NetworkManager", lease_file.mtime)
        except _Malformed as problem:
            _skipped(lease_file, problem)
            continue
        yield _Found(lease, lease_file.mtime_ns, lease_file.name)

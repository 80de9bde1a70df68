"""Who the caller is on the network: the peer, or the client a trusted proxy forwards.

The model (docs/security.md, "Proxies and the unix socket"):

- Trust comes from who the peer is, never from what a header says. A TCP peer is
  a proxy when its address is in a configured network; a unix-socket peer is one
  when ``"unix"`` is configured (every peer the socket's mode and group admit) or
  when the kernel's credentials of the peer (``SO_PEERCRED``, put in the scope by
  :mod:`hostcore.protocol`) match a configured ``user:``/``uid:``/``group:``/``gid:``.
- Only a proxy's ``X-Forwarded-For`` is read, from the nearest hop outwards; the
  first hop that is not a proxy is the client. A hop that is not an IP address
  (``unix``, ``unknown``, garbage) ends the walk as the client ``"unknown"``.
- A header never makes anyone local: the caller is local when the peer is (the
  unix socket, a loopback address) and, if a proxy forwarded the request, when
  the forwarded client is a loopback address too. A remote proxy's 127.0.0.1 is
  not this host.
- An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, what a dual-stack socket
  reports for an IPv4 client) is that IPv4 address, for locality and rate limits.
"""

from __future__ import annotations

import grp
import ipaddress
import pwd
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hostcore.context import peer_of
from hostcore.errors import ConfigError

if TYPE_CHECKING:
    from starlette.types import Scope

UNIX_PEER = "unix"
UNKNOWN_CLIENT = "unknown"
_MAPPED_PREFIX = "::ffff:"
_CACHE_SIZE = 1024
_CACHED_HEADER_BYTES = 256

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ProxyResolver:
    """The client's address and whether it is on this host, once per request."""

    def __init__(self, trusted: Sequence[str]) -> None:
        self.trust_unix = UNIX_PEER in trusted
        self.uids: set[int] = set()
        self.gids: set[int] = set()
        networks = []
        for entry in trusted:
            kind, _, name = entry.partition(":")
            if entry == UNIX_PEER:
                continue
            if kind in ("uid", "user"):
                self.uids.add(int(name) if kind == "uid" else _user_id(name))
            elif kind in ("gid", "group"):
                self.gids.add(int(name) if kind == "gid" else _group_id(name))
            else:
                networks.append(ipaddress.ip_network(entry, strict=False))
        self.networks = networks
        self._loopback: dict[str, bool] = {}
        self._proxy: dict[str, bool] = {}
        self._clients: dict[tuple[str, bytes], tuple[str, bool]] = {}

    def caller(self, scope: Scope) -> tuple[str, bool]:
        """The client's address, and whether it is on this host."""
        peer = scope.get("client")
        if peer and peer[0]:
            address = str(peer[0])
            if address.startswith(_MAPPED_PREFIX):
                address = _unmapped(address)
            if not self.networks or not self._is_proxy(address):
                return address, self._is_loopback(address)
            peer_local = self._is_loopback(address)
        else:
            if not self._trusts_unix_peer(scope):
                return UNIX_PEER, True
            address, peer_local = UNIX_PEER, True
        forwarded = b",".join(
            [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
        )
        if not forwarded:
            return address, peer_local
        # What a proxy sends (its client's address) repeats from request to request: the
        # walk's answer is kept, for headers short enough to keep 1024 of.
        key = (address, forwarded)
        found = self._clients.get(key)
        if found is None:
            client = self._forwarded(forwarded, address)
            found = client, peer_local and self._is_loopback(client)
            if len(forwarded) <= _CACHED_HEADER_BYTES:
                if len(self._clients) >= _CACHE_SIZE:
                    self._clients.clear()
                self._clients[key] = found
        return found

    def _trusts_unix_peer(self, scope: Scope) -> bool:
        if self.trust_unix:
            return True
        if not (self.uids or self.gids):
            return False
        peer = peer_of(scope)
        return peer is not None and (peer.uid in self.uids or peer.gid in self.gids)

    def _forwarded(self, forwarded: bytes, address: str) -> str:
        """Walk X-Forwarded-For (every such header, joined by commas) from the nearest hop;
        the first hop that is not a proxy is the client."""
        hops = [hop.strip() for hop in forwarded.decode("latin-1").split(",") if hop.strip()]
        for hop in reversed(hops):
            ip = _ip(hop)
            if ip is None:
                return UNKNOWN_CLIENT
            hop_address = str(ip)[:64]
            if not self._is_proxy(hop_address):
                return hop_address
            address = hop_address
        return address

    def _is_proxy(self, address: str) -> bool:
        found = self._proxy.get(address)
        if found is None:
            ip = _ip(address)
            found = ip is not None and any(ip in network for network in self.networks)
            _remember(self._proxy, address, found)
        return found

    def _is_loopback(self, address: str) -> bool:
        found = self._loopback.get(address)
        if found is None:
            found = is_local(address)
            _remember(self._loopback, address, found)
        return found


def _remember(cache: dict[str, bool], key: str, value: bool) -> None:
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[key] = value


def _ip(text: str) -> IPAddress | None:
    """An address, IPv4-mapped IPv6 as IPv4; None for anything that is not one."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _unmapped(address: str) -> str:
    ip = _ip(address)
    return str(ip) if ip is not None else address


def _user_id(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise ConfigError(f"server.trusted_proxies: no user {name!r} on this host") from None


def _group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"server.trusted_proxies: no group {name!r} on this host") from None


def address_identity(address: str) -> str:
    """The rate-limit identity of an address: one IPv6 client controls a whole /64."""
    ip = _ip(address)
    if ip is None:
        return f"address:{address}"
    if ip.version == 6 and not ip.is_loopback:
        return f"address:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"address:{ip}"


def is_local(address: str) -> bool:
    """Whether a peer address is this host: the unix socket or a loopback address."""
    if address == UNIX_PEER:
        return True
    ip = _ip(address)
    return ip is not None and ip.is_loopback

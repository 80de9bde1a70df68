"""Who the caller is on the network: the peer, or the client a trusted proxy forwards."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

UNIX_PEER = "unix"
_LOCAL_CACHE_SIZE = 1024


class ProxyResolver:
    """The client's address: the peer's, or X-Forwarded-For when the peer is a trusted proxy."""

    def __init__(self, trusted: Sequence[str]) -> None:
        self.trust_unix = UNIX_PEER in trusted
        self.networks = [ipaddress.ip_network(t, strict=False) for t in trusted if t != UNIX_PEER]
        self._local: dict[str, bool] = {}

    def _trusted(self, address: str) -> bool:
        if address == UNIX_PEER:
            return self.trust_unix
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def caller(self, scope: Scope) -> tuple[str, bool]:
        """The client's address, and whether it is on this host."""
        client = self.resolve(scope)
        local = self._local.get(client)
        if local is None:
            if len(self._local) >= _LOCAL_CACHE_SIZE:
                self._local.clear()
            local = self._local[client] = is_local(client)
        return client, local

    def resolve(self, scope: Scope) -> str:
        peer = scope.get("client")
        address = str(peer[0]) if peer and peer[0] else UNIX_PEER
        if address != UNIX_PEER and not self.networks:
            return address  # the common case: no TCP proxy configured, nothing to parse
        if not self._trusted(address):
            return address
        forwarded: list[str] = [
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
        ]
        hops = [hop.strip() for line in forwarded for hop in line.split(",") if hop.strip()]
        # Walk from the nearest hop outwards; the first untrusted one is the client.
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop[:64]
            address = hop
        return address


def address_identity(address: str) -> str:
    """The rate-limit identity of an address: one IPv6 client controls a whole /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address:{address}"
    if ip.version == 6 and not ip.is_loopback:
        return f"address:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"address:{ip}"


def is_local(address: str) -> bool:
    if address == UNIX_PEER:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False

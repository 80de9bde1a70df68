"""Who the caller is: trust comes from the peer, never from a header's text."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

import hostcore.builtin.auth
from hostcore.app import create_app
from hostcore.config import Settings
from hostcore.context import PEER_EXTENSION, Peer, peer_extension
from hostcore.errors import ConfigError
from hostcore.plugins import PluginRegistry, object_source
from hostcore.security import hmac as signing
from hostcore.security.proxies import ProxyResolver, address_identity, is_local
from tests.helpers import (
    LOOPBACK,
    REMOTE,
    WHOAMI,
    Serve,
    ServerThread,
    assert_error,
    signed,
    unix_listener,
)

NGINX = Peer(pid=4242, uid=33, gid=33)
STRANGER = Peer(pid=4343, uid=1000, gid=1000)


def scope(
    client: tuple[str, int] | None = None,
    forwarded: str | None = None,
    peer: Peer | None = None,
) -> dict[str, Any]:
    headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
    found: dict[str, Any] = {"type": "http", "client": client, "headers": headers}
    if peer is not None:
        found["extensions"] = {PEER_EXTENSION: peer_extension(peer)}
    return found


def test_a_forwarded_hop_spelled_unix_is_not_local() -> None:
    for trusted, peer in ((["unix"], None), (["203.0.113.0/24"], ("203.0.113.5", 80))):
        resolver = ProxyResolver(trusted)
        for forwarded in ("unix", "unix, unix", "127.0.0.1, unix", "garbage"):
            assert resolver.caller(scope(peer, forwarded)) == ("unknown", False)


def test_a_header_never_makes_a_remote_peer_local() -> None:
    untrusted = ProxyResolver(["unix"])
    remote_proxy = ProxyResolver(["203.0.113.0/24"])
    for forwarded in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "127.0.0.1, 127.0.0.1"):
        assert untrusted.caller(scope(("203.0.113.5", 1), forwarded)) == ("203.0.113.5", False)
        # A remote proxy's loopback is the proxy's own host.
        client, local = remote_proxy.caller(scope(("203.0.113.5", 1), forwarded))
        assert client in ("127.0.0.1", "::1") and not local


def test_a_proxy_on_this_host_vouches_for_a_loopback_client_only() -> None:
    resolver = ProxyResolver(["unix", "127.0.0.1"])
    assert resolver.caller(scope(None, "127.0.0.1")) == ("127.0.0.1", True)
    assert resolver.caller(scope(None, "198.51.100.7")) == ("198.51.100.7", False)
    assert resolver.caller(scope(None)) == ("unix", True)
    assert resolver.caller(scope(("127.0.0.1", 1), "::1")) == ("::1", True)
    assert resolver.caller(scope(("127.0.0.1", 1), "198.51.100.7")) == ("198.51.100.7", False)
    # The client prepends what it likes; the proxy appends the address it saw.
    spoofed = scope(None, "127.0.0.1, 198.51.100.7")
    assert resolver.caller(spoofed) == ("198.51.100.7", False)


def test_a_remembered_answer_is_the_walks_answer_for_that_peer_and_header() -> None:
    """The walk's answer is kept per (peer, header): asked again, in any order, each pair
    still gets what a fresh resolver would say, and an untrusted peer is never answered
    from what a trusted one sent."""
    cases = [
        (scope(None, "198.51.100.7", NGINX), ("198.51.100.7", False)),
        (scope(None, "198.51.100.7", STRANGER), ("unix", True)),
        (scope(None, "127.0.0.1", NGINX), ("127.0.0.1", True)),
        (scope(("127.0.0.1", 1), "198.51.100.7"), ("198.51.100.7", False)),
        (scope(("203.0.113.5", 1), "127.0.0.1"), ("203.0.113.5", False)),
        (scope(None, "127.0.0.1, " * 100 + "garbage", NGINX), ("unknown", False)),
        (scope(None, "garbage, " * 100 + "198.51.100.8", NGINX), ("198.51.100.8", False)),
    ]
    resolver = ProxyResolver(["uid:33", "127.0.0.1"])
    for _ in range(3):
        for request, expected in [*cases, *reversed(cases)]:
            assert resolver.caller(request) == expected
            assert ProxyResolver(["uid:33", "127.0.0.1"]).caller(request) == expected
    # Two headers are one list (RFC 9110 §5.3): the nearest hop is the last header's.
    split = scope(None, "198.51.100.7", NGINX)
    split["headers"].insert(0, (b"x-forwarded-for", b"198.51.100.9"))
    assert resolver.caller(split) == ("198.51.100.7", False)
    split["headers"].reverse()
    assert resolver.caller(split) == ("198.51.100.9", False)


def test_an_ipv4_mapped_address_is_the_ipv4_address() -> None:
    resolver = ProxyResolver(["unix"])
    assert resolver.caller(scope(("::ffff:127.0.0.1", 1))) == ("127.0.0.1", True)
    assert resolver.caller(scope(("::ffff:198.51.100.7", 1))) == ("198.51.100.7", False)
    proxied = ProxyResolver(["198.51.100.0/24"])
    mapped_proxy = scope(("::ffff:198.51.100.7", 1), "::ffff:203.0.113.9")
    assert proxied.caller(mapped_proxy) == ("203.0.113.9", False)
    assert is_local("::ffff:127.0.0.1")


def test_ipv4_mapped_clients_get_their_own_rate_limit_buckets() -> None:
    first, second = address_identity("::ffff:198.51.100.7"), address_identity("::ffff:203.0.113.9")
    assert first == address_identity("198.51.100.7") == "address:198.51.100.7"
    assert second == "address:203.0.113.9"
    assert address_identity("2001:db8::1") == address_identity("2001:db8::2"), "one /64"


def test_a_unix_peer_is_a_proxy_by_its_uid_or_gid_not_by_the_socket() -> None:
    for trusted in (["uid:33"], ["gid:33"]):
        resolver = ProxyResolver(trusted)
        assert resolver.caller(scope(None, "198.51.100.7", NGINX)) == ("198.51.100.7", False)
        assert resolver.caller(scope(None, "127.0.0.1", NGINX)) == ("127.0.0.1", True)
        # Another local user on the same socket is a local caller, whatever it claims.
        assert resolver.caller(scope(None, "198.51.100.7", STRANGER)) == ("unix", True)
        # No credentials (another server in front): not a proxy.
        assert resolver.caller(scope(None, "198.51.100.7")) == ("unix", True)


def test_users_and_groups_are_looked_up_by_name() -> None:
    import grp
    import pwd

    me = pwd.getpwuid(os.getuid())
    mine = grp.getgrgid(os.getgid())
    myself = Peer(os.getpid(), os.getuid(), os.getgid())
    for trusted in ([f"user:{me.pw_name}"], [f"group:{mine.gr_name}"]):
        resolver = ProxyResolver(trusted)
        assert resolver.caller(scope(None, "198.51.100.7", myself)) == ("198.51.100.7", False)


@pytest.mark.parametrize(
    ("entry", "message"),
    [("user:no-such-user-here", "no user"), ("group:no-such-group-here", "no group")],
)
def test_an_unknown_user_or_group_is_a_config_error(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProxyResolver([entry])


def test_on_the_unix_socket_the_kernel_not_a_header_names_the_proxy(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """End to end: hostcore's protocol reads the peer's uid, the resolver trusts by it."""
    me = os.getuid()
    outcomes = {}
    for trusted in (f"uid:{me}", f"uid:{me + 4242}"):
        settings = settings_factory(f'server.trusted_proxies=["{trusted}"]')
        sources = [object_source("auth", hostcore.builtin.auth)]
        app = create_app(settings, registry=PluginRegistry.load(settings, sources=sources))
        path = tmp_path / f"{len(outcomes)}.sock"
        with ServerThread(app, listener=unix_listener(path), lifespan="on"):
            secret = signing.read_secret(settings.hmac_secret_path("tester"))
            transport = httpx2.HTTPTransport(uds=str(path))
            with httpx2.Client(transport=transport, base_url="http://hostcore") as client:
                outcomes[trusted] = [
                    client.get(
                        WHOAMI, headers={**signed_whoami(secret), "X-Forwarded-For": hop}
                    ).status_code
                    for hop in ("::1", "198.51.100.7")
                ]
    # We are the proxy: the forwarded address counts, and only a loopback one is local.
    assert outcomes[f"uid:{me}"] == [200, 401]
    # Someone else is the proxy: we are a local caller, whatever we forward.
    assert outcomes[f"uid:{me + 4242}"] == [200, 200]


def signed_whoami(secret: bytes) -> dict[str, str]:
    return signing.signed_headers(
        secret, method="GET", path=WHOAMI, query="", client="tester", body=b""
    )


# --- signed requests through proxies: who is local ------------------------------------


def test_forwarded_for_from_an_untrusted_peer_does_not_make_it_local(serve: Serve) -> None:
    client = serve(address=REMOTE)
    for forwarded in ("127.0.0.1", "::1", "127.0.0.1, 127.0.0.1"):
        headers = {**signed(client, "GET", WHOAMI), "X-Forwarded-For": forwarded}
        response = client.get(WHOAMI, headers=headers)
        assert_error(response, 401, "Unauthorized", "accepted only from this host")


def test_behind_a_remote_proxy_no_forwarded_address_is_local(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    # A remote proxy's 127.0.0.1 is that proxy's host, not this one: only a proxy on this
    # host can vouch for a local client (docs/security.md, "Proxies and the unix socket").
    proxied = settings_factory('server.trusted_proxies=["203.0.113.0/24"]')
    client = serve(proxied, address=REMOTE)
    for forwarded in ("127.0.0.1", "::ffff:127.0.0.1", "unix", "198.51.100.7", "127.0.0.1, ::1"):
        headers = {**signed(client, "GET", WHOAMI), "X-Forwarded-For": forwarded}
        response = client.get(WHOAMI, headers=headers)
        assert_error(response, 401, "Unauthorized", "only from this host")
    missing = signed(client, "GET", WHOAMI)
    assert_error(client.get(WHOAMI, headers=missing), 401, "Unauthorized", "only from this host")


def test_behind_a_loopback_proxy_a_forwarded_loopback_client_is_local(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    proxied = settings_factory('server.trusted_proxies=["127.0.0.1"]')
    client = serve(proxied, address=LOOPBACK)
    for forwarded in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        headers = {**signed(client, "GET", WHOAMI), "X-Forwarded-For": forwarded}
        assert client.get(WHOAMI, headers=headers).status_code == 200, forwarded
    # The client prepends a loopback hop; the proxy appends the real address.
    spoofed = {**signed(client, "GET", WHOAMI), "X-Forwarded-For": "127.0.0.1, 198.51.100.7"}
    assert_error(client.get(WHOAMI, headers=spoofed), 401, "Unauthorized", "only from this host")


def test_a_loopback_proxy_forwarding_a_remote_client_is_refused(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    proxied = settings_factory('server.trusted_proxies=["127.0.0.1"]')
    client = serve(proxied, address=LOOPBACK)
    remote = {**signed(client, "GET", WHOAMI), "X-Forwarded-For": "198.51.100.7"}
    assert_error(client.get(WHOAMI, headers=remote), 401, "Unauthorized", "only from this host")
    assert client.get(WHOAMI, headers=signed(client, "GET", WHOAMI)).status_code == 200

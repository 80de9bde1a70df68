"""The request context: one typed object per request, kept in the ASGI scope, and what it
derives (the principal's subject, the rate-limit headers, a unix-socket peer)."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest

from hostcore.context import (
    NO_REQUEST,
    PEER_EXTENSION,
    Peer,
    Principal,
    RateLimitResult,
    RequestContext,
    attach,
    context_of,
    current_context,
    peer_extension,
    peer_of,
    request_id_var,
)


def test_a_principals_subject_is_its_kind_and_name_and_not_part_of_equality() -> None:
    panel = Principal(kind="client", name="panel", scopes=frozenset({"probe:read"}))
    assert panel.subject == "client:panel"
    assert Principal(kind="user", name="panel", scopes=frozenset()).subject == "user:panel"
    assert panel == Principal(kind="client", name="panel", scopes=frozenset({"probe:read"}))


def test_an_allowed_request_is_told_its_budget_and_a_refused_one_when_to_retry() -> None:
    allowed = RateLimitResult(True, 10, 7, 1000.2, 0)
    assert allowed.headers() == [
        (b"x-ratelimit-limit", b"10"),
        (b"x-ratelimit-remaining", b"7"),
        (b"x-ratelimit-reset", b"1001"),
    ]
    refused = RateLimitResult(False, 10, 0, 1000.0, 42)
    assert refused.headers()[-2:] == [(b"x-ratelimit-reset", b"1000"), (b"retry-after", b"42")]


def test_a_unix_socket_peer_travels_in_the_scope_as_an_extension() -> None:
    peer = Peer(pid=4242, uid=33, gid=44)
    assert peer_of({"extensions": {PEER_EXTENSION: peer_extension(peer)}}) == peer


@pytest.mark.parametrize(
    "scope", [{}, {"extensions": None}, {"extensions": {}}, {"extensions": {"other": {}}}]
)
def test_a_scope_without_the_extension_has_no_peer(scope: dict[str, Any]) -> None:
    assert peer_of(scope) is None


def test_the_context_is_kept_with_the_request_and_found_again() -> None:
    context = RequestContext(request_id="ctx-7", client="192.0.2.1", local=False)
    scope: dict[str, Any] = {"type": "http"}

    def serve() -> tuple[str, RequestContext | None]:
        attach(scope, context)
        return request_id_var.get(), current_context.get()

    # A copy of the context variables, as a server gives each request its own task.
    request_id, current = contextvars.copy_context().run(serve)
    assert context_of(scope) is context
    assert (request_id, current) == ("ctx-7", context)
    assert request_id_var.get() == NO_REQUEST, "nothing leaks outside the request"


@pytest.mark.parametrize("scope", [{}, {"state": {}}, {"state": {"hostcore": "not a context"}}])
def test_outside_hostcores_middleware_there_is_no_context(scope: dict[str, Any]) -> None:
    assert context_of(scope) is None

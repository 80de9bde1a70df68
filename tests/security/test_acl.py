"""Scopes with wildcards: what a grant allows (also as a route checks it), and narrowing a
token's scopes to a grant."""

from __future__ import annotations

import itertools

import pytest
from fastapi.testclient import TestClient

from hostcore.security.acl import allows, narrowed
from tests.helpers import PROBE_WRITE, bearer

PATTERNS = ["*", "*:*", "*:read", "*:write", "probe:*", "probe:read", "probe:write", "other:read"]
REQUIRED = ["probe:read", "probe:write", "other:read", "other:write"]


@pytest.mark.parametrize(
    ("scopes", "granted", "expected"),
    [
        (["*"], ["probe:read"], {"probe:read"}),
        (["probe:*"], ["*:read"], {"probe:read"}),
        (["*:read"], ["probe:*", "other:write"], {"probe:read"}),
        (["probe:read", "probe:write"], ["probe:read"], {"probe:read"}),
        (["probe:write"], ["other:*"], set()),
        (["x:y"], ["*"], {"x:y"}),
        (["*"], ["*"], {"*"}),
    ],
)
def test_narrowed_keeps_what_both_cover(
    scopes: list[str], granted: list[str], expected: set[str]
) -> None:
    assert narrowed(scopes, granted) == expected


def test_narrowed_allows_exactly_what_both_allow() -> None:
    for size in (1, 2):
        for scopes in itertools.combinations(PATTERNS, size):
            for granted in itertools.combinations(PATTERNS, size):
                both = narrowed(scopes, granted)
                for required in REQUIRED:
                    expected = allows(scopes, required) and allows(granted, required)
                    assert allows(both, required) == expected, (scopes, granted, required)


# --- a grant over HTTP ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "allowed"),
    [
        (["probe:*"], True),
        (["*:write"], True),
        (["*"], True),
        (["*:read"], False),
        (["other:write"], False),
        (["probe:writer"], False),
    ],
)
def test_wildcard_grants(shared: TestClient, granted: list[str], allowed: bool) -> None:
    client = shared
    response = client.post(PROBE_WRITE, headers=bearer(client, granted))
    assert response.status_code == (200 if allowed else 403), response.text

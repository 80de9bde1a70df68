"""Scopes: ``area:action`` with ``*`` wildcards on either side, or ``*`` for everything."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

# The scope of administrators: tokens for others, revocation, keys, activity, and the
# failure reasons and health details of every plugin.
ADMIN_SCOPE = "auth:admin"


@lru_cache(maxsize=4096)
def _grant_matches(granted: str, required: str) -> bool:
    if granted in ("*", required):
        return True
    g_area, _, g_action = granted.partition(":")
    r_area, _, r_action = required.partition(":")
    return g_area in ("*", r_area) and g_action in ("*", r_action)


def allows(granted: Iterable[str], required: str) -> bool:
    """Whether any granted scope covers ``required``."""
    return any(_grant_matches(scope, required) for scope in granted)


def uncovered(requested: Iterable[str], granted: Iterable[str]) -> list[str]:
    """The requested scopes that the granted ones do not cover (empty: all covered).

    A request may itself use wildcards (``system:*``); it is covered only by a
    grant at least as wide, so nobody widens their own scopes with a wildcard.
    """
    grants = list(granted)
    return [scope for scope in requested if not any(_grant_matches(g, scope) for g in grants)]


def _common_part(first: str, second: str) -> str | None:
    if first == "*":
        return second
    return first if second in ("*", first) else None


def _common_scope(first: str, second: str) -> str | None:
    """The widest scope that both ``first`` and ``second`` cover, or None."""
    if first == "*":
        return second
    if second == "*":
        return first
    first_area, _, first_action = first.partition(":")
    second_area, _, second_action = second.partition(":")
    area = _common_part(first_area, second_area)
    action = _common_part(first_action, second_action)
    return None if area is None or action is None else f"{area}:{action}"


def narrowed(scopes: Iterable[str], granted: Iterable[str]) -> frozenset[str]:
    """``scopes`` cut down to what ``granted`` covers: a token's scopes under today's grant.

    For every concrete scope ``r``: ``allows(narrowed(s, g), r)`` exactly when
    ``allows(s, r)`` and ``allows(g, r)``, wildcards on either side included.
    """
    grants = list(granted)
    found = (_common_scope(scope, grant) for scope in scopes for grant in grants)
    return frozenset(scope for scope in found if scope is not None)

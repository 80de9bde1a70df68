"""Scopes: ``area:action`` with ``*`` wildcards on either side, or ``*`` for everything."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache


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

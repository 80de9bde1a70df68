"""Fixtures of the network plugin's tests: throwaway namespaces (see ``netns.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.builtin.network.netns import Netns, namespaces, require_namespaces


@pytest.fixture
def two_namespaces() -> Iterator[tuple[Netns, Netns]]:
    """Two fresh namespaces (``lo`` up), deleted after the test with the processes it started."""
    require_namespaces()
    with namespaces(2) as (a, b):
        yield a, b


@pytest.fixture
def one_namespace() -> Iterator[Netns]:
    require_namespaces()
    with namespaces(1) as (a,):
        yield a

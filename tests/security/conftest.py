"""Fixtures of the security suite: a migrated store of a test's own, and the real two-worker
server the integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hostcore.db.engine import Database
from hostcore.db.migrate import lineages, migration_lock, upgrade
from tests.helpers import (
    SERVER_CONFIG,
    RealServer,
    empty_postgres,
    postgres_url,
    start_real_server,
    stop_group,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite store with hostcore's tables, for the security modules used without an app."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    async with migration_lock(database):
        await upgrade(database, lineages({}))
    yield database
    await database.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A store with hostcore's tables on each backend: SQLite, and the PostgreSQL database
    ``HOSTCORE_TEST_POSTGRES_URL`` names (emptied first; .ci/postgres.sh makes one)."""
    if request.param == "postgresql":
        url = postgres_url()
        await empty_postgres(url)
        database = Database(url)
    else:
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    async with migration_lock(database):
        await upgrade(database, lineages({}))
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    root = tmp_path_factory.mktemp("real-server")
    config = root / "server.toml"
    config.write_text(SERVER_CONFIG)
    server = start_real_server(
        root, "--config", str(config), HOSTCORE_AUTH__CLIENTS__LIMITED__SCOPES='["*"]'
    )
    try:
        yield server
    finally:
        stop_group(server.process)

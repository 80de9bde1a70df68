"""Fixtures of the security suite: a migrated store of a test's own, and the real two-worker
server the integration tests share."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hostcore.db.engine import Database
from hostcore.db.migrate import lineages, migration_lock, upgrade
from tests.helpers import (
    SERVER_CONFIG,
    RealServer,
    accepts,
    answers,
    empty_postgres,
    hostcore_command,
    isolated_environ,
    postgres_url,
    stop_group,
    wait_for,
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
    sock = root / "run" / "hostcore.sock"
    sock.parent.mkdir(mode=0o700)
    config = root / "server.toml"
    config.write_text(SERVER_CONFIG)
    env = isolated_environ(
        root,
        HOSTCORE_SERVER__UDS=str(sock),
        HOSTCORE_SERVER__WORKERS="2",
        HOSTCORE_AUTH__CLIENTS__LIMITED__SCOPES='["*"]',
        # The access line names the worker (pid) that served each request id.
        HOSTCORE_LOGGING__ACCESS_LOG="true",
    )
    with (root / "server.stdout").open("wb") as out, (root / "server.stderr").open("wb") as err:
        process = subprocess.Popen(
            hostcore_command("serve", "--config", str(config)),
            env=env,
            cwd=root,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    server = RealServer(root, env, sock, process)
    try:
        wait_for(lambda: accepts(sock), 30, "gunicorn to listen on the socket")
        with server.connection() as http:
            wait_for(lambda: answers(http, "/api/v1/health"), 30, "the workers to answer")
        yield server
    finally:
        stop_group(process)

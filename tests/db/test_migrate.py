from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from hostcore.app import create_app
from hostcore.config import Settings
from hostcore.db.engine import Database
from hostcore.db.migrate import (
    CORE_LINEAGE,
    CORE_VERSIONS,
    Lineage,
    core_lineage,
    current,
    declared_heads,
    history,
    lineages,
    migration_lock,
    script_directory,
    upgrade,
)
from tests.helpers import (
    bearer,
    empty_postgres,
    hostcore_command,
    isolated_environ,
    postgres_url,
)

EXAMPLE_MIGRATIONS = (
    Path(__file__).resolve().parents[2] / "examples/hostcore-hello/src/hostcore_hello/migrations"
)


def sqlite(tmp_path: Path, name: str = "store.db") -> Database:
    return Database(f"sqlite+aiosqlite:///{tmp_path / name}")


async def schema(db: Database) -> dict[str, list[str]]:
    async with db.engine.connect() as connection:

        def read(sync: object) -> dict[str, list[str]]:
            inspector = inspect(sync)
            return {
                table: sorted(column["name"] for column in inspector.get_columns(table))
                for table in sorted(inspector.get_table_names())
            }

        return await connection.run_sync(read)


async def migrate(
    db: Database, found: list[Lineage], target: str = "heads"
) -> dict[str, list[str]]:
    async with migration_lock(db):
        return await upgrade(db, found, target=target)


# hostcore's revisions, oldest first: every file in db/versions, in its chain.
CORE_REVISIONS = [
    rev.revision
    for rev in reversed(
        list(script_directory(Lineage(CORE_LINEAGE, CORE_VERSIONS)).walk_revisions())
    )
]
CORE_HEAD = CORE_REVISIONS[-1]


async def test_fresh_database_to_head(tmp_path: Path) -> None:
    db = sqlite(tmp_path)
    found = [*lineages({}), Lineage("hello", EXAMPLE_MIGRATIONS)]
    applied = await migrate(db, found)
    assert applied == {CORE_LINEAGE: CORE_REVISIONS, "hello": ["hello_0001"]}
    assert await current(db, found) == {CORE_LINEAGE: [CORE_HEAD], "hello": ["hello_0001"]}
    tables = await schema(db)
    for table in (
        "signing_keys",
        "tokens",
        "users",
        "hmac_nonces",
        "activity",
        "login_failures",
        "hello_greetings",
    ):
        assert table in tables
    assert "alembic_version_hostcore" in tables and "alembic_version_hello" in tables
    assert await migrate(db, found) == {CORE_LINEAGE: [], "hello": []}
    await db.dispose()


@pytest.mark.parametrize(
    "start",
    [
        rev.revision
        for rev in script_directory(
            Lineage(CORE_LINEAGE, lineages({})[0].versions)
        ).walk_revisions()
    ],
)
async def test_upgrade_from_every_earlier_revision(tmp_path: Path, start: str) -> None:
    found = lineages({})
    reference = sqlite(tmp_path, "reference.db")
    await migrate(reference, found)
    expected = await schema(reference)
    db = sqlite(tmp_path)
    await migrate(db, found, target=start)
    assert await current(db, found) == {CORE_LINEAGE: [start]}
    await migrate(db, found)
    assert await schema(db) == expected
    await reference.dispose()
    await db.dispose()


async def test_history_marks_applied_and_pending(tmp_path: Path) -> None:
    db = sqlite(tmp_path)
    found = lineages({})
    await migrate(db, found, target="0001")
    rows = [(row.revision, row.applied) for row in await history(db, found)]
    assert rows == [("0001", True), *((rev, False) for rev in CORE_REVISIONS[1:])]
    await db.dispose()


async def test_a_plugin_lineage_is_independent(tmp_path: Path) -> None:
    """Dropping a plugin's lineage (disabled, uninstalled) leaves the rest resolvable."""
    db = sqlite(tmp_path)
    await migrate(db, [*lineages({}), Lineage("hello", EXAMPLE_MIGRATIONS)])
    assert await migrate(db, lineages({})) == {CORE_LINEAGE: []}
    assert await current(db, lineages({})) == {CORE_LINEAGE: [CORE_HEAD]}
    await db.dispose()


async def test_sqlite_runs_with_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", busy_timeout_ms=4321)
    async with db.engine.connect() as connection:
        pragmas = {
            name: (await connection.execute(text(f"PRAGMA {name}"))).scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "cache_size")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 4321,
        "foreign_keys": 1,
        "cache_size": -512,  # KiB: a bounded page cache per connection
    }
    await db.dispose()


def test_two_processes_starting_at_once_migrate_once(tmp_path: Path) -> None:
    env = isolated_environ(tmp_path)
    processes = [
        subprocess.Popen(
            hostcore_command("db", "upgrade"),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    reports = sorted(out for out, _ in outputs)
    # The built-in bluetooth plugin has a lineage of its own.
    migrated = f"hostcore: {', '.join(CORE_REVISIONS)}\nbluetooth: bluetooth_0001\n"
    done = "hostcore: already up to date\nbluetooth: already up to date\n"
    assert reports == [migrated, done], outputs


def test_db_commands(tmp_path: Path) -> None:
    env = isolated_environ(tmp_path)

    def run(*args: str) -> str:
        result = subprocess.run(
            hostcore_command("db", *args),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout

    assert run("current") == "hostcore: empty (not migrated)\nbluetooth: empty (not migrated)\n"
    assert "pending" in run("history")
    run("upgrade")
    assert run("current") == f"hostcore: {CORE_HEAD}\nbluetooth: bluetooth_0001\n"
    assert run("history").count("applied") == len(CORE_REVISIONS) + 1  # + bluetooth_0001


@pytest.fixture(name="postgres_url")
def postgres_url_fixture() -> str:
    return postgres_url()


async def test_postgresql_migrates_once_under_its_advisory_lock(postgres_url: str) -> None:
    await empty_postgres(postgres_url)
    found = [*lineages({}), Lineage("hello", EXAMPLE_MIGRATIONS)]
    first, second = Database(postgres_url), Database(postgres_url)
    results = await asyncio.gather(migrate(first, found), migrate(second, found))
    assert sorted(map(str, results)) == sorted(
        [
            str({CORE_LINEAGE: CORE_REVISIONS, "hello": ["hello_0001"]}),
            str({CORE_LINEAGE: [], "hello": []}),
        ]
    ), "one process migrates, the other finds nothing to do"
    assert await current(first, found) == {CORE_LINEAGE: [CORE_HEAD], "hello": ["hello_0001"]}
    await first.dispose()
    await second.dispose()


def test_the_whole_app_runs_on_postgresql_unchanged(
    postgres_url: str, settings_factory: Callable[..., Settings]
) -> None:
    asyncio.run(empty_postgres(postgres_url))
    settings = settings_factory(f"database.url={postgres_url}")
    app = create_app(settings)  # the installed plugins, the built-in auth among them
    with TestClient(app) as client:
        headers = bearer(client, ["auth:admin"])
        whoami = client.get("/api/v1/auth/whoami", headers=headers)
        assert whoami.status_code == 200, whoami.text
        jti = client.get("/api/v1/auth/tokens", headers=headers).json()[0]["jti"]
        client.portal.call(client.app.state.security.activity.flush)  # type: ignore[union-attr, attr-defined]
        activity = client.get("/api/v1/auth/activity", headers=headers).json()
        assert any(row["route"] == "/api/v1/auth/whoami" for row in activity), [
            r["route"] for r in activity
        ]
        assert client.delete(f"/api/v1/auth/tokens/{jti}", headers=headers).json() == {"revoked": 1}
        refused = client.get("/api/v1/auth/whoami", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["detail"] == "token has been revoked"


# --- deciding "nothing to do" without Alembic ------------------------------------------------


@pytest.mark.parametrize("lineage", [core_lineage(), Lineage("hello", EXAMPLE_MIGRATIONS)])
def test_the_heads_read_from_the_scripts_are_alembics(lineage: Lineage) -> None:
    assert declared_heads(lineage) == frozenset(script_directory(lineage).get_heads())


def test_a_script_that_does_not_say_its_revision_plainly_leaves_it_to_alembic(
    tmp_path: Path,
) -> None:
    (tmp_path / "0001_odd.py").write_text('revision = "0" + "001"\ndown_revision = None\n')
    assert declared_heads(Lineage("odd", tmp_path)) is None
    (tmp_path / "0001_odd.py").write_text("down_revision = None\n")
    assert declared_heads(Lineage("odd", tmp_path)) is None
    # Only the part before the first function is read: ids set after one are not seen.
    (tmp_path / "0001_odd.py").write_text(
        'down_revision = None\n\ndef upgrade() -> None:\n    pass\n\nrevision = "0001"\n'
    )
    assert declared_heads(Lineage("odd", tmp_path)) is None
    (tmp_path / "0001_odd.py").write_text(
        'revision = "0001"\ndown_revision = None\n\ndef upgrade() -> None:\n    x = (\n'
    )
    assert declared_heads(Lineage("odd", tmp_path)) == {"0001"}, "a body is never parsed"


def test_a_current_store_is_checked_without_importing_alembic(tmp_path: Path) -> None:
    """Every worker checks at start; only one that finds something to do loads Alembic
    (with Mako and Pygments, some 11 MiB)."""
    script = (
        "import asyncio, sys\n"
        "from hostcore.db.engine import Database\n"
        "from hostcore.db.migrate import lineages, migration_lock, upgrade\n"
        f"db = Database('sqlite+aiosqlite:///{tmp_path / 'store.db'}')\n"
        "async def main():\n"
        "    async with migration_lock(db):\n"
        "        print(sum(map(len, (await upgrade(db, lineages({}))).values())))\n"
        "    await db.dispose()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )

    def run() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
        )
        return done.stdout.split()

    applied, loaded = run()
    assert int(applied) > 0 and loaded == "True", "a new store: migrated, with Alembic"
    assert run() == ["0", "False"], "a current store: nothing to do, no Alembic"

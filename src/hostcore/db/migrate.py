"""Migrations: one Alembic lineage per plugin, each with its own version table.

hostcore's own tables are the ``hostcore`` lineage; every plugin that returns
a directory from ``hostcore_migrations`` gets a lineage named after it, with
the version table ``alembic_version_<name>``. Separate version tables keep a
plugin's history independent: disabling or uninstalling a plugin leaves
nothing the others cannot resolve.

Exactly one process migrates at a time: a file lock beside a SQLite database,
an advisory lock on PostgreSQL. The others wait, then find nothing to do.

Alembic (with Mako and Pygments, some 11 MiB in every process that imports it)
is imported only to migrate: whether a lineage is at its head is decided by
reading the revision identifiers of its scripts (``revision`` and
``down_revision``, as Alembic reads them) and the version table, so a worker
that finds the store current never loads it.
"""

from __future__ import annotations

import ast
import asyncio
import fcntl
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

from hostcore.db.engine import Database, sqlite_path
from hostcore.errors import Unavailable

CORE_LINEAGE = "hostcore"
CORE_VERSIONS = Path(__file__).parent / "versions"
ENVIRONMENT = Path(__file__).parent / "alembic"
PG_LOCK_KEY = 0x686F7374  # "host"
LOCK_WAIT_S = 300

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lineage:
    name: str
    versions: Path

    @property
    def version_table(self) -> str:
        return "alembic_version_" + re.sub(r"[^a-z0-9_]", "_", self.name)


@dataclass(frozen=True)
class RevisionInfo:
    lineage: str
    revision: str
    down_revision: str | None
    message: str
    applied: bool


def core_lineage() -> Lineage:
    return Lineage(CORE_LINEAGE, CORE_VERSIONS)


def lineages(plugin_directories: Mapping[str, Path]) -> list[Lineage]:
    """hostcore's lineage, then one per plugin directory (name -> migration scripts)."""
    return [core_lineage(), *(Lineage(name, path) for name, path in plugin_directories.items())]


def _config(lineage: Lineage, connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ENVIRONMENT))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(lineage.versions))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = lineage.version_table
    return config


def script_directory(lineage: Lineage) -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(ENVIRONMENT))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(lineage.versions))
    return ScriptDirectory.from_config(config)


def _current(connection: Connection, lineage: Lineage) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": lineage.version_table})
    return set(context.get_current_heads())


def _applied_set(script: ScriptDirectory, current: set[str]) -> set[str]:
    if not current:
        return set()
    return {rev.revision for rev in script.iterate_revisions(tuple(current), "base")}


def declared_heads(lineage: Lineage) -> frozenset[str] | None:
    """The head revisions of a lineage's scripts, read without Alembic: every script's
    module-level ``revision`` and ``down_revision``. None when a script does not say
    them plainly (Alembic then decides)."""
    revisions: set[str] = set()
    downs: set[str] = set()
    try:
        scripts = sorted(lineage.versions.glob("*.py"))
    except OSError:
        return None
    for path in scripts:
        if path.name.startswith(("__init__", ".#")):
            continue  # files Alembic skips too
        try:
            found = _revision_ids(ast.parse(_header(path.read_bytes())))
        except (OSError, SyntaxError, ValueError, TypeError):  # literal_eval's refusals too
            return None
        if found is None:
            return None
        revision, down = found
        revisions.add(revision)
        downs.update(down)
    return frozenset(revisions - downs)


def _header(script: bytes) -> bytes:
    """A script up to its first function: where Alembic writes the revision ids.

    Parsing only this much keeps the syntax trees of the upgrade and downgrade bodies
    out of memory (a server's start would otherwise keep their high-water mark).
    """
    at = script.find(b"\ndef ")
    return script if at == -1 else script[: at + 1]


def _revision_ids(module: ast.Module) -> tuple[str, tuple[str, ...]] | None:
    values: dict[str, object] = {}
    for node in module.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            values[target.id] = ast.literal_eval(value) if value is not None else None
    revision, down = values.get("revision"), values.get("down_revision")
    if not isinstance(revision, str) or "down_revision" not in values:
        return None
    if down is None:
        return revision, ()
    if isinstance(down, str):
        return revision, (down,)
    if isinstance(down, tuple | list) and all(isinstance(each, str) for each in down):
        return revision, tuple(down)
    return None


def _stored_heads(connection: Connection, lineage: Lineage) -> frozenset[str]:
    """What the version table says (nothing: no table yet), read without Alembic."""
    if not inspect(connection).has_table(lineage.version_table):
        return frozenset()
    rows = connection.execute(text(f"SELECT version_num FROM {lineage.version_table}"))  # noqa: S608
    return frozenset(str(row[0]) for row in rows)


def _upgrade(connection: Connection, lineage: Lineage, target: str) -> list[str]:
    heads = declared_heads(lineage) if target == "heads" else None
    if heads is not None and _stored_heads(connection, lineage) == heads:
        return []  # current: nothing to do, and no Alembic to load
    from alembic import command

    script = script_directory(lineage)
    before = _applied_set(script, _current(connection, lineage))
    command.upgrade(_config(lineage, connection), target)
    after = _applied_set(script, _current(connection, lineage))
    return [
        rev.revision
        for rev in reversed(list(script.walk_revisions()))
        if rev.revision in after - before
    ]


@asynccontextmanager
async def migration_lock(db: Database) -> AsyncIterator[None]:
    """Hold the one lock that lets a single process migrate; the others wait here."""
    path = sqlite_path(db.url)
    if path is not None:
        fd = os.open(path.with_name(f"{path.name}.migrate.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await _flock(fd, path)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    elif db.url.get_backend_name() == "postgresql":
        async with db.engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
            try:
                yield
            finally:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY}
                )
    else:
        yield


async def _flock(fd: int, path: Path) -> None:
    """Wait for the lock without a blocked thread, so a stop signal still gets through."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"another process has held the migration lock of {path} for {LOCK_WAIT_S}s"
                ) from None
            await asyncio.sleep(0.05)


async def upgrade(
    db: Database, found: list[Lineage], *, target: str = "heads"
) -> dict[str, list[str]]:
    """Bring every lineage to ``target``; returns the revisions this call applied.

    Call it inside ``migration_lock(db)``.
    """
    applied: dict[str, list[str]] = {}
    for lineage in found:
        async with db.engine.begin() as connection:
            revisions = await connection.run_sync(_upgrade, lineage, target)
        applied[lineage.name] = revisions
        if revisions:
            log.info("store: %s migrated through %s", lineage.name, ", ".join(revisions))
    return applied


async def current(db: Database, found: list[Lineage]) -> dict[str, list[str]]:
    result = {}
    async with db.engine.connect() as connection:
        for lineage in found:
            result[lineage.name] = sorted(await connection.run_sync(_current, lineage))
    return result


async def history(db: Database, found: list[Lineage]) -> list[RevisionInfo]:
    rows = []
    async with db.engine.connect() as connection:
        for lineage in found:
            script = script_directory(lineage)
            applied = _applied_set(script, await connection.run_sync(_current, lineage))
            for rev in reversed(list(script.walk_revisions())):
                down = rev.down_revision
                rows.append(
                    RevisionInfo(
                        lineage=lineage.name,
                        revision=rev.revision,
                        down_revision=down
                        if isinstance(down, str) or down is None
                        else ",".join(down),
                        message=(rev.doc or "").strip(),
                        applied=rev.revision in applied,
                    )
                )
    return rows

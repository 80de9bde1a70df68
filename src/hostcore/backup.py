"""Backups: the store, the master key and the secrets in one private archive, and back.

What an archive (a tar.gz) holds, and why:

- ``manifest.json``, always the first member: the format, hostcore's version, when,
  the store's migration heads per lineage, and for every other member its role,
  original path, mode, size and sha256.
- ``store.db``: a SQLite store copied with SQLite's backup API in one step, from a
  read connection that waits ``database.busy_timeout_ms`` for a lock. One step is
  one read transaction: the copy is the store as it was at one moment, while the
  server goes on writing (in WAL mode readers and the writer do not wait for each
  other). A PostgreSQL store is not copied: ``pg_dump`` is the tool for that.
- ``master.key``: without it the signing keys in the store cannot be decrypted.
- ``secrets/shared.secret``, ``secrets/clients/<client>.secret``: the HMAC secrets
  the configuration names; they are files, not rows in the store.
- ``database-url``: ``database.url_file``, when the configuration names one.

The archive is created 0600 by ``os.open`` (never the umask's mode, not even for a
moment) under a temporary name beside FILE and linked to FILE once complete: FILE is
never half-written, and an existing one is replaced only when asked.

Restoring trusts nothing in the archive. Members are read as a stream; each must be
a regular file named by the manifest, once, of the size the manifest gives, and its
sha256 must match; a member's name is never used as a path: where each one goes
follows from its role and the restoring configuration. Everything is written under
temporary names beside its target and checked (checksums, the store's migration
heads against what the installed hostcore and plugins know, ``PRAGMA
integrity_check``) before anything in place is touched; files found in place are
moved aside with a timestamp, never deleted.

Everything here blocks on the file system and SQLite: call it from a thread, or
from the command line.
"""

from __future__ import annotations

import contextlib
import datetime
import grp
import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import stat
import tarfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from sqlalchemy.engine import make_url

from hostcore import __version__
from hostcore.config import ClientName, Settings
from hostcore.control import PID_FILE, server_pid
from hostcore.db.engine import sqlite_path
from hostcore.db.migrate import Lineage, script_directory
from hostcore.errors import ConfigError, ControlError

FORMAT = 1
MANIFEST_NAME = "manifest.json"
MASTER_KEY_FILE = "master.key"
VERSION_TABLE_PREFIX = "alembic_version_"
ASIDE_INFIX = ".before-restore-"
MAX_MANIFEST_BYTES = 1 << 20
MAX_SECRET_FILE_BYTES = 64 << 10
MAX_STORE_BYTES = 64 << 30
MAX_MEMBERS = 4096
_CHUNK = 1 << 20
_STORE_MODE = 0o600
_SECRET_MODE_LIMIT = 0o640
_PRIVATE_DIRECTORY = 0o700
_SQLITE_SIDE_FILES = ("-wal", "-shm")

Role = Literal["store", "master_key", "shared_secret", "client_secret", "database_url_file"]
LineageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
Revision = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,64}$")]


# --- errors ------------------------------------------------------------------------------


class BackupRefused(Exception):
    """A backup or restore that cannot be done as asked; the message says why."""


class NeedsFlag(BackupRefused):
    """Refused until the command line says so: ``--force`` to replace what exists,
    ``--keys-only`` to restore no store into a PostgreSQL configuration."""


class ServerRunning(BackupRefused):
    """A restore while the server runs would change the store under it."""


class ArchiveInvalid(BackupRefused):
    """The archive is not one hostcore wrote, or was changed since."""


class StoreTooNew(BackupRefused):
    """The archived store has migrations the installed hostcore or plugins do not know."""


# --- the manifest ------------------------------------------------------------------------


def member_name(role: Role, client: str | None) -> str:
    """The archive name of a member: fixed by its role, so a restore expects exact names."""
    if role == "client_secret":
        return f"secrets/clients/{client}.secret"
    return {
        "store": "store.db",
        "master_key": MASTER_KEY_FILE,
        "shared_secret": "secrets/shared.secret",
        "database_url_file": "database-url",
    }[role]


def size_limit(role: Role, max_store_bytes: int = MAX_STORE_BYTES) -> int:
    return max_store_bytes if role == "store" else MAX_SECRET_FILE_BYTES


class Member(BaseModel):
    """One archived file: what it is, where it was, and how to check it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Role
    client: ClientName | None = None
    path: str = Field(max_length=4096, description="Where it was (shown, never used).")
    mode: int = Field(ge=0, le=0o777)
    group: str | None = Field(None, max_length=256)
    size: int = Field(ge=0)
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

    @model_validator(mode="after")
    def _named_by_role(self) -> Member:
        if (self.role == "client_secret") != (self.client is not None):
            raise ValueError("a client is named by client secrets, and only by them")
        if self.name != member_name(self.role, self.client):
            raise ValueError(f"member {self.name!r} does not have its role's name")
        if self.size > size_limit(self.role):
            raise ValueError(f"member {self.name} is larger than a {self.role} may be")
        return self


class Missing(BaseModel):
    """A file the configuration names that was not there to back up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    client: ClientName | None = None
    path: str = Field(max_length=4096)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1]
    hostcore_version: str = Field(max_length=64)
    created_at: datetime.datetime
    store_backend: str = Field(max_length=64)
    heads: dict[LineageName, list[Revision]] = Field(default_factory=dict)
    files: list[Member] = Field(max_length=MAX_MEMBERS)
    missing: list[Missing] = Field(default_factory=list, max_length=MAX_MEMBERS)

    @model_validator(mode="after")
    def _each_name_once(self) -> Manifest:
        names = [member.name for member in self.files]
        if len(set(names)) != len(names):
            raise ValueError("a member is listed twice")
        return self

    @property
    def store(self) -> Member | None:
        return next((member for member in self.files if member.role == "store"), None)


# --- what the configuration names --------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A key or secret file to back up: its role, its client, and where it is."""

    role: Role
    client: str | None
    path: Path


def key_and_secret_files(settings: Settings) -> list[Source]:
    """Every key and secret file the configuration names, each once: the master key,
    the shared HMAC secret when a client uses it or it exists, each client's own
    secret (hostcore's or its ``secret_file``), and ``database.url_file``."""
    auth = settings.auth
    found = [Source("master_key", None, settings.data_dir / MASTER_KEY_FILE)]
    shared = settings.hmac_secret_path()
    if shared.exists() or any(client.shared_secret for client in auth.clients.values()):
        found.append(Source("shared_secret", None, shared))
    for name in sorted(auth.clients):
        if not auth.clients[name].shared_secret:
            found.append(Source("client_secret", name, settings.hmac_secret_path(name)))
    if settings.database.url_file is not None:
        found.append(Source("database_url_file", None, settings.database.url_file))
    return found


def store_location(url: str) -> tuple[str, Path | None]:
    """The store's backend name, and its file when it is a SQLite file."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy's ArgumentError, or a ValueError in a part
        raise ConfigError(f"database.url is not a valid database URL: {exc}") from None
    return parsed.get_backend_name(), sqlite_path(parsed)


# --- backup ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest
    store_included: bool


def create_backup(
    settings: Settings,
    destination: Path,
    found_lineages: Sequence[Lineage],
    *,
    force: bool = False,
    keys_only: bool = False,
) -> BackupResult:
    """Write the archive to ``destination``: the SQLite store unless ``keys_only`` (a
    PostgreSQL store never: see ``store_included``), and every key and secret file."""
    if destination.is_dir():
        raise BackupRefused(f"{destination} is a directory: name the archive file")
    if not force and (destination.exists() or destination.is_symlink()):
        raise NeedsFlag(f"{destination} exists: use --force to replace it")
    backend, store_file = store_location(settings.database_url())
    if keys_only:
        store_file = None
    if store_file is not None and not store_file.exists():
        raise BackupRefused(f"there is no store at {store_file} to back up")
    created_at = datetime.datetime.now(datetime.UTC)
    # Beside FILE rather than in /tmp: the copy may be large, and /tmp is often RAM.
    work = destination.parent / f".{destination.name}.{secrets.token_hex(6)}.partial"
    try:
        work.mkdir(mode=_PRIVATE_DIRECTORY)
    except OSError as exc:
        raise BackupRefused(f"cannot write in {destination.parent}: {exc.strerror}") from None
    try:
        members: list[tuple[Member, Path]] = []
        heads: dict[str, list[str]] = {}
        if store_file is not None:
            copy = work / "store.db"
            copy_store(store_file, copy, busy_timeout_s=settings.database.busy_timeout_ms / 1000)
            heads = stored_heads(copy, found_lineages)
            members.append((_member("store", None, store_file, copy), copy))
        missing: list[Missing] = []
        for source in key_and_secret_files(settings):
            kept = _copy_small_file(source, work / f"{len(members)}.file")
            if kept is None:
                missing.append(
                    Missing(role=source.role, client=source.client, path=str(source.path))
                )
                continue
            members.append((_member(source.role, source.client, source.path, kept), kept))
        try:
            manifest = Manifest(
                format=FORMAT,
                hostcore_version=__version__,
                created_at=created_at,
                store_backend=backend,
                heads=heads,
                files=[member for member, _ in members],
                missing=missing,
            )
        except ValidationError as exc:
            raise BackupRefused(f"cannot describe the backup: {_problems(exc)}") from None
        archive = work / "archive.tar.gz"
        _write_archive(archive, manifest, members, created_at.timestamp())
        _publish(archive, destination, force=force)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BackupResult(destination, manifest, store_included=store_file is not None)


def copy_store(source: Path, destination: Path, *, busy_timeout_s: float) -> None:
    """A consistent copy of a SQLite store that may be in use, made 0600 from the start."""
    os.close(_create_private(destination))
    uri = f"{source.absolute().as_uri()}?mode=ro"
    try:
        reading = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s)
        try:
            writing = sqlite3.connect(destination)
            try:
                reading.backup(writing)  # all pages in one step: one read transaction
                (result,) = writing.execute("PRAGMA quick_check").fetchone()
            finally:
                writing.close()
        finally:
            reading.close()
    except sqlite3.Error as exc:
        raise BackupRefused(f"cannot copy the store {source}: {exc}") from None
    if result != "ok":
        raise BackupRefused(f"the copy of the store {source} is damaged: {result}")


def stored_heads(store: Path, found_lineages: Sequence[Lineage]) -> dict[str, list[str]]:
    """Each lineage's revisions as its version table holds them (``hostcore db current``);
    a table no installed lineage owns is named by what follows ``alembic_version_``."""
    names = {lineage.version_table: lineage.name for lineage in found_lineages}
    connection = sqlite3.connect(store)
    try:
        tables = [
            str(row[0])
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?",
                (f"{VERSION_TABLE_PREFIX}%",),
            )
            if str(row[0]).startswith(VERSION_TABLE_PREFIX)
        ]
        heads = {}
        for table in sorted(tables):
            quoted = '"' + table.replace('"', '""') + '"'
            rows = connection.execute(f"SELECT version_num FROM {quoted}")  # noqa: S608
            lineage = names.get(table, table.removeprefix(VERSION_TABLE_PREFIX))
            heads[lineage] = sorted(str(row[0]) for row in rows)
    except sqlite3.Error as exc:
        raise BackupRefused(f"cannot read the migration heads of {store}: {exc}") from None
    finally:
        connection.close()
    return heads


def _copy_small_file(source: Source, copy: Path) -> Path | None:
    """A copy of a key or secret file (None when there is none), read once, bounded."""
    try:
        with source.path.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackupRefused(f"cannot read {source.path}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise BackupRefused(f"{source.path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    fd = _create_private(copy)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return copy


def _member(role: Role, client: str | None, original: Path, copy: Path) -> Member:
    found = original.stat()
    try:
        group = grp.getgrgid(found.st_gid).gr_name
    except KeyError:
        group = None
    return Member(
        name=member_name(role, client),
        role=role,
        client=client,
        path=str(original),
        mode=stat.S_IMODE(found.st_mode),
        group=group,
        size=copy.stat().st_size,
        sha256=_sha256(copy),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_archive(
    archive: Path, manifest: Manifest, members: Sequence[tuple[Member, Path]], mtime: float
) -> None:
    def entry(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.type = size, 0o600, int(mtime), tarfile.REGTYPE
        return info

    text = json.dumps(manifest.model_dump(mode="json"), indent=2).encode()
    with os.fdopen(_create_private(archive), "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
            tar.addfile(entry(MANIFEST_NAME, len(text)), io.BytesIO(text))
            for member, copy in members:
                with copy.open("rb") as handle:
                    tar.addfile(entry(member.name, member.size), handle)
        raw.flush()
        os.fsync(raw.fileno())


def _publish(archive: Path, destination: Path, *, force: bool) -> None:
    """Give the complete archive its name: linked, so an existing FILE that appeared
    meanwhile is not replaced without ``force``."""
    try:
        if force:
            archive.replace(destination)
            return
        try:
            os.link(archive, destination)
        except FileExistsError:
            raise NeedsFlag(f"{destination} exists: use --force to replace it") from None
        except OSError:  # a file system without hard links (a FAT stick)
            if destination.exists():
                raise NeedsFlag(f"{destination} exists: use --force to replace it") from None
            archive.replace(destination)
    except OSError as exc:
        raise BackupRefused(f"cannot write {destination}: {exc.strerror}") from None


def _create_private(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


# --- restore -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    """A restored file, and where the one it replaced was moved."""

    member: Member
    target: Path
    aside: list[Path]


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest
    placed: list[Placed]
    notes: list[str]
    integrity: str | None


@dataclass
class _Plan:
    """Where each member goes (None: read and checked, not written), and why not."""

    targets: dict[str, Path | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def running_server(run_dir: Path) -> int | None:
    """The pid of the server that runs from ``run_dir``, found as ``hostcore reload`` finds
    it (hostcore.control); None when none does. A pid file that cannot be read is not
    taken to mean that no server runs."""
    pid_file = run_dir / PID_FILE
    try:
        with pid_file.open("rb"):
            pass
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ServerRunning(
            f"cannot tell whether a server runs: {pid_file}: {exc.strerror}"
        ) from None
    try:
        return server_pid(run_dir)
    except ControlError:  # a pid file left behind: that process is gone, or not hostcore
        return None


def known_revisions(found_lineages: Sequence[Lineage]) -> dict[str, frozenset[str]]:
    """Every revision each installed lineage's migration scripts know."""
    return {
        lineage.name: frozenset(rev.revision for rev in script_directory(lineage).walk_revisions())
        for lineage in found_lineages
    }


def restore_backup(
    settings: Settings,
    archive: Path,
    found_lineages: Sequence[Lineage],
    *,
    force: bool = False,
    keys_only: bool = False,
    max_store_bytes: int = MAX_STORE_BYTES,
) -> RestoreResult:
    """Check the archive whole, then put its files where ``settings`` says, owned by the
    data directory's owner. See the module's docstring for what is checked."""
    pid = running_server(settings.run_dir)
    if pid is not None:
        raise ServerRunning(f"the hostcore server (pid {pid}) is running: stop it before restoring")
    staged: dict[str, Path] = {}
    try:
        with _open_archive(archive) as tar:
            entries = iter(tar)
            manifest = _read_manifest(tar, next(entries, None))
            plan = _plan(settings, manifest, keys_only=keys_only)
            store = manifest.store
            if store is not None and plan.targets.get(store.name) is not None:
                _refuse_unknown_heads(manifest.heads, found_lineages, plan)
            _refuse_existing(manifest, plan, force=force)
            owner = _data_dir_owner(settings.data_dir)
            seen: set[str] = set()
            for entry in entries:
                member = _expected(entry, manifest, seen, max_store_bytes)
                target = plan.targets[member.name]
                reader = tar.extractfile(entry)
                if reader is None:
                    raise ArchiveInvalid(f"member {entry.name} cannot be read")
                staged_path = _stage(reader, member, target, owner, settings.data_dir)
                if staged_path is not None:
                    staged[member.name] = staged_path
            absent = sorted({member.name for member in manifest.files} - seen)
            if absent:
                raise ArchiveInvalid(f"{archive} lacks members its manifest lists: {absent}")
        integrity = None
        if store is not None and store.name in staged:
            integrity = _check_store(staged[store.name], manifest, found_lineages)
        placed = _place(manifest, plan, staged)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return RestoreResult(manifest, placed, plan.notes, integrity)


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tarfile.TarFile]:
    try:
        with archive.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
            yield tar
    except FileNotFoundError:
        raise BackupRefused(f"no such archive: {archive}") from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveInvalid(f"{archive} is not a readable tar.gz: {exc}") from None
    except OSError as exc:
        raise ArchiveInvalid(f"cannot read {archive}: {exc.strerror or exc}") from None


def _read_manifest(tar: tarfile.TarFile, entry: tarfile.TarInfo | None) -> Manifest:
    if entry is None or entry.name != MANIFEST_NAME:
        raise ArchiveInvalid(f"the archive does not begin with {MANIFEST_NAME}: not a backup")
    _refuse_entry_kind(entry)
    if entry.size > MAX_MANIFEST_BYTES:
        raise ArchiveInvalid(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
    reader = tar.extractfile(entry)
    if reader is None:
        raise ArchiveInvalid(f"{MANIFEST_NAME} cannot be read")
    try:
        found = json.loads(reader.read(MAX_MANIFEST_BYTES + 1))
    except ValueError as exc:
        raise ArchiveInvalid(f"{MANIFEST_NAME} is not JSON: {exc}") from None
    made = found.get("format") if isinstance(found, dict) else None
    if isinstance(made, int) and made > FORMAT:
        raise StoreTooNew(
            f"the archive has format {made}, made by a newer hostcore "
            f"({found.get('hostcore_version')}): upgrade hostcore first"
        )
    try:
        return Manifest.model_validate(found)
    except ValidationError as exc:
        raise ArchiveInvalid(
            f"{MANIFEST_NAME} is not a backup's manifest: {_problems(exc)}"
        ) from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.errors()[:5]
    )


def _refuse_entry_kind(entry: tarfile.TarInfo) -> None:
    """Names the first reason a member could reach outside its place."""
    name = entry.name
    if name.startswith("/") or Path(name).is_absolute():
        raise ArchiveInvalid(f"member {name!r} has an absolute path")
    if ".." in name.split("/"):
        raise ArchiveInvalid(f"member {name!r} has '..' in its path")
    if entry.issym() or entry.islnk():
        raise ArchiveInvalid(f"member {name!r} is a link")
    if entry.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise ArchiveInvalid(f"member {name!r} is not a regular file")


def _expected(
    entry: tarfile.TarInfo, manifest: Manifest, seen: set[str], max_store_bytes: int
) -> Member:
    _refuse_entry_kind(entry)
    member = next((member for member in manifest.files if member.name == entry.name), None)
    if member is None:
        raise ArchiveInvalid(f"member {entry.name!r} is not one the manifest lists")
    if member.name in seen:
        raise ArchiveInvalid(f"member {entry.name!r} appears twice")
    limit = size_limit(member.role, max_store_bytes)
    if entry.size > limit:
        raise ArchiveInvalid(f"member {entry.name!r} is larger than {limit} bytes")
    if entry.size != member.size:
        raise ArchiveInvalid(f"member {entry.name!r} is not the size its manifest gives")
    seen.add(member.name)
    return member


def _plan(settings: Settings, manifest: Manifest, *, keys_only: bool) -> _Plan:
    """Where this configuration puts each member."""
    plan = _Plan()
    clients = settings.auth.clients
    for member in manifest.files:
        target: Path | None = None
        if member.role == "store":
            target = _store_target(settings, keys_only, plan)
        elif member.role == "master_key":
            target = settings.data_dir / MASTER_KEY_FILE
        elif member.role == "shared_secret":
            target = settings.hmac_secret_path()
        elif member.role == "client_secret":
            client = clients.get(member.client or "")
            if client is not None and client.shared_secret:
                plan.notes.append(f"{member.name}: client {member.client} uses the shared secret")
            else:
                target = settings.hmac_secret_path(member.client)
            if client is None:
                plan.notes.append(f"{member.name}: client {member.client} is not on the list")
        elif settings.database.url_file is not None:
            target = settings.database.url_file
        else:
            plan.notes.append(f"{member.name}: this configuration has no database.url_file")
        plan.targets[member.name] = target
    if not any(member.role == "master_key" for member in manifest.files):
        plan.notes.append(
            "the archive has no master key: the signing keys in its store cannot be decrypted"
        )
    return plan


def _store_target(settings: Settings, keys_only: bool, plan: _Plan) -> Path | None:
    """Where this configuration's store is now (a restored database.url_file counts
    from the next start)."""
    if keys_only:
        plan.notes.append("store.db: not restored (--keys-only)")
        return None
    backend, path = store_location(settings.database_url())
    if path is None:
        raise NeedsFlag(
            f"this configuration's store is {backend}, not a SQLite file: restore it with "
            "pg_restore, and the keys and secrets with --keys-only"
        )
    return path


def _refuse_unknown_heads(
    heads: Mapping[str, Sequence[str]], found_lineages: Sequence[Lineage], plan: _Plan
) -> None:
    known = known_revisions(found_lineages)
    newer = []
    for lineage, revisions in sorted(heads.items()):
        if lineage not in known:
            plan.notes.append(f"lineage {lineage}: no installed plugin migrates it (not checked)")
            continue
        newer += [f"{lineage} {rev}" for rev in revisions if rev not in known[lineage]]
    if newer:
        raise StoreTooNew(
            f"the archived store is at migrations this installation does not know "
            f"({', '.join(newer)}): upgrade hostcore and its plugins first, then restore"
        )


def _side_files(member: Member, target: Path) -> list[Path]:
    """The files a member's target stands for: a SQLite store has its WAL and index too."""
    if member.role != "store":
        return [target]
    return [target, *(target.with_name(target.name + suffix) for suffix in _SQLITE_SIDE_FILES)]


def _refuse_existing(manifest: Manifest, plan: _Plan, *, force: bool) -> None:
    if force:
        return
    found = [
        str(path)
        for member in manifest.files
        if (target := plan.targets[member.name]) is not None
        for path in _side_files(member, target)
        if path.exists() or path.is_symlink()
    ]
    if found:
        raise NeedsFlag(
            f"these files exist: {', '.join(found)}; use --force to move them aside "
            f"(renamed *{ASIDE_INFIX}<time>) and restore"
        )


def _data_dir_owner(data_dir: Path) -> tuple[int, int]:
    """The data directory's owner and group, creating it (0700, this user's) if missing."""
    try:
        data_dir.mkdir(mode=_PRIVATE_DIRECTORY, parents=True, exist_ok=True)
        found = data_dir.stat()
    except OSError as exc:
        raise BackupRefused(f"cannot use the data directory {data_dir}: {exc.strerror}") from None
    return found.st_uid, found.st_gid


def _stage(
    reader: IO[bytes],
    member: Member,
    target: Path | None,
    owner: tuple[int, int],
    data_dir: Path,
) -> Path | None:
    """Read a member whole, checking its sha256; write it beside its target under a
    temporary name (None: only checked), with its mode and owner already set."""
    handle: IO[bytes] | None = None
    staged: Path | None = None
    if target is not None:
        _make_parents(target.parent, data_dir, owner)
        if member.role == "store" and shutil.disk_usage(target.parent).free < member.size:
            raise BackupRefused(f"{target.parent} has no room for a {member.size}-byte store")
        staged = target.with_name(f".{target.name}.restore-{secrets.token_hex(6)}")
        try:
            handle = os.fdopen(_create_private(staged), "wb")
        except OSError as exc:
            raise BackupRefused(f"cannot write in {target.parent}: {exc.strerror}") from None
    digest = hashlib.sha256()
    try:
        remaining = member.size
        while remaining > 0:
            chunk = reader.read(min(_CHUNK, remaining))
            if not chunk:
                raise ArchiveInvalid(f"member {member.name} ends early")
            digest.update(chunk)
            remaining -= len(chunk)
            if handle is not None:
                _written(handle, chunk, staged)
        if digest.hexdigest() != member.sha256:
            raise ArchiveInvalid(f"member {member.name} does not match its sha256")
        if handle is not None:
            _written(handle, b"", staged, sync=True)
            _give(handle.fileno(), member, owner)
    except BaseException:
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise
    finally:
        if handle is not None:
            handle.close()
    return staged


def _written(handle: IO[bytes], data: bytes, path: Path | None, *, sync: bool = False) -> None:
    """Write to a staged file; a failure (a full disk) is the target's, not the archive's."""
    try:
        handle.write(data)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise BackupRefused(f"cannot write {path}: {exc.strerror}") from None


def _make_parents(directory: Path, data_dir: Path, owner: tuple[int, int]) -> None:
    """A target's directory; one made inside the data directory is private and its owner's."""
    missing = []
    for parent in (directory, *directory.parents):
        if parent.exists():
            break
        missing.append(parent)
    try:
        directory.mkdir(mode=_PRIVATE_DIRECTORY, parents=True, exist_ok=True)
        for made in missing:
            if made.is_relative_to(data_dir):
                os.chown(made, *owner)
    except OSError as exc:
        raise BackupRefused(f"cannot create {directory}: {exc.strerror}") from None


def _give(fd: int, member: Member, owner: tuple[int, int]) -> None:
    """The restored file's mode (0600; a secret that was group-readable stays so, to its
    group when that exists here) and owner (the data directory's)."""
    uid, gid = owner
    mode = _STORE_MODE
    if member.role not in ("store", "master_key"):
        mode = member.mode & _SECRET_MODE_LIMIT | _STORE_MODE
        if mode & 0o040 and member.group is not None:
            with contextlib.suppress(KeyError):
                gid = grp.getgrnam(member.group).gr_gid
    try:
        found = os.fstat(fd)
        if (found.st_uid, found.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    except OSError as exc:
        raise BackupRefused(
            f"cannot give {member.name} to uid {uid}, gid {gid}: {exc.strerror} "
            "(restore as root or as the data directory's owner)"
        ) from None


def _check_store(staged: Path, manifest: Manifest, found_lineages: Sequence[Lineage]) -> str:
    """The staged store: its heads must be the manifest's, and it must be sound."""
    heads = stored_heads(staged, found_lineages)
    if heads != manifest.heads:
        raise ArchiveInvalid("the store's migration heads are not the ones its manifest gives")
    connection = sqlite3.connect(staged)
    try:
        rows = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
    except sqlite3.Error as exc:
        raise ArchiveInvalid(f"the archived store cannot be checked: {exc}") from None
    finally:
        connection.close()
    if rows != ["ok"]:
        raise ArchiveInvalid(f"the archived store fails PRAGMA integrity_check: {rows[:3]}")
    return "ok"


def _place(manifest: Manifest, plan: _Plan, staged: Mapping[str, Path]) -> list[Placed]:
    """Move what is in place aside, then rename each staged file to its target."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    placed: list[Placed] = []
    moved: list[Path] = []
    for member in manifest.files:
        target = plan.targets.get(member.name)
        if target is None or member.name not in staged:
            continue
        try:
            aside = []
            for path in _side_files(member, target):
                if path.exists() or path.is_symlink():
                    free = _free_name(path.with_name(f"{path.name}{ASIDE_INFIX}{stamp}"))
                    path.rename(free)
                    aside.append(free)
                    moved.append(free)
            staged[member.name].rename(target)
        except OSError as exc:
            done = ", ".join(str(p.target) for p in placed) or "nothing"
            kept = ", ".join(str(path) for path in moved) or "nothing"
            raise BackupRefused(
                f"restoring stopped at {target}: {exc.strerror}; restored: {done}; "
                f"moved aside: {kept}"
            ) from None
        placed.append(Placed(member, target, aside))
    return placed


def _free_name(path: Path) -> Path:
    candidate, number = path, 1
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate

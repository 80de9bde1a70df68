"""``hostcore backup`` and ``hostcore restore``: an online copy of a real app's store with
its keys and secrets, restored into a fresh data directory where old tokens still verify;
and every refusal: a running server, a store too new, a hostile archive, files in place."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from hostcore.backup import (
    ASIDE_INFIX,
    MAX_SECRET_FILE_BYTES,
    ArchiveInvalid,
    NeedsFlag,
    ServerRunning,
    StoreTooNew,
    create_backup,
    restore_backup,
)
from hostcore.backup_cli import STORE_NOT_INCLUDED, register
from hostcore.config import Settings, load_settings
from hostcore.control import PID_FILE
from hostcore.db.migrate import Lineage, lineages
from tests.helpers import (
    NOWHERE,
    STOP_TIMEOUT_S,
    WHOAMI,
    AppFactory,
    ClientFor,
    Serve,
    auth_and_probe,
    authorization,
    bearer,
    mode,
    start_real_server,
    stop_group,
    wait_for,
)

CORE: list[Lineage] = lineages({})
Member = tuple[tarfile.TarInfo, bytes]


def issued_token(client: TestClient) -> str:
    return bearer(client)["Authorization"].removeprefix("Bearer ")


def rows(database: Path, query: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(database)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def members_of(archive: Path) -> list[Member]:
    with tarfile.open(archive, "r:gz") as tar:
        found = []
        for info in tar.getmembers():
            reader = tar.extractfile(info)
            found.append((info, reader.read() if reader else b""))
        return found


def assemble(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def with_manifest(members: list[Member], change: Callable[[dict[str, Any]], None]) -> list[Member]:
    """``members`` with their manifest changed by ``change``."""
    manifest = json.loads(members[0][1])
    change(manifest)
    return [entry("manifest.json", json.dumps(manifest).encode()), *members[1:]]


def described(manifest: dict[str, Any], name: str, data: bytes) -> None:
    """Make the manifest's entry for ``name`` match ``data``."""
    for member in manifest["files"]:
        if member["name"] == name:
            member["size"], member["sha256"] = len(data), hashlib.sha256(data).hexdigest()


def private_file(path: Path, data: bytes) -> None:
    """A file made 0600, as hostcore makes its keys and secrets."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        handle.write(data)


@pytest.fixture
def fresh(settings_factory: Callable[..., Settings], tmp_path: Path) -> Settings:
    """Settings for a data directory nothing has used yet, and a run directory of its own."""
    return settings_factory(
        f"data_dir={tmp_path / 'restored'}", f"run_dir={tmp_path / 'restored-run'}"
    )


@pytest.fixture
def keys_archive(settings: Settings, tmp_path: Path) -> Path:
    """A keys-only backup of a data directory with a master key and one client's secret."""
    settings.data_dir.mkdir(mode=0o700)
    private_file(settings.data_dir / "master.key", os.urandom(32))
    (settings.data_dir / "secrets").mkdir(mode=0o700)
    private_file(settings.data_dir / "secrets" / "tester.secret", b"s" * 64 + b"\n")
    return create_backup(settings, tmp_path / "keys.tar.gz", CORE, keys_only=True).path


# --- an online backup of a real app, restored -------------------------------------------


def test_a_backup_taken_while_the_app_writes_restores_a_sound_store_whose_tokens_verify(
    settings: Settings,
    fresh: Settings,
    serve: Serve,
    app_factory: AppFactory,
    client_for: ClientFor,
    tmp_path: Path,
) -> None:
    client = serve()
    before = issued_token(client)
    store = settings.data_dir / "hostcore.db"
    written = {"requests": 0}
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:  # activity rows (one per request) and token rows, until stopped
        try:
            while not stop.is_set():
                issued_token(client)
                client.get(WHOAMI, headers=authorization(before))
                written["requests"] += 1
        except BaseException as exc:
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_for(lambda: written["requests"] >= 5, 30, "the writer to be under way")
        archive = create_backup(settings, tmp_path / "backup.tar.gz", CORE).path
        at_backup = written["requests"]
        wait_for(lambda: written["requests"] >= at_backup + 5, 30, "writes after the backup")
    finally:
        stop.set()
        writer.join(STOP_TIMEOUT_S)
    assert not writer.is_alive() and not failures, failures
    assert mode(archive) == 0o600

    result = restore_backup(fresh, archive, CORE)

    assert result.integrity == "ok"
    restored = fresh.data_dir / "hostcore.db"
    assert rows(restored, "PRAGMA integrity_check") == [("ok",)]
    kids = rows(restored, "SELECT kid, private_key FROM signing_keys ORDER BY kid")
    assert kids == rows(store, "SELECT kid, private_key FROM signing_keys ORDER BY kid")
    assert (fresh.data_dir / "master.key").read_bytes() == (
        settings.data_dir / "master.key"
    ).read_bytes()
    secret = fresh.data_dir / "secrets" / "tester.secret"
    assert secret.read_bytes() == (settings.data_dir / "secrets" / "tester.secret").read_bytes()
    for path in (restored, fresh.data_dir / "master.key", secret):
        assert mode(path) == 0o600, path
        assert path.stat().st_uid == fresh.data_dir.stat().st_uid
    restored_tokens = len(rows(restored, "SELECT jti FROM tokens"))
    assert 0 < restored_tokens < len(rows(store, "SELECT jti FROM tokens"))  # writes went on
    assert result.manifest.heads == {
        "hostcore": [
            r[0] for r in rows(restored, "SELECT version_num FROM alembic_version_hostcore")
        ]
    }

    again = client_for(app_factory(auth_and_probe(), app_settings=fresh))
    answer = again.get(WHOAMI, headers=authorization(before))
    assert answer.status_code == 200, answer.text
    assert answer.json()["subject"] == "client:tester"


def test_a_store_restored_without_its_master_key_starts_with_new_keys_and_old_tokens_fail(
    settings: Settings,
    fresh: Settings,
    serve: Serve,
    app_factory: AppFactory,
    client_for: ClientFor,
    tmp_path: Path,
) -> None:
    before = issued_token(serve())
    archive = create_backup(settings, tmp_path / "backup.tar.gz", CORE).path
    without_key = [item for item in members_of(archive) if item[0].name != "master.key"]

    def no_key(manifest: dict[str, Any]) -> None:
        manifest["files"] = [m for m in manifest["files"] if m["name"] != "master.key"]

    result = restore_backup(
        fresh, assemble(tmp_path / "no-key.tar.gz", with_manifest(without_key, no_key)), CORE
    )
    assert any("no master key" in note for note in result.notes)
    again = client_for(app_factory(auth_and_probe(), app_settings=fresh))
    assert again.get(WHOAMI).status_code == 200  # a token signed with a new key
    assert again.get(WHOAMI, headers=authorization(before)).status_code == 401


def test_a_write_in_progress_neither_blocks_the_backup_nor_is_in_it(
    settings: Settings, serve: Serve, tmp_path: Path
) -> None:
    serve()
    store = settings.data_dir / "hostcore.db"
    writing = sqlite3.connect(store, isolation_level=None)
    try:
        writing.execute("BEGIN IMMEDIATE")
        writing.execute("DELETE FROM signing_keys")
        archive = create_backup(settings, tmp_path / "backup.tar.gz", CORE).path
        writing.execute("ROLLBACK")
    finally:
        writing.close()
    copy = tmp_path / "copy.db"
    copy.write_bytes(dict((i.name, d) for i, d in members_of(archive))["store.db"])
    assert rows(copy, "SELECT count(*) FROM signing_keys") == [(1,)]


def test_the_archive_is_private_whatever_the_umask_and_leaves_no_copy_behind(
    settings: Settings, serve: Serve, tmp_path: Path
) -> None:
    serve()
    out = tmp_path / "out"
    out.mkdir()
    previous = os.umask(0)
    try:
        archive = create_backup(settings, out / "backup.tar.gz", CORE).path
    finally:
        os.umask(previous)
    assert mode(archive) == 0o600
    assert [path.name for path in out.iterdir()] == ["backup.tar.gz"]
    names = [info.name for info, _ in members_of(archive)]
    assert names == [
        "manifest.json",
        "store.db",
        "master.key",
        "secrets/clients/tester.secret",
    ]
    manifest = json.loads(members_of(archive)[0][1])
    assert manifest["format"] == 1 and manifest["store_backend"] == "sqlite"
    for member, (info, data) in zip(manifest["files"], members_of(archive)[1:], strict=True):
        assert member["name"] == info.name
        assert member["sha256"] == hashlib.sha256(data).hexdigest()
    assert {m["name"]: m["path"] for m in manifest["files"]}["master.key"] == str(
        settings.data_dir / "master.key"
    )


def test_an_existing_archive_is_replaced_only_with_force(
    settings: Settings, keys_archive: Path
) -> None:
    keys_archive.write_bytes(b"keep me")
    with pytest.raises(NeedsFlag, match="use --force"):
        create_backup(settings, keys_archive, CORE, keys_only=True)
    assert keys_archive.read_bytes() == b"keep me"
    create_backup(settings, keys_archive, CORE, keys_only=True, force=True)
    assert members_of(keys_archive)[0][0].name == "manifest.json"
    assert mode(keys_archive) == 0o600


# --- refusals ------------------------------------------------------------------------------

FAKE_SERVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hostcore.control import ServerRecord

    ServerRecord(Path(sys.argv[1])).started()
    time.sleep(60)
    """
)


@pytest.fixture
def fake_server(fresh: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """A process that keeps a pid file as a server does, its command line naming hostcore."""
    process = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, str(fresh.run_dir), "hostcore"])
    try:
        wait_for(lambda: (fresh.run_dir / PID_FILE).exists(), 30, "the fake server's pid file")
        yield process
    finally:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def test_restore_refuses_while_the_server_runs_and_not_for_a_pid_file_left_behind(
    fresh: Settings, keys_archive: Path, fake_server: subprocess.Popen[bytes]
) -> None:
    with pytest.raises(ServerRunning, match=f"pid {fake_server.pid}"):
        restore_backup(fresh, keys_archive, CORE)
    assert not fresh.data_dir.exists()
    fake_server.kill()
    fake_server.wait(timeout=STOP_TIMEOUT_S)
    assert (fresh.run_dir / PID_FILE).exists()  # killed: it could not remove it
    restore_backup(fresh, keys_archive, CORE)
    assert (fresh.data_dir / "master.key").exists()


@pytest.mark.integration
def test_restore_refuses_while_a_real_server_runs(tmp_path: Path) -> None:
    server = start_real_server(tmp_path)
    try:
        settings = load_settings(environ=server.env, system_config=NOWHERE, local_config=NOWHERE)
        archive = create_backup(settings, tmp_path / "backup.tar.gz", CORE).path
        with pytest.raises(ServerRunning, match="stop it before restoring"):
            restore_backup(settings, archive, CORE, force=True)
    finally:
        stop_group(server.process)
    restore_backup(settings, archive, CORE, force=True)  # stopped: now it may
    assert rows(settings.data_dir / "hostcore.db", "PRAGMA integrity_check") == [("ok",)]


def test_a_store_at_migrations_this_installation_does_not_know_is_refused(
    settings: Settings, fresh: Settings, serve: Serve, tmp_path: Path
) -> None:
    serve()
    members = members_of(create_backup(settings, tmp_path / "backup.tar.gz", CORE).path)
    store = tmp_path / "store.db"
    store.write_bytes(dict((i.name, d) for i, d in members)["store.db"])
    connection = sqlite3.connect(store)
    connection.execute("UPDATE alembic_version_hostcore SET version_num = '9999_future'")
    connection.commit()
    connection.close()
    data = store.read_bytes()

    def newer(manifest: dict[str, Any]) -> None:
        manifest["heads"] = {"hostcore": ["9999_future"]}
        described(manifest, "store.db", data)

    changed = [
        entry(info.name, data) if info.name == "store.db" else (info, content)
        for info, content in with_manifest(members, newer)
    ]
    with pytest.raises(StoreTooNew, match=r"hostcore 9999_future.*upgrade hostcore"):
        restore_backup(fresh, assemble(tmp_path / "newer.tar.gz", changed), CORE)
    assert not fresh.data_dir.exists()


def test_an_archive_of_a_newer_format_asks_for_an_upgrade(
    fresh: Settings, keys_archive: Path, tmp_path: Path
) -> None:
    def later(manifest: dict[str, Any]) -> None:
        manifest["format"] = 2

    archive = assemble(tmp_path / "later.tar.gz", with_manifest(members_of(keys_archive), later))
    with pytest.raises(StoreTooNew, match=r"format 2.*upgrade hostcore"):
        restore_backup(fresh, archive, CORE)


def hostile(members: list[Member], tmp_path: Path) -> dict[str, tuple[list[Member], str]]:
    """Archives that must not restore: the members, and what the refusal says."""
    manifest, key, secret = members
    outside = str(tmp_path / "pwned")
    big = b"k" * (MAX_SECRET_FILE_BYTES + 1)
    link = entry("master.key", kind=tarfile.SYMTYPE)
    link[0].linkname = outside
    hard = entry("master.key", kind=tarfile.LNKTYPE)
    hard[0].linkname = "secrets/clients/tester.secret"
    return {
        "absolute path": ([manifest, entry(outside, b"x"), key, secret], "absolute path"),
        "dot-dot": ([manifest, entry("../pwned", b"x"), key, secret], "'..'"),
        "symlink": ([manifest, link, secret], "is a link"),
        "hard link": ([manifest, secret, hard], "is a link"),
        "device": ([manifest, entry("master.key", kind=tarfile.CHRTYPE), secret], "not a regular"),
        "oversized": ([manifest, entry("master.key", big), secret], "larger than 65536"),
        "unexpected member": (
            [manifest, key, secret, entry("evil.sh", b"x")],
            "not one the manifest lists",
        ),
        "twice": ([manifest, key, key, secret], "appears twice"),
        "checksum": ([manifest, entry("master.key", b"x" * 32), secret], "sha256"),
        "missing member": ([manifest, key], "lacks members"),
        "no manifest first": ([key, manifest, secret], "does not begin with manifest.json"),
        "manifest names a path": (
            with_manifest(members, lambda m: m["files"][0].update(name="/etc/shadow")),
            "not a backup's manifest",
        ),
        "manifest with an unknown role": (
            with_manifest(members, lambda m: m["files"][0].update(role="script")),
            "not a backup's manifest",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "absolute path",
        "dot-dot",
        "symlink",
        "hard link",
        "device",
        "oversized",
        "unexpected member",
        "twice",
        "checksum",
        "missing member",
        "no manifest first",
        "manifest names a path",
        "manifest with an unknown role",
    ],
)
def test_a_hostile_archive_is_refused_and_writes_nothing(
    case: str, fresh: Settings, keys_archive: Path, tmp_path: Path
) -> None:
    members, refusal = hostile(members_of(keys_archive), tmp_path)[case]
    archive = assemble(tmp_path / "hostile.tar.gz", members)
    with pytest.raises(ArchiveInvalid, match=re.escape(refusal)):
        restore_backup(fresh, archive, CORE)
    assert not (tmp_path / "pwned").exists()
    written = [path for path in fresh.data_dir.rglob("*") if path.is_file()]
    assert written == []


def test_garbage_is_not_an_archive(fresh: Settings, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b" + os.urandom(200))
    with pytest.raises(ArchiveInvalid, match=r"not a readable tar\.gz"):
        restore_backup(fresh, garbage, CORE)


def test_files_in_place_are_kept_without_force_and_moved_aside_with_it(
    settings: Settings, fresh: Settings, serve: Serve, tmp_path: Path
) -> None:
    serve()
    archive = create_backup(settings, tmp_path / "backup.tar.gz", CORE).path
    restore_backup(fresh, archive, CORE)
    store = fresh.data_dir / "hostcore.db"
    key = fresh.data_dir / "master.key"
    key.write_bytes(b"a key made since" + bytes(16))
    stale_wal = store.with_name("hostcore.db-wal")
    stale_wal.write_bytes(b"a WAL of another store")

    with pytest.raises(NeedsFlag, match=f"{key}.*use --force"):
        restore_backup(fresh, archive, CORE)
    assert key.read_bytes().startswith(b"a key made since")

    result = restore_backup(fresh, archive, CORE, force=True)

    assert key.read_bytes() == (settings.data_dir / "master.key").read_bytes()
    assert not stale_wal.exists()
    aside = {
        path.name.split(ASIDE_INFIX)[0]: path for path in fresh.data_dir.rglob(f"*{ASIDE_INFIX}*")
    }
    assert set(aside) == {"hostcore.db", "hostcore.db-wal", "master.key", "tester.secret"}
    assert aside["master.key"].read_bytes().startswith(b"a key made since")
    assert aside["hostcore.db-wal"].read_bytes() == b"a WAL of another store"
    assert sorted(p for placed in result.placed for p in placed.aside) == sorted(aside.values())
    assert result.integrity == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_restored_files_belong_to_the_data_directorys_owner(
    fresh: Settings, keys_archive: Path
) -> None:
    nobody = 65534
    fresh.data_dir.mkdir(mode=0o700)
    os.chown(fresh.data_dir, nobody, nobody)
    result = restore_backup(fresh, keys_archive, CORE)
    restored = [placed.target for placed in result.placed]
    assert restored == [fresh.data_dir / "master.key", fresh.data_dir / "secrets" / "tester.secret"]
    for path in [*restored, fresh.data_dir / "secrets"]:
        assert (path.stat().st_uid, path.stat().st_gid) == (nobody, nobody), path
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to a group needs root")
def test_a_secret_its_group_could_read_is_restored_readable_to_that_group(
    settings: Settings, fresh: Settings, keys_archive: Path, tmp_path: Path
) -> None:
    nogroup = 65534
    secret = settings.data_dir / "secrets" / "tester.secret"
    os.chown(secret, -1, nogroup)
    secret.chmod(0o640)
    archive = create_backup(settings, tmp_path / "grouped.tar.gz", CORE, keys_only=True).path
    restore_backup(fresh, archive, CORE)
    restored = fresh.data_dir / "secrets" / "tester.secret"
    assert mode(restored) == 0o640 and restored.stat().st_gid == nogroup
    assert mode(fresh.data_dir / "master.key") == 0o600


# --- the commands --------------------------------------------------------------------------


def commands() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


def test_the_commands_back_up_and_restore_and_say_what_they_did(
    hostcore_environ: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "master.key").write_bytes(os.urandom(32))
    runner = CliRunner()
    archive = tmp_path / "backup.tar.gz"
    made = runner.invoke(commands(), ["backup", str(archive), "--keys-only"])
    assert made.exit_code == 0, made.output
    assert "master.key" in made.stdout
    assert "not found, not in the backup" in made.stderr  # tester's secret: never started

    again = runner.invoke(commands(), ["backup", str(archive), "--keys-only"])
    assert again.exit_code == 2 and again.stderr.startswith("hostcore: ")
    assert again.stderr.count("\n") == 1 and "--force" in again.stderr

    target = tmp_path / "elsewhere"
    put = runner.invoke(commands(), ["restore", str(archive), "--set", f"data_dir={target}"])
    assert put.exit_code == 0, put.output
    assert f"restored {target / 'master.key'}" in put.stdout
    refused = runner.invoke(commands(), ["restore", str(archive), "--set", f"data_dir={target}"])
    assert refused.exit_code == 2 and "--force" in refused.stderr


def test_a_postgresql_store_is_left_to_pg_dump_and_its_keys_are_still_backed_up(
    hostcore_environ: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "master.key").write_bytes(os.urandom(32))
    postgres = ["--set", "database.url=postgresql+asyncpg://hostcore@localhost/hostcore"]
    archive = tmp_path / "keys.tar.gz"
    result = CliRunner().invoke(commands(), ["backup", str(archive), *postgres])
    assert result.exit_code == STORE_NOT_INCLUDED
    assert result.stderr.splitlines()[-1].startswith("hostcore: the postgresql store is not in")
    assert "pg_dump" in result.stderr
    assert [info.name for info, _ in members_of(archive)] == ["manifest.json", "master.key"]
    assert mode(archive) == 0o600
    asked = CliRunner().invoke(
        commands(), ["backup", str(archive), "--force", "--keys-only", *postgres]
    )
    assert asked.exit_code == 0, asked.output


def test_restore_refuses_a_running_server_in_one_line(
    hostcore_environ: Path, keys_archive: Path, fresh: Settings, fake_server: object
) -> None:
    result = CliRunner().invoke(
        commands(),
        [
            "restore",
            str(keys_archive),
            "--set",
            f"run_dir={fresh.run_dir}",
            "--set",
            f"data_dir={fresh.data_dir}",
        ],
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("hostcore: the hostcore server (pid ")
    assert result.stderr.count("\n") == 1


def test_the_help_says_what_is_lost_without_the_master_key_and_how_to_dump_postgresql() -> None:
    backup_help = CliRunner().invoke(commands(), ["backup", "--help"]).stdout
    restore_help = CliRunner().invoke(commands(), ["restore", "--help"]).stdout
    for text in (backup_help, restore_help):
        flat = " ".join(text.split())
        assert "every token issued before is invalid" in flat
        assert "new signing keys" in flat and "HMAC secrets are files of their own" in flat
    assert "pg_dump --format=custom" in backup_help

"""``hostcore backup FILE`` and ``hostcore restore FILE`` (the work is in hostcore.backup).

Defining the commands imports only typer: the store, SQLAlchemy and Alembic are
imported by the command that runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hostcore.cli_support import (
    RUNTIME_ERROR,
    USAGE_ERROR,
    ConfigOption,
    SetOption,
    fail,
    load_or_exit,
    registry_or_exit,
)
from hostcore.errors import ConfigError

if TYPE_CHECKING:
    from hostcore.backup import Manifest
    from hostcore.config import Settings
    from hostcore.db.migrate import Lineage

# The archive is written, but the store is not in it (PostgreSQL without --keys-only).
STORE_NOT_INCLUDED = 3

LOST_WITHOUT_THE_MASTER_KEY = """\
Without the master key (<data_dir>/master.key) the signing keys in the store
cannot be decrypted: every token issued before is invalid, and the server makes
new signing keys when it starts, so every user logs in and every client gets a
token again. The HMAC secrets are files of their own, not rows in the store:
without them each local tool needs its client's new secret."""

BACKUP_HELP = f"""\
Write the store, the master key and the HMAC secrets to FILE.

FILE is a tar.gz readable by its owner alone (0600, from the moment it is
created); an existing FILE is replaced only with --force. The server may keep
running: a SQLite store is copied with SQLite's backup API, a consistent
snapshot taken while writes go on. With the store go <data_dir>/master.key,
every HMAC secret file the configuration names (each client's, the shared
one) and database.url_file, and manifest.json: hostcore's version, the store's
migration heads per lineage (as 'hostcore db current' shows them), and each
file's original path, mode and sha256. Keep FILE as safe as the device: it
holds everything needed to sign tokens and requests.

{LOST_WITHOUT_THE_MASTER_KEY}

A PostgreSQL store is not copied: FILE gets the keys and secrets alone, and
the command exits with status 3 unless --keys-only says that is all you want.
Dump the store with pg_dump, with database.url written without "+asyncpg":

\b
    pg_dump --format=custom --file=hostcore.pgdump postgresql://USER@HOST/DB
    pg_restore --clean --if-exists --dbname=postgresql://USER@HOST/DB hostcore.pgdump
"""

RESTORE_HELP = f"""\
Put the store, the master key and the HMAC secrets from the backup FILE in place.

Stop the server first: this refuses while it runs. FILE is checked whole
before anything is written: the members a backup has and no others, each
matching the sha256 in its manifest (no links, no paths of its own: each file
goes where this configuration puts it). A store at migrations that the
installed hostcore or its plugins do not know is refused: upgrade first, then
restore (an older store is migrated when the server starts). Files in place
are kept unless --force, which moves each one aside as
NAME.before-restore-<time>. Restored files belong to the data directory's
owner, mode 0600 (a secret that was group-readable stays so); the restored
store must pass PRAGMA integrity_check. --keys-only restores the keys and
secrets without the store (a PostgreSQL store comes back with pg_restore).

{LOST_WITHOUT_THE_MASTER_KEY}
"""

FileArgument = Annotated[
    Path, typer.Argument(help="The archive (tar.gz).", dir_okay=False, metavar="FILE")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace what exists.")]
KeysOnlyOption = Annotated[
    bool, typer.Option("--keys-only", help="The keys and secrets alone, without the store.")
]


def register(cli: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to ``cli``."""
    cli.command("backup", help=BACKUP_HELP)(backup)
    cli.command("restore", help=RESTORE_HELP)(restore)


@contextlib.contextmanager
def _refusals_exit() -> Iterator[None]:
    """A refusal as one line and its exit status: a flag or setting missing (2), else (1)."""
    from hostcore.backup import BackupRefused, NeedsFlag

    try:
        yield
    except (NeedsFlag, ConfigError) as exc:
        fail(str(exc), USAGE_ERROR)
    except BackupRefused as exc:
        fail(str(exc), RUNTIME_ERROR)


def backup(
    file: FileArgument,
    config: ConfigOption = None,
    set_: SetOption = None,
    force: ForceOption = False,
    keys_only: KeysOnlyOption = False,
) -> None:
    from hostcore.backup import create_backup

    settings = load_or_exit(config, set_)
    found = _lineages(settings)
    with _refusals_exit():
        result = create_backup(settings, file, found, force=force, keys_only=keys_only)
    manifest = result.manifest
    for missing in manifest.missing:
        typer.echo(f"hostcore: not found, not in the backup: {missing.path}", err=True)
    typer.echo(f"wrote {file}: {', '.join(member.name for member in manifest.files)}")
    _echo_heads(manifest)
    if not result.store_included and not keys_only:
        fail(
            f"the {manifest.store_backend} store is not in {file}, only its keys and secrets: "
            "dump it with pg_dump (see 'hostcore backup --help')",
            STORE_NOT_INCLUDED,
        )


def restore(
    file: FileArgument,
    config: ConfigOption = None,
    set_: SetOption = None,
    force: ForceOption = False,
    keys_only: KeysOnlyOption = False,
) -> None:
    from hostcore.backup import restore_backup

    settings = load_or_exit(config, set_)
    found = _lineages(settings)
    with _refusals_exit():
        result = restore_backup(settings, file, found, force=force, keys_only=keys_only)
    for note in result.notes:
        typer.echo(f"note: {note}")
    for placed in result.placed:
        aside = f" (moved aside: {', '.join(map(str, placed.aside))})" if placed.aside else ""
        typer.echo(f"restored {placed.target}{aside}")
    _echo_heads(result.manifest)
    if result.integrity is not None:
        typer.echo(f"integrity_check: {result.integrity}")


def _lineages(settings: Settings) -> list[Lineage]:
    from hostcore.db.migrate import lineages

    return lineages(registry_or_exit(settings).migration_directories())


def _echo_heads(manifest: Manifest) -> None:
    for lineage, heads in manifest.heads.items():
        typer.echo(f"{lineage}: {', '.join(heads) or 'empty (not migrated)'}")

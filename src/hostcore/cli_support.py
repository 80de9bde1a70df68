"""What every ``hostcore`` command shares, hostcore's and plugins' alike.

The ``--config``/``--set`` options, loading the settings and the plugins, opening
the store, and errors: every error a command expects is one line on stderr,
``hostcore: <what was wrong>``, and an exit status. 2 means the command line or
the configuration is wrong (fix it and retry); 1 means something the command
needed at run time failed (the server or the store cannot be reached).

Imports stay light here (typer and hostcore's errors): every command line imports
this module, and the settings, plugins and store are imported by the command that
uses them.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from hostcore.errors import RUNTIME_ERROR as RUNTIME_ERROR  # re-exported for the commands
from hostcore.errors import USAGE_ERROR as USAGE_ERROR
from hostcore.errors import ConfigError, HostcoreError, PluginError, Unavailable
from hostcore.errors import one_line as one_line

if TYPE_CHECKING:
    from hostcore.config import Settings
    from hostcore.db.engine import Database
    from hostcore.plugins import PluginRegistry

T = TypeVar("T")


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="A TOML file layered over /etc/hostcore/hostcore.toml and ./hostcore.toml.",
        dir_okay=False,
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override one setting, e.g. --set server.port=9000 (repeatable; highest precedence).",
        metavar="KEY.PATH=VALUE",
    ),
]


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print ``hostcore: <message>`` as one line on stderr and exit with ``code``.

    ``SystemExit`` rather than ``typer.Exit``, so it also ends the process outside a
    command (while plugins add theirs, or while a usage error is reported).
    """
    typer.echo(f"hostcore: {one_line(message)}", err=True)
    raise SystemExit(code)


def load_or_exit(config: Path | None, overrides: Sequence[str] | None) -> Settings:
    from hostcore.config import load_settings

    try:
        return load_settings(config_file=config, overrides=overrides or [])
    except ConfigError as exc:
        fail(str(exc))


def registry_or_exit(settings: Settings) -> PluginRegistry:
    from hostcore.plugins import PluginRegistry

    try:
        return PluginRegistry.load(settings)
    except (ConfigError, PluginError) as exc:
        fail(str(exc))


def run_or_exit(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to completion; the errors a command expects end it in one line."""
    import asyncio

    try:
        return asyncio.run(work)
    except (ConfigError, PluginError) as exc:
        fail(str(exc))
    except Unavailable as exc:
        fail(exc.detail, RUNTIME_ERROR)
    except HostcoreError as exc:
        fail(exc.detail)


def refuse_a_stranger_to_the_data_dir(settings: Settings) -> None:
    """Stop a command that would create the server's files (keys, secrets, the store)
    as another user than the one who owns the data directory: the server could not
    read what, say, root made. Run it as the owner (``sudo -u hostcore hostcore …``)."""
    try:
        owner = settings.data_dir.stat().st_uid
    except FileNotFoundError:
        return  # a first run makes the directory, and owns it
    except OSError as exc:
        fail(f"cannot read the data directory {settings.data_dir}: {exc.strerror}")
    if owner != os.geteuid():
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        fail(
            f"the data directory {settings.data_dir} belongs to {name}: run this command as "
            f"that user (sudo -u {name} hostcore …), so the files it creates stay theirs"
        )


@asynccontextmanager
async def opened_database(settings: Settings) -> AsyncIterator[Database]:
    """The store, connected once so that an unreachable one fails here, naming it."""
    from hostcore.db.engine import Database

    try:
        db = Database.from_settings(settings)
    except OSError as exc:  # the SQLite file's directory cannot be created
        raise Unavailable(f"cannot create the store: {exc}") from exc
    try:
        await db.check()
        yield db
    finally:
        await db.dispose()


def cli_layers_in(args: Sequence[str]) -> tuple[Path | None, list[str]]:
    """The ``--config``/``-c`` file and ``--set``/``-s`` assignments in a command line.

    Read before the command line is parsed, to know which plugins the
    configuration enables and so which plugins' commands to add. Every command
    that reads the configuration spells these options the same way.
    """
    config: Path | None = None
    overrides: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--":
            break
        name, value = _option_value(word, words)
        if name == "config" and value is not None:
            config = Path(value)
        elif name == "set" and value is not None:
            overrides.append(value)
    return config, overrides


_OPTION_NAMES = {"--config": "config", "-c": "config", "--set": "set", "-s": "set"}


def _option_value(word: str, rest: Iterator[str]) -> tuple[str | None, str | None]:
    """(option name, value) when ``word`` is one of ``--config``, ``-c``, ``--set``, ``-s``
    in any of click's spellings (``--set X``, ``--set=X``, ``-sX``); ``rest`` gives the
    next word when the value is separate."""
    if word in _OPTION_NAMES:
        return _OPTION_NAMES[word], next(rest, None)
    flag, equals, value = word.partition("=")
    if equals and flag.startswith("--") and flag in _OPTION_NAMES:
        return _OPTION_NAMES[flag], value
    if len(word) > 2 and word[:2] in _OPTION_NAMES:
        return _OPTION_NAMES[word[:2]], word[2:]
    return None, None

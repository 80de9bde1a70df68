"""The ``hostcore`` command line. Plugins add sub-commands through ``hostcore_cli``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from hostcore.backup_cli import register as register_backup_commands
from hostcore.cli_support import (
    ConfigOption,
    SetOption,
    cli_layers_in,
    fail,
    load_or_exit,
    one_line,
    opened_database,
    refuse_a_stranger_to_the_data_dir,
    registry_or_exit,
    run_or_exit,
)
from hostcore.deploy.cli import deploy_app
from hostcore.errors import ConfigError, ControlError, PluginError
from hostcore.launcher import version_line

if TYPE_CHECKING:
    from pydantic import BaseModel

    from hostcore.plugins import PluginSource

T = TypeVar("T")


cli = typer.Typer(
    name="hostcore",
    help="One secure, fast, pluggable REST API for this device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: Rich markup would eat "[server.host]" and every other bracket.
    # The root's mode applies to every sub-command and group, plugins' included.
    rich_markup_mode=None,
)
plugins_cli = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)
config_cli = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
db_cli = typer.Typer(
    help="The store: migrations of hostcore and every plugin.", no_args_is_help=True
)
cli.add_typer(plugins_cli, name="plugins")
cli.add_typer(config_cli, name="config")
cli.add_typer(db_cli, name="db")
cli.add_typer(deploy_app, name="deploy")
register_backup_commands(cli)


@cli.command()
def serve(
    config: ConfigOption = None,
    set_: SetOption = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind [server.host, default 127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port [server.port, default 8000].", min=1, max=65535)
    ] = None,
    uds: Annotated[
        Path | None, typer.Option(help="Listen on this unix socket instead of TCP [server.uds].")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="More than 1 runs gunicorn with uvicorn workers [server.workers].", min=1
        ),
    ] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
    debug: Annotated[bool, typer.Option(help="DEBUG on the console [debug].")] = False,
) -> None:
    """Run the API server (one uvicorn process, or gunicorn with --workers N)."""
    overrides = list(set_ or [])
    flags = {"server.host": host, "server.port": port, "server.uds": uds, "server.workers": workers}
    overrides += [f"{key}={value}" for key, value in flags.items() if value is not None]
    if debug:
        overrides.append("debug=true")
    settings = load_or_exit(config, overrides)
    if not reload:
        # The server runs in a fresh image of this process (hostcore.server_main): the
        # command line's framework does not stay in its memory. Same pid, same fds.
        from hostcore.config import CLI_LAYERS_ENV, cli_layers_to_environment
        from hostcore.runner import replace_this_process

        replace_this_process(
            # -P: the working directory is not put on the module path (a file there
            # must never be imported as uvicorn or anything else the server imports).
            [sys.executable, "-P", "-m", "hostcore.server_main"],
            {CLI_LAYERS_ENV: cli_layers_to_environment(config, overrides)},
        )
    from hostcore.serve import CliLayers
    from hostcore.serve import serve as run

    try:
        run(settings, CliLayers(config, tuple(overrides)), code_reload=reload)
    except (ConfigError, PluginError) as exc:
        fail(str(exc))


@cli.command("reload")
def reload_(
    config: ConfigOption = None,
    set_: SetOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the server's answer.", min=1)
    ] = 30,
) -> None:
    """Make the running server re-read its configuration (SIGHUP) and say how it went."""
    from hostcore.control import request_reload

    settings = load_or_exit(config, set_)
    try:
        outcome = request_reload(settings.run_dir, timeout_s=timeout)
    except ControlError as exc:
        fail(str(exc))
    if not outcome.applied:
        fail(f"configuration not reloaded, the server keeps its own: {outcome.detail}", code=1)
    typer.echo(f"hostcore (pid {outcome.pid}): {outcome.detail}")


@cli.command()
def version() -> None:
    """Print the hostcore version."""
    typer.echo(version_line())


@plugins_cli.command("list")
def plugins_list(
    config: ConfigOption = None,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every plugin with its version, state and scopes."""
    registry = registry_or_exit(load_or_exit(config, set_))
    plugins = list(registry)
    if as_json:
        rows = [
            {
                "name": p.name,
                "version": p.version,
                "state": p.state.value,
                "builtin": p.builtin,
                "distribution": p.distribution,
                "scopes": p.scopes,
                "reason": p.reason,
            }
            for p in plugins
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not plugins:
        typer.echo("no plugins installed")
        return
    width = max(len(p.name) for p in plugins)
    for p in plugins:
        line = f"{p.name:<{width}}  {p.version:<10} {p.state.value:<9} "
        line += f"scopes: {', '.join(p.scopes) or '-'}"
        if p.reason and not p.ok:
            line += f"  ({p.reason})"
        typer.echo(line)


@config_cli.command("show")
def config_show(
    config: ConfigOption = None,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print every effective setting with the layer it came from (secrets redacted)."""
    from hostcore.config import effective_config

    settings = load_or_exit(config, set_)
    plugin_settings: dict[str, BaseModel] = dict(registry_or_exit(settings).configs())
    rows = effective_config(settings, plugin_settings)
    if as_json:
        typer.echo(json.dumps([{"key": k, "value": v, "source": s} for k, v, s in rows], indent=2))
        return
    for key, value, source in rows:
        typer.echo(f"{key} = {json.dumps(value)}    # {source}")


def _with_database(
    config: Path | None, overrides: list[str] | None, work: Callable[..., Awaitable[T]]
) -> T:
    from hostcore.db.migrate import lineages

    settings = load_or_exit(config, overrides)
    refuse_a_stranger_to_the_data_dir(settings)
    registry = registry_or_exit(settings)

    async def run() -> T:
        async with opened_database(settings) as db:
            return await work(db, lineages(registry.migration_directories()))

    return run_or_exit(run())


@db_cli.command("upgrade")
def db_upgrade(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Apply every pending migration (the server also does this when it starts)."""
    from hostcore.db.migrate import migration_lock, upgrade

    async def work(db: Any, found: Any) -> dict[str, list[str]]:
        async with migration_lock(db):
            applied: dict[str, list[str]] = await upgrade(db, found)
            return applied

    for lineage, revisions in _with_database(config, set_, work).items():
        done = ", ".join(revisions) if revisions else "already up to date"
        typer.echo(f"{lineage}: {done}")


@db_cli.command("current")
def db_current(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Show the revision each lineage (hostcore and every plugin) is at."""
    from hostcore.db.migrate import current

    async def work(db: Any, found: Any) -> dict[str, list[str]]:
        heads: dict[str, list[str]] = await current(db, found)
        return heads

    for lineage, heads in _with_database(config, set_, work).items():
        typer.echo(f"{lineage}: {', '.join(heads) or 'empty (not migrated)'}")


@db_cli.command("history")
def db_history(config: ConfigOption = None, set_: SetOption = None) -> None:
    """List every migration of every lineage, oldest first, marking those applied."""
    from hostcore.db.migrate import history

    async def work(db: Any, found: Any) -> list[Any]:
        rows: list[Any] = await history(db, found)
        return rows

    for row in _with_database(config, set_, work):
        mark = "applied" if row.applied else "pending"
        typer.echo(f"{row.lineage:<12} {row.revision:<8} {mark:<8} {row.message}")


def enabled_plugin_sources(args: Sequence[str]) -> tuple[list[PluginSource], str | None]:
    """The installed plugins the configuration enables, with ``--config``/``--set`` read
    from ``args``; none, and why, when the configuration cannot be loaded."""
    from hostcore.config import load_settings
    from hostcore.plugins import installed_sources

    config, overrides = cli_layers_in(args)
    try:
        settings = load_settings(config_file=config, overrides=overrides)
    except ConfigError as exc:
        return [], one_line(str(exc))
    return [s for s in installed_sources() if settings.plugins.is_enabled(s.name)], None


def add_plugin_commands(root: typer.Typer, sources: Sequence[PluginSource]) -> None:
    """Let each plugin in ``sources`` add its sub-commands; a name claimed twice is an error."""
    from hostcore.plugins import PluginRegistry

    registry = PluginRegistry()
    owners = {name: "hostcore" for name in _command_names(root)}
    for source in sources:
        try:
            registry.pm.register(source.load(), name=source.name)
        except Exception as exc:  # a broken plugin must not break the whole CLI
            typer.echo(f"hostcore: plugin {source.name} failed to load: {exc}", err=True)
            continue
        before = Counter(_command_names(root))
        try:
            registry.call(source.name, "hostcore_cli", cli=root)
        except Exception as exc:
            typer.echo(f"hostcore: plugin {source.name} failed to add commands: {exc}", err=True)
            continue
        for name in Counter(_command_names(root)) - before:
            if name in owners:
                fail(f"command {name!r} is claimed by both {owners[name]} and plugin {source.name}")
            owners[name] = f"plugin {source.name}"


def _command_names(root: typer.Typer) -> list[str]:
    names = []
    for command in root.registered_commands:
        callback: Any = command.callback
        names.append(command.name or callback.__name__.replace("_", "-"))
    names.extend(group.name or "" for group in root.registered_groups)
    return names


def run(root: typer.Typer, args: Sequence[str], *, plugins_missing: str | None = None) -> NoReturn:
    """Run the command line; a usage error is one line on stderr and exit status 2.

    ``plugins_missing`` says why no plugin added commands; a usage error at the
    top level (an unknown command, most likely a plugin's) repeats it.
    """
    try:
        status = root(args=list(args), prog_name="hostcore", standalone_mode=False)
    except typer.Abort:
        fail("aborted", 1)
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # its message is the help (typer checks so)
            typer.echo(exc.format_message())
            raise SystemExit(exc.exit_code) from None
        fail(_usage_message(exc, plugins_missing), exc.exit_code)
    raise SystemExit(status if isinstance(status, int) else 0)


def _usage_message(exc: typer.TyperException, plugins_missing: str | None) -> str:
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    if plugins_missing and ctx.parent is None:
        message += f" (plugin commands are not loaded: {plugins_missing})"
    return f"{message} (see '{ctx.command_path} --help')"


def main() -> None:
    """The command line. Plugins' commands are added only when the command may be one of
    theirs (or the help lists every command): one of hostcore's own runs without loading
    the configuration or any plugin."""
    args = sys.argv[1:]
    if args and args[0] in _command_names(cli):
        run(cli, args)
    sources, plugins_missing = enabled_plugin_sources(args)
    add_plugin_commands(cli, sources)
    if plugins_missing:
        # "\b": click prints the paragraph as it is, so a path in it is not broken at a "-".
        cli.info.epilog = f"\b\nPlugin commands are not loaded: {plugins_missing}"
    run(cli, args, plugins_missing=plugins_missing)

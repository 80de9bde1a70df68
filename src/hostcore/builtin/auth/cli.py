"""``hostcore user|key|token|activity|call``: administration from the device's shell.

These commands work on the store directly (migrating it first if needed), so
they run where the server's data directory is readable: as its user, or root.

Defining them imports only typer and the request models: ``hostcore --help`` lists
them without loading the store, the security runtime or the HTTP client, which each
command imports when it runs.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import parse_qsl

import typer
from pydantic import ValidationError

from hostcore.builtin.auth.schemas import MAX_ROWS, TokenCreate
from hostcore.cli_support import (
    RUNTIME_ERROR,
    ConfigOption,
    SetOption,
    fail,
    load_or_exit,
    opened_database,
    refuse_a_stranger_to_the_data_dir,
    registry_or_exit,
    run_or_exit,
)
from hostcore.config import Settings
from hostcore.errors import ConfigError

if TYPE_CHECKING:
    from hostcore.builtin.auth.schemas import ActivityRead, ActivityStatsRead
    from hostcore.db.engine import Database
    from hostcore.security import users
    from hostcore.security.password_policy import PasswordPolicy
    from hostcore.security.runtime import SecurityRuntime

T = TypeVar("T")

# The token issue option that sets each TokenCreate field, to name it in an error.
_TOKEN_OPTIONS = {"client": "--client", "scopes": "--scope", "ttl_s": "--ttl"}


def with_store(
    config: Path | None,
    overrides: list[str] | None,
    work: Callable[[SecurityRuntime], Awaitable[T]],
) -> T:
    """Load settings, migrate the store, prepare security, run ``work``."""
    from hostcore.db.migrate import lineages, migration_lock, upgrade

    settings = load_or_exit(config, overrides)
    refuse_a_stranger_to_the_data_dir(settings)
    registry = registry_or_exit(settings)

    async def run() -> T:
        async with opened_database(settings) as db:
            async with migration_lock(db):
                await upgrade(db, lineages(registry.migration_directories()))
                runtime = _security_runtime(settings, db)
                await runtime.prepare()
            return await work(runtime)

    return run_or_exit(run())


def _security_runtime(settings: Settings, db: Database) -> SecurityRuntime:
    from hostcore.security.runtime import SecurityRuntime

    try:
        return SecurityRuntime(settings, db, serving=False)
    except ValueError as exc:  # e.g. a rate-limit storage whose client library is missing
        raise ConfigError(str(exc)) from exc


def _token_request(client: str, scopes: list[str] | None, ttl_s: int | None) -> TokenCreate:
    """The request ``token issue`` makes, checked before the store is touched."""
    try:
        return TokenCreate(client=client, scopes=scopes, ttl_s=ttl_s)
    except ValidationError as exc:
        options = list(dict.fromkeys(_TOKEN_OPTIONS[str(e["loc"][0])] for e in exc.errors()))
        problems = "; ".join(f"{e['input']!r}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(problems, param_hint=options) from None


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return password


def policy(runtime: SecurityRuntime) -> PasswordPolicy:
    from hostcore.security.password_policy import PasswordPolicy

    return PasswordPolicy.from_settings(runtime.auth)


def _activity_line(row: ActivityRead) -> str:
    return (
        f"{_when(row.at)} {row.status} {row.method:<6} {row.route:<40} "
        f"{row.principal or '-':<24} {row.duration_ms:.1f}ms {row.request_id}"
    )


def _stats_line(row: ActivityStatsRead) -> str:
    return (
        f"{row.principal or '-':<28} {row.requests:>7} requests {row.denied:>5} denied "
        f"{row.errors:>4} errors  mean {row.mean_ms:.1f}ms  last {_when(row.last_at)}"
    )


def add_commands(cli: typer.Typer) -> None:
    """Add every command of the auth plugin to the root ``hostcore`` app."""
    add_user_commands(cli)
    add_key_commands(cli)
    add_token_commands(cli)
    add_activity_command(cli)
    add_call_command(cli)


def add_user_commands(cli: typer.Typer) -> None:
    """``hostcore user add|list|remove|passwd``."""
    user_cli = typer.Typer(
        help="Users of the web UI (passwords hashed with argon2).", no_args_is_help=True
    )
    cli.add_typer(user_cli, name="user")

    @user_cli.command("add")
    def user_add(
        username: str,
        role: Annotated[str, typer.Option(help="A role from [auth.roles].")] = "viewer",
        password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Add a user."""
        password = _read_password(password_stdin)

        async def work(runtime: SecurityRuntime) -> users.UserInfo:
            from hostcore.builtin.auth import service
            from hostcore.security import users

            service.role_scopes(runtime, role)
            async with runtime.db.session() as session, session.begin():
                return await users.add(session, username, password, role, policy=policy(runtime))

        info = with_store(config, set_, work)
        typer.echo(f"added user {info.username} ({info.role})")

    @user_cli.command("list")
    def user_list(config: ConfigOption = None, set_: SetOption = None) -> None:
        """List users."""

        async def work(runtime: SecurityRuntime) -> list[users.UserInfo]:
            from hostcore.security import users

            async with runtime.db.session() as session:
                return await users.list_users(session)

        for info in with_store(config, set_, work):
            typer.echo(f"{info.username:<24} {info.role:<12} since {_when(info.created_at)}")

    @user_cli.command("remove")
    def user_remove(username: str, config: ConfigOption = None, set_: SetOption = None) -> None:
        """Remove a user (their tokens are revoked)."""

        async def work(runtime: SecurityRuntime) -> int:
            from hostcore.security import users

            async with runtime.db.session() as session, session.begin():
                await users.remove(session, username)
            return await runtime.revoke(subject=f"user:{username}")

        revoked = with_store(config, set_, work)
        typer.echo(f"removed user {username}; revoked {revoked} token(s)")

    @user_cli.command("passwd")
    def user_passwd(
        username: str,
        password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Set a user's password (their tokens are revoked)."""
        password = _read_password(password_stdin)

        async def work(runtime: SecurityRuntime) -> int:
            from hostcore.security import users

            async with runtime.db.session() as session, session.begin():
                await users.set_password(session, username, password, policy=policy(runtime))
            return await runtime.revoke(subject=f"user:{username}")

        revoked = with_store(config, set_, work)
        typer.echo(f"password of {username} changed; revoked {revoked} token(s)")


def add_key_commands(cli: typer.Typer) -> None:
    """``hostcore key list|rotate``."""
    key_cli = typer.Typer(help="JWT signing keys.", no_args_is_help=True)
    cli.add_typer(key_cli, name="key")

    @key_cli.command("rotate")
    def key_rotate(config: ConfigOption = None, set_: SetOption = None) -> None:
        """Make a new signing key active; the old one verifies until its tokens expire."""

        async def work(runtime: SecurityRuntime) -> str:
            return (await runtime.rotate_key()).kid

        typer.echo(f"active signing key: {with_store(config, set_, work)}")

    @key_cli.command("list")
    def key_list(config: ConfigOption = None, set_: SetOption = None) -> None:
        """List signing keys (never their private material)."""

        async def work(runtime: SecurityRuntime) -> list[Any]:
            assert runtime.keystore is not None
            async with runtime.db.session() as session:
                return await runtime.keystore.infos(session)

        for info in with_store(config, set_, work):
            state = "active" if info.active else f"verifies until {_when(info.verify_until)}"
            typer.echo(f"{info.kid}  {info.algorithm:<6} created {_when(info.created_at)}  {state}")


def add_token_commands(cli: typer.Typer) -> None:
    """``hostcore token issue|list|revoke``."""
    token_cli = typer.Typer(help="Issue, list and revoke tokens.", no_args_is_help=True)
    cli.add_typer(token_cli, name="token")

    @token_cli.command("issue")
    def token_issue(
        client: Annotated[str, typer.Option(help="A client from [auth.clients].")],
        scope: Annotated[list[str] | None, typer.Option(help="Repeatable; default: all.")] = None,
        ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds.")] = None,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Issue a token for a client and print it as JSON (for local tools)."""

        body = _token_request(client, scope, ttl)

        async def work(runtime: SecurityRuntime) -> dict[str, Any]:
            from hostcore.builtin.auth import service

            info = await service.issue_for_client(runtime, client, body.scopes, body.ttl_s)
            return {
                "access_token": info.access_token,
                "token_type": "bearer",
                "jti": info.jti,
                "subject": info.subject,
                "scopes": info.scopes,
                "expires_at": info.expires_at,
            }

        _print_json(with_store(config, set_, work))

    @token_cli.command("list")
    def token_list(
        subject: Annotated[str | None, typer.Option(help="e.g. client:panel")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Include revoked and expired.")] = False,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """List recorded tokens (by jti; the tokens themselves are never stored)."""

        async def work(runtime: SecurityRuntime) -> list[Any]:
            from hostcore.builtin.auth import service

            async with runtime.db.session() as session:
                return await service.list_tokens(
                    session, subject=subject, live_only=not all_, limit=MAX_ROWS
                )

        for row in with_store(config, set_, work):
            state = "revoked" if row.revoked_at else f"expires {_when(row.expires_at)}"
            typer.echo(f"{row.jti}  {row.subject:<24} {' '.join(row.scopes):<30} {state}")

    @token_cli.command("revoke")
    def token_revoke(
        jti: Annotated[str | None, typer.Option(help="One token.")] = None,
        subject: Annotated[
            str | None, typer.Option(help="Every token of client:X / user:X.")
        ] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every live token.")] = False,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Revoke tokens; every worker refuses them within a second."""
        if sum(x is not None and x is not False for x in (jti, subject, all_)) != 1:
            fail("give exactly one of --jti, --subject, --all")

        async def work(runtime: SecurityRuntime) -> int:
            return await runtime.revoke(jti=jti, subject=subject, everything=all_)

        typer.echo(f"revoked {with_store(config, set_, work)} token(s)")


def add_activity_command(cli: typer.Typer) -> None:
    """``hostcore activity``."""

    @cli.command("activity")
    def activity(
        principal: Annotated[str | None, typer.Option(help="e.g. client:panel")] = None,
        since: Annotated[float | None, typer.Option(help="Seconds ago.")] = None,
        status: Annotated[int | None, typer.Option(help="Only this HTTP status.")] = None,
        limit: Annotated[int, typer.Option(min=1, max=MAX_ROWS)] = 50,
        stats: Annotated[bool, typer.Option(help="Per-principal totals instead.")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Show recorded requests (newest first) or per-principal statistics."""
        import time

        start = time.time() - since if since is not None else None

        async def work(runtime: SecurityRuntime) -> list[Any]:
            from hostcore.builtin.auth import service

            async with runtime.db.session() as session:
                if stats:
                    return await service.activity_stats(session, since=start)
                return await service.query_activity(
                    session, principal=principal, since=start, status=status, limit=limit
                )

        rows = with_store(config, set_, work)
        if as_json:
            _print_json([row.model_dump() for row in rows])
            return
        for row in rows:
            typer.echo(_stats_line(row) if stats else _activity_line(row))


def add_call_command(cli: typer.Typer) -> None:
    """``hostcore call``."""

    @cli.command("call")
    def call(
        method: str,
        path: str,
        data: Annotated[str | None, typer.Option(help="A JSON body.")] = None,
        client: Annotated[str, typer.Option(help="Sign as this client.")] = "cli",
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        """Send one HMAC-signed request to the running server and print the answer."""
        import httpx2

        from hostcore.client import HostcoreClient

        settings = load_or_exit(config, set_)
        try:
            body = json.loads(data) if data is not None else None
        except json.JSONDecodeError as exc:
            fail(f"--data is not JSON: {exc}")
        path, _, query = path.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            http = HostcoreClient.from_settings(settings, client)
        except (ConfigError, ValueError) as exc:
            fail(str(exc))
        with http:
            try:
                response = http.request(method.upper(), path, params=params or None, json=body)
            except ValueError as exc:
                fail(str(exc))
            except httpx2.RequestError as exc:
                fail(f"cannot reach the server at {http.address}: {exc}", RUNTIME_ERROR)
        try:
            _print_json(response.json())
        except ValueError:
            typer.echo(response.text)
        if response.status_code >= 400:
            raise typer.Exit(1)

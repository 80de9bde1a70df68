"""The built-in ``auth`` plugin: tokens, keys, users and activity over HTTP and the CLI.

The security pipeline itself (authentication, scopes, rate limits, activity
recording) is hostcore core and stays on even when this plugin is disabled.

Its server code (router, service) is imported by the hooks that need it, never
at import: the command line loads this module to list its commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hostcore.hookspecs import hookimpl
from hostcore.security.acl import ADMIN_SCOPE

if TYPE_CHECKING:
    import typer
    from fastapi import APIRouter


@hookimpl
def hostcore_scopes() -> dict[str, str]:
    return {ADMIN_SCOPE: "Mint tokens for others, revoke tokens, rotate keys, read activity."}


@hookimpl
def hostcore_routes() -> APIRouter:
    from hostcore.builtin.auth.router import build_router

    return build_router()


@hookimpl
def hostcore_cli(cli: typer.Typer) -> None:
    from hostcore.builtin.auth.cli import add_commands

    add_commands(cli)

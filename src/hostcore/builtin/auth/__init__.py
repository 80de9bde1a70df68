"""The built-in ``auth`` plugin: tokens, keys, users and activity over HTTP and the CLI.

The security pipeline itself (authentication, scopes, rate limits, activity
recording) is hostcore core and stays on even when this plugin is disabled.
"""

from __future__ import annotations

import typer
from fastapi import APIRouter

from hostcore.builtin.auth.cli import add_commands
from hostcore.builtin.auth.router import build_router
from hostcore.builtin.auth.service import ADMIN_SCOPE
from hostcore.hookspecs import hookimpl


@hookimpl
def hostcore_scopes() -> dict[str, str]:
    return {ADMIN_SCOPE: "Mint tokens for others, revoke tokens, rotate keys, read activity."}


@hookimpl
def hostcore_routes() -> APIRouter:
    return build_router()


@hookimpl
def hostcore_cli(cli: typer.Typer) -> None:
    add_commands(cli)

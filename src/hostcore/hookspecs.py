"""Every hook a hostcore plugin may implement.

A plugin implements any subset, and each implementation may take any subset
of the arguments a hook offers (pluggy passes them by name). Hooks are called
once per plugin, so hostcore always knows which plugin returned what.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer
    from fastapi import APIRouter, FastAPI, Request, Response
    from pydantic import BaseModel

    from hostcore.config import Settings
    from hostcore.events.hub import Topic
    from hostcore.jobs.kinds import JobKind

hookspec = pluggy.HookspecMarker("hostcore")
hookimpl = pluggy.HookimplMarker("hostcore")

ExceptionHandler = Callable[["Request", Any], "Awaitable[Response] | Response"]


@hookspec
def hostcore_settings_model() -> type[BaseModel] | None:
    """Return the pydantic model of this plugin's ``[plugins.<name>]`` settings table."""


@hookspec
def hostcore_routes(settings: Settings, config: Any) -> APIRouter | None:
    """Return an APIRouter; it is mounted at ``/api/v1/<name>`` and tagged with the name."""


@hookspec
def hostcore_scopes() -> Mapping[str, str] | None:
    """Return the scopes this plugin defines, each with a one-line description."""


@hookspec
def hostcore_migrations() -> Path | None:
    """Return the directory of this plugin's Alembic migration scripts (its own branch)."""


@hookspec
def hostcore_cli(cli: typer.Typer) -> None:
    """Add sub-commands to the ``hostcore`` command line."""


@hookspec
def hostcore_startup(app: FastAPI, settings: Settings, config: Any) -> Awaitable[None] | None:
    """Prepare the plugin when a worker starts; raising marks the plugin failed."""


@hookspec
def hostcore_shutdown(app: FastAPI) -> Awaitable[None] | None:
    """Release what startup acquired when a worker stops."""


@hookspec
def hostcore_health(app: FastAPI) -> Mapping[str, Any] | Awaitable[Mapping[str, Any]] | None:
    """Report the plugin's health: ``{"status": "ok" | "degraded" | "down", ...}``."""


@hookspec
def hostcore_static_mounts(settings: Settings, config: Any) -> Mapping[str, Path] | None:
    """Return URL path -> directory of static files to serve (e.g. ``{"/ui": dist}``)."""


@hookspec
def hostcore_exception_handlers() -> Mapping[type[Exception], ExceptionHandler] | None:
    """Return exception class -> handler for exceptions this plugin's code raises."""


@hookspec
def hostcore_job_kinds(settings: Settings, config: Any) -> Sequence[JobKind] | None:
    """Return the kinds of job (``hostcore.jobs.JobKind``) this plugin's routes start."""


@hookspec
def hostcore_event_topics(settings: Settings, config: Any) -> Sequence[Topic] | None:
    """Return the event topics (``hostcore.events.Topic``) this plugin publishes."""

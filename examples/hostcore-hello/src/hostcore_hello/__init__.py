"""hostcore-hello: the example plugin every hostcore plugin author can copy from."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.cli_support import ConfigOption, SetOption, fail, load_or_exit
from hostcore.config import validate_plugin_settings
from hostcore.context import Principal
from hostcore.db.deps import DbSession
from hostcore.errors import BadRequest, ConfigError, error_responses
from hostcore.hookspecs import hookimpl
from hostcore.jobs import JobContext, JobKind, JobRead, Jobs, accepted
from hostcore.security.deps import RequireScope

__version__ = "0.1.0"
STATIC = Path(__file__).parent / "static"
MIGRATIONS = Path(__file__).parent / "migrations"

# The plugin's own table, created by its migration lineage (migrations/).
greetings = Table(
    "hello_greetings",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("at", Float, nullable=False),
)


class HelloSettings(BaseModel):
    """``[plugins.hello]`` in hostcore.toml."""

    model_config = {"extra": "forbid"}

    greeting: str = Field("Hello", min_length=1, max_length=40)
    max_name_length: int = Field(32, ge=1, le=256)


class GreetingRead(BaseModel):
    message: str


class GreetedRead(BaseModel):
    name: str
    at: float


def greet(config: HelloSettings, name: str) -> str:
    """The plugin's service: plain, typed, no HTTP."""
    if len(name) > config.max_name_length:
        raise BadRequest(f"name is longer than {config.max_name_length} characters")
    return f"{config.greeting}, {name}!"


async def remember(session: AsyncSession, name: str) -> None:
    async with session.begin():
        await session.execute(insert(greetings).values(name=name, at=time.time()))


async def recent(session: AsyncSession, limit: int) -> list[GreetedRead]:
    rows = await session.execute(select(greetings).order_by(greetings.c.id.desc()).limit(limit))
    return [GreetedRead(name=row.name, at=row.at) for row in rows]


class CountdownStart(BaseModel):
    """The body of ``POST /countdown``: a job counting down, a step at a time."""

    model_config = {"extra": "forbid"}

    steps: int = Field(3, ge=1, le=60)
    step_s: float = Field(1.0, ge=0.05, le=5.0)


class CountdownRead(BaseModel):
    counted: int


async def countdown(context: JobContext, params: CountdownStart) -> CountdownRead:
    """The job's work: report progress each step; ``check()`` ends it when cancelled
    (an ``await`` ends too: hostcore cancels the task)."""
    for done in range(params.steps):
        context.check()
        context.progress(done / params.steps, f"{params.steps - done} to go")
        await asyncio.sleep(params.step_s)
    context.log("lift-off")
    return CountdownRead(counted=params.steps)


# One countdown at a time (per resource: this kind has one, ""); a second start answers
# 409 naming the running one.
COUNTDOWN = JobKind("hello.countdown", countdown, timeout_s=120, description="Count down.")


class Counter:
    """State created at startup, kept on the app so each worker has its own."""

    def __init__(self) -> None:
        self.greetings = 0


@hookimpl
def hostcore_settings_model() -> type[BaseModel]:
    return HelloSettings


@hookimpl
def hostcore_scopes() -> dict[str, str]:
    return {"hello:read": "Ask for a greeting."}


@hookimpl
def hostcore_routes(config: HelloSettings) -> APIRouter:
    router = APIRouter(dependencies=[RequireScope("hello:read")])

    @router.get("/greet", responses=error_responses(400, 401, 403, 422, 429))
    async def get_greeting(
        request: Request,
        session: DbSession,
        name: Annotated[str, Query(min_length=1, pattern=r"^[\w .'-]+$")],
    ) -> GreetingRead:
        message = greet(config, name)
        await remember(session, name)
        request.app.state.hello_counter.greetings += 1
        return GreetingRead(message=message)

    @router.get("/greeted", responses=error_responses(401, 403, 422, 429))
    async def get_greeted(
        session: DbSession, limit: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> list[GreetedRead]:
        return await recent(session, limit)

    @router.post(
        "/countdown",
        status_code=202,
        response_model=JobRead,
        responses=error_responses(401, 403, 409, 422, 429),
        summary="Start a countdown job (follow it at the Location it answers with)",
    )
    async def start_countdown(
        body: CountdownStart,
        principal: Annotated[Principal, RequireScope("hello:read")],
        jobs: Jobs,
    ) -> JSONResponse:
        job, reused = await jobs.start_job(COUNTDOWN.name, principal, body)
        return accepted(job, reused)

    return router


@hookimpl
def hostcore_job_kinds() -> list[JobKind]:
    return [COUNTDOWN]


@hookimpl
def hostcore_migrations() -> Path:
    return MIGRATIONS


@hookimpl
async def hostcore_startup(app: FastAPI) -> None:
    app.state.hello_counter = Counter()


@hookimpl
async def hostcore_shutdown(app: FastAPI) -> None:
    del app.state.hello_counter


@hookimpl
def hostcore_health(app: FastAPI) -> dict[str, Any]:
    counter: Counter | None = getattr(app.state, "hello_counter", None)
    if counter is None:
        return {"status": "down", "detail": "not started"}
    return {"status": "ok", "greetings": counter.greetings}


@hookimpl
def hostcore_static_mounts() -> dict[str, Path]:
    return {"/hello-ui": STATIC}


@hookimpl
def hostcore_cli(cli: typer.Typer) -> None:
    @cli.command("hello")
    def hello_command(name: str, config: ConfigOption = None, set_: SetOption = None) -> None:
        """Print the configured greeting for NAME."""
        settings = load_or_exit(config, set_)
        try:
            plugin_config = validate_plugin_settings(settings, "hello", HelloSettings)
            assert isinstance(plugin_config, HelloSettings)
            typer.echo(greet(plugin_config, name))
        except ConfigError as exc:
            fail(str(exc))
        except BadRequest as exc:
            fail(exc.detail)

"""hostcore-hello: the example plugin every hostcore plugin author can copy from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, Field

from hostcore.config import Settings, load_settings, validate_plugin_settings
from hostcore.errors import BadRequest, error_responses
from hostcore.hookspecs import hookimpl
from hostcore.security.deps import RequireScope

__version__ = "0.1.0"
STATIC = Path(__file__).parent / "static"


class HelloSettings(BaseModel):
    """``[plugins.hello]`` in hostcore.toml."""

    model_config = {"extra": "forbid"}

    greeting: str = Field("Hello", min_length=1, max_length=40)
    max_name_length: int = Field(32, ge=1, le=256)


class GreetingRead(BaseModel):
    message: str


def greet(config: HelloSettings, name: str) -> str:
    """The plugin's service: plain, typed, no HTTP."""
    if len(name) > config.max_name_length:
        raise BadRequest(f"name is longer than {config.max_name_length} characters")
    return f"{config.greeting}, {name}!"


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
        name: Annotated[str, Query(min_length=1, pattern=r"^[\w .'-]+$")],
    ) -> GreetingRead:
        message = greet(config, name)
        request.app.state.hello_counter.greetings += 1
        return GreetingRead(message=message)

    return router


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
    def hello_command(
        name: str,
        config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    ) -> None:
        """Print the configured greeting for NAME."""
        settings: Settings = load_settings(config_file=config)
        plugin_config = validate_plugin_settings(settings, "hello", HelloSettings)
        assert isinstance(plugin_config, HelloSettings)
        typer.echo(greet(plugin_config, name))

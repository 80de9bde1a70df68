"""Small plugins used by the tests, registered as objects (no entry point needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict

from hostcore.errors import NotFound
from hostcore.hookspecs import hookimpl
from hostcore.security.deps import Public, RequireScope


class EchoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word: str = "echo"


class Echo:
    """A healthy plugin with a route, settings and a scope."""

    @hookimpl
    def hostcore_settings_model(self) -> type[BaseModel]:
        return EchoSettings

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"echo:read": "Read echoes."}

    @hookimpl
    def hostcore_routes(self, config: EchoSettings) -> APIRouter:
        router = APIRouter(dependencies=[RequireScope("echo:read")])

        @router.get("/word")
        async def word() -> dict[str, str]:
            return {"word": config.word}

        @router.get("/missing")
        async def missing() -> None:
            raise NotFound("there is no such thing")

        @router.get("/crash")
        async def crash() -> None:
            raise RuntimeError("secret internals /etc/shadow")

        return router


class Broken:
    """A plugin whose startup raises."""

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter(dependencies=[Public])

        @router.get("/thing")
        async def thing() -> dict[str, str]:
            return {"thing": "never served"}

        return router

    @hookimpl
    async def hostcore_startup(self) -> None:
        raise OSError("device /dev/widget not found")


class Mounting:
    """A plugin that serves static files at a fixed mount."""

    def __init__(self, directory: Path, mount: str = "/ui") -> None:
        self.directory = directory
        self.mount = mount

    @hookimpl
    def hostcore_static_mounts(self) -> dict[str, Path]:
        return {self.mount: self.directory}


class Lifecycle:
    """Records startup, shutdown and health calls."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    async def hostcore_startup(self, app: FastAPI, config: Any) -> None:
        self.events.append("startup")
        app.state.lifecycle_started = True

    @hookimpl
    def hostcore_shutdown(self, app: FastAPI) -> None:
        self.events.append("shutdown")

    @hookimpl
    async def hostcore_health(self) -> dict[str, Any]:
        return {"status": "degraded", "detail": "fan slow"}


class TeapotError(Exception):
    pass


class Teapot:
    """A plugin mapping its own exception to a response."""

    @hookimpl
    def hostcore_exception_handlers(self) -> dict[type[Exception], Any]:
        from fastapi.responses import JSONResponse

        async def teapot(request: Any, exc: TeapotError) -> JSONResponse:
            return JSONResponse({"error": "Teapot", "detail": str(exc)}, status_code=418)

        return {TeapotError: teapot}

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter(dependencies=[Public])

        @router.get("/brew")
        async def brew() -> None:
            raise TeapotError("short and stout")

        return router


class Plain:
    """A plugin with no hooks at all, usable under any name."""

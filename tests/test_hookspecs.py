"""One test per hook, plus the meta-tests: every hook is tested here and documented."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from pydantic import BaseModel
from typer.testing import CliRunner

from hostcore import hookspecs
from hostcore.config import Settings
from hostcore.errors import ConfigError
from hostcore.hookspecs import hookimpl
from hostcore.plugins import PluginRegistry, object_source
from tests.helpers import AppFactory, ClientFor, Echo, Lifecycle, Mounting, Teapot

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("hostcore_"))


def test_every_hook_has_a_test() -> None:
    tests = {name for name, _ in inspect.getmembers(sys.modules[__name__], inspect.isfunction)}
    missing = [hook for hook in HOOKS if f"test_hook_{hook}" not in tests]
    assert not missing, f"hooks without a test in {__file__}: {missing}"


def test_every_hook_has_a_section_in_the_plugin_guide() -> None:
    guide = DOCS.read_text()
    missing = [hook for hook in HOOKS if not re.search(rf"^### `{hook}\(", guide, re.MULTILINE)]
    assert not missing, f"hooks without a '### `hook(...)`' section in {DOCS}: {missing}"


def test_every_hook_has_a_one_line_docstring() -> None:
    for hook in HOOKS:
        doc = getattr(hookspecs, hook).__doc__ or ""
        assert doc and "\n" not in doc.strip(), hook


def test_hook_hostcore_settings_model(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory("plugins.echo.word=ping")
    registry = PluginRegistry.load(settings, sources=[object_source("echo", Echo())])
    config = registry["echo"].config
    assert isinstance(config, BaseModel)
    assert config.model_dump() == {"word": "ping"}
    with pytest.raises(ConfigError, match=r"unknown key plugins\.echo\.wrd \(from --set"):
        PluginRegistry.load(
            settings_factory("plugins.echo.wrd=x"), sources=[object_source("echo", Echo())]
        )


def test_hook_hostcore_routes(app_factory: AppFactory, client_for: ClientFor) -> None:
    app = app_factory({"echo": Echo()})
    client = client_for(app)
    assert client.get("/api/v1/echo/word").json() == {"word": "echo"}
    operation = app.openapi()["paths"]["/api/v1/echo/word"]["get"]
    assert operation["tags"] == ["echo"]


def test_hook_hostcore_scopes(settings: Settings) -> None:
    registry = PluginRegistry.load(settings, sources=[object_source("echo", Echo())])
    assert registry["echo"].scopes == {"echo:read": "Read echoes."}
    assert registry.all_scopes() == {"echo:read": "Read echoes."}


def test_hook_hostcore_migrations(settings: Settings, tmp_path: Path) -> None:
    class Migrating:
        @hookimpl
        def hostcore_migrations(self) -> Path:
            return tmp_path

    registry = PluginRegistry.load(settings, sources=[object_source("mig", Migrating())])
    assert registry.call("mig", "hostcore_migrations") == tmp_path


def test_hook_hostcore_cli() -> None:
    class Commands:
        @hookimpl
        def hostcore_cli(self, cli: typer.Typer) -> None:
            @cli.command("ping")
            def ping() -> None:
                typer.echo("pong")

    root = typer.Typer()

    @root.command()
    def other() -> None:
        """Keeps typer from collapsing a one-command app."""

    registry = PluginRegistry()
    registry.pm.register(Commands(), name="commands")
    registry.call("commands", "hostcore_cli", cli=root)
    result = CliRunner().invoke(root, ["ping"])
    assert result.output == "pong\n"


def test_hook_hostcore_startup(app_factory: AppFactory, client_for: ClientFor) -> None:
    plugin = Lifecycle()
    app = app_factory({"life": plugin})
    client_for(app)
    assert plugin.events == ["startup"]
    assert app.state.lifecycle_started is True


def test_hook_hostcore_shutdown(app_factory: AppFactory) -> None:
    plugin = Lifecycle()
    with TestClient(app_factory({"life": plugin})):
        pass
    assert plugin.events == ["startup", "shutdown"]


def test_hook_hostcore_health(app_factory: AppFactory, client_for: ClientFor) -> None:
    client = client_for(app_factory({"life": Lifecycle(), "echo": Echo()}))
    health = {p["name"]: p["health"] for p in client.get("/api/v1/plugins").json()}
    assert health == {
        "life": {"status": "degraded", "detail": "fan slow"},
        "echo": {"status": "ok"},
    }


def test_hook_hostcore_static_mounts(
    app_factory: AppFactory, client_for: ClientFor, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<h1>panel</h1>")
    client = client_for(app_factory({"panel": Mounting(tmp_path)}))
    response = client.get("/ui/")
    assert response.status_code == 200
    assert response.text == "<h1>panel</h1>"


def test_hook_hostcore_exception_handlers(app_factory: AppFactory, client_for: ClientFor) -> None:
    client = client_for(app_factory({"teapot": Teapot()}))
    response = client.get("/api/v1/teapot/brew")
    assert response.status_code == 418
    assert response.json() == {"error": "Teapot", "detail": "short and stout"}


def test_hook_hostcore_job_kinds(app_factory: AppFactory) -> None:
    from hostcore.jobs import JobContext, JobKind

    async def work(_context: JobContext, _params: Any) -> None:
        return None

    class Worker:
        @hookimpl
        def hostcore_job_kinds(self, settings: Settings) -> list[JobKind]:
            assert isinstance(settings, Settings)
            return [JobKind("worker.work", work)]

    app = app_factory({"worker": Worker()})
    assert list(app.state.jobs.kinds) == ["worker.work"]


def test_hook_hostcore_event_topics(app_factory: AppFactory) -> None:
    from hostcore.events import Topic

    class Talker:
        @hookimpl
        def hostcore_scopes(self) -> dict[str, str]:
            return {"talker:read": "Listen."}

        @hookimpl
        def hostcore_event_topics(self) -> list[Topic]:
            return [
                Topic("talker.news", "talker:read"),
                Topic("talker.*", "talker:read", member=str.isalnum),
            ]

    app = app_factory({"talker": Talker()})
    assert app.state.events.topics["talker.news"].scope == "talker:read"
    assert app.state.events.declared("talker.anyone")[1] == "anyone"
    misnamed = app_factory({"talker": _Misnamed()})
    assert misnamed.state.registry["talker"].state.value == "failed"
    for family in (_FamilyWithoutMember(), _MemberWithoutFamily()):
        assert app_factory({"talker": family}).state.registry["talker"].state.value == "failed"


class _FamilyWithoutMember:
    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"talker:read": "Listen."}

    @hookimpl
    def hostcore_event_topics(self) -> list[Any]:
        from hostcore.events import Topic

        return [Topic("talker.*", "talker:read")]


class _MemberWithoutFamily:
    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"talker:read": "Listen."}

    @hookimpl
    def hostcore_event_topics(self) -> list[Any]:
        from hostcore.events import Topic

        return [Topic("talker.news", "talker:read", member=str.isalnum)]


class _Misnamed:
    @hookimpl
    def hostcore_event_topics(self) -> list[Any]:
        from hostcore.events import Topic

        return [Topic("other.news", "talker:read")]


def test_hook_implementations_may_take_any_subset_of_arguments(settings: Settings) -> None:
    seen: dict[str, Any] = {}

    class Picky:
        @hookimpl
        def hostcore_routes(self, settings: Settings) -> None:
            seen["settings"] = settings

    registry = PluginRegistry.load(settings, sources=[object_source("picky", Picky())])
    registry.call("picky", "hostcore_routes", settings=settings, config=None)
    assert seen == {"settings": settings}

"""The outside plugin in examples/hostcore-hello, installed with pip as a user would."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hostcore.app import create_app
from hostcore.config import Settings
from hostcore.errors import ConfigError
from hostcore.plugins import PluginRegistry, PluginState
from tests.helpers import bearer, isolated_environ, run_hostcore


@pytest.fixture
def hello_installed(hello_site: Path) -> Iterator[Path]:
    """Make the installed example visible to entry-point discovery in this process."""
    sys.path.insert(0, str(hello_site))
    importlib.invalidate_caches()
    yield hello_site
    sys.path.remove(str(hello_site))
    sys.modules.pop("hostcore_hello", None)
    importlib.invalidate_caches()


def test_it_is_discovered_through_its_entry_point(
    hello_installed: Path, settings: Settings
) -> None:
    registry = PluginRegistry.load(settings)
    hello = registry["hello"]
    assert hello.state is PluginState.OK
    assert (hello.version, hello.distribution, hello.builtin) == ("0.1.0", "hostcore-hello", False)
    assert hello.scopes == {"hello:read": "Ask for a greeting."}


def test_its_routes_read_its_config(
    hello_installed: Path, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    config = tmp_path / "hostcore.toml"
    config.write_text('[plugins.hello]\ngreeting = "Ahoy"\nmax_name_length = 5\n')
    settings = settings_factory(config_file=config)
    with TestClient(create_app(settings)) as client:
        anonymous = client.get("/api/v1/hello/greet", params={"name": "Ada"})
        assert anonymous.status_code == 401
        client.headers.update(bearer(client, ["hello:read"]))
        assert client.get("/api/v1/hello/greet", params={"name": "Ada"}).json() == {
            "message": "Ahoy, Ada!"
        }
        too_long = client.get("/api/v1/hello/greet", params={"name": "Adalbert"})
        assert too_long.status_code == 400
        assert too_long.json() == {
            "error": "BadRequest",
            "detail": "name is longer than 5 characters",
        }
        hostile = client.get("/api/v1/hello/greet", params={"name": "x; rm -rf /"})
        assert hostile.status_code == 422
        assert client.get("/hello-ui/").text.count("hello from a hostcore plugin") == 1
        greeted = client.get("/api/v1/hello/greeted").json()
        assert [row["name"] for row in greeted] == ["Ada"], "its own table, from its migrations"
        admin = bearer(client, ["auth:admin"])
        listing = {p["name"]: p for p in client.get("/api/v1/plugins", headers=admin).json()}
        assert listing["hello"]["health"] == {"status": "ok", "greetings": 1}
        spec = client.get("/api/v1/openapi.json").json()
        assert spec["paths"]["/api/v1/hello/greet"]["get"]["tags"] == ["hello"]


def test_a_typo_in_its_config_names_key_and_file(
    hello_installed: Path, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    config = tmp_path / "hostcore.toml"
    config.write_text('[plugins.hello]\ngreting = "typo"\n')
    with pytest.raises(
        ConfigError, match=rf"unknown key plugins\.hello\.greting \(from --config {config}\)"
    ):
        PluginRegistry.load(settings_factory(config_file=config))


def test_disabling_it_removes_its_routes(
    hello_installed: Path, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory("plugins.disabled=hello")
    with TestClient(create_app(settings)) as client:
        client.headers.update(bearer(client))
        assert client.get("/api/v1/hello/greet", params={"name": "Ada"}).status_code == 404
        assert client.get("/hello-ui/").status_code == 404
        listing = {p["name"]: p["state"] for p in client.get("/api/v1/plugins").json()}
        assert listing["hello"] == "disabled"
        assert "/api/v1/hello/greet" not in client.get("/api/v1/openapi.json").json()["paths"]


def test_its_cli_command_runs_and_reads_config(hello_site: Path, tmp_path: Path) -> None:
    config = tmp_path / "custom.toml"
    config.write_text('[plugins.hello]\ngreeting = "Servus"\n')
    env = isolated_environ(tmp_path, PYTHONPATH=str(hello_site))
    result = run_hostcore("hello", "Ada", "--config", str(config), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Servus, Ada!\n"
    helped = run_hostcore("--help", env=env, cwd=tmp_path)
    assert "hello" in helped.stdout


def test_plugins_list_shows_it_with_scopes(hello_site: Path, tmp_path: Path) -> None:
    env = isolated_environ(tmp_path, PYTHONPATH=str(hello_site))
    result = run_hostcore("plugins", "list", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    hello = next(p for p in json.loads(result.stdout) if p["name"] == "hello")
    assert hello["state"] == "ok" and hello["scopes"] == {"hello:read": "Ask for a greeting."}
    text = run_hostcore("plugins", "list", "--set", "plugins.disabled=hello", env=env, cwd=tmp_path)
    assert "hello" in text.stdout and "disabled" in text.stdout


def test_its_cli_command_reports_errors_in_one_line(hello_site: Path, tmp_path: Path) -> None:
    env = isolated_environ(tmp_path, PYTHONPATH=str(hello_site))
    too_long = run_hostcore(
        "hello", "Adalbert", "--set", "plugins.hello.max_name_length=5", env=env, cwd=tmp_path
    )
    assert too_long.returncode == 2
    assert too_long.stderr == "hostcore: name is longer than 5 characters\n"
    (tmp_path / "hostcore.toml").write_text('[plugins.hello]\ngreting = "typo"\n')
    typo = run_hostcore("hello", "Ada", env=env, cwd=tmp_path)
    assert typo.returncode == 2
    assert typo.stderr == (
        "hostcore: invalid configuration: unknown key plugins.hello.greting "
        f"(from {tmp_path / 'hostcore.toml'})\n"
    )

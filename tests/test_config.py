from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from hostcore import config as config_module
from hostcore.config import (
    CLI_LAYERS_ENV,
    REDACTED,
    Settings,
    cli_layers_from_environment,
    cli_layers_to_environment,
    effective_config,
    load_settings,
    validate_plugin_settings,
)
from hostcore.errors import ConfigError

NOWHERE = Path("/nonexistent/hostcore.toml")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def layers(tmp_path: Path) -> dict[str, Path]:
    """One file per file layer, each setting server.port and something of its own."""
    return {
        "system": write(
            tmp_path / "etc/hostcore.toml",
            '[server]\nport = 8001\nhost = "0.0.0.1"\nworkers = 2\ndocs = false\n'
            '[logging]\nbackup_count = 7\n[plugins]\ndisabled = ["a", "b"]\n'
            '[plugins.hello]\ngreeting = "system"\nextra = "kept"\n',
        ),
        "local": write(
            tmp_path / "cwd/hostcore.toml",
            '[server]\nport = 8002\nhost = "0.0.0.2"\nworkers = 3\n'
            '[plugins]\ndisabled = ["c"]\n[plugins.hello]\ngreeting = "local"\n',
        ),
        "config": write(tmp_path / "custom.toml", "[server]\nport = 8003\nhost = '0.0.0.3'\n"),
    }


def test_every_layer_in_precedence_order_with_its_source(layers: dict[str, Path]) -> None:
    settings = load_settings(
        config_file=layers["config"],
        overrides=["server.port=8005"],
        environ={"HOSTCORE_SERVER__PORT": "8004", "HOSTCORE_SERVER__HOST": "0.0.0.4"},
        system_config=layers["system"],
        local_config=layers["local"],
    )
    assert settings.server.port == 8005
    assert settings.source_of("server.port") == "--set server.port"
    assert settings.server.host == "0.0.0.4"
    assert settings.source_of("server.host") == "env HOSTCORE_SERVER__HOST"
    assert settings.server.workers == 3
    assert settings.source_of("server.workers") == str(layers["local"])
    assert settings.server.docs is False
    assert settings.source_of("server.docs") == str(layers["system"])
    assert settings.logging.backup_count == 7
    assert settings.server.max_body_bytes == 1024 * 1024
    assert settings.source_of("server.max_body_bytes") == "default"


def test_config_file_beats_local_and_system(layers: dict[str, Path]) -> None:
    settings = load_settings(
        config_file=layers["config"],
        environ={},
        system_config=layers["system"],
        local_config=layers["local"],
    )
    assert settings.server.port == 8003
    assert settings.source_of("server.port") == f"--config {layers['config']}"


def test_tables_merge_deeply_and_lists_are_replaced(layers: dict[str, Path]) -> None:
    settings = load_settings(
        environ={}, system_config=layers["system"], local_config=layers["local"]
    )
    assert settings.plugins.disabled == ["c"]
    assert settings.plugins.section("hello") == {"greeting": "local", "extra": "kept"}
    assert settings.source_of("plugins.hello.extra") == str(layers["system"])
    assert settings.source_of("plugins.hello.greeting") == str(layers["local"])


def test_environment_nests_with_double_underscore_and_is_typed() -> None:
    settings = load_settings(
        environ={
            "HOSTCORE_SERVER__PORT": "9100",
            "HOSTCORE_SERVER__DOCS": "false",
            "HOSTCORE_PLUGINS__DISABLED": '["x", "y"]',
            "HOSTCORE_PLUGINS__HELLO__GREETING": "env",
            "HOSTCORE_DATA_DIR": "/srv/data",
            "UNRELATED": "1",
        },
        system_config=NOWHERE,
        local_config=NOWHERE,
    )
    assert settings.server.port == 9100
    assert settings.server.docs is False
    assert settings.plugins.disabled == ["x", "y"]
    assert settings.plugins.section("hello") == {"greeting": "env"}
    assert settings.data_dir == Path("/srv/data")
    assert settings.source_of("data_dir") == "env HOSTCORE_DATA_DIR"


def test_set_is_typed_by_the_model() -> None:
    settings = load_settings(
        overrides=[
            "server.port=9200",
            "server.docs=no",
            "plugins.disabled=a,b",
            "runner.timeout_s=2.5",
        ],
        environ={},
        system_config=NOWHERE,
        local_config=NOWHERE,
    )
    assert settings.server.port == 9200
    assert settings.server.docs is False
    assert settings.plugins.disabled == ["a", "b"]
    assert settings.runner.timeout_s == 2.5


def test_set_with_a_wrong_type_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"server\.port \(from --set server\.port\)"):
        load_settings(
            overrides=["server.port=eighty"],
            environ={},
            system_config=NOWHERE,
            local_config=NOWHERE,
        )


@pytest.mark.parametrize("assignment", ["server.port", "=1", "server..port=1"])
def test_malformed_set_is_an_error(assignment: str) -> None:
    with pytest.raises(ConfigError, match="--set"):
        load_settings(
            overrides=[assignment], environ={}, system_config=NOWHERE, local_config=NOWHERE
        )


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "hostcore.toml", "[server]\nprot = 1\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={}, system_config=path, local_config=NOWHERE)
    assert f"unknown key server.prot (from {path})" in str(raised.value)


def test_unknown_table_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "custom.toml", "[servr]\nport = 1\n")
    with pytest.raises(ConfigError, match=rf"unknown key servr \(from --config {path}\)"):
        load_settings(config_file=path, environ={}, system_config=NOWHERE, local_config=NOWHERE)


def test_unknown_environment_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"unknown key colour \(from env HOSTCORE_COLOUR\)"):
        load_settings(
            environ={"HOSTCORE_COLOUR": "blue"}, system_config=NOWHERE, local_config=NOWHERE
        )


def test_plugins_table_value_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[plugins]\nenabeld = ['x']\n")
    with pytest.raises(ConfigError, match=r"unknown key plugins\.enabeld"):
        load_settings(config_file=path, environ={}, system_config=NOWHERE, local_config=NOWHERE)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "[server\n")
    with pytest.raises(ConfigError, match=f"{path}: invalid TOML"):
        load_settings(config_file=path, environ={}, system_config=NOWHERE, local_config=NOWHERE)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(
            config_file=tmp_path / "absent.toml",
            environ={},
            system_config=NOWHERE,
            local_config=NOWHERE,
        )


class GreeterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hi"


def test_plugin_settings_unknown_key_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[plugins.hello]\ngreting = 'typo'\n")
    settings = load_settings(
        config_file=path, environ={}, system_config=NOWHERE, local_config=NOWHERE
    )
    with pytest.raises(
        ConfigError, match=rf"unknown key plugins\.hello\.greting \(from --config {path}\)"
    ):
        validate_plugin_settings(settings, "hello", GreeterSettings)


def test_directories_default_per_user_and_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "_is_root", lambda: True)
    root = Settings()
    assert (root.data_dir, root.log_dir, root.run_dir) == (
        Path("/var/lib/hostcore"),
        Path("/var/log/hostcore"),
        Path("/run/hostcore"),
    )
    monkeypatch.setattr(config_module, "_is_root", lambda: False)
    user = Settings()
    assert "hostcore" in str(user.data_dir)
    assert not str(user.data_dir).startswith("/var/lib")


def test_effective_config_reports_sources_and_redacts_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        "[plugins.hello]\napi_token = 's3cr3t'\ntoken_file = '/etc/token'\n",
    )
    settings = load_settings(
        config_file=path,
        overrides=["server.port=9300"],
        environ={},
        system_config=NOWHERE,
        local_config=NOWHERE,
    )
    rows = {key: (value, source) for key, value, source in effective_config(settings)}
    assert rows["server.port"] == (9300, "--set server.port")
    assert rows["server.host"] == ("127.0.0.1", "default")
    assert rows["plugins.hello.api_token"] == (REDACTED, f"--config {path}")
    assert rows["plugins.hello.token_file"] == ("/etc/token", f"--config {path}")
    assert "s3cr3t" not in repr(rows)


def test_passwords_in_urls_are_redacted() -> None:
    settings = load_settings(
        overrides=["database.url=postgresql+asyncpg://hc:pa55@db.local/hostcore"],
        environ={},
        system_config=NOWHERE,
        local_config=NOWHERE,
    )
    rows = {key: value for key, value, _ in effective_config(settings)}
    assert rows["database.url"] == f"postgresql+asyncpg://hc:{REDACTED}@db.local/hostcore"


def test_cli_layers_round_trip_through_the_environment(tmp_path: Path) -> None:
    encoded = cli_layers_to_environment(tmp_path / "x.toml", ["server.port=1"])
    assert cli_layers_from_environment({CLI_LAYERS_ENV: encoded}) == (
        tmp_path / "x.toml",
        ["server.port=1"],
    )
    assert cli_layers_from_environment({}) == (None, [])
    # The carrier variable is not itself a setting.
    load_settings(environ={CLI_LAYERS_ENV: encoded}, system_config=NOWHERE, local_config=NOWHERE)


def isolated(*overrides: str, config: Path | None = None, **environ: str) -> Settings:
    return load_settings(
        config_file=config,
        overrides=overrides,
        environ=environ,
        system_config=NOWHERE,
        local_config=NOWHERE,
    )


def test_the_socket_mode_is_octal_in_toml_and_in_strings(tmp_path: Path) -> None:
    from_toml = isolated(config=write(tmp_path / "mode.toml", "[server]\nuds_mode = 0o640\n"))
    assert from_toml.server.uds_mode == 0o640
    assert isolated("server.uds_mode=0600").server.uds_mode == 0o600
    assert isolated(HOSTCORE_SERVER__UDS_MODE="0o660").server.uds_mode == 0o660
    shown = {key: value for key, value, _ in effective_config(from_toml)}
    assert shown["server.uds_mode"] == "0o640"
    with pytest.raises(ConfigError, match=r"server\.uds_mode.*not a file mode"):
        isolated(config=write(tmp_path / "decimal.toml", "[server]\nuds_mode = 660\n"))


def test_trusting_every_peer_of_a_socket_anyone_may_connect_to_is_refused() -> None:
    with pytest.raises(ConfigError, match="lets every local user connect"):
        isolated("server.uds_mode=0666")
    assert isolated("server.uds_mode=0666", 'server.trusted_proxies=["user:www-data"]')


def test_a_trusted_proxy_is_unix_a_user_a_group_or_a_network() -> None:
    good = '["unix", "user:www-data", "uid:33", "group:www-data", "gid:33", "10.0.0.0/8", "::1"]'
    assert len(isolated(f"server.trusted_proxies={good}").server.trusted_proxies) == 7
    for bad in ("unix:", "user:", "uid:www-data", "www-data", "10.0.0.0/33"):
        with pytest.raises(ConfigError, match=r"server\.trusted_proxies"):
            isolated(f'server.trusted_proxies=["{bad}"]')

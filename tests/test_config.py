from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr

from hostcore import config as config_module
from hostcore.config import (
    CLI_LAYERS_ENV,
    Settings,
    cli_layers_from_environment,
    cli_layers_to_environment,
    effective_config,
    load_settings,
    validate_plugin_settings,
)
from hostcore.errors import ConfigError
from hostcore.redaction import REDACTED

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


class TokenPluginSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_token: SecretStr | None = None
    token_file: Path | None = None
    tokens_per_minute: int = 10
    webhook: str = "https://hooks.example/in"


def test_effective_config_reports_sources_and_redacts_what_models_declare_secret(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "c.toml",
        "[plugins.tok]\napi_token = 's3cr3t'\ntoken_file = '/etc/token'\n"
        "webhook = 'https://hooks.example/in?token=t0k3n'\n",
    )
    settings = load_settings(
        config_file=path,
        overrides=["server.port=9300", "auth.token_ttl_s=600"],
        environ={},
        system_config=NOWHERE,
        local_config=NOWHERE,
    )
    plugin = validate_plugin_settings(settings, "tok", TokenPluginSettings)
    rows = {
        key: (value, source) for key, value, source in effective_config(settings, {"tok": plugin})
    }
    assert rows["server.port"] == (9300, "--set server.port")
    assert rows["server.host"] == ("127.0.0.1", "default")
    assert rows["auth.token_ttl_s"] == (600, "--set auth.token_ttl_s")
    assert rows["plugins.tok.api_token"] == (REDACTED, f"--config {path}")
    assert rows["plugins.tok.token_file"] == ("/etc/token", f"--config {path}")
    assert rows["plugins.tok.tokens_per_minute"] == (10, "default")
    assert rows["plugins.tok.webhook"][0] == f"https://hooks.example/in?token={REDACTED}"
    assert "s3cr3t" not in repr(rows)
    assert "t0k3n" not in repr(rows)


def test_an_unset_secret_is_shown_as_unset(tmp_path: Path) -> None:
    settings = load_settings(environ={}, system_config=NOWHERE, local_config=NOWHERE)
    plugin = validate_plugin_settings(settings, "tok", TokenPluginSettings)
    rows = {key: value for key, value, _ in effective_config(settings, {"tok": plugin})}
    assert rows["plugins.tok.api_token"] is None


def test_a_plugin_table_no_model_checked_is_shown_redacted(tmp_path: Path) -> None:
    """A disabled or missing plugin's table: which of its keys are secret is unknown."""
    path = write(tmp_path / "c.toml", "[plugins.widget]\ncolour = 'blue'\nkey = 'hunter2'\n")
    settings = load_settings(
        config_file=path, environ={}, system_config=NOWHERE, local_config=NOWHERE
    )
    rows = {key: (value, source) for key, value, source in effective_config(settings)}
    assert rows["plugins.widget.colour"] == (REDACTED, f"--config {path}")
    assert rows["plugins.widget.key"] == (REDACTED, f"--config {path}")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://hc:pa55@db.local/hostcore",
            f"postgresql+asyncpg://hc:{REDACTED}@db.local/hostcore",
        ),
        (
            "postgresql+asyncpg://hc@db.local/hostcore?password=pa55&ssl=require",
            f"postgresql+asyncpg://hc@db.local/hostcore?password={REDACTED}&ssl=require",
        ),
        (
            "postgresql+asyncpg://hc@db.local/hostcore?ssl=require&sslpassword=pa55",
            f"postgresql+asyncpg://hc@db.local/hostcore?ssl=require&sslpassword={REDACTED}",
        ),
        (
            "postgresql+asyncpg://hc:pa@55/x@db.local/hostcore",
            f"postgresql+asyncpg://hc:{REDACTED}@db.local/hostcore",
        ),
    ],
)
def test_every_credential_in_the_database_url_is_redacted(url: str, shown: str) -> None:
    settings = load_settings(
        overrides=[f"database.url={url}"], environ={}, system_config=NOWHERE, local_config=NOWHERE
    )
    rows = {key: value for key, value, _ in effective_config(settings)}
    assert rows["database.url"] == shown
    assert "pa55" not in shown


def test_the_password_of_a_rate_limit_storage_url_is_redacted() -> None:
    settings = load_settings(
        overrides=["ratelimit.storage=redis://:pa55@cache.local:6379/0"],
        environ={},
        system_config=NOWHERE,
        local_config=NOWHERE,
    )
    rows = {key: value for key, value, _ in effective_config(settings)}
    assert rows["ratelimit.storage"] == f"redis://:{REDACTED}@cache.local:6379/0"


def test_cli_layers_round_trip_through_the_environment(tmp_path: Path) -> None:
    encoded = cli_layers_to_environment(tmp_path / "x.toml", ["server.port=1"])
    assert cli_layers_from_environment({CLI_LAYERS_ENV: encoded}) == (
        tmp_path / "x.toml",
        ["server.port=1"],
    )
    assert cli_layers_from_environment({}) == (None, [])
    # The carrier variable is not itself a setting.
    load_settings(environ={CLI_LAYERS_ENV: encoded}, system_config=NOWHERE, local_config=NOWHERE)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("ratelimit.default=lots", r"ratelimit\.default \(from --set ratelimit\.default\): 'lots'"),
        ("ratelimit.default=1/minute;2/hour", r"'1/minute;2/hour' is not one rate limit"),
        (
            'ratelimit.routes={"GET /x": "often"}',
            r"ratelimit\.routes\.GET /x \(from --set ratelimit\.routes\): 'often' is not one",
        ),
        ("ratelimit.storage=nosuch://x", r"ratelimit\.storage \(from --set ratelimit\.storage\)"),
        ("ratelimit.storage=redis", r"unknown storage scheme in 'redis'"),
        ("ratelimit.storage=async+redis://localhost", r"asynchronous"),
    ],
)
def test_rate_limit_settings_are_checked_where_they_are_set(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(
            overrides=[assignment], environ={}, system_config=NOWHERE, local_config=NOWHERE
        )


def test_a_bad_rate_limit_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"\(from env HOSTCORE_RATELIMIT__DEFAULT\)"):
        load_settings(
            environ={"HOSTCORE_RATELIMIT__DEFAULT": "soon"},
            system_config=NOWHERE,
            local_config=NOWHERE,
        )


@pytest.mark.parametrize(
    "storage",
    ["shared", "memory", "memory://", "redis://localhost:6379", "hostcore-shm:///run/x.shm"],
)
def test_usable_rate_limit_storages_are_accepted(storage: str) -> None:
    settings = load_settings(
        overrides=[f"ratelimit.storage={storage}", "ratelimit.default=5 per second"],
        environ={},
        system_config=NOWHERE,
        local_config=NOWHERE,
    )
    assert settings.ratelimit.storage == storage


LOGIN_ROUTE = "POST /api/v1/auth/token"


def test_login_is_rate_limited_by_default() -> None:
    assert Settings().ratelimit.routes == {LOGIN_ROUTE: "10/minute"}


def test_configured_route_limits_merge_over_the_default_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[ratelimit.routes]\n"GET /api/v1/x" = "5/minute"\n')
    settings = load_settings(
        config_file=path, environ={}, system_config=NOWHERE, local_config=NOWHERE
    )
    assert settings.ratelimit.routes == {LOGIN_ROUTE: "10/minute", "GET /api/v1/x": "5/minute"}
    replaced = load_settings(
        overrides=[f'ratelimit.routes={{"{LOGIN_ROUTE}": "3/minute"}}'],
        environ={},
        system_config=NOWHERE,
        local_config=NOWHERE,
    )
    assert replaced.ratelimit.routes == {LOGIN_ROUTE: "3/minute"}


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (["auth.clients.tool.secret_file=/x", "auth.clients.tool.shared_secret=true"], "exclude"),
        (["auth.clients.tool.shared_secret=true", "auth.clients.tool.secret_group=g"], "group"),
        (["auth.clients.tool.secret_file=/x", "auth.clients.tool.secret_group=g"], "group"),
    ],
)
def test_a_client_has_one_kind_of_secret(assignments: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(
            overrides=assignments, environ={}, system_config=NOWHERE, local_config=NOWHERE
        )


@pytest.mark.parametrize("name", ["../etc", "Panel", "a.b", "-x", "x" * 65])
def test_a_client_name_must_be_usable_as_a_file_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "c.toml", f'[auth.clients."{name}"]\nscopes = []\n')
    with pytest.raises(ConfigError, match=r"auth\.clients"):
        load_settings(config_file=path, environ={}, system_config=NOWHERE, local_config=NOWHERE)


def test_each_client_signs_with_the_file_its_settings_name(tmp_path: Path) -> None:
    settings = load_settings(
        overrides=[
            f"data_dir={tmp_path}",
            "auth.clients.own.scopes=[]",
            "auth.clients.kept.secret_file=/etc/kept.secret",
            "auth.clients.sharing.shared_secret=true",
        ],
        environ={},
        system_config=NOWHERE,
        local_config=NOWHERE,
    )
    assert settings.hmac_secret_path("own") == tmp_path / "secrets" / "own.secret"
    assert settings.hmac_secret_path("kept") == Path("/etc/kept.secret")
    assert settings.hmac_secret_path("sharing") == tmp_path / "secrets" / "hmac.secret"
    assert settings.hmac_secret_path() == tmp_path / "secrets" / "hmac.secret"


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
    for beyond in ("-10", "4770", "0o1000"):  # strings too: no sign, no setuid/sticky bits
        with pytest.raises(ConfigError, match=r"server\.uds_mode.*not a file mode"):
            isolated(f"server.uds_mode={beyond}")


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


@pytest.mark.parametrize(
    "text",
    [
        "10/minute",
        "10 per second",
        "10/2 minutes",
        "10/Minute",
        " 10 / minute ",
        "10 per  2 hours",
        "0/second",
        "10 PER MINUTE",
        "600/minute\n",
        "5/days",
        "1/year",
        "10/mins",
        "x/minute",
        "10/minute;5/hour",
        "10/minute,5/hour",
        "10/minute;",
        "10",
        "10/2",
        "10/secondss",
        "10/s",
        "-1/minute",
        "10/minute extra",
        "",
        "1 per fortnight",
    ],
)
def test_a_rate_limit_is_checked_as_limits_reads_it(text: str) -> None:
    """config checks limits' notation without importing limits: the same answers."""
    from limits import parse_many

    from hostcore.config import is_one_rate_limit

    try:
        one = len(parse_many(text)) == 1
    except ValueError:
        one = False
    assert is_one_rate_limit(text) == one


def test_reading_the_settings_imports_neither_limits_nor_the_web_framework() -> None:
    """Every command line reads them; on a Pi each import costs a multiple of here."""
    script = (
        "import sys\n"
        "from hostcore.config import load_settings\n"
        "from pathlib import Path\n"
        "nowhere = Path('/nonexistent')\n"
        "load_settings(environ={}, system_config=nowhere, local_config=nowhere)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'limits', 'fastapi', "
        "'starlette', 'sqlalchemy'}))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]", found.stderr


@pytest.mark.parametrize(
    ("environ", "data", "log"),
    [
        ({}, "~/.local/share/hostcore", "~/.local/state/hostcore/log"),
        (
            {"XDG_DATA_HOME": "/srv/data", "XDG_STATE_HOME": "/srv/state"},
            "/srv/data/hostcore",
            "/srv/state/hostcore/log",
        ),
        # The XDG spec: a relative or empty value is ignored.
        (
            {"XDG_DATA_HOME": "relative", "XDG_STATE_HOME": " "},
            "~/.local/share/hostcore",
            "~/.local/state/hostcore/log",
        ),
    ],
)
def test_a_user_s_default_directories_follow_xdg(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], data: str, log: str
) -> None:
    monkeypatch.setattr(config_module, "_is_root", lambda: False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    assert config_module._default_data_dir() == Path(data).expanduser()
    assert config_module._default_log_dir() == Path(log).expanduser()


def test_a_local_file_this_user_may_not_reach_is_left_out_not_fatal(
    layers: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``sudo -u hostcore hostcore …`` from a directory that user may not search: the
    ./hostcore.toml check raises EACCES; the system configuration still counts."""
    unreachable = layers["local"]
    is_file = Path.is_file

    def refusing(path: Path) -> bool:
        if path == unreachable:
            raise PermissionError(13, "Permission denied", str(path))
        return is_file(path)

    monkeypatch.setattr(Path, "is_file", refusing)
    settings = load_settings(environ={}, system_config=layers["system"], local_config=unreachable)
    assert settings.server.docs is False  # the system file's
    assert settings.source_of("server.workers") != str(unreachable)
    assert "permission denied" in caplog.text

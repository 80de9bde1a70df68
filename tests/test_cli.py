from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hostcore import __version__
from tests.helpers import assert_one_line_error, isolated_environ, run_hostcore


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_environ(tmp_path)


def test_version(env: dict[str, str], tmp_path: Path) -> None:
    result = run_hostcore("version", env=env, cwd=tmp_path)
    assert result.stdout == f"hostcore {__version__}\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["serve", "plugins", "config", "version"]),
        (("serve",), ["--workers", "--uds", "--reload", "--debug", "--config", "--set", "--port"]),
        (("plugins", "list"), ["--json", "--config"]),
        (("config", "show"), ["--json", "--set"]),
    ],
)
def test_help_is_useful(
    env: dict[str, str], tmp_path: Path, args: tuple[str, ...], expected: list[str]
) -> None:
    result = run_hostcore(*args, "--help", env=env, cwd=tmp_path)
    assert result.returncode == 0
    for word in expected:
        assert word in result.stdout


def test_config_show_names_the_source_of_every_value(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "hostcore.toml").write_text("[server]\nworkers = 3\n")
    custom = tmp_path / "custom.toml"
    custom.write_text("[server]\nport = 9001\n[runner]\ntimeout_s = 3\n")
    env["HOSTCORE_RUNNER__MAX_CONCURRENCY"] = "2"
    result = run_hostcore(
        "config",
        "show",
        "--json",
        "--config",
        str(custom),
        "--set",
        "server.host=0.0.0.0",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["key"]: (row["value"], row["source"]) for row in json.loads(result.stdout)}
    assert rows["server.workers"] == (3, str(tmp_path / "hostcore.toml"))
    assert rows["server.port"] == (9001, f"--config {custom}")
    assert rows["runner.max_concurrency"] == (2, "env HOSTCORE_RUNNER__MAX_CONCURRENCY")
    assert rows["server.host"] == ("0.0.0.0", "--set server.host")
    assert rows["server.docs"] == (True, "default")
    assert rows["data_dir"] == (env["HOSTCORE_DATA_DIR"], "env HOSTCORE_DATA_DIR")
    text = run_hostcore("config", "show", env=env, cwd=tmp_path).stdout
    assert f"server.workers = 3    # {tmp_path / 'hostcore.toml'}" in text


def test_bad_config_fails_with_a_message_not_a_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "hostcore.toml").write_text("[server]\nprot = 1\n")
    for args in (("config", "show"), ("serve",), ("plugins", "list")):
        result = run_hostcore(*args, env=env, cwd=tmp_path)
        assert result.returncode == 2
        assert f"unknown key server.prot (from {tmp_path / 'hostcore.toml'})" in result.stderr
        assert "Traceback" not in result.stderr


def test_reload_refuses_several_workers(env: dict[str, str], tmp_path: Path) -> None:
    result = run_hostcore("serve", "--workers", "2", "--reload", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "--reload works with one worker only" in result.stderr


def test_python_dash_m_and_the_console_script_agree(env: dict[str, str], tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "hostcore"
    assert script.is_file(), "the hostcore console script is not installed"
    via_script = subprocess.run(
        [str(script), "version"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert via_script.stdout == run_hostcore("version", env=env, cwd=tmp_path).stdout


def test_serve_reports_a_conflict_cleanly(tmp_path: Path, env: dict[str, str]) -> None:
    plugin = tmp_path / "site" / "clash_plugin.py"
    plugin.parent.mkdir()
    plugin.write_text(
        "from pathlib import Path\n"
        "from hostcore.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def hostcore_static_mounts():\n"
        "    return {'/docs': Path(__file__).parent}\n"
    )
    dist = tmp_path / "site" / "clash_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clash-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hostcore.plugins]\nclash = clash_plugin\n")
    env["PYTHONPATH"] = str(tmp_path / "site")
    result = run_hostcore("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "mount /docs of plugin clash (clash-plugin) covers route /docs of hostcore core" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("serve",), "Address to bind [server.host, default 127.0.0.1]."),
        (("serve",), "TCP port [server.port, default 8000]."),
        (("user", "add"), "A role from [auth.roles]."),
        (("token", "issue"), "A client from [auth.clients]."),
    ],
)
def test_help_keeps_text_in_square_brackets(
    env: dict[str, str], tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    result = run_hostcore(*args, "--help", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert expected in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("assignment", "key"),
    [
        ("ratelimit.default=lots", "ratelimit.default"),
        ("ratelimit.default=1/minute;2/hour", "ratelimit.default"),
        ('ratelimit.routes={"GET /x": "lots"}', "ratelimit.routes.GET /x"),
        ("ratelimit.storage=nosuch://", "ratelimit.storage"),
        ("ratelimit.storage=async+memory://", "ratelimit.storage"),
    ],
)
@pytest.mark.parametrize("command", [("config", "show"), ("plugins", "list"), ("serve",)])
def test_a_bad_rate_limit_setting_is_one_line_naming_the_flag(
    env: dict[str, str], tmp_path: Path, command: tuple[str, ...], assignment: str, key: str
) -> None:
    result = run_hostcore(*command, "--set", assignment, env=env, cwd=tmp_path)
    flag = assignment.partition("=")[0]
    assert_one_line_error(result, 2, f"{key} (from --set {flag})")


def test_a_bad_rate_limit_in_a_file_names_the_file(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "hostcore.toml").write_text('[ratelimit]\nstorage = "nosuch://"\n')
    result = run_hostcore("config", "show", env=env, cwd=tmp_path)
    assert_one_line_error(result, 2, f"ratelimit.storage (from {tmp_path / 'hostcore.toml'})")


def test_a_missing_config_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    result = run_hostcore("config", "show", "--config", "absent.toml", env=env, cwd=tmp_path)
    assert_one_line_error(result, 2, "--config absent.toml: no such file")


def test_several_config_errors_are_still_one_line(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "hostcore.toml").write_text("[server]\nprot = 1\nhots = 'x'\n")
    result = run_hostcore("config", "show", env=env, cwd=tmp_path)
    assert_one_line_error(result, 2, "unknown key server.prot", "unknown key server.hots")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("serve", "--port", "eighty"), "--port"),
        (("serve", "--no-such-option"), "--no-such-option"),
        (("no-such-command",), "no-such-command"),
    ],
)
def test_a_usage_error_is_one_line(
    env: dict[str, str], tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    assert_one_line_error(run_hostcore(*args, env=env, cwd=tmp_path), 2, fragment)


def test_no_arguments_prints_the_help(env: dict[str, str], tmp_path: Path) -> None:
    result = run_hostcore(env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "Usage: hostcore" in result.stdout
    assert "serve" in result.stdout


def install_spy_plugin(tmp_path: Path, env: dict[str, str]) -> Path:
    """Install plugin ``spy``, which adds ``hostcore spy``; each import of it appends the
    command line to the returned file."""
    site = tmp_path / "site"
    imports = tmp_path / "spy-imports.log"
    (site / "spy_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "spy_plugin.py").write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from hostcore.hookspecs import hookimpl\n"
        f"with Path({str(imports)!r}).open('a') as log:\n"
        "    log.write(' '.join(sys.argv[1:]) + '\\n')\n"
        "@hookimpl\n"
        "def hostcore_cli(cli):\n"
        "    cli.command('spy')(lambda: print('spied'))\n"
    )
    (site / "spy_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: spy-plugin\nVersion: 1.0\n"
    )
    (site / "spy_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[hostcore.plugins]\nspy = spy_plugin\n"
    )
    env["PYTHONPATH"] = str(site)
    return imports


def test_an_enabled_plugin_adds_its_commands(env: dict[str, str], tmp_path: Path) -> None:
    imports = install_spy_plugin(tmp_path, env)
    result = run_hostcore("spy", env=env, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "spied\n"), result.stderr
    assert imports.read_text() == "spy\n"


@pytest.mark.parametrize("command", [("version",), ("--help",), ("plugins", "list")])
@pytest.mark.parametrize(
    ("layer", "disabling"),
    [
        ("./hostcore.toml", '[plugins]\ndisabled = ["spy"]\n'),
        ("./hostcore.toml", '[plugins]\nenabled = ["auth", "system"]\n'),
        ("HOSTCORE_PLUGINS__DISABLED", "spy"),
    ],
)
def test_a_plugin_disabled_by_configuration_is_never_imported(
    env: dict[str, str], tmp_path: Path, layer: str, disabling: str, command: tuple[str, ...]
) -> None:
    imports = install_spy_plugin(tmp_path, env)
    if layer == "./hostcore.toml":
        (tmp_path / "hostcore.toml").write_text(disabling)
    else:
        env[layer] = disabling
    result = run_hostcore(*command, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not imports.exists(), imports.read_text()


@pytest.mark.parametrize(
    "flags",
    [
        ("--config", "custom.toml"),
        ("-ccustom.toml",),
        ("--set", "plugins.disabled=spy"),
        ("--set=plugins.disabled=spy",),
        ("-s", "plugins.enabled=auth,system"),
        ("-splugins.disabled=spy",),
    ],
)
def test_a_plugin_disabled_on_the_command_line_is_never_imported(
    env: dict[str, str], tmp_path: Path, flags: tuple[str, ...]
) -> None:
    imports = install_spy_plugin(tmp_path, env)
    (tmp_path / "custom.toml").write_text('[plugins]\ndisabled = ["spy"]\n')
    listing = run_hostcore("plugins", "list", "--json", *flags, env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    states = {row["name"]: row["state"] for row in json.loads(listing.stdout)}
    assert states["spy"] == "disabled"
    assert run_hostcore("config", "show", *flags, env=env, cwd=tmp_path).returncode == 0
    refused = run_hostcore("spy", *flags, env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "No such command 'spy'" in refused.stderr
    assert not imports.exists(), imports.read_text()


def test_with_a_broken_configuration_help_works_and_says_why_plugin_commands_are_missing(
    env: dict[str, str], tmp_path: Path
) -> None:
    imports = install_spy_plugin(tmp_path, env)
    (tmp_path / "hostcore.toml").write_text("[server]\nprot = 1\n")
    problem = f"unknown key server.prot (from {tmp_path / 'hostcore.toml'})"
    helped = run_hostcore("--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert f"Plugin commands are not loaded: invalid configuration: {problem}" in helped.stdout
    assert_one_line_error(run_hostcore("config", "show", env=env, cwd=tmp_path), 2, problem)
    unknown = run_hostcore("spy", env=env, cwd=tmp_path)
    assert_one_line_error(unknown, 2, "No such command 'spy'", "plugin commands are not loaded")
    assert not imports.exists(), "a plugin is not imported when its state is unknown"


def test_config_show_hides_credentials_but_not_settings_named_like_secrets(
    env: dict[str, str], tmp_path: Path
) -> None:
    local = tmp_path / "hostcore.toml"
    local.write_text(
        "[database]\n"
        'url = "postgresql+asyncpg://hc@db.local/hostcore?password=hunter2"\n'
        "[ratelimit]\n"
        'storage = "redis://:hunter2@cache.local:6379/0"\n'
        "[auth]\n"
        "token_ttl_s = 600\n"
    )
    text = run_hostcore("config", "show", env=env, cwd=tmp_path)
    listing = run_hostcore("config", "show", "--json", env=env, cwd=tmp_path)
    for result in (text, listing):
        assert result.returncode == 0, result.stderr
        assert "hunter2" not in result.stdout
    lines = text.stdout.splitlines()
    assert f"auth.token_ttl_s = 600    # {local}" in lines
    assert (
        f'database.url = "postgresql+asyncpg://hc@db.local/hostcore?password=********"    # {local}'
    ) in lines
    rows = {row["key"]: row["value"] for row in json.loads(listing.stdout)}
    assert rows["auth.token_ttl_s"] == 600
    assert rows["database.url"] == "postgresql+asyncpg://hc@db.local/hostcore?password=********"
    assert rows["ratelimit.storage"] == "redis://:********@cache.local:6379/0"


# --- start-up: what a command line imports ------------------------------------------------

HEAVY = ("fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn", "jwt", "argon2", "httpx2")
_IMPORTS_OF = """
import runpy, sys
sys.argv = ["hostcore", *sys.argv[1:]]
try:
    runpy.run_module("hostcore", run_name="__main__")
except SystemExit:
    pass
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(%r))
print("LOADED", loaded, "SERVER", sorted(
    name for name in sys.modules
    if name.startswith("hostcore.builtin.") and name.endswith((".router", ".service"))
))
"""


def imports_of(tmp_path: Path, *args: str) -> tuple[str, str]:
    """The help or output of ``hostcore *args``, and which heavy libraries and plugins'
    server modules it imported."""
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTS_OF % (HEAVY,), *args],
        env=isolated_environ(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    output, _, loaded = result.stdout.rpartition("LOADED ")
    return output, loaded.strip()


def test_the_help_lists_plugins_commands_without_importing_server_code(tmp_path: Path) -> None:
    output, loaded = imports_of(tmp_path, "--help")
    for command in ("serve", "version", "user", "token", "activity", "call"):
        assert f"\n  {command} " in output, output
    assert loaded == "[] SERVER []"


def test_version_and_hostcores_own_commands_load_no_plugin(tmp_path: Path) -> None:
    output, loaded = imports_of(tmp_path, "version")
    assert output.strip() == f"hostcore {__version__}"
    assert loaded == "[] SERVER []"
    _, loaded = imports_of(tmp_path, "config", "show")
    assert loaded == "[] SERVER []"


def test_token_issue_imports_the_store_but_no_web_framework(tmp_path: Path) -> None:
    _, loaded = imports_of(tmp_path, "token", "issue", "--client", "nobody")
    assert "fastapi" not in loaded and "starlette" not in loaded and "uvicorn" not in loaded


def test_a_plugin_claiming_a_core_command_stops_every_command_that_loads_plugins(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """hostcore's own commands run without loading plugins, so they still work."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "thief_plugin.py").write_text(
        "from hostcore.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def hostcore_cli(cli):\n"
        "    @cli.command('version')\n"
        "    def version() -> None:\n"
        "        print('stolen')\n"
    )
    dist = site / "thief_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thief-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hostcore.plugins]\nthief = thief_plugin\n")
    env["PYTHONPATH"] = str(site)
    for args in (("--help",), ("token", "list")):
        assert_one_line_error(
            run_hostcore(*args, env=env, cwd=tmp_path),
            2,
            "command 'version' is claimed by both hostcore and plugin thief",
        )
    still = run_hostcore("version", env=env, cwd=tmp_path)
    assert still.returncode == 0 and still.stdout.strip() == f"hostcore {__version__}"


def test_call_imports_neither_the_server_nor_the_store(tmp_path: Path) -> None:
    _, loaded = imports_of(tmp_path, "call", "GET", "/api/v1/health")
    assert loaded.endswith("SERVER []"), loaded
    assert not any(f"'{heavy}'" in loaded for heavy in HEAVY if heavy != "httpx2"), loaded

"""``hostcore user|key|token|activity|call``: what the commands do, and errors as one line
and an exit status."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from hostcore.security import hmac as signing
from tests.helpers import (
    WHOAMI,
    Serve,
    assert_error,
    assert_one_line_error,
    authorization,
    bearer,
    free_port,
    hostcore_command,
    isolated_environ,
    kid_of,
    run_hostcore,
    runtime_of,
)


def hostcore(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        hostcore_command(*args),
        env=isolated_environ(tmp_path),
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_user_add_and_passwd_refuse_a_weak_password(tmp_path: Path) -> None:
    """The policy's own tests cover each rule; here: both commands go through it."""
    weak = "Password123"
    added = hostcore(tmp_path, "user", "add", "carol", "--password-stdin", stdin=weak + "\n")
    assert added.returncode == 2, added.stdout
    assert "one of the most common passwords" in added.stderr
    created = hostcore(
        tmp_path, "user", "add", "carol", "--password-stdin", stdin="a-good-long-phrase\n"
    )
    assert created.returncode == 0, created.stderr
    changed = hostcore(tmp_path, "user", "passwd", "carol", "--password-stdin", stdin=weak)
    assert changed.returncode == 2, changed.stdout
    assert "one of the most common passwords" in changed.stderr


def test_the_minimum_length_is_configurable(tmp_path: Path) -> None:
    phrase = "a-phrase-of-18-chr"
    longer = hostcore(
        tmp_path,
        "user",
        "add",
        "dave",
        "--password-stdin",
        "--set",
        "auth.password_min_length=20",
        stdin=phrase,
    )
    assert "password must be 20 to 1024 characters" in longer.stderr
    default = hostcore(tmp_path, "user", "add", "dave", "--password-stdin", stdin=phrase)
    assert default.returncode == 0, default.stderr


def test_call_names_the_secret_file_a_client_lacks(tmp_path: Path) -> None:
    called = hostcore(tmp_path, "call", "GET", "/api/v1/auth/whoami", "--client", "ghost")
    assert called.returncode == 2
    assert called.stderr.startswith("hostcore: cannot read HMAC secret ")
    assert "secrets/ghost.secret" in called.stderr
    assert "Traceback" not in called.stderr


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_environ(tmp_path)


@pytest.mark.parametrize(
    ("option", "fragments"),
    [
        (("--ttl", "abc"), ("--ttl", "integer")),
        (("--ttl", "-5"), ("--ttl", "60")),
        (("--scope", "bad scope"), ("--scope", "'bad scope'")),
    ],
)
def test_token_issue_refuses_a_bad_option_in_one_line(
    env: dict[str, str], tmp_path: Path, option: tuple[str, str], fragments: tuple[str, ...]
) -> None:
    result = run_hostcore("token", "issue", "--client", "tester", *option, env=env, cwd=tmp_path)
    assert_one_line_error(result, 2, *fragments)
    assert not (tmp_path / "data").exists(), "the store is not touched for a usage error"


def test_call_without_a_server_names_the_address_it_tried(
    env: dict[str, str], tmp_path: Path
) -> None:
    signing.create_secret(tmp_path / "data" / "secrets" / "tester.secret")
    port = free_port()
    result = run_hostcore(
        "call",
        "GET",
        "/api/v1/health",
        "--client",
        "tester",
        "--set",
        f"server.port={port}",
        env=env,
        cwd=tmp_path,
    )
    assert_one_line_error(result, 1, f"http://127.0.0.1:{port}")


def test_call_without_the_hmac_secret_says_which_file(env: dict[str, str], tmp_path: Path) -> None:
    result = run_hostcore("call", "GET", "/api/v1/health", env=env, cwd=tmp_path)
    assert_one_line_error(result, 2, str(tmp_path / "data" / "secrets" / "cli.secret"))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--client", "Not A Client"), "'Not A Client'"),
        (("--data", "{nope"), "--data"),
    ],
)
def test_call_refuses_bad_arguments_in_one_line(
    env: dict[str, str], tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    signing.create_secret(tmp_path / "data" / "secrets" / "cli.secret")
    result = run_hostcore("call", "POST", "/api/v1/x", *args, env=env, cwd=tmp_path)
    assert_one_line_error(result, 2, fragment)


def test_a_malformed_database_url_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    result = run_hostcore("token", "list", "--set", "database.url=nosuch", env=env, cwd=tmp_path)
    assert_one_line_error(result, 2, "database.url")


def test_an_unreachable_store_is_a_runtime_error_naming_it_without_its_password(
    env: dict[str, str], tmp_path: Path
) -> None:
    url = f"postgresql+asyncpg://hc:hunter2@127.0.0.1:{free_port()}/hostcore"
    result = run_hostcore("token", "list", "--set", f"database.url={url}", env=env, cwd=tmp_path)
    assert_one_line_error(result, 1, "postgresql+asyncpg://hc:")
    assert "hunter2" not in result.stderr


def test_store_commands_leave_no_rate_limit_file_and_no_activity(
    env: dict[str, str], tmp_path: Path
) -> None:
    for args in (("token", "issue", "--client", "tester"), ("token", "list"), ("key", "list")):
        result = run_hostcore(*args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert not (tmp_path / "run" / "ratelimit.shm").exists()
    with sqlite3.connect(tmp_path / "data" / "hostcore.db") as connection:
        assert connection.execute("SELECT count(*) FROM activity").fetchone() == (0,)


# --- token issue ----------------------------------------------------------------------


def test_token_issue_cli_prints_a_token_the_api_accepts(serve: Serve, tmp_path: Path) -> None:
    client = serve()
    result = run_hostcore(
        "token",
        "issue",
        "--client",
        "tester",
        "--scope",
        "x:y",
        env=isolated_environ(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    issued = json.loads(result.stdout)
    assert issued["token_type"] == "bearer"
    assert issued["subject"] == "client:tester"
    assert issued["scopes"] == ["x:y"]
    token = issued["access_token"]
    assert kid_of(token) == runtime_of(client).signing_key.kid  # type: ignore[union-attr]
    whoami = client.get(WHOAMI, headers=authorization(token))
    assert whoami.json()["scopes"] == ["x:y"]
    assert_error(
        client.get("/api/v1/probe/read", headers=authorization(token)),
        403,
        "Forbidden",
        "probe:read",
    )
    listed = client.get(
        "/api/v1/auth/tokens", params={"subject": "client:tester"}, headers=bearer(client)
    ).json()
    assert issued["jti"] in {row["jti"] for row in listed}
    assert token not in json.dumps(listed), "the store keeps the jti, never the token"

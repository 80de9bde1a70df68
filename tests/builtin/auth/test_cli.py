"""``hostcore user|token|call``: what the commands do to the store and the running server."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import hostcore_command, isolated_environ


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

"""The rules a new password must pass, and the shipped list of common passwords."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hostcore.errors import BadRequest
from hostcore.security.password_policy import MAX_PASSWORD, PasswordPolicy, common_passwords

POLICY = PasswordPolicy(min_length=10)


@pytest.mark.parametrize(
    "password",
    ["a-good-long-phrase", "x" * 10, "Tr0ub4dor&3-and-more", "ü" * 10, "x" * MAX_PASSWORD],
)
def test_good_passwords_pass(password: str) -> None:
    POLICY.check(password, "alice")


@pytest.mark.parametrize(
    ("password", "username", "reason"),
    [
        ("x" * 9, "alice", "password must be 10 to 1024 characters"),
        ("x" * (MAX_PASSWORD + 1), "alice", "password must be 10 to 1024 characters"),
        ("1234567890", "alice", "one of the most common passwords"),
        ("Password123", "alice", "one of the most common passwords"),
        ("qwertyuiop", "alice", "one of the most common passwords"),
        ("maintenance", "maintenance", "must not contain the username"),
        ("my-name-is-ALICE", "alice", "must not contain the username"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(
    password: str, username: str, reason: str
) -> None:
    with pytest.raises(BadRequest, match=reason):
        POLICY.check(password, username)


def test_a_password_with_a_lone_surrogate_is_refused() -> None:
    """JSON's \\ud800 escape decodes to text with no UTF-8 form: argon2 could not hash it."""
    with pytest.raises(BadRequest, match="password must be valid Unicode text"):
        POLICY.check("a-long-phrase-\ud800", "alice")


def test_a_short_username_inside_a_password_is_allowed() -> None:
    PasswordPolicy(min_length=10).check("a-good-long-phrase", "go")


def test_the_minimum_length_is_the_policys() -> None:
    with pytest.raises(BadRequest, match="password must be 16 to 1024 characters"):
        PasswordPolicy(min_length=16).check("a-long-phrase", "alice")
    PasswordPolicy(min_length=8).check("k9-river", "alice")


def test_the_common_list_has_thousands_of_lower_case_entries_of_8_or_more() -> None:
    common = common_passwords()
    assert len(common) >= 4000
    assert all(len(entry) >= 8 and entry == entry.lower() for entry in common)
    assert {"password", "iloveyou", "1qaz2wsx", "qwertyuiop"} <= common


def test_the_common_list_is_read_on_first_use_not_at_import() -> None:
    code = (
        "import hostcore.app, hostcore.builtin.auth\n"
        "from hostcore.security.password_policy import common_passwords\n"
        "print(common_passwords.cache_info().currsize)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "0"

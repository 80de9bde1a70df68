"""What every command shares: one-line errors, the --config/--set found in any spelling,
and the refusal to run as a stranger to the data directory."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hostcore import cli_support
from hostcore.builtin.auth.cli import add_commands
from hostcore.cli import db_cli
from hostcore.cli_support import cli_layers_in, one_line


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("plain", "plain"),
        (
            "invalid configuration:\n  unknown key a\n  b: bad",
            "invalid configuration: unknown key a; b: bad",
        ),
        ("  padded  \n\n", "padded"),
        ("", ""),
    ],
)
def test_one_line_joins_the_lines_of_a_message(message: str, expected: str) -> None:
    assert one_line(message) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), (None, [])),
        (("config", "show", "--config", "a.toml"), (Path("a.toml"), [])),
        (("serve", "--config=a.toml", "-c", "b.toml"), (Path("b.toml"), [])),
        (("serve", "-cb.toml"), (Path("b.toml"), [])),
        (
            ("plugins", "list", "--set", "a=1", "--set=b=2", "-s", "c=3", "-sd=4"),
            (None, ["a=1", "b=2", "c=3", "d=4"]),
        ),
        (("hello", "--", "--set", "a=1"), (None, [])),
        (("serve", "--set"), (None, [])),
        (("serve", "--settle", "x", "--configure"), (None, [])),
    ],
)
def test_cli_layers_in_finds_config_and_set_in_every_spelling(
    args: tuple[str, ...], expected: tuple[Path | None, list[str]]
) -> None:
    assert cli_layers_in(args) == expected


def commands() -> typer.Typer:
    """``hostcore db`` (hostcore.cli's _with_database) and the auth plugin's commands
    (with_store), as ``hostcore`` has them."""
    root = typer.Typer()
    root.add_typer(db_cli, name="db")
    add_commands(root)
    return root


COMMANDS = [
    pytest.param(["db", "upgrade"], "", id="db upgrade"),
    pytest.param(
        ["user", "add", "carol", "--password-stdin"], "a-good-long-phrase\n", id="user add"
    ),
]


@pytest.fixture
def stranger(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process runs as another user than the one that owns the test's files."""
    uid = os.geteuid()
    monkeypatch.setattr(cli_support.os, "geteuid", lambda: uid + 4242)


@pytest.mark.parametrize(("args", "stdin"), COMMANDS)
def test_a_command_run_by_a_stranger_to_the_data_directory_stops_in_one_line(
    hostcore_environ: Path, stranger: None, args: list[str], stdin: str
) -> None:
    data_dir = hostcore_environ / "data"
    data_dir.mkdir(mode=0o700)
    owner = pwd.getpwuid(os.getuid()).pw_name
    result = CliRunner().invoke(commands(), args, input=stdin)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        f"hostcore: the data directory {data_dir} belongs to {owner}: run this command as "
        f"that user (sudo -u {owner} hostcore"
    ), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert list(data_dir.iterdir()) == [], "no store, key or secret made as the stranger"


@pytest.mark.parametrize(("args", "stdin"), COMMANDS)
def test_a_command_makes_a_missing_data_directory_whoever_runs_it(
    hostcore_environ: Path, stranger: None, args: list[str], stdin: str
) -> None:
    result = CliRunner().invoke(commands(), args, input=stdin)
    assert result.exit_code == 0, result.output
    assert (hostcore_environ / "data" / "hostcore.db").is_file()


def test_the_owner_of_the_data_directory_runs_commands(hostcore_environ: Path) -> None:
    (hostcore_environ / "data").mkdir(mode=0o700)
    result = CliRunner().invoke(commands(), ["db", "upgrade"])
    assert result.exit_code == 0, result.output

from __future__ import annotations

from pathlib import Path

import pytest

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

"""docs/plugins.md says what examples/hostcore-hello is, and its test file passes.

The guide quotes the example plugin section by section and prints it whole in its
appendix; these tests fail when a quote and the example drift apart.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, isolated_environ

GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "examples" / "hostcore-hello"
MODULE = EXAMPLE / "src" / "hostcore_hello" / "__init__.py"
MIGRATION = EXAMPLE / "src" / "hostcore_hello" / "migrations" / "0001_greetings.py"
APPENDIX = "## Appendix: the complete example"
GUIDE_TESTS_TIMEOUT_S = 120

Imported = tuple[str | None, str, str | None]  # (from module, name, as name)

# The python blocks that quote MODULE, by the heading they sit under and their place
# among that heading's python blocks. Left out on purpose: the quick start's module
# (trimmed: its route has no store and carries a comment of its own), the second block
# under hostcore_startup (another plugin, WebhookSettings), the second block under
# hostcore_migrations (MIGRATION, compared whole below) and every block of other
# plugins (kernel, widget, the scopes table's routes).
QUOTES_OF_THE_MODULE = [
    ("### `hostcore_settings_model()`", 0),
    ("### `hostcore_routes(settings, config)`", 0),
    ("### `hostcore_scopes()`", 0),
    ("### `hostcore_migrations()`", 0),
    ("### `hostcore_cli(cli)`", 0),
    ("### `hostcore_startup(app, settings, config)`", 0),
    ("### `hostcore_shutdown(app)`", 0),
    ("### `hostcore_health(app)`", 0),
    ("### `hostcore_static_mounts(settings, config)`", 0),
    ("### `hostcore_job_kinds(settings, config)`", 0),
    ("## The store", 0),
    ("## Lifecycle and per-worker state", 0),
]


def code_blocks(markdown: str, language: str) -> dict[str, list[str]]:
    """Each heading's fenced blocks in ``language``, in order (fences inside a block,
    such as ``#`` comments, are not headings)."""
    blocks: dict[str, list[str]] = {}
    heading = ""
    fence: str | None = None  # the language of the open fence, if one is open
    lines: list[str] = []
    for line in markdown.splitlines(keepends=True):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence, lines = stripped.removeprefix("```"), []
            elif line.startswith("#"):
                heading = line.rstrip("\n")
        elif stripped == "```":
            if fence == language:
                blocks.setdefault(heading, []).append("".join(lines))
            fence = None
        else:
            lines.append(line)
    return blocks


def quoted_block(heading: str, index: int) -> str:
    blocks = code_blocks(GUIDE.read_text(), "python").get(heading, [])
    assert index < len(blocks), f"docs/plugins.md has no python block {index} under {heading}"
    return blocks[index]


def statements(source: str) -> tuple[set[Imported], list[str]]:
    """The names a module imports, and the text of each other top-level statement
    (decorators included)."""
    lines = source.splitlines()
    imported: set[Imported] = set()
    texts: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            imported |= {(None, alias.name, alias.asname) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {(node.module, alias.name, alias.asname) for alias in node.names}
        else:
            decorators = getattr(node, "decorator_list", [])
            first = min([node.lineno, *(decorator.lineno for decorator in decorators)])
            texts.append("\n".join(lines[first - 1 : node.end_lineno]))
    return imported, texts


def test_the_appendix_is_the_example_module() -> None:
    (appendix,) = code_blocks(GUIDE.read_text(), "python")[APPENDIX]
    assert appendix == MODULE.read_text()


def test_the_printed_revision_is_the_example_migration() -> None:
    assert quoted_block("### `hostcore_migrations()`", 1) == MIGRATION.read_text()


def test_the_quick_start_pyproject_is_the_example_one_without_its_description() -> None:
    (quick_start,) = code_blocks(GUIDE.read_text(), "toml")["## Quick start"]
    example = (EXAMPLE / "pyproject.toml").read_text()
    assert quick_start == re.sub(r"(?m)^description = .*\n", "", example)


@pytest.mark.parametrize(("heading", "index"), QUOTES_OF_THE_MODULE)
def test_each_quote_is_in_the_example_module(heading: str, index: int) -> None:
    """Every statement a quote shows is one of the module's, verbatim; its imports
    are ones the module makes (a quote imports only what it needs)."""
    module_imports, module_statements = statements(MODULE.read_text())
    quote_imports, quote_statements = statements(quoted_block(heading, index))
    extra = sorted(map(str, quote_imports - module_imports))
    assert not extra, f"imports {MODULE.relative_to(ROOT)} does not make: {extra}"
    missing = [text for text in quote_statements if text not in module_statements]
    assert not missing, f"not in {MODULE.relative_to(ROOT)}:\n\n" + "\n\n".join(missing)


def test_the_guide_test_file_passes_against_the_example(hello_site: Path, tmp_path: Path) -> None:
    test_file = code_blocks(GUIDE.read_text(), "python")["## Testing your plugin"][0]
    (tmp_path / "test_hello.py").write_text(test_file)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hello.py"],
        cwd=tmp_path,
        env=isolated_environ(tmp_path, PYTHONPATH=str(hello_site)),
        capture_output=True,
        text=True,
        timeout=GUIDE_TESTS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""The README's quick start works pasted as it is, in the order shown."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, isolated_environ

pytestmark = pytest.mark.integration

QUICK_START_TIMEOUT_S = 120


def section(markdown: str, title: str) -> str:
    """The text under ``## title``, up to the next ``## `` heading."""
    start = markdown.index(f"\n## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)


def test_the_quick_start_works_pasted_in_the_order_shown(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the quick start uses curl")
    quick_start = section((ROOT / "README.md").read_text(), "Quick start")
    commands = "".join(shell_blocks(quick_start))
    port = free_port()
    # This checkout's virtual environment and a free port stand in for the reader's.
    script = commands.replace(".venv/bin/", f"{Path(sys.executable).parent}/").replace(
        "localhost:8000", f"localhost:{port}"
    )
    env = isolated_environ(tmp_path, HOSTCORE_SERVER__PORT=str(port))
    shell = subprocess.Popen(
        ["bash", "-e", "-c", f"trap 'kill $(jobs -p) 2>/dev/null' EXIT\n{script}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = shell.communicate(timeout=QUICK_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(shell.pid, signal.SIGKILL)
        stdout, stderr = shell.communicate()
        pytest.fail(f"the quick start did not finish:\n{stdout}\n{stderr}")
    assert shell.returncode == 0, f"{stdout}\n{stderr}"
    assert '{"status":"ok"}' in stdout
    assert stdout.count('"subject":"client:panel"') + stdout.count('"subject": "client:panel"') == 2
    assert "Traceback" not in stderr

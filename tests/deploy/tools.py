"""The real tools the rendered files are checked with, and hermetic settings.

Every check runs the tool that will read the file in production (nginx, systemd,
logrotate) or, for polkit's rules, a JavaScript engine running them against a fake
``polkit`` object. None touches a system file: nginx gets a prefix and a
configuration of its own, systemd-sysusers a dry run under a temporary root, and
logrotate a private mount namespace. A missing tool skips, saying which package
installs it; under ``CI=true`` it fails instead (``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from hostcore.config import Settings, load_settings

NOWHERE = Path("/nonexistent/hostcore.toml")
TIMEOUT_S = 60
PACKAGES = {
    "nginx": "nginx",
    "systemd-analyze": "systemd",
    "systemd-sysusers": "systemd",
    "logrotate": "logrotate",
    "node": "nodejs",
    "unshare": "util-linux",
}


def settings(*overrides: str) -> Settings:
    """Settings from defaults and ``overrides`` only: no file, no environment."""
    return load_settings(
        overrides=list(overrides), environ={}, system_config=NOWHERE, local_config=NOWHERE
    )


def require(*commands: str, root: bool = False) -> None:
    """Skip (fail under CI) unless ``commands`` are installed (and, if asked, we are root)."""
    missing = [c for c in commands if shutil.which(c) is None]
    problem = None
    if missing:
        packages = sorted({PACKAGES.get(c, c) for c in missing})
        problem = f"{', '.join(missing)} not installed (Debian: {' '.join(packages)})"
    elif root and os.geteuid() != 0:
        problem = "needs root for a private mount namespace (CI runs the suite as root)"
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the deployment checks: {problem}")
    pytest.skip(problem)


def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def write_tree(root: Path, files: dict[Path, str]) -> dict[Path, Path]:
    """Write rendered files under ``root`` at their real paths; their temporary paths."""
    placed = {}
    for path, text in files.items():
        where = root / path.relative_to("/")
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(text)
        placed[path] = where
    return placed

"""Printing rendered files, or writing them under a root directory.

Writing is all or nothing for the check: every file that exists already is named
before any is written, unless ``force``. Each file is written whole (a temporary
file renamed over it), so nginx or systemd never read half of one; a file is 0644,
a private key 0600 from the moment it exists. Missing directories are made 0755,
a private key's 0700.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PUBLIC_FILE = 0o644
PRIVATE_FILE = 0o600
PUBLIC_DIRECTORY = 0o755
PRIVATE_DIRECTORY = 0o700


@dataclass(frozen=True)
class Planned:
    """One file to write: its absolute path on the target, content and mode."""

    path: Path
    content: bytes
    mode: int = PUBLIC_FILE


def planned(files: Mapping[Path, str]) -> list[Planned]:
    return [Planned(path, text.encode()) for path, text in files.items()]


def as_text(files: Mapping[Path, str]) -> str:
    """Every file under a ``==> path <==`` line (as ``tail`` heads them)."""
    return "\n".join(f"==> {path} <==\n{text}" for path, text in files.items())


def under(root: Path, path: Path) -> Path:
    """``path`` (absolute, on the target) under ``root``."""
    return root / path.relative_to(path.anchor)


class Exists(Exception):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        super().__init__(", ".join(str(p) for p in paths))


def write(root: Path, files: Iterable[Planned], *, force: bool) -> list[Path]:
    """Write ``files`` under ``root``; raises Exists (naming every one) before writing
    anything when some exist and not ``force``. Returns the paths written."""
    files = list(files)
    if not force:
        found = [under(root, f.path) for f in files if under(root, f.path).exists()]
        if found:
            raise Exists(found)
    written = []
    for file in files:
        destination = under(root, file.path)
        private = file.mode & 0o077 == 0
        destination.parent.mkdir(
            mode=PRIVATE_DIRECTORY if private else PUBLIC_DIRECTORY, parents=True, exist_ok=True
        )
        _replace(destination, file.content, file.mode)
        written.append(destination)
    return written


def _replace(path: Path, content: bytes, mode: int) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)  # mkstemp's 0600, then the final mode: never looser meanwhile
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

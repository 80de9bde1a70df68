"""The modes of the files hostcore keeps: private when created, checked when found.

Rules, each with its reason:

- A directory hostcore creates is 0700 and a file 0600: the store, its WAL and
  shared-memory files, the keys and the logs hold tokens' metadata, hashes and
  key material, and nobody but the service needs them.
- One found may also let its group read (0750, 0640) or only search (0710): an
  admin's choice, such as a log readers' group or ``auth.secret_group``. Group
  write and any access for others are never accepted.
- Looser than that and owned by hostcore's user: tightened, with a warning, so an
  upgrade from a version that created them with the umask's modes just works.
- Looser and owned by another user: refused with a message that names the path,
  its mode and its owner. hostcore cannot know why someone else opened it up, and
  changing another user's file is not its call.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import tempfile
from pathlib import Path

from hostcore.errors import ConfigError

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600
DIRECTORY_LIMIT = 0o750
FILE_LIMIT = 0o640

log = logging.getLogger(__name__)


def private_directory(path: Path, *, what: str, limit: int = DIRECTORY_LIMIT) -> None:
    """Create ``path`` (0700; missing parents get the umask's modes) or check the one found
    (at most ``limit``: a layout may let others pass through, never list or write)."""
    try:
        path.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the {what} {path}: {exc.strerror}") from None
    if not path.is_dir():
        raise ConfigError(f"the {what} {path} is not a directory")
    _limit(path, limit, what)


def private_file(path: Path, *, what: str) -> None:
    """Create ``path`` empty with mode 0600, or check the one found."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        checked_file(path, what=what)
    except OSError as exc:
        raise ConfigError(f"cannot create the {what} {path}: {exc.strerror}") from None
    else:
        os.close(fd)


def checked_file(path: Path, *, what: str) -> None:
    """Check a file that may exist (a WAL, a key): tighten or refuse as the rules say."""
    if path.exists():
        _limit(path, FILE_LIMIT, what)


def replace_file(path: Path, data: bytes) -> None:
    """Replace ``path`` whole with ``data`` (a new 0600 file renamed over it): a reader
    never sees half a file, and the old one's inode goes. Raises ``OSError``."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_up_to(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes of an open file, however its reads come in: read
    ``limit + 1`` to tell a file that is too long from one that fits exactly."""
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def private_opener(path: str, flags: int) -> int:
    """``open(..., opener=private_opener)``: a file this creates is 0600, whatever the umask."""
    return os.open(path, flags, PRIVATE_FILE)


def _limit(path: Path, limit: int, what: str) -> None:
    try:
        found = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot check the {what} {path}: {exc.strerror}") from None
    mode = stat.S_IMODE(found.st_mode)
    if not mode & ~limit & 0o777:
        return
    if mode & stat.S_ISVTX:
        raise ConfigError(
            f"the {what} {path} is a shared directory (mode 0o{mode:04o}): "
            "configure a directory of hostcore's own"
        )
    safe = mode & (limit | stat.S_ISUID | stat.S_ISGID)  # a setgid directory stays one
    if found.st_uid != os.geteuid():
        raise ConfigError(
            f"the {what} {path} is mode 0o{mode:03o} and owned by {_user(found.st_uid)}: "
            f"others may read or change it; make it 0o{safe:03o} (chmod) or owned by "
            f"{_user(os.geteuid())}, or configure another path"
        )
    try:
        path.chmod(safe)
    except OSError as exc:
        raise ConfigError(
            f"the {what} {path} is mode 0o{mode:03o} and cannot be made 0o{safe:03o}: "
            f"{exc.strerror}"
        ) from None
    log.warning("the %s %s was mode 0o%03o; it is now 0o%03o", what, path, mode, safe)


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"

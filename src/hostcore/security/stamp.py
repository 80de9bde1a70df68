"""A file that says "the security state in the store has changed", cheaply.

Every worker must see a revocation or a new signing key within a second, so each
one used to read the store twice a second, which on an idle device was most of
its CPU. With the embedded store every process that changes that state (a worker,
the command line) is on this host, so after its change it replaces
``<data_dir>/security.stamp``; the workers ``stat`` the file twice a second (a
system call, no thread, no query) and read the store only when it changed, and
every ``FULL_POLL_EVERY_S`` whatever it says, in case something else edited
the store. A store other than a SQLite file may be shared with other hosts, which
cannot touch this file: there every poll reads the store, as before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hostcore.files import replace_file

STAMP_FILE = "security.stamp"
# However quiet the stamp, the store is read this often.
FULL_POLL_EVERY_S = 30.0

log = logging.getLogger(__name__)

Seen = tuple[int, int, int]


class ChangeStamp:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Seen | None:
        """What the file looks like now (None: there is none yet)."""
        try:
            found = self.path.stat()
        except OSError:
            return None
        return found.st_ino, found.st_mtime_ns, found.st_ctime_ns

    def touch(self) -> None:
        """Say the state changed: a new file replaces the old one (a new inode, whatever
        the file system's time resolution). A failure is logged: the full polls catch up."""
        try:
            replace_file(self.path, os.urandom(8))
        except OSError as exc:
            log.warning("cannot replace %s (%s): other workers notice within %gs",
                        self.path, exc.strerror, FULL_POLL_EVERY_S)  # fmt: skip

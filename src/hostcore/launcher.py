"""The ``hostcore`` command's entry point: as little as possible before a command runs.

``hostcore version`` answers here, before the command-line framework is imported (a
script may ask it often, and on a Pi every import costs); every other command line
goes to :mod:`hostcore.cli`, which imports what its command needs when it runs.
"""

from __future__ import annotations

import sys

from hostcore import __version__


def version_line() -> str:
    return f"hostcore {__version__}"


def main() -> None:
    if sys.argv[1:] == ["version"]:
        print(version_line())
        return
    from hostcore.cli import main as run

    run()

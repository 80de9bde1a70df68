"""Named network namespaces (``ip netns``), for every plugin that reads the kernel.

* **Names** are plain file names under the namespace directory (``/run/netns``),
  checked strictly (:data:`NamespaceName`) and looked up in its listing: never a
  path a caller builds.
* **Sockets in a namespace without a process.** A short-lived thread enters the
  namespace (``setns(2)``), opens the socket there and ends; a socket keeps the
  namespace it was made in, so the event loop then talks to that namespace through
  it. A fresh thread each time: a thread of a pool would stay in the other namespace
  for whatever work it runs next. The file is opened without following a symlink and
  without blocking (a FIFO planted there would wait for a writer); ``setns`` refuses
  anything but a network namespace.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

NETNS_DIR_DEFAULT = Path("/run/netns")
MAX_NETNS_NAME = 64
CLONE_NEWNET = 0x40000000
NETNS_ENTER_TIMEOUT_S = 5.0
_NETNS = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")


def valid_netns_name(name: str) -> bool:
    return _NETNS.match(name) is not None


def check_netns_name(name: str) -> str:
    if not valid_netns_name(name):
        raise ValueError(
            "not a namespace name: 1 to 64 letters, digits and '_.-', not starting with '.' or '-'"
        )
    return name


NamespaceName = Annotated[
    str, Field(min_length=1, max_length=MAX_NETNS_NAME), AfterValidator(check_netns_name)
]


def namespace_names(netns_dir: Path) -> list[str]:
    """The named namespaces (``ip netns list``) a request may name, sorted; none when the
    directory is absent."""
    try:
        entries = [entry.name for entry in netns_dir.iterdir()]
    except OSError:
        return []
    return sorted(name for name in entries if valid_netns_name(name))


def socket_in(namespace: Path, protocol: int) -> int:
    """The descriptor of a netlink socket of ``protocol`` made inside ``namespace`` (a
    file under the namespace directory). The thread is waited for a bounded time, and
    is a daemon: nothing it does can hold up a stop."""
    made: list[int] = []
    failed: list[OSError] = []

    def enter_and_open() -> None:
        try:
            fd = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as error:
            failed.append(error)
            return
        import ctypes  # only a server that enters a namespace pays for it

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                failed.append(OSError(code, os.strerror(code)))
                return
            made.append(
                socket.socket(
                    socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, protocol
                ).detach()
            )
        except OSError as error:
            failed.append(error)
        finally:
            os.close(fd)

    thread = threading.Thread(target=enter_and_open, name="hostcore-netns", daemon=True)
    thread.start()
    thread.join(NETNS_ENTER_TIMEOUT_S)
    if failed:
        raise failed[0]
    if not made:
        raise OSError(errno.ETIMEDOUT, "entering the namespace did not finish")
    return made[0]

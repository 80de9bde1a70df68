"""The listening socket: bound by hostcore, then handed to uvicorn or gunicorn.

One function binds for both serving modes, so they behave the same: uvicorn
gets the socket object, gunicorn its descriptor (``fd://N``), and the socket
outlives a reload. Rules, each with its reason:

- A unix socket gets ``server.uds_mode`` (0o660) and ``server.uds_group`` (else
  hostcore's own group) before it listens, so there is no moment at which anyone
  else can connect; uvicorn alone would make it 0o666 and gunicorn 0o777.
- Its directory is created when missing (0700 plus search for whom the mode
  admits: 0710 for a group), and one hostcore owns is opened for search to that
  group (and nothing more), so nginx can reach the socket. A directory of another
  user that keeps the socket's group out is refused with a message that says so.
- A socket file nobody listens on (a crash left it) is replaced; one a server
  still answers on is refused, as is a path that is not a socket.
- A port in use, an address this host does not have, a directory hostcore may not
  write: one line that names the address, before the store is touched.
"""

from __future__ import annotations

import errno
import grp
import os
import socket
import stat
from pathlib import Path

from hostcore.config import ServerSettings
from hostcore.errors import ConfigError
from hostcore.files import PRIVATE_DIRECTORY

BACKLOG = 2048
_GROUP_BITS = 0o070
_OTHER_BITS = 0o007


def describe(server: ServerSettings) -> str:
    """Where the server listens, as a log line or a URL would write it."""
    if server.uds is not None:
        return f"unix:{server.uds}"
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"{host}:{server.port}"


def open_listener(server: ServerSettings, *, backlog: int = BACKLOG) -> socket.socket:
    """A bound, listening socket for ``server.uds`` or ``server.host:port``."""
    if server.uds is not None:
        return _unix_listener(server, backlog)
    return _tcp_listener(server, backlog)


def close_listener(listener: socket.socket) -> None:
    """Close the socket, and remove its file when it is a unix socket."""
    path = listener.getsockname() if listener.family == socket.AF_UNIX else None
    listener.close()
    if path:
        Path(path).unlink(missing_ok=True)


def _tcp_listener(server: ServerSettings, backlog: int) -> socket.socket:
    where = describe(server)
    try:
        infos = socket.getaddrinfo(
            server.host, server.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {where}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        hint = " (is another server running there?)" if exc.errno == errno.EADDRINUSE else ""
        raise ConfigError(f"cannot listen on {where}: {exc.strerror}{hint}") from None
    return sock


def _unix_listener(server: ServerSettings, backlog: int) -> socket.socket:
    assert server.uds is not None
    path = server.uds
    gid = _group_id(server.uds_group) if server.uds_group is not None else None
    _prepare_directory(path.parent, server.uds_mode, gid)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Bound but not yet listening, nobody can connect: set owner and mode first.
        sock.bind(str(path))
        if gid is not None:
            os.chown(path, -1, gid)
        path.chmod(server.uds_mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on unix socket {path}: {exc.strerror}") from None
    return sock


def _group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"server.uds_group: no group {name!r} on this host") from None


def _search_bits(mode: int) -> int:
    """The execute (search) bits a directory needs for whom ``mode`` lets connect."""
    return (0o010 if mode & _GROUP_BITS else 0) | (0o001 if mode & _OTHER_BITS else 0)


def _prepare_directory(directory: Path, mode: int, gid: int | None) -> None:
    needed = _search_bits(mode)
    try:
        if not directory.exists():
            directory.mkdir(mode=PRIVATE_DIRECTORY, parents=True)
            if gid is not None:
                os.chown(directory, -1, gid)
            directory.chmod(PRIVATE_DIRECTORY | needed)
            return
        found = directory.stat()
    except OSError as exc:
        raise ConfigError(
            f"cannot prepare the socket directory {directory}: {exc.strerror}"
        ) from None
    group = gid if gid is not None else _group_of_new_file(found)
    if _admits(found, needed, group):
        return
    if found.st_uid != os.geteuid():
        raise ConfigError(
            f"the socket directory {directory} (mode 0o{stat.S_IMODE(found.st_mode):03o}, "
            f"owner uid {found.st_uid}) keeps out whom server.uds_mode admits: let them "
            f"search it (chmod g+x, or chgrp), or put the socket elsewhere"
        )
    try:
        if found.st_gid != group and not found.st_mode & 0o001:
            os.chown(directory, -1, group)
        directory.chmod(stat.S_IMODE(found.st_mode) | needed)
    except OSError as exc:
        raise ConfigError(
            f"cannot open the socket directory {directory} to the socket's group: {exc.strerror}"
        ) from None


def _group_of_new_file(directory: os.stat_result) -> int:
    return directory.st_gid if directory.st_mode & stat.S_ISGID else os.getegid()


def _admits(found: os.stat_result, needed: int, group: int) -> bool:
    mode = stat.S_IMODE(found.st_mode)
    if needed & 0o001 and not mode & 0o001:
        return False
    if needed & 0o010:
        return bool(mode & 0o001) or (found.st_gid == group and bool(mode & 0o010))
    return True


def _remove_stale(path: Path) -> None:
    try:
        found = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise ConfigError(f"cannot listen on unix socket {path}: it exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # nobody listens: a crash left it behind
            return
    raise ConfigError(f"cannot listen on unix socket {path}: a server is listening there already")

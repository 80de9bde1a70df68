"""The listening socket: its mode, group and directory, and one-line errors."""

from __future__ import annotations

import grp
import os
import socket
import stat
from pathlib import Path

import pytest

from hostcore.config import ServerSettings
from hostcore.errors import ConfigError
from hostcore.listen import close_listener, describe, open_listener
from tests.helpers import free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def another_group() -> grp.struct_group:
    """A group this process may give a file to, other than its own."""
    mine = os.getegid()
    allowed = [gid for gid in os.getgroups() if gid != mine]
    if os.geteuid() == 0:
        allowed += [group.gr_gid for group in grp.getgrall() if group.gr_gid != mine]
    if not allowed:
        pytest.skip("this user belongs to no second group")
    return grp.getgrgid(allowed[0])


def test_a_unix_socket_admits_its_owner_and_group_only(tmp_path: Path) -> None:
    path = tmp_path / "run" / "hostcore.sock"
    listener = open_listener(ServerSettings(uds=path))
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert mode(path) == 0o660
        assert path.lstat().st_gid == os.getegid()
    finally:
        close_listener(listener)
    assert not path.exists()


def test_a_missing_socket_directory_is_created_searchable_by_the_group(tmp_path: Path) -> None:
    group = another_group()
    path = tmp_path / "deep" / "run" / "hostcore.sock"
    listener = open_listener(ServerSettings(uds=path, uds_group=group.gr_name))
    try:
        assert (mode(path), path.lstat().st_gid) == (0o660, group.gr_gid)
        assert (mode(path.parent), path.parent.stat().st_gid) == (0o710, group.gr_gid)
    finally:
        close_listener(listener)


def test_a_private_directory_of_ours_is_opened_for_search_and_nothing_more(
    tmp_path: Path,
) -> None:
    group = another_group()
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    (run / "ratelimit.shm").write_text("")
    listener = open_listener(ServerSettings(uds=run / "s.sock", uds_group=group.gr_name))
    close_listener(listener)
    assert (mode(run), run.stat().st_gid) == (0o710, group.gr_gid)


def test_a_socket_only_its_owner_may_use_needs_no_search_bits(tmp_path: Path) -> None:
    run = tmp_path / "run"
    listener = open_listener(ServerSettings(uds=run / "s.sock", uds_mode="0600"))
    close_listener(listener)
    assert mode(run) == 0o700


def test_a_directory_of_another_user_that_keeps_the_group_out_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = another_group()
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setattr("hostcore.listen.os.geteuid", lambda: os.getuid() + 4242)
    with pytest.raises(ConfigError, match=r"socket directory .* keeps out"):
        open_listener(ServerSettings(uds=run / "s.sock", uds_group=group.gr_name))
    assert mode(run) == 0o700


def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    first = open_listener(ServerSettings(uds=path))
    try:
        with pytest.raises(ConfigError, match="a server is listening there already"):
            open_listener(ServerSettings(uds=path))
    finally:
        close_listener(first)


def test_a_path_that_is_not_a_socket_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "hostcore.sock"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        open_listener(ServerSettings(uds=path))
    assert path.read_text() == "precious"


def test_a_port_in_use_is_one_line_naming_the_address() -> None:
    port = free_port()
    first = open_listener(ServerSettings(port=port))
    try:
        with pytest.raises(ConfigError) as refused:
            open_listener(ServerSettings(port=port))
    finally:
        first.close()
    message = str(refused.value)
    assert message.startswith(f"cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in message and "\n" not in message


def test_an_ipv6_address_is_bracketed_and_served() -> None:
    server = ServerSettings(host="::1", port=free_port())
    assert describe(server) == f"[::1]:{server.port}"
    try:
        listener = open_listener(server)
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with listener, socket.create_connection(("::1", server.port), timeout=5):
        pass

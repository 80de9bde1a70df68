"""File modes: private when created, tightened when ours, refused when another user's."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from hostcore import files
from hostcore.errors import ConfigError
from tests.helpers import mode


@pytest.fixture
def someone_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file in the test belongs to another user, as hostcore sees it."""
    monkeypatch.setattr(files.os, "geteuid", lambda: os.getuid() + 4242)


def test_a_new_directory_is_0700_and_a_new_file_0600(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "nested"
    files.private_directory(directory, what="data directory")
    files.private_file(directory / "store.db", what="database")
    assert mode(directory) == 0o700
    assert mode(directory / "store.db") == 0o600


def test_a_looser_directory_of_ours_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    directory.chmod(0o777)
    with caplog.at_level(logging.WARNING, "hostcore.files"):
        files.private_directory(directory, what="data directory")
    assert mode(directory) == 0o750
    assert "was mode 0o777; it is now 0o750" in caplog.text


def test_a_group_may_read_or_search_but_never_write(tmp_path: Path) -> None:
    for kept in (0o700, 0o710, 0o750):
        directory = tmp_path / f"d{kept:o}"
        directory.mkdir(mode=kept)
        directory.chmod(kept)
        files.private_directory(directory, what="log directory")
        assert mode(directory) == kept
    log_file = tmp_path / "app.log"
    log_file.write_text("")
    for found, kept in ((0o640, 0o640), (0o664, 0o640), (0o606, 0o600)):
        log_file.chmod(found)
        files.private_file(log_file, what="log file")
        assert mode(log_file) == kept


def test_a_looser_directory_of_another_user_is_refused_untouched(
    tmp_path: Path, someone_else: None
) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    directory.chmod(0o755)
    with pytest.raises(ConfigError) as refused:
        files.private_directory(directory, what="data directory")
    assert str(refused.value).startswith(f"the data directory {directory} is mode 0o755")
    assert "make it 0o750" in str(refused.value)
    assert mode(directory) == 0o755


def test_a_private_directory_of_another_user_is_accepted(
    tmp_path: Path, someone_else: None
) -> None:
    directory = tmp_path / "data"
    directory.mkdir(mode=0o700)
    files.private_directory(directory, what="data directory")


def test_a_shared_sticky_directory_is_never_taken_over(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(ConfigError, match="shared directory"):
        files.private_directory(shared, what="data directory")
    assert mode(shared) == 0o1777


def test_a_setgid_directory_stays_setgid_when_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    directory.chmod(0o2775)
    files.private_directory(directory, what="log directory")
    assert mode(directory) == 0o2750


def test_the_private_opener_creates_0600_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        with open(tmp_path / "x.log", "a", opener=files.private_opener) as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "x.log") == 0o600


def test_replace_file_puts_a_new_private_file_in_place_whole(tmp_path: Path) -> None:
    from hostcore.files import replace_file

    target = tmp_path / "state.json"
    target.write_text("old")
    before = target.stat().st_ino
    replace_file(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != before
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"], "no temporary left"

"""Where each client's HMAC secret lives, who may read it, and loading them at start.

Each client on the list signs with a secret of its own, so holding one
client's secret signs as that client and no other::

    <data_dir>/                 0700; 0711 while a secret in it is group-readable
      secrets/                  0700; 0711 likewise (anyone may pass, nobody may list)
        <client>.secret         one per listed client, made on the first start:
                                0600, or 0640 to auth.clients.<client>.secret_group
        hmac.secret             the shared secret, made only when a client opts in
                                with shared_secret = true: 0600, or 0640 to
                                auth.secret_group

A client with ``secret_file`` signs with that file instead, which hostcore
reads and never creates or changes. The shared secret (``auth.hmac_secret_file``
moves it) signs only for the clients that name it: every holder of it can sign
as each of them, so only clients that trust each other should share it.

A group-readable secret is no use behind a directory its group cannot pass
through, and ``<data_dir>`` is private. While any secret under it is
group-readable, ``<data_dir>`` and ``secrets/`` are made 0711: anyone may
pass through, nobody may list them, and every file and directory directly in
``<data_dir>`` (the store, the master key, a plugin's directory) is made its
owner's alone first, so that what may be opened there is decided by each
entry's own mode. Without such a group
both are 0700 again. Each secret file's mode and group are set to the
configuration on every start, so a group added or removed later takes effect.

Everything here blocks on the file system: call it from a thread.
"""

from __future__ import annotations

import grp
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from hostcore.config import SECRETS_DIR, Settings
from hostcore.errors import ConfigError
from hostcore.security import hmac as signing

PRIVATE_DIRECTORY = 0o700
PASSABLE_DIRECTORY = 0o711

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeptSecret:
    """A secret file hostcore creates and keeps: where, and which group may read it."""

    path: Path
    group: str | None


def group_reads_a_secret(settings: Settings) -> bool:
    """Whether a secret hostcore keeps is group-readable: then the data directory and the
    secrets directory are passable (0711) rather than private (0700)."""
    auth = settings.auth
    return any(
        (auth.secret_group if client.shared_secret else client.secret_group) is not None
        for client in auth.clients.values()
        if client.secret_file is None
    )


def load_client_secrets(settings: Settings) -> dict[str, bytes]:
    """Every listed client's HMAC secret, creating the files hostcore keeps."""
    auth = settings.auth
    kept: dict[str, KeptSecret] = {}
    for name, client in auth.clients.items():
        if client.secret_file is None:
            path = settings.hmac_secret_path(name)
            group = auth.secret_group if client.shared_secret else client.secret_group
            kept[name] = KeptSecret(path, group)
    directory = settings.data_dir / SECRETS_DIR
    inside = [secret for secret in kept.values() if secret.path.parent == directory]
    if inside:
        passable = any(secret.group is not None for secret in inside)
        _prepare(directory, settings.data_dir, passable=passable)
    made: dict[Path, bytes] = {}
    secrets: dict[str, bytes] = {}
    for name, client in auth.clients.items():
        if client.secret_file is not None:
            secrets[name] = signing.read_secret(client.secret_file)
            continue
        secret = kept[name]
        if secret.path not in made:
            made[secret.path] = signing.create_secret(secret.path, group=secret.group)
            _settle(secret.path, secret.group)
        secrets[name] = made[secret.path]
    return secrets


def _prepare(directory: Path, data_dir: Path, *, passable: bool) -> None:
    """Make ``directory`` (inside ``data_dir``) and give both the mode the layout needs."""
    try:
        directory.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
        if passable:
            _owner_only_entries(data_dir, keep=directory)
        mode = PASSABLE_DIRECTORY if passable else PRIVATE_DIRECTORY
        for path in (data_dir, directory):
            _chmod(path, mode)
    except OSError as exc:
        raise ConfigError(f"cannot prepare the HMAC secrets in {directory}: {exc}") from exc


def _owner_only_entries(directory: Path, keep: Path) -> None:
    """Every file and directory directly in ``directory`` but ``keep``: its owner's alone."""
    for entry in directory.iterdir():
        info = entry.lstat()
        kind_known = stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
        if entry != keep and kind_known and info.st_mode & 0o077:
            log.info("made %s its owner's alone: %s is open for passing", entry, directory)
            _chmod(entry, stat.S_IMODE(info.st_mode) & 0o700)


def _chmod(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.lstat().st_mode) != mode:
        path.chmod(mode)


def _settle(path: Path, group: str | None) -> None:
    """Give a kept secret the mode and group its configuration says."""
    try:
        if group is None:
            _chmod(path, signing.SECRET_MODE)
            return
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"HMAC secret group {group!r}: no such group") from None
        if path.stat().st_gid != gid:
            os.chown(path, -1, gid)
        _chmod(path, signing.GROUP_SECRET_MODE)
    except OSError as exc:
        raise ConfigError(f"cannot give HMAC secret {path} to group {group!r}: {exc}") from exc

"""Each client's own HMAC secret, the shared secret only for clients that name it, and
group access to them through the private data directory.

The group tests run a real process as another user (``nobody``) with and
without the group, so the kernel, not a mode calculation, says who may read
what; they need root to switch users.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hostcore.config import Settings
from hostcore.security import hmac as signing
from tests.helpers import WHOAMI, Serve, assert_error, hmac_secret, mode, signed

NOBODY = 65534
GROUP = "staff"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def whoami(client: TestClient, name: str, secret: bytes) -> tuple[int, str]:
    response = client.get(WHOAMI, headers=signed(client, "GET", WHOAMI, name=name, secret=secret))
    return response.status_code, response.json().get("subject", response.json().get("detail"))


def test_each_listed_client_gets_its_own_secret_on_the_first_start(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory('auth.clients.panel.scopes=["probe:read"]')
    client = serve(settings)
    directory = settings.data_dir / "secrets"
    assert sorted(path.name for path in directory.iterdir()) == ["panel.secret", "tester.secret"]
    assert mode(directory) == 0o700 and mode(settings.data_dir) == 0o700
    panel = signing.read_secret(directory / "panel.secret")
    tester = signing.read_secret(directory / "tester.secret")
    assert panel != tester
    assert {mode(directory / "panel.secret"), mode(directory / "tester.secret")} == {0o600}
    assert settings.hmac_secret_path("panel") == directory / "panel.secret"
    assert whoami(client, "panel", panel) == (200, "client:panel")
    assert whoami(client, "panel", tester) == (401, "request signature is invalid")
    assert whoami(client, "tester", panel) == (401, "request signature is invalid")
    restarted = serve(settings)
    assert whoami(restarted, "panel", panel) == (200, "client:panel"), "kept across restarts"


def test_a_holder_of_the_shared_secret_cannot_sign_as_a_client_that_did_not_name_it(
    serve: Serve, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    shared = tmp_path / "shared.secret"
    shared.write_bytes(b"s" * 64 + b"\n")
    client = serve(settings_factory(f"auth.hmac_secret_file={shared}"))
    response = client.get(
        WHOAMI, headers=signed(client, "GET", WHOAMI, name="tester", secret=b"s" * 64)
    )
    assert_error(response, 401, "Unauthorized", "request signature is invalid")


def test_the_shared_secret_signs_only_for_the_clients_that_name_it(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(
        'auth.clients.panel.scopes=["probe:read"]',
        "auth.clients.panel.shared_secret=true",
        'auth.clients.kiosk.scopes=["probe:read"]',
        "auth.clients.kiosk.shared_secret=true",
    )
    client = serve(settings)
    directory = settings.data_dir / "secrets"
    assert sorted(path.name for path in directory.iterdir()) == ["hmac.secret", "tester.secret"]
    shared = signing.read_secret(settings.hmac_secret_path())
    assert settings.hmac_secret_path("panel") == settings.hmac_secret_path("kiosk")
    assert whoami(client, "panel", shared) == (200, "client:panel")
    assert whoami(client, "kiosk", shared) == (200, "client:kiosk")
    assert whoami(client, "tester", shared) == (401, "request signature is invalid")


def test_without_a_client_naming_it_no_shared_secret_is_made(
    serve: Serve, settings: Settings
) -> None:
    serve(settings)
    assert not settings.hmac_secret_path().exists()


# --- groups -------------------------------------------------------------------------------


@pytest.fixture
def passable_root() -> Iterator[Path]:
    """A directory another user may pass through (pytest's own tmp directory is private)."""
    root = Path(tempfile.mkdtemp(prefix="hostcore-secrets-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root)


@pytest.fixture
def grouped(
    settings_factory: Callable[..., Settings], passable_root: Path
) -> Callable[..., Settings]:
    def make(*overrides: str) -> Settings:
        return settings_factory(
            f"data_dir={passable_root / 'data'}",
            'auth.clients.panel.scopes=["probe:read"]',
            'auth.clients.kiosk.scopes=["probe:read"]',
            "auth.clients.kiosk.shared_secret=true",
            *overrides,
        )

    return make


def as_nobody(*argv: str, group: int | None) -> bool:
    """Whether ``argv`` succeeds run as user nobody, in ``group`` (or in no group of ours)."""
    gid = NOBODY if group is None else group
    result = subprocess.run(
        argv,
        user=NOBODY,
        group=gid,
        extra_groups=[gid],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


@needs_root
def test_a_group_member_reads_its_secrets_through_the_default_layout_and_nothing_else(
    serve: Serve, grouped: Callable[..., Settings]
) -> None:
    settings = grouped(f"auth.clients.panel.secret_group={GROUP}", f"auth.secret_group={GROUP}")
    plugin_dir = settings.data_dir / "plugin"
    plugin_dir.mkdir(parents=True, mode=0o755)
    (plugin_dir / "state.json").write_text("{}")
    serve(settings)
    gid = grp.getgrnam(GROUP).gr_gid
    data = settings.data_dir
    panel, shared = settings.hmac_secret_path("panel"), settings.hmac_secret_path("kiosk")
    tester = settings.hmac_secret_path("tester")

    for secret in (panel, shared):
        assert as_nobody("cat", str(secret), group=gid), secret
        assert (mode(secret), secret.stat().st_gid) == (0o640, gid)
        assert not as_nobody("cat", str(secret), group=None), "outside the group"
    for private in (tester, data / "hostcore.db", data / "master.key", plugin_dir / "state.json"):
        assert not as_nobody("cat", str(private), group=gid), private
    for directory in (data, data / "secrets"):
        assert not as_nobody("ls", str(directory), group=gid), "passable, never listable"
        assert mode(directory) == 0o711


@needs_root
def test_the_groups_follow_the_configuration_at_every_start(
    serve: Serve, grouped: Callable[..., Settings]
) -> None:
    gid = grp.getgrnam(GROUP).gr_gid
    before = grouped()
    serve(before)
    panel = before.hmac_secret_path("panel")
    secret = signing.read_secret(panel)
    assert not as_nobody("cat", str(panel), group=gid)

    serve(grouped(f"auth.clients.panel.secret_group={GROUP}"))
    assert as_nobody("cat", str(panel), group=gid)
    assert signing.read_secret(panel) == secret, "the same secret, newly readable"

    serve(grouped())
    assert not as_nobody("cat", str(panel), group=gid)
    assert mode(before.data_dir) == 0o700 and mode(before.data_dir / "secrets") == 0o700
    assert mode(panel) == 0o600


# --- each client signs with its own file ----------------------------------------------


def test_client_with_a_secret_file_is_not_signed_by_another_clients_secret(
    serve: Serve, settings_factory: Callable[..., Settings], tmp_path: Any
) -> None:
    own = tmp_path / "deployer.secret"
    own.write_text("d" * 64 + "\n")
    own.chmod(0o600)
    client = serve(
        settings_factory(
            'auth.clients.deployer.scopes=["probe:read"]',
            f"auth.clients.deployer.secret_file={own}",
        )
    )
    others = signed(client, "GET", WHOAMI, name="deployer", secret=hmac_secret(client))
    assert_error(client.get(WHOAMI, headers=others), 401, "Unauthorized", "invalid")
    mine = signed(client, "GET", WHOAMI, name="deployer", secret=b"d" * 64)
    assert client.get(WHOAMI, headers=mine).json()["subject"] == "client:deployer"

"""``hostcore deploy``: printing, writing, refusing to overwrite, the certificate's modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner, Result

from hostcore.deploy.cli import deploy_app


@pytest.fixture(autouse=True)
def no_local_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ./hostcore.toml and no HOSTCORE_* from the caller reach the command."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("HOSTCORE_")]:
        monkeypatch.delenv(name)


def deploy(*args: str) -> Result:
    return CliRunner().invoke(deploy_app, list(args))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_prints_the_files_by_default_and_writes_nothing(tmp_path: Path) -> None:
    result = deploy("all", "--set", "server.max_body_bytes=65536")
    assert result.exit_code == 0, result.output
    for path in (
        "/etc/systemd/system/hostcore.service",
        "/etc/sysusers.d/hostcore.conf",
        "/etc/nginx/sites-available/hostcore",
        "/etc/polkit-1/rules.d/50-hostcore.rules",
        "/etc/logrotate.d/hostcore",
    ):
        assert f"==> {path} <==" in result.stdout
    assert "client_max_body_size 65536;" in result.stdout
    assert "--write makes the self-signed certificate" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_write_puts_each_file_at_its_real_path_world_readable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = deploy("systemd", "--write", str(root))
    assert result.exit_code == 0, result.output
    unit = root / "etc/systemd/system/hostcore.service"
    assert "ExecStart=" in unit.read_text()
    assert mode(unit) == 0o644
    assert mode(root / "etc/sysusers.d/hostcore.conf") == 0o644
    assert f"wrote {unit}" in result.stdout


def test_an_existing_file_is_refused_without_force_and_nothing_is_written(tmp_path: Path) -> None:
    root = tmp_path / "root"
    unit = root / "etc/systemd/system/hostcore.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("mine\n")
    result = deploy("systemd", "--write", str(root))
    assert result.exit_code == 2
    assert str(unit) in result.stderr and "--force" in result.stderr
    assert unit.read_text() == "mine\n"
    assert not (root / "etc/sysusers.d").exists()
    result = deploy("systemd", "--write", str(root), "--force")
    assert result.exit_code == 0, result.output
    assert unit.read_text().startswith("# hostcore's service")


def test_the_first_write_makes_a_self_signed_pair_with_a_private_key(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = deploy("nginx", "--write", str(root))
    assert result.exit_code == 0, result.output
    cert = root / "etc/ssl/certs/hostcore.crt"
    key = root / "etc/ssl/private/hostcore.key"
    assert mode(key) == 0o600
    assert mode(key.parent) == 0o700
    assert mode(cert) == 0o644
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    assert certificate.issuer == certificate.subject
    site = (root / "etc/nginx/sites-available/hostcore").read_text()
    assert "ssl_certificate /etc/ssl/certs/hostcore.crt;" in site
    assert "ssl_certificate_key /etc/ssl/private/hostcore.key;" in site

    # Later writes keep the pair (clients may trust it), even with --force.
    before = key.read_bytes()
    result = deploy("nginx", "--write", str(root), "--force")
    assert result.exit_code == 0, result.output
    assert key.read_bytes() == before
    assert "kept the certificate" in result.stdout


def test_given_certificate_is_used_and_none_is_made(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = deploy(
        "nginx", "--write", str(root), "--cert", "/etc/tls/a.pem", "--key", "/etc/tls/a.key"
    )
    assert result.exit_code == 0, result.output
    assert (
        "ssl_certificate_key /etc/tls/a.key;"
        in (root / "etc/nginx/sites-available/hostcore").read_text()
    )
    assert not (root / "etc/ssl").exists()


@pytest.mark.parametrize(
    "args",
    [("--cert", "/etc/tls/a.pem"), ("--cert", "a.pem", "--key", "/etc/tls/a.key")],
    ids=["cert-without-key", "relative"],
)
def test_a_certificate_option_mistake_is_a_usage_error(args: tuple[str, ...]) -> None:
    result = deploy("nginx", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("hostcore: --")


def test_a_half_pair_on_the_target_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    key = root / "etc/ssl/private/hostcore.key"
    key.parent.mkdir(parents=True)
    key.write_text("old")
    result = deploy("nginx", "--write", str(root))
    assert result.exit_code == 2
    assert "hostcore.crt does not" in result.stderr
    assert not (root / "etc/nginx").exists()


def test_capabilities_follow_the_configured_plugins() -> None:
    without = deploy("systemd", "--set", "plugins.disabled=network,wifi")
    assert "CapabilityBoundingSet=\n" in without.stdout
    assert "CAP_NET_ADMIN" not in without.stdout
    with_wifi = deploy("systemd", "--set", "plugins.enabled=auth,wifi")
    assert "AmbientCapabilities=CAP_NET_ADMIN\n" in with_wifi.stdout


def test_an_invalid_configuration_is_one_line(tmp_path: Path) -> None:
    result = deploy("polkit", "--set", "plugins.system.allowed_units=not-a-unit")
    assert result.exit_code == 2
    assert result.stderr.startswith("hostcore: invalid configuration")

"""``hostcore deploy systemd|nginx|polkit|logrotate|all [--write DIR] [--force]``.

Each command renders its files from the effective configuration and prints them;
``--write DIR`` writes them under DIR at their real paths (``--write /`` installs
them), refusing to replace a file without ``--force``. nginx's self-signed
certificate is made only by ``--write``, once: a key pair found there is kept, even
with ``--force`` (clients may trust it; delete both files to get a new one).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from hostcore.cli_support import RUNTIME_ERROR, ConfigOption, SetOption, fail, load_or_exit
from hostcore.config import Settings
from hostcore.deploy.logrotate import DEBUG_TIMER, render_logrotate
from hostcore.deploy.model import PRODUCTION_DIRS, Target, deployment
from hostcore.deploy.nginx import ENABLED_LINK, SITE_FILE, render_nginx
from hostcore.deploy.output import PRIVATE_FILE, Exists, Planned, as_text, planned, under, write
from hostcore.deploy.polkit import render_polkit
from hostcore.deploy.systemd import SERVICE_UNIT, SYSUSERS_FILE, render_systemd
from hostcore.errors import ConfigError

Renderer = Callable[[Settings, Target], dict[Path, str]]

deploy_app = typer.Typer(
    help="Render the production files (systemd, nginx, polkit, logrotate) from the "
    "effective configuration: printed, or written with --write DIR.",
    no_args_is_help=True,
)

WriteOption = Annotated[
    Path | None,
    typer.Option(
        "--write",
        help="Write the files under this directory at their real paths (/ installs them).",
        file_okay=False,
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace files that exist.")]
CertOption = Annotated[
    Path | None,
    typer.Option("--cert", help="nginx's certificate (PEM), instead of a self-signed one."),
]
KeyOption = Annotated[Path | None, typer.Option("--key", help="The private key of --cert (PEM).")]
ServerNameOption = Annotated[
    str, typer.Option("--server-name", help="nginx's server_name (default: any name).")
]


def _target(cert: Path | None, key: Path | None, server_name: str) -> Target:
    if (cert is None) != (key is None):
        fail("--cert and --key go together")
    for option, path in (("--cert", cert), ("--key", key)):
        if path is not None and not path.is_absolute():
            fail(f"{option} {path}: give the absolute path nginx reads it from")
    if cert is None or key is None:
        return Target(server_name=server_name)
    return Target(server_name=server_name, cert=cert, key=key)


def _run(
    renderers: list[Renderer],
    config: Path | None,
    overrides: list[str] | None,
    write_to: Path | None,
    force: bool,
    target: Target,
    *,
    own_certificate: bool = False,
) -> None:
    settings = load_or_exit(config, overrides)
    try:
        files: dict[Path, str] = {}
        for render in renderers:
            files.update(render(settings, target))
        deploy = deployment(settings, target)
    except ConfigError as exc:
        fail(str(exc))
    _note_carried_directories(deploy.environment)
    serves_tls = SITE_FILE in files and not own_certificate
    if write_to is None:
        typer.echo(as_text(files), nl=False)
        if serves_tls:
            typer.echo(
                f"hostcore: --write makes the self-signed certificate {target.cert} and its "
                f"key {target.key} (0600) when none is there",
                err=True,
            )
        return
    plan = planned(files)
    if serves_tls:
        plan += _certificate(write_to, target)
    try:
        written = write(write_to, plan, force=force)
    except Exists as exc:
        fail(f"{exc} exist(s): --force replaces them")
    except OSError as exc:
        fail(f"cannot write under {write_to}: {exc}", RUNTIME_ERROR)
    for path in written:
        typer.echo(f"wrote {path}")
    _next_steps(files)


def _certificate(root: Path, target: Target) -> list[Planned]:
    """The self-signed pair to write, or none when both files are there already."""
    cert, key = under(root, target.cert), under(root, target.key)
    if cert.exists() and key.exists():
        typer.echo(f"kept the certificate {cert} and its key {key}")
        return []
    if cert.exists() or key.exists():
        found, missing = (cert, key) if cert.exists() else (key, cert)
        fail(f"{found} exists but {missing} does not: remove it, or give --cert and --key")
    from hostcore.deploy.tls import self_signed  # cryptography: only when a key is made

    certificate, private_key = self_signed(socket.gethostname())
    return [Planned(target.cert, certificate), Planned(target.key, private_key, PRIVATE_FILE)]


def _note_carried_directories(environment: dict[str, str]) -> None:
    carried = [k for k in PRODUCTION_DIRS if f"HOSTCORE_{k.upper()}" in environment]
    if carried:
        lines = ", ".join(f'{k} = "{environment[f"HOSTCORE_{k.upper()}"]}"' for k in carried)
        typer.echo(
            f"hostcore: the unit sets {', '.join(carried)} for the service; put "
            f"{lines} in /etc/hostcore/hostcore.toml too, so that commands run as the "
            "hostcore user (sudo -u hostcore hostcore ...) use the same directories",
            err=True,
        )


def _next_steps(files: dict[Path, str]) -> None:
    """What installs them, once written under /."""
    steps = []
    if SYSUSERS_FILE in files:
        steps.append("systemd-sysusers && systemctl daemon-reload")
    if SITE_FILE in files:
        steps.append(f"ln -sf {SITE_FILE} {ENABLED_LINK} && nginx -t && systemctl reload nginx")
    if DEBUG_TIMER in files:
        steps.append(f"systemctl daemon-reload && systemctl enable --now {DEBUG_TIMER.name}")
    if SERVICE_UNIT in files:
        steps.append(f"systemctl enable --now {SERVICE_UNIT.name}")
    if steps:
        typer.echo("then, on the device: " + "; ".join(steps))


@deploy_app.command()
def systemd(
    config: ConfigOption = None,
    set_: SetOption = None,
    write_to: WriteOption = None,
    force: ForceOption = False,
) -> None:
    """The service unit, its user and groups (sysusers.d), the debug log's tmpfs."""
    _run([render_systemd], config, set_, write_to, force, Target())


@deploy_app.command()
def nginx(
    config: ConfigOption = None,
    set_: SetOption = None,
    write_to: WriteOption = None,
    force: ForceOption = False,
    cert: CertOption = None,
    key: KeyOption = None,
    server_name: ServerNameOption = "_",
) -> None:
    """The nginx site: TLS, HTTP to HTTPS, the unix socket, websocket and SSE."""
    target = _target(cert, key, server_name)
    _run([render_nginx], config, set_, write_to, force, target, own_certificate=cert is not None)


@deploy_app.command()
def polkit(
    config: ConfigOption = None,
    set_: SetOption = None,
    write_to: WriteOption = None,
    force: ForceOption = False,
) -> None:
    """polkit rules: exactly the actions the enabled plugins need."""
    _run([render_polkit], config, set_, write_to, force, Target())


@deploy_app.command()
def logrotate(
    config: ConfigOption = None,
    set_: SetOption = None,
    write_to: WriteOption = None,
    force: ForceOption = False,
) -> None:
    """Rotation of hostcore's logs, matching what its processes do."""
    _run([render_logrotate], config, set_, write_to, force, Target())


@deploy_app.command("all")
def all_(
    config: ConfigOption = None,
    set_: SetOption = None,
    write_to: WriteOption = None,
    force: ForceOption = False,
    cert: CertOption = None,
    key: KeyOption = None,
    server_name: ServerNameOption = "_",
) -> None:
    """Every file: systemd, nginx, polkit and logrotate."""
    target = _target(cert, key, server_name)
    renderers: list[Renderer] = [render_systemd, render_nginx, render_polkit, render_logrotate]
    _run(renderers, config, set_, write_to, force, target, own_certificate=cert is not None)

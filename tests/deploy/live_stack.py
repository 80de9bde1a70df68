"""A deployment as ``hostcore deploy`` renders it, run for real: nginx in front of
``hostcore serve --workers 2`` on a unix socket, hostcore as a non-root user.

What comes from the renderer, unchanged: the nginx site (upstream socket, headers,
TLS settings, body limit, websocket and SSE locations) and its self-signed certificate
(``hostcore deploy nginx --write``), the modes of hostcore's directories (the
``tmpfiles.d`` lines ``hostcore deploy systemd`` renders for directories outside
``/var/lib``, ``/var/log`` and ``/run``) and the service's environment (the unit's
``Environment=`` lines). What the test adapts, and nothing more: the site listens on
free ports of 127.0.0.1 instead of 80 and 443, its certificate and log paths point
into the test's directory, and the unit's ``hostcore`` user is a throwaway system
user. nginx's workers run as Debian's ``www-data``, the group the socket is given
to and the user hostcore trusts by default (``user:www-data``). A second throwaway
user in the ``www-data`` group can reach the socket but is not nginx.

hostcore's user must be able to run the interpreter: ``hostcore serve`` re-executes
it. A venv made from an interpreter under root's home (pyenv) is not; the test then
runs the same packages from a venv on Debian's ``python3`` (CI's own kind of venv)
that adds this venv's ``site-packages``.

Nothing touches a system file besides the two users (``useradd``/``userdel``): every
path is under one temporary directory, every process is stopped by its PID, every
wait is bounded.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from hostcore.deploy.model import WEB_GROUP, WEB_USER
from tests.deploy.tools import require
from tests.helpers import accepts, answers, free_port, hostcore_command, stop_group, wait_for

TIMEOUT_S = 60
START_TIMEOUT_S = 60
SITE = Path("etc/nginx/sites-available/hostcore")
CERT = Path("etc/ssl/certs/hostcore.crt")
KEY = Path("etc/ssl/private/hostcore.key")
RENDERED_USER = "hostcore"
# Everything besides the site: nginx's own files, all under the test's prefix.
NGINX_CONF = """\
# The worker user of Debian's nginx: the socket's group, the user hostcore trusts.
user {user} {group};
worker_processes 2;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{}}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {site};
}}
"""


def require_live() -> None:
    """Skip (fail under CI) without nginx, setpriv, useradd, root or nginx's user."""
    require("nginx", "setpriv", "useradd", "userdel")
    problem = None
    if os.geteuid() != 0:
        problem = "needs root to create the service user and run nginx's workers as www-data"
    else:
        try:
            pwd.getpwnam(WEB_USER)
            grp.getgrnam(WEB_GROUP)
        except KeyError:
            problem = f"no {WEB_USER} user or {WEB_GROUP} group (Debian's base-passwd has them)"
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the live nginx test: {problem}")
    pytest.skip(problem)


def run(
    argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S,
        check=False,
    )  # fmt: skip


def as_user(user: str) -> list[str]:
    """The argv prefix that runs a command as ``user``, with its groups from /etc/group."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]


@contextlib.contextmanager
def system_user(prefix: str, *, home: Path, groups: Sequence[str] = ()) -> Iterator[str]:
    """A throwaway system user with a group of its own, removed (with the group) at the end."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    argv = ["useradd", "--system", "--user-group", "--no-create-home"]
    argv += ["--home-dir", str(home), "--shell", "/usr/sbin/nologin"]
    if groups:
        argv += ["--groups", ",".join(groups)]
    made = run([*argv, name])
    assert made.returncode == 0, made.stderr
    try:
        yield name
    finally:
        run(["userdel", name])
        with contextlib.suppress(KeyError):
            grp.getgrnam(name)
            run(["groupdel", name])


SYSTEM_PYTHON = Path("/usr/bin/python3")


def python_for(user: str, root: Path) -> str:
    """An interpreter ``user`` may execute (and re-execute) with this venv's packages."""
    probe = run([*as_user(user), "/bin/sh", "-c", 'exec "$0" -c ""', sys.executable])
    if probe.returncode == 0:
        return sys.executable
    if not SYSTEM_PYTHON.exists():
        pytest.fail(f"{user} cannot run {sys.executable}, and there is no {SYSTEM_PYTHON}")
    bridge = root / "venv"
    made = run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(bridge)])
    assert made.returncode == 0, made.stderr
    packages = next(Path(p) for p in sys.path if p.endswith("site-packages"))
    (bridge_site,) = bridge.glob("lib/python3*/site-packages")
    (bridge_site / "hostcore-tests.pth").write_text(
        f"import site; site.addsitedir({str(packages)!r})\n"
    )
    return str(bridge / "bin" / "python")


@dataclass(frozen=True)
class Stack:
    root: Path
    service_user: str
    other_user: str
    data_dir: Path
    log_dir: Path
    run_dir: Path
    uds: Path
    env: dict[str, str]
    python: str
    cert: Path
    site: str
    access_log: Path
    http_port: int
    https_port: int
    hostcore: subprocess.Popen[bytes]
    nginx: subprocess.Popen[bytes]

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def as_service(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A ``hostcore`` command run as the service user, with the service's environment."""
        argv = [*as_user(self.service_user), self.python, "-m", "hostcore", *args]
        return run(argv, env=self.env, cwd=self.root)

    def python_as(self, user: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``code`` run by the service's interpreter as ``user``."""
        return run([*as_user(user), self.python, "-c", code, *args], cwd=self.root)


def _deploy_settings(data: Path, log: Path, run_dir: Path) -> list[str]:
    overrides = [f"data_dir={data}", f"log_dir={log}", f"run_dir={run_dir}", "server.workers=2"]
    return [arg for item in overrides for arg in ("--set", item)]


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOSTCORE_")}


def unit_environment(unit_text: str) -> dict[str, str]:
    """The ``Environment=NAME=VALUE`` lines of a rendered unit."""
    found = re.findall(r"^Environment=([A-Z0-9_]+)=(.*)$", unit_text, re.MULTILINE)
    return dict(found)


def make_rendered_directories(tmpfiles: str, user: str, debug_dir: Path) -> None:
    """What ``systemd-tmpfiles --create`` does with the rendered lines (``d PATH MODE
    USER GROUP -``) for the service user, and the debug directory the unit's
    ``ExecStartPre`` makes."""
    lines = [line.split() for line in tmpfiles.splitlines() if line.startswith("d ")]
    assert lines, tmpfiles
    entry = pwd.getpwnam(user)
    for _, path, mode, owner, group, _age in lines:
        assert (owner, group) == (RENDERED_USER, RENDERED_USER), tmpfiles
        _own_directory(Path(path), int(mode, 8), entry)
    _own_directory(debug_dir, 0o700, entry)


def _own_directory(path: Path, mode: int, entry: pwd.struct_passwd) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)


def adapt_site(site: str, render_root: Path, work: Path, http: int, https: int) -> str:
    """The rendered site on 127.0.0.1's free ports, with the test's certificate and log.

    Each replacement must happen exactly as often as the renderer writes the line, so a
    renderer change fails here instead of sending nginx to a system path or port."""
    replacements = [
        ("    listen 80;\n", f"    listen 127.0.0.1:{http};\n", 1),
        ("    listen [::]:80;\n", "", 1),
        ("    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{https} ssl http2;\n", 1),
        ("    listen [::]:443 ssl http2;\n", "", 1),
        (f" /{CERT};", f" {render_root / CERT};", 1),
        (f" /{KEY};", f" {render_root / KEY};", 1),
        (" /var/log/nginx/hostcore.access.log ", f" {work / 'access.log'} ", 2),
    ]
    for old, new, count in replacements:
        assert site.count(old) == count, f"the rendered site changed: {old!r}\n{site}"
        site = site.replace(old, new)
    assert not re.search(r"\s/(etc|var)/", site), site
    return site


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def live_stack() -> Iterator[Stack]:
    """The whole deployment, running; everything stopped and removed afterwards."""
    require_live()
    with contextlib.ExitStack() as cleanup:
        # Not pytest's tmp_path: its parent is root's 0700, which neither hostcore's user
        # nor nginx's workers may search. Search only, and only for nginx's group, of
        # which both are members.
        root = Path(tempfile.mkdtemp(prefix="hostcore-live-nginx-"))
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        os.chown(root, 0, grp.getgrnam(WEB_GROUP).gr_gid)
        root.chmod(0o710)
        data, log, run_dir = root / "data", root / "log", root / "run"
        service = cleanup.enter_context(system_user("hcsvc", home=data, groups=[WEB_GROUP]))
        other = cleanup.enter_context(system_user("hcoth", home=root, groups=[WEB_GROUP]))

        settings = _deploy_settings(data, log, run_dir)
        render = root / "render"
        rendered = run(
            hostcore_command("deploy", "nginx", "--write", str(render), *settings),
            env=_clean_environ(),
            cwd=root,
        )
        assert rendered.returncode == 0, rendered.stderr
        unit = run(hostcore_command("deploy", "systemd", *settings), env=_clean_environ(), cwd=root)
        assert unit.returncode == 0, unit.stderr
        unit_text, _, rest = unit.stdout.partition("==> /etc/tmpfiles.d/hostcore.conf <==\n")
        tmpfiles = rest.split("==> ", 1)[0]
        make_rendered_directories(tmpfiles, service, log / "debug")

        env = {
            **_clean_environ(),
            **unit_environment(unit_text),
            "HOME": str(data),
            "HOSTCORE_AUTH__CLIENTS__TESTER__SCOPES": '["*"]',
        }
        socket_path = Path(env["HOSTCORE_SERVER__UDS"])
        python = python_for(service, root)
        serve = [python, "-m", "hostcore", "serve", "--workers", "2", "--uds", str(socket_path)]
        with (root / "hostcore.out").open("wb") as out:
            hostcore = subprocess.Popen(
                [*as_user(service), *serve],
                env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, umask=0o077,  # the unit's UMask=
            )  # fmt: skip
        cleanup.callback(stop_group, hostcore)
        wait_for(
            lambda: _answers(socket_path) or hostcore.poll() is not None,
            START_TIMEOUT_S,
            "hostcore's workers to answer on the socket",
        )
        assert hostcore.poll() is None, _tail(root / "hostcore.out")

        nginx_dir = root / "nginx"
        nginx_dir.mkdir(mode=0o750)
        os.chown(nginx_dir, 0, grp.getgrnam(WEB_GROUP).gr_gid)
        http_port, https_port = free_port(), free_port()
        site_text = adapt_site(
            (render / SITE).read_text(), render, nginx_dir, http_port, https_port
        )
        site = nginx_dir / "site.conf"
        site.write_text(site_text)
        conf = nginx_dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user=WEB_USER, group=WEB_GROUP, d=nginx_dir, site=site))
        nginx_argv = ["nginx", "-p", f"{nginx_dir}/", "-c", str(conf), "-e", str(nginx_dir / "e")]
        checked = run([*nginx_argv, "-t"])
        assert checked.returncode == 0, checked.stderr
        with (root / "nginx.out").open("wb") as out:
            nginx = subprocess.Popen(
                nginx_argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        cleanup.callback(stop_group, nginx)
        wait_for(
            lambda: _listening(https_port) or nginx.poll() is not None,
            START_TIMEOUT_S,
            "nginx to listen",
        )
        assert nginx.poll() is None, _tail(root / "nginx.out") + _tail(nginx_dir / "error.log")

        yield Stack(
            root=root,
            service_user=service,
            other_user=other,
            data_dir=data,
            log_dir=log,
            run_dir=run_dir,
            uds=socket_path,
            env=env,
            python=python,
            cert=render / CERT,
            site=site_text,
            access_log=nginx_dir / "access.log",
            http_port=http_port,
            https_port=https_port,
            hostcore=hostcore,
            nginx=nginx,
        )


def _answers(path: Path) -> bool:
    if not accepts(path):
        return False
    transport = httpx2.HTTPTransport(uds=str(path))
    with httpx2.Client(transport=transport, base_url="http://hostcore", timeout=5) as http:
        return answers(http, "/api/v1/health")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0

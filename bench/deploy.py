"""Requests/s through nginx to hostcore's unix socket against straight to the socket (issue 14).

One ``hostcore serve --workers 2 --uds SOCKET`` (what the unit runs), one nginx with the
site ``hostcore deploy nginx`` renders (TLS, the upstream on the socket with keep-alive,
X-Forwarded-For trusted from nginx's workers by their uid), on a free port of 127.0.0.1.
Both targets load the same server in the same run, with the same wrk, request and bearer
token (``GET /api/v1/auth/whoami``: admission, a response model, the activity record):

- ``nginx``: ``wrk https://127.0.0.1:PORT/...``, TLS and HTTP/1.1 keep-alive to nginx,
  then nginx's keep-alive connections to the socket: what a client on the network gets;
- ``socket``: wrk straight to the socket. wrk speaks TCP only, so a small ``connect()``
  shim (C, compiled here with ``cc`` into the work directory, loaded with LD_PRELOAD into
  wrk alone) turns wrk's connection to one reserved port into a connection to the socket:
  no process in between, nothing else of wrk changed. A TCP forwarder (socat) would add
  a hop of its own, and a second hostcore on TCP would be another server and transport.

Where the processes run (``--cpus``):

- ``split`` (the default): hostcore's master and workers on the upper half of the CPUs
  this process may use, wrk and nginx on the lower half (``taskset``). What the target
  asks is what nginx costs hostcore's capacity, and on a device the client is on the
  network and nginx has cores hostcore's workers leave it (a Pi has four); both targets
  give hostcore the same CPUs, so the ratio is hostcore's throughput with nginx in front
  against without. Needs two CPUs.
- ``shared``: every process on every CPU. On two CPUs wrk's TLS, nginx and hostcore
  then take turns on the same cores, and the ratio mostly says how the three share them
  (the per-request CPU figures say what each costs).

Interleaved rounds with a rotating order, medians. CPU per request is each process
tree's (hostcore's master and workers; nginx's master and workers) over the wrk run.
The gate:

- median nginx req/s / median socket req/s >= --min-ratio (0.8), and no wrk errors;
- with ``split``, also nginx's CPU per request <= --max-nginx-cpu (0.5) x hostcore's
  straight to the socket. Split keeps nginx's cost off hostcore's cores, so the ratio
  alone would not see nginx grow dearer until its cores ran out; this bound says nginx
  keeps up with hostcore's saturated workers on as many cores of its own with half of
  them to spare (``workers = 2`` on a 4-core Pi, as docs/deploy.md sets it).

Also reported, not gated: the CPU ratio, hostcore's CPU per request straight to the
socket over hostcore's and nginx's together behind nginx: the request rate ratio of a
device whose every core is busy with these two.

    .venv/bin/python bench/deploy.py [--rounds 5] [--duration 5] [--cpus split|shared] [--json]

Needs nginx (Debian: nginx), wrk, cc and taskset (util-linux). Run as root, nginx's
workers run as www-data and the socket is given to its group, as deployed; otherwise both
run as the caller. Exit status: 0 PASS, 1 FAIL, 2 could not run, 130 interrupted.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _load import (
    COUNT_SENT_ARGS,
    LOOPBACK,
    PYTHON,
    UNREACHED_RATE_LIMIT,
    BenchError,
    Measurement,
    ServerGroup,
    ServerSpec,
    Workdir,
    add_load_options,
    base_environment,
    check_load_options,
    client_env,
    free_port,
    header_args,
    issue_token,
    median,
    parse_sent,
    report,
    rotated,
    rounds_json,
    run_wrk,
    say,
    start_and_run,
    summarize_target,
    target_table,
)

NGINX = "nginx"
SOCKET = "socket"
SPLIT, SHARED = "split", "shared"
TARGETS = (NGINX, SOCKET)
PATH = "/api/v1/auth/whoami"
CLIENT = "bench"
WEB_USER = "www-data"  # Debian nginx's worker user (hostcore.deploy.model.WEB_USER)
READY_POLL_S = 0.1

# wrk's connect() to 127.0.0.1:REDIRECT_PORT goes to the unix socket REDIRECT_PATH instead.
SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = dlsym(RTLD_NEXT, "connect");
    const char *port = getenv("REDIRECT_PORT"), *path = getenv("REDIRECT_PATH");
    if (addr->sa_family == AF_INET && port && path &&
        ntohs(((const struct sockaddr_in *)addr)->sin_port) == atoi(port)) {
        int unix_fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (unix_fd < 0) return -1;
        fcntl(unix_fd, F_SETFL, fcntl(fd, F_GETFL));
        if (dup2(unix_fd, fd) < 0) { close(unix_fd); return -1; }
        close(unix_fd);
        struct sockaddr_un to = {.sun_family = AF_UNIX};
        strncpy(to.sun_path, path, sizeof to.sun_path - 1);
        return real(fd, (const struct sockaddr *)&to, sizeof to);
    }
    return real(fd, addr, len);
}
"""

NGINX_CONF = """\
{user}worker_processes auto;
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


@dataclass(frozen=True)
class Options:
    rounds: int
    duration: int
    warmup: int
    connections: int
    threads: int
    min_ratio: float
    ready_timeout: float
    keep_workdir: bool
    as_json: bool
    max_nginx_cpu: float
    cpus: str


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Requests/s through nginx (the rendered site, TLS) to hostcore's unix "
        "socket against straight to the socket, same server, same run."
    )
    add_load_options(
        parser,
        per="target",
        min_ratio=0.8,
        ratio_help="fail when median nginx req/s / median socket req/s is below this",
    )
    parser.add_argument(
        "--max-nginx-cpu",
        type=float,
        default=0.5,
        help="with --cpus split, fail when nginx's CPU per request is above this fraction of "
        "hostcore's straight to the socket (default 0.5)",
    )
    parser.add_argument(
        "--cpus",
        choices=(SPLIT, SHARED),
        default=SPLIT,
        help="split: hostcore on half the CPUs, wrk and nginx on the other half (default); "
        "shared: every process on every CPU",
    )
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    return Options(**vars(args))


@dataclass(frozen=True)
class Placement:
    """Which CPUs hostcore's tree, and wrk with nginx, run on (None: wherever)."""

    server: tuple[int, ...] | None
    client: tuple[int, ...] | None

    @classmethod
    def of(cls, mode: str) -> Placement:
        if mode == SHARED:
            return cls(None, None)
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            raise BenchError(f"--cpus split needs two CPUs, this process has {len(allowed)}")
        if shutil.which("taskset") is None:
            raise BenchError("no taskset to place the processes: apt-get install util-linux")
        half = len(allowed) // 2
        return cls(tuple(allowed[half:]), tuple(allowed[:half]))

    def server_argv(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        return _pinned(self.server, argv)

    def client_argv(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        return _pinned(self.client, argv)

    def describe(self) -> str:
        if self.server is None or self.client is None:
            return "shared: every process on every CPU"
        return (
            f"split: hostcore on CPU {_cpu_list(self.server)}, "
            f"wrk and nginx on CPU {_cpu_list(self.client)}"
        )


def _cpu_list(cpus: tuple[int, ...]) -> str:
    return ",".join(map(str, cpus))


def _pinned(cpus: tuple[int, ...] | None, argv: tuple[str, ...]) -> tuple[str, ...]:
    return argv if cpus is None else ("taskset", "--cpu-list", _cpu_list(cpus), *argv)


# --- the pieces ---------------------------------------------------------------------------


def build_shim(work: Path) -> Path:
    compiler = shutil.which("cc")
    if compiler is None:
        raise BenchError("no C compiler (cc) for wrk's unix-socket shim: apt-get install gcc")
    source, library = work / "wrk_to_unix.c", work / "wrk_to_unix.so"
    source.write_text(SHIM_SOURCE)
    done = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"compiling the shim failed: {done.stderr.strip()}")
    return library


def web_identity() -> tuple[str, int, str]:
    """(nginx.conf's user line, the workers' uid, the socket's group)."""
    if os.geteuid() != 0:
        return "", os.getuid(), grp.getgrgid(os.getgid()).gr_name
    try:
        entry = pwd.getpwnam(WEB_USER)
    except KeyError:
        raise BenchError(f"no {WEB_USER} user to run nginx's workers as") from None
    group = grp.getgrgid(entry.pw_gid).gr_name
    return f"user {WEB_USER} {group};\n", entry.pw_uid, group


def hostcore_spec(
    home: Path, sock: Path, web_uid: int, web_group: str, placement: Placement
) -> ServerSpec:
    for sub in ("data", "log", "run"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = base_environment()
    env.update(
        {
            "HOSTCORE_DATA_DIR": str(home / "data"),
            "HOSTCORE_LOG_DIR": str(home / "log"),
            "HOSTCORE_RUN_DIR": str(home / "run"),
            "HOSTCORE_SERVER__UDS_GROUP": web_group,
            "HOSTCORE_SERVER__TRUSTED_PROXIES": f"uid:{web_uid}",
            "HOSTCORE_RATELIMIT__DEFAULT": UNREACHED_RATE_LIMIT,
            **client_env(CLIENT, ["*"]),
        }
    )
    argv = (PYTHON, "-m", "hostcore", "serve", "--workers", "2", "--uds", str(sock))
    return ServerSpec("hostcore", placement.server_argv(argv), 0, home, env, " ".join(argv[1:]))


def nginx_spec(
    work: Path, sock: Path, port: int, user_line: str, placement: Placement
) -> tuple[ServerSpec, str]:
    """nginx with the rendered site, its TLS on ``port`` and port 80's redirect on another."""
    from hostcore.config import load_settings
    from hostcore.deploy.model import Target
    from hostcore.deploy.nginx import SITE_FILE, render_nginx
    from hostcore.deploy.tls import self_signed

    home = work / "nginx"
    home.mkdir(mode=0o711)
    cert, key = self_signed("device")
    (home / "cert.pem").write_bytes(cert)
    (home / "key.pem").write_bytes(key)
    (home / "key.pem").chmod(0o600)
    nowhere = Path("/nonexistent/hostcore.toml")
    settings = load_settings(
        overrides=[f"server.uds={sock}"], environ={}, system_config=nowhere, local_config=nowhere
    )
    target = Target(cert=home / "cert.pem", key=home / "key.pem", access_log=home / "access.log")
    site = render_nginx(settings, target)[SITE_FILE]
    for old, new in [
        ("listen 80;", f"listen {LOOPBACK}:{free_port()};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl http2;", f"listen {LOOPBACK}:{port} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),
    ]:
        if site.count(old) != 1:
            raise BenchError(f"the rendered site has changed ({old!r} not found once)")
        site = site.replace(old, new)
    (home / "site.conf").write_text(site)
    conf = home / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user_line, d=home, site=home / "site.conf"))
    argv = ("nginx", "-p", f"{home}/", "-c", str(conf), "-e", str(home / "error.log"))
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30, check=False)
    if checked.returncode != 0:
        raise BenchError(f"nginx -t failed: {checked.stderr.strip()}")
    description = "nginx (worker_processes auto) with the site `hostcore deploy nginx` renders"
    pinned = placement.client_argv(argv)
    return ServerSpec(NGINX, pinned, port, work, base_environment(), description), site


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in the process group ``pgid``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5, pgrp
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_until(check: Any, timeout_s: float, what: str, servers: ServerGroup) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for server in servers:
            if not server.alive():
                raise BenchError(f"{server.name} exited:\n{server.log_tail()}")
        if check():
            return
        time.sleep(READY_POLL_S)
    raise BenchError(f"timed out after {timeout_s:g}s waiting for {what}")


def answers_on_socket(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(sock))
            probe.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            return probe.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((LOOPBACK, port)) == 0


# --- the run ------------------------------------------------------------------------------


def run(opts: Options) -> dict[str, Any]:
    progress = opts.as_json
    user_line, web_uid, web_group = web_identity()
    placement = Placement.of(opts.cpus)
    with Workdir(keep=opts.keep_workdir) as work, ServerGroup(work.path) as group:
        if os.geteuid() == 0:
            work.path.chmod(0o711)  # nginx's workers (www-data) reach the socket through it
        shim = build_shim(work.path)
        sock = work.path / "hostcore" / "run" / "hostcore.sock"
        core_spec = hostcore_spec(work.path / "hostcore", sock, web_uid, web_group, placement)
        core = group.start(core_spec)
        wait_until(lambda: answers_on_socket(sock), opts.ready_timeout, "hostcore", group)
        port = free_port()
        web_spec, _site = nginx_spec(work.path, sock, port, user_line, placement)
        web = group.start(web_spec)
        wait_until(lambda: listening(port), opts.ready_timeout, "nginx", group)
        token = issue_token(core_spec, CLIENT)

        redirect_port = free_port()  # nothing listens on it: only the shim's connections
        urls = {
            NGINX: f"https://{LOOPBACK}:{port}{PATH}",
            SOCKET: f"http://{LOOPBACK}:{redirect_port}{PATH}",
        }
        envs = {
            NGINX: base_environment(),
            SOCKET: {
                **base_environment(),
                "LD_PRELOAD": str(shim),
                "REDIRECT_PORT": str(redirect_port),
                "REDIRECT_PATH": str(sock),
            },
        }

        def load(name: str, duration_s: int) -> tuple[Measurement, dict[str, float]]:
            before = {t: group_cpu_seconds(s.pid) for t, s in (("hostcore", core), (NGINX, web))}
            result = run_wrk(
                urls[name],
                duration_s=duration_s,
                connections=opts.connections,
                threads=opts.threads,
                extra_args=[*header_args({"Authorization": f"Bearer {token}"}), *COUNT_SENT_ARGS],
                env=envs[name],
                prefix=placement.client_argv(()),
            )
            after = {t: group_cpu_seconds(s.pid) for t, s in (("hostcore", core), (NGINX, web))}
            cpu = {t: after[t] - before[t] for t in before}
            return Measurement(name, result, cpu["hostcore"] + cpu[NGINX]), cpu

        # Both targets answer the same caller, once, before the load (wrk counts non-2xx).
        for name in TARGETS:
            check, _ = load(name, 1)
            if check.result.errors or check.result.requests == 0:
                raise BenchError(f"{name}: {check.result.error_summary()}\n{check.result.raw}")
        say(
            f"servers ready: hostcore (pid {core.pid}, {sock}), nginx (pid {web.pid}, "
            f"port {port}); both answer {PATH} with the token",
            to_stderr=progress,
        )
        warmups: dict[str, Measurement] = {}
        if opts.warmup > 0:
            for name in TARGETS:
                warmups[name] = load(name, opts.warmup)[0]
        rounds: list[dict[str, Measurement]] = []
        cpu_split: list[dict[str, dict[str, float]]] = []
        orders: list[list[str]] = []
        for index in range(opts.rounds):
            order = rotated(list(TARGETS), index)
            orders.append(order)
            row: dict[str, Measurement] = {}
            split: dict[str, dict[str, float]] = {}
            for name in order:
                row[name], split[name] = load(name, opts.duration)
            rounds.append(row)
            cpu_split.append(split)
            say(
                f"round {index + 1}/{opts.rounds}: "
                + ", ".join(f"{n} {row[n].result.requests_per_s:.0f} req/s" for n in order),
                to_stderr=progress,
            )
        sent = {n: sum(parse_sent(row[n].result.raw) for row in rounds) for n in TARGETS}
        workdir = str(work.path) if opts.keep_workdir else None
    return {
        "targets": list(TARGETS),
        "urls": urls,
        "pids": {"hostcore": core.pid, NGINX: web.pid},
        "commands": {"hostcore": core_spec.description, NGINX: web_spec.description},
        "nginx_user": user_line.strip() or "(the caller)",
        "placement": placement.describe(),
        "warmups": warmups,
        "rounds": rounds,
        "cpu_split": cpu_split,
        "orders": orders,
        "sent": sent,
        "workdir": workdir,
    }


# --- report -------------------------------------------------------------------------------


def summarize(opts: Options, raw: dict[str, Any]) -> dict[str, Any]:
    rounds: list[dict[str, Measurement]] = raw["rounds"]
    per = {name: summarize_target([row[name] for row in rounds]) for name in TARGETS}
    ratio = per[NGINX]["requests_per_s_median"] / per[SOCKET]["requests_per_s_median"]
    paired = median(
        [r[NGINX].result.requests_per_s / r[SOCKET].result.requests_per_s for r in rounds]
    )
    split = {
        name: {
            part: median(
                [s[name][part] / r[name].result.requests * 1e6 for s, r in zip(
                    raw["cpu_split"], rounds, strict=True)]
            )
            for part in ("hostcore", NGINX)
        }
        for name in TARGETS
    }  # fmt: skip
    errors = sum(per[name]["errors"] for name in TARGETS)
    direct_cpu = split[SOCKET]["hostcore"]
    nginx_share = split[NGINX][NGINX] / direct_cpu
    cpu_ratio = direct_cpu / (split[NGINX]["hostcore"] + split[NGINX][NGINX])
    nginx_ok = opts.cpus != SPLIT or nginx_share <= opts.max_nginx_cpu
    return {
        "per_target": per,
        "ratio": ratio,
        "paired_ratio_median": paired,
        "cpu_us_per_request_by_tree": split,
        "nginx_cpu_share": nginx_share,
        "cpu_ratio": cpu_ratio,
        "errors": errors,
        "pass": ratio >= opts.min_ratio and nginx_ok and errors == 0,
    }


def verdict_line(opts: Options, summary: dict[str, Any]) -> str:
    per = summary["per_target"]
    outcome = "PASS" if summary["pass"] else "FAIL"
    if summary["errors"]:
        outcome += " (wrk saw errors)"
    nginx_cpu = f"nginx cpu/request {summary['nginx_cpu_share']:.2f} x hostcore's"
    if opts.cpus == SPLIT:
        nginx_cpu += f" (limit {opts.max_nginx_cpu:.2f})"
    return (
        f"deploy ({opts.cpus}): socket {per[SOCKET]['requests_per_s_median']:.0f} req/s, nginx "
        f"{per[NGINX]['requests_per_s_median']:.0f} req/s, ratio {summary['ratio']:.3f} "
        f"(target >= {opts.min_ratio:.2f}); {nginx_cpu}; cpu ratio "
        f"{summary['cpu_ratio']:.3f} (not gated): {outcome}"
    )


def report_text(
    opts: Options, raw: dict[str, Any], summary: dict[str, Any], host: dict[str, Any]
) -> str:
    lines = [
        "",
        "through nginx (rendered site, TLS) to hostcore's unix socket vs straight to the socket",
        f"  route: GET {PATH} with a bearer token (client {CLIENT}), same server, same run",
        f"  load: wrk --threads={opts.threads} --connections={opts.connections} "
        f"--duration={opts.duration}s --latency --header 'Authorization: Bearer <token>' "
        f"--script count_sent.lua; {opts.rounds} interleaved rounds (order rotates), "
        f"{opts.warmup}s warm-up per target",
        f"  host: {host['cpus']} CPUs, load average {host['loadavg_start']} at start, "
        f"{host['loadavg_end']} at end",
        f"  cpus: {raw['placement']}",
        f"  hostcore: pid {raw['pids']['hostcore']}, {raw['commands']['hostcore']}",
        f"  nginx: pid {raw['pids'][NGINX]}, {raw['commands'][NGINX]}; {raw['nginx_user']}",
        f"  targets: nginx {raw['urls'][NGINX]}; socket: wrk with a connect() shim "
        "(LD_PRELOAD) that sends its connections to the socket",
        "",
    ]
    header = f"{'round':<7}{'socket req/s':>14}{'nginx req/s':>14}{'ratio':>8}"
    lines += [header, "-" * len(header)]
    for index, row in enumerate(raw["rounds"]):
        direct, proxied = row[SOCKET].result.requests_per_s, row[NGINX].result.requests_per_s
        lines.append(f"{index + 1:<7}{direct:>14.0f}{proxied:>14.0f}{proxied / direct:>8.3f}")
    per = summary["per_target"]
    lines += [
        "-" * len(header),
        f"{'median':<7}{per[SOCKET]['requests_per_s_median']:>14.0f}"
        f"{per[NGINX]['requests_per_s_median']:>14.0f}{summary['ratio']:>8.3f}",
        f"(median row = ratio of medians; median of per-round ratios "
        f"{summary['paired_ratio_median']:.3f})",
        "",
        *target_table(per, list(TARGETS), label="target", width=10),
        "(cpu = hostcore's and nginx's process trees together, per request: "
        + "; ".join(
            f"{name}: hostcore {s['hostcore']:.1f} us + nginx {s[NGINX]:.1f} us"
            for name, s in summary["cpu_us_per_request_by_tree"].items()
        )
        + ")",
        "requests sent (count_sent.lua): " + ", ".join(f"{n} {c}" for n, c in raw["sent"].items()),
    ]
    if raw["workdir"]:
        lines.append(f"logs kept in {raw['workdir']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if shutil.which("nginx") is None:
        say("deploy: nginx not found on PATH: apt-get install nginx", to_stderr=True)
        return 2
    outcome = start_and_run("deploy", lambda: run(opts), stopped="servers stopped")
    if isinstance(outcome, int):
        return outcome
    raw, host = outcome
    summary = summarize(opts, raw)
    verdict = verdict_line(opts, summary)
    document = {
        "benchmark": "deploy",
        "path": PATH,
        "options": {**vars(opts)},
        "host": host,
        "servers": raw["commands"],
        "placement": raw["placement"],
        "urls": raw["urls"],
        "warmups": {n: m.to_json() for n, m in raw["warmups"].items()},
        "rounds": rounds_json(raw),
        "requests_sent": raw["sent"],
        **summary,
        "summary": verdict,
    }
    report(opts.as_json, document, lambda: report_text(opts, raw, summary, host), verdict)
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

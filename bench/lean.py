"""How light hostcore is: start-up of the command line, idle memory and idle CPU.

Each figure is measured beside its baseline in the same run (this machine is shared
and noisy; ratios travel, absolute numbers do not):

- ``hostcore version`` and ``hostcore --help`` against ``python -c "import fastapi"``:
  median wall time of ``--repeat`` runs each, interleaved (targets 0.5 and 1.0);
- idle RSS and PSS of ``hostcore serve`` (one process, its store migrated beforehand
  as on a device) after ``--settle`` seconds: with the plugins issue 9 measured (the
  network and Wi-Fi plugins disabled) against ``bench/libs_app.py`` (the libraries,
  + 6 MiB), and what the later built-ins add at idle against that server (2 MiB
  each: network, issue 11; Wi-Fi, issue 12);
- RSS and idle CPU after one ``GET /api/v1/network/interfaces``, which loads pyroute2
  and subscribes to the kernel's link notifications (+14 MiB, 0.25 % of a core);
- idle CPU of the same servers over ``--idle`` seconds with nobody calling them
  (target: 0.25 % of a core).

Servers listen on 127.0.0.1 only and are stopped by PID when the script ends.

    .venv/bin/python bench/lean.py                 # defaults: 5 runs, 10 s settle, 60 s idle
    .venv/bin/python bench/lean.py --idle 20 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from _load import (
    PYTHON,
    BenchError,
    ServerGroup,
    ServerSpec,
    Workdir,
    bare_spec,
    base_environment,
    client_env,
    fetch,
    free_port,
    hostcore_spec,
    issue_token,
    stop_on_sigterm,
    wait_ready,
)

MIB = 1024 * 1024
# The issue's budget: what hostcore itself may add to the libraries it needs (libs_app.py,
# served by uvicorn as hostcore is), and its absolute figure, measured with the libraries
# imported but no server running (79 + 6 MiB).
OWN_MIB = 6.0
# What a built-in added after issue 9 may add at idle (its modules, models and routes;
# never its heavy libraries, loaded on first use), and after its first request.
LATER_BUILTINS = ("network", "wifi", "bluetooth")  # issues 11, 12 and 13
LATER_IDLE_MIB = 2.0  # each
NETWORK_USED_MIB = 14.0
NETWORK_PATH = "/api/v1/network/interfaces"
ISSUE_RSS_MIB = 85.0
WORKERS_RATIO = 1.6
IDLE_CPU = 0.25
POLLED_CPU = 1.0
POLL_CLIENT = "leanpoll"
STATS_PATH = "/api/v1/system/stats"
VENV_BIN = Path(PYTHON).parent


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    baseline_name: str
    baseline: float
    unit: str
    target: str
    passed: bool

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{self.name:<32} {self.value:>9.3f} {self.unit:<6} "
            f"{self.baseline_name:<28} {self.baseline:>9.3f} {self.unit:<6} "
            f"{self.target:<24} {verdict}"
        )


def _wall_time(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=True, timeout=60)
    return time.perf_counter() - started


def startup(work: Path, repeat: int) -> list[Figure]:
    """Median wall times, the three commands interleaved run by run."""
    env = base_environment()
    for sub in ("data", "log", "run"):
        (work / "cli" / sub).mkdir(parents=True, exist_ok=True)
        env[f"HOSTCORE_{sub.upper()}_DIR"] = str(work / "cli" / sub)
    hostcore = str(VENV_BIN / "hostcore")
    commands = {
        "import fastapi": [PYTHON, "-c", "import fastapi"],
        "hostcore version": [hostcore, "version"],
        "hostcore --help": [hostcore, "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():  # a first run of each fills the page cache
        _wall_time(argv, work, env)
    for _ in range(repeat):
        for name, argv in commands.items():
            times[name].append(_wall_time(argv, work, env))
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median["import fastapi"]
    return [
        Figure(
            name,
            median[name],
            'python -c "import fastapi"',
            base,
            "s",
            f"<= {limit:g} x baseline",
            median[name] <= limit * base,
        )
        for name, limit in (("hostcore version", 0.5), ("hostcore --help", 1.0))
    ]


def _memory(pid: int) -> tuple[float, float]:
    """RSS and PSS of a process, MiB (smaps_rollup)."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0]) * 1024
    return values["Rss"] / MIB, values["Pss"] / MIB


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _group_pss(pid: int) -> tuple[float, int]:
    """Total PSS of a process and its children (gunicorn's master and workers), MiB."""
    pids = [pid, *_children(pid)]
    return sum(_memory(each)[1] for each in pids), len(pids)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _group_cpu_seconds(pid: int) -> float:
    return sum(_cpu_seconds(each) for each in [pid, *_children(pid)])


def _poll(url: str, token: str, seconds: float) -> int:
    """GET ``url`` once a second for ``seconds``; how many answered 200."""
    answered = 0
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while next_at < deadline:
        reply = fetch(url, headers={"Authorization": f"Bearer {token}"})
        answered += reply.status == 200
        next_at += 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))
    return answered


def _settled(group: ServerGroup, spec: ServerSpec, settle_s: float) -> int:
    server = group.start(spec)
    wait_ready(server, timeout_s=60.0)
    time.sleep(settle_s)
    return server.pid


def workers_memory(spec: ServerSpec, settle_s: float) -> Figure:
    """Total PSS of ``--workers 2`` (master and workers) against one process.

    Each runs alone, one after the other: PSS divides a shared page among every
    process mapping it, so another server with the same libraries running beside
    one of them would lower its figure.
    """
    workers = replace(spec, name="hostcore-workers", argv=(*spec.argv, "--workers", "2"))
    with ServerGroup(spec.cwd) as group:
        single_pss = _memory(_settled(group, spec, settle_s))[1]
        group.stop_all()
    with ServerGroup(spec.cwd) as group:
        workers_pss, processes = _group_pss(_settled(group, workers, settle_s))
    return Figure(
        f"PSS, --workers 2 ({processes} procs)", workers_pss, "PSS, one process", single_pss,
        "MiB", f"<= {WORKERS_RATIO:g} x baseline", workers_pss <= WORKERS_RATIO * single_pss,
    )  # fmt: skip


def servers(work: Path, settle_s: float, idle_s: float, poll_s: float) -> list[Figure]:
    spec = hostcore_spec(
        work, free_port(), extra_env=client_env(POLL_CLIENT, ("system:read", "network:read"))
    )
    issue9_plugins = hostcore_spec(
        work,
        free_port(),
        name="hostcore-issue9",
        extra_env={"HOSTCORE_PLUGINS__DISABLED": json.dumps(list(LATER_BUILTINS))},
    )
    # A device's store exists before its server starts (the first start after an
    # install or upgrade migrates, once): migrate it beforehand, as `hostcore db
    # upgrade` does, so the server measured is the one that runs day to day.
    for each in (spec, issue9_plugins):
        subprocess.run(
            [PYTHON, "-m", "hostcore", "db", "upgrade"],
            cwd=each.cwd,
            env=dict(each.env),
            capture_output=True,
            check=True,
            timeout=120,
        )
    token = issue_token(spec, POLL_CLIENT)
    libs_dir = work / "libs"
    libs_dir.mkdir(exist_ok=True)
    libs = bare_spec(
        work, free_port(), name="libs", app="libs_app:app",
        extra_env={"LIBS_APP_DB": str(libs_dir / "libs.db")},
    )  # fmt: skip
    with ServerGroup(work) as group:
        started = {
            name: group.start(each)
            for name, each in (
                ("hostcore", spec),
                ("issue9", issue9_plugins),
                ("bare", bare_spec(work, free_port())),
                ("libs", libs),
            )
        }
        for server in started.values():
            wait_ready(server, timeout_s=60.0)
        time.sleep(settle_s)
        pids = {name: server.pid for name, server in started.items()}
        memory = {name: _memory(pid) for name, pid in pids.items()}
        before = {name: _group_cpu_seconds(pid) for name, pid in pids.items()}
        time.sleep(idle_s)
        idle = {
            name: (_group_cpu_seconds(pid) - before[name]) / idle_s * 100
            for name, pid in pids.items()
        }
        # One network request: pyroute2 loads and the link table subscribes; then idle (before
        # the stats are polled: their sampler runs for a minute after the last read).
        network = fetch(
            started["hostcore"].url(NETWORK_PATH), headers={"Authorization": f"Bearer {token}"}
        )
        if network.status != 200:
            raise BenchError(f"GET {NETWORK_PATH} answered {network.status}: {network.body!r}")
        time.sleep(settle_s)
        used_rss = _memory(pids["hostcore"])[0]
        before_used = _cpu_seconds(pids["hostcore"])
        time.sleep(idle_s)
        used_idle = (_cpu_seconds(pids["hostcore"]) - before_used) / idle_s * 100
        stats_url = started["hostcore"].url(STATS_PATH)
        before_poll = _cpu_seconds(pids["hostcore"]), _cpu_seconds(pids["bare"])
        answered = _poll(stats_url, token, poll_s)
        polled = (_cpu_seconds(pids["hostcore"]) - before_poll[0]) / poll_s * 100
        bare_polled = (_cpu_seconds(pids["bare"]) - before_poll[1]) / poll_s * 100
    if answered < poll_s * 0.9:
        raise BenchError(f"GET {STATS_PATH} answered 200 {answered} times in {poll_s:g} s")
    core_rss, core_pss = memory["hostcore"]
    issue9_rss, _ = memory["issue9"]
    libs_rss, libs_pss = memory["libs"]
    bare_rss, _ = memory["bare"]
    budget = libs_rss + OWN_MIB
    later_budget = LATER_IDLE_MIB * len(LATER_BUILTINS)
    return [
        Figure("idle RSS, issue 9's plugins", issue9_rss, "libs_app.py (the libraries)",
               libs_rss, "MiB", f"<= baseline + {OWN_MIB:g} MiB", issue9_rss <= budget),
        Figure("idle RSS, hostcore serve", core_rss, "without " + " and ".join(LATER_BUILTINS),
               issue9_rss, "MiB", f"<= baseline + {later_budget:g} MiB",
               core_rss <= issue9_rss + later_budget),
        Figure("RSS after a network request", used_rss, "idle RSS, hostcore serve", core_rss,
               "MiB", f"<= baseline + {NETWORK_USED_MIB:g} MiB",
               used_rss <= core_rss + NETWORK_USED_MIB),
        Figure(f"idle CPU after it, {idle_s:g} s", used_idle, "bare FastAPI + uvicorn",
               idle["bare"], "%", f"<= {IDLE_CPU:g} % of a core", used_idle <= IDLE_CPU),
        Figure("idle RSS, hostcore serve", core_rss, "bare FastAPI + uvicorn", bare_rss,
               "MiB", "(informational)", True),
        Figure("idle RSS, hostcore serve", core_rss, "the issue's figure", ISSUE_RSS_MIB,
               "MiB", "(informational, see README)", True),
        Figure("idle PSS, hostcore serve", core_pss, "libs_app.py (the libraries)", libs_pss,
               "MiB", "(informational)", True),
        Figure(f"idle CPU over {idle_s:g} s", idle["hostcore"], "bare FastAPI + uvicorn",
               idle["bare"], "%", f"<= {IDLE_CPU:g} % of a core", idle["hostcore"] <= IDLE_CPU),
        Figure("CPU, stats polled at 1 Hz", polled, "bare FastAPI + uvicorn (idle)",
               bare_polled, "%", f"<= {POLLED_CPU:g} % of a core", polled <= POLLED_CPU),
        workers_memory(spec, settle_s),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after ready")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU")
    parser.add_argument("--poll", type=float, default=30.0, help="seconds of 1 Hz polling")
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    opts = parser.parse_args()
    if opts.repeat < 1 or opts.settle < 0 or opts.idle <= 0 or opts.poll < 5:
        parser.error("--repeat >= 1, --settle >= 0, --idle > 0, --poll >= 5")
    stop_on_sigterm()
    try:
        with Workdir(keep=opts.keep_workdir, prefix="hostcore-lean-") as work:
            figures = startup(work.path, opts.repeat) + servers(
                work.path, opts.settle, opts.idle, opts.poll
            )
    except BenchError as exc:
        print(f"lean: could not measure: {exc}", file=sys.stderr)
        return 2
    if opts.json:
        rows: list[dict[str, Any]] = [vars(figure) for figure in figures]
        print(json.dumps(rows, indent=2))
    else:
        header = f"{'figure':<32} {'value':>16} {'baseline':<28} {'':>16} {'target':<24}"
        print(header)
        print("-" * len(header))
        for figure in figures:
            print(figure.line())
    failed = [figure.name for figure in figures if not figure.passed]
    print(f"lean: {'FAIL: ' + ', '.join(failed) if failed else 'PASS'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

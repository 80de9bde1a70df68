"""How light hostcore is: start-up of the command line, idle memory and idle CPU.

Each figure is measured beside its baseline in the same run (this machine is shared
and noisy; ratios travel, absolute numbers do not):

- ``hostcore version`` and ``hostcore --help`` against ``python -c "import fastapi"``:
  median wall time of ``--repeat`` runs each, interleaved (targets 0.5 and 1.0);
- idle RSS and PSS of ``hostcore serve`` (one process, every built-in plugin, its store
  migrated beforehand as on a device) after ``--settle`` seconds, against
  ``bench/bare_app.py`` under uvicorn (target: 85 MiB);
- idle CPU of the same two servers over ``--idle`` seconds with nobody calling them
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _load import (
    PYTHON,
    BenchError,
    ServerGroup,
    Workdir,
    bare_spec,
    base_environment,
    free_port,
    hostcore_spec,
    stop_on_sigterm,
    wait_ready,
)

MIB = 1024 * 1024
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


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def servers(work: Path, settle_s: float, idle_s: float) -> list[Figure]:
    spec = hostcore_spec(work, free_port())
    # A device's store exists before its server starts (the first start after an
    # install or upgrade migrates, once): migrate it beforehand, as `hostcore db
    # upgrade` does, so the server measured is the one that runs day to day.
    subprocess.run(
        [PYTHON, "-m", "hostcore", "db", "upgrade"],
        cwd=spec.cwd,
        env=dict(spec.env),
        capture_output=True,
        check=True,
        timeout=120,
    )
    with ServerGroup(work) as group:
        core = group.start(spec)
        bare = group.start(bare_spec(work, free_port()))
        for server in (core, bare):
            wait_ready(server, timeout_s=60.0)
        time.sleep(settle_s)
        memory = {server.name: _memory(server.pid) for server in (core, bare)}
        before = {server.name: _cpu_seconds(server.pid) for server in (core, bare)}
        time.sleep(idle_s)
        cpu = {
            server.name: (_cpu_seconds(server.pid) - before[server.name]) / idle_s * 100
            for server in (core, bare)
        }
    core_rss, core_pss = memory["hostcore"]
    bare_rss, bare_pss = memory["bare"]
    return [
        Figure("idle RSS, hostcore serve", core_rss, "bare FastAPI + uvicorn", bare_rss,
               "MiB", "<= 85 MiB", core_rss <= 85),
        Figure("idle PSS, hostcore serve", core_pss, "bare FastAPI + uvicorn", bare_pss,
               "MiB", "(informational)", True),
        Figure(f"idle CPU over {idle_s:g} s", cpu["hostcore"], "bare FastAPI + uvicorn",
               cpu["bare"], "%", "<= 0.25 % of a core", cpu["hostcore"] <= 0.25),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after ready")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU")
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    opts = parser.parse_args()
    if opts.repeat < 1 or opts.settle < 0 or opts.idle <= 0:
        parser.error("--repeat >= 1, --settle >= 0, --idle > 0")
    stop_on_sigterm()
    try:
        with Workdir(keep=opts.keep_workdir, prefix="hostcore-lean-") as work:
            figures = startup(work.path, opts.repeat) + servers(work.path, opts.settle, opts.idle)
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

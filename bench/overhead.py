"""hostcore's per-request overhead on GET /api/v1/health against a bare FastAPI app.

hostcore answers liveness in its middleware, before routing: this measures the server,
the protocol and the middleware, not admission (bench/auth.py measures admitted routes).

Serves, in one run, each as ONE uvicorn process on 127.0.0.1 with the same uvicorn
settings:

- ``bare``: bench/bare_app.py (FastAPI, the same route and JSON body, nothing else);
- ``hostcore``: ``python -m hostcore serve`` with its access log off;
- ``hostcore+log``: the same with its access log on (informational, not gated);
- any ``--server NAME:HOSTCORE_VAR=VALUE,...``: hostcore with those settings (informational).

Each is warmed up, then loaded with wrk (same parameters for all) in interleaved
rounds whose order rotates, so drift on a shared machine hits every server alike.
The gate compares medians: hostcore / bare must be at least --min-ratio.

    .venv/bin/python bench/overhead.py [--rounds 5] [--duration 5] [--json]

Exit status: 0 PASS, 1 FAIL (ratio below target, or wrk saw errors), 2 could not run,
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _load import (
    HEALTH_PATH,
    BenchError,
    HttpReply,
    Measurement,
    Server,
    ServerGroup,
    Workdir,
    add_load_options,
    add_server_option,
    bare_spec,
    check_load_options,
    check_server_option,
    free_port,
    hostcore_spec,
    measure,
    median,
    report,
    rotated,
    rounds_json,
    say,
    start_and_run,
    summarize_target,
    target_table,
    wait_ready,
)

BARE = "bare"
CORE = "hostcore"
CORE_LOG = "hostcore+log"
EXPECTED_BODY = b'{"status":"ok"}'
# Headers that legitimately differ per response or per server build.
VOLATILE_HEADERS = {"date"}


@dataclass(frozen=True)
class Options:
    rounds: int
    duration: int
    warmup: int
    connections: int
    threads: int
    min_ratio: float
    access_log_run: bool
    extra_servers: tuple[tuple[str, dict[str, str]], ...]
    ready_timeout: float
    keep_workdir: bool
    as_json: bool


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Compare hostcore's GET /api/v1/health throughput with a bare FastAPI app."
    )
    add_load_options(
        parser,
        per="server",
        min_ratio=0.90,
        ratio_help="fail when median hostcore req/s / median bare req/s is below this",
    )
    parser.add_argument(
        "--no-access-log-run",
        dest="access_log_run",
        action="store_false",
        help="skip the informational hostcore run with its access log on",
    )
    add_server_option(parser, "informational")
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    check_server_option(parser, args, reserved=(BARE, CORE, CORE_LOG))
    return Options(**vars(args))


def check_replies(replies: dict[str, HttpReply]) -> list[str]:
    """Every server answers 200 with the same body and content type; list header differences."""
    for name, reply in replies.items():
        if reply.status != 200 or reply.body != EXPECTED_BODY:
            raise BenchError(
                f"{name} answered {reply.status} {reply.body!r}, not 200 {EXPECTED_BODY!r}"
            )
        if reply.headers.get("content-type") != replies[BARE].headers.get("content-type"):
            raise BenchError(f"{name} answers with another content-type: {reply.headers}")
    base = set(replies[BARE].headers) - VOLATILE_HEADERS
    notes = []
    for name, reply in replies.items():
        extra = sorted(set(reply.headers) - VOLATILE_HEADERS - base)
        missing = sorted(base - set(reply.headers))
        if extra:
            notes.append(f"{name} adds header(s) {', '.join(extra)}")
        if missing:
            notes.append(f"{name} lacks header(s) {', '.join(missing)}")
    return notes


def access_lines(server: Server) -> int | None:
    """hostcore.access lines in a hostcore server's app.log* (None for other servers)."""
    log_dir = server.spec.env.get("HOSTCORE_LOG_DIR")
    if log_dir is None:
        return None
    count = 0
    for path in sorted(Path(log_dir).glob("app.log*")):  # rotated files too
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                count += sum(" hostcore.access " in line for line in handle)
        except OSError:
            continue
    return count


def run(opts: Options) -> dict[str, Any]:
    """Start the servers, measure, stop them; return every number."""
    wrk_args = {
        "duration_s": opts.duration,
        "connections": opts.connections,
        "threads": opts.threads,
    }
    progress = opts.as_json  # progress lines go to stderr when stdout carries JSON
    with Workdir(keep=opts.keep_workdir) as work, ServerGroup(work.path) as group:
        specs = [
            bare_spec(work.path, free_port(), name=BARE),
            hostcore_spec(work.path, free_port(), CORE),
        ]
        if opts.access_log_run:
            specs.append(hostcore_spec(work.path, free_port(), CORE_LOG, access_log=True))
        for name, env in opts.extra_servers:
            specs.append(hostcore_spec(work.path, free_port(), name, extra_env=env))
        servers = {spec.name: group.start(spec) for spec in specs}
        replies = {name: wait_ready(s, timeout_s=opts.ready_timeout) for name, s in servers.items()}
        header_notes = check_replies(replies)
        say(
            "servers ready: "
            + ", ".join(f"{s.name} (pid {s.pid}, port {s.spec.port})" for s in servers.values()),
            to_stderr=progress,
        )

        warmups: list[Measurement] = []
        if opts.warmup > 0:
            for server in servers.values():
                warmups.append(
                    measure(server, HEALTH_PATH, **{**wrk_args, "duration_s": opts.warmup})
                )
            say(
                "warm-up: "
                + ", ".join(f"{m.server} {m.result.requests_per_s:.0f} req/s" for m in warmups),
                to_stderr=progress,
            )

        rounds: list[dict[str, Measurement]] = []
        orders: list[list[str]] = []
        for index in range(opts.rounds):
            order = rotated(list(servers), index)
            orders.append(order)
            row: dict[str, Measurement] = {}
            for name in order:
                row[name] = measure(servers[name], HEALTH_PATH, **wrk_args)
            rounds.append(row)
            say(
                f"round {index + 1}/{opts.rounds}: "
                + ", ".join(f"{n} {row[n].result.requests_per_s:.0f} req/s" for n in order),
                to_stderr=progress,
            )
        access = {name: access_lines(s) for name, s in servers.items()}
        pids = {name: s.pid for name, s in servers.items()}
        commands = {name: s.spec.description for name, s in servers.items()}
        workdir = str(work.path) if opts.keep_workdir else None
    return {
        "servers": list(servers),
        "pids": pids,
        "commands": commands,
        "header_notes": header_notes,
        "warmups": warmups,
        "rounds": rounds,
        "orders": orders,
        "access_lines": access,
        "workdir": workdir,
    }


def summarize(opts: Options, raw: dict[str, Any]) -> dict[str, Any]:
    rounds: list[dict[str, Measurement]] = raw["rounds"]
    per_server: dict[str, dict[str, Any]] = {}
    for name in raw["servers"]:
        per_server[name] = summarize_target([row[name] for row in rounds])
    bare = per_server[BARE]["requests_per_s_median"]
    ratios = {name: per_server[name]["requests_per_s_median"] / bare for name in raw["servers"]}
    paired = {
        name: median(
            [row[name].result.requests_per_s / row[BARE].result.requests_per_s for row in rounds]
        )
        for name in raw["servers"]
    }
    error_lines = [
        f"{label} {m.server}: {m.result.error_summary()}"
        for label, ms in [("warm-up", raw["warmups"])]
        + [(f"round {i + 1}", list(row.values())) for i, row in enumerate(rounds)]
        for m in ms
        if m.result.errors
    ]
    measured_errors = [line for line in error_lines if not line.startswith("warm-up")]
    access = raw["access_lines"]
    warnings = []
    if access.get(CORE):
        warnings.append(f"{CORE} wrote {access[CORE]} access lines although its access log is off")
    if CORE_LOG in access and not access[CORE_LOG]:
        warnings.append(f"{CORE_LOG} wrote no access lines although its access log is on")
    ratio = ratios[CORE]
    passed = ratio >= opts.min_ratio and not measured_errors
    return {
        "per_server": per_server,
        "ratio": ratios,
        "paired_ratio_median": paired,
        "errors": error_lines,
        "warnings": warnings,
        "pass": passed,
        "reason": (
            "wrk saw errors"
            if measured_errors
            else f"ratio {ratio:.3f} vs target {opts.min_ratio:.2f}"
        ),
    }


REMAINING_DIFFERENCES = [
    "hostcore runs uvicorn.Server(Config(app, log_config=None, ...)) after installing its own "
    "logging (console + app.log + debug.log); the bare app runs under uvicorn's CLI with "
    "uvicorn's default log config. With the access log off neither logs per request.",
    "the bare route returns a dict that FastAPI serializes; hostcore's returns a prebuilt "
    "Response (src/hostcore/meta.py). Same bytes on the wire, slightly less work for hostcore.",
    "everything else is hostcore's own per-request and background work, which is what this "
    "benchmark measures: its middleware (src/hostcore/middleware.py), its other routes, and "
    "whatever its lifespan starts (store, security runtime, plugins).",
]


def fmt_rps(value: float) -> str:
    return f"{value:9.0f}"


def report_text(
    opts: Options, raw: dict[str, Any], summary: dict[str, Any], host: dict[str, Any]
) -> str:
    names: list[str] = raw["servers"]
    lines = [
        "",
        f"hostcore overhead: GET {HEALTH_PATH}, bare FastAPI vs hostcore, one uvicorn process each",
        f"  load: wrk --threads={opts.threads} --connections={opts.connections} "
        f"--duration={opts.duration}s --latency; {opts.rounds} interleaved rounds (order rotates), "
        f"{opts.warmup}s warm-up per server",
        f"  host: {host['cpus']} CPUs, load average {host['loadavg_start']} at start, "
        f"{host['loadavg_end']} at end",
        "  software: " + ", ".join(f"{k} {v}" for k, v in host["software"].items()),
        "  servers (127.0.0.1, free ports):",
    ]
    lines += [f"    {n:<13} pid {raw['pids'][n]:<7} {raw['commands'][n]}" for n in names]
    lines.append(f"  checked: all answer 200 {EXPECTED_BODY.decode()} with the same content-type")
    lines += [f"  header difference: {note}" for note in raw["header_notes"]]
    lines.append("  remaining differences:")
    lines += [f"    - {d}" for d in REMAINING_DIFFERENCES]
    lines.append(
        "  access lines in app.log (and rotated app.log.N): "
        + ", ".join(f"{n} {c}" for n, c in raw["access_lines"].items() if c is not None)
    )
    lines.append("")

    header = f"{'round':<7}" + "".join(
        f"{n + ' req/s':>20}" + ("" if n == BARE else f"{'ratio':>7}") for n in names
    )
    lines += [header, "-" * len(header)]
    for index, row in enumerate(raw["rounds"]):
        cells = f"{index + 1:<7}"
        for n in names:
            rps = row[n].result.requests_per_s
            cells += f"{rps:>20.0f}"
            if n != BARE:
                cells += f"{rps / row[BARE].result.requests_per_s:>7.3f}"
        lines.append(cells)
    per = summary["per_server"]
    cells = f"{'median':<7}"
    for n in names:
        cells += f"{per[n]['requests_per_s_median']:>20.0f}"
        if n != BARE:
            cells += f"{summary['ratio'][n]:>7.3f}"
    lines += ["-" * len(header), cells]
    lines.append(
        "(ratio per round = server / bare in the same round; median row = ratio of medians; "
        "median of per-round ratios: "
        + ", ".join(f"{n} {summary['paired_ratio_median'][n]:.3f}" for n in names if n != BARE)
        + ")"
    )
    lines.append("")

    lines += target_table(per, names, label="server", width=14)
    lines.append(
        "(medians over rounds; cpu = the server process's user+system CPU during each wrk run)"
    )
    lines += [f"error: {e}" for e in summary["errors"]]
    lines += [f"warning: {w}" for w in summary["warnings"]]
    if raw["workdir"]:
        lines.append(f"server logs kept in {raw['workdir']}")
    lines.append("")
    for n in names:
        if n in (BARE, CORE):
            continue
        lines.append(
            f"info (not gated): {n}: {per[n]['requests_per_s_median']:.0f} req/s, "
            f"ratio {summary['ratio'][n]:.3f} to bare ({raw['commands'][n]})"
        )
    return "\n".join(lines)


def verdict_line(opts: Options, summary: dict[str, Any]) -> str:
    per = summary["per_server"]
    verdict = "PASS" if summary["pass"] else f"FAIL ({summary['reason']})"
    return (
        f"overhead: bare {per[BARE]['requests_per_s_median']:.0f} req/s, "
        f"hostcore {per[CORE]['requests_per_s_median']:.0f} req/s, "
        f"ratio {summary['ratio'][CORE]:.3f} (target >= {opts.min_ratio:.2f}): {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    outcome = start_and_run("overhead", lambda: run(opts), stopped="servers stopped")
    if isinstance(outcome, int):
        return outcome
    raw, host = outcome
    summary = summarize(opts, raw)
    verdict = verdict_line(opts, summary)
    document = {
        "benchmark": "overhead",
        "path": HEALTH_PATH,
        "options": vars(opts),
        "host": host,
        "servers": raw["commands"],
        "header_notes": raw["header_notes"],
        "remaining_differences": REMAINING_DIFFERENCES,
        "access_lines": raw["access_lines"],
        "warmups": [m.to_json() for m in raw["warmups"]],
        "rounds": rounds_json(raw),
        **summary,
        "summary": verdict,
    }
    report(opts.as_json, document, lambda: report_text(opts, raw, summary, host), verdict)
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""GET /api/v1/system/stats against GET /api/v1/health on the same hostcore server.

Serves ONE ``python -m hostcore serve`` (one uvicorn process, 127.0.0.1, its own temp
data/log/run dirs, access log off, activity on) with a client ``bench`` holding
``system:read`` and its rate limit at 100000000/minute (active, never reached: at the
default 600/minute the load would measure 429s). Loads both paths alternately with wrk
(interleaved rounds, the order rotating): stats with the client's bearer token (the
whole pipeline: token, rate limit, scope check, activity record, then the newest
background sample, encoded once per sample, sent by the security gate: a snapshot
route, hostcore.fastlane), health without (hostcore answers it in its middleware,
before routing and authentication).

The gate, on medians over the rounds: stats req/s >= --min-ratio (0.50) x health req/s,
stats p99 latency < --max-p99-ms (20 ms), and wrk saw no errors (no 429 either).

    .venv/bin/python bench/system.py [--rounds 5] [--duration 5] [--json]

Exit status: 0 PASS, 1 FAIL, 2 could not run, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from _load import (
    HEALTH_PATH,
    UNREACHED_RATE_LIMIT,
    BenchError,
    Measurement,
    ServerGroup,
    Workdir,
    add_load_options,
    check_load_options,
    client_env,
    fetch,
    format_time,
    free_port,
    header_args,
    hostcore_spec,
    issue_token,
    measure_with,
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

CORE = "hostcore"
STATS = "stats"
HEALTH = "health"
PATHS = {HEALTH: HEALTH_PATH, STATS: "/api/v1/system/stats"}
CLIENT = "bench"
CLIENT_SCOPES = ("system:read",)
CORE_ENV = {
    **client_env(CLIENT, CLIENT_SCOPES),
    "HOSTCORE_RATELIMIT__DEFAULT": UNREACHED_RATE_LIMIT,
}


@dataclass(frozen=True)
class Options:
    rounds: int
    duration: int
    warmup: int
    connections: int
    threads: int
    min_ratio: float
    max_p99_ms: float
    extra_env: tuple[tuple[str, str], ...]
    ready_timeout: float
    keep_workdir: bool
    as_json: bool


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Compare hostcore's GET /api/v1/system/stats with GET /api/v1/health "
        "on one server."
    )
    add_load_options(
        parser,
        per="path",
        min_ratio=0.50,
        ratio_help="fail when median stats req/s / median health req/s is below this",
    )
    parser.add_argument(
        "--max-p99-ms",
        type=float,
        default=20.0,
        help="fail when the median over rounds of stats' p99 latency is not below this many "
        "milliseconds (default 20)",
    )
    parser.add_argument(
        "--env",
        dest="extra_env",
        action="append",
        default=[],
        metavar="HOSTCORE_VAR=VALUE",
        help="run the server with this extra setting (repeatable; printed with the results), "
        "e.g. --env HOSTCORE_ACTIVITY__ENABLED=false",
    )
    args = parser.parse_args(argv)
    check_load_options(
        parser, args, [(0 < args.max_p99_ms <= 60_000, "--max-p99-ms must be in (0, 60000]")]
    )
    pairs = []
    for item in args.extra_env:
        key, eq, value = item.partition("=")
        if not eq or not key.startswith("HOSTCORE_"):
            parser.error(f"--env {item!r}: expected HOSTCORE_VAR=VALUE")
        pairs.append((key, value))
    args.extra_env = tuple(pairs)
    return Options(**vars(args))


def run(opts: Options) -> dict[str, Any]:
    """Start hostcore, check both paths, measure them alternately, stop it."""
    progress = opts.as_json  # progress lines go to stderr when stdout carries JSON
    with Workdir(keep=opts.keep_workdir) as work, ServerGroup(work.path) as group:
        spec = hostcore_spec(
            work.path, free_port(), CORE, extra_env={**CORE_ENV, **dict(opts.extra_env)}
        )
        core = group.start(spec)
        wait_ready(core, HEALTH_PATH, timeout_s=opts.ready_timeout)
        token = issue_token(spec, CLIENT)
        auth = {"Authorization": f"Bearer {token}"}
        headers: dict[str, dict[str, str]] = {HEALTH: {}, STATS: auth}

        stats = fetch(core.url(PATHS[STATS]), headers=auth)
        if stats.status != 200:
            raise BenchError(f"GET {PATHS[STATS]} answered {stats.status} {stats.body[:200]!r}")
        if stats.headers.get("x-ratelimit-limit") != UNREACHED_RATE_LIMIT.split("/")[0]:
            raise BenchError(f"the rate limit is not active on {PATHS[STATS]}: {stats.headers}")
        sample = json.loads(stats.body)
        unauthenticated = fetch(core.url(PATHS[STATS]))
        if unauthenticated.status != 401:
            raise BenchError(
                f"GET {PATHS[STATS]} without a token answered {unauthenticated.status}"
            )
        health = fetch(core.url(HEALTH_PATH))
        if health.status != 200:
            raise BenchError(f"GET {HEALTH_PATH} answered {health.status}")
        bodies = {HEALTH: len(health.body), STATS: len(stats.body)}
        say(
            f"server ready: {CORE} (pid {core.pid}, port {spec.port}); stats answers 200 "
            f"({bodies[STATS]} B, {len(sample.get('disks', []))} disks, "
            f"{len(sample.get('network', {}).get('interfaces', []))} interfaces) with the token, "
            "401 without",
            to_stderr=progress,
        )

        def load(path: str, duration_s: int) -> Measurement:
            return measure_with(
                core,
                PATHS[path],
                duration_s=duration_s,
                connections=opts.connections,
                threads=opts.threads,
                extra_args=header_args(headers[path]),
            )

        names = [STATS, HEALTH]
        warmups: dict[str, Measurement] = {}
        if opts.warmup > 0:
            for name in names:
                warmups[name] = load(name, opts.warmup)
            say(
                "warm-up: "
                + ", ".join(f"{n} {m.result.requests_per_s:.0f} req/s" for n, m in warmups.items()),
                to_stderr=progress,
            )
        rounds: list[dict[str, Measurement]] = []
        orders: list[list[str]] = []
        for index in range(opts.rounds):
            order = rotated(names, index)
            orders.append(order)
            row = {name: load(name, opts.duration) for name in order}
            rounds.append(row)
            say(
                f"round {index + 1}/{opts.rounds}: "
                + ", ".join(
                    f"{n} {row[n].result.requests_per_s:.0f} req/s "
                    f"p99 {format_time(row[n].result.percentiles_s['99'])}"
                    for n in order
                ),
                to_stderr=progress,
            )
        command = spec.description
        pid = core.pid
        workdir = str(work.path) if opts.keep_workdir else None
    return {
        "names": names,
        "pid": pid,
        "command": command,
        "body_bytes": bodies,
        "warmups": warmups,
        "rounds": rounds,
        "orders": orders,
        "workdir": workdir,
    }


def summarize(opts: Options, raw: dict[str, Any]) -> dict[str, Any]:
    rounds: list[dict[str, Measurement]] = raw["rounds"]
    per_path: dict[str, dict[str, Any]] = {}
    for name in raw["names"]:
        per_path[name] = {
            "path": PATHS[name],
            **summarize_target([row[name] for row in rounds]),
        }
    ratio = per_path[STATS]["requests_per_s_median"] / per_path[HEALTH]["requests_per_s_median"]
    paired = median(
        [row[STATS].result.requests_per_s / row[HEALTH].result.requests_per_s for row in rounds]
    )
    p99 = per_path[STATS]["latency_p99_s_median"]
    error_lines = [
        f"{label} {name}: {m.result.error_summary()}"
        for label, items in [("warm-up", list(raw["warmups"].items()))]
        + [(f"round {i + 1}", list(row.items())) for i, row in enumerate(rounds)]
        for name, m in items
        if m.result.errors
    ]
    measured_errors = [line for line in error_lines if not line.startswith("warm-up")]
    ratio_pass = ratio >= opts.min_ratio
    p99_pass = p99 * 1000 < opts.max_p99_ms
    reasons = []
    if not ratio_pass:
        reasons.append(f"ratio {ratio:.3f} < {opts.min_ratio:.2f}")
    if not p99_pass:
        reasons.append(f"stats p99 {format_time(p99)} >= {opts.max_p99_ms:g}ms")
    if measured_errors:
        reasons.append("wrk saw errors")
    return {
        "per_path": per_path,
        "ratio": ratio,
        "paired_ratio_median": paired,
        "ratio_pass": ratio_pass,
        "stats_p99_s": p99,
        "p99_pass": p99_pass,
        "errors": error_lines,
        "pass": ratio_pass and p99_pass and not measured_errors,
        "reason": "; ".join(reasons),
    }


def report_text(
    opts: Options, raw: dict[str, Any], summary: dict[str, Any], host: dict[str, Any]
) -> str:
    names: list[str] = raw["names"]
    lines = [
        "",
        f"hostcore system stats: GET {PATHS[STATS]} (bearer token, scope system:read) vs "
        f"GET {HEALTH_PATH} (no token) on one server, one uvicorn process",
        f"  load: wrk --threads={opts.threads} --connections={opts.connections} "
        f"--duration={opts.duration}s --latency (stats with --header 'Authorization: Bearer "
        f"<token>'); {opts.rounds} interleaved rounds (order rotates), {opts.warmup}s warm-up "
        "per path",
        f"  host: {host['cpus']} CPUs, load average {host['loadavg_start']} at start, "
        f"{host['loadavg_end']} at end",
        "  software: " + ", ".join(f"{k} {v}" for k, v in host["software"].items()),
        f"  server (127.0.0.1, free port): pid {raw['pid']} {raw['command']}",
        f"  checked: stats 200 with the token ({raw['body_bytes'][STATS]} B body, "
        f"X-RateLimit-Limit {UNREACHED_RATE_LIMIT.split('/')[0]}), 401 without; health 200 "
        f"({raw['body_bytes'][HEALTH]} B)",
        "  note: hostcore answers health in its middleware (src/hostcore/middleware.py), before "
        "routing and authentication; stats passes the security gate (token, rate limit, "
        "scope), which then sends the newest sample itself (a snapshot route, "
        "hostcore.fastlane). Both get an activity row.",
        "",
    ]
    header = (
        f"{'round':<7}{'stats req/s':>13}{'p99':>10}{'health req/s':>14}{'p99':>10}{'ratio':>8}"
    )
    lines += [header, "-" * len(header)]
    for index, row in enumerate(raw["rounds"]):
        s, h = row[STATS].result, row[HEALTH].result
        lines.append(
            f"{index + 1:<7}{s.requests_per_s:>13.0f}{format_time(s.percentiles_s['99']):>10}"
            f"{h.requests_per_s:>14.0f}{format_time(h.percentiles_s['99']):>10}"
            f"{s.requests_per_s / h.requests_per_s:>8.3f}"
        )
    per = summary["per_path"]
    lines += [
        "-" * len(header),
        f"{'median':<7}{per[STATS]['requests_per_s_median']:>13.0f}"
        f"{format_time(per[STATS]['latency_p99_s_median']):>10}"
        f"{per[HEALTH]['requests_per_s_median']:>14.0f}"
        f"{format_time(per[HEALTH]['latency_p99_s_median']):>10}{summary['ratio']:>8.3f}",
        f"(ratio per round = stats / health in the same round; median row = ratio of medians; "
        f"median of per-round ratios {summary['paired_ratio_median']:.3f})",
        "",
    ]
    lines += target_table(per, names, label="path", width=8, p99_worst=True)
    lines.append(
        "(medians over rounds, p99 worst = the highest round; cpu = the server process's "
        "user+system CPU during each wrk run / requests)"
    )
    lines += [f"error: {e}" for e in summary["errors"]]
    if raw["workdir"]:
        lines.append(f"server logs kept in {raw['workdir']}")
    return "\n".join(lines)


def verdict_line(opts: Options, summary: dict[str, Any]) -> str:
    per = summary["per_path"]
    verdict = "PASS" if summary["pass"] else f"FAIL ({summary['reason']})"
    return (
        f"system: stats {per[STATS]['requests_per_s_median']:.0f} req/s, health "
        f"{per[HEALTH]['requests_per_s_median']:.0f} req/s, ratio {summary['ratio']:.3f} "
        f"(target >= {opts.min_ratio:.2f}); stats p99 {format_time(summary['stats_p99_s'])} "
        f"(worst round {format_time(per[STATS]['latency_p99_s_worst'])}; target < "
        f"{opts.max_p99_ms:g}ms) at {opts.connections} connections: {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    outcome = start_and_run("system", lambda: run(opts), stopped="server stopped")
    if isinstance(outcome, int):
        return outcome
    raw, host = outcome
    summary = summarize(opts, raw)
    verdict = verdict_line(opts, summary)
    document = {
        "benchmark": "system",
        "paths": PATHS,
        "options": vars(opts),
        "host": host,
        "server": raw["command"],
        "body_bytes": raw["body_bytes"],
        "warmups": {n: m.to_json() for n, m in raw["warmups"].items()},
        "rounds": rounds_json(raw),
        **summary,
        "summary": verdict,
    }
    report(opts.as_json, document, lambda: report_text(opts, raw, summary, host), verdict)
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

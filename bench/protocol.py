"""What hostcore's server protocol costs per request: the same bare app, two protocols.

Serves bench/bare_app.py twice, in one run, each as ONE uvicorn process on 127.0.0.1
with hostcore's uvicorn settings, differing only in the HTTP protocol:

- ``httptools``: uvicorn's own (``--http auto``), through uvicorn's CLI;
- ``hostcore-protocol``: ``hostcore.protocol`` at its default limits (header byte and
  field counts, header/body deadlines, peer credentials), which ``hostcore serve``
  uses; started by this script in ``--serve PORT`` mode.

Loads both with wrk in interleaved rounds whose order rotates and compares medians;
wrk keeps its connections alive, so every request pays the protocol's per-request
work (message begin, headers complete, message complete) and the deadline sweep.

    .venv/bin/python bench/protocol.py [--rounds 5] [--duration 5] [--json]

Exit status: 0 PASS, 1 FAIL (ratio below --min-ratio, or wrk saw errors), 2 could not
run, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from _load import (
    BENCH_DIR,
    HEALTH_PATH,
    LOOPBACK,
    PYTHON,
    Measurement,
    ServerGroup,
    ServerSpec,
    Workdir,
    add_load_options,
    bare_spec,
    base_environment,
    check_load_options,
    free_port,
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

STOCK = "httptools"
OURS = "hostcore-protocol"


def serve(port: int) -> None:
    """The bare app with hostcore's protocol and otherwise the flags of _load.UVICORN_FLAGS."""
    import uvicorn

    from hostcore.config import ServerSettings
    from hostcore.protocol import server_protocols

    sys.path.insert(0, str(BENCH_DIR))
    uvicorn.run(
        "bare_app:app",
        host=LOOPBACK,
        port=port,
        loop="auto",
        lifespan="on",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        **server_protocols(ServerSettings()),
    )


def protocol_spec(workdir: Any, port: int) -> ServerSpec:
    return ServerSpec(
        name=OURS,
        argv=(PYTHON, str(BENCH_DIR / "protocol.py"), "--serve", str(port)),
        port=port,
        cwd=workdir,
        env=base_environment(),
        description="bare_app:app with hostcore.protocol (bench/protocol.py --serve)",
    )


def run(opts: argparse.Namespace) -> dict[str, Any]:
    wrk = {"duration_s": opts.duration, "connections": opts.connections, "threads": opts.threads}
    progress = opts.as_json
    with Workdir(keep=opts.keep_workdir) as work, ServerGroup(work.path) as group:
        specs = [
            bare_spec(work.path, free_port(), name=STOCK),
            protocol_spec(work.path, free_port()),
        ]
        servers = {spec.name: group.start(spec) for spec in specs}
        for server in servers.values():
            wait_ready(server, timeout_s=opts.ready_timeout)
        if opts.warmup > 0:
            for server in servers.values():
                measure(server, HEALTH_PATH, **{**wrk, "duration_s": opts.warmup})
        rounds: list[dict[str, Measurement]] = []
        orders: list[list[str]] = []
        for index in range(opts.rounds):
            order = rotated(list(servers), index)
            orders.append(order)
            row = {name: measure(servers[name], HEALTH_PATH, **wrk) for name in order}
            rounds.append(row)
            say(
                f"round {index + 1}/{opts.rounds}: "
                + ", ".join(f"{n} {row[n].result.requests_per_s:.0f} req/s" for n in order),
                to_stderr=progress,
            )
        commands = {name: s.spec.description for name, s in servers.items()}
    return {"servers": list(commands), "commands": commands, "rounds": rounds, "orders": orders}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hostcore.protocol vs uvicorn's httptools.")
    add_load_options(
        parser,
        per="server",
        min_ratio=0.95,
        ratio_help="fail when median hostcore-protocol req/s / median httptools req/s is below",
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.serve is not None:
        serve(opts.serve)
        return 0
    check_load_options(parser, opts)
    outcome = start_and_run("protocol", lambda: run(opts), stopped="servers stopped")
    if isinstance(outcome, int):
        return outcome
    raw, host = outcome
    per = {name: summarize_target([row[name] for row in raw["rounds"]]) for name in raw["servers"]}
    ratio = per[OURS]["requests_per_s_median"] / per[STOCK]["requests_per_s_median"]
    cpu = [per[name]["server_cpu_us_per_request_median"] for name in (STOCK, OURS)]
    paired = median(
        [
            row[OURS].result.requests_per_s / row[STOCK].result.requests_per_s
            for row in raw["rounds"]
        ]
    )
    errors = sum(per[name]["errors"] for name in raw["servers"])
    passed = ratio >= opts.min_ratio and not errors
    verdict = (
        f"protocol: httptools {per[STOCK]['requests_per_s_median']:.0f} req/s, "
        f"hostcore-protocol {per[OURS]['requests_per_s_median']:.0f} req/s, "
        f"ratio {ratio:.3f} (target >= {opts.min_ratio:.2f}): "
        + ("PASS" if passed else "FAIL" + (" (wrk saw errors)" if errors else ""))
    )
    extra = ""
    if None not in cpu:
        extra = f"server cpu per request: {cpu[0]:.1f} us vs {cpu[1]:.1f} us"

    def text() -> str:
        lines = ["", f"GET {HEALTH_PATH} on bench/bare_app.py, one uvicorn process each"]
        lines += [f"  {name}: {command}" for name, command in raw["commands"].items()]
        lines += ["", *target_table(per, raw["servers"], label="protocol", width=20)]
        lines += [f"median of per-round ratios: {paired:.3f}", extra]
        return "\n".join(lines)

    document = {
        "benchmark": "protocol",
        "options": vars(opts),
        "host": host,
        "servers": raw["commands"],
        "rounds": rounds_json(raw),
        "per_server": per,
        "ratio": ratio,
        "paired_ratio_median": paired,
        "pass": passed,
        "summary": verdict,
    }
    report(opts.as_json, document, text, verdict)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

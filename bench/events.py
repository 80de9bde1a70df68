"""Live events at scale: many SSE subscribers to ``system.stats`` on one hostcore process.

In one run, against the same server (``hostcore serve``, one uvicorn process, on
127.0.0.1, stopped by PID at the end):

1. ``--subscribers`` SSE streams (default 200) read ``system.stats`` for
   ``--duration`` seconds. Measured: the server's CPU per event delivered (user +
   system CPU over the window / events received by all streams), and the delivery
   delay of each event (received minus published: the event id carries the
   publication time in microseconds, same host, same clock), p50/p99.
2. The baseline: ``--requests`` polled ``GET /api/v1/system/stats`` on one keep-alive
   connection, the server's CPU per request.

Targets (issue 10): delay p99 < 50 ms; CPU per delivered event below the CPU of one
polled GET.

    .venv/bin/python bench/events.py                  # 200 streams, 20 s
    .venv/bin/python bench/events.py --subscribers 50 --duration 10 --json
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from _load import (
    LOOPBACK,
    UNREACHED_RATE_LIMIT,
    BenchError,
    ServerGroup,
    Workdir,
    client_env,
    free_port,
    hostcore_spec,
    issue_token,
    stop_on_sigterm,
    wait_ready,
)

CLIENT = "eventsbench"
MAX_STREAMS = 8  # per caller and worker (hostcore.events.hub.MAX_STREAMS)
TOPIC = "system.stats"
STATS_PATH = "/api/v1/system/stats"
DELAY_P99_TARGET_S = 0.050


@dataclass
class Received:
    delays: list[float] = field(default_factory=list)
    events: int = 0
    errors: list[str] = field(default_factory=list)


async def subscriber(
    port: int, token: str, until: float, counting_from: float, got: Received
) -> None:
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
    except OSError as exc:
        got.errors.append(f"connect: {exc}")
        return
    writer.write(
        (
            f"GET /api/v1/events?topics={TOPIC} HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    try:
        status = await asyncio.wait_for(reader.readline(), 10)
        if b" 200 " not in status:
            got.errors.append(status.decode(errors="replace").strip())
            return
        published: float | None = None
        while time.time() < until:
            try:
                line = await asyncio.wait_for(reader.readline(), max(until - time.time(), 0.01))
            except TimeoutError:
                break
            if not line:
                break
            now = time.time()
            if line.startswith(b"id: "):
                micros = line[4:].split(b"-", 1)[0]
                published = int(micros) / 1_000_000 if micros.isdigit() else None
            elif line.startswith(b"data: ") and published is not None and now >= counting_from:
                got.events += 1
                got.delays.append(now - published)
    finally:
        writer.close()


def polled_cpu(server: Any, port: int, token: str, requests: int) -> tuple[float, int]:
    """Server CPU per polled GET /system/stats on one keep-alive connection."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(50):  # warm
        connection.request("GET", STATS_PATH, headers=headers)
        connection.getresponse().read()
    before = server.cpu_seconds()
    ok = 0
    for _ in range(requests):
        connection.request("GET", STATS_PATH, headers=headers)
        response = connection.getresponse()
        response.read()
        ok += response.status == 200
    after = server.cpu_seconds()
    connection.close()
    return (after - before) / requests, ok


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def stream_phase(
    server: Any, port: int, tokens: list[str], subscribers: int, duration_s: float
) -> tuple[Received, float]:
    got = Received()
    settle_s = 3.0
    start = time.time()
    counting_from = start + settle_s
    until = counting_from + duration_s
    tasks = [
        asyncio.create_task(subscriber(port, tokens[n // MAX_STREAMS], until, counting_from, got))
        for n in range(subscribers)
    ]
    await asyncio.sleep(max(counting_from - time.time(), 0))
    cpu_before = server.cpu_seconds()
    await asyncio.gather(*tasks)
    cpu = server.cpu_seconds() - cpu_before
    return got, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of streaming")
    parser.add_argument("--requests", type=int, default=3000, help="polled GETs (baseline)")
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    if not 1 <= opts.subscribers <= 2000 or not 5 <= opts.duration <= 600:
        parser.error("--subscribers 1..2000, --duration 5..600")
    if not 100 <= opts.requests <= 100_000:
        parser.error("--requests 100..100000")
    stop_on_sigterm()
    # A caller may hold MAX_STREAMS streams on a worker: the subscribers are as many
    # clients (a panel, an app, a dashboard each), each with its own token.
    clients = [f"{CLIENT}{n}" for n in range(-(-opts.subscribers // MAX_STREAMS))]
    env = {"HOSTCORE_RATELIMIT__DEFAULT": UNREACHED_RATE_LIMIT}
    for client in clients:
        env |= client_env(client, ["system:read"])
    try:
        with Workdir(keep=opts.keep_workdir, prefix="hostcore-events-") as work:
            spec = hostcore_spec(work.path, free_port(), extra_env=env)
            with ServerGroup(work.path) as group:
                server = group.start(spec)
                wait_ready(server, timeout_s=60.0)
                with ThreadPoolExecutor(max_workers=4) as pool:
                    tokens = list(pool.map(lambda client: issue_token(spec, client), clients))
                got, cpu = asyncio.run(
                    stream_phase(server, spec.port, tokens, opts.subscribers, opts.duration)
                )
                per_get, ok = polled_cpu(server, spec.port, tokens[0], opts.requests)
    except BenchError as exc:
        print(f"events: could not measure: {exc}", file=sys.stderr)
        return 2
    if got.errors:
        print(f"events: {len(got.errors)} streams failed, e.g. {got.errors[0]}", file=sys.stderr)
        return 1
    if not got.events or ok != opts.requests:
        print("events: no events received or polled GETs failed", file=sys.stderr)
        return 1
    per_event = cpu / got.events
    p50, p99 = percentile(got.delays, 0.5), percentile(got.delays, 0.99)
    result = {
        "subscribers": opts.subscribers,
        "duration_s": opts.duration,
        "events_delivered": got.events,
        "events_per_subscriber_per_s": got.events / opts.subscribers / opts.duration,
        "server_cpu_s": cpu,
        "cpu_us_per_event": per_event * 1e6,
        "cpu_us_per_polled_get": per_get * 1e6,
        "delay_p50_ms": p50 * 1e3,
        "delay_p99_ms": p99 * 1e3,
        "delay_max_ms": max(got.delays) * 1e3,
        "delay_mean_ms": statistics.fmean(got.delays) * 1e3,
    }
    passed = p99 < DELAY_P99_TARGET_S and per_event < per_get
    if opts.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:<30} {value:,.3f}" if isinstance(value, float) else f"{key:<30} {value}")
    print(
        f"events: p99 delay {p99 * 1e3:.1f} ms (target < {DELAY_P99_TARGET_S * 1e3:g}), "
        f"CPU per event {per_event * 1e6:.1f} us vs per polled GET {per_get * 1e6:.1f} us: "
        f"{'PASS' if passed else 'FAIL'}",
        file=sys.stderr,
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

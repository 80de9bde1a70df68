"""Where hostcore's per-request time goes, without a network: the ASGI app called in-process.

Calls each app variant directly (one asyncio task per request, like uvicorn) with the
scope uvicorn builds for wrk's ``GET /api/v1/health`` and reports the process's CPU
microseconds per request (all threads: a store's worker thread counts too), interleaving
the variants over several rounds in one event loop and taking medians:

- ``bare``: bench/bare_app.py;
- ``bare+passthrough``: an empty pure ASGI middleware around it (the cost of one layer);
- ``bare+middleware``: hostcore's RequestContextMiddleware around it (no client
  resolution, no activity observer);
- ``bare+middleware+id``: the same with a client-supplied X-Request-ID (no id generated);
- ``hostcore``: ``create_app(settings)`` as ``hostcore serve`` builds it, lifespan started;
- ``hostcore-no-activity``: the same with ``activity.enabled = false``;

Each hostcore variant is built, with fresh data/log/run dirs in a temp dir, and
started (lifespan) afresh for each measurement, outside the clock; its shutdown is
inside the clock, so the activity rows it buffered are written within the measurement,
and its background tasks run only while it is measured. ``--profile NAME`` prints a
cProfile of one variant instead (startup included). Nothing listens on any port.

    .venv/bin/python bench/asgi_overhead.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _load import HEALTH_PATH, LOOPBACK, median
from bare_app import app as bare_app
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostcore.app import create_app
from hostcore.config import load_settings
from hostcore.middleware import RequestContextMiddleware

EXPECTED_BODY = b'{"status":"ok"}'
ATTEMPTS = 3


def health_scope(extra_headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    """What uvicorn's httptools protocol passes for wrk's ``GET /api/v1/health``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": (LOOPBACK, 8000),
        "client": (LOOPBACK, 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": HEALTH_PATH,
        "raw_path": HEALTH_PATH.encode(),
        "query_string": b"",
        "headers": [(b"host", f"{LOOPBACK}:8000".encode()), *(extra_headers or [])],
        "state": {},
    }


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Sink:
    """The ``send`` callable: keeps the status and body of the last answer."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body = message.get("body", b"")


class Passthrough:
    """The cheapest pure ASGI middleware: the floor cost of one more layer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Variant:
    """An app, or a factory for a hostcore app that is started (lifespan) per measurement."""

    app: ASGIApp | None = None
    factory: Callable[[], FastAPI] | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


async def _call(app: ASGIApp, scope: dict[str, Any], sink: Sink) -> None:
    await app(dict(scope), _receive, sink)


async def serve(variant: Variant, requests: int) -> float:
    """Process CPU seconds for ``requests`` requests, one task each, after one checked request.

    A hostcore variant is built and started (lifespan) before the clock starts; its
    shutdown runs inside the measurement, so the activity rows it still buffers are
    written there (shutdown itself adds a few milliseconds, well under 1 us per request
    at the default --requests). Its background tasks run only while it is measured.
    """
    async with AsyncExitStack() as stack:
        app: ASGIApp
        if variant.factory is not None:
            fastapi_app = variant.factory()
            await stack.enter_async_context(fastapi_app.router.lifespan_context(fastapi_app))
            app = fastapi_app
        else:
            assert variant.app is not None
            app = variant.app
        scope = health_scope(variant.headers)
        sink = Sink()
        loop = asyncio.get_running_loop()
        await loop.create_task(_call(app, scope, sink))  # builds the middleware stack
        if sink.status != 200 or sink.body != EXPECTED_BODY:
            raise SystemExit(f"unexpected answer {sink.status} {sink.body!r}")
        started = time.process_time()
        for _ in range(requests):
            await loop.create_task(_call(app, scope, sink))
        await stack.aclose()
        return time.process_time() - started


def run_loop(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run on uvloop when installed, as uvicorn's "auto" loop does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def hostcore_factory(workdir: Path, name: str, **env: str) -> Callable[[], FastAPI]:
    """Builds a fresh hostcore app, with fresh data/log/run dirs, at each call.

    Fresh dirs per app: an instance whose shutdown failed may leave its SQLite file locked.
    """
    instances = itertools.count(1)

    def build() -> FastAPI:
        home = workdir / name / str(next(instances))
        settings = load_settings(
            environ={
                "HOSTCORE_DATA_DIR": str(home / "data"),
                "HOSTCORE_LOG_DIR": str(home / "log"),
                "HOSTCORE_RUN_DIR": str(home / "run"),
                "HOSTCORE_LOGGING__ACCESS_LOG": "false",
                **env,
            },
            system_config=workdir / "absent.toml",
            local_config=workdir / "absent.toml",
        )
        app = create_app(settings)
        return app

    return build


def build_variants(workdir: Path) -> dict[str, Variant]:
    wrapped = RequestContextMiddleware(
        bare_app,
        max_body_bytes=1024 * 1024,
        access_log_enabled=False,
        unavailable=lambda _path: None,
        caller=lambda _scope: (LOOPBACK, True),
    )
    given_id = [(b"x-request-id", b"0123456789abcdef0123456789abcdef")]
    return {
        "bare": Variant(bare_app),
        "bare+passthrough": Variant(Passthrough(bare_app)),
        "bare+middleware": Variant(wrapped),
        "bare+middleware+id": Variant(wrapped, headers=given_id),
        "hostcore": Variant(factory=hostcore_factory(workdir, "hostcore")),
        "hostcore-no-activity": Variant(
            factory=hostcore_factory(
                workdir, "hostcore-no-activity", HOSTCORE_ACTIVITY__ENABLED="false"
            )
        ),
    }


async def measure_all(workdir: Path, requests: int, rounds: int) -> dict[str, list[float]]:
    variants = build_variants(workdir)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = await serve_retrying(name, variants[name], requests)
            samples[name].append(seconds / requests * 1e6)
    return samples


async def serve_retrying(name: str, variant: Variant, requests: int) -> float:
    """``serve``, repeated (at most ATTEMPTS times) when the app's startup or shutdown fails.

    A failed lifespan would put its error handling (e.g. a 5 s SQLite busy wait) into
    the measurement; it is reported on stderr and the measurement is taken again.
    """
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await serve(variant, requests)
        except Exception as exc:
            first_line = (str(exc).splitlines() or [""])[0][:160]
            print(
                f"warning: {name}: attempt {attempt}/{ATTEMPTS} failed in startup/shutdown: "
                f"{type(exc).__name__}: {first_line}",
                file=sys.stderr,
                flush=True,
            )
    raise SystemExit(f"{name}: {ATTEMPTS} attempts failed")


async def profile_one(workdir: Path, name: str, requests: int) -> str:
    variants = build_variants(workdir)
    if name not in variants:
        raise SystemExit(f"--profile takes one of {', '.join(variants)}")
    profile = cProfile.Profile()
    profile.enable()
    await serve(variants[name], requests)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(40)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per variant/round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--profile", metavar="VARIANT", help="cProfile this variant instead")
    args = parser.parse_args()
    if not (1 <= args.requests <= 10_000_000 and 1 <= args.rounds <= 100):
        parser.error("--requests must be 1..10000000 and --rounds 1..100")
    with tempfile.TemporaryDirectory(prefix="hostcore-asgi-bench-") as tmp:
        workdir = Path(tmp)
        if args.profile:
            print(run_loop(lambda: profile_one(workdir, args.profile, args.requests)))
            return 0
        samples: dict[str, list[float]] = run_loop(
            lambda: measure_all(workdir, args.requests, args.rounds)
        )
    base = median(samples["bare"])
    print(f"in-process ASGI, GET {HEALTH_PATH}: CPU us/request (median of {args.rounds} rounds)")
    print(f"{'variant':<24}{'us/req':>8}{'vs bare':>9}{'extra us':>10}   rounds")
    for name, values in samples.items():
        us = median(values)
        rounds = " ".join(f"{v:.1f}" for v in values)
        print(f"{name:<24}{us:>8.1f}{base / us:>9.3f}{us - base:>+10.1f}   {rounds}")
    print("(vs bare = bare us / variant us: the throughput ratio if the app were all the work)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

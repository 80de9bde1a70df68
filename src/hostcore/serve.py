"""Running the app: one uvicorn process, or gunicorn with uvicorn workers.

hostcore binds the listening socket itself (:mod:`hostcore.listen`) and hands it
to either server, with the same protocol (:mod:`hostcore.protocol`: header
limits, timeouts, the unix-socket peer's credentials). Workers are forked from the
master that built the app (:mod:`hostcore.workers`, imported only when there are
workers), so configuration never travels through temporary files. ``--reload`` is the
exception: uvicorn spawns a fresh interpreter, so the CLI's --config/--set travel
in one environment variable.

Reload (SIGHUP, or ``hostcore reload``) re-reads the layered configuration: the
files, and the --config/--set the server started with; the environment is the
process's own. It is checked as a start checks it, by building the app; one that
fails is refused, the server keeps the configuration it has and says why (the
log, and the outcome ``hostcore reload`` prints). One that passes is applied
without failing a request:

- gunicorn: the master keeps it and the app it built while checking it, and
  replaces its workers (gunicorn's own HUP): new workers fork from that app while
  the old ones finish their requests.
- one uvicorn process: the server stops accepting, finishes the requests under
  way, shuts the app down, then serves the new app on the same socket. One
  process stays one process (a small device, a developer's terminal) with the pid
  its supervisor knows; the socket is never closed, so a connection that arrives
  in between waits in the kernel's queue instead of being refused; and the old
  app has shut down before the new one starts, so no plugin ever has two
  instances alive in one process (module state, a D-Bus name, a device). The
  price is a pause, the drain plus the new app's startup, during which requests
  wait; none fails. Running gunicorn with one worker would give the same with a
  second process, and re-executing would add an interpreter's start to the pause.

Where and how the server listens (``server.host``, ``port``, ``uds``,
``uds_mode``, ``uds_group``, and ``workers`` of one process) and ``run_dir``
take effect at the next start: the socket is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from hostcore.app import create_app
from hostcore.config import (
    CLI_LAYERS_ENV,
    Settings,
    cli_layers_to_environment,
    load_settings,
)
from hostcore.control import ServerRecord
from hostcore.errors import ConfigError, PluginError
from hostcore.events import end_streams
from hostcore.files import DIRECTORY_LIMIT, checked_file, private_directory
from hostcore.listen import close_listener, describe, open_listener
from hostcore.logging import configure_logging, prepare_log_dirs
from hostcore.protocol import server_protocols
from hostcore.security.secret_files import PASSABLE_DIRECTORY, group_reads_a_secret

log = logging.getLogger(__name__)

LISTENER_KEYS = ("host", "port", "uds", "uds_mode", "uds_group")
TICK_S = 1.0  # one uvicorn process's housekeeping tick (uvicorn's own: 0.1 s)
TICKS_PER_SECOND = 10  # of uvicorn's on_tick counter


@dataclass(frozen=True)
class CliLayers:
    """The --config and --set the server started with; a reload reads them again."""

    config: Path | None = None
    overrides: tuple[str, ...] = ()

    def load(self) -> Settings:
        return load_settings(config_file=self.config, overrides=self.overrides)


@dataclass(frozen=True)
class Reloaded:
    settings: Settings
    app: FastAPI


def serve(settings: Settings, layers: CliLayers, *, code_reload: bool) -> None:
    """``hostcore serve``: check, listen, then run until stopped.

    Raises ConfigError or PluginError for anything that stops the start, before the
    store is touched: a bad configuration, an unsafe file, an address in use.
    """
    multiprocess = settings.server.workers > 1
    if multiprocess and code_reload:
        raise ConfigError("--reload works with one worker only")
    configure_logging(settings, rotate=not multiprocess and not code_reload)
    secure_data_dir(settings)
    writable_run_dir(settings.run_dir)
    listener = open_listener(settings.server)
    owner = os.getpid()
    try:
        # Build the app once here so config errors and conflicts stop the start with a
        # clear message, not inside a worker; gunicorn's workers fork from it. One
        # process serves it alone: state the workers would share (rate-limit counters)
        # stays in its memory.
        # (In a list: the server it is handed to holds the only reference, and lets it
        # go when a reload replaces it.)
        built = [create_app(settings, single_process=not multiprocess)]
        if code_reload:
            run_uvicorn_reloading_code(settings, listener, layers)
            return
        # The pid file is written once the server takes SIGHUP (see ServerRecord.started).
        record = ServerRecord(settings.run_dir)
        try:
            if multiprocess:
                # gunicorn is imported by the servers that use it, not by one process.
                from hostcore.workers import run_gunicorn

                run_gunicorn(settings, built.pop(), listener, layers, record, debug=settings.debug)
            else:
                run_uvicorn(settings, built.pop(), listener, layers, record)
        finally:
            record.stopped()
    finally:
        if os.getpid() == owner and listener.fileno() != -1:
            close_listener(listener)


def writable_run_dir(run_dir: Path) -> None:
    """The run directory (pid and reload files, the rate-limit table of several workers)
    exists or is created, and hostcore's user may write in it; else ConfigError."""
    try:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory {run_dir}: {exc.strerror}") from None
    if not run_dir.is_dir():
        raise ConfigError(f"the run directory {run_dir} is not a directory")
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"the run directory {run_dir} is not writable by this user")


def secure_data_dir(settings: Settings) -> None:
    """The data directory and the secrets in it: private, fixed or refused (hostcore.files).
    Passable (0711) when a group reads a secret in it (hostcore.security.secret_files)."""
    limit = (
        DIRECTORY_LIMIT | PASSABLE_DIRECTORY if group_reads_a_secret(settings) else DIRECTORY_LIMIT
    )
    private_directory(settings.data_dir, what="data directory", limit=limit)
    checked_file(settings.data_dir / "master.key", what="master key")
    checked_file(settings.hmac_secret_path(), what="HMAC secret")


def reread(
    current: Settings,
    layers: CliLayers,
    record: ServerRecord,
    *,
    kept: Sequence[str],
    single_process: bool = False,
) -> Reloaded | None:
    """The configuration read again and checked by building the app; None when refused.

    ``single_process``: the app will be served by this one process alone.
    """
    try:
        fresh = layers.load()
        prepare_log_dirs(fresh)
        secure_data_dir(fresh)
        app = create_app(fresh, single_process=single_process)
    except (ConfigError, PluginError) as exc:
        first, *rest = str(exc).splitlines() or [""]
        detail = " ".join([first, "; ".join(line.strip() for line in rest)]).strip()
        _refused(record, detail)
        return None
    except Exception as exc:  # a reload must never take the running server down
        log.exception("building the app from the new configuration failed")
        _refused(record, f"building the app failed: {type(exc).__name__}")
        return None
    changed = [key for key in kept if _value(current, key) != _value(fresh, key)]
    if changed:
        log.warning("%s changed: takes effect at the next start", ", ".join(changed))
    log.info("configuration reloaded")
    later = f" ({', '.join(changed)}: at the next start)" if changed else ""
    record.reloaded(applied=True, detail=f"configuration reloaded{later}")
    return Reloaded(fresh, app)


def _refused(record: ServerRecord, detail: str) -> None:
    log.error("configuration not reloaded, the server keeps its own: %s", detail)
    record.reloaded(applied=False, detail=detail)


def _value(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


# --- one uvicorn process -----------------------------------------------------------------


def uvicorn_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    server = settings.server
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        timeout_graceful_shutdown=server.graceful_timeout_s,
        **server_protocols(server),
    )


class _Signals:
    """SIGHUP asks for a reload; SIGTERM/SIGINT between two servers ask to stop.

    (A running uvicorn server handles SIGTERM/SIGINT itself and hands them on here.)
    """

    def __init__(self) -> None:
        self.reload = False
        self.stop = False
        self.listener: Callable[[], None] | None = None  # told of each signal
        self._previous = {
            sig: signal.signal(sig, self._handle)
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
        }

    def _handle(self, sig: int, _frame: FrameType | None) -> None:
        if sig == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = True
        if self.listener is not None:
            self.listener()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _ReloadingServer(uvicorn.Server):
    """A uvicorn server that stops to be replaced when the configuration is reloaded.

    It ticks once a second where uvicorn ticks ten times (the tick refreshes the Date
    header, once a second in both, and looks for a request to stop or reload): an idle
    device's process wakes for nothing nine times a second less. A signal wakes it at
    once, so stopping and reloading wait no longer than before.
    """

    def __init__(
        self, config: uvicorn.Config, signals: _Signals, reread: Callable[[], Reloaded | None]
    ) -> None:
        super().__init__(config)
        self.signals = signals
        self.reread = reread
        self.replacement: Reloaded | None = None
        self._tick: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop, self._tick = asyncio.get_running_loop(), asyncio.Event()
        self.signals.listener = self.wake
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + TICKS_PER_SECOND) % 864000  # uvicorn's on_tick counts tenths
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._tick.wait()
            self._tick.clear()
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.wake()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        end_streams(self.config.app)  # before uvicorn waits for the connections
        await super().shutdown(sockets=sockets)

    def wake(self) -> None:
        """Tick now (safe from a signal handler: through the loop's own wake-up)."""
        loop, tick = self._loop, self._tick
        if loop is not None and tick is not None and not loop.is_closed():
            loop.call_soon_threadsafe(tick.set)

    async def on_tick(self, counter: int) -> bool:
        if self.signals.stop:
            self.should_exit = True
        elif self.signals.reload and not self.should_exit:
            self.signals.reload = False
            self.replacement = await asyncio.to_thread(self.reread)
            self.should_exit = self.replacement is not None
        return await super().on_tick(counter)


def run_uvicorn(
    settings: Settings,
    app: FastAPI,
    listener: socket.socket,
    layers: CliLayers,
    record: ServerRecord,
) -> None:
    signals = _Signals()
    record.started()
    kept = [f"server.{key}" for key in (*LISTENER_KEYS, "workers")] + ["run_dir"]
    try:
        while not signals.stop:
            again = functools.partial(
                reread, settings, layers, record, kept=kept, single_process=True
            )
            server = _ReloadingServer(uvicorn_config(settings, app), signals, again)
            log.info("serving on %s", describe(settings.server))
            # uvicorn closes the socket it is given when it stops: give it a duplicate.
            server.run(sockets=[listener.dup()])
            if server.replacement is None:
                return
            settings, app = server.replacement.settings, server.replacement.app
            configure_logging(settings, rotate=True)
    finally:
        signals.restore()


def run_uvicorn_reloading_code(
    settings: Settings, listener: socket.socket, layers: CliLayers
) -> None:
    """``--reload`` (development): uvicorn restarts a fresh interpreter on code changes,
    with hostcore's protocol at its default limits."""
    os.environ[CLI_LAYERS_ENV] = cli_layers_to_environment(layers.config, layers.overrides)
    listener.set_inheritable(True)
    uvicorn.run(
        "hostcore.asgi:create_app_from_environment",
        factory=True,
        reload=True,
        fd=listener.fileno(),
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        timeout_graceful_shutdown=settings.server.graceful_timeout_s,
        http="hostcore.protocol:HostcoreHttpProtocol",
        ws="hostcore.protocol:HostcoreWebSocketProtocol",
        timeout_keep_alive=settings.server.keepalive_timeout_s,
    )

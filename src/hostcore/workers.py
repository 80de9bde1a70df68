"""Several processes: gunicorn's master with uvicorn workers (``server.workers`` > 1).

Imported only by a server that runs workers (gunicorn costs a single process memory
for nothing).

The master builds the app once (``serve`` builds it to check the configuration) and
gunicorn forks its workers from it (``preload_app``): the imported libraries, the
routes and their validators are built once and their pages stay shared between the
workers, instead of every worker importing and building its own copy. Nothing in
``create_app`` opens a connection, a file or a thread: each worker opens its own in
the app's lifespan, after the fork. Before forking, the master moves what it built
out of the garbage collector's sight (``gc.freeze``), so a collection in a worker does
not write to, and so copy, every shared page.

A reload (SIGHUP) reads the configuration again in the master, which builds the new
app while checking it (``serve.reread``); new workers fork from that app while the
old ones finish their requests.
"""

from __future__ import annotations

import gc
import logging
import socket
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from uvicorn_worker import UvicornWorker

from hostcore.config import ServerSettings, Settings
from hostcore.control import ServerRecord
from hostcore.events import end_streams
from hostcore.listen import describe
from hostcore.logging import logging_config
from hostcore.protocol import server_protocols
from hostcore.serve import LISTENER_KEYS, CliLayers, reread

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        end_streams(self.config.app)  # before uvicorn waits for the connections
        await super().shutdown(sockets=sockets)


class HostcoreUvicornWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    """The maintained uvicorn worker, with hostcore's protocol and its own access line."""

    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012 - overrides the base class attribute
        "loop": "auto",
        "http": "auto",
        "access_log": False,
        "lifespan": "on",
        "server_header": False,
        # The peer address stays the real one; hostcore decides which proxies to trust.
        "proxy_headers": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The base class makes uvicorn's loggers share gunicorn.error's handler list (the
        # list object itself), and it runs in the master, which builds every worker: a
        # reload's dictConfig, emptying uvicorn.error, then emptied gunicorn.error too.
        # hostcore's logging config routes uvicorn's loggers itself.
        for name, propagate in (("uvicorn.error", True), ("uvicorn.access", False)):
            logger = logging.getLogger(name)
            logger.handlers = []
            logger.propagate = propagate
        settings = getattr(self.app, "settings", None)
        server = settings.server if isinstance(settings, Settings) else ServerSettings()
        for name, value in server_protocols(server).items():
            setattr(self.config, name, value)

    async def _serve(self) -> None:
        """The base class's, with a server that ends the event streams when it stops."""
        self.config.app = self.wsgi
        server = _Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


class HostcoreGunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(
        self,
        settings: Settings,
        app: FastAPI,
        *,
        listener_fd: int,
        layers: CliLayers,
        record: ServerRecord,
        debug: bool,
    ) -> None:
        self.settings = settings
        self.built = app
        self.listener_fd = listener_fd
        self.layers = layers
        self.record = record
        self.debug = debug
        super().__init__()

    def load_config(self) -> None:
        server = self.settings.server
        options: dict[str, Any] = {
            # hostcore bound the socket (mode, group, errors); gunicorn takes it as is.
            "bind": [f"fd://{self.listener_fd}"],
            "workers": server.workers,
            "worker_class": f"{__name__}.HostcoreUvicornWorker",
            "graceful_timeout": server.graceful_timeout_s,
            "keepalive": server.keepalive_timeout_s,
            "proc_name": "hostcore",
            "logconfig_dict": logging_config(self.settings, debug=self.debug, rotate=False),
            "accesslog": None,
            # Workers fork from the app the master built (see the module's docstring).
            "preload_app": True,
            # Two servers on one machine (tests, side-by-side installs) must not share
            # gunicorn's default control socket path.
            "control_socket_disable": True,
            # The master handles SIGHUP from here on: tell `hostcore reload` where it is.
            "when_ready": lambda _arbiter: self.record.started(),
            "pre_fork": lambda _arbiter, _worker: gc.freeze(),
        }
        for key, value in options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def reload(self) -> None:
        """gunicorn's HUP: read the configuration again; the new workers get its app."""
        kept = [f"server.{key}" for key in LISTENER_KEYS] + ["run_dir"]
        reloaded = reread(self.settings, self.layers, self.record, kept=kept)
        if reloaded is not None:
            self.settings = reloaded.settings
            self.built = reloaded.app
            self.callable = None
            # The old app is no longer anyone's: collect it now, before the next fork
            # freezes what is left (its reference cycles would be frozen with it).
            gc.unfreeze()
            gc.collect()
        super().reload()

    def load(self) -> FastAPI:
        return self.built


def run_gunicorn(
    settings: Settings,
    app: FastAPI,
    listener: socket.socket,
    layers: CliLayers,
    record: ServerRecord,
    *,
    debug: bool,
) -> None:
    log.info(
        "starting gunicorn with %d uvicorn workers on %s",
        settings.server.workers,
        describe(settings.server),
    )
    listener.set_inheritable(True)
    server = HostcoreGunicorn(
        settings, app, listener_fd=listener.detach(), layers=layers, record=record, debug=debug
    )
    del app  # the server holds it, and lets it go when a reload replaces it
    server.run()

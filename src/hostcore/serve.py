"""Running the app: one uvicorn process, or gunicorn with uvicorn workers.

Workers receive the already-loaded settings through fork (gunicorn's
``load()`` runs in each worker), so configuration never travels through
temporary files. ``--reload`` is the exception: uvicorn spawns a fresh
interpreter, so the CLI's --config/--set travel in one environment variable.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import uvicorn
from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker

from hostcore.app import create_app
from hostcore.config import CLI_LAYERS_ENV, Settings
from hostcore.logging import logging_config

log = logging.getLogger(__name__)


class HostcoreUvicornWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    """The maintained uvicorn worker, with hostcore's own access line instead of uvicorn's."""

    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012 - overrides the base class attribute
        "loop": "auto",
        "http": "auto",
        "access_log": False,
        "lifespan": "on",
        "server_header": False,
        # The peer address stays the real one; hostcore decides which proxies to trust.
        "proxy_headers": False,
    }


class HostcoreGunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(self, settings: Settings, *, debug: bool) -> None:
        self.settings = settings
        self.debug = debug
        super().__init__()

    def load_config(self) -> None:
        server = self.settings.server
        bind = f"unix:{server.uds}" if server.uds else f"{server.host}:{server.port}"
        options: dict[str, Any] = {
            "bind": [bind],
            "workers": server.workers,
            "worker_class": f"{__name__}.HostcoreUvicornWorker",
            "graceful_timeout": server.graceful_timeout_s,
            "proc_name": "hostcore",
            "logconfig_dict": logging_config(self.settings, debug=self.debug, rotate=False),
            "accesslog": None,
            "preload_app": False,
            # Two servers on one machine (tests, side-by-side installs) must not share
            # gunicorn's default control socket path.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.settings)


def run_gunicorn(settings: Settings, *, debug: bool) -> None:
    log.info(
        "starting gunicorn with %d uvicorn workers on %s",
        settings.server.workers,
        settings.server.uds or f"{settings.server.host}:{settings.server.port}",
    )
    HostcoreGunicorn(settings, debug=debug).run()


def run_uvicorn(settings: Settings, *, reload: bool, cli_layers: str) -> None:
    server = settings.server
    common: dict[str, Any] = {
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": server.graceful_timeout_s,
    }
    where: dict[str, Any] = (
        {"uds": str(server.uds)} if server.uds else {"host": server.host, "port": server.port}
    )
    if reload:
        os.environ[CLI_LAYERS_ENV] = cli_layers
        uvicorn.run(
            "hostcore.asgi:create_app_from_environment",
            factory=True,
            reload=True,
            **where,
            **common,
        )
        return
    uvicorn.Server(uvicorn.Config(create_app(settings), **where, **common)).run()

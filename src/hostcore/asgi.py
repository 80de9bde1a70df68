"""Import strings for ASGI servers: ``hostcore.asgi:app`` or the factory.

``gunicorn -k uvicorn_worker.UvicornWorker hostcore.asgi:app`` and
``uvicorn hostcore.asgi:app`` build the app from the layered configuration
the first time ``app`` is looked up, never at import time.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from hostcore.app import create_app
from hostcore.config import cli_layers_from_environment, load_settings
from hostcore.logging import configure_logging


def create_app_from_environment() -> FastAPI:
    """Load the layered config (and any --config/--set a parent CLI passed), build the app."""
    config_file, overrides = cli_layers_from_environment(os.environ)
    settings = load_settings(config_file=config_file, overrides=overrides)
    # Under an external server several processes may share the log files.
    configure_logging(settings, rotate=False)
    return create_app(settings)


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = create_app_from_environment()
    return _app

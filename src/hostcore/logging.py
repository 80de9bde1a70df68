"""The three log sinks, one format everywhere, the request id on every line.

- console (stderr, so the journal under systemd): INFO and up, DEBUG with --debug;
- ``<log_dir>/app.log``: INFO and up, always;
- ``<log_dir>/debug/debug.log``: DEBUG and up, always (tmpfs in production).

With one process the files rotate by size in-process. With several processes
(gunicorn master and workers share the files) nobody rotates in-process:
files are opened with O_APPEND through WatchedFileHandler, which reopens them
after logrotate moves them, so two processes never rotate one file.
"""

from __future__ import annotations

import logging
import logging.config
from pathlib import Path
from typing import Any

from hostcore.config import Settings
from hostcore.context import request_id_var

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamp every record with the id of the request being served (or '-')."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def log_files(settings: Settings) -> tuple[Path, Path]:
    return settings.log_dir / "app.log", settings.log_dir / "debug" / "debug.log"


def _file_handler(path: Path, level: str, settings: Settings, rotate: bool) -> dict[str, Any]:
    handler: dict[str, Any] = {
        "level": level,
        "formatter": "hostcore",
        "filters": ["request_id"],
        "filename": str(path),
        "encoding": "utf-8",
    }
    if rotate and settings.logging.max_bytes > 0:
        handler["class"] = "logging.handlers.RotatingFileHandler"
        handler["maxBytes"] = settings.logging.max_bytes
        handler["backupCount"] = settings.logging.backup_count
    else:
        handler["class"] = "logging.handlers.WatchedFileHandler"
    return handler


def logging_config(settings: Settings, *, debug: bool, rotate: bool) -> dict[str, Any]:
    """A dictConfig for hostcore, uvicorn and gunicorn alike (gunicorn takes it as-is)."""
    app_log, debug_log = log_files(settings)
    handlers = ["console", "app", "debug"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"hostcore": {"format": LOG_FORMAT}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "level": "DEBUG" if debug else "INFO",
                "formatter": "hostcore",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            },
            "app": _file_handler(app_log, "INFO", settings, rotate),
            "debug": _file_handler(debug_log, "DEBUG", settings, rotate),
        },
        "root": {"level": "DEBUG", "handlers": handlers},
        "loggers": {
            # gunicorn's worker hands these handlers to uvicorn.error, so they must be
            # attached here rather than inherited from the root.
            "gunicorn.error": {"level": "DEBUG", "handlers": handlers, "propagate": False},
            "uvicorn": {"level": "DEBUG", "handlers": [], "propagate": True},
            "uvicorn.error": {"level": "DEBUG", "handlers": [], "propagate": True},
            # hostcore writes its own access line (with route, duration, request id).
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            # Protocol chatter that would drown debug.log.
            "asyncio": {"level": "INFO"},
            "multipart": {"level": "INFO"},
            "watchfiles": {"level": "WARNING"},
            # HTTP clients log whole URLs, query strings (and so tokens) included.
            "httpx": {"level": "WARNING"},
            "httpx2": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            # The SQLite driver logs every statement with its parameters at DEBUG.
            "aiosqlite": {"level": "INFO"},
        },
    }


def prepare_log_dirs(settings: Settings) -> None:
    for path in log_files(settings):
        path.parent.mkdir(parents=True, exist_ok=True)


def configure_logging(
    settings: Settings, *, debug: bool | None = None, rotate: bool = True
) -> None:
    """Install the three sinks in this process."""
    prepare_log_dirs(settings)
    debug = settings.debug if debug is None else debug
    logging.config.dictConfig(logging_config(settings, debug=debug, rotate=rotate))
    logging.captureWarnings(True)

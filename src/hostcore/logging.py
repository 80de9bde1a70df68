"""The three log sinks, one format everywhere, the request id on every line.

- console (stderr, so the journal under systemd): INFO and up, DEBUG with --debug;
- ``<log_dir>/app.log``: INFO and up, always;
- ``<log_dir>/debug/debug.log``: DEBUG and up, always (tmpfs in production).

With one process the files rotate by size in-process. With several processes
(gunicorn master and workers share the files) nobody rotates in-process:
files are opened with O_APPEND through WatchedFileHandler, which reopens them
after logrotate moves them, so two processes never rotate one file.

What reaches a sink is made safe in one place, the formatter, whoever logged it:

- control characters (CR, LF, NUL, ESC …) in a message are escaped (``\\n``,
  ``\\x00``), so a client's path or header can never start a line of its own
  and forge a record; a traceback keeps its lines, each indented, so a line that
  starts with a timestamp always starts a record;
- credentials are replaced by ``********``: the value of an Authorization,
  Cookie or signature header, a bearer token, anything shaped like a JWT, and a
  query parameter named like a secret (``?access_token=…``);
- the websocket library's DEBUG chatter (every handshake header, every frame) is
  dropped: frames can carry anything, and debug.log is written always.

Log directories are 0700 and files 0600 when created (:mod:`hostcore.files`),
also when a handler reopens or rotates a file.
"""

from __future__ import annotations

import io
import logging
import logging.config
import logging.handlers
import re
from pathlib import Path
from typing import Any, cast

import websockets

from hostcore.config import Settings
from hostcore.context import request_id_var
from hostcore.files import private_directory, private_file, private_opener
from hostcore.redaction import REDACTED, is_credential_parameter, redact_url

FILTERS = ["request_id", "websocket_chatter"]
LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamp every record with the id of the request being served (or '-')."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


# Control characters, line separators and lone surrogates (which no file can hold).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CREDENTIALS = [
    # A header as a line ("Authorization: Bearer x"), an assignment or a dict item.
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization|(?:set-)?cookie|x-hostcore-signature)"
            r"(['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n,}]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
]
_WEBSOCKETS_SOURCE = str(Path(websockets.__file__).parent)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


_LOOSE_PARAMETER = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s'\"]*)")


def redact(text: str) -> str:
    """``text`` with every credential it contains replaced by ``********``: URL
    credentials by the rules ``config show`` uses (:mod:`hostcore.redaction`), query
    parameters even outside a URL, headers, bearer and basic credentials, JWTs."""
    text = redact_url(text)
    text = _LOOSE_PARAMETER.sub(_parameter, text)
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


def _parameter(match: re.Match[str]) -> str:
    if is_credential_parameter(match["name"]):
        return f"{match['head']}{REDACTED}"
    return match[0]


class SafeFormatter(logging.Formatter):
    """hostcore's one formatter: escapes control characters, indents tracebacks and
    redacts credentials, whatever the logger (hostcore, uvicorn, gunicorn, a plugin)."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = _CONTROL.sub(_escape, redact(self.formatMessage(record)))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        details = [part for part in (record.exc_text, record.stack_info) if part]
        if record.stack_info:
            details[-1] = self.formatStack(record.stack_info)
        for detail in details:
            clean = _CONTROL_BUT_NEWLINE.sub(_escape, redact(detail.rstrip("\n")))
            text += "".join(f"\n  {line}" for line in clean.split("\n"))
        return text


class WebsocketChatterFilter(logging.Filter):
    """Drop the websocket library's DEBUG records (handshake headers, frames), on every
    sink: uvicorn hands the library its ``uvicorn.error`` logger, which logs DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO or not record.pathname.startswith(_WEBSOCKETS_SOURCE)


class _PrivateFiles(logging.FileHandler):
    def _open(self) -> io.TextIOWrapper:
        stream = open(  # noqa: SIM115 - the handler owns and closes the stream
            self.baseFilename,
            self.mode,
            encoding=self.encoding,
            errors=self.errors,
            opener=private_opener,
        )
        return cast(io.TextIOWrapper, stream)


class PrivateRotatingFileHandler(_PrivateFiles, logging.handlers.RotatingFileHandler):
    """Rotates by size; every file it creates is 0600."""


class PrivateWatchedFileHandler(_PrivateFiles, logging.handlers.WatchedFileHandler):
    """Reopens a file logrotate moved; every file it creates is 0600."""


def log_files(settings: Settings) -> tuple[Path, Path]:
    return settings.log_dir / "app.log", settings.log_dir / "debug" / "debug.log"


def _file_handler(path: Path, level: str, settings: Settings, rotate: bool) -> dict[str, Any]:
    handler: dict[str, Any] = {
        "level": level,
        "formatter": "hostcore",
        "filters": list(FILTERS),
        "filename": str(path),
        "encoding": "utf-8",
    }
    if rotate and settings.logging.max_bytes > 0:
        handler["class"] = f"{__name__}.PrivateRotatingFileHandler"
        handler["maxBytes"] = settings.logging.max_bytes
        handler["backupCount"] = settings.logging.backup_count
    else:
        handler["class"] = f"{__name__}.PrivateWatchedFileHandler"
    return handler


def logging_config(settings: Settings, *, debug: bool, rotate: bool) -> dict[str, Any]:
    """A dictConfig for hostcore, uvicorn and gunicorn alike (gunicorn takes it as-is)."""
    app_log, debug_log = log_files(settings)
    handlers = ["console", "app", "debug"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "websocket_chatter": {"()": WebsocketChatterFilter},
        },
        "formatters": {"hostcore": {"()": SafeFormatter, "fmt": LOG_FORMAT}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "level": "DEBUG" if debug else "INFO",
                "formatter": "hostcore",
                "filters": list(FILTERS),
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
    """The log directories and files, private (or fixed, or refused: see hostcore.files)."""
    for path in log_files(settings):
        private_directory(path.parent, what="log directory")
        private_file(path, what="log file")


def configure_logging(
    settings: Settings, *, debug: bool | None = None, rotate: bool = True
) -> None:
    """Install the three sinks in this process."""
    prepare_log_dirs(settings)
    debug = settings.debug if debug is None else debug
    logging.config.dictConfig(logging_config(settings, debug=debug, rotate=rotate))
    logging.captureWarnings(True)

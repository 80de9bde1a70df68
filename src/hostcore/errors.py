"""The one error tree. Each error carries its HTTP status; one handler
(:mod:`hostcore.error_handling`) maps it to JSON.

Only the standard library here: the command line imports these errors, and must not
pay for the web framework, or pydantic, to name them.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

# The exit status of a command that failed on its input (a usage or configuration
# error), and of one that failed doing its work.
USAGE_ERROR = 2
RUNTIME_ERROR = 1


def one_line(message: str) -> str:
    """A message as one line: ``"invalid configuration:\\n  a\\n  b"`` becomes
    ``"invalid configuration: a; b"``."""
    head, *rest = [line.strip() for line in message.splitlines() if line.strip()] or [""]
    return f"{head} {'; '.join(rest)}" if rest else head


class HostcoreError(Exception):
    """Base of every error hostcore raises on purpose."""

    status_code: int = 500

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers

    @property
    def name(self) -> str:
        return type(self).__name__


class BadRequest(HostcoreError):
    status_code = 400


class Unauthorized(HostcoreError):
    """No or bad credentials; the answer says how to authenticate (RFC 9110 §11.6.1)."""

    status_code = 401
    CHALLENGE = 'Bearer realm="hostcore"'

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": self.CHALLENGE, **(headers or {})})


class Forbidden(HostcoreError):
    status_code = 403


class NotFound(HostcoreError):
    status_code = 404


class RequestTimeout(HostcoreError):
    """The client did not send its request (headers, then body) in time."""

    status_code = 408


class Conflict(HostcoreError):
    status_code = 409


class Unprocessable(HostcoreError):
    """The request is well formed, but this host cannot do what it asks (422)."""

    status_code = 422


class PayloadTooLarge(HostcoreError):
    status_code = 413


class TooManyRequests(HostcoreError):
    status_code = 429


class RequestHeadersTooLarge(HostcoreError):
    """The request line and headers are too long, or there are too many header fields."""

    status_code = 431


class CommandFailed(HostcoreError):
    """A process ran and exited unsuccessfully."""

    status_code = 502


class UpstreamFailed(HostcoreError):
    """Something hostcore asked on the caller's behalf (the kernel, a remote service) refused
    or failed; the detail says what was asked, never what came back."""

    status_code = 502


class UpstreamTimeout(HostcoreError):
    """A remote service did not answer within its time limit."""

    status_code = 504


class Unavailable(HostcoreError):
    """Hardware, a daemon, a file or a command the request needs is absent."""

    status_code = 503


class CommandNotFound(Unavailable):
    """The executable a request needs is not installed."""


class PluginUnavailable(Unavailable):
    """The plugin that owns the route failed to start."""


class CommandTimeout(HostcoreError):
    """A process did not finish within its time limit and was killed."""

    status_code = 504


class ConfigError(Exception):
    """The configuration cannot be loaded; raised before any server starts."""


class PluginError(Exception):
    """Plugins cannot be assembled into an app (conflicts, bad hook results)."""


class ControlError(Exception):
    """The running server cannot be found or told something (``hostcore reload``)."""


# Websocket close codes for a refused handshake or an error (RFC 6455 §7.4.1).
WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013


# --- what OpenAPI shows of them ---------------------------------------------------


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route, so OpenAPI shows the errors it can answer.

    The bodies are referenced, not given as models: the app adds their schemas to the
    document (``hostcore.error_models``).
    """
    return {
        code: {
            "description": HTTPStatus(code).phrase,
            "content": {
                "application/json": {
                    "schema": {
                        "$ref": "#/components/schemas/hostcore."
                        + ("ValidationErrorRead" if code == 422 else "ErrorRead")
                    }
                }
            },
        }
        for code in codes
    }

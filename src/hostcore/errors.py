"""The one error tree. Each error carries its HTTP status; one handler maps it to JSON."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from hostcore.context import request_id_var


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


# --- HTTP mapping: the one handler ------------------------------------------------

_MAX_FIELD_ERRORS = 20
WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013


def _status_name(status_code: int) -> str:
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        return "HTTPError"
    return "".join(word.capitalize() for word in phrase.replace("-", " ").split())


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the rejected input back: it may be huge or secret.
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in exc.errors()[:_MAX_FIELD_ERRORS]
    ]


def error_payload(
    exc: BaseException, request_method: str, request_path: str
) -> tuple[int, dict[str, Any], Mapping[str, str] | None]:
    """Status, JSON body and extra headers for any exception."""
    if isinstance(exc, HostcoreError):
        return exc.status_code, {"error": exc.name, "detail": exc.detail}, exc.headers
    if isinstance(exc, RequestValidationError):
        fields = _field_errors(exc)
        summary = "; ".join(f"{'.'.join(f['loc'])}: {f['msg']}" for f in fields[:5])
        body = {
            "error": "ValidationError",
            "detail": f"invalid request: {summary}",
            "errors": fields,
        }
        return 422, body, None
    if isinstance(exc, StarletteHTTPException):
        name = _status_name(exc.status_code)
        detail = exc.detail
        if exc.status_code == 404 and detail == HTTPStatus.NOT_FOUND.phrase:
            detail = f"no route matches {request_method} {request_path}"
        elif exc.status_code == 405 and detail == HTTPStatus.METHOD_NOT_ALLOWED.phrase:
            detail = f"method {request_method} is not allowed for {request_path}"
        return exc.status_code, {"error": name, "detail": str(detail)}, exc.headers
    return 500, {"error": "InternalError", "detail": "internal server error"}, None


def error_response(exc: BaseException, request_method: str, request_path: str) -> JSONResponse:
    status, body, headers = error_payload(exc, request_method, request_path)
    if status == 500:
        body["detail"] = f"internal server error (request id {request_id_var.get()})"
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


async def handle_error(request: HTTPConnection, exc: Exception) -> Response | None:
    """The one exception handler: every error becomes ``{"error", "detail"}`` JSON.

    A websocket cannot carry a JSON body: it is closed with a policy-violation code
    and the detail as the reason.
    """
    if isinstance(request, WebSocket):
        status, body, _ = error_payload(exc, "WS", request.url.path)
        code = WS_TRY_AGAIN_LATER if status in (429, 503) else WS_POLICY_VIOLATION
        await request.close(code=code, reason=str(body["detail"])[:120])
        return None
    return error_response(exc, request.scope.get("method", "GET"), request.url.path)


class ErrorRead(BaseModel):
    """The body of every error response."""

    error: str
    detail: str


class FieldErrorRead(BaseModel):
    loc: list[str]
    msg: str
    type: str


class ValidationErrorRead(ErrorRead):
    """The body of a 422: the summary plus every invalid field."""

    errors: list[FieldErrorRead]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route, so OpenAPI shows the errors it can answer."""
    return {
        code: {
            "model": ValidationErrorRead if code == 422 else ErrorRead,
            "description": HTTPStatus(code).phrase,
        }
        for code in codes
    }

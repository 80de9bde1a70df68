"""The one exception handler: every error becomes ``{"error", "detail"}`` JSON.

The HTTP side of :mod:`hostcore.errors`: the status, body and headers of any
exception, a 422 that never repeats the rejected input, and the handler the app
installs for requests and websockets.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, get_args

from fastapi.exceptions import RequestValidationError
from pydantic_core.core_schema import ErrorType
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from hostcore.context import request_id_var
from hostcore.errors import WS_POLICY_VIOLATION, WS_TRY_AGAIN_LATER, HostcoreError

_MAX_FIELD_ERRORS = 20


def _status_name(status_code: int) -> str:
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        return "HTTPError"
    return "".join(word.capitalize() for word in phrase.replace("-", " ").split())


# pydantic's own messages are templates filled with the schema's limits, patterns and
# choices. These carry text a validator wrote, or the rejected discriminator, and so
# may quote the input; so may any error type a validator made up.
_FREE_TEXT_ERROR_TYPES = frozenset({"value_error", "assertion_error", "union_tag_invalid"})
_PYDANTIC_ERROR_TYPES = frozenset(get_args(ErrorType))
_INVALID_VALUE = "Invalid value"
# A message repeats a value when it holds the value's first characters (this many,
# or all of a shorter value of at least _MIN_BARE_CHARS), or a quoted start of it.
_PROBE_CHARS = 12
_MIN_BARE_CHARS = 4
_QUOTES = ("'", '"', "`")
# A location names the schema's fields, except for keys the client made up.
_MAX_LOC_PART_CHARS = 64


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """The field list of a 422: where, what and which kind, never the rejected input.

    The input may be huge or secret: pydantic's ``input`` and ``ctx`` are dropped,
    a message that quotes the input anyway is replaced by a fixed one, and a key
    the client sent is shortened.
    """
    return [
        {
            "loc": [_loc_part(part) for part in error.get("loc", ())],
            "msg": _message(error),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()[:_MAX_FIELD_ERRORS]
    ]


def _loc_part(part: object) -> str:
    text = str(part)
    if len(text) <= _MAX_LOC_PART_CHARS:
        return text
    return text[: _MAX_LOC_PART_CHARS - 1] + "…"


def _message(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", ""))
    kind = error.get("type", "")
    free_text = kind in _FREE_TEXT_ERROR_TYPES or kind not in _PYDANTIC_ERROR_TYPES
    if free_text and _repeats(message, error.get("input")):
        return _INVALID_VALUE
    return message


def _repeats(message: str, value: object) -> bool:
    """Whether ``message`` quotes ``value``, whole or by its start."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str) or not value.strip():
        # Text only: a validator's message about a number names limits ("at most
        # 1000"), which the number's digits would match.
        return False
    head = value[:_PROBE_CHARS]
    if len(head) >= _MIN_BARE_CHARS and head in message:
        return True
    quoted_starts = (
        f"{quote}{head[:length]}{quote}" for quote in _QUOTES for length in range(1, len(head) + 1)
    )
    return any(start in message for start in quoted_starts)


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

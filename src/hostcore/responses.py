"""Answers encoded once and revalidated cheaply: for data many consumers poll.

A plugin that keeps a value many callers read (a sample taken every second, a
state that changes on a signal) encodes it once per change as an
:class:`Encoded` body with an entity tag, and answers every request with
:func:`revalidated`: the same bytes with ``ETag`` and ``Cache-Control:
no-cache``, or ``304 Not Modified`` when the caller's ``If-None-Match``
already names them. No serialization per request, and a poller that
revalidates gets no body at all until the value changes::

    @router.get("/stats", dependencies=[RequireScope("system:read")],
                response_model=SystemStatsRead, openapi_extra=CONDITIONAL_GET)
    async def stats(request: Request) -> Response:
        return revalidated(request, await request.app.state.system.stats_sample())

The route reads ``If-None-Match`` from the request itself rather than as a
FastAPI ``Header`` parameter, which FastAPI would parse and validate on every
request; ``CONDITIONAL_GET`` documents the header and the 304 in OpenAPI.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import HTTPConnection
from starlette.responses import Response

IF_NONE_MATCH = b"if-none-match"
_MAX_IF_NONE_MATCH = 1024  # longer is no tag we gave out

CONDITIONAL_GET: dict[str, Any] = {
    "parameters": [
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "The ETag of the copy you hold: 304 while it is still current "
            "(a value that names no tag we gave out, however long, just gets the body).",
            "schema": {"type": "string"},
        }
    ],
    "responses": {"304": {"description": "Not Modified: the copy you hold is current."}},
}


@dataclass(frozen=True, slots=True)
class Encoded:
    """A value encoded once: its JSON bytes and a strong entity tag (a digest of them),
    with the response headers that go with them, encoded once too."""

    body: bytes
    etag: str
    media_type: str = "application/json"
    # ETag and Cache-Control (a 304 carries these), then Content-Type and -Length.
    revalidation_headers: tuple[tuple[bytes, bytes], ...] = field(init=False)
    headers: tuple[tuple[bytes, bytes], ...] = field(init=False)

    def __post_init__(self) -> None:
        revalidation = ((b"etag", self.etag.encode()), (b"cache-control", b"no-cache"))
        content_length = b"%d" % len(self.body)
        content = ((b"content-type", self.media_type.encode()), (b"content-length", content_length))
        object.__setattr__(self, "revalidation_headers", revalidation)
        object.__setattr__(self, "headers", revalidation + content)

    @classmethod
    def of(cls, model: BaseModel, media_type: str = "application/json") -> Encoded:
        body = model.model_dump_json().encode()
        return cls(body, f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"', media_type)

    def matches(self, if_none_match: str) -> bool:
        """Whether an ``If-None-Match`` value names this body (RFC 9110 §13.1.2: weak
        comparison, ``*`` matches any current representation)."""
        if if_none_match.strip() == "*":
            return True
        tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
        return self.etag in tags


class EncodedResponse(Response):
    """A response whose body and headers were encoded in advance (an :class:`Encoded`):
    nothing is rendered or encoded per request."""

    def __init__(self, encoded: Encoded, *, not_modified: bool = False) -> None:
        self.status_code = 304 if not_modified else 200
        self.background = None
        self.body = b"" if not_modified else encoded.body
        headers = encoded.revalidation_headers if not_modified else encoded.headers
        self.raw_headers = list(headers)  # a copy: whoever sends it may add to it


def revalidated(connection: HTTPConnection, encoded: Encoded) -> Response:
    """``encoded`` with its ETag, or 304 when the request's If-None-Match names it (in
    any of its lines: several are one comma-separated list, RFC 9110 §5.3)."""
    for name, value in connection.scope["headers"]:
        if (
            name == IF_NONE_MATCH
            and len(value) <= _MAX_IF_NONE_MATCH
            and encoded.matches(value.decode("latin-1"))
        ):
            return EncodedResponse(encoded, not_modified=True)
    return EncodedResponse(encoded)

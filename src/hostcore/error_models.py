"""The bodies of error responses, as OpenAPI shows them (see ``errors.error_responses``)."""

from __future__ import annotations

from pydantic import BaseModel


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

"""The bodies of error responses, as OpenAPI shows them (see ``errors.error_responses``).

Routes point at these schemas by reference (``#/components/schemas/hostcore.ErrorRead``) instead
of naming a model in ``responses=``: FastAPI builds a pydantic serializer for every
``model`` of every documented status of every route, only to write the document, which
cost hostcore's built-in routes about 1 MiB of every process. The schemas are added to
the document once, when it is built (:func:`add_error_schemas`), and these models are
built then too (``defer_build``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

# Named apart from any plugin's models (a class name cannot hold a dot): a plugin's own
# ``ErrorRead`` must not take the place of the body every error response names.
SCHEMA_PREFIX = "hostcore."
SCHEMA_REF = "#/components/schemas/" + SCHEMA_PREFIX + "{model}"


class ErrorRead(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(defer_build=True)

    error: str
    detail: str


class FieldErrorRead(BaseModel):
    model_config = ConfigDict(defer_build=True)

    loc: list[str]
    msg: str
    type: str


class ValidationErrorRead(ErrorRead):
    """The body of a 422: the summary plus every invalid field."""

    errors: list[FieldErrorRead]


def add_error_schemas(document: dict[str, Any]) -> None:
    """Put the error bodies' schemas into an OpenAPI document's components."""
    _, top = models_json_schema(
        [(ErrorRead, "serialization"), (ValidationErrorRead, "serialization")],
        ref_template=SCHEMA_REF,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in top.get("$defs", {}).items():
        schemas[SCHEMA_PREFIX + name] = schema

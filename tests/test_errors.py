"""The one mapping from errors to JSON: what a 422 may and may not say."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from hostcore.errors import error_payload

SECRET = "hunter2-correct-horse"


def _quoting(value: str) -> str:
    raise ValueError(f"{value!r} is not acceptable")


def _quoting_the_start(value: str) -> str:
    raise ValueError(f"{value[:12]} ... is not acceptable")


def _explaining(value: str) -> str:
    raise ValueError("must be a colour, such as red or blue")


class Form(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quoted: Annotated[str, AfterValidator(_quoting)] = ""
    started: Annotated[str, AfterValidator(_quoting_the_start)] = ""
    explained: Annotated[str, AfterValidator(_explaining)] = ""
    count: Annotated[int, Field(ge=1000, le=5000)] = 1000


def validation_error(**fields: Any) -> RequestValidationError:
    """The error FastAPI raises for a request body carrying ``fields``."""
    with pytest.raises(ValidationError) as caught:
        Form.model_validate(fields)
    return RequestValidationError(
        [{**error, "loc": ("body", *error["loc"])} for error in caught.value.errors()]
    )


def payload(exc: Exception) -> dict[str, Any]:
    status, body, _ = error_payload(exc, "POST", "/api/v1/form")
    assert status == 422
    return body


def test_a_422_keeps_only_location_message_and_type() -> None:
    body = payload(validation_error(count=10))

    assert body["errors"] == [
        {
            "loc": ["body", "count"],
            "msg": "Input should be greater than or equal to 1000",
            "type": "greater_than_equal",
        }
    ]


def test_a_validator_message_that_quotes_the_value_is_replaced() -> None:
    body = payload(validation_error(quoted=SECRET))

    assert SECRET not in json.dumps(body)
    assert body["errors"] == [
        {"loc": ["body", "quoted"], "msg": "Invalid value", "type": "value_error"}
    ]


def test_a_validator_message_that_quotes_the_start_of_the_value_is_replaced() -> None:
    body = payload(validation_error(started=SECRET * 10))

    assert "hunter2" not in json.dumps(body)


@pytest.mark.parametrize("short", ["ab", "x"])
def test_a_short_value_quoted_by_a_validator_is_replaced(short: str) -> None:
    body = payload(validation_error(quoted=short))

    assert body["errors"][0]["msg"] == "Invalid value"


def test_a_validator_message_that_explains_is_kept() -> None:
    body = payload(validation_error(explained="Mauve"))

    assert body["errors"][0]["msg"] == "Value error, must be a colour, such as red or blue"


def test_a_number_that_happens_to_be_in_pydantics_message_keeps_the_message() -> None:
    # A query value arrives as text: "100" is inside "... equal to 1000" by chance.
    body = payload(validation_error(count="100"))

    assert body["errors"][0]["msg"] == "Input should be greater than or equal to 1000"


def test_a_field_name_sent_by_the_client_is_shortened() -> None:
    body = payload(validation_error(**{"k" * 5000: 1}))

    (error,) = body["errors"]
    assert error["type"] == "extra_forbidden"
    assert len(error["loc"][1]) <= 64
    assert len(json.dumps(body)) < 1000


def test_the_summary_says_what_the_field_list_says() -> None:
    body = payload(validation_error(quoted=SECRET, count=1))

    assert body["detail"] == (
        "invalid request: body.quoted: Invalid value; "
        "body.count: Input should be greater than or equal to 1000"
    )

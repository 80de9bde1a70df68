"""The one mapping from errors to JSON: what a 422 may and may not say, and the answers an
app gives for an unknown route, a wrong method, a bad input and a domain error."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from hostcore.error_handling import error_payload
from hostcore.hookspecs import hookimpl
from hostcore.security.deps import Public
from tests.helpers import AppFactory, ClientFor, Echo

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


# --- the answers of an app ------------------------------------------------------------


@pytest.fixture
def client(app_factory: AppFactory, client_for: ClientFor) -> TestClient:
    return client_for(app_factory({"echo": Echo()}))


def test_404_is_json(client: TestClient) -> None:
    response = client.get("/api/v1/nothing/here")
    assert response.status_code == 404
    assert response.json() == {
        "error": "NotFound",
        "detail": "no route matches GET /api/v1/nothing/here",
    }


def test_405_is_json_and_keeps_allow(client: TestClient) -> None:
    response = client.delete("/api/v1/health")
    assert response.status_code == 405
    assert response.json()["error"] == "MethodNotAllowed"
    assert response.headers["allow"] == "GET, HEAD"


def test_422_keeps_the_field_list_without_echoing_input(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    class Strict:
        @hookimpl
        def hostcore_routes(self) -> APIRouter:
            router = APIRouter(dependencies=[Public])

            @router.get("/n")
            async def n(count: int) -> dict[str, int]:
                return {"count": count}

            return router

    client = client_for(app_factory({"strict": Strict()}))
    response = client.get("/api/v1/strict/n", params={"count": "$(reboot)"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "ValidationError"
    assert body["errors"] == [
        {
            "loc": ["query", "count"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]
    assert "$(reboot)" not in response.text


def test_domain_error_maps_to_its_status(client: TestClient) -> None:
    response = client.get("/api/v1/echo/missing")
    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "detail": "there is no such thing"}


def test_422_is_documented_with_its_field_list(client: TestClient) -> None:
    from hostcore.errors import error_responses

    documented = error_responses(422)[422]["content"]["application/json"]["schema"]
    assert documented == {"$ref": "#/components/schemas/hostcore.ValidationErrorRead"}
    document: dict[str, Any] = client.app.openapi()  # type: ignore[attr-defined]
    schemas = document["components"]["schemas"]
    assert set(schemas["hostcore.ValidationErrorRead"]["required"]) == {"error", "detail", "errors"}
    assert schemas["hostcore.ValidationErrorRead"]["properties"]["errors"]["items"] == {
        "$ref": "#/components/schemas/hostcore.FieldErrorRead"
    }
    assert set(schemas["hostcore.FieldErrorRead"]["properties"]) == {"loc", "msg", "type"}
    assert set(schemas["hostcore.ErrorRead"]["required"]) == {"error", "detail"}


def test_every_reference_in_the_document_resolves(client: TestClient) -> None:
    document: dict[str, Any] = client.app.openapi()  # type: ignore[attr-defined]

    def references(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [ref for value in node.values() for ref in references(value)]
        if isinstance(node, list):
            return [ref for value in node for ref in references(value)]
        return []

    refs = set(references(document))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"]


def test_a_plugin_model_named_like_the_error_body_does_not_replace_it(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    class ErrorRead(BaseModel):  # a plugin's own model, by the same class name
        code: int

    class Clash:
        @hookimpl
        def hostcore_routes(self) -> APIRouter:
            router = APIRouter()

            @router.get("/own", dependencies=[Public], response_model=ErrorRead)
            async def own() -> ErrorRead:
                return ErrorRead(code=1)

            return router

    document = app_factory({"clash": Clash()}).openapi()
    schemas = document["components"]["schemas"]
    assert set(schemas["hostcore.ErrorRead"]["properties"]) == {"error", "detail"}
    assert set(schemas["ErrorRead"]["properties"]) == {"code"}

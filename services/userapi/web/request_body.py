"""The one reader every request body goes through, after the caller is authenticated and
authorized and before anything is written anywhere: domain/json_values.py's strict parse and
storability checks (NaN, U+0000, lone surrogates, nesting past MAX_DEPTH are a 400 before the
first external call), then the endpoint's model, whose errors are rendered like every other
validation error (a 400). Also the OpenAPI declaration of the bodies read this way."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from userapi.domain.json_values import check_storable, parse
from userapi.web.error_rendering import ErrorBody

M = TypeVar("M", bound=BaseModel)


async def read(request: Request, model: type[M]) -> M:
    """The body as `model`. Call it after authentication and authorization: someone who may not
    call an endpoint must learn nothing about what it accepts."""
    data = parse(await request.body())
    check_storable(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Rendered like every other validation error (web/error_rendering.py): a 400.
        raise RequestValidationError(exc.errors(include_url=False)) from None


# For the OpenAPI entry of every route that reads a body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "The body is larger than the endpoint's bound"},
}


def openapi_extra(model: type[BaseModel], description: str | None = None) -> dict[str, Any]:
    """`openapi_extra` declaring `model` as the JSON body of a route that reads it with `read`.
    The schema is moved to components/schemas by `document_bodies`."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    assert "$defs" not in schema, "a body model with nested models needs its $defs hoisted"
    body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": schema}},
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def document_bodies(spec: dict[str, Any]) -> None:
    """Body schemas declared by `request_body` become components, as FastAPI's own would."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                schema = media.get("schema", {})
                title = schema.get("title")
                if title and "$ref" not in schema:
                    schemas[title] = schema
                    media["schema"] = {"$ref": f"#/components/schemas/{title}"}

"""The OpenAPI document: FastAPI's, completed with what it cannot see.

One error body everywhere (see `app.api.errors`): `responses` declares a route's
errors with that schema (ErrorOut, or FastAPI's list for a 422), a description and
an example; `document` completes the document with what the middleware and the
error handlers answer; `build` is the app's `openapi()`.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api import middleware
from app.api.schemas import ErrorOut, PredictRequest

REF = "#/components/schemas/"

# status: (description, example detail, response headers)
_RETRY = {
    "Retry-After": {
        "description": "seconds to wait before retrying; the detail says the same",
        "schema": {"type": "integer"},
        "example": 10,
    }
}
_STANDARD: dict[int, tuple[str, str, dict[str, Any]]] = {
    400: (
        "the body could not be read: cut off before its end, or not UTF-8 text",
        "There was an error parsing the body",
        {},
    ),
    401: (
        "TICKCAST_API_KEY is set and the X-API-Key header is missing or wrong",
        "missing or wrong X-API-Key header",
        {"WWW-Authenticate": {"description": "APIKey", "schema": {"type": "string"}}},
    ),
    403: (
        "a cross-site write: the Origin is neither this service's nor in TICKCAST_CORS_ORIGINS",
        "cross-site write refused: Origin https://elsewhere.example is neither this service's own nor "
        "TICKCAST_CORS_ORIGINS; list a dashboard's origin there to let it write",
        {},
    ),
    404: ("not found", "no model 'cnn-nope'; GET /models lists the available ones", {}),
    409: (
        "the request conflicts with the current state",
        "model 'cnn-20261125-194816-1cd8d3' is active; activate another model before deleting it",
        {},
    ),
    413: (
        "the body is over TICKCAST_MAX_BODY_BYTES",
        "request body over 2000000 bytes; send fewer ticks or raise TICKCAST_MAX_BODY_BYTES",
        {},
    ),
    415: (
        "the body's Content-Type is not one this operation takes (see the Accept header)",
        "POST /predict takes application/json, not text/plain; send the body with Content-Type: "
        "application/json",
        {"Accept": {"description": "the media types this operation takes", "schema": {"type": "string"}}},
    ),
    429: (
        "too many requests waiting; see Retry-After",
        "the training queue is full: 20 jobs wait for a "
        "worker (at most 20, TICKCAST_JOB_QUEUE_MAX); nothing was queued; retry in 30 s, or cancel a "
        "waiting job (DELETE /jobs/{id})",
        _RETRY,
    ),
    500: (
        "an unexpected failure (a bug); the service logged the details, nothing half-done was kept",
        "internal error (RuntimeError); the service logged the details: retry, and report it if it "
        "keeps happening",
        {},
    ),
    502: (
        "the exchange failed",
        "binance answered 502 Bad Gateway; stored ticks and the cursor are unchanged, retry later",
        {},
    ),
    503: (
        "the service cannot do it now (storage locked, unwritable or full); nothing was changed, "
        "see Retry-After",
        "the tick store: locked by another writer (database is locked); nothing "
        "was changed; it frees up when that writer commits, retry in 5 s",
        _RETRY,
    ),
}
_422_EXAMPLE = {
    "detail": [
        {
            "loc": ["body", "ticks", 7, "price"],
            "msg": "Input should be greater than 0",
            "type": "greater_than",
        }
    ]
}


def responses(*codes: int | tuple[int, str] | tuple[int, str, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each code with its schema (ErrorOut, or FastAPI's list for 422),
    a description (the standard one, or the route's own) and an example (likewise)."""
    out: dict[int | str, dict[str, Any]] = {}
    for c in codes:
        code, description, example = (c, None, None) if isinstance(c, int) else (*c, None)[:3]
        std_description, std_example, headers = _STANDARD.get(code, ("", "", {}))
        out[code] = _response(code, description or std_description, example or std_example, headers)
    return out


def _response(code: int, description: str, example: str, headers: dict[str, Any]) -> dict[str, Any]:
    if code == 422:
        return {
            "description": description or "bad input: each item names where (loc) and what (msg)",
            "content": {
                "application/json": {"schema": {"$ref": REF + "HTTPValidationError"}, "example": _422_EXAMPLE}
            },
        }
    out: dict[str, Any] = {
        "model": ErrorOut,
        "description": description,
        "content": {"application/json": {"example": {"detail": example}}},
    }
    if headers:
        out["headers"] = copy.deepcopy(headers)
    return out


_VALIDATION_ERROR = {
    "title": "ValidationError",
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {
            "title": "Location",
            "type": "array",
            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "description": "where: body, path, query or header, then the field names and indexes",
        },
        "msg": {"title": "Message", "type": "string", "description": "what is wrong, and what is wanted"},
        "type": {
            "title": "Error Type",
            "type": "string",
            "description": "a machine-readable kind (pydantic's error types, or value_error)",
        },
    },
    "examples": [_422_EXAMPLE["detail"][0]],
}
_HTTP_VALIDATION_ERROR = {
    "title": "HTTPValidationError",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "title": "Detail",
            "type": "array",
            "items": {"$ref": REF + "ValidationError"},
            "description": "one item per problem found",
        }
    },
    "examples": [_422_EXAMPLE],
}


def document(spec: dict[str, Any]) -> None:
    """Complete an OpenAPI document: the 422 schemas described, 413 on every operation that
    takes a body and 500 on every operation (the middleware and the catch-all answer those),
    ErrorOut and an example on every error that lacks them (SealedWrites' 403 and 415), and
    on every response and request body an example taken from its schema's."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ValidationError"] = copy.deepcopy(_VALIDATION_ERROR)
    schemas["HTTPValidationError"] = copy.deepcopy(_HTTP_VALIDATION_ERROR)
    schemas.setdefault("ErrorOut", ErrorOut.model_json_schema())
    for item in spec.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            answers = op["responses"]
            if "requestBody" in op:
                answers.setdefault("413", _openapi_error(413))
                for media in op["requestBody"].get("content", {}).values():
                    _add_example(media, schemas)
            answers.setdefault("500", _openapi_error(500))
            for code, answer in answers.items():
                if code.isdigit() and int(code) >= 400 and "content" not in answer:
                    std = _openapi_error(int(code))
                    answer["content"] = std["content"]
                    if "headers" in std:
                        answer.setdefault("headers", std["headers"])
                for media in answer.get("content", {}).values():
                    _add_example(media, schemas)


def _openapi_error(code: int) -> dict[str, Any]:
    r = _response(code, *_STANDARD[code][:2], _STANDARD[code][2])
    if r.pop("model", None) is not None:
        r["content"]["application/json"]["schema"] = {"$ref": REF + "ErrorOut"}
    return r


def _add_example(media: dict[str, Any], schemas: dict[str, Any]) -> None:
    if "example" in media or "examples" in media:
        return
    example = _example_of(media.get("schema", {}), schemas)
    if example is not None:
        media["example"] = example


def _example_of(schema: dict[str, Any], schemas: dict[str, Any], depth: int = 0) -> Any:
    """The first example a schema gives, following $ref, arrays and unions."""
    if depth > 8:
        return None
    if "$ref" in schema:
        return _example_of(schemas.get(schema["$ref"].removeprefix(REF), {}), schemas, depth + 1)
    if schema.get("examples"):
        return schema["examples"][0]
    if "example" in schema:
        return schema["example"]
    if schema.get("type") == "array" and "items" in schema:
        item = _example_of(schema["items"], schemas, depth + 1)
        return None if item is None else [item]
    for union in ("anyOf", "oneOf"):
        for option in schema.get(union, []):
            example = _example_of(option, schemas, depth + 1)
            if example is not None:
                return example
    return None


def build(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the /predict body, which the route parses from raw bytes itself,
    and the answers of the middleware and the error handlers (see `document`)."""
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        body = PredictRequest.model_json_schema(ref_template=REF + "{model}")
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(body.pop("$defs", {}))
        schemas["PredictRequest"] = body
        middleware.document(spec)
        document(spec)
        app.openapi_schema = spec
    return app.openapi_schema

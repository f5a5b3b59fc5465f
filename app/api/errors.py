"""Domain errors -> HTTP answers a person can act on; never a 500 for bad input.

One error body everywhere: a 422 is always FastAPI's list, `{"detail": [{"loc", "msg",
"type"}]}`, whether pydantic, a route (`invalid`) or a domain error (this module's
table) raised it; every other error is `{"detail": "..."}` (`ErrorOut`). `responses`
declares a route's errors for OpenAPI with that schema, a description and an example,
and `document` completes the document with what the middleware answers.

Storage failures (the tick store locked or unwritable, the models folder unwritable,
a full or failing disk) are the service's trouble, not the client's, and pass: 503
with what failed, why, what to do, and a Retry-After that matches the text. They
reach here only after the store rolled its transaction back or the atomic write
removed its temporary file, so nothing is half-written. Anything else unexpected is
a JSON 500 (the traceback still goes to the log).
"""

from __future__ import annotations

import copy
import errno
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.api.schemas import ErrorOut
from app.market.ticks import TickError
from app.ml.checkpoint import CheckpointError
from app.services.ingestion.scheduler import UnknownMarket
from app.services.jobs.manager import UnknownJob
from app.services.predictor import NoModel, NotEnoughTicks
from app.services.registry import InvalidModelId, ModelInUse, UnknownModel

log = logging.getLogger("tickcast")

STATUS: dict[type[Exception], int] = {
    InvalidModelId: 422,
    UnknownModel: 404,
    UnknownJob: 404,
    UnknownMarket: 404,
    ModelInUse: 409,
    NotEnoughTicks: 422,
    TickError: 422,
    NoModel: 503,
    CheckpointError: 422,
}

# SQLite's primary result codes (extended code & 0xff) that mean "storage, not the request"
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_FULL, _SQLITE_CANTOPEN = 13, 14

# file errors a write can meet on a healthy request: permissions, a read-only or full disk
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO}

RETRY_LOCKED_S = 5  # another writer holds the store: usually gone in seconds
RETRY_UNWRITABLE_S = 30  # someone has to fix permissions or a mount
RETRY_FULL_S = 60  # someone has to free space


def install(app: FastAPI) -> None:
    for exc_type, status in STATUS.items():
        app.add_exception_handler(exc_type, _handler(status))
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(sqlite3.Error, _storage)
    app.add_exception_handler(OSError, _storage)
    app.add_exception_handler(Exception, _unexpected)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 without echoing the input back: the input may hold NaN (not JSON) or be
    megabytes long; `loc` already names the field and the index."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _handler(status: int):
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if status == 422:
            return JSONResponse(
                {"detail": [{"loc": _loc(request, exc), "msg": str(exc), "type": "value_error"}]},
                status_code=422,
            )
        retry_s = getattr(exc, "retry_after_s", NoModel.retry_after_s)
        headers = {"Retry-After": str(retry_s)} if status == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    return handle


def invalid(loc: Sequence[str | int], msg: str, type_: str = "value_error") -> RequestValidationError:
    """A 422 raised by hand, in the same list shape as pydantic's: `raise invalid(("query", "end"),
    "end must not be before start")`."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": type_}])


def _loc(request: Request, exc: Exception) -> list[str | int]:
    """Where a domain error's bad input was: the exception's own `loc` when it has one, else the
    request part that carried it (the model id in the path, query or body; the ticks)."""
    own = getattr(exc, "loc", None)
    if isinstance(own, tuple | list) and own:
        return list(own)
    body = request.method in ("POST", "PUT", "PATCH")
    if isinstance(exc, InvalidModelId | CheckpointError):
        if "model_id" in request.path_params:
            return ["path", "model_id"]
        return ["body", "model_id"] if body else ["query", "model_id"]
    if isinstance(exc, NotEnoughTicks | TickError):
        if not body:  # the market's stored ticks, from the path
            return ["path", "symbol"]
        index = getattr(exc, "index", None)
        return ["body", "windows", index] if index is not None else ["body", "ticks"]
    return ["body"] if body else ["path"]


# --------------------------------------------------------------------------- OpenAPI

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


def storage_failure(exc: BaseException, models_dir: Path | None = None) -> tuple[str, int] | None:
    """(the 503's detail, Retry-After seconds) when `exc` is a storage failure, else None.

    Only conditions a retry or an operator can fix qualify; other SQLite errors (a bad
    statement, a constraint) and other OSErrors (a missing file) are bugs or the client's
    and keep their own answer.
    """
    if isinstance(exc, sqlite3.Error):
        return _sqlite_failure(exc)
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        return _file_failure(exc, models_dir)
    return None


def _sqlite_failure(exc: sqlite3.Error) -> tuple[str, int] | None:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    what = "the tick store"
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text or "busy" in text:
        return _detail(
            what,
            f"locked by another writer ({exc})",
            "nothing was changed; it frees up when that writer commits",
            RETRY_LOCKED_S,
        )
    if primary == _SQLITE_FULL or "disk is full" in text:
        return _detail(
            what,
            f"its disk is full ({exc})",
            "nothing was changed; free space on the disk of TICKCAST_STORE_PATH",
            RETRY_FULL_S,
        )
    if primary in (_SQLITE_READONLY, _SQLITE_CANTOPEN) or "readonly" in text or "unable to open" in text:
        return _detail(
            what,
            f"not writable ({exc})",
            "nothing was changed; make TICKCAST_STORE_PATH and its folder writable by the service",
            RETRY_UNWRITABLE_S,
        )
    if primary == _SQLITE_IOERR or "disk i/o error" in text:
        return _detail(
            what,
            f"a read or write failed ({exc}): the file is not writable or the disk is failing",
            "nothing was changed; check TICKCAST_STORE_PATH's permissions and disk",
            RETRY_UNWRITABLE_S,
        )
    return None


def _file_failure(exc: OSError, models_dir: Path | None) -> tuple[str, int]:
    name = exc.filename or ""
    what, fix = (f"writing {name}" if name else "a file write"), "make it writable by the service"
    if models_dir is not None and name and _inside(Path(name), models_dir):
        what, fix = f"the models folder {models_dir}", "make TICKCAST_MODELS_DIR writable by the service"
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _detail(
            what,
            f"disk full or over quota ({reason})",
            "nothing was changed; free space on that disk",
            RETRY_FULL_S,
        )
    if exc.errno == errno.EIO:
        return _detail(
            what, f"the disk failed ({reason})", "nothing was changed; check the disk", RETRY_UNWRITABLE_S
        )
    return _detail(what, f"not writable ({reason})", f"nothing was changed; {fix}", RETRY_UNWRITABLE_S)


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _detail(what: str, reason: str, todo: str, retry_s: int) -> tuple[str, int]:
    return f"{what}: {reason}; {todo}, retry in {retry_s} s", retry_s


def _models_dir(request: Request) -> Path | None:
    settings = getattr(request.app.state, "settings", None)
    return getattr(settings, "models_dir", None)


async def _storage(request: Request, exc: Exception) -> JSONResponse:
    """503 for a storage failure; anything else of these types is unexpected: re-raised, to
    be answered by `_unexpected` and logged with its traceback by the server."""
    failure = storage_failure(exc, _models_dir(request))
    if failure is None:
        raise exc
    detail, retry_s = failure
    log.warning("%s %s: 503: %s", request.method, request.url.path, detail)
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(retry_s)})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """The last resort: a JSON 500 rather than starlette's text/plain one. Starlette re-raises
    after this answers, so the server still logs the traceback.

    A storage failure wrapped in another exception (raised `from` it, or while handling it)
    is still a 503, though the log then shows its traceback too."""
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 8:
        failure = storage_failure(cause, _models_dir(request))
        if failure is not None:
            detail, retry_s = failure
            return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(retry_s)})
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return JSONResponse(
        {
            "detail": f"internal error ({type(exc).__name__}); the service logged the "
            "details: retry, and report it if it keeps happening"
        },
        status_code=500,
    )

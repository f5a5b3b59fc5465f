"""Domain errors -> HTTP answers a person can act on; never a 500 for bad input.

One error body everywhere: a 422 is always FastAPI's list, `{"detail": [{"loc", "msg",
"type"}]}`, whether pydantic, a route (`invalid`) or a domain error (this module's
table) raised it; every other error is `{"detail": "..."}` (`ErrorOut`). Routes let
domain errors pass: `ANSWERS` turns each into its status, its detail (the error's own
text, in domain words, and what was kept or what to do through this API: the routes
and settings of `app.api.advice`) and, for a refusal that passes with time, a
Retry-After that matches the text. `app.api.openapi` documents the same answers.

Storage failures (the tick store locked or unwritable, the models folder unwritable,
a full or failing disk) are the service's trouble, not the client's, and pass: 503
with what failed, why, what to do, and a Retry-After that matches the text. They
reach here only after the store rolled its transaction back or the atomic write
removed its temporary file, so nothing is half-written. A PostgreSQL database that cannot
answer now (`app.pg.errors`: a lost connection, a server down or restarting, a timeout) is
the same kind of trouble and gets the same kind of answer. Anything else unexpected is a
JSON 500 (the traceback still goes to the log).

psycopg is imported only where a postgresql:// database is opened, after these handlers are
installed, so no handler can name its exception classes. The innermost middleware
(`_Unavailable`) catches what the handlers let through and answers psycopg's "cannot answer
now" as `_storage` answers SQLite's; the rest goes on, unchanged, to `_unexpected`.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import advice
from app.api.deps import services_of
from app.market.sources.base import SourceError
from app.market.ticks import TickError
from app.ml.checkpoint import CheckpointError
from app.services.feeds import FeedsClosed, TooManyClients
from app.services.ingestion.pool import WorkerDown
from app.services.ingestion.scheduler import IngestFailed, UnknownMarket
from app.services.ingestion.scheduler import StoreUnavailable as IngestStoreUnavailable
from app.services.jobs.errors import JobFinished, QueueFull, UnknownJob
from app.services.jobs.records import StoreUnavailable as JobStoreUnavailable
from app.services.jobs.shortfall import TooFewToTrain
from app.services.jobs.spec import InvalidJobSpec
from app.services.markets import BadCsv, NotAMarket, NoTicks, StaleMarket
from app.services.no_model import NoModel
from app.services.predictor import NotEnoughTicks
from app.services.registry import CannotActivate, InvalidModelId, ModelInUse, UnknownModel
from app.settings import env_name

log = logging.getLogger("tickcast")

INGEST_STORE_RETRY_S = 10  # a locked store frees up in seconds; a read-only or full one needs a person
_KEPT = "pages stored before it are kept with their cursor"


E = TypeVar("E", bound=Exception)


@dataclass(frozen=True)
class Answer:
    status: int
    detail: Callable[[Exception], str]  # the error's own text and what this API adds to it
    retry_after_s: int | None = None  # Retry-After; else the error's own `retry_after_s`, if any


def entry(
    kind: type[E],
    status: int,
    then: str = "",
    retry_after_s: int | None = None,
    *,
    say: Callable[[E], str] | None = None,
) -> tuple[type[Exception], Answer]:
    """`kind`'s entry in `ANSWERS`: its status; its detail, the error's own text and then `then`
    (what was kept, what to do), or all of it said by `say` from the error's typed attributes
    (`app.api.advice`); and a Retry-After."""

    def detail(exc: Exception) -> str:
        if say is not None and isinstance(exc, kind):  # always: `kind`'s handler is the caller
            return say(exc)
        return f"{exc}{then}"

    return kind, Answer(status, detail, retry_after_s)


ANSWERS: dict[type[Exception], Answer] = dict(
    (
        entry(InvalidModelId, 422),
        entry(CheckpointError, 422),
        entry(CannotActivate, 422, advice.CANNOT_ACTIVATE),
        entry(NotEnoughTicks, 422),
        entry(TickError, 422),
        entry(BadCsv, 422),
        entry(InvalidJobSpec, 422),
        entry(TooFewToTrain, 422, say=advice.too_few_to_train),
        entry(UnknownModel, 404, advice.UNKNOWN_MODEL),
        entry(UnknownJob, 404, say=advice.unknown_job),
        entry(UnknownMarket, 404, advice.UNKNOWN_MARKET),
        entry(NotAMarket, 404, advice.NOT_A_MARKET),
        entry(NoTicks, 404),
        entry(ModelInUse, 409),
        entry(JobFinished, 409),
        entry(QueueFull, 429, say=advice.queue_full),
        entry(IngestFailed, 500, f"; {_KEPT}"),
        entry(SourceError, 502, "; stored ticks and the cursor are unchanged, retry later"),
        entry(NoModel, 503, say=advice.no_model),
        entry(StaleMarket, 503, say=advice.stale_market),  # Retry-After: the pull interval
        entry(JobStoreUnavailable, 503),
        entry(WorkerDown, 503),  # its text ends "retry in N s", N as in Retry-After
        entry(
            IngestStoreUnavailable,
            503,
            f"; {_KEPT}; make the store writable (or wait for whoever holds its lock), then retry in "
            f"{INGEST_STORE_RETRY_S} s",
            INGEST_STORE_RETRY_S,
        ),
        entry(FeedsClosed, 503),
        entry(TooManyClients, 503, say=advice.too_many_clients),
    )
)

# SQLite's primary result codes (extended code & 0xff) that mean "storage, not the request"
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_FULL, _SQLITE_CANTOPEN = 13, 14

# file errors a write can meet on a healthy request: permissions, a read-only or full disk
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO}

RETRY_LOCKED_S = 5  # another writer holds the store: usually gone in seconds
RETRY_UNWRITABLE_S = 30  # someone has to fix permissions or a mount
RETRY_FULL_S = 60  # someone has to free space
RETRY_DATABASE_S = 5  # a dropped connection is opened again by the next call; a restart takes seconds


def install(app: FastAPI) -> None:
    for exc_type, answer in ANSWERS.items():
        app.add_exception_handler(exc_type, _handler(answer))
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(sqlite3.Error, _storage)
    app.add_exception_handler(OSError, _storage)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(_Unavailable)  # the first added: the innermost, next to the handlers


class _Unavailable:
    """psycopg's "cannot answer now", which no handler can name (see the module's docstring):
    answered by `_storage` if the response has not started, else passed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started or scope["type"] != "http" or not isinstance(exc, _postgres_errors()):
                raise
            response = await _storage(Request(scope), exc)
            await response(scope, receive, send)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 without echoing the input back: the input may hold NaN (not JSON) or be
    megabytes long; `loc` already names the field and the index."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _handler(answer: Answer) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        detail = answer.detail(exc)
        if answer.status == 422:
            return JSONResponse(
                {"detail": [{"loc": _loc(request, exc), "msg": detail, "type": "value_error"}]},
                status_code=422,
            )
        retry_s = answer.retry_after_s or getattr(exc, "retry_after_s", None)
        headers = {"Retry-After": str(retry_s)} if retry_s is not None else None
        return JSONResponse({"detail": detail}, status_code=answer.status, headers=headers)

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
    if isinstance(exc, BadCsv):
        return ["body"] if exc.row is None else ["body", "line", exc.row]
    if isinstance(exc, NotEnoughTicks | TickError):
        if not body:  # the market's stored ticks, from the path
            return ["path", "symbol"]
        index = getattr(exc, "index", None)
        return ["body", "windows", index] if index is not None else ["body", "ticks"]
    return ["body"] if body else ["path"]


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
    if isinstance(exc, _postgres_errors()):
        return _detail(
            "the database",
            f"PostgreSQL cannot answer now ({_first_line(exc)})",
            f"nothing was half-written; check that the server {env_name('database_url')} names is up and "
            "reachable",
            RETRY_DATABASE_S,
        )
    return None


def _postgres_errors() -> tuple[type[Exception], ...]:
    """`app.pg.errors()` once psycopg is loaded. Before, no exception can be psycopg's, and
    looking must not import it: the SQLite default never loads psycopg."""
    if "psycopg" not in sys.modules:
        return ()
    from app import pg

    return pg.errors()


def _first_line(exc: BaseException) -> str:
    """psycopg's message without its DETAIL and HINT lines."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


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
            f"nothing was changed; free space on the disk of {env_name('store_path')}",
            RETRY_FULL_S,
        )
    if primary in (_SQLITE_READONLY, _SQLITE_CANTOPEN) or "readonly" in text or "unable to open" in text:
        return _detail(
            what,
            f"not writable ({exc})",
            f"nothing was changed; make {env_name('store_path')} and its folder writable by the service",
            RETRY_UNWRITABLE_S,
        )
    if primary == _SQLITE_IOERR or "disk i/o error" in text:
        return _detail(
            what,
            f"a read or write failed ({exc}): the file is not writable or the disk is failing",
            f"nothing was changed; check {env_name('store_path')}'s permissions and disk",
            RETRY_UNWRITABLE_S,
        )
    return None


def _file_failure(exc: OSError, models_dir: Path | None) -> tuple[str, int]:
    name = exc.filename or ""
    what, fix = (f"writing {name}" if name else "a file write"), "make it writable by the service"
    if models_dir is not None and name and _inside(Path(name), models_dir):
        what, fix = (
            f"the models folder {models_dir}",
            f"make {env_name('models_dir')} writable by the service",
        )
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
    services = getattr(request.app.state, "services", None)  # None: the lifespan never ran
    return None if services is None else services_of(request).settings.models_dir


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

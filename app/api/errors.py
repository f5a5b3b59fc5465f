"""Domain errors -> HTTP answers a person can act on; never a 500 for bad input.

Storage failures (the tick store locked or unwritable, the models folder unwritable,
a full or failing disk) are the service's trouble, not the client's, and pass: 503
with what failed, why, what to do, and a Retry-After that matches the text. They
reach here only after the store rolled its transaction back or the atomic write
removed its temporary file, so nothing is half-written. Anything else unexpected is
a JSON 500 (the traceback still goes to the log).
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.market.ticks import TickError
from app.ml.checkpoint import CheckpointError
from app.services.jobs import UnknownJob
from app.services.predictor import NoModel, NotEnoughTicks
from app.services.registry import InvalidModelId, ModelInUse, UnknownModel
from app.services.scheduler import UnknownMarket

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
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def _handler(status: int):  # noqa: ANN202 - starlette's handler type
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        headers = {"Retry-After": "10"} if status == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    return handle


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
        return _detail(what, f"locked by another writer ({exc})",
                       "nothing was changed; it frees up when that writer commits", RETRY_LOCKED_S)
    if primary == _SQLITE_FULL or "disk is full" in text:
        return _detail(what, f"its disk is full ({exc})",
                       "nothing was changed; free space on the disk of TICKCAST_STORE_PATH",
                       RETRY_FULL_S)
    if primary in (_SQLITE_READONLY, _SQLITE_CANTOPEN) or "readonly" in text or "unable to open" in text:
        return _detail(what, f"not writable ({exc})", "nothing was changed; make TICKCAST_STORE_PATH "
                       "and its folder writable by the service", RETRY_UNWRITABLE_S)
    if primary == _SQLITE_IOERR or "disk i/o error" in text:
        return _detail(what, f"a read or write failed ({exc}): the file is not writable or the disk "
                       "is failing", "nothing was changed; check TICKCAST_STORE_PATH's permissions and "
                       "disk", RETRY_UNWRITABLE_S)
    return None


def _file_failure(exc: OSError, models_dir: Path | None) -> tuple[str, int]:
    name = exc.filename or ""
    what, fix = (f"writing {name}" if name else "a file write"), "make it writable by the service"
    if models_dir is not None and name and _inside(Path(name), models_dir):
        what, fix = f"the models folder {models_dir}", "make TICKCAST_MODELS_DIR writable by the service"
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _detail(what, f"disk full or over quota ({reason})",
                       "nothing was changed; free space on that disk", RETRY_FULL_S)
    if exc.errno == errno.EIO:
        return _detail(what, f"the disk failed ({reason})", "nothing was changed; check the disk",
                       RETRY_UNWRITABLE_S)
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
            return JSONResponse({"detail": detail}, status_code=503,
                                headers={"Retry-After": str(retry_s)})
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the service logged the "
                                   "details: retry, and report it if it keeps happening"},
                        status_code=500)

"""A fake exchange: a real HTTP server on 127.0.0.1 for source tests.

Sources are tested against a real socket rather than a mocked transport so that
timeouts, truncated bodies, status codes and headers travel the same path as in
production (httpx's connection pool, its timeout machinery, our retry loop).

Usage::

    from tests.helpers.fake_exchange import FakeExchange, Response, hang, rate_limited, server_error

    def handler(req):                       # one function per test: Request -> body
        return [{"tid": "1", ...}]          # a list/dict is sent as JSON, str/bytes as text,
                                            # a Response as is
    with FakeExchange(handler) as fx:
        fx.inject(rate_limited(0.2), server_error(), times=1)   # the next requests get faults
        src = SomeSource(fx.url, ...)
        ...
        assert fx.requests[-1].query["fromId"] == "42"

The server is threaded, so it works with an asyncio client running on the test's
own event loop (no deadlock: the server never needs the loop).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Request:
    """One request as the server saw it (recorded in `FakeExchange.requests`)."""

    method: str
    path: str  # without the query string
    query: dict[str, str]  # last value wins for repeated keys
    headers: dict[str, str]
    body: bytes
    time: float  # time.monotonic() at arrival, for checking spacing / Retry-After


@dataclass
class Response:
    """What the server sends. `delay` sleeps before answering (timeouts);
    `truncate_to` cuts the body to that many bytes while still sending it as complete."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncate_to: int | None = None

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return cls(status, json.dumps(obj).encode(), h)

    @classmethod
    def text(
        cls,
        text: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str = "text/plain",
    ) -> Response:
        h = {"Content-Type": content_type}
        h.update(headers or {})
        return cls(status, text.encode(), h)


# A handler answers a request with a Response, or any JSON-able object / str / bytes.
Handler = Callable[[Request], Any]
# A fault replaces the normal answer: a fixed Response, or a function of the request and
# the normal handler (so it can mangle the normal answer, e.g. truncate or delay it).
Fault = Response | Callable[[Request, Callable[[Request], Response]], Response]


def as_response(value: Any) -> Response:
    """Coerce a handler's return value into a Response."""
    if isinstance(value, Response):
        return value
    if isinstance(value, bytes):
        return Response(200, value, {"Content-Type": "application/octet-stream"})
    if isinstance(value, str):
        return Response.text(value)
    return Response.json(value)


# ---------------------------------------------------------------- faults


def rate_limited(retry_after: float | None = 0.2, status: int = 429) -> Response:
    """429 (or 418) with an optional Retry-After header in seconds."""
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return Response.json({"error": "Too Many Requests"}, status, headers)


def server_error(status: int = 500) -> Response:
    """A 5xx with a small JSON body, as an overloaded exchange sends."""
    return Response.json({"error": "internal error"}, status)


def hang(seconds: float) -> Fault:
    """Sleep `seconds` before sending the normal answer (longer than the client's timeout)."""

    def fault(req: Request, normal: Callable[[Request], Response]) -> Response:
        r = normal(req)
        return Response(r.status, r.body, dict(r.headers), max(r.delay, seconds), r.truncate_to)

    return fault


def truncated(fraction: float = 0.5) -> Fault:
    """The normal answer, cut to `fraction` of its bytes (a dropped connection mid-body
    that still looks complete to the client: Content-Length matches the cut body)."""

    def fault(req: Request, normal: Callable[[Request], Response]) -> Response:
        r = normal(req)
        return Response(r.status, r.body, dict(r.headers), r.delay, max(1, int(len(r.body) * fraction)))

    return fault


def empty_page(body: Any = None) -> Response:
    """An empty result (default `[]`)."""
    return as_response([] if body is None else body)


# ---------------------------------------------------------------- server


class FakeExchange:
    """A threaded HTTP server on 127.0.0.1 (an ephemeral port) answering with `handler`.

    `requests` records every request in arrival order (faulted ones too). Faults queued
    with `inject` answer the next matching requests before the handler sees any.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._faults: deque[tuple[str | None, Fault]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control

    def inject(self, *faults: Fault, times: int = 1, path: str | None = None) -> None:
        """Queue `faults` (in order), repeated `times` times, for the next requests
        (only those whose path starts with `path`, if given)."""
        with self._lock:
            for _ in range(times):
                for f in faults:
                    self._faults.append((path, f))

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def clear(self) -> None:
        """Forget recorded requests and queued faults."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeExchange:
        fake = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet tests
                pass

            def do_GET(self) -> None:
                fake._serve(self)

            do_POST = do_GET
            do_PUT = do_GET
            do_DELETE = do_GET

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False  # hanging handler threads must not block stop()

        self._stop.clear()
        self._server = _Server(("127.0.0.1", 0), _H)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="fake-exchange",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers sleeping in a `hang`
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving

    def _normal(self, req: Request) -> Response:
        try:
            return as_response(self.handler(req))
        except Exception as e:  # a bug in a test handler shows up as a 599 with the reason
            return Response.text(f"fake exchange handler failed: {e!r}", 599)

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        req = Request(
            h.command,
            split.path,
            dict(parse_qsl(split.query, keep_blank_values=True)),
            {k: v for k, v in h.headers.items()},
            body,
            time.monotonic(),
        )
        fault: Fault | None = None
        with self._lock:
            self.requests.append(req)
            for i, (prefix, f) in enumerate(self._faults):
                if prefix is None or req.path.startswith(prefix):
                    fault = f
                    del self._faults[i]
                    break
        if fault is None:
            resp = self._normal(req)
        elif isinstance(fault, Response):
            resp = fault
        else:
            resp = fault(req, self._normal)
        if resp.delay > 0 and self._stop.wait(resp.delay):
            return
        payload = resp.body if resp.truncate_to is None else resp.body[: resp.truncate_to]
        try:
            h.send_response(resp.status)
            for k, v in resp.headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request on the hot path)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.market.store import DEFAULT_PATH


class BodyLimit:
    """413 for bodies over `max_bytes`, by Content-Length up front or by counting a stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send, scope["path"])
                    return
        seen = 0
        rejected = False

        async def counted() -> Message:
            # over the limit: answer 413 ourselves and tell the app the client left
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    rejected = True
                    await self._reject(send, scope["path"])
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: Message) -> None:
            if not rejected:
                await send(msg)

        await self.app(scope, counted, guarded_send)

    async def _reject(self, send: Send, path: str) -> None:
        body = json.dumps({"detail": too_large(path, self.max_bytes)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


_IMPORT = re.compile(r"/markets/([^/]+)/([^/]+)/import/?$")


def too_large(path: str, max_bytes: int) -> str:
    """The 413's detail: what to do instead. A CSV import too large for a request body is stored
    from disk by the command line, which reads a file of any size page by page."""
    m = _IMPORT.search(path)
    if m is None:
        return f"request body over {max_bytes} bytes; send fewer ticks or raise TICKCAST_MAX_BODY_BYTES"
    symbol = m.group(2)[:64]
    return (
        f"request body over {max_bytes} bytes (TICKCAST_MAX_BODY_BYTES); nothing was stored. Store a "
        f"CSV this large from disk instead: `tickcast fetch csv {symbol} --file FILE` (the market "
        f"csv:{symbol}; add --store if TICKCAST_STORE_PATH is not {DEFAULT_PATH}), or raise "
        "TICKCAST_MAX_BODY_BYTES"
    )


class RequestMetrics:
    """Calls `observe(method, route_template, status, seconds)` once per HTTP request."""

    def __init__(self, app: ASGIApp, observe: Callable[[str, str, int, float], None]) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.observe(scope["method"], path, status, time.perf_counter() - t0)


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class SealedWrites:
    """Writes only from this service's own pages, configured origins and non-browser clients,
    and only in the media type each route declares.

    A browser lets any page send "simple" cross-site requests (form or text/plain bodies, or
    none) with the user's network position, and the default setup has no key, so:

    - 403 when a mutating request's `Origin` is neither this service's own (its host and
      port, as the `Host` header names them; the scheme is not compared, so a TLS proxy in
      front that keeps `Host` needs no setting) nor in TICKCAST_CORS_ORIGINS (`*` there lets
      every origin in, as it does for CORS). `Origin: null`
      (sandboxed frames, files) is refused. Browsers send `Origin` on every cross-origin POST,
      PUT, PATCH and DELETE; should one be stripped on the way, `Sec-Fetch-Site: cross-site`
      or `same-site` (a sibling subdomain is another origin) refuses the request as well.
      No `Origin` and no such signal: curl, scripts, other services; the key guards those.
    - 415 when a mutating request names a `Content-Type` the route does not take: JSON
      (`application/json`, `application/*+json`, any parameters) everywhere, except operations
      whose OpenAPI request body lists other types (CSV import: `text/csv`): what the API
      documents is what it takes. A request with no `Content-Type` passes (FastAPI reads
      such a body as JSON; a bodyless POST has none), so form, multipart and text/plain
      bodies, the only ones a page may send without a CORS preflight, never reach a route.

    OPTIONS passes untouched (CORSMiddleware answers preflights); this runs inside it, so its
    refusals carry CORS headers for configured origins. One scan of the headers per write;
    reads are not looked at.
    """

    def __init__(self, app: ASGIApp, origins: Iterable[str], openapi: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.origins = frozenset(o.strip().rstrip("/").lower() for o in origins)
        self._openapi = openapi
        self._declared: list[_Declared] | None = None  # read from the OpenAPI on the first write

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        origin = host = content_type = fetch_site = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"host":
                host = value
            elif name == b"content-type":
                content_type = value
            elif name == b"sec-fetch-site":
                fetch_site = value
        if not self._origin_allowed(origin, host, fetch_site):
            who = (
                f"Origin {origin.decode('latin-1')} is neither this service's own nor"
                if origin
                else f"a browser sent it from another site (Sec-Fetch-Site: "
                f"{(fetch_site or b'').decode('latin-1')}) without an Origin in"
            )
            await _refuse(
                send,
                403,
                f"cross-site write refused: {who} TICKCAST_CORS_ORIGINS; list "
                "a dashboard's origin there to let it write",
            )
            return
        if content_type is not None:
            media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
            takes = self._takes(scope)
            if not _matches(media, takes):
                await _refuse(
                    send,
                    415,
                    f"{scope['method']} {scope['path']} takes {' or '.join(takes)}, "
                    f"not {media or 'an empty Content-Type'}; send the body with "
                    f"Content-Type: {takes[0]}",
                    [(b"accept", ", ".join(takes).encode())],
                )
                return
        await self.app(scope, receive, send)

    def _origin_allowed(self, origin: bytes | None, host: bytes | None, fetch_site: bytes | None) -> bool:
        if origin is None:
            return fetch_site not in (b"cross-site", b"same-site")
        text = origin.decode("latin-1").strip().lower()
        if text in self.origins or "*" in self.origins:
            return True
        scheme, sep, netloc = text.partition("://")
        if not sep or host is None or "/" in netloc:
            return False  # "null", or not an origin at all
        return _with_port(netloc, scheme) == _with_port(host.decode("latin-1").strip().lower(), scheme)

    def _takes(self, scope: Scope) -> tuple[str, ...]:
        """The media types the route for this request declares; JSON unless it says otherwise."""
        if self._declared is None:
            self._declared = list(_declared_types(self._openapi()))
        path, method, root = scope["path"], scope["method"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        for path_regex, methods, types in self._declared:
            if method in methods and path_regex.match(path):
                return types
        return (JSON,)


JSON = "application/json"
_Declared = tuple[re.Pattern[str], frozenset[str], tuple[str, ...]]


def _matches(media: str, takes: tuple[str, ...]) -> bool:
    if media in takes:
        return True
    return JSON in takes and media.startswith("application/") and media.endswith("+json")


def _with_port(netloc: str, scheme: str) -> str:
    """host:port with the scheme's default port made explicit, so `h` and `h:80` compare equal."""
    if ":" not in netloc.rsplit("]", 1)[-1]:  # no port (an IPv6 host is bracketed)
        return f"{netloc}:{_DEFAULT_PORTS.get(scheme, '')}"
    return netloc


def _declared_types(spec: dict[str, Any]) -> Iterator[_Declared]:
    """Operations whose request body is documented as media types other than JSON (the default)."""
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {}) if isinstance(op, dict) else {}
            if method.upper() in MUTATING and content and JSON not in content:
                yield compile_path(path)[0], frozenset({method.upper()}), tuple(content)


async def _refuse(
    send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def document(spec: dict[str, Any]) -> None:
    """Add SealedWrites' answers to every mutating operation of an OpenAPI document."""
    for item in spec.get("paths", {}).values():
        for method, op in item.items():
            if method.upper() not in MUTATING or not isinstance(op, dict):
                continue
            responses = op.setdefault("responses", {})
            responses.setdefault(
                "403",
                {
                    "description": "a cross-site write: the Origin is neither "
                    "this service's nor in TICKCAST_CORS_ORIGINS"
                },
            )
            if "requestBody" in op:
                types = " or ".join(op["requestBody"].get("content", {})) or JSON
                responses.setdefault("415", {"description": f"the body is not {types}"})

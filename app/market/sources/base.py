"""What every trade source shares: the protocol, the errors, and a robust HTTP client.

Ingestion must never store a trade twice nor skip one, whatever the exchange does
(rate limits, 5xx bursts, hung connections, truncated bodies). The rule that makes
that possible lives here: a source either returns a complete, validated page with
the cursor that follows it, or raises — so the caller only advances its cursor past
data it has actually stored.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx

from app.market.ticks import Tick, TickArrays, TickError, validate

log = logging.getLogger(__name__)

__all__ = [
    "HttpSource",
    "MalformedResponse",
    "Page",
    "RateLimited",
    "Source",
    "SourceError",
    "UnknownSymbol",
    "canonical_symbol",
    "symbol_parts",
    "normalise_symbol",
    "ticks_from_rows",
]


class SourceError(Exception):
    """A pull failed; the message names the exchange, what was asked and what to do."""


class RateLimited(SourceError):
    """The exchange kept answering 429/418 after the retries ran out; wait `retry_after` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MalformedResponse(SourceError):
    """The body is not in the exchange's format. Nothing from it is stored and the
    cursor stays where it was, so the next pull asks for the same trades again."""


class UnknownSymbol(SourceError, ValueError):
    """The symbol cannot be mapped to a pair this exchange lists."""


@dataclass(frozen=True)
class Page:
    """One pull's result.

    `ticks` are oldest first, validated, de-duplicated by trade id. `cursor` is what
    to pass to the next `fetch` to get what comes after these ticks (None only when
    the page is empty and the previous cursor stays valid). `more` says the page was
    full, so the caller should pull again at once instead of waiting for the schedule.
    """

    ticks: TickArrays
    cursor: str | None
    more: bool


@runtime_checkable
class Source(Protocol):
    """A market's trades, pulled page by page after an opaque cursor."""

    name: str

    def pair(self, symbol: str) -> str: ...

    async def fetch(self, symbol: str, cursor: str | None, *, start: float | None = None) -> Page: ...

    async def aclose(self) -> None: ...


_SPLIT = re.compile(r"[-/_:. ]")


def normalise_symbol(symbol: str) -> tuple[str, str]:
    """ "btc-usd", "BTC/USD", "BTC_USD", "BTCUSD" (6 letters) -> ("BTC", "USD").

    One spelling in settings and URLs, whatever the exchange calls the pair.
    """
    s = symbol.strip().upper()
    parts = [p for p in _SPLIT.split(s) if p]
    if len(parts) == 2 and all(p.isalnum() for p in parts):
        return parts[0], parts[1]
    if len(parts) == 1 and len(s) == 6 and s.isalpha():
        return s[:3], s[3:]
    raise ValueError(f"cannot read symbol {symbol!r}; write it as BASE-QUOTE, e.g. BTC-USD")


def symbol_parts(symbol: str, source: str = "") -> tuple[str, str]:
    """(BASE, QUOTE) for a source's `pair()`; UnknownSymbol (named for `source`) when malformed."""
    try:
        return normalise_symbol(symbol)
    except ValueError as e:
        raise UnknownSymbol(f"{source}: {e}" if source else str(e)) from e


def canonical_symbol(symbol: str) -> str:
    """`BASE-QUOTE`, the key a market is stored under; UnknownSymbol when malformed."""
    return "-".join(symbol_parts(symbol))


def _id_key(trade_id: str | None) -> tuple[int, int, str]:
    """Sort key for trade ids: numerically when they are integers (ids "9" < "10")."""
    if trade_id is None:
        return (0, 0, "")
    if trade_id.isdigit():
        return (1, int(trade_id), "")
    return (2, 0, trade_id)


def ticks_from_rows(rows: Iterable[Tick]) -> TickArrays:
    """Sorted by (time, trade id), de-duplicated by trade id, validated.

    Exchanges repeat trades across overlapping pages and some answer newest first or
    slightly out of order; the store and features need one clean, time-ordered run.
    Rows without an id are kept as they are (nothing to de-duplicate them on).
    Raises TickError on bad values (callers turn it into MalformedResponse).
    """
    seen: set[str] = set()
    out: list[Tick] = []
    for t in rows:
        if t.trade_id is not None:
            if t.trade_id in seen:
                continue
            seen.add(t.trade_id)
        out.append(t)
    out.sort(key=lambda t: (t.time, _id_key(t.trade_id)))
    ticks = TickArrays.from_ticks(out) if out else TickArrays.empty()
    validate(ticks)
    return ticks


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After is seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, dt.timestamp() - time.time())


class HttpSource(ABC):
    """Base class for HTTP exchanges: spacing, retries, backoff, Retry-After.

    `min_interval_s` is the exchange's published rate limit as a minimum spacing
    between this instance's requests, so a backfill loop cannot get the IP banned.
    """

    name: str = "http"
    default_base_url: str = ""
    min_interval_s: float = 0.0

    def __init__(
        self,
        base_url: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        min_interval_s: float | None = None,
    ) -> None:
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        if min_interval_s is not None:  # tests and mirrors without the exchange's limit
            self.min_interval_s = min_interval_s
        self._own_client = client is None
        self._client = (
            client
            if client is not None
            else httpx.AsyncClient(timeout=timeout, headers={"User-Agent": "tickcast"}, follow_redirects=True)
        )
        self._spacing = asyncio.Lock()
        self._next_at = 0.0

    @abstractmethod
    def pair(self, symbol: str) -> str:
        """The exchange's pair name for a normalised symbol."""

    @abstractmethod
    async def fetch(self, symbol: str, cursor: str | None, *, start: float | None = None) -> Page:
        """The trades after `cursor` (or from `start`), oldest first."""

    async def aclose(self) -> None:
        """Close the client only if this instance created it (a shared one is the owner's)."""
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> HttpSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ requests

    async def _wait_turn(self) -> None:
        async with self._spacing:
            now = time.monotonic()
            if self._next_at > now:
                await asyncio.sleep(self._next_at - now)
                now = time.monotonic()
            self._next_at = now + self.min_interval_s

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so many clients do not retry in step."""
        return random.uniform(0.0, min(self.max_backoff_s, self.backoff_s * 2**attempt))

    async def get(self, path: str, params: dict[str, str | int] | None = None) -> httpx.Response:
        """GET base_url+path, retrying what is worth retrying; a 2xx response or raise."""
        url = self.base_url + path
        what = f"{self.name}: GET {path}"
        attempt = 0
        while True:
            await self._wait_turn()
            try:
                r = await self._client.get(url, params=params, timeout=self.timeout)
            except httpx.TimeoutException as e:
                problem = f"timed out after {self.timeout:g} s ({type(e).__name__})"
            except httpx.TransportError as e:
                problem = f"network error: {e!r}"
            else:
                status = r.status_code
                if status < 300:
                    return r
                if status in (429, 418):
                    wait = _retry_after_s(r.headers.get("Retry-After"))
                    if attempt >= self.retries:
                        raise RateLimited(
                            f"{what} is rate limited (HTTP {status}) after {attempt + 1} attempts; "
                            f"wait {wait if wait is not None else self.max_backoff_s:g} s or pull less often",
                            wait if wait is not None else self.max_backoff_s,
                        )
                    delay = min(self.max_backoff_s, wait) if wait is not None else self._backoff(attempt)
                    log.warning("%s: HTTP %d, retrying in %.2f s", what, status, delay)
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                if status < 500:
                    hint = (
                        "check the symbol/pair and the source's base URL"
                        if status in (400, 404)
                        else "check the source's base URL and settings"
                    )
                    raise SourceError(f"{what} returned HTTP {status} ({r.text[:200]!r}); {hint}")
                problem = f"HTTP {status}"
            if attempt >= self.retries:
                raise SourceError(
                    f"{what} failed after {attempt + 1} attempts: {problem}; "
                    "the exchange may be down, the next pull will retry"
                )
            delay = self._backoff(attempt)
            log.warning("%s: %s, retrying in %.2f s", what, problem, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def get_json(self, path: str, params: dict[str, str | int] | None = None) -> Any:
        """`get` then parse JSON; invalid or truncated bodies raise MalformedResponse."""
        r = await self.get(path, params)
        try:
            return json.loads(r.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise self.malformed(path, f"invalid JSON ({e}); body starts {r.content[:120]!r}") from e

    def malformed(self, path: str, reason: str) -> MalformedResponse:
        """Log and build the error for a body that is not in the exchange's format."""
        msg = f"{self.name}: GET {path} sent a malformed body: {reason}; nothing stored, cursor unchanged"
        log.error("%s", msg)
        return MalformedResponse(msg)

    def build_ticks(self, path: str, rows: Iterable[Tick]) -> TickArrays:
        """`ticks_from_rows` with bad values reported as MalformedResponse."""
        try:
            return ticks_from_rows(rows)
        except TickError as e:
            raise self.malformed(path, str(e)) from e

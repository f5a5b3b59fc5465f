"""Backfill one market's trades over a time range: the ancestor's data.py, for every source.

    python scripts/fetch_ticks.py bitstamp BTC-USD --start 2024-01-01 --end 2024-01-02
    python scripts/fetch_ticks.py binance BTC-USD --start 2024-01-01 --csv btcusd.csv
    python scripts/fetch_ticks.py csv BTC-USD --file old_ticks.csv
    python scripts/fetch_ticks.py synthetic BTC-USD --start 2024-01-01T00:00Z --end 2024-01-01T06:00Z
    tickcast fetch bitstamp BTC-USD --start 2024-01-01      (the same command)

Resumable. Into the store (default) it continues from the store's cursor for the
market, exactly as the scheduler's pulls do; into a CSV (--csv) it keeps its own
cursor in `<csv>.cursor` and appends. Either way a re-run (after Ctrl-C, an error,
or --max-pages) continues where the last stopped and never stores a tick twice.
Ticks at or after --end are not kept.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import math
import os
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from app.atomic import atomic_write
from app.cli import HelpFormatter
from app.market.loading import DEFAULT_STORE
from app.market.sources import (
    SOURCES,
    MalformedResponse,
    RateLimited,
    SourceError,
    UnknownSymbol,
    make_source,
    normalise_symbol,
)
from app.market.store import TickStore
from app.market.ticks import TickArrays, TickError
from app.paths import tried

CSV_COLUMNS = ["time", "price", "amount", "trade_id", "side"]


# ---------------------------------------------------------------- arguments


def parse_time(text: str) -> float:
    """Unix seconds ('1700000000', '1700000000.5') or an ISO date/time (naive means UTC)."""
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"not a finite time: {text!r}")
        return v
    try:
        dt = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read time {text!r}; give unix seconds or an ISO date such as 2024-01-31 "
            "or 2024-01-31T12:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_option(text: str) -> tuple[str, Any]:
    """--set KEY=VALUE: a keyword for the source's constructor (ints, floats, true/false)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE (e.g. limit=500), got {text!r}")
    value: Any = raw
    low = raw.strip().lower()
    if low in ("true", "false"):
        value = low == "true"
    else:
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
    return key.strip(), value


def iso(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_parser(prog: str = "fetch_ticks.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("exchange", help=f"the source: {', '.join(sorted(SOURCES))}")
    p.add_argument("symbol", help="the market as BASE-QUOTE, e.g. BTC-USD")
    p.add_argument(
        "--start",
        type=parse_time,
        default=None,
        help="first tick time (unix s or ISO date); used when nothing was fetched yet "
        "(default: where the source begins; for most exchanges, their latest trades)",
    )
    p.add_argument(
        "--end",
        type=parse_time,
        default=None,
        help="stop before this tick time (unix s or ISO date); ticks at/after it are not kept "
        "(default: until the source has nothing more)",
    )
    dest = p.add_mutually_exclusive_group()
    dest.add_argument(
        "--store",
        default=None,
        help=f"tick store to fill, relative to the current directory (default: {DEFAULT_STORE})",
    )
    dest.add_argument(
        "--csv",
        default=None,
        help="append to this CSV instead of the store (its resume point lives in <csv>.cursor)",
    )
    p.add_argument(
        "--base-url",
        default=None,
        help="the exchange's API base URL, for mirrors and tests (default: the exchange's own)",
    )
    p.add_argument("--file", default=None, help="for the csv source: the CSV file to read")
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        type=parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="a source option, e.g. limit=500, timeout=30, retries=8, seed=1 (repeatable)",
    )
    p.add_argument(
        "--max-pages",
        type=int,
        default=None,
        help="stop after this many pages, a re-run continues (default: no limit)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


# ---------------------------------------------------------------- destinations


class StoreSink:
    """The tick store: its per-market cursor, idempotent inserts (ticks + cursor in one commit)."""

    def __init__(self, path: Path, exchange: str, symbol: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.store = TickStore(path)
        self.exchange, self.symbol = exchange, symbol
        self.label = str(path)
        self.resume_point = f"the store {path} (its cursor for {exchange}:{symbol})"

    def cursor(self) -> str | None:
        return self.store.cursor(self.exchange, self.symbol)

    async def write(self, ticks: TickArrays, cursor: str | None) -> int:
        # cursor None: keep the stored cursor (a page cut at --end is fetched again next time)
        return await asyncio.to_thread(self.store.insert, self.exchange, self.symbol, ticks, cursor=cursor)

    def close(self) -> None:
        self.store.close()


class CsvSink:
    """An append-only CSV plus `<csv>.cursor` (JSON) saying how much of it is committed.

    Per page: append the rows and fsync, then replace the cursor file atomically with
    the new cursor and the CSV's committed size. A re-run first cuts the CSV back to
    that size, so a page written but not committed (a crash in between) is fetched
    again instead of duplicated. Rows are kept in time order: a tick older than the
    last written one is dropped, and ticks at the last written time are matched
    against the ones already written there (overlapping pages, a page cut at --end):
    by trade id, else by (price, amount, ordinal) where the source numbers its id-less
    rows, so a page that continues a second is not taken for a resend of it.
    """

    def __init__(self, path: Path, exchange: str, symbol: str) -> None:
        self.path = path
        self.side = path.with_name(path.name + ".cursor")
        self.label = str(path)
        self.resume_point = str(self.side)
        self.exchange, self.symbol = exchange, symbol
        if self.side.exists():
            try:
                self.state = json.loads(self.side.read_text())
                size = int(self.state["bytes"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"cannot read {self.side} ({e}); delete it and {path} to start over") from e
            market = (self.state.get("exchange"), self.state.get("symbol"))
            if market != (exchange, symbol):
                raise ValueError(
                    f"{path} holds {market[0]}:{market[1]}, not {exchange}:{symbol}; "
                    "choose another --csv file"
                )
            if not path.exists() or path.stat().st_size < size:
                raise ValueError(
                    f"{path} is missing or shorter than {self.side} says ({size} bytes); "
                    f"delete {self.side} (and {path}) to start over"
                )
            if path.stat().st_size > size:  # an uncommitted page from a run that was cut off
                with open(path, "r+b") as f:
                    f.truncate(size)
                    os.fsync(f.fileno())
        else:
            if path.exists() and path.stat().st_size > 0:
                raise ValueError(
                    f"{path} exists but has no {self.side.name} to resume from; "
                    "choose a new --csv file or delete this one"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerow(CSV_COLUMNS)
                f.flush()
                os.fsync(f.fileno())
            self.state = {
                "exchange": exchange,
                "symbol": symbol,
                "cursor": None,
                "bytes": path.stat().st_size,
                "rows": 0,
                "last_time": None,
                "last_keys": [],
            }
            self._save()

    def cursor(self) -> str | None:
        return self.state["cursor"]

    def _save(self) -> None:
        with atomic_write(self.side, "w", encoding="utf-8") as f:
            json.dump(self.state, f)

    @staticmethod
    def _key(ticks: TickArrays, i: int) -> str:
        tid = None if ticks.trade_id is None else ticks.trade_id[i]
        if tid is not None:
            return f"id:{tid}"
        key = f"v:{float(ticks.price[i])!r}:{float(ticks.amount[i])!r}"
        return key if ticks.ordinal is None else f"{key}:{int(ticks.ordinal[i])}"

    async def write(self, ticks: TickArrays, cursor: str | None) -> int:
        last = self.state["last_time"]
        seen = Counter(self.state["last_keys"])
        keep: list[int] = []
        for i in range(len(ticks)):
            t = float(ticks.time[i])
            if last is not None and t < last:
                continue
            if last is not None and t == last:
                k = self._key(ticks, i)
                if seen[k] <= 0 and ticks.ordinal is not None and k.startswith("v:"):
                    k = k.rsplit(":", 1)[0]  # a key written by a version without ordinals
                if seen[k] > 0:
                    seen[k] -= 1
                    continue
            keep.append(i)
        idx = np.asarray(keep, dtype=np.int64)
        if len(idx):
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            cols = [ticks.time[idx].tolist(), ticks.price[idx].tolist(), ticks.amount[idx].tolist()]
            for name in ("trade_id", "side"):
                col = getattr(ticks, name)
                cols.append(
                    [""] * len(idx) if col is None else ["" if v is None else str(v) for v in col[idx]]
                )
            w.writerows(zip(*cols, strict=True))
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            new_last = float(ticks.time[idx[-1]])
            at_last = [self._key(ticks, int(i)) for i in idx if float(ticks.time[i]) == new_last]
            if new_last == last:
                at_last = list(self.state["last_keys"]) + at_last
            self.state["last_time"] = new_last
            self.state["last_keys"] = at_last
            self.state["rows"] += len(idx)
        if cursor is not None:
            self.state["cursor"] = cursor
        self.state["bytes"] = self.path.stat().st_size
        if len(idx) or cursor is not None:
            self._save()
        return len(idx)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- what to do next

# The sources word their errors for the scheduler, which pulls again on its own; a
# one-shot command does not, so that hint is replaced by what the user can do.
_SCHEDULER_HINT = re.compile(r"[;,] the next pull will retry$")


def one_shot_message(e: SourceError) -> str:
    """The source's error without the scheduler's promise of a next pull."""
    return _SCHEDULER_HINT.sub("", str(e))


def next_step(e: SourceError, source: Any, sink: StoreSink | CsvSink | None, stats: Stats) -> str:
    """What was kept and what to do now: the command is resumable, so it is usually a re-run."""
    kept = (
        f"{stats.new:,} new ticks from {stats.pages} pages are kept; "
        if stats.pages
        else "this run stored nothing; "
    )
    where = sink.resume_point if sink is not None else "the cursor"
    rerun = f"re-run the same command to resume: it continues from {where}"
    if isinstance(e, UnknownSymbol):
        return kept + "check the symbol (BASE-QUOTE, e.g. BTC-USD) and the exchange, then re-run"
    if isinstance(e, RateLimited):
        return kept + f"wait {e.retry_after:g} s, then {rerun}"
    url = getattr(source, "base_url", None)
    at = f" (now {url})" if url else ""
    if isinstance(e, MalformedResponse):
        return kept + f"check that --base-url{at} is the exchange's API, then {rerun}"
    return kept + f"check the network and --base-url{at}, then {rerun}"


# ---------------------------------------------------------------- the loop


class Bar:
    """Pages, new ticks and the last tick's time; with --end, progress in time from start to end."""

    def __init__(self, enabled: bool, start: float | None, end: float | None) -> None:
        self.start, self.end = start, end
        self.bar: tqdm | None = None
        if enabled:
            if end is not None:
                self.bar = tqdm(
                    total=None, unit="s", unit_scale=True, dynamic_ncols=True, file=sys.stderr, desc="time"
                )
            else:
                self.bar = tqdm(unit="page", dynamic_ncols=True, file=sys.stderr, desc="pages")

    def __call__(self, pages: int, new: int, last_time: float | None) -> None:
        b = self.bar
        if b is None:
            return
        if self.end is None:
            b.update(pages - b.n)
        elif last_time is not None:
            if self.start is None:
                self.start = last_time
            if b.total is None:
                b.total = max(0.0, self.end - self.start)
            b.update(max(0.0, min(b.total, last_time - self.start)) - b.n)
        b.set_postfix({"pages": pages, "new": new, "last": iso(last_time)}, refresh=False)
        b.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Stats:
    def __init__(self) -> None:
        self.pages = self.new = 0
        self.last_time: float | None = None
        self.reason = "the source has nothing more"
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


async def backfill(
    source: Any,
    sink: StoreSink | CsvSink,
    symbol: str,
    *,
    start: float | None,
    end: float | None,
    max_pages: int | None,
    stats: Stats,
    bar: Bar,
) -> None:
    """pull()'s loop, plus --start/--end cuts and a sink that may be a CSV.

    A page cut at `end` keeps its ticks before `end` but not its cursor, so nothing
    at or after `end` is skipped for a later run with a later --end.
    """
    cursor = sink.cursor()
    try:
        while max_pages is None or stats.pages < max_pages:
            page = await source.fetch(symbol, cursor, start=start if cursor is None else None)
            stats.pages += 1
            ticks, next_cursor = page.ticks, page.cursor
            cut = False
            if start is not None and len(ticks) and ticks.time[0] < start:
                ticks = ticks[int(np.searchsorted(ticks.time, start, side="left")) :]
            if end is not None and len(ticks) and ticks.time[-1] >= end:
                ticks = ticks[: int(np.searchsorted(ticks.time, end, side="left"))]
                cut, next_cursor = True, None
            if cut:
                if len(ticks):
                    stats.new += await sink.write(ticks, None)
            elif next_cursor is not None and (len(page.ticks) or next_cursor != cursor):
                stats.new += await sink.write(ticks, next_cursor)
                cursor = next_cursor
            if len(ticks):
                stats.last_time = float(ticks.time[-1])
            bar(stats.pages, stats.new, stats.last_time)
            if cut:
                stats.reason = "reached --end"
                return
            if not page.more:
                return
        stats.reason = f"stopped after --max-pages {max_pages}; a re-run continues"
    finally:
        await source.aclose()


def make(exchange: str, args: argparse.Namespace) -> Any:
    kw: dict[str, Any] = dict(args.options)
    if exchange == "csv":
        if args.file is None and "path" not in kw:
            raise ValueError("the csv source reads a file: give it with --file PATH")
        if args.file is not None:
            kw["path"] = args.file
        if not Path(kw["path"]).exists():
            raise ValueError(f"--file: no such file: {tried(kw['path'])}")
    if exchange == "synthetic":
        end = args.end
        if end is not None and end < time.time():
            # a past range: the market's "now" is --end, so it never generates ticks beyond it
            kw.setdefault("clock", lambda: min(time.time(), end))
        if args.start is not None and "history_s" not in kw:
            # the market begins at --start, so a re-run sees the same price path
            kw["history_s"] = max(0.0, kw.get("clock", time.time)() - args.start)
    try:
        return make_source(exchange, args.base_url, **kw)
    except TypeError as e:
        raise ValueError(f"{exchange} does not take these options ({e}); check --base-url/--set") from e


def main(argv: list[str] | None = None, *, prog: str = "fetch_ticks.py", run: Any = None) -> int:
    """`run` replaces backfill() (scripts/fetch_ticks.py passes its own name, so tests can swap it)."""
    run = backfill if run is None else run
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.max_pages is not None and args.max_pages < 1:
        parser.error("--max-pages must be >= 1")
    if args.start is not None and args.end is not None and args.end <= args.start:
        parser.error("--end must be after --start")
    exchange = args.exchange.strip().lower()
    stats = Stats()
    source: Any = None
    sink: StoreSink | CsvSink | None = None
    bar: Bar | None = None
    try:
        if exchange not in SOURCES:
            raise ValueError(f"unknown exchange {args.exchange!r}; known: {', '.join(sorted(SOURCES))}")
        base, quote = normalise_symbol(args.symbol)
        symbol = f"{base}-{quote}"
        source = make(exchange, args)
        try:
            source.pair(symbol)  # a symbol the exchange cannot name fails before anything is written
        except (ValueError, SourceError):
            asyncio.run(source.aclose())
            raise
        # absolute, so every message and the summary say which file it was
        if args.csv is not None:
            sink = CsvSink(Path(args.csv).absolute(), exchange, symbol)
        else:
            sink = StoreSink(Path(args.store or DEFAULT_STORE).absolute(), exchange, symbol)
        bar = Bar(not args.quiet, args.start, args.end)
        asyncio.run(
            run(
                source,
                sink,
                symbol,
                start=args.start,
                end=args.end,
                max_pages=args.max_pages,
                stats=stats,
                bar=bar,
            )
        )
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(
            f"\ninterrupted after {stats.pages} pages, {stats.new:,} new ticks kept; "
            "re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
    except SourceError as e:
        if bar is not None:
            bar.close()
        print(f"error: {one_shot_message(e)}", file=sys.stderr)
        print(next_step(e, source, sink, stats), file=sys.stderr)
        return 2
    except (ValueError, TickError, OSError) as e:
        if bar is not None:
            bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if sink is not None:
            sink.close()
    bar.close()
    secs = stats.seconds
    rate = stats.new / secs if secs > 0 else 0.0
    print(
        f"{exchange}:{symbol} -> {sink.label}: {stats.new:,} new ticks, {stats.pages} pages, "
        f"{secs:.2f} s, {rate:,.0f} ticks/s; last tick {iso(stats.last_time)}; {stats.reason}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
import re
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.cli import fetch_args
from app.cli.fetch_args import parse_option, parse_time
from app.cli.fetch_progress import Bar, Stats, iso
from app.database import is_postgres
from app.market.sources import (
    SOURCES,
    MalformedResponse,
    RateLimited,
    Source,
    SourceError,
    UnknownSymbol,
    make_source,
    normalise_symbol,
)
from app.market.store import DEFAULT_PATH
from app.market.ticks import TickError
from app.paths import tried
from app.services.ingestion.pull import pull_pages
from app.services.ingestion.sinks import CSV_COLUMNS, CsvSink, StoreSink

# the names scripts/fetch_ticks.py and older imports take from here
__all__ = [
    "CSV_COLUMNS",
    "Bar",
    "CsvSink",
    "Stats",
    "StoreSink",
    "backfill",
    "build_parser",
    "iso",
    "main",
    "make",
    "parse_option",
    "parse_time",
]

Output = StoreSink | CsvSink
Run = Callable[..., Coroutine[Any, Any, None]]


def build_parser(prog: str = "fetch_ticks.py") -> argparse.ArgumentParser:
    return fetch_args.build_parser(prog, __doc__)


# ---------------------------------------------------------------- what to do next

# The sources word their errors for the scheduler, which pulls again on its own; a
# one-shot command does not, so that hint is replaced by what the user can do.
_SCHEDULER_HINT = re.compile(r"[;,] the next pull will retry$")


def one_shot_message(e: SourceError) -> str:
    """The source's error without the scheduler's promise of a next pull."""
    return _SCHEDULER_HINT.sub("", str(e))


def next_step(e: SourceError, source: Source | None, sink: Output | None, stats: Stats) -> str:
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


# ---------------------------------------------------------------- the run


async def backfill(
    source: Source,
    sink: Output,
    symbol: str,
    *,
    start: float | None,
    end: float | None,
    max_pages: int | None,
    stats: Stats,
    bar: Bar,
) -> None:
    """The pull loop with --start/--end cuts, into the store or a CSV; closes the source.

    A page cut at `end` keeps its ticks before `end` but not its cursor, so nothing
    at or after `end` is skipped for a later run with a later --end.
    """
    try:
        await pull_pages(
            source,
            sink,
            symbol,
            start=start,
            since=start,
            end=end,
            max_pages=max_pages,
            progress=stats,
            on_page=bar.page,
        )
    finally:
        await source.aclose()
    if stats.stop == "end":
        stats.reason = "reached --end"
    elif stats.stop == "max_pages":
        stats.reason = f"stopped after --max-pages {max_pages}; a re-run continues"


def make(exchange: str, args: argparse.Namespace) -> Source:
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
        source: Source = make_source(exchange, args.base_url, **kw)
    except TypeError as e:
        raise ValueError(f"{exchange} does not take these options ({e}); check --base-url/--set") from e
    return source


@dataclass
class Session:
    """What a run opened: its messages name them, and the run closes them however it ends."""

    stats: Stats
    exchange: str
    symbol: str = ""
    source: Source | None = None
    sink: Output | None = None
    bar: Bar | None = None

    def open(self, args: argparse.Namespace) -> tuple[Source, Output, Bar]:
        """The source, the output and the bar, checked before anything is written."""
        exchange = self.exchange
        if exchange not in SOURCES:
            raise ValueError(f"unknown exchange {args.exchange!r}; known: {', '.join(sorted(SOURCES))}")
        base, quote = normalise_symbol(args.symbol)
        symbol = self.symbol = f"{base}-{quote}"
        source = self.source = make(exchange, args)
        try:
            source.pair(symbol)  # a symbol the exchange cannot name fails before anything is written
        except (ValueError, SourceError):
            asyncio.run(source.aclose())
            raise
        # absolute, so every message and the summary say which file it was
        sink: Output
        if args.csv is not None:
            sink = self.sink = CsvSink(Path(args.csv).absolute(), exchange, symbol)
        else:
            store = (
                args.store
                if args.store and is_postgres(args.store)
                else Path(args.store or DEFAULT_PATH).absolute()
            )
            sink = self.sink = StoreSink.open(store, exchange, symbol)
        bar = self.bar = Bar(not args.quiet, args.start, args.end)
        return source, sink, bar

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.max_pages is not None and args.max_pages < 1:
        parser.error("--max-pages must be >= 1")
    if args.start is not None and args.end is not None and args.end <= args.start:
        parser.error("--end must be after --start")


def main(argv: list[str] | None = None, *, prog: str = "fetch_ticks.py", run: Run | None = None) -> int:
    """`run` replaces backfill() (scripts/fetch_ticks.py passes its own name, so tests can swap it)."""
    run = backfill if run is None else run
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    check(parser, args)
    s = Session(Stats(), args.exchange.strip().lower())
    stats = s.stats
    try:
        source, sink, bar = s.open(args)
        asyncio.run(
            run(
                source,
                sink,
                s.symbol,
                start=args.start,
                end=args.end,
                max_pages=args.max_pages,
                stats=stats,
                bar=bar,
            )
        )
    except KeyboardInterrupt:
        s.close_bar()
        print(
            f"\ninterrupted after {stats.pages} pages, {stats.new:,} new ticks kept; "
            "re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
    except SourceError as e:
        s.close_bar()
        print(f"error: {one_shot_message(e)}", file=sys.stderr)
        print(next_step(e, s.source, s.sink, stats), file=sys.stderr)
        return 2
    except (ValueError, TickError, OSError) as e:
        s.close_bar()
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if s.sink is not None:
            s.sink.close()
    bar.close()
    secs = stats.seconds
    rate = stats.new / secs if secs > 0 else 0.0
    print(
        f"{s.exchange}:{s.symbol} -> {sink.label}: {stats.new:,} new ticks, {stats.pages} pages, "
        f"{secs:.2f} s, {rate:,.0f} ticks/s; last tick {iso(stats.last_time)}; {stats.reason}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

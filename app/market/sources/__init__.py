"""Trade sources by name: `SOURCES` and `make_source`.

Settings name a source by its `name` ("bitstamp", "kraken", "csv", ...); the
registry maps that to the class. Modules are found by their classes' `name`
attribute, so a source module only has to define its class to be registered.
A module that is missing from this checkout is skipped (not an error), but one
that fails to import for any other reason raises, so bugs are not hidden.
"""

from __future__ import annotations

import importlib
from typing import Any

from app.market.sources.base import (
    HttpSource,
    MalformedResponse,
    Page,
    RateLimited,
    Source,
    SourceError,
    UnknownSymbol,
    normalise_symbol,
)

_MODULES = ("bitstamp", "binance", "coinbase", "kraken", "bitcoincharts", "csv_source", "live_synthetic")

SOURCES: dict[str, type] = {}


def _register() -> None:
    for mod_name in _MODULES:
        full = f"{__name__}.{mod_name}"
        try:
            mod = importlib.import_module(full)
        except ModuleNotFoundError as e:
            if e.name == full:
                continue
            raise
        for obj in vars(mod).values():
            name = getattr(obj, "name", None)
            if (
                isinstance(obj, type)
                and obj.__module__ == full
                and isinstance(name, str)
                and hasattr(obj, "fetch")
            ):
                SOURCES[name] = obj


_register()


def unknown_source(name: str, kind: str = "exchange") -> str:
    """What to say about a name with no source, with the names that would work."""
    return f"unknown {kind} {name!r}; known: {', '.join(sorted(SOURCES)) or 'none'}"


def make_source(name: str, base_url: str | None = None, **kw: Any) -> Any:
    """Build the source called `name`; `base_url` (mirrors, tests) only for HTTP sources."""
    try:
        cls = SOURCES[name]
    except KeyError:
        raise ValueError(unknown_source(name, "source")) from None
    if base_url is not None:
        kw["base_url"] = base_url
    return cls(**kw)


__all__ = [
    "SOURCES",
    "HttpSource",
    "MalformedResponse",
    "Page",
    "RateLimited",
    "Source",
    "SourceError",
    "UnknownSymbol",
    "make_source",
    "normalise_symbol",
    "unknown_source",
]

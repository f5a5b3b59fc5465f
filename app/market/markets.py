"""A market's name: an exchange and a symbol, written `exchange:SYMBOL` everywhere a person types it.

Parsed once, where it enters (settings, the CLI, a URL), so that nothing past
the edge splits strings or wonders whether the colon is there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An exchange or a symbol: what the store, the URLs and a file name can all carry unescaped.
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
NAME_MAX = 64
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, order=True)
class Market:
    exchange: str
    symbol: str

    def __post_init__(self) -> None:
        for what, v in (("exchange", self.exchange), ("symbol", self.symbol)):
            if not isinstance(v, str) or not _NAME.match(v) or len(v) > NAME_MAX:
                raise ValueError(f"{what} {v!r} must be 1-{NAME_MAX} letters, digits, '_', '.' or '-'")

    @classmethod
    def parse(cls, text: str) -> Market:
        """`exchange:SYMBOL` (the symbol may itself hold no colon); ValueError says how to write it."""
        exchange, sep, symbol = text.strip().partition(":")
        if not sep or not exchange or not symbol:
            raise ValueError(f"market {text!r} must be written exchange:SYMBOL")
        return cls(exchange, symbol)

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol}"

"""Request bodies built from ticks, as the API takes them."""

from __future__ import annotations

import io
from typing import Any

from app.market.ticks import TickArrays, write_csv_to


def body(ticks: TickArrays, n: int = 64, **extra: object) -> dict[str, Any]:
    """A /predict body: the last `n` ticks (enough for the default TickNet's 49), plus any extra
    fields."""
    t = ticks[len(ticks) - n :]
    return {
        "ticks": [
            {"time": float(a), "price": float(b), "amount": float(c)}
            for a, b, c in zip(t.time, t.price, t.amount, strict=True)
        ],
        **extra,
    }


def csv_body(ticks: TickArrays) -> bytes:
    """Ticks as the CSV body POST /markets/.../import takes."""
    buf = io.StringIO()
    write_csv_to(ticks, buf)
    return buf.getvalue().encode()

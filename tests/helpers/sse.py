"""A small Server-Sent Events client over httpx, for tests against a live server."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    event: str
    id: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    """Opens `url` and parses the wire format line by line (comments are skipped, as a
    browser does). A read that waits longer than `timeout` raises httpx.ReadTimeout."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None, timeout: float = 20.0) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(timeout))
        self._cm = self._client.stream("GET", url, headers=headers)
        self.response = self._cm.__enter__()
        self._lines = self.response.iter_lines() if self.response.status_code == 200 else iter(())

    def next(self, within: float = 30.0) -> Event | None:
        """The next event; None when the server ended the stream. Keep-alive comments reset
        the read timeout, so `within` bounds the whole wait (checked as each line arrives)."""
        deadline = time.monotonic() + within
        fields: dict[str, list[str]] = {}
        for line in self._lines:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event within {within} s")
            if line == "":
                if fields:
                    return Event(
                        fields.get("event", ["message"])[-1],
                        fields.get("id", [None])[-1],
                        "\n".join(fields.get("data", [])),
                    )
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        return None

    def take(self, n: int, event: str = "tick") -> list[Event]:
        """The next n events of one type (others are skipped)."""
        out: list[Event] = []
        while len(out) < n:
            e = self.next()
            assert e is not None, f"the stream ended after {len(out)} of {n} {event!r} events"
            if e.event == event:
                out.append(e)
        return out

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
        self._client.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

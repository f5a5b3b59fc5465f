"""Stop signals that cross machines: a tiny Ray actor holding the set ones, and a reader of one.

A local job's stop is a multiprocessing Event, which only processes of one machine share.
A Ray task can run anywhere, so its stop lives in an actor that the service sets and the task
reads: one actor for all the jobs of a service (`Flags`, one bit per job id), as each actor is
a process of its own, started on the job's way to its first batch. The task asks whether to
stop between every two batches, so `FlagReader` never waits on the actor: it keeps one question
in flight, at most every `poll_s`, and answers from the last reply; a stop is seen within
`poll_s` plus a round trip, and a batch costs nothing more.

A flag whose actor is gone (its owner, the service, died) reads as set:
a task nobody can hear any more must stop, as a local worker does when its parent dies.
Imported only with the Ray backend (`ray_backend`, `ray_train`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ray

POLL_S = 0.2  # how often a reader asks: a stop reaches a training loop within about this


class Flags:
    """The actor's class: the keys whose stop was asked (set once; forgotten when their job ends)."""

    def __init__(self) -> None:
        self.on: set[str] = set()

    def set(self, key: str) -> None:
        self.on.add(key)

    def is_set(self, key: str) -> bool:
        return key in self.on

    def forget(self, key: str) -> None:
        self.on.discard(key)


def new_flags() -> Any:
    """A Flags actor that takes no CPU (it must never wait for one behind the jobs it stops)."""
    return ray.remote(num_cpus=0, max_restarts=0)(Flags).remote()


class FlagReader:
    """`is_set()` of one key without blocking: the last answer of the actor, refreshed in the
    background. Picklable (it travels to the task as the actor's handle); thread-safe."""

    def __init__(self, actor: Any, key: str, poll_s: float = POLL_S) -> None:
        self.actor, self.key, self.poll_s = actor, key, poll_s
        self._seen = False
        self._asked: Any = None  # the question in flight
        self._next = 0.0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"actor": self.actor, "key": self.key, "poll_s": self.poll_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["actor"], state["key"], state["poll_s"])  # type: ignore[misc]

    def is_set(self) -> bool:
        with self._lock:
            if self._seen:
                return True
            now = time.monotonic()
            if self._asked is None and now >= self._next:
                self._asked, self._next = self.actor.is_set.remote(self.key), now + self.poll_s
            if self._asked is not None and ray.wait([self._asked], timeout=0)[0]:
                try:
                    self._seen = bool(ray.get(self._asked))
                except ray.exceptions.RayError:  # the actor is gone: so is whoever could stop us
                    self._seen = True
                self._asked = None
            return self._seen

"""The replica parts for a store target: with PostgreSQL (several replicas, or uvicorn workers,
sharing one database) the markets' ingestion locks and the "ticks stored" broadcast; with the
embedded SQLite store neither (one process ingests everything and its hooks are all there is).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.database import is_postgres
from app.services.ingestion.broadcast import TickBroadcast
from app.services.ingestion.leader import MarketLeases
from app.settings import Settings

# Without a lock round that worked for this many pull intervals (at least MIN_VALID_S), a replica
# stops pulling: it cannot tell whether it still leads.
VALID_INTERVALS = 3
MIN_VALID_S = 10.0

Hook = Callable[[str, str], None]


@dataclass(frozen=True)
class Replicas:
    leases: MarketLeases | None  # None: this process ingests every configured market
    broadcast: TickBroadcast | None  # started and stopped with ingestion
    on_stored: Hook  # what a pull or an import that stored ticks calls: local hooks, then the others


def for_target(
    target: str,
    settings: Settings,
    on_stored: Hook,
    on_resync: Sequence[Callable[[], None]],
) -> Replicas:
    """`on_stored`: this replica's own hooks (streams, live scoring), also called for the ticks
    another replica stored; `on_resync`: each called when notifications may have been missed."""
    if not is_postgres(target):
        return Replicas(None, None, on_stored)
    leases = None  # a replica with ingestion off takes no market's lock: it would never pull it
    if settings.ingest:
        leases = MarketLeases(
            target,
            [(m.exchange, m.symbol) for m in settings.markets],
            max_markets=settings.ingest_max_markets,
            valid_s=max(VALID_INTERVALS * settings.pull_interval_s, MIN_VALID_S),
        )

    def resync() -> None:
        for hook in on_resync:
            hook()

    broadcast = TickBroadcast(target, on_ticks=on_stored, on_resync=resync)

    def stored(exchange: str, symbol: str) -> None:
        on_stored(exchange, symbol)
        broadcast.publish(exchange, symbol)

    return Replicas(leases, broadcast, stored)

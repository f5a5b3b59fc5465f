"""`if_better_live`: a shadow replaces the active model only on paired live evidence.

The evidence is the Diebold-Mariano test (`app.ml.paired`) of the per-tick log
losses of the two models on the newest ticks both scored and whose outcome is
known, each market a segment of its own. A challenger is tested once it has
`min_outcomes` paired outcomes; it is promoted when its loss is lower at the
configured confidence. A refusal is recorded each time a challenger has
gathered another `min_outcomes` outcomes without being better (so the history
shows the evidence growing, not one line per check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.ml.paired import PairedTest, diebold_mariano, log_losses
from app.services.live.log import PredictionLog

MAX_PAIRS = 50_000  # the newest paired outcomes per market a test reads


@dataclass(frozen=True)
class Policy:
    enabled: bool
    min_outcomes: int
    confidence: float


def paired_test(
    log: PredictionLog, markets: list[tuple[str, str]], active: str, challenger: str
) -> PairedTest:
    """Is `challenger`'s live log loss lower than `active`'s on the ticks both scored?"""
    la, lb = [], []
    for exchange, symbol in markets:
        y, pa, pb = log.paired(exchange, symbol, active, challenger, last=MAX_PAIRS)
        la.append(log_losses(y, pa))
        lb.append(log_losses(y, pb))
    return diebold_mariano(la, lb)


def evidence(test: PairedTest, policy: Policy, reason: str) -> dict[str, Any]:
    return {
        "n": test.n,
        "mean_diff": test.mean_diff,
        "statistic": test.statistic,
        "p_value": test.p_value,
        "confidence": policy.confidence,
        "min_outcomes": policy.min_outcomes,
        "reason": reason,
    }


def _last_n(log: PredictionLog, active: str, challenger: str) -> int:
    for d in log.decisions(challenger, limit=50):
        if d["active_id"] == active and d["challenger_id"] == challenger:
            return int(d["n"])
    return 0


def decide(
    log: PredictionLog,
    policy: Policy,
    markets: list[tuple[str, str]],
    active: str,
    challengers: list[str],
    pinned: frozenset[str] = frozenset(),
) -> str | None:
    """The challenger to promote now, if any, after recording every decision this check reached.
    With the policy off, only `pinned` challengers (jobs trained with if_better_live) are tested."""
    better: list[tuple[float, str, PairedTest]] = []
    for c in challengers:
        if not (policy.enabled or c in pinned):
            continue
        test = paired_test(log, markets, active, c)
        if test.n < policy.min_outcomes:
            continue
        if test.better(policy.confidence):
            better.append((test.statistic, c, test))
        elif test.n >= _last_n(log, active, c) + policy.min_outcomes:
            why = (
                f"live log loss not lower than {active}'s at {policy.confidence:.0%} confidence over "
                f"{test.n} paired outcomes (mean difference {test.mean_diff:+.5f}, p = {test.p_value:.3g})"
            )
            log.add_decision(active, c, "refused", evidence(test, policy, why))
    if not better:
        return None
    _, winner, test = max(better, key=lambda b: b[0])
    why = (
        f"live log loss lower than {active}'s by {test.mean_diff:.5f} per tick over {test.n} paired outcomes "
        f"(p = {test.p_value:.3g} < {1 - policy.confidence:.3g})"
    )
    log.add_decision(active, winner, "promoted", evidence(test, policy, why))
    return winner

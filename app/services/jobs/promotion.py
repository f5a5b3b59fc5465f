"""Whether a successful job's model becomes the active one, and who hears of a job's end:
decided by the job manager (the parent), never by the worker, as the active model may change
while the job trains.

The policy (`registry.should_promote`) compares validation AUCs the worker measured on the
same data for both models; `if_better` also needs the model it was compared with to still be
the active one, or the comparison says nothing about today's choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from app.services.jobs.records import copy_record
from app.services.jobs.states import Activation
from app.services.jobs.store import JobRecord
from app.services.registry import Registry, should_promote

log = logging.getLogger("app.services.jobs.manager")  # the manager's words, as they always were


def decide(job_id: str, policy: Activation | str, result: dict[str, Any], active: str | None) -> bool:
    """Record the decision in `result` ("activated", "reason") and return it; the warnings the
    worker put in the result are said in the log, once."""
    ok, reason = should_promote(Activation(policy), result["challenger_val_auc"], result["incumbent_val_auc"])
    if policy == Activation.IF_BETTER and active != result["incumbent_id"]:
        ok = False
        reason = (
            f"the active model changed while the job ran (compared with {result['incumbent_id']}, "
            f"now {active}); activate it by hand if wanted"
        )
    result["activated"], result["reason"] = ok, reason
    for warning in result.get("warnings") or []:  # the result keeps them; the log says them once
        log.warning("job %s: %s", job_id, warning)
    return ok


def activate(registry: Registry, on_finish: Callable[[JobRecord], None] | None, rec: JobRecord) -> None:
    """Make a job's model active: `on_finish` does it (it also swaps it into the predictor),
    else the registry. Raises what they raise: the caller records the activation as failed."""
    if on_finish is not None:
        on_finish(copy_record(rec))
    elif rec.result is not None:  # always, for a job that succeeded
        registry.activate(rec.result["model_id"])


def tell(on_finish: Callable[[JobRecord], None] | None, rec: JobRecord) -> None:
    """`on_finish` hears a job's final record; what it raises is logged, never the job's end."""
    try:
        if on_finish is not None:
            on_finish(rec)
    except Exception:
        log.exception("job %s: on_finish failed", rec.id)

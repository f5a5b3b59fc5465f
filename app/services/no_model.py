"""Why no model is loaded, and what brings one back.

The predictor says what happened in domain words (`NoModelReason.text`) and what
to do as a `Remedy`, which each front end says its own way: the HTTP layer names
its routes (`app.api.advice`), the log says them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Remedy(StrEnum):
    """What brings a model back."""

    WAIT = "wait"  # one is on its way: the text says when to ask again
    CHECK_JOBS = "check jobs"  # none was ever loaded: one may be training; else train or activate one
    TRAIN_OR_ACTIVATE = "train or activate"  # the first model's training failed
    ACTIVATE_ANOTHER = "activate another"  # the active model cannot be loaded


@dataclass(frozen=True)
class NoModelReason:
    text: str  # what happened, in domain words
    remedy: Remedy = Remedy.WAIT


class NoModel(Exception):
    """No model is loaded, so nothing can be predicted yet; `reason` says why."""

    retry_after_s = 10  # a 503's Retry-After, and the "retry in N s" of every reason given for it

    def __init__(self, reason: NoModelReason) -> None:
        super().__init__(reason.text)
        self.reason = reason

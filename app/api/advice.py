"""What to do next, in this API's words: the routes to call and the settings to change.

The services say what happened in domain words, and carry what a front end needs to
say more (a full queue's limit, whether a job id could be one, what brings a model
back). The answers of `app.api.errors` and /ready add the rest from here, so a route
or a setting is spelled in one place and every answer reads as it always did.
"""

from __future__ import annotations

from app.services.feeds import TooManyClients
from app.services.jobs.errors import QueueFull, UnknownJob
from app.services.jobs.shortfall import TooFewToTrain
from app.services.jobs.spec import more_ticks
from app.services.markets import StaleMarket
from app.services.no_model import NoModel, Remedy
from app.settings import env_name

_TRAIN_OR_ACTIVATE = "train one with POST /train or activate one with POST /models/{id}/activate"
# after the reason no model is loaded, what brings one back
_REMEDIES: dict[Remedy, str] = {
    Remedy.WAIT: "",  # the reason says when to ask again
    Remedy.CHECK_JOBS: f" (see GET /jobs); otherwise {_TRAIN_OR_ACTIVATE}",
    Remedy.TRAIN_OR_ACTIVATE: f"; {_TRAIN_OR_ACTIVATE}",
    Remedy.ACTIVATE_ANOTHER: "; activate another with POST /models/{id}/activate (GET /models shows "
    "which can be loaded) or train one with POST /train",
}

# added to the error's own text
UNKNOWN_MODEL = "; GET /models lists the available ones"
CANNOT_ACTIVATE = "; GET /models shows which models can be loaded"
UNKNOWN_MARKET = f"; add it to {env_name('markets')}"
NOT_A_MARKET = f"; add it to {env_name('markets')} or import ticks"


def not_ready(reason: str, remedy: Remedy | None) -> str:
    """Why no model serves, and what brings one back (None: nothing to add)."""
    return reason + ("" if remedy is None else _REMEDIES[remedy])


def no_model(e: NoModel) -> str:
    return not_ready(str(e), e.reason.remedy)


def unknown_job(e: UnknownJob) -> str:
    return str(e) if e.malformed else f"{e}; GET /jobs lists the jobs"


def queue_full(e: QueueFull) -> str:
    return (
        f"the training queue is full: {e.waiting} jobs wait for a worker (at most {e.limit}, "
        f"{env_name('job_queue_max')}); nothing was queued; retry in {e.retry_after_s} s, or "
        "cancel a waiting job (DELETE /jobs/{id})"
    )


def too_few_to_train(e: TooFewToTrain) -> str:
    return f"{e.shortfall}: {more_ticks(e.exchange, e.symbol, e.ranged)}"


def too_many_clients(e: TooManyClients) -> str:
    return (
        f"{e.limit} streams are open, the most this service allows "
        f"({env_name('stream_max_clients')}); retry later"
    )


def stale_market(e: StaleMarket) -> str:
    return (
        f"the newest stored tick of {e.market} is {e.age_s:.0f} s old, over the {e.limit_s:g} s "
        f"{env_name('max_staleness_s')} allows: a prediction from it would be stale; GET /markets shows "
        "the market's ingestion status and last error (a market that is not ingested needs newer "
        f"ticks imported); retry in {e.retry_after_s} s"
    )

"""Dependencies: the services the lifespan built, and the API-key guard.

All are `async def`: FastAPI runs plain `def` dependencies in its thread pool,
two thread hops per /predict for what is an attribute lookup.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader

from app.api.metrics import Metrics
from app.api.schemas import NAME_PATTERN
from app.market.store import TickStore
from app.services.feeds import Feeds
from app.services.ingestion.scheduler import Ingestor
from app.services.jobs.manager import JobManager
from app.services.predictor import Predictor
from app.services.registry import Registry
from app.settings import Settings

_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="required on mutating endpoints when TICKCAST_API_KEY is set",
)

# A market's names in a path: what the store and TICKCAST_MARKETS can hold; anything else is a
# 422 naming the part, before a route looks it up.
Exchange = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=NAME_PATTERN,
        examples=["synthetic"],
        description="the market's exchange, as in GET /markets",
    ),
]
Symbol = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=NAME_PATTERN,
        examples=["BTC-USD"],
        description="the market's symbol, as in GET /markets",
    ),
]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> TickStore:
    return request.app.state.store


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor


async def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


async def get_ingestor(request: Request) -> Ingestor:
    return request.app.state.ingestor


async def get_feeds(request: Request) -> Feeds:
    return request.app.state.feeds


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def require_key(request: Request, key: Annotated[str | None, Security(_key_header)]) -> None:
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "APIKey"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[TickStore, Depends(get_store)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
FeedsDep = Annotated[Feeds, Depends(get_feeds)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
KeyDep = Depends(require_key)

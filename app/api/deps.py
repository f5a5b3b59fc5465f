"""Dependencies: the services the lifespan built, a market named in the path, and the API-key
guard.

All are `async def`: FastAPI runs plain `def` dependencies in its thread pool,
two thread hops per /predict for what is an attribute lookup.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader

from app.market.markets import NAME_MAX, NAME_PATTERN, Market
from app.services.container import Services
from app.services.feeds import Feeds
from app.services.ingestion.scheduler import Ingestor
from app.services.jobs.manager import JobManager
from app.services.live.service import LiveEval
from app.services.markets import Markets
from app.services.predictor import Predictor
from app.services.registry import Registry
from app.settings import Settings

_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="required on mutating endpoints when TICKCAST_API_KEY is set",
)


def services_of(request: Request) -> Services:
    """The one thing the lifespan keeps on the app (`app.state.services`)."""
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings


async def get_registry(request: Request) -> Registry:
    return services_of(request).registry


async def get_predictor(request: Request) -> Predictor:
    return services_of(request).predictor


async def get_jobs(request: Request) -> JobManager:
    return services_of(request).jobs


async def get_ingestor(request: Request) -> Ingestor:
    return services_of(request).ingestor


async def get_feeds(request: Request) -> Feeds:
    return services_of(request).feeds


async def get_markets(request: Request) -> Markets:
    return services_of(request).markets


async def get_live(request: Request) -> LiveEval:
    return services_of(request).live


async def market_in_path(
    exchange: Annotated[
        str,
        Path(
            min_length=1,
            max_length=NAME_MAX,
            pattern=NAME_PATTERN,
            examples=["synthetic"],
            description="the market's exchange, as in GET /markets",
        ),
    ],
    symbol: Annotated[
        str,
        Path(
            min_length=1,
            max_length=NAME_MAX,
            pattern=NAME_PATTERN,
            examples=["BTC-USD"],
            description="the market's symbol, as in GET /markets",
        ),
    ],
) -> Market:
    """A market named in a path, `/{exchange}/{symbol}`: what the store and TICKCAST_MARKETS can
    hold; anything else is a 422 naming the part, before a route looks it up."""
    return Market(exchange, symbol)


async def require_key(request: Request, key: Annotated[str | None, Security(_key_header)]) -> None:
    expected = services_of(request).settings.api_key
    if expected is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "APIKey"})


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
FeedsDep = Annotated[Feeds, Depends(get_feeds)]
MarketsDep = Annotated[Markets, Depends(get_markets)]
LiveDep = Annotated[LiveEval, Depends(get_live)]
MarketPath = Annotated[Market, Depends(market_in_path)]
KeyDep = Depends(require_key)

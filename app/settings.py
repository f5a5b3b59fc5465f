"""One Settings object for the whole service, read from TICKCAST_* variables and `.env`.

Every knob a deployment may turn lives here, with a default that runs on a
fresh machine with no configuration (SQLite file, local models folder,
synthetic market, local worker processes).

A bad value stops the service before anything starts, with one line per bad
variable that names it, quotes the value and shows one that works
(`load_settings`, `SettingsInvalid`): a traceback through pydantic's internals
tells a newcomer nothing about which variable to fix. Lists may be written the
way people write them in a shell (`a,b`) as well as JSON (`["a","b"]`).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from app.cluster_settings import ClusterSettings
from app.database import redact, target
from app.market.markets import Market
from app.market.store import DEFAULT_PATH

PREFIX = "TICKCAST_"
SECRET = frozenset({"api_key"})  # never echoed back in an error
URLS = frozenset({"database_url"})  # echoed with their password hidden
MAX_SHOWN = 200  # characters of a bad value quoted in its error


class Settings(ClusterSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore")

    host: str = Field(
        "127.0.0.1",
        description="address `tickcast serve` binds (0.0.0.0 in containers)",
        examples=["0.0.0.0"],
    )
    port: int = Field(8000, ge=1, le=65535, description="port `tickcast serve` listens on", examples=["8080"])
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="uvicorn worker processes for `tickcast serve`, each running the whole lifespan: with "
        "a postgresql:// database several (and replicas) are fine, each market ingested by one at a "
        "time (an advisory lock per market); with SQLite, turn ingestion off in all but one",
        examples=["2"],
    )
    store_path: Path = Field(
        DEFAULT_PATH, description="SQLite tick store (one file)", examples=["/var/lib/tickcast/ticks.db"]
    )
    models_dir: Path = Field(
        Path("models"),
        description="checkpoint store: one <id>.pt per model",
        examples=["/var/lib/tickcast/models"],
    )
    device: str = Field(
        "auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps", examples=["cpu"]
    )
    api_key: SecretStr | None = Field(
        None, description="when set, mutating endpoints need X-API-Key", examples=["a-long-random-string"]
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins allowed by CORS (external dashboards), comma-separated or a JSON list",
        examples=["https://dash.example.com,http://localhost:3000", '["https://dash.example.com"]'],
    )
    markets: Annotated[list[Market], NoDecode] = Field(
        default_factory=lambda: [Market("synthetic", "BTC-USD")],
        description="markets as exchange:SYMBOL, comma-separated or a JSON list; the first synthetic one "
        "seeds the first start",
        examples=["binance:BTC-USD,kraken:ETH-USD", '["binance:BTC-USD"]'],
    )
    ingest: bool = Field(
        True,
        description="pull the markets on a schedule (off for replicas that should not ingest)",
        examples=["false"],
    )
    pull_interval_s: float = Field(
        10.0, gt=0, le=86_400, description="seconds between pulls of a market", examples=["30"]
    )
    source_urls: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="base URL per exchange (mirrors, tests), a JSON object",
        examples=['{"binance": "https://api.binance.us"}'],
    )
    retrain_cron: str | None = Field(
        None,
        description="crontab (UTC) for retraining each market with the if_better policy; unset: never",
        examples=["0 3 * * *"],
    )
    job_concurrency: int = Field(1, ge=1, le=16, description="training jobs run at once", examples=["2"])
    job_threads: int = Field(1, ge=1, le=64, description="torch threads per training worker", examples=["2"])
    job_queue_max: int = Field(
        20,
        ge=1,
        le=10_000,
        description="training jobs allowed to wait for a worker; POST /train answers 429 with "
        "Retry-After beyond it",
        examples=["50"],
    )
    predict_threads: int = Field(1, ge=1, le=64, description="torch threads for serving", examples=["2"])
    batch_window_ms: float = Field(
        2.0, ge=0, le=100, description="micro-batching wait for a batch", examples=["1.0"]
    )
    batch_max: int = Field(64, ge=1, le=4096, description="largest micro-batch", examples=["128"])
    stream_max_clients: int = Field(
        100,
        ge=1,
        le=10_000,
        description="open /stream connections allowed at once (others get 503)",
        examples=["500"],
    )
    stream_poll_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="how often a stream looks for ticks it was not told about (imports, other processes)",
        examples=["2.5"],
    )
    max_body_bytes: int = Field(
        2_000_000, ge=1024, description="request bodies above this get 413", examples=["10000000"]
    )
    max_ticks: int = Field(10_000, ge=2, description="most ticks in one /predict body", examples=["50000"])
    bootstrap: bool = Field(
        True,
        description="first start: fill the store from the synthetic "
        "market and train a small model if none exists",
        examples=["false"],
    )
    bootstrap_ticks: int = Field(
        60_000,
        ge=2_000,
        description="synthetic ticks for bootstrap (at least 2000: training needs 1,000 windows)",
        examples=["60000"],
    )
    live: bool = Field(
        True,
        description="score every new stored tick with the active model and its shadows, record "
        "each outcome when the next tick arrives, and keep rolling live metrics",
        examples=["false"],
    )
    live_poll_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="how often live scoring looks for ticks it was not told about (imports, other processes)",
        examples=["0.5"],
    )
    live_metrics_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="seconds between recomputations of the rolling live metrics (and promotion checks)",
        examples=["30"],
    )
    shadow_models: int = Field(
        3,
        ge=0,
        le=8,
        description="challengers scored in shadow beside the active model: the named ones, then the newest",
        examples=["0"],
    )
    shadow_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="model ids to score in shadow first, comma-separated or a JSON list",
        examples=["TickNet-20261202T120000Z-ab12"],
    )
    promotion: Literal["off", "if_better_live"] = Field(
        "off",
        description="if_better_live: activate a shadow whose live log loss beats the active model's "
        "by a paired test; off: live results are only reported",
        examples=["if_better_live"],
    )
    promote_min_outcomes: int = Field(
        5_000,
        ge=100,
        description="paired live outcomes a challenger needs before the promotion test is run",
        examples=["20000"],
    )
    promote_confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="confidence of the paired promotion test (one-sided)",
        examples=["0.99"],
    )
    max_staleness_s: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="GET /predict/{exchange}/{symbol} answers 503 when the market's newest tick is older: "
        "seconds for every ingested market, or exchange:SYMBOL=seconds pairs; unset: never",
        examples=["120", "binance:BTC-USD=30,kraken:ETH-USD=300"],
    )
    live_auc_floor: float = Field(
        0.5, ge=0, le=1, description="live AUC below this raises the live alert gauge", examples=["0.55"]
    )
    live_ece_max: float = Field(
        0.05, gt=0, le=1, description="live ECE above this raises the live alert gauge", examples=["0.03"]
    )
    recalibrate_s: float = Field(
        0,
        ge=0,
        description="seconds between refits of the active model's calibrator on recent live outcomes; "
        "0: never",
        examples=["3600"],
    )
    gap_s: float = Field(
        300.0,
        gt=0,
        description="seconds without a trade that count as a gap in a market's coverage; training "
        "windows never span one",
        examples=["60"],
    )
    prediction_retention_s: float = Field(
        7 * 86_400,
        gt=0,
        description="how long live predictions stay in the prediction log",
        examples=["86400"],
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level", examples=["debug"]
    )

    def database(self) -> str:
        """The store target every part opens (`app.database`): a SQLite file or a postgresql:// URL."""
        return target(self.database_url, self.store_path)

    def staleness_limit(self, exchange: str, symbol: str) -> float | None:
        """The most a market's newest tick may lag now before its prediction is refused: its own
        entry, else "*" for a market this service ingests; None (never) for historical markets."""
        own = self.max_staleness_s.get(f"{exchange}:{symbol}")
        if own is not None:
            return own
        ingested = self.ingest and any(m.exchange == exchange and m.symbol == symbol for m in self.markets)
        return self.max_staleness_s.get("*") if ingested else None

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, v: object) -> object:
        return None if v == "" else v  # an empty variable (compose's default) means "no key"

    @field_validator("cors_origins", "shadow_ids", mode="before")
    @classmethod
    def _list(cls, v: object) -> object:
        """A JSON list, or the comma-separated form a shell user writes first."""
        if not isinstance(v, str):
            return v
        text = v.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"it starts with '[' but is not a JSON list ({e.msg} at character {e.pos})"
                ) from None
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("source_urls", mode="before")
    @classmethod
    def _object(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        if not v.strip():
            return {}
        try:
            return json.loads(v)
        except json.JSONDecodeError as e:
            raise ValueError(f"not a JSON object ({e.msg} at character {e.pos})") from None

    @field_validator("max_staleness_s", mode="before")
    @classmethod
    def _staleness(cls, v: object) -> object:
        """A number for every ingested market ("*"), or exchange:SYMBOL=seconds pairs, or JSON."""
        if not isinstance(v, str):
            return v
        text = v.strip()
        if not text:
            return {}
        if text.startswith("{"):
            return cls._object(text)
        out: dict[str, object] = {}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            key, sep, value = part.rpartition("=")
            if not sep:
                key, value = "*", part
            elif key != "*":
                key = str(Market.parse(key.strip()))
            out[key] = value.strip()
        return out

    @field_validator("max_staleness_s")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, s in v.items() if not s > 0]
        if bad:
            raise ValueError(f"staleness must be a positive number of seconds (bad: {', '.join(bad)})")
        return v

    @field_validator("retrain_cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v:
            from apscheduler.triggers.cron import CronTrigger

            CronTrigger.from_crontab(v, "UTC")  # ValueError names the bad field
        return v or None

    @field_validator("markets", mode="before")
    @classmethod
    def _markets(cls, v: object) -> object:
        """Each market written exchange:SYMBOL with an exchange tickcast has a source for: a typo
        found here stops the start, where found at the first pull it only logged a warning per
        pull, forever."""
        from app.market.sources import SOURCES, unknown_source

        items = cls._list(v)
        if not isinstance(items, list):
            return items  # not a list: pydantic says so
        markets = []
        for m in items:
            market = m if isinstance(m, Market) else Market.parse(str(m))
            if market.exchange not in SOURCES:
                raise ValueError(f"market {str(m)!r}: {unknown_source(market.exchange)}")
            markets.append(market)
        return markets


class SettingsInvalid(ValueError):
    """Settings that cannot be used; `problems` holds one line per bad variable, each naming it,
    quoting its value and showing a value that works."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def env_name(field: str) -> str:
    return f"{PREFIX}{field.upper()}"


def explain(e: ValidationError | SettingsError) -> list[str]:
    """One line per problem: `VAR='value' is not valid: why; for example VAR='...'`."""
    if isinstance(e, SettingsError):  # a source could not be read at all: no per-field detail
        return [f"the settings could not be read: {e}"]
    lines, seen = [], set()
    for err in e.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        if field in seen:
            continue  # one line per variable: several items of one list are one fix
        seen.add(field)
        msg = str(err["msg"]).removeprefix("Value error, ")
        if len(err["loc"]) > 1:
            msg = f"item {err['loc'][1]}: {msg}"
        if field not in Settings.model_fields:
            lines.append(f"settings are not valid: {msg}")
            continue
        var = env_name(field)
        lines.append(f"{var}={_shown(field, err.get('input'))} is not valid: {msg}{_example(field)}")
    return lines


def _shown(field: str, fallback: Any) -> str:
    """The value as the user wrote it: the environment's text when it came from there."""
    if field in SECRET:
        return "'<hidden>'"
    if field in URLS:  # a database URL may carry a password
        return f"'{redact(str(fallback))}'"
    wanted = env_name(field).lower()
    raw = next((v for k, v in os.environ.items() if k.lower() == wanted), None)
    if raw is None:
        raw = fallback if isinstance(fallback, str) else json.dumps(fallback, default=str)
    if len(raw) > MAX_SHOWN:
        raw = raw[:MAX_SHOWN] + "..."
    return f"'{raw}'"


def _example(field: str) -> str:
    examples = Settings.model_fields[field].examples or []
    if not examples:
        return ""
    return f"; for example {env_name(field)}='{examples[0]}'" + "".join(f" or '{x}'" for x in examples[1:])


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, `.env` and `overrides`; SettingsInvalid (one line per bad
    variable) instead of pydantic's multi-screen error."""
    try:
        return Settings(**overrides)
    except (ValidationError, SettingsError) as e:
        raise SettingsInvalid(explain(e)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()

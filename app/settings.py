"""One Settings object for the whole service, read from TICKCAST_* variables and `.env`.

Every knob a deployment may turn lives here, with a default that runs on a
fresh machine with no configuration (SQLite file, local models folder,
synthetic market, local worker processes).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKCAST_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="address `tickcast serve` binds (0.0.0.0 in containers)")
    port: int = Field(8000, ge=1, le=65535, description="port `tickcast serve` listens on")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes for `tickcast serve`; each "
                                                     "runs the whole lifespan, so with more than 1 turn "
                                                     "ingestion off here and ingest from one replica")
    store_path: Path = Field(Path("data/tickcast.db"), description="SQLite tick store (one file)")
    models_dir: Path = Field(Path("models"), description="checkpoint store: one <id>.pt per model")
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    api_key: SecretStr | None = Field(None, description="when set, mutating endpoints need X-API-Key")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS (external "
                                                                         "dashboards), a JSON list")
    markets: list[str] = Field(default_factory=lambda: ["synthetic:BTC-USD"],
                               description="markets as exchange:SYMBOL, a JSON list; the first "
                                           "synthetic one seeds the first start")
    ingest: bool = Field(True, description="pull the markets on a schedule (off for replicas "
                                           "that should not ingest)")
    pull_interval_s: float = Field(10.0, gt=0, le=86_400, description="seconds between pulls of a market")
    source_urls: dict[str, str] = Field(default_factory=dict,
                                        description="base URL per exchange (mirrors, tests), a JSON object")
    retrain_cron: str | None = Field(None, description="crontab (UTC) for retraining each market with "
                                                       "the if_better policy; unset: never")
    job_concurrency: int = Field(1, ge=1, le=16, description="training jobs run at once")
    job_threads: int = Field(1, ge=1, le=64, description="torch threads per training worker")
    job_queue_max: int = Field(20, ge=1, le=10_000, description="training jobs allowed to wait for a "
                                                                "worker; POST /train answers 429 with "
                                                                "Retry-After beyond it")
    predict_threads: int = Field(1, ge=1, le=64, description="torch threads for serving")
    batch_window_ms: float = Field(2.0, ge=0, le=100, description="micro-batching wait for a batch")
    batch_max: int = Field(64, ge=1, le=4096, description="largest micro-batch")
    stream_max_clients: int = Field(100, ge=1, le=10_000, description="open /stream connections "
                                                                     "allowed at once (others get 503)")
    stream_poll_s: float = Field(1.0, gt=0, le=60, description="how often a stream looks for ticks "
                                                              "it was not told about (imports, other "
                                                              "processes)")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="request bodies above this get 413")
    max_ticks: int = Field(10_000, ge=2, description="most ticks in one /predict body")
    bootstrap: bool = Field(True, description="first start: fill the store from the synthetic "
                                              "market and train a small model if none exists")
    bootstrap_ticks: int = Field(60_000, ge=1_000, description="synthetic ticks for bootstrap")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, v: object) -> object:
        return None if v == "" else v  # an empty variable (compose's default) means "no key"

    @field_validator("retrain_cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v:
            from apscheduler.triggers.cron import CronTrigger

            CronTrigger.from_crontab(v, "UTC")  # ValueError names the bad field
        return v or None

    @field_validator("markets")
    @classmethod
    def _markets(cls, v: list[str]) -> list[str]:
        for m in v:
            ex, _, sym = m.partition(":")
            if not ex or not sym:
                raise ValueError(f"market {m!r} must be written exchange:SYMBOL")
        return v


@lru_cache
def get_settings() -> Settings:
    return Settings()

"""The settings that take tickcast past one machine: where shared state lives, where training runs
and how replicas share ingestion. A part of `Settings` (which inherits them), kept apart so that
the embedded defaults read in one place and the cluster's in another; all of them default to the
single-machine service (README, "Growing past one machine")."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from app.database import target

DEFAULT_STORE = Path("data/tickcast.db")  # only to check a URL's form; Settings has the real path


class ClusterSettings(BaseSettings):
    database_url: str | None = Field(
        None,
        description="where shared state lives: sqlite:///path (the default: the store path's file) or "
        "postgresql://user@host/db, which several replicas and Ray workers share (ticks, jobs, models, "
        "the prediction log)",
        examples=["postgresql://tickcast@db:5432/tickcast", "sqlite:///data/tickcast.db"],
    )
    job_backend: Literal["local", "ray"] = Field(
        "local",
        description="where training jobs run: local worker processes, or tasks on a Ray cluster "
        "(needs the tickcast[ray] extra and, across machines, a postgresql:// database URL)",
        examples=["ray"],
    )
    ray_address: str | None = Field(
        None,
        description="the Ray cluster jobs run on with job_backend ray; unset: a local Ray started in "
        "the process",
        examples=["ray://ray-head:10001", "auto"],
    )
    ingest_max_markets: int = Field(
        0,
        ge=0,
        description="with a postgresql:// database, the most markets this replica ingests at once "
        "(each market has one ingesting replica, chosen by an advisory lock); 0: no limit",
        examples=["4"],
    )

    @field_validator("database_url", mode="after")
    @classmethod
    def _database(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        target(v, DEFAULT_STORE)  # raises DatabaseUrlError (a ValueError) with what to write instead
        return v

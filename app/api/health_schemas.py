"""The bodies of the operations endpoints' answers: /health, /ready and /info."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.market_schemas import MarketRef
from app.api.schemas import EXAMPLE_MODEL_ID


class InfoOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": "0.1.0",
                    "auth_required": False,
                    "device": "cpu",
                    "markets": [
                        {"exchange": "synthetic", "symbol": "BTC-USD", "scheduled": True},
                        {"exchange": "kraken", "symbol": "ETH-USD", "scheduled": False},
                    ],
                }
            ]
        }
    )

    version: str = Field(description="the service's version")
    auth_required: bool = Field(description="whether writes need the X-API-Key header")
    markets: list[MarketRef] = Field(description="the configured markets, then the other stored ones")
    device: str = Field(description="where the models run: cpu, cuda:N or mps")


class HealthOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = Field(description="always ok: the process answers")


class ReadyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ready", "model_id": EXAMPLE_MODEL_ID}]}
    )

    status: Literal["ready"] = Field(description="always ready on a 200")
    model_id: str = Field(description="the active model, which /predict uses")


class NotReadyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "not ready",
                    "reason": "no model is loaded; train one (POST /train)",
                    "detail": "no model is loaded; train one (POST /train)",
                }
            ]
        }
    )

    status: Literal["not ready"] = Field(description="always `not ready` on a 503")
    reason: str = Field(description="why, and what to do")
    detail: str = Field(description="the same as reason, as every other error names it")

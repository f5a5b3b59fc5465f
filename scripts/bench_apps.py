"""The two reference apps `bench_predict.py` loads beside the real service.

    uvicorn --app-dir scripts bench_apps:bare_app --factory    # the framework's ceiling
    uvicorn --app-dir scripts bench_apps:naive_app --factory   # BENCH_MODEL_PATH=<file.pt>

`bare_app`: an `async def` endpoint that parses the body with the service's own
`PredictRequest` (same validators) and returns a constant. `naive_app`: a `def`
endpoint (run in the thread pool) that parses the same body, builds the window
with `features.last_window` and runs the model once per request
(`Model.predict`), no batching;
the checkpoint is loaded once at startup, with the service's torch thread count.
Neither has middleware.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import FastAPI

from app.api.schemas import PredictRequest, to_arrays

CONSTANT = {"probability": 0.5, "decision": True, "threshold": 0.5, "model_id": "bare", "as_of": 0.0}


def bare_app() -> FastAPI:
    app = FastAPI(title="bench-bare")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(body: PredictRequest) -> dict[str, object]:
        return CONSTANT

    return app


def naive_app() -> FastAPI:
    import torch

    from app.ml import checkpoint

    torch.set_num_threads(int(os.environ.get("TICKCAST_PREDICT_THREADS", "1")))
    model = checkpoint.load(os.environ["BENCH_MODEL_PATH"], "cpu")
    app = FastAPI(title="bench-naive")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: PredictRequest) -> dict[str, object]:
        ticks = to_arrays(body.ticks or [])
        p = model.predict(ticks)  # features.last_window + one forward pass of batch 1
        return {
            "probability": p,
            "decision": p >= model.threshold,
            "threshold": model.threshold,
            "model_id": model.id,
            "as_of": float(ticks.time[-1]),
        }

    return app

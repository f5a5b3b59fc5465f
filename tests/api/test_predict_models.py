"""/predict, /models, /health, /ready, /metrics through the real app."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.ml import checkpoint
from tests.helpers.apps import install_models, make_settings
from tests.helpers.bodies import body


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_ready_is_503_without_a_model(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["reason"]
        p = c.post("/predict", json={"ticks": [{"time": 1, "price": 1, "amount": 1}] * 40})
        assert p.status_code == 503 and "model" in p.json()["detail"]


def test_predict_matches_the_model(client: TestClient, ticks, trained) -> None:
    r = client.post("/predict", json=body(ticks))
    assert r.status_code == 200, r.text
    out = r.json()
    model = checkpoint.load(trained[0])
    assert out["model_id"] == model.id
    assert out["probability"] == pytest.approx(model.predict(ticks[len(ticks) - 40 :]), abs=1e-6)
    assert out["decision"] == (out["probability"] >= out["threshold"])
    assert out["as_of"] == float(ticks.time[-1])


def test_predict_with_model_id_and_windows(client: TestClient, ticks, trained) -> None:
    other = trained[1].stem
    r = client.post("/predict", json=body(ticks, model_id=other))
    assert r.status_code == 200 and r.json()["model_id"] == other
    wins = [body(ticks[: len(ticks) - k])["ticks"] for k in (0, 5, 9)]
    r = client.post("/predict", json={"windows": wins})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3
    single = client.post("/predict", json=body(ticks)).json()["probability"]
    assert preds[0]["probability"] == pytest.approx(single)
    assert [p["as_of"] for p in preds] == [float(ticks.time[-1 - k]) for k in (0, 5, 9)]


def test_scale_invariance_through_the_api(client: TestClient, ticks) -> None:
    b = body(ticks)
    scaled = {"ticks": [{**t, "price": t["price"] * 1000} for t in b["ticks"]]}
    p1 = client.post("/predict", json=b).json()["probability"]
    p2 = client.post("/predict", json=scaled).json()["probability"]
    assert p1 == pytest.approx(p2, abs=1e-5)


def _bad_bodies(ticks):
    good = body(ticks)["ticks"]

    def with_(i: int, **kv: object) -> dict:
        t = [dict(x) for x in good]
        t[i].update(kv)
        return {"ticks": t}

    unsorted = [dict(x) for x in good]
    unsorted[10]["time"], unsorted[11]["time"] = good[11]["time"] + 5, good[10]["time"]
    return {
        "negative price": with_(3, price=-1.0),
        "zero price": with_(3, price=0.0),
        "negative amount": with_(5, amount=-0.1),
        "string price": with_(2, price="abc"),
        "null time": with_(2, time=None),
        "unsorted": {"ticks": unsorted},
        "too few": {"ticks": good[:5]},
        "missing field": {"ticks": [{"time": 1.0, "price": 1.0}] * 40},
        "extra field": with_(0, colour="red"),
        "both": {"ticks": good, "windows": [good]},
        "neither": {},
        "not a list": {"ticks": "many"},
    }


BAD_CASES = [
    "negative price",
    "zero price",
    "negative amount",
    "string price",
    "null time",
    "unsorted",
    "too few",
    "missing field",
    "extra field",
    "both",
    "neither",
    "not a list",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_ticks_get_422_naming_the_problem(client: TestClient, ticks, case: str) -> None:
    before = client.get("/models").json()
    r = client.post("/predict", json=_bad_bodies(ticks)[case])
    assert r.status_code == 422, (case, r.text)
    assert r.json()["detail"]
    assert client.get("/models").json() == before


def test_nan_and_inf_literals_are_422(client: TestClient, ticks) -> None:
    good = body(ticks)["ticks"]
    for lit in ("NaN", "Infinity", "-Infinity"):
        parts = [f'{{"time": {t["time"]}, "price": {t["price"]}, "amount": {t["amount"]}}}' for t in good]
        parts[7] = f'{{"time": {good[7]["time"]}, "price": {lit}, "amount": 1}}'
        r = client.post(
            "/predict",
            content='{"ticks": [' + ",".join(parts) + "]}",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, (lit, r.text)
        assert "ticks" in str(r.json()["detail"]) and "7" in str(r.json()["detail"])


def test_unsorted_message_names_the_index(client: TestClient, ticks) -> None:
    r = client.post("/predict", json=_bad_bodies(ticks)["unsorted"])
    assert "ticks[11]" in str(r.json()["detail"])


def test_too_few_ticks_says_how_many(client: TestClient, ticks) -> None:
    r = client.post("/predict", json={"ticks": body(ticks)["ticks"][:5]})
    assert r.status_code == 422
    [err] = r.json()["detail"]  # FastAPI's list shape, as for every 422
    assert err["loc"] == ["body", "ticks"] and "33" in err["msg"]  # seq_len 16 + 1 + 16 of history


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post("/predict", content=b'{"ticks": [', headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_huge_body_is_413(tmp_path: Path, trained) -> None:
    install_models(tmp_path, trained)
    with TestClient(create_app(make_settings(tmp_path, max_body_bytes=4096))) as c:
        big = {"ticks": [{"time": i, "price": 1.0 + i, "amount": 1.0} for i in range(2000)]}
        r = c.post("/predict", json=big)
        assert r.status_code == 413 and "bytes" in r.json()["detail"]

        def chunks():
            yield b'{"ticks": ['
            for i in range(500):
                yield f'{{"time": {i}, "price": 1.0, "amount": 1.0}},'.encode()
            yield b'{"time": 9999, "price": 1.0, "amount": 1.0}]}'

        r = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_too_many_ticks_is_422(tmp_path: Path, trained, ticks) -> None:
    install_models(tmp_path, trained)
    with TestClient(create_app(make_settings(tmp_path, max_ticks=30))) as c:
        r = c.post("/predict", json=body(ticks, n=40))
        assert r.status_code == 422
        [err] = r.json()["detail"]
        assert err["loc"] == ["body", "ticks"] and "at most 30" in err["msg"]


@pytest.mark.parametrize("mid", ["../ACTIVE", "..%2F..%2Fetc%2Fpasswd", "a b", "x" * 300, ".hidden"])
def test_bad_model_ids(client: TestClient, ticks, mid: str) -> None:
    r = client.post("/predict", json=body(ticks, model_id=mid))
    assert r.status_code in (404, 422), r.text
    r = client.get(f"/models/{mid}")
    assert r.status_code in (404, 422), r.text


def test_unknown_model_is_404(client: TestClient, ticks) -> None:
    assert client.post("/predict", json=body(ticks, model_id="cnn-nope")).status_code == 404
    assert client.get("/models/cnn-nope").status_code == 404
    assert client.post("/models/cnn-nope/activate").status_code == 404
    assert client.delete("/models/cnn-nope").status_code == 404


def test_models_registry_cycle(client: TestClient, ticks, trained) -> None:
    a, b = trained[0].stem, trained[1].stem
    listed = client.get("/models").json()
    assert {m["id"] for m in listed} == {a, b}
    assert [m["id"] for m in listed if m["active"]] == [a]
    one = client.get(f"/models/{b}").json()
    assert one["arch"] == "CNN" and one["seq_len"] == 16 and "val" in one["metrics"]
    assert client.delete(f"/models/{a}").status_code == 409  # the active one
    r = client.post(f"/models/{b}/activate")
    assert r.status_code == 200 and r.json()["active"]
    assert client.post("/predict", json=body(ticks)).json()["model_id"] == b
    assert client.delete(f"/models/{a}").status_code == 204
    assert [m["id"] for m in client.get("/models").json()] == [b]


def test_predict_from_the_store(client: TestClient, ticks, trained) -> None:
    store = client.app.state.services.store
    store.insert("synthetic", "BTC-USD", ticks)
    r = client.get("/predict/synthetic/BTC-USD")
    assert r.status_code == 200, r.text
    direct = client.post("/predict", json=body(ticks, n=33)).json()  # what the model needs, no more
    assert r.json()["probability"] == pytest.approx(direct["probability"], abs=1e-6)
    assert r.json()["as_of"] == float(ticks.time[-1])
    assert client.get("/predict/nowhere/BTC-USD").status_code == 404


def test_activation_under_concurrent_traffic(client: TestClient, ticks, trained) -> None:
    ids = {trained[0].stem, trained[1].stem}
    b = body(ticks)
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            r = client.post("/predict", json=b)
            if r.status_code != 200:
                failures.append(r.text)
            else:
                seen.add(r.json()["model_id"])

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    for k in range(10):
        assert client.post(f"/models/{trained[k % 2].stem}/activate").status_code == 200
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert seen <= ids and seen


def test_metrics(client: TestClient, ticks) -> None:
    client.post("/predict", json=body(ticks))
    client.get("/models")
    text = client.get("/metrics").text
    assert 'tickcast_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert "tickcast_http_request_duration_seconds_bucket" in text
    assert "tickcast_predictions_total 1.0" in text
    assert "tickcast_predict_batch_size_bucket" in text
    assert "tickcast_active_model_info{" in text
    assert "tickcast_jobs{" in text or "tickcast_jobs " in text or "# TYPE tickcast_jobs gauge" in text


def test_openapi_has_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/predict",
        "/predict/{exchange}/{symbol}",
        "/train",
        "/jobs",
        "/jobs/{job_id}",
        "/models",
        "/models/{model_id}",
        "/models/{model_id}/activate",
        "/health",
        "/ready",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert "examples" in str(spec["components"]["schemas"]["PredictRequest"])


# ---------------------------------------------------------------- checkpoints judged before trusted


def _craft(good: Path, dest: Path, case: str) -> None:
    """`dest`: the good checkpoint damaged one way (with the real checkpoint.save, or torch.save of
    the same structure where save would refuse the damage)."""
    payload = torch.load(good, weights_only=True)
    meta, sd = payload["meta"], dict(payload["state_dict"])
    if case == "truncated":
        data = good.read_bytes()
        dest.write_bytes(data[: len(data) // 2])
        return
    if case == "hidden_size 10**8":
        meta = {**meta, "hparams": {**meta["hparams"], "hidden_size": 10**8}}
    elif case == "wrong shapes":
        sd["head.weight"] = torch.zeros(1, 5)
    elif case == "missing key":
        del sd["head.bias"]
    elif case == "extra key":
        sd["head.extra"] = torch.zeros(2)
    elif case == "NaN weights":
        sd["body.0.weight"] = torch.full_like(sd["body.0.weight"], float("nan"))
    elif case == "not a tensor":
        torch.save({**payload, "state_dict": {**sd, "head.bias": [0.0]}}, dest)
        return
    elif case == "weights not a dict":
        torch.save({**payload, "state_dict": list(sd.values())}, dest)
        return
    checkpoint.save(dest, sd, meta)


UNLOADABLE = {
    "hidden_size 10**8": "hparams.hidden_size 100000000 is outside 1..4096",
    "wrong shapes": "head.weight has shape (1, 5), the model needs (1, 128)",
    "missing key": "missing head.bias",
    "extra key": "unexpected head.extra",
    "NaN weights": "body.0.weight holds NaN or infinite values",
    "not a tensor": "head.bias is a list, not a tensor",
    "weights not a dict": "lacks its metadata or weights",
    "truncated": "truncated",
}


@pytest.mark.sqlite_only  # files in the models folder or beside the SQLite file, as only the default has
@pytest.mark.parametrize("case", list(UNLOADABLE))
def test_an_unloadable_model_is_listed_refused_and_changes_nothing(
    client: TestClient, ticks, trained, case: str
) -> None:
    models = client.app.state.services.registry.folder
    _craft(trained[1], models / "bad-model.pt", case)
    why = UNLOADABLE[case]
    active_before = (models / "ACTIVE").read_bytes()
    client.app.state.services.store.insert("synthetic", "BTC-USD", ticks)

    listed = {m["id"]: m for m in client.get("/models").json()}
    assert set(listed) == {trained[0].stem, trained[1].stem, "bad-model"}
    assert listed["bad-model"]["loadable"] is False and why in listed["bad-model"]["unloadable_reason"]
    assert all(
        m["loadable"] and m["unloadable_reason"] is None for k, m in listed.items() if k != "bad-model"
    )
    one = client.get("/models/bad-model")
    assert one.status_code == 200 and one.json()["loadable"] is False

    r = client.post("/models/bad-model/activate")
    assert r.status_code == 422 and why in r.json()["detail"][0]["msg"], r.text
    assert r.json()["detail"][0]["loc"] == ["path", "model_id"]
    assert (models / "ACTIVE").read_bytes() == active_before
    r = client.post("/predict", json=body(ticks, model_id="bad-model"))
    assert r.status_code == 422 and why in r.json()["detail"][0]["msg"], r.text
    assert r.json()["detail"][0]["loc"] == ["body", "model_id"]
    r = client.get("/predict/synthetic/BTC-USD", params={"model_id": "bad-model"})
    assert r.status_code == 422 and why in r.json()["detail"][0]["msg"], r.text
    assert r.json()["detail"][0]["loc"] == ["query", "model_id"]

    # serving is unchanged
    assert client.post("/predict", json=body(ticks)).json()["model_id"] == trained[0].stem
    assert client.get("/predict/synthetic/BTC-USD").status_code == 200
    assert client.get("/ready").json() == {"status": "ready", "model_id": trained[0].stem}
    assert client.delete("/models/bad-model").status_code == 204  # and it can be cleared away


@pytest.mark.sqlite_only  # files in the models folder or beside the SQLite file, as only the default has
@pytest.mark.parametrize("case", list(UNLOADABLE))
def test_a_bad_active_model_leaves_the_service_up_saying_why(
    tmp_path: Path, ticks, trained, case: str
) -> None:
    good, _ = install_models(tmp_path, trained, activate=False)
    _craft(trained[1], tmp_path / "models" / "bad-model.pt", case)
    (tmp_path / "models" / "ACTIVE").write_text("bad-model\n")
    why = UNLOADABLE[case]
    with TestClient(create_app(make_settings(tmp_path))) as c:
        assert c.get("/health").json() == {"status": "ok"}
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "not ready"
        reason = r.json()["reason"]
        for text in ("active model 'bad-model' cannot be loaded", why, "POST /models/{id}/activate"):
            assert text in reason, reason
        p = c.post("/predict", json=body(ticks))
        assert p.status_code == 503 and p.json()["detail"] == reason
        c.app.state.services.store.insert("synthetic", "BTC-USD", ticks)
        assert c.get("/predict/synthetic/BTC-USD").status_code == 503
        listed = {m["id"]: m for m in c.get("/models").json()}
        assert listed["bad-model"]["active"] and not listed["bad-model"]["loadable"]
        assert listed[good]["loadable"]

        assert c.post(f"/models/{good}/activate").status_code == 200
        assert c.get("/ready").json() == {"status": "ready", "model_id": good}
        r = c.post("/predict", json=body(ticks))
        assert r.status_code == 200 and r.json()["model_id"] == good


@pytest.mark.sqlite_only  # files in the models folder or beside the SQLite file, as only the default has
def test_a_bad_active_model_is_not_replaced_by_the_first_start_bootstrap(tmp_path: Path, trained) -> None:
    """ACTIVE names a model: an operator's choice to fix, not a first start. Training one that
    activates itself would hide the fault; /ready names it instead."""
    models = tmp_path / "models"
    models.mkdir()
    _craft(trained[0], models / "bad-model.pt", "hidden_size 10**8")
    (models / "ACTIVE").write_text("bad-model\n")
    with TestClient(create_app(make_settings(tmp_path, bootstrap=True))) as c:
        assert c.get("/jobs").json() == []
        r = c.get("/ready")
        assert r.status_code == 503 and "bad-model" in r.json()["reason"]
        assert "training" not in r.json()["reason"]


def test_a_folder_of_unloadable_models_still_gets_a_first_model(tmp_path: Path, trained) -> None:
    """Without ACTIVE, unloadable files are nothing to activate: the first start trains one."""
    models = tmp_path / "models"
    models.mkdir()
    _craft(trained[0], models / "bad-model.pt", "truncated")
    with TestClient(create_app(make_settings(tmp_path, bootstrap=True, bootstrap_ticks=2000))) as c:
        assert len(c.get("/jobs").json()) == 1
        assert "training" in c.get("/ready").json()["reason"]


@pytest.mark.sqlite_only  # files in the models folder or beside the SQLite file, as only the default has
def test_listing_survives_metadata_that_is_not_plain_json(client: TestClient, trained) -> None:
    """A metric undefined on its split (NaN), a tensor or odd types in metadata: the page still
    answers, as strict JSON, and the model stays loadable (extra keys are not the loader's
    business)."""
    payload = torch.load(trained[1], weights_only=True)
    meta = {
        **payload["meta"],
        "metrics": {"val": {"auc": float("nan"), "ppv": float("inf")}},
        "job_id": "job-1",
        "extra": torch.zeros(2),
        "created_at": 5,
    }
    checkpoint.save(client.app.state.services.registry.folder / "odd.pt", payload["state_dict"], meta)
    r = client.get("/models")
    assert r.status_code == 200, r.text
    [odd] = [m for m in r.json() if m["id"] == "odd"]
    assert odd["loadable"] and odd["metrics"] == {"val": {"auc": None, "ppv": None}}
    assert odd["meta"]["job_id"] == "job-1" and odd["meta"]["extra"] == "<Tensor>"
    assert odd["created_at"] is None
    assert client.post("/models/odd/activate").status_code == 200


def test_openapi_describes_loadable(client: TestClient) -> None:
    props = client.get("/openapi.json").json()["components"]["schemas"]["ModelOut"]["properties"]
    assert props["loadable"]["description"] and props["unloadable_reason"]["description"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", True),
        ("price", "6000"),
        ("time", False),
        ("amount", "0.5"),
        ("price", [6000]),
        ("time", {"t": 1}),
    ],
)
def test_booleans_and_strings_are_not_numbers(client: TestClient, ticks, field: str, value: object) -> None:
    good = body(ticks)["ticks"]
    bad = [dict(t) for t in good]
    bad[7][field] = value
    r = client.post("/predict", json={"ticks": bad})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [
        {"loc": ["body", "ticks", 7, field], "msg": "Input should be a valid number", "type": "float_type"}
    ]
    wins = [good, bad]
    r = client.post("/predict", json={"windows": wins})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "windows", 1, 7, field]


def test_integers_are_numbers(client: TestClient, ticks) -> None:
    as_float = body(ticks)
    as_int = {
        "ticks": [
            {"time": int(t["time"]), "price": t["price"], "amount": t["amount"]} for t in as_float["ticks"]
        ]
    }
    as_int["ticks"][-1]["amount"] = 1
    r = client.post("/predict", json=as_int)
    assert r.status_code == 200, r.text
    assert r.json()["as_of"] == float(int(ticks.time[-1]))


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/csv"],
)
def test_predict_takes_only_json(client: TestClient, ticks, content_type: str) -> None:
    import json

    raw = json.dumps(body(ticks))
    r = client.post("/predict", content=raw, headers={"content-type": content_type})
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["detail"] and r.headers["accept"] == "application/json"
    for ok in (
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.tickcast+json",
    ):
        r = client.post("/predict", content=raw, headers={"content-type": ok})
        assert r.status_code == 200, (ok, r.text)


@pytest.mark.parametrize(
    ("where", "value"),
    [("num_epochs", True), ("seq_len", "16"), ("lr", "0.1"), ("dropout", False), ("seed", 1.5)],
)
def test_train_numbers_are_strict(client: TestClient, where: str, value: object) -> None:
    r = client.post("/train", json={"config": {where: value}, "activate": "never"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "config", where]
    r = client.post("/train", json={"start": True, "activate": "never"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "start"]
    # integers are fine where a float is wanted: only the boolean is named
    r = client.post(
        "/train", json={"start": 0, "end": 10**10, "config": {"lr": 1, "gamma": 1, "num_epochs": True}}
    )
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "config", "num_epochs"]]
    assert client.get("/jobs").json() == []  # nothing was queued


# ---------------------------------------------------------------- one error body everywhere


def test_domain_422s_have_the_list_shape_naming_where(client: TestClient, ticks, trained) -> None:
    good = body(ticks)["ticks"]
    cases = [
        (client.get("/models/.hidden"), ["path", "model_id"], "invalid model id"),
        (
            client.post("/predict", json={"ticks": good, "model_id": ".hidden"}),
            ["body", "model_id"],
            "invalid model id",
        ),
        (
            client.get("/predict/synthetic/BTC-USD", params={"model_id": ".hidden"}),
            ["query", "model_id"],
            "invalid model id",
        ),
        (client.post("/predict", json={"windows": [good, good[:3]]}), ["body", "windows", 1], "got 3"),
        (client.get("/predict/synthetic/BTC%20USD"), ["path", "symbol"], "pattern"),
    ]
    for r, loc, text in cases:
        assert r.status_code == 422, r.text
        [err] = r.json()["detail"]
        assert err["loc"] == loc and text in err["msg"] and isinstance(err["type"], str), r.text


def test_other_errors_are_one_detail_string(tmp_path: Path, trained, ticks) -> None:
    ids = install_models(tmp_path, trained)
    with TestClient(create_app(make_settings(tmp_path, api_key="k"))) as c:
        answers = {
            401: c.post(f"/models/{ids[1]}/activate"),
            404: c.get("/models/cnn-nope"),
            409: c.delete(f"/models/{ids[0]}", headers={"X-API-Key": "k"}),
            415: c.post("/predict", content="x", headers={"content-type": "text/plain"}),
        }
        for status, r in answers.items():
            assert r.status_code == status, r.text
            assert list(r.json()) == ["detail"] and isinstance(r.json()["detail"], str), r.text


def test_not_ready_names_its_reason_as_detail_too(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        r = c.get("/ready")
        assert r.status_code == 503 and r.headers["retry-after"]
        got = r.json()
        assert got["status"] == "not ready" and got["reason"] and got["detail"] == got["reason"]


def test_typed_answers_of_info_health_and_ready(client: TestClient, trained) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "model_id": trained[0].stem}
    info = client.get("/info").json()
    assert info == {
        "version": "0.1.0",
        "auth_required": False,
        "device": "cpu",
        "markets": [{"exchange": "synthetic", "symbol": "BTC-USD", "scheduled": True}],
    }

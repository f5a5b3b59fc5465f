"""Sealed writes: other web pages cannot write, key or no key; each write takes only its media type.

Through the real app: the requests a browser would send for a page on another origin
(an `Origin` header, "simple" content types), checked against what the service stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.market.sources import synthetic
from tests.helpers.apps import install_models, make_settings
from tests.helpers.bodies import csv_body
from tests.helpers.servers import live_server

KEY = "sekrit"
EVIL = "http://evil.example"
DASH = "https://dash.example"
IMPORT = "/markets/kraken/ETH-USD/import"
TRAIN_BODY = {
    "config": {"num_epochs": 1, "seq_len": 16, "hidden_size": 4, "num_layers": 1},
    "activate": "never",
}


@pytest.fixture(params=[None, KEY], ids=["no key", "key"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, trained: list[Path]
) -> Iterator[tuple[TestClient, dict, list[str]]]:
    """An app with two models (the first active), no key or a key, a dashboard origin configured;
    the headers a legitimate writer sends (the key when there is one)."""
    ids = install_models(tmp_path, trained)
    settings = make_settings(tmp_path, api_key=request.param, cors_origins=[DASH])
    auth = {"X-API-Key": KEY} if request.param else {}
    with TestClient(create_app(settings)) as c:
        yield c, auth, ids


def writes(ids: list[str]) -> list[tuple[str, str, dict]]:
    """Every mutating route, each with a body it would accept."""
    csv = csv_body(synthetic.generate(50, seed=5))
    return [
        ("POST", IMPORT, {"content": csv, "headers": {"content-type": "text/csv"}}),
        ("POST", "/train", {"json": TRAIN_BODY}),
        ("POST", f"/models/{ids[1]}/activate", {}),
        ("DELETE", f"/models/{ids[1]}", {}),
        ("POST", "/markets/synthetic/BTC-USD/pull", {}),
        ("DELETE", "/jobs/0123456789ab", {}),
        ("POST", "/predict", {"json": {"ticks": [{"time": 1, "price": 1, "amount": 1}] * 20}}),
    ]


def state(c: TestClient) -> tuple:
    """What a write could change: stored ticks, the models and which is active, the jobs."""
    ticks = [c.get(f"/markets/{m}/ticks").json()["count"] for m in ("kraken/ETH-USD", "synthetic/BTC-USD")]
    models = sorted((m["id"], m["active"]) for m in c.get("/models").json())
    return ticks, models, c.get("/jobs").json()


def send(c: TestClient, method: str, path: str, kw: dict, **headers: str) -> httpx.Response:
    return c.request(method, path, **{**kw, "headers": {**kw.get("headers", {}), **headers}})


def test_a_write_from_another_origin_is_403_and_changes_nothing(setup) -> None:
    c, auth, ids = setup
    before = state(c)
    for origin in (
        EVIL,
        "null",
        "http://testserver.evil.example",
        "https://dash.example.evil",
        "http://testserver:81",
    ):
        for method, path, kw in writes(ids):
            r = send(c, method, path, kw, Origin=origin, **auth)
            assert r.status_code == 403, (origin, method, path, r.text)
            assert r.headers["content-type"] == "application/json"
            assert "TICKCAST_CORS_ORIGINS" in r.json()["detail"]
            assert "access-control-allow-origin" not in r.headers
    # a browser that stripped Origin still says where the request came from
    for site in ("cross-site", "same-site"):
        for method, path, kw in writes(ids):
            r = send(c, method, path, kw, **{"Sec-Fetch-Site": site}, **auth)
            assert r.status_code == 403, (site, path, r.text)
    assert state(c) == before
    assert c.get(f"/models/{ids[1]}").status_code == 200  # not deleted


def test_own_origin_a_configured_origin_and_no_origin_may_write(setup) -> None:
    c, auth, ids = setup
    csv = csv_body(synthetic.generate(50, seed=5))
    for n, headers in enumerate(
        [
            {"Origin": "http://testserver"},  # the dashboard served at /
            {"Origin": DASH},
            {"Origin": DASH.upper()},
            {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
            {},
        ]
    ):  # curl, scripts
        r = c.post(IMPORT, content=csv, headers={"content-type": "text/csv", **headers, **auth})
        assert r.status_code == 200, (headers, r.text)
        assert r.json()["new_ticks"] == (50 if n == 0 else 0)
    r = c.post(f"/models/{ids[1]}/activate", headers={"Origin": DASH, **auth})
    assert r.status_code == 200 and r.json()["active"]
    assert r.headers["access-control-allow-origin"] == DASH  # CORS still answers its origins
    r = c.post(f"/models/{ids[0]}/activate", headers={"Origin": "http://testserver", **auth})
    assert r.status_code == 200 and r.json()["active"]
    r = c.delete(f"/models/{ids[1]}", headers={"Origin": "http://testserver", **auth})
    assert r.status_code == 204 and c.get(f"/models/{ids[1]}").status_code == 404
    # past the seal, the key still counts
    if auth:
        r = c.post(f"/models/{ids[0]}/activate", headers={"Origin": "http://testserver"})
        assert r.status_code == 401


def test_preflight_still_answers_a_configured_origin_only(setup) -> None:
    c, _, ids = setup
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = c.options("/train", headers={"Origin": DASH, **ask})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == DASH
    no = c.options("/train", headers={"Origin": EVIL, **ask})
    assert no.headers.get("access-control-allow-origin") != EVIL


def test_simple_content_types_are_415_and_store_nothing(setup) -> None:
    c, auth, ids = setup
    csv = csv_body(synthetic.generate(50, seed=5))
    before = state(c)
    for ct in (
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/json",
        "",
    ):
        r = c.post(IMPORT, content=csv, headers={"content-type": ct, **auth})
        assert r.status_code == 415, (ct, r.text)
        assert "text/csv" in r.json()["detail"] and r.headers["accept"] == "text/csv"
    for ct in ("text/plain", "application/x-www-form-urlencoded", "text/csv"):
        r = c.post(
            "/train",
            content=httpx.Request("POST", "/", json=TRAIN_BODY).content,
            headers={"content-type": ct, **auth},
        )
        assert r.status_code == 415, (ct, r.text)
        # bodyless writes take no form or text either (an HTML form posts an empty one)
        r = c.post(f"/models/{ids[1]}/activate", content=b"", headers={"content-type": ct, **auth})
        assert r.status_code == 415, (ct, r.text)
        r = c.request("DELETE", f"/models/{ids[1]}", content=b"", headers={"content-type": ct, **auth})
        assert r.status_code == 415, (ct, r.text)
    assert state(c) == before


def test_declared_content_types_are_accepted(setup) -> None:
    c, auth, ids = setup
    csv = csv_body(synthetic.generate(50, seed=5))
    r = c.post(IMPORT, content=csv, headers={"content-type": "Text/CSV; charset=utf-8", **auth})
    assert r.status_code == 200 and r.json()["new_ticks"] == 50
    # a bodyless POST needs no content type; a JSON one is fine too
    r = c.post(f"/models/{ids[1]}/activate", headers=auth)
    assert r.status_code == 200 and r.json()["active"]
    r = c.post(f"/models/{ids[0]}/activate", headers={"content-type": "application/json", **auth})
    assert r.status_code == 200 and r.json()["active"]
    r = c.post(
        "/train",
        content=httpx.Request("POST", "/", json=TRAIN_BODY).content,
        headers={"content-type": "application/json; charset=utf-8", **auth},
    )
    assert r.status_code == 202, r.text
    r = c.delete(f"/jobs/{r.json()['id']}", headers=auth)
    assert r.status_code in (200, 409), r.text  # cancelled, or already finished


def test_a_live_server_accepts_its_own_origin_with_its_port(tmp_path: Path, trained: list[Path]) -> None:
    """The real server and a real Host header (with a port), as a same-origin fetch sends them."""
    ids = install_models(tmp_path, trained)
    with live_server(create_app(make_settings(tmp_path))) as url:
        port = url.rsplit(":", 1)[1]
        r = httpx.post(f"{url}/models/{ids[1]}/activate", headers={"Origin": url})
        assert r.status_code == 200 and r.json()["active"]
        for other in (f"http://127.0.0.1:{int(port) + 1}", f"http://localhost:{port}", "http://127.0.0.1"):
            r = httpx.post(f"{url}/models/{ids[0]}/activate", headers={"Origin": other})
            assert r.status_code == 403, other
        assert httpx.get(f"{url}/models/{ids[1]}").json()["active"]


def test_openapi_documents_the_refusals(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, item in paths.items():
        for method, op in item.items():
            if method in ("post", "put", "patch", "delete"):
                assert "403" in op["responses"], (method, path)
                assert ("415" in op["responses"]) == ("requestBody" in op), (method, path)
    assert (
        "text/csv"
        in paths[IMPORT.replace("kraken/ETH-USD", "{exchange}/{symbol}")]["post"]["responses"]["415"][
            "description"
        ]
    )


def test_a_wildcard_cors_origin_lets_every_origin_write(tmp_path: Path, trained: list[Path]) -> None:
    """`*` in TICKCAST_CORS_ORIGINS is the operator opening the API to every page, for CORS and
    for writes alike; the media types stay sealed."""
    ids = install_models(tmp_path, trained)
    with TestClient(create_app(make_settings(tmp_path, cors_origins=["*"]))) as c:
        r = c.post(f"/models/{ids[1]}/activate", headers={"Origin": EVIL})
        assert r.status_code == 200 and r.json()["active"]
        r = c.post(
            IMPORT,
            content=b"time,price,amount\n1,1,1\n",
            headers={"Origin": EVIL, "content-type": "text/plain"},
        )
        assert r.status_code == 415

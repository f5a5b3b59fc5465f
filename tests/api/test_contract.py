"""The OpenAPI document is the contract: complete (walked here), and true (schemathesis drives a
live server with it, with and without an API key, and every answer must be one it declares)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.market.ticks import TickArrays
from tests.helpers.apps import install_models, make_settings
from tests.helpers.bodies import csv_body
from tests.helpers.servers import live_server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
KEY = "contract-key"
SEEDED = 60  # ticks of synthetic:BTC-USD: enough to predict with the tiny models, too few to train on

# Bounded in time: each explicit example of an operation, then MAX_EXAMPLES generated cases,
# valid and invalid (no coverage phase: hundreds of boundary cases per operation).
MAX_EXAMPLES = 60
CONFIG = {"max-stream-events": 1}  # a stream's first event is enough: it never ends by itself


# ---------------------------------------------------------------- the document itself


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("spec")))) as c:
        return c.get("/openapi.json").json()


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", op


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_every_operation_has_a_summary_and_a_description(spec: dict[str, Any]) -> None:
    missing = [name for name, op in _operations(spec) if not op.get("summary") or not op.get("description")]
    assert missing == []
    assert len(list(_operations(spec))) >= 19


def test_every_response_has_a_schema_and_an_example(spec: dict[str, Any]) -> None:
    problems = []
    for name, op in _operations(spec):
        for code, answer in op["responses"].items():
            if code == "204":
                assert "content" not in answer, name
                continue
            content = answer.get("content")
            if not content:
                problems.append(f"{name} {code}: no content")
                continue
            for media, body in content.items():
                if "schema" not in body and "itemSchema" not in body:  # itemSchema: each event of a stream
                    problems.append(f"{name} {code} {media}: no schema")
                if "example" not in body and "examples" not in body:
                    problems.append(f"{name} {code} {media}: no example")
    assert problems == []


def test_errors_have_one_shape(spec: dict[str, Any]) -> None:
    """422 is FastAPI's list everywhere; every other error is ErrorOut, except /ready's 503
    (NotReadyOut), which carries `detail` too."""
    shapes: dict[str, set[str]] = {}
    for name, op in _operations(spec):
        for code, answer in op["responses"].items():
            if int(code) >= 400:
                ref = answer["content"]["application/json"]["schema"].get("$ref", "inline")
                shapes.setdefault(code, set()).add(ref.rsplit("/", 1)[-1])
                if code == "503" and name == "GET /ready":
                    continue
                want = "HTTPValidationError" if code == "422" else "ErrorOut"
                assert ref.endswith(want), (name, code, ref)
    assert {"400", "401", "403", "404", "409", "413", "415", "422", "429", "500", "502", "503"} <= set(shapes)
    not_ready = spec["components"]["schemas"]["NotReadyOut"]
    assert set(not_ready["required"]) >= {"detail", "reason"}


def test_key_protected_operations_declare_401_and_writes_declare_403(spec: dict[str, Any]) -> None:
    for name, op in _operations(spec):
        protected = any("APIKeyHeader" in s for s in op.get("security", []))
        assert ("401" in op["responses"]) == protected, name
        if name.split()[0] in ("POST", "DELETE"):
            assert "403" in op["responses"], name
        if "requestBody" in op:
            assert {"413", "415"} <= set(op["responses"]), name


def test_retry_after_is_documented_where_it_is_sent(spec: dict[str, Any]) -> None:
    for name, op in _operations(spec):
        for code in ("429", "503"):
            if code in op["responses"]:
                assert "Retry-After" in op["responses"][code].get("headers", {}), (name, code)


def test_every_field_and_parameter_is_described(spec: dict[str, Any]) -> None:
    undescribed = [
        f"{model}.{prop}"
        for model, schema in spec["components"]["schemas"].items()
        for prop, sub in schema.get("properties", {}).items()
        if not sub.get("description")
    ]
    assert undescribed == []
    assert len(spec["components"]["schemas"]["TrainConfigIn"]["properties"]) == 25
    assert len(spec["components"]["schemas"]["JobOut"]["properties"]) == 9
    params = [
        f"{name} {p['name']}"
        for name, op in _operations(spec)
        for p in op.get("parameters", [])
        if not p.get("description")
    ]
    assert params == []


def test_every_request_body_has_an_example(spec: dict[str, Any]) -> None:
    bodies = 0
    for name, op in _operations(spec):
        for media, body in op.get("requestBody", {}).get("content", {}).items():
            bodies += 1
            schema = _resolve(body.get("schema", {}), spec)
            assert "example" in body or "examples" in body or schema.get("examples"), (name, media)
    assert bodies == 3  # /predict, /train, import


def test_typed_answers(spec: dict[str, Any]) -> None:
    def ok_schema(path: str, method: str = "get", code: str = "200") -> dict[str, Any]:
        return spec["paths"][path][method]["responses"][code]["content"]["application/json"]["schema"]

    assert ok_schema("/markets")["items"]["$ref"].endswith("/MarketOut")
    for path, model in (
        ("/info", "InfoOut"),
        ("/health", "HealthOut"),
        ("/ready", "ReadyOut"),
        ("/markets/{exchange}/{symbol}/ticks", "TicksOut"),
    ):
        assert ok_schema(path)["$ref"].endswith(f"/{model}"), path
    assert ok_schema("/markets/{exchange}/{symbol}/pull", "post")["$ref"].endswith("/PullOut")
    assert ok_schema("/markets/{exchange}/{symbol}/import", "post")["$ref"].endswith("/ImportOut")
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert list(spec["paths"]["/stream/{exchange}/{symbol}"]["get"]["responses"]["200"]["content"]) == [
        "text/event-stream"
    ]
    assert (
        "text/csv"
        in spec["paths"]["/markets/{exchange}/{symbol}/ticks"]["get"]["responses"]["200"]["content"]
    )


def test_the_document_does_not_change_fastapis_own_definitions(spec: dict[str, Any]) -> None:
    """The 422 schemas are replaced with described copies, never edited in place (FastAPI keeps
    them as module globals shared by every app)."""
    from fastapi.openapi import utils

    assert "description" not in utils.validation_error_definition["properties"]["loc"]
    assert spec["components"]["schemas"]["ValidationError"]["properties"]["loc"]["description"]


# ---------------------------------------------------------------- schemathesis on a live server

# Every operation, read from the document of an app built here (no server needed to collect).
OPERATIONS = [
    (method.upper(), path)
    for path, item in create_app(make_settings(Path("/nonexistent"))).openapi()["paths"].items()
    for method in item
]


@dataclass
class Contract:
    url: str
    key: str | None
    schema: Any = None
    calls: dict[str, list[int]] = field(default_factory=dict)
    _turn: Iterator[int] = field(default_factory=itertools.count)

    def headers(self) -> dict[str, str]:
        """With a key configured, every other call sends it: both answers are the contract's."""
        if self.key is None or next(self._turn) % 2:
            return {}
        return {"X-API-Key": self.key}


@pytest.fixture(scope="module", params=["no key", "key set"])
def contract(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    trained: list[Path],
    ticks: TickArrays,
) -> Iterator[Contract]:
    tmp = tmp_path_factory.mktemp("contract")
    install_models(tmp, trained)
    key = KEY if request.param == "key set" else None
    # a pull of the synthetic market stores its smallest history; at most two jobs can wait
    settings = make_settings(tmp, api_key=key, bootstrap_ticks=2000, job_queue_max=2)
    with live_server(create_app(settings)) as url:
        r = httpx.post(
            f"{url}/markets/synthetic/BTC-USD/import",
            content=csv_body(ticks[:SEEDED]),
            headers={"content-type": "text/csv", **({"X-API-Key": key} if key else {})},
        )
        assert r.status_code == 200, r.text
        schema = schemathesis.openapi.from_url(
            f"{url}/openapi.json", config=schemathesis.Config.from_dict(CONFIG)
        )
        c = Contract(url, key, schema)
        yield c
        print(f"\nschemathesis, {request.param}: answers per operation")  # shown with -s
        for op, codes in c.calls.items():
            print(f"  {op}: {dict(sorted(Counter(codes).items()))}")


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_live_api_keeps_its_contract(contract: Contract, method: str, path: str) -> None:
    """The explicit examples, then generated valid and invalid requests: every answer is declared,
    of the declared media type and schema, and none is a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    operation = contract.schema[path][method]
    failures: list[str] = []
    codes = contract.calls.setdefault(f"{method} {path}", [])

    def run(strategy: Any, n: int) -> None:
        def each(case: Any) -> None:  # a new function per run: hypothesis decorates it once
            check(case)

        given(strategy)(
            settings(
                max_examples=n,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )(each)
        )()

    def check(case: Any) -> None:
        try:
            response = case.call_and_validate(
                base_url=contract.url, headers=contract.headers(), checks=CHECKS, timeout=20
            )
        except Exception as e:
            failures.append(f"{case.method} {case.formatted_path} {case.query or ''}: {e}"[:2000])
            return
        codes.append(response.status_code)

    examples = contract.schema.get_strategies_from_examples(operation)
    generated = [
        operation.as_strategy(mode)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    ]
    for strategy, n in [*((e, 2) for e in examples), (st.one_of(generated), MAX_EXAMPLES)]:
        run(strategy, n)
    assert failures == []
    assert codes, "no request was made"


def test_the_run_reached_both_sides_of_the_key(contract: Contract) -> None:
    """Runs after the schemathesis tests of the same server (same module, same fixture): they
    got successes and refusals, and with a key configured both the 401 and the authorised
    answer of a protected operation."""
    if not contract.calls:
        pytest.skip("selected without the schemathesis tests it sums up")
    assert set(contract.calls) == {f"{m} {p}" for m, p in OPERATIONS}
    codes = [code for codes in contract.calls.values() for code in codes]
    assert any(200 <= c < 300 for c in codes) and 422 in codes and 404 in codes
    protected = contract.calls["POST /models/{model_id}/activate"] + contract.calls["DELETE /jobs/{job_id}"]
    if contract.key is None:
        assert 401 not in codes
    else:
        assert 401 in protected and any(c != 401 for c in protected)


def test_a_hand_raised_422_has_the_list_shape(contract: Contract) -> None:
    r = httpx.get(f"{contract.url}/markets/synthetic/BTC-USD/ticks", params={"start": 5, "end": 1})
    assert r.status_code == 422
    assert r.json() == {
        "detail": [{"loc": ["query", "end"], "msg": "end must not be before start", "type": "value_error"}]
    }

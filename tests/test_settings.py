"""Settings from the environment: both ways to write a list, and one line per mistake.

Each test sets real TICKCAST_* variables (monkeypatch.setenv) and reads them the way
the service does (`load_settings`, `create_app`, the `tickcast serve` process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.market.sources import SOURCES
from app.settings import PREFIX, Settings, SettingsInvalid, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TICKCAST_* from the caller's shell, and no .env from the checkout."""
    for k in list(os.environ):
        if k.upper().startswith(PREFIX):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    "written",
    [
        "binance:BTC-USD,kraken:ETH-USD",
        " binance:BTC-USD , kraken:ETH-USD, ",
        '["binance:BTC-USD", "kraken:ETH-USD"]',
    ],
)
def test_markets_are_read_comma_separated_or_as_json(monkeypatch: pytest.MonkeyPatch, written: str) -> None:
    monkeypatch.setenv("TICKCAST_MARKETS", written)
    assert [str(m) for m in load_settings().markets] == ["binance:BTC-USD", "kraken:ETH-USD"]


def test_the_natural_single_market_and_cors_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_MARKETS", "binance:BTC-USD")
    monkeypatch.setenv("TICKCAST_CORS_ORIGINS", "https://a.example,http://localhost:3000")
    s = load_settings()
    assert [str(m) for m in s.markets] == ["binance:BTC-USD"]
    assert s.cors_origins == ["https://a.example", "http://localhost:3000"]
    monkeypatch.setenv("TICKCAST_CORS_ORIGINS", "")
    monkeypatch.setenv("TICKCAST_MARKETS", "[]")
    s = load_settings()
    assert s.cors_origins == [] and s.markets == []


def test_every_setting_has_an_example_that_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each error shows an example: each example must itself be accepted."""
    for name, field in Settings.model_fields.items():
        assert field.examples, f"{name} has no example"
        for example in field.examples:
            monkeypatch.setenv(f"TICKCAST_{name.upper()}", example)
            load_settings()
            monkeypatch.delenv(f"TICKCAST_{name.upper()}")


def test_each_bad_variable_is_one_line_with_its_value_and_an_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_PORT", "eighty")
    monkeypatch.setenv("TICKCAST_MARKETS", "BTC-USD")
    monkeypatch.setenv("TICKCAST_SOURCE_URLS", "{binance: x}")
    monkeypatch.setenv("TICKCAST_LOG_LEVEL", "loud")
    monkeypatch.setenv("TICKCAST_API_KEY", "")  # empty means no key: not an error
    with pytest.raises(SettingsInvalid) as e:
        load_settings()
    lines = e.value.problems
    assert str(e.value) == "\n".join(lines) and len(lines) == 4
    port, markets, urls, level = lines
    assert port.startswith("TICKCAST_PORT='eighty' is not valid: ") and "integer" in port
    assert port.endswith("; for example TICKCAST_PORT='8080'")
    assert markets == (
        "TICKCAST_MARKETS='BTC-USD' is not valid: market 'BTC-USD' must be written "
        "exchange:SYMBOL; for example TICKCAST_MARKETS='binance:BTC-USD,kraken:ETH-USD' or "
        "'[\"binance:BTC-USD\"]'"
    )
    assert urls.startswith("TICKCAST_SOURCE_URLS='{binance: x}' is not valid: not a JSON object")
    assert level.startswith("TICKCAST_LOG_LEVEL='loud' is not valid: ") and "'debug'" in level
    assert all("\n" not in line for line in lines)


def test_a_list_that_looks_like_json_but_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_MARKETS", '["binance:BTC-USD"')
    with pytest.raises(
        SettingsInvalid,
        match=r"TICKCAST_MARKETS='\[\"binance:BTC-USD\"' is not valid: it "
        r"starts with '\[' but is not a JSON list",
    ):
        load_settings()


def test_an_unknown_exchange_is_refused_with_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_MARKETS", '["foo:BTC-USD"]')
    with pytest.raises(SettingsInvalid) as e:
        load_settings()
    (line,) = e.value.problems
    known = ", ".join(sorted(SOURCES))
    assert "binance" in known and "synthetic" in known
    assert line.startswith(
        f"TICKCAST_MARKETS='[\"foo:BTC-USD\"]' is not valid: market 'foo:BTC-USD': "
        f"unknown exchange 'foo'; known: {known}; for example"
    )


def test_a_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsInvalid) as e:
        load_settings(api_key=12345)  # not a string
    (line,) = e.value.problems
    assert line.startswith("TICKCAST_API_KEY='<hidden>' is not valid") and "12345" not in line


def test_create_app_refuses_bad_settings_in_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.main import create_app
    from app.settings import get_settings

    monkeypatch.setenv("TICKCAST_MARKETS", "nowhere:BTC-USD")
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsInvalid, match="^TICKCAST_MARKETS='nowhere:BTC-USD' is not valid"):
            create_app()
    finally:
        get_settings.cache_clear()


def test_tickcast_serve_exits_2_with_the_lines_and_no_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(PREFIX)}
    env.update(
        TICKCAST_MARKETS="foo:BTC-USD",
        TICKCAST_PORT="0",
        PYTHONPATH=str(ROOT),
        TICKCAST_STORE_PATH=str(tmp_path / "db" / "t.db"),
    )
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in r.stderr and r.stdout == ""
    assert lines[0].startswith("error: TICKCAST_PORT='0' is not valid: ")
    assert lines[1].startswith(
        "error: TICKCAST_MARKETS='foo:BTC-USD' is not valid: market 'foo:BTC-USD': "
        "unknown exchange 'foo'; known: binance,"
    )
    assert not (tmp_path / "db").exists()

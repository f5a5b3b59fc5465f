"""The dashboard at GET /: its files, and the page itself in headless Chromium.

The browser test drives Debian's `chromium` with its `chromium-driver` through
Selenium (never a downloaded browser), against the service on 127.0.0.1. It
skips, saying why, where either is missing; `.ci/run` installs both. The last
screenshot is saved under test-artifacts/ (or $TICKCAST_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.routes.dashboard import STATIC
from app.main import create_app
from app.market.sources import synthetic
from app.market.store import TickStore
from tests.api.conftest import body, csv_body, install_models, live_server, make_settings

CHROMIUM = os.environ.get("TICKCAST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TICKCAST_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("TICKCAST_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts"))
KEY = "dashboard-test-key"


def test_page_and_its_files_are_served_from_the_service(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    html = page.text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert "/static/vendor/uplot/uPlot.iife.min.js" in assets and "/static/js/main.js" in assets
    for path in assets:
        r = client.get(path)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache", path
        again = client.get(path, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304, path  # revalidated, not downloaded again
    # everything the page runs comes from this service: no CDN, no other origin
    for f in STATIC.rglob("*"):
        if f.suffix in (".html", ".js", ".css") and "vendor" not in f.parts:
            text = f.read_text()
            assert not re.search(r"(?:src|href|fetch\(|EventSource\()\s*=?\s*[\"'`]https?://", text), f
    vendored = (STATIC / "vendor" / "uplot" / "uPlot.iife.min.js").read_text()[:80]
    assert "(v1.6.32)" in vendored and "1.6.32" in (STATIC / "vendor" / "README.md").read_text()
    # path tricks stay inside the static folder
    for trick in ("/static/../main.py", "/static/%2e%2e/main.py", "/static/..%2fsettings.py"):
        assert client.get(trick).status_code == 404, trick


def test_info_tells_a_frontend_what_it_needs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_key="s3cr3t-key",
                             markets=["synthetic:BTC-USD", "binance:ETH-USDT"])
    with TestClient(create_app(settings)) as c:
        r = c.get("/info")
    assert "s3cr3t" not in r.text  # whether a key is set, never the key
    info = r.json()
    assert info["auth_required"] is True and info["device"] == "cpu"
    assert info["markets"] == [{"exchange": "synthetic", "symbol": "BTC-USD"},
                               {"exchange": "binance", "symbol": "ETH-USDT"}]


def test_cors_lets_a_configured_dashboard_in_and_no_other(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, cors_origins=["https://dash.example"])
    with TestClient(create_app(settings)) as c:
        ok = c.get("/markets", headers={"Origin": "https://dash.example"})
        assert ok.headers["access-control-allow-origin"] == "https://dash.example"
        other = c.get("/markets", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# ------------------------------------------------------------------ in a real browser


def _browser_or_skip() -> Any:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: install Debian's chromium and "
                    "chromium-driver packages (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                                                 "(pip install -e '.[dev]')")
    return webdriver


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    webdriver = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for downloads
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,2000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def attr(browser: Any, css: str, name: str) -> str | None:
    """An attribute of the first match, read in the page (rows are redrawn as data arrives)."""
    return browser.execute_script("const e = document.querySelector(arguments[0]);"
                                  "return e && e.getAttribute(arguments[1]);", css, name)


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_dashboard_in_chromium(tmp_path: Path, trained, browser) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    ids = install_models(tmp_path, trained)
    ticks = synthetic.generate(15_000, seed=5)
    with TickStore(tmp_path / "db" / "tickcast.db") as store:
        store.insert("synthetic", "BTC-USD", ticks[:14_000])
    app = create_app(make_settings(tmp_path, api_key=KEY))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    with live_server(app) as url:
        try:
            browser.get(f"{url}/")
            card = browser.find_element(By.CSS_SELECTOR, '.card[data-market="synthetic:BTC-USD"]')

            # the chart: the backlog arrives over the stream and is drawn
            wait_until("the backlog", lambda: int(card.get_attribute("data-updates") or 0) >= 600)
            canvas = card.find_element(By.CSS_SELECTOR, ".chart canvas")
            assert canvas.size["width"] > 200 and canvas.size["height"] > 100
            assert card.find_element(By.CSS_SELECTOR, ".stream-state").text == "live"

            # a new tick is stored (as a pull would store it) and its probability shows up
            before = int(card.get_attribute("data-updates"))
            r = httpx.post(f"{url}/markets/synthetic/BTC-USD/import", content=csv_body(ticks[14_000:14_003]),
                           headers={"X-API-Key": KEY})
            assert r.json()["new_ticks"] == 3
            wait_until("three live ticks", lambda: int(card.get_attribute("data-updates")) == before + 3)
            expected = httpx.post(f"{url}/predict", json=body(ticks[:14_003])).json()["probability"]
            prob = card.find_element(By.CSS_SELECTOR, ".probability")
            wait_until("the new probability", lambda: prob.get_attribute("data-value"))
            assert float(prob.get_attribute("data-value")) == pytest.approx(expected, abs=1e-6)
            assert prob.text == f"{expected:.3f}"

            # ingestion status and the models table
            wait_until("ingestion status", lambda: card.find_element(By.CSS_SELECTOR, ".ticks-stored")
                       .text.replace(",", "") == "14003", timeout=15)
            wait_until("the models table", lambda: attr(browser, "#models tr.active", "data-model-id"))
            listed = browser.execute_script("return [...document.querySelectorAll('#models tbody tr')]"
                                            ".map(r => r.dataset.modelId)")
            assert sorted(listed) == sorted(ids)
            assert attr(browser, "#models tr.active", "data-model-id") == ids[0]

            # the training form asks for the key, refuses a wrong one, then starts a job
            form = browser.find_element(By.ID, "train-form")
            key = form.find_element(By.NAME, "api_key")
            assert key.is_displayed()
            # wide enough that training outlasts a few of the page's 1 s polls of /jobs
            for name, value in (("num_epochs", "4"), ("seq_len", "32"), ("hidden_size", "256")):
                field = form.find_element(By.NAME, name)
                field.clear()
                field.send_keys(value)
            submit = form.find_element(By.CSS_SELECTOR, "button[type=submit]")
            message = browser.find_element(By.ID, "train-message")
            submit.click()
            wait_until("the key prompt", lambda: "needs an API key" in message.text)
            key.send_keys("wrong")
            submit.click()
            wait_until("the refusal", lambda: "check the API key" in message.text)
            assert httpx.get(f"{url}/jobs").json() == []  # nothing was started
            key.clear()
            key.send_keys(KEY)
            submit.click()
            job_id = wait_until("the job id", lambda: re.search(r"job (\S+) queued", message.text))[1]

            # its progress bar moves while it trains, and it finishes
            seen: list[tuple[str, float]] = []

            def finished() -> bool:
                # one script reads the row at once: the list is redrawn under us every second
                state = browser.execute_script(
                    "const r = document.querySelector(`#jobs tr[data-job-id='${arguments[0]}']`);"
                    "return r && [r.dataset.status, r.querySelector('progress').value];", job_id)
                if state:
                    seen.append((state[0], float(state[1])))
                return bool(state) and state[0] in ("succeeded", "failed")

            wait_until("the job to finish", finished, timeout=180)
            assert seen[-1] == ("succeeded", 1.0), seen
            assert any(s == "running" and 0 < v < 1 for s, v in seen), seen
            job = httpx.get(f"{url}/jobs/{job_id}").json()
            assert job["spec"]["config"]["num_epochs"] == 4 and job["spec"]["config"]["seq_len"] == 32
            new_model = job["result"]["model_id"]
            wait_until("the new model in the table", lambda: browser.find_elements(
                By.CSS_SELECTOR, f'#models tr[data-model-id="{new_model}"]'), timeout=15)

            # activate a model from the table (the key given above is reused)
            target = ids[1]
            browser.find_element(By.CSS_SELECTOR, f'#models tr[data-model-id="{target}"] button').click()
            wait_until("the activation", lambda: httpx.get(f"{url}/ready").json().get("model_id") == target)
            wait_until("the active marker", lambda: attr(browser, "#models tr.active", "data-model-id")
                       == target)

            errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"
                      and "status of 401" not in e["message"]]  # the wrong key, on purpose
            assert errors == []
        finally:
            browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

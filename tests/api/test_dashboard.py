"""The dashboard at GET /: its files, and the page itself in headless Chromium.

The browser test drives Debian's `chromium` with its `chromium-driver` through
Selenium (never a downloaded browser), against the service on 127.0.0.1. It
skips, saying why, where either is missing; `.ci/run` installs both. The last
screenshot is saved under test-artifacts/ (or $TICKCAST_TEST_ARTIFACTS).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.routes.dashboard import STATIC
from app.main import create_app
from app.market.sources import synthetic
from tests.helpers.apps import app_store, install_models, make_settings
from tests.helpers.bodies import body, csv_body
from tests.helpers.servers import live_server

CHROMIUM = os.environ.get("TICKCAST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TICKCAST_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(
    os.environ.get("TICKCAST_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)
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


def test_api_docs_are_served_from_the_service(client: TestClient) -> None:
    """/docs and /redoc load nothing from a CDN: a machine without internet gets working docs."""
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), page
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-eval" not in csp, page  # no inline script
        assert "<script>" not in r.text and "https://" not in r.text and "http://" not in r.text, page
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text)
        assert assets, page
        for path in assets:
            asset = client.get(path)
            assert asset.status_code == 200 and asset.headers["cache-control"] == "no-cache", path
    assert {"/docs", "/redoc"}.isdisjoint(client.get("/openapi.json").json()["paths"])
    vendor = STATIC / "vendor"
    readme = (vendor / "README.md").read_text()
    swagger = (vendor / "swagger-ui" / "swagger-ui-bundle.js").read_text()
    assert 'PACKAGE_VERSION:"5.35.0"' in swagger and "| Swagger UI | 5.35.0 |" in readme
    redoc = (vendor / "redoc" / "redoc.standalone.js").read_text()
    assert 'ReDoc Version: ","2.5.4"' in redoc and "| ReDoc | 2.5.4 |" in readme
    # the one patch: ReDoc's sidebar logo came from cdn.redoc.ly; and no font is fetched
    assert "cdn.redoc.ly" not in redoc and "fonts.googleapis" not in redoc
    for licence in ("swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"):
        assert (vendor / licence).stat().st_size > 0, licence
    for served in (
        "swagger-ui/swagger-ui-bundle.js",
        "swagger-ui/swagger-ui.css",
        "redoc/redoc.standalone.js",
    ):
        digest = hashlib.sha256((vendor / served).read_bytes()).hexdigest()
        assert re.search(rf"`{re.escape(served)}`[^|]*\| `{digest}`", readme), served


def test_info_tells_a_frontend_what_it_needs(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, api_key="s3cr3t-key", markets=["synthetic:BTC-USD", "binance:ETH-USDT"]
    )
    with TestClient(create_app(settings)) as c:
        r = c.get("/info")
    assert "s3cr3t" not in r.text  # whether a key is set, never the key
    info = r.json()
    assert info["auth_required"] is True and info["device"] == "cpu"
    assert info["markets"] == [
        {"exchange": "synthetic", "symbol": "BTC-USD", "scheduled": True},
        {"exchange": "binance", "symbol": "ETH-USDT", "scheduled": True},
    ]


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
        pytest.skip(
            f"{' and '.join(missing)} not found: install Debian's chromium and "
            "chromium-driver packages (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
    )
    return webdriver


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    webdriver = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for downloads
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,2000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def attr(browser: Any, css: str, name: str) -> str | None:
    """An attribute of the first match, read in the page (rows are redrawn as data arrives)."""
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]);return e && e.getAttribute(arguments[1]);", css, name
    )


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def console_errors(browser: Any) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def requested_urls(browser: Any) -> list[str]:
    """Every http(s)/ws(s) URL the page asked for since the last call, from Chromium's network
    log: whatever a script, a style sheet or a worker fetches, blocked or not (chrome:// pages
    of the browser itself are not the page's)."""
    urls = []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            url = msg["params"].get("request", msg["params"]).get("url", "")
            if url.split(":", 1)[0] in ("http", "https", "ws", "wss"):
                urls.append(url)
    return urls


def only_from(url: str, browser: Any) -> None:
    """Nothing the page loaded or tried to load came from anywhere but the service."""
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [u for u in resources + requested_urls(browser) if not u.startswith(url + "/")]
    assert outside == [], outside


def legend(browser: Any, card_css: str) -> dict[str, str]:
    """The chart legend's rows, label to value."""
    return browser.execute_script(
        "const rows = document.querySelectorAll(arguments[0] + ' .u-legend .u-series');"
        "return Object.fromEntries([...rows].map(r => [r.querySelector('.u-label').textContent,"
        "                                               r.querySelector('.u-value').textContent]));",
        card_css,
    )


@pytest.mark.browser
def test_dashboard_in_chromium(tmp_path: Path, trained, browser) -> None:
    from selenium.webdriver.common.by import By

    ids = install_models(tmp_path, trained)
    ticks = synthetic.generate(15_000, seed=5)
    with app_store(tmp_path) as store:
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
            r = httpx.post(
                f"{url}/markets/synthetic/BTC-USD/import",
                content=csv_body(ticks[14_000:14_003]),
                headers={"X-API-Key": KEY},
            )
            assert r.json()["new_ticks"] == 3
            wait_until("three live ticks", lambda: int(card.get_attribute("data-updates")) == before + 3)
            scored = httpx.post(f"{url}/predict", json=body(ticks[:14_003])).json()
            expected, threshold = scored["probability"], scored["threshold"]
            prob = card.find_element(By.CSS_SELECTOR, ".probability")
            wait_until("the new probability", lambda: prob.get_attribute("data-value"))
            assert float(prob.get_attribute("data-value")) == pytest.approx(expected, abs=1e-6)
            assert prob.text == f"{expected:.3f}"
            assert prob.get_attribute("data-decision") == str(expected >= threshold).lower()

            # the decision threshold is drawn and explained; the legend names the axes' units and,
            # with the pointer off the chart, shows the latest tick rather than dashes
            css = '.card[data-market="synthetic:BTC-USD"]'
            key = card.find_element(By.CSS_SELECTOR, ".chart-key")
            assert card.find_element(By.CSS_SELECTOR, ".threshold").text == f"{threshold:.3f}"
            assert "green" in key.text and "red" in key.text and "UTC" in key.text
            last_time = float(ticks.time[14_002])
            latest = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(last_time))} (latest)"
            assert legend(browser, css) == {
                "time (UTC)": latest,
                "price": card.find_element(By.CSS_SELECTOR, ".price").text,
                "P(rise)": prob.text,
                "threshold": f"{threshold:.3f}",
            }
            from selenium.webdriver.common.action_chains import ActionChains

            ActionChains(browser).move_to_element(card.find_element(By.CSS_SELECTOR, ".u-over")).perform()
            wait_until(
                "the legend under the pointer", lambda: "latest" not in legend(browser, css)["time (UTC)"]
            )
            ActionChains(browser).move_to_element(browser.find_element(By.ID, "markets-title")).perform()
            wait_until("the latest tick again", lambda: legend(browser, css)["time (UTC)"] == latest)

            # ingestion status and the models table
            wait_until(
                "ingestion status",
                lambda: card.find_element(By.CSS_SELECTOR, ".ticks-stored").text.replace(",", "") == "14003",
                timeout=15,
            )
            wait_until("the models table", lambda: attr(browser, "#models tr.active", "data-model-id"))
            listed = browser.execute_script(
                "return [...document.querySelectorAll('#models tbody tr')].map(r => r.dataset.modelId)"
            )
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
            texts: list[tuple[float, str]] = []

            def finished() -> bool:
                # one script reads the row at once: the list is redrawn under us every second
                state = browser.execute_script(
                    "const r = document.querySelector(`#jobs tr[data-job-id='${arguments[0]}']`);"
                    "return r && [r.dataset.status, r.querySelector('progress').value,"
                    "             r.children[5].textContent];",
                    job_id,
                )
                if state:
                    seen.append((state[0], float(state[1])))
                    texts.append((float(state[1]), state[2]))
                return bool(state) and state[0] in ("succeeded", "failed")

            wait_until("the job to finish", finished, timeout=180)
            assert seen[-1] == ("succeeded", 1.0), seen
            assert any(s == "running" and 0 < v < 1 for s, v in seen), seen
            # the bar and the text count the same steps: 4 epochs, then saving and comparing
            for value, text in texts:
                step = re.match(r"step (\d)/5: ", text)
                if step:
                    assert (int(step[1]) - 1) / 5 <= value <= int(step[1]) / 5, (value, text)
            job = httpx.get(f"{url}/jobs/{job_id}").json()
            assert job["spec"]["config"]["num_epochs"] == 4 and job["spec"]["config"]["seq_len"] == 32
            new_model = job["result"]["model_id"]
            wait_until(
                "the new model in the table",
                lambda: browser.find_elements(By.CSS_SELECTOR, f'#models tr[data-model-id="{new_model}"]'),
                timeout=15,
            )

            # activate a model from the table (the key given above is reused)
            target = ids[1]
            browser.find_element(By.CSS_SELECTOR, f'#models tr[data-model-id="{target}"] button').click()
            wait_until("the activation", lambda: httpx.get(f"{url}/ready").json().get("model_id") == target)
            wait_until(
                "the active marker", lambda: attr(browser, "#models tr.active", "data-model-id") == target
            )

            errors = [
                e for e in console_errors(browser) if "status of 401" not in e
            ]  # the wrong key, on purpose
            assert errors == []
            only_from(url, browser)
        finally:
            browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


@pytest.mark.browser
def test_api_docs_in_chromium_offline(tmp_path: Path, trained, browser) -> None:
    """Both docs pages render every operation from the service's own files: no console error,
    no request to any other host."""
    from selenium.webdriver.common.by import By

    install_models(tmp_path, trained)
    app = create_app(make_settings(tmp_path))
    with live_server(app) as url:
        spec = httpx.get(f"{url}/openapi.json").json()
        operations = sum(1 for item in spec["paths"].values() for m in item if m in ("get", "post", "delete"))
        browser.get(f"{url}/docs")
        wait_until(
            "Swagger UI's operations",
            lambda: len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) == operations,
        )
        paths = browser.execute_script(
            "return [...document.querySelectorAll('.opblock .opblock-summary-path')]"
            ".map(e => e.getAttribute('data-path'))"
        )
        assert "/predict" in paths and set(paths) == set(spec["paths"])
        assert console_errors(browser) == []
        only_from(url, browser)

        browser.get(f"{url}/redoc")
        wait_until(
            "ReDoc's operations",
            lambda: (
                len(browser.find_elements(By.CSS_SELECTOR, "[data-section-id^='operation/']")) == operations
            ),
        )
        shown = browser.execute_script(
            "return [...document.querySelectorAll('[data-section-id^=\"operation/\"]')]"
            ".map(e => e.textContent)"
        )
        assert any("/predict" in text and "Probability that the price rises" in text for text in shown)
        assert console_errors(browser) == []
        only_from(url, browser)


@pytest.mark.browser
def test_not_ready_and_empty_in_chromium(tmp_path: Path, browser) -> None:
    """No model and no key: the header says why the service is not ready (the reason /ready
    gives, not a bare status), the key field stays hidden, and the empty tables say what to do."""
    from selenium.webdriver.common.by import By

    app = create_app(make_settings(tmp_path))
    with live_server(app) as url:
        reason = httpx.get(f"{url}/ready").json()["reason"]
        assert "no model" in reason
        browser.get(f"{url}/")
        status = browser.find_element(By.ID, "service-status")
        wait_until("the not-ready state", lambda: status.get_attribute("data-state") == "not-ready")
        assert status.text == "not ready"
        assert browser.find_element(By.ID, "active-model").text == reason
        wait_until("the empty tables", lambda: browser.find_elements(By.CSS_SELECTOR, "#jobs tr.empty"))
        assert browser.find_element(By.CSS_SELECTOR, "#models tr.empty").text.startswith("no models yet")
        assert browser.find_element(By.CSS_SELECTOR, "#jobs tr.empty").text.startswith("no training jobs")
        assert not browser.find_element(By.ID, "key-field").is_displayed()
        # /ready's 503 is the one failed request, and it is the point
        assert [e for e in console_errors(browser) if "/ready - " not in e] == []


@pytest.mark.browser
def test_job_progress_bar_and_text_agree(tmp_path: Path, browser) -> None:
    """The page's own code, in the browser, over the progress a job reports in each phase: the
    comparison after the last epoch is its own step, not a bar stuck at (n-1)/n beside "epoch n/n"."""
    app = create_app(make_settings(tmp_path))
    with live_server(app) as url:
        browser.get(f"{url}/")
        browser.set_script_timeout(10)
        got = browser.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            import("/static/js/jobs.js").then((jobs) => done(arguments[0].map((p) => {
              const job = {status: "running", progress: p};
              return [jobs.fraction(job), jobs.detail(job)];
            })));""",
            [
                {
                    "phase": "training",
                    "epoch": 1,
                    "num_epochs": 3,
                    "batch": 5,
                    "num_batches": 10,
                    "loss": 0.69,
                },
                {
                    "phase": "training",
                    "epoch": 3,
                    "num_epochs": 3,
                    "batch": 10,
                    "num_batches": 10,
                    "loss": 0.69,
                },
                {"phase": "saving", "epoch": 3, "num_epochs": 3, "loss": 0.69},
                {
                    "phase": "comparing with the active model",
                    "epoch": 3,
                    "num_epochs": 3,
                    "loss": 0.69,
                    "val": {"auc": 0.55},
                },
                {"phase": "comparing with the active model", "epoch": 2, "num_epochs": 3},  # stopped early
            ],
        )
    assert got == [
        [0.125, "step 1/4: training, epoch 1/3, loss 0.6900"],
        [0.75, "step 3/4: training, epoch 3/3, loss 0.6900"],
        [0.75, "step 4/4: saving, trained 3/3 epochs"],
        [0.75, "step 4/4: comparing with the active model, trained 3/3 epochs, val AUC 0.5500"],
        [0.75, "step 4/4: comparing with the active model, trained 2/3 epochs"],
    ]


@pytest.mark.browser
def test_narrow_screen_in_chromium(tmp_path: Path, trained, browser) -> None:
    """At 360 px wide (a small phone) nothing scrolls sideways and each chart fits the screen."""
    from selenium.webdriver.common.by import By

    install_models(tmp_path, trained)
    ticks = synthetic.generate(2_000, seed=7)
    markets = ["synthetic:BTC-USD", "synthetic:ETH-USD"]
    with app_store(tmp_path) as store:
        for m in markets:
            store.insert(*m.split(":"), ticks)
    app = create_app(make_settings(tmp_path, markets=markets))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live_server(app) as url:
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 360, "height": 800, "deviceScaleFactor": 1, "mobile": True},
        )
        try:
            browser.get(f"{url}/")
            for m in markets:
                wait_until(
                    f"{m}'s chart",
                    lambda m=m: (
                        int(
                            browser.find_element(By.CSS_SELECTOR, f'.card[data-market="{m}"]').get_attribute(
                                "data-updates"
                            )
                            or 0
                        )
                        >= 600
                    ),
                )
            wait_until("the models table", lambda: attr(browser, "#models tr.active", "data-model-id"))
            wait_until(
                "the ingestion status",
                lambda: browser.find_element(By.CSS_SELECTOR, ".card .ticks-stored").text != "–",
            )
            time.sleep(0.5)  # a resize reaches uPlot through a ResizeObserver, a frame later
            layout = browser.execute_script("""
                const root = document.documentElement;
                return {client: root.clientWidth, scroll: root.scrollWidth,
                        charts: [...document.querySelectorAll('.chart canvas')].map((c) => {
                          const r = c.getBoundingClientRect(); return [r.left, r.right, r.width];
                        })};""")
            assert layout["client"] == 360, layout
            assert layout["scroll"] <= layout["client"], layout  # no sideways scroll
            assert len(layout["charts"]) == 2, layout
            for left, right, width in layout["charts"]:
                assert left >= 0 and right <= 360 and width > 250, layout
            assert console_errors(browser) == []
            only_from(url, browser)
        finally:
            browser.save_screenshot(str(ARTIFACTS / "dashboard-360px.png"))


@pytest.mark.browser
def test_imported_market_in_chromium(tmp_path: Path, browser) -> None:
    """A market that has only imported ticks (not in TICKCAST_MARKETS) gets a card, marked as not
    scheduled, and is offered for training like the configured ones."""
    from selenium.webdriver.common.by import By

    ticks = synthetic.generate(2_000, seed=7)
    with app_store(tmp_path) as store:
        store.insert("synthetic", "ETH-USD", ticks)
    app = create_app(make_settings(tmp_path, markets=["synthetic:BTC-USD"]))
    with live_server(app) as url:
        listed = {f"{m['exchange']}:{m['symbol']}": m for m in httpx.get(f"{url}/markets").json()}
        assert set(listed) == {"synthetic:BTC-USD", "synthetic:ETH-USD"}
        assert listed["synthetic:ETH-USD"]["scheduled"] is False
        browser.get(f"{url}/")
        imported = '.card[data-market="synthetic:ETH-USD"]'
        wait_until("the imported market's card", lambda: browser.find_elements(By.CSS_SELECTOR, imported))
        card = browser.find_element(By.CSS_SELECTOR, imported)
        wait_until(
            "its status",
            lambda: card.find_element(By.CSS_SELECTOR, ".last-pull").text == "not scheduled (imported)",
        )
        assert card.find_element(By.CSS_SELECTOR, ".ticks-stored").text.replace(",", "") == "2000"
        assert card.find_element(By.CSS_SELECTOR, ".next-run").text == "–"
        wait_until("its ticks", lambda: int(card.get_attribute("data-updates") or 0) >= 600)
        options = browser.execute_script(
            "return [...document.querySelectorAll('#train-form select[name=market] option')]"
            ".map(o => o.value)"
        )
        assert options == ["synthetic:BTC-USD", "synthetic:ETH-USD"]
        assert [e for e in console_errors(browser) if "/ready - " not in e] == []  # no model: 503


# ------------------------------------------------------------------ live evaluation (issue 14)


def test_page_has_the_live_views(client: TestClient) -> None:
    """The live panel, the leaderboard, the decisions and the model history are on the page, and
    their modules are among what main.js loads (each served like the page's other files)."""
    html = client.get("/").text
    for part in (
        'id="live-section"',
        'id="live-market"',
        'id="live-windows"',
        'id="reliability"',
        'id="leaderboard"',
        'id="decisions"',
        'id="model-history"',
        'class="coverage"',
    ):
        assert part in html, part
    main = client.get("/static/js/main.js").text
    assert 'from "./live.js"' in main and 'from "./history.js"' in main
    for module in ("live", "reliability", "leaderboard", "gaps", "history"):
        r = client.get(f"/static/js/{module}.js")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache", module
        assert "javascript" in r.headers["content-type"], module
    assert 'from "./gaps.js"' in client.get("/static/js/markets.js").text


def _window(count: int, auc: float | None, brier: float | None, base_brier: float | None) -> dict[str, Any]:
    return {
        "count": count,
        "auc": auc,
        "brier": brier,
        "log_loss": None if brier is None else brier * 2.8,
        "ece": None if brier is None else 0.012,
        "base_rate": None if not count else 0.48,
        "base_brier": base_brier,
        "ppv": None,
        "npv": None,
        "threshold": 0.5,
        "last_move_auc": 0.52,
    }


def _live_model(model_id: str, role: str, auc: float | None, brier: float | None) -> dict[str, Any]:
    full = _window(1000, auc, brier, 0.2496)
    return {
        "model_id": model_id,
        "role": role,
        "arch": "CNN",
        "calibrator_version": 2,
        "computed_at": 1.7e9,
        "windows": {
            "last_1000": full,
            "last_10000": _window(4200, auc, brier, 0.2498),
            "last_hour": _window(0, None, None, None),
            "last_day": full,
        },
        "validation": {"auc": 0.55, "brier": 0.2450, "log_loss": 0.683},
        "alerts": {"auc_floor": False, "below_last_move": True, "ece_bound": False},
        "reliability": [
            {"lo": i / 10, "hi": (i + 1) / 10, "count": c, "mean_p": m, "observed": o}
            for i, (c, m, o) in enumerate(
                [(0, None, None)] * 3
                + [(120, 0.35, 0.31), (400, 0.46, 0.47), (380, 0.54, 0.55), (100, 0.64, 0.70)]
                + [(0, None, None)] * 3
            )
        ],
    }


LIVE_PAYLOAD = {
    "exchange": "synthetic",
    "symbol": "BTC-USD",
    "scored_through": 1.7e9,
    "models": [_live_model("A", "active", 0.56, 0.2440), _live_model("B", "shadow", 0.53, 0.2470)],
    "decisions": [
        {
            "at": 1.7e9,
            "active_id": "A",
            "challenger_id": "B",
            "decision": "refused",
            "n": 5000,
            "mean_diff": -0.0012,
            "statistic": -1.9,
            "p_value": 0.97,
            "confidence": 0.95,
            "reason": "not better at 95%",
        }
    ],
}

# Draws each answer into a copy of the page's live section (the page's own panel keeps polling
# the real one) and reads back what a person would see.
_SHOW_LIVE = """
const done = arguments[arguments.length - 1];
import("/static/js/live.js").then(({ LivePanel }) => {
  const out = [];
  for (const payload of arguments[0]) {
    const root = document.getElementById("live-section").cloneNode(true);
    const panel = new LivePanel(root, () => {});
    const q = (s) => root.querySelector(s);
    const all = (s) => [...root.querySelectorAll(s)];
    panel.show(payload);
    out.push({
      state: root.dataset.state, message: q("#live-message").textContent,
      model: q("#live-model").textContent,
      alerts: all("#live-alerts .chip").map((c) => c.dataset.alert || c.textContent),
      windows: all("#live-windows tbody tr").map((r) => [r.dataset.window, r.dataset.count,
        ...[...r.querySelectorAll("td.metric")].map((td) => [td.dataset.metric, td.dataset.value,
          ...[...td.querySelectorAll(".vs")].map((s) =>
            `${s.dataset.ref}:${s.dataset.refValue}:${s.className}`)])]),
      dots: all("#reliability circle.bin").map((c) => [Number(c.dataset.count), Number(c.dataset.meanP)]),
      bars: all("#reliability rect.count").length, svgBins: q("#reliability svg").dataset.bins,
      board: all("#leaderboard tbody tr").map((r) => [r.dataset.modelId, r.dataset.role, r.textContent]),
      decisions: all("#decisions tbody tr").map((r) => [r.dataset.decision, r.textContent]),
    });
  }
  done(out);
}).catch((e) => done(String(e)));"""


@pytest.mark.browser
def test_live_panel_draws_what_the_api_says(tmp_path: Path, browser) -> None:
    """The page's live modules over a full answer, one with nulls and no outcomes, and one with
    no models: figures beside their references, alerts, the reliability dots, the tables; and
    for the empty ones a sentence, never an exception."""
    no_outcomes = json.loads(json.dumps(LIVE_PAYLOAD))
    for m in no_outcomes["models"]:
        m["windows"] = {k: _window(0, None, None, None) for k in m["windows"]}
        m["reliability"] = [
            {"lo": i / 10, "hi": (i + 1) / 10, "count": 0, "mean_p": None, "observed": None}
            for i in range(10)
        ]
        m["alerts"] = {"auc_floor": False, "below_last_move": False, "ece_bound": False}
    no_outcomes["models"][1]["reliability"] = []  # a shadow with no figures yet: the service's form
    no_outcomes["decisions"] = []
    nothing = {
        "exchange": "synthetic",
        "symbol": "BTC-USD",
        "scored_through": None,
        "models": [],
        "decisions": [],
    }
    app = create_app(make_settings(tmp_path))
    with live_server(app) as url:
        browser.get(f"{url}/")
        browser.set_script_timeout(10)
        full, empty, none = browser.execute_async_script(_SHOW_LIVE, [LIVE_PAYLOAD, no_outcomes, nothing])
        assert not [e for e in console_errors(browser) if "/ready - " not in e and " 404 " not in e]

    assert full["state"] == "live" and full["message"] == ""
    assert full["model"] == "A (CNN)" and full["alerts"] == ["below_last_move"]
    rows = {w[0]: w for w in full["windows"]}
    assert list(rows) == ["last_1000", "last_10000", "last_hour", "last_day"]
    # AUC above the validation's 0.55 and the base rate's 0.5: better than both; Brier 0.2440
    # under the validation's 0.2450 and the window's base-rate Brier 0.2496: better than both
    assert rows["last_1000"] == [
        "last_1000",
        "1000",
        ["auc", "0.56", "validation:0.55:vs better", "base:0.5:vs better"],
        ["brier", "0.244", "validation:0.245:vs better", "base:0.2496:vs better"],
    ]
    # a window without outcomes: no figure, no colour, the references still shown
    assert rows["last_hour"] == [
        "last_hour",
        "0",
        ["auc", "", "validation:0.55:vs", "base:0.5:vs"],
        ["brier", "", "validation:0.245:vs", "base::vs"],
    ]
    assert full["dots"] == [[120, 0.35], [400, 0.46], [380, 0.54], [100, 0.64]]
    assert full["bars"] == 4 and full["svgBins"] == "4"
    assert [(m, r) for m, r, _ in full["board"]] == [("A", "active"), ("B", "shadow")]
    assert "0.5600" in full["board"][0][2] and "4,200" in full["board"][0][2] and "v2" in full["board"][0][2]
    assert full["decisions"] == [["refused", full["decisions"][0][1]]]
    assert "−0.00120" in full["decisions"][0][1] and "5,000" in full["decisions"][0][1]

    assert empty["state"] == "no-outcomes" and empty["message"].startswith("no outcomes yet")
    assert empty["alerts"] == ["no alerts"] and empty["dots"] == [] and empty["bars"] == 0
    assert [w[1] for w in empty["windows"]] == ["0"] * 4
    assert empty["decisions"][0][0] is None and "no promotion decisions yet" in empty["decisions"][0][1]

    assert none["state"] == "empty" and none["message"].startswith("no live data yet")
    assert none["model"] == "none" and none["board"][0][1] is None
    assert "no model is scored live" in none["board"][0][2]


@pytest.mark.browser
def test_live_panel_explains_a_market_without_live_data(tmp_path: Path, browser) -> None:
    """A market the live route does not know answers 404: the panel says so in words, and the
    page goes on (no script error, the other parts still refresh)."""
    from selenium.webdriver.common.by import By

    app = create_app(make_settings(tmp_path))
    with live_server(app) as url:
        expected = httpx.get(f"{url}/markets/nowhere/NONE-XX/live")
        assert expected.status_code == 404
        browser.get(f"{url}/")
        section = browser.find_element(By.ID, "live-section")
        wait_until(
            "the market list",
            lambda: browser.execute_script("return document.querySelectorAll('#live-market option').length"),
        )
        browser.execute_script("""
            const select = document.getElementById("live-market");
            select.append(new Option("nowhere:NONE-XX", "nowhere:NONE-XX"));
            select.value = "nowhere:NONE-XX";
            select.dispatchEvent(new Event("change"));""")
        wait_until("the explanation", lambda: section.get_attribute("data-state") == "error")
        message = browser.find_element(By.ID, "live-message").text
        assert message.startswith("no live evaluation for nowhere:NONE-XX: ")
        assert expected.json()["detail"] in message
        assert browser.find_element(By.CSS_SELECTOR, "#leaderboard tr.empty").text.startswith("no model")
        svg = browser.find_element(By.CSS_SELECTOR, "#reliability svg")
        assert svg.get_attribute("data-bins") == "0"
        errors = [e for e in console_errors(browser) if "/ready - " not in e]
        assert all("/markets/nowhere/NONE-XX/live" in e and "404" in e for e in errors), errors


# A chart as a card draws it (uPlot with the gaps plugin) over ticks from t=1000 to t=2000, the
# given coverage, and what was marked: each band's place as a share of the plot's width.
_MARK_GAPS = """
const done = arguments[arguments.length - 1];
import("/static/js/gaps.js").then(async ({ Gaps }) => {
  const box = document.createElement("div");
  document.body.append(box);
  const gaps = new Gaps("synthetic", "BTC-USD");
  gaps.coverage = arguments[0];
  const xs = Array.from({ length: 101 }, (_, i) => 1000 + 10 * i);
  const u = new uPlot({ width: 600, height: 200, scales: { x: { time: false } },
    series: [{}, { stroke: "#000" }], plugins: [gaps.plugin()] }, [xs, xs.map(Math.sin)], box);
  await new Promise((r) => requestAnimationFrame(r)); // uPlot draws on the next frame
  const width = u.under.getBoundingClientRect().width;
  const left = u.under.getBoundingClientRect().left;
  const marks = [...u.under.querySelectorAll(".gap")].map((g) => {
    const r = g.getBoundingClientRect();
    return [g.classList.contains("gap-time") ? "time" : "ids", (r.left - left) / width,
            (r.right - left) / width, g.title];
  });
  const layer = u.under.querySelector(".gap-layer");
  done({ marks, summary: gaps.summary(), time: layer.dataset.timeGaps, ids: layer.dataset.idGaps });
  u.destroy();
  box.remove();
}).catch((e) => done(String(e)));"""


@pytest.mark.browser
def test_gaps_are_marked_inside_the_charts_range(tmp_path: Path, browser) -> None:
    """Gaps outside the chart's range are left out, one across its edge is cut at the edge, and
    missing ids get a mark even where the two trades around them share a second."""
    coverage = {
        "exchange": "synthetic",
        "symbol": "BTC-USD",
        "first_time": 0.0,
        "last_time": 2000.0,
        "ticks": 5000,
        "gap_s": 60.0,
        "ids_consecutive": False,
        "missing_ids": 7,
        "id_coverage": 0.9986,
        "time_gap_count": 3,
        "id_gap_count": 2,
        "truncated": False,
        "time_gaps": [
            {"start": 200.0, "end": 400.0, "seconds": 200.0},  # before the chart
            {"start": 1200.0, "end": 1300.0, "seconds": 100.0},
            {"start": 1900.0, "end": 2600.0, "seconds": 700.0},
        ],  # past its end
        "id_gaps": [
            {"after_id": "10", "before_id": "15", "missing": 4, "start": 1500.0, "end": 1500.0},
            {"after_id": "1", "before_id": "5", "missing": 3, "start": 100.0, "end": 101.0},
        ],
    }
    app = create_app(make_settings(tmp_path))
    with live_server(app) as url:
        browser.get(f"{url}/")
        browser.set_script_timeout(10)
        got = browser.execute_async_script(_MARK_GAPS, coverage)
    assert isinstance(got, dict), got
    assert (got["time"], got["ids"]) == ("2", "1")
    (k1, l1, r1, t1), (k2, l2, r2, _), (k3, l3, r3, t3) = got["marks"]
    assert k1 == "time" and l1 == pytest.approx(0.2, abs=0.01) and r1 == pytest.approx(0.3, abs=0.01)
    assert t1.startswith("no trades for 1.7 min: ")
    assert k2 == "time" and l2 == pytest.approx(0.9, abs=0.01) and r2 == pytest.approx(1.0, abs=0.01)
    assert k3 == "ids" and l3 == pytest.approx(0.5, abs=0.01) and 0 < r3 - l3 < 0.01
    assert t3.startswith("4 trade ids missing between 10 and 15")
    assert got["summary"] == ("3 time gaps (over 1.0 min), 2 id gaps (7 ids missing, 99.86% stored)")


def _page_live(browser: Any) -> dict[str, Any]:
    """What the live panel shows now, read in one script (it is redrawn every few seconds)."""
    return browser.execute_script("""
        const all = (s) => [...document.querySelectorAll(s)];
        const section = document.getElementById("live-section");
        return {
          state: section.dataset.state, model: document.getElementById("live-model").dataset.modelId,
          windows: Object.fromEntries(all("#live-windows tbody tr").map((r) => [r.dataset.window,
            [Number(r.dataset.count), ...[...r.querySelectorAll("td.metric")].map((td) =>
              [td.dataset.value, ...[...td.querySelectorAll(".vs")].map((s) => s.dataset.refValue)])]])),
          dots: all("#reliability circle.bin").map((c) => Number(c.dataset.count)),
          board: all("#leaderboard tbody tr").map((r) => [r.dataset.modelId, r.dataset.role]),
          decisions: all("#decisions tbody tr").map((r) => [r.dataset.decision || null,
                                                              r.dataset.challenger || null]),
        };""")


def _as_shown(v: float | None) -> str:
    """A figure as the page keeps it in data-value: JavaScript's String(number), or empty."""
    return "" if v is None else json.dumps(v)


def _expected_live(live: dict[str, Any]) -> dict[str, Any]:
    """What the live panel should show for one answer of GET /markets/{exchange}/{symbol}/live."""
    active = live["models"][0]
    val = active["validation"]
    windows = {
        k: [
            w["count"],
            [_as_shown(w["auc"]), _as_shown(val["auc"]), "0.5"],
            [_as_shown(w["brier"]), _as_shown(val["brier"]), _as_shown(w["base_brier"])],
        ]
        for k, w in active["windows"].items()
    }
    return {
        "state": "live",
        "model": active["model_id"],
        "windows": windows,
        "dots": [b["count"] for b in active["reliability"] if b["count"] > 0 and b["mean_p"] is not None],
        "board": [[m["model_id"], m["role"]] for m in live["models"]],
        "decisions": [[d["decision"], d["challenger_id"]] for d in live["decisions"]] or [[None, None]],
    }


@pytest.mark.browser
def test_live_views_in_chromium(tmp_path: Path, trained, browser) -> None:
    """A market with live outcomes, a shadow challenger and holes in its ticks: the live panel,
    the reliability diagram, the leaderboard, the decisions and a model's history show what the
    API says, and the chart marks the time gap and the missing trade ids it spans."""
    from selenium.webdriver.common.by import By

    ids = install_models(tmp_path, trained)
    ticks = synthetic.generate(6_000, seed=5)
    with app_store(tmp_path) as store:
        store.insert("synthetic", "BTC-USD", ticks[:3_000])
    settings = make_settings(
        tmp_path, live_poll_s=0.2, live_metrics_s=0.5, promotion="if_better_live", promote_min_outcomes=500
    )
    app = create_app(settings)
    market = "/markets/synthetic/BTC-USD"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live_server(app) as url:
        # live scoring starts at the newest tick stored when it first looks; then new ticks come:
        # trade ids 5500-5503 never stored, and an hour without trades before tick 5700
        wait_until("live scoring", lambda: httpx.get(f"{url}{market}/live").json()["scored_through"])
        later = replace(ticks[5_700:], time=ticks.time[5_700:] + 3_600.0)
        for part in (ticks[3_000:5_500], ticks[5_504:5_700], later):
            r = httpx.post(f"{url}{market}/import", content=csv_body(part))
            assert r.status_code == 200, r.text
        live = wait_until("a thousand outcomes", lambda: _settled(httpx.get(f"{url}{market}/live").json()))
        assert [m["model_id"] for m in live["models"]] in (ids, ids[::-1])
        coverage = httpx.get(f"{url}{market}/coverage").json()
        assert coverage["time_gap_count"] >= 1 and coverage["missing_ids"] >= 4

        try:
            browser.get(f"{url}/")
            section = browser.find_element(By.ID, "live-section")
            wait_until("the live panel", lambda: section.get_attribute("data-state") == "live")
            live = wait_until("the panel as the API says", lambda: _agrees(browser, f"{url}{market}/live"))
            shown = _page_live(browser)
            assert shown["windows"]["last_1000"][0] == 1000 and shown["dots"]
            assert sum(shown["dots"]) == 1000
            assert browser.find_element(By.ID, "live-message").text == ""

            # a model's history: the decisions that name it
            shadow = next(m["model_id"] for m in live["models"] if m["role"] != "active")
            browser.find_element(By.CSS_SELECTOR, f'#leaderboard tr[data-model-id="{shadow}"] button').click()
            history = browser.find_element(By.ID, "model-history")
            wait_until("the history", lambda: history.get_attribute("data-loaded") == shadow)
            expected = httpx.get(f"{url}/models/{shadow}/live").json()["history"]
            rows = history.find_elements(By.CSS_SELECTOR, "tbody tr")
            assert [r.get_attribute("data-decision") for r in rows] == (
                [d["decision"] for d in expected] or [None]
            )

            # the chart: the hour without trades shaded, the missing ids marked
            card = browser.find_element(By.CSS_SELECTOR, '.card[data-market="synthetic:BTC-USD"]')
            wait_until("the chart", lambda: int(card.get_attribute("data-updates") or 0) >= 600)
            layer = '.card[data-market="synthetic:BTC-USD"] .gap-layer'
            wait_until("the gaps", lambda: attr(browser, layer, "data-time-gaps") == "1")
            assert attr(browser, layer, "data-id-gaps") == "1"
            gap = card.find_element(By.CSS_SELECTOR, ".gap-time")
            plot = card.find_element(By.CSS_SELECTOR, ".u-under")
            assert 0 < gap.size["width"] < plot.size["width"] and gap.size["height"] == plot.size["height"]
            assert gap.get_attribute("title").startswith("no trades for 1.0 h")
            assert "4 trade ids missing between 5499 and 5504" in card.find_element(
                By.CSS_SELECTOR, ".gap-ids"
            ).get_attribute("title")
            assert card.find_element(By.CSS_SELECTOR, ".coverage").text.startswith(
                f"{coverage['time_gap_count']} time gap"
            )
            assert console_errors(browser) == []
            only_from(url, browser)
        finally:
            browser.save_screenshot(str(ARTIFACTS / "dashboard-live.png"))


def _settled(live: dict[str, Any]) -> dict[str, Any] | None:
    """The answer once both models (the active one and its shadow) have a full last-1,000 window."""
    models = live["models"]
    full = len(models) == 2 and all(m["windows"]["last_1000"]["count"] == 1000 for m in models)
    return live if full else None


def _agrees(browser: Any, live_url: str) -> dict[str, Any] | None:
    live = httpx.get(live_url).json()
    return live if _page_live(browser) == _expected_live(live) else None

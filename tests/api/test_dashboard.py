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
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.routes.dashboard import STATIC
from app.main import create_app
from app.market.sources import synthetic
from app.market.store import TickStore
from tests.helpers.apps import install_models, make_settings
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
    with TickStore(tmp_path / "db" / "tickcast.db") as store:
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
    with TickStore(tmp_path / "db" / "tickcast.db") as store:
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

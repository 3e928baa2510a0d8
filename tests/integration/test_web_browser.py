"""The web console in a real headless browser: Debian's Chromium through chromedriver
(Selenium). Every page renders with data (screenshots kept in tests/artifacts/web/),
live updates without reload, a retry from a failure's page, a refusal's reason, a queue
paused and resumed from its page (audited with the web user), the
database banner, and no console errors.

Skipped only when Chromium is not installed and this is not CI (``.ci/run`` installs
``chromium`` and ``chromium-driver`` and sets ``CI``).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import failures_support as fx
import pytest
import web_support as ws
from failures_support import spool_home  # noqa: F401  (fixture)

from jobsys.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "web"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
#: Deferred from the CLI to shown on the dashboard (the issue's Done-when).
LIVE_DEADLINE_SECONDS = 1.0

pytestmark = [pytest.mark.usefixtures("spool_home"), pytest.mark.slow]


def _have_chromium() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not _have_chromium():
        if os.environ.get("CI"):
            pytest.fail(
                f"{CHROMIUM} and {CHROMEDRIVER} are required in CI (apt: chromium chromium-driver)"
            )
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def seeded(settings: Settings, db_url: str) -> ws.Seeded:
    return ws.seed(settings, db_url)


@pytest.fixture
def server(settings: Settings, db_url: str, seeded: ws.Seeded) -> Iterator[str]:
    with ws.serve(settings, db_url) as url:
        yield url


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait(driver: Any, condition: Any, timeout: float = 10.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(condition)


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def text(driver: Any, selector: str) -> str:
    """An element's text, read in one script call: a live update may swap <main> at any
    moment, so no element reference is kept between calls."""
    found = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
        selector,
    )
    assert found is not None, f"no {selector} on {driver.current_url}"
    return str(found)


def click(driver: Any, selector: str) -> None:
    """Click, again if a live update replaced the element in between."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(5):
        try:
            css(driver, selector).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{selector} kept being replaced")


def live(driver: Any) -> None:
    """Wait until the page's event stream is connected (body[data-live=connected])."""
    wait(
        driver,
        lambda d: d.find_element("css selector", "body").get_attribute("data-live") == "connected",
    )


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def artifact_name(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", path.removeprefix("/admin/").lower()).strip("_")


def test_every_page_renders_with_data_without_console_errors(
    browser: Any, server: str, seeded: ws.Seeded
) -> None:
    for path in ws.pages(seeded):
        browser.get(server + path)
        heading = text(browser, "main h1")
        assert heading and "Not found" not in heading, path
        assert browser.find_elements("css selector", "main table, main dl"), path
        assert ws.CANARY not in browser.page_source, path
        if "/retry" not in path:
            live(browser)
        shot(browser, artifact_name(path))
        assert console_errors(browser) == [], path


def test_a_job_deferred_from_the_cli_appears_on_the_dashboard_without_reload(
    browser: Any, server: str, db_url: str, cli
) -> None:  # type: ignore[no-untyped-def]
    browser.get(server + "/admin/background_jobs")
    live(browser)
    browser.execute_script("window.__sameDocument = 'yes';")
    result = cli(
        "--database-url", db_url, "defer", "demo.refresh_profile", "--args", '{"account_id": 77}'
    )
    assert result.exit_code == 0, result.stderr
    deferred_at = time.monotonic()
    job_id = int(result.stdout)
    wait(browser, lambda d: d.find_elements("css selector", f'tr[data-job="{job_id}"]'), 5)
    shown_after = time.monotonic() - deferred_at
    print(f"job {job_id} shown on the dashboard {shown_after:.3f}s after the deferral")
    assert browser.execute_script("return window.__sameDocument") == "yes"  # no reload
    assert shown_after < LIVE_DEADLINE_SECONDS, f"shown {shown_after:.2f}s after the deferral"
    assert console_errors(browser) == []


def test_a_failure_retried_from_its_page_runs_and_its_retry_state_changes(
    browser: Any, server: str, db_url: str, seeded: ws.Seeded
) -> None:
    failure = seeded.failures["runtime"]
    browser.get(f"{server}/admin/background_jobs/failures/{failure}")
    assert "no retry decision yet" in text(browser, "#retry-decision")
    click(browser, "#retry-link")
    wait(browser, lambda d: text(d, "main h1") == "Retry: dry run")
    assert "would_retry" in text(browser, "#verdicts")
    click(browser, "#confirm-retry button")
    wait(browser, lambda d: text(d, "main h1") == "Retry: done")
    assert "1 retried, 0 refused" in text(browser, "#retry-summary")
    browser.get(f"{server}/admin/background_jobs/failures/{failure}")
    live(browser)
    decision = text(browser, "#retry-decision")
    assert decision.startswith("retried") and "web:tester" in decision
    assert text(browser, "#retry-outcome") == "pending"
    rows_before = len(browser.find_elements("css selector", "#attempts tbody tr"))
    browser.execute_script("window.__sameDocument = 'yes';")

    async def work() -> None:  # the retried job runs (and fails again: fx.runtime always does)
        config = fx.repo_config()
        app = fx.build_app(db_url, config)
        async with app.open_async():
            await fx.run_worker(app, config, queues=["profiles"])

    asyncio.run(work())
    wait(
        browser,
        lambda d: len(d.find_elements("css selector", "#attempts tbody tr")) == rows_before + 1,
        10,
    )
    # The retry's outcome follows the retried job, not the periodic check that records it.
    wait(browser, lambda d: text(d, "#retry-outcome").startswith("failed_again"), 10)
    assert browser.execute_script("return window.__sameDocument") == "yes"
    shot(browser, "failure_after_retry")
    assert console_errors(browser) == []


def test_a_refusal_shows_its_reason(browser: Any, server: str, seeded: ws.Seeded) -> None:
    failure = seeded.failures["auth"]
    browser.get(f"{server}/admin/background_jobs/failures/{failure}")
    # The rules refuse it whatever else they read: no link, the reason instead.
    assert browser.find_elements("css selector", "#retry-link") == []
    assert "skipped_authentication" in text(browser, "#retry-refused")
    browser.get(f"{server}/admin/retry?failure={failure}")
    wait(browser, lambda d: text(d, "main h1") == "Retry: dry run")
    verdicts = text(browser, "#verdicts")
    assert (
        "skipped_authentication" in verdicts and "Nothing would be retried" in browser.page_source
    )
    shot(browser, "retry_refused")
    assert console_errors(browser) == []


def test_a_queue_paused_and_resumed_from_its_page_is_audited_with_the_web_user(
    browser: Any, server: str, db_url: str, settings: Settings
) -> None:
    row = '#queues tr[data-queue="story_downloads"]'
    browser.get(server + "/admin/queues")
    live(browser)
    # Filled and sent in one script call: the stream's connect re-reads the page and
    # swaps <main>, so a form filled in one call and clicked in the next could be a
    # fresh, empty one (the pause then went out without its reason). An operator typing
    # has the focus in the form, which holds the swap off.
    browser.execute_script(
        "const f = document.querySelector(arguments[0] + ' form.pause-form');"
        "f.querySelector('select[name=for]').value = '30m';"
        "f.querySelector('input[name=reason]').value = 'upstream 429';"
        "f.requestSubmit(f.querySelector('button'));",
        row,
    )
    wait(browser, lambda d: "upstream 429" in text(d, f"{row} td.pause"))
    assert "paused" in text(browser, f"{row} td.pause")
    shot(browser, "queue_paused")
    click(browser, f"{row} form.action button")  # now the Resume button
    wait(browser, lambda d: text(d, f"{row} td.pause").strip() == "no")
    events = fx.rows(db_url, "SELECT action, actor FROM jobsys_queue_pause_events ORDER BY id")
    actor = f"web:{settings.operator}"
    assert events == [{"action": "pause", "actor": actor}, {"action": "resume", "actor": actor}]
    assert console_errors(browser) == []


def test_a_dropped_database_shows_a_banner_and_recovers(
    browser: Any, server: str, db_url: str
) -> None:
    browser.get(server + "/admin/background_jobs")
    live(browser)
    fx.rows(
        db_url,
        "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'jobsys-subscriber'",
    )
    wait(browser, lambda d: d.find_element("css selector", "#live-banner").is_displayed())
    assert "Database unreachable" in text(browser, "#live-banner")
    shot(browser, "database_banner")
    wait(browser, lambda d: not d.find_element("css selector", "#live-banner").is_displayed(), 15)
    assert css(browser, "body").get_attribute("data-live") == "connected"
    errors = console_errors(browser)
    assert errors == [], errors


OVERFLOW_JS = """
const out = [];
if (document.documentElement.scrollWidth > window.innerWidth + 1) {
  out.push('page ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth);
}
for (const table of document.querySelectorAll('main table')) {
  // A table wider than its box must scroll inside a box of its own, not spill over.
  let box = table.parentElement, scrolls = false;
  for (let e = table; e && e !== document.body; e = e.parentElement) {
    if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) {
      scrolls = true; box = e; break;
    }
  }
  const over = table.getBoundingClientRect().right - box.getBoundingClientRect().right;
  const name = table.id || table.parentElement.id || 'table';
  if (!scrolls && over > 1) { out.push(name + ' spills ' + over); }
}
// One letter a line: text split mid-word.
for (const cell of document.querySelectorAll('main td')) {
  if (cell.innerText.length > 12 && cell.getBoundingClientRect().width < 60) {
    out.push('cell ' + JSON.stringify(cell.innerText.slice(0, 20)) + ' squeezed');
  }
}
return out;
"""


@pytest.mark.parametrize("width", [1280, 390])
def test_pages_fit_a_desktop_and_a_phone_width(
    browser: Any, server: str, seeded: ws.Seeded, width: int
) -> None:
    """At 390 px (a phone) the tables pushed the whole page sideways and squeezed error
    messages to a few letters a line; at 1280 the dashboard's schedule table spilled over
    the latest jobs beside it. Wide tables now scroll in their own box."""
    browser.set_window_size(width, 900)
    problems = {}
    for path in ws.pages(seeded):
        browser.get(server + path)
        found = browser.execute_script(OVERFLOW_JS)
        if found:
            problems[path] = found
        if "failures/" in path or path.endswith(("background_jobs", "queues")):
            shot(browser, f"{artifact_name(path) or 'dashboard'}_{width}")
    assert problems == {}

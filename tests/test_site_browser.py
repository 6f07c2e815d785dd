"""The leaderboard site in a real browser: headless Chromium (Debian's, /usr/bin/chromium) driven by
Playwright, opening the built site from disk (file://).

Install both with scripts/install_browser.sh (never `playwright install`). Without them this test skips
locally with the reason, and fails in CI (CI=true), where the browser must be there."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.leaderboard_fixtures import HOSTILE, build_fixture_site, ratio_of_means
from tests.test_leaderboard import expected_order

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
TABLE = "#table-zsre"
CONTROLS = '.controls[data-controls="table-zsre"]'


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (run scripts/install_browser.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (run scripts/install_browser.sh)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out, runs, pages = build_fixture_site(tmp_path_factory.mktemp("browser-site"))
    return out, runs


class Recorder:
    """Everything a page did that it should not: requests, dialogs (a script ran), errors."""

    def __init__(self, page):
        self.requests, self.dialogs, self.errors = [], [], []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def assert_clean(self):
        assert self.requests and all(u.startswith("file://") for u in self.requests), self.requests
        assert self.dialogs == [], f"a script from the data ran: {self.dialogs}"
        assert self.errors == [], self.errors  # also catches a CSP block of the site's own files


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    recorder = Recorder(page)
    yield page, recorder
    context.close()
    recorder.assert_clean()


def visible_editors(page) -> list[str]:
    return page.eval_on_selector_all(
        f"{TABLE} tbody tr", "rows => rows.filter(r => !r.hidden).map(r => r.querySelector('td.editor a').textContent)")


def delta_values(page) -> list[float]:
    """The ΔU column's sort values of the visible rows (the column found by its header)."""
    return [float(x) for x in page.eval_on_selector(TABLE, """t => {
        const i = Array.from(t.tHead.rows[0].cells).findIndex(h => h.dataset.col === "delta_u");
        return Array.from(t.tBodies[0].rows).filter(r => !r.hidden).map(r => r.cells[i].dataset.sort);
    }""")]


def test_overview_sorts_filters_and_is_screenshotted(page, site):
    page, recorder = page
    out, runs = site
    page.goto((out / "index.html").as_uri())
    page.wait_for_load_state("load")
    assert page.text_content(f"{TABLE} th[data-col=delta_u]").strip() == "ΔU"

    by_delta = sorted(runs, key=lambda name: ratio_of_means(runs[name][1]))  # computed here, by hand
    page.click(f"{TABLE} th[data-col=delta_u] button")
    assert page.get_attribute(f"{TABLE} th[data-col=delta_u]", "aria-sort") == "ascending"
    assert visible_editors(page) == by_delta
    values = delta_values(page)
    assert values == sorted(values)
    assert values == pytest.approx([ratio_of_means(runs[n][1]) for n in by_delta], rel=1e-9, abs=1e-12)
    page.click(f"{TABLE} th[data-col=delta_u] button")
    assert page.get_attribute(f"{TABLE} th[data-col=delta_u]", "aria-sort") == "descending"
    assert visible_editors(page) == by_delta[::-1]

    page.select_option(f"{CONTROLS} select[data-filter=editor]", "ft")
    assert visible_editors(page) == ["ft"]
    assert page.text_content(f"{CONTROLS} [data-count]") == "1 of 6 runs shown"
    page.select_option(f"{CONTROLS} select[data-filter=editor]", HOSTILE)
    assert visible_editors(page) == [HOSTILE]
    page.select_option(f"{CONTROLS} select[data-filter=editor]", "")
    page.fill(f"{CONTROLS} input[data-filter=text]", "ft-")
    assert sorted(visible_editors(page)) == ["ft-a", "ft-b"]
    page.fill(f"{CONTROLS} input[data-filter=text]", "")
    assert len(visible_editors(page)) == 6

    page.click(f"{TABLE} th[data-col=rank] button")  # back to the ranking: ascending rank, unranked last
    page.click(f"{TABLE} th[data-col=rank] button")
    page.click(f"{TABLE} th[data-col=rank] button")
    assert page.get_attribute(f"{TABLE} th[data-col=rank]", "aria-sort") == "ascending"
    assert visible_editors(page)[:2] == expected_order(runs)[0][:2] == ["ft-b", "ft-a"]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)
    assert (ARTIFACTS / "leaderboard.png").stat().st_size > 10_000
    recorder.assert_clean()


def test_hostile_name_renders_as_text_on_the_overview_and_its_run_page(page, site):
    page, recorder = page
    out, _ = site
    page.goto((out / "index.html").as_uri())
    assert page.evaluate("document.scripts.length") == 1  # only static/table.js
    link = page.get_by_role("link", name=HOSTILE, exact=True)
    assert link.count() == 1 and link.text_content() == HOSTILE
    link.click()
    page.wait_for_load_state("load")
    assert re.search(r"/runs/[^/]+--_script_alert_1___script_--zsre/index\.html$", page.url)
    assert page.text_content("h1 .editor-name") == HOSTILE
    assert "</pre><script>alert(3)</script>" in page.text_content("pre.hparams")
    assert page.evaluate("document.scripts.length") == 1
    assert page.locator("table.responses").count() >= 1  # example responses before/after
    page.screenshot(path=str(ARTIFACTS / "leaderboard-run.png"), full_page=True)
    page.click("text=How to submit")
    page.wait_for_load_state("load")
    assert page.url.endswith("/submit.html") and "editprobe submit" in page.text_content("article.prose")
    recorder.assert_clean()


def test_the_committed_board_lists_every_committed_run_and_is_screenshotted(page, tmp_path):
    """The site built from leaderboard/submissions: one section per task, each row a committed run (read from the
    folder names), both models; the screenshot is the board as a visitor sees it."""
    from editprobe.leaderboard.site import build
    from tests.test_board import BOARD_MODELS, BOARD_TASKS, COMMITTED, committed_runs

    page, recorder = page
    report, _ = build(COMMITTED, tmp_path / "site")
    assert report.ok
    page.goto((tmp_path / "site" / "index.html").as_uri())
    page.wait_for_load_state("load")
    runs = committed_runs()
    for task in {p.parts[-2] for p in runs}:
        expected = sorted((p.parts[-4], p.parts[-3]) for p in runs if p.parts[-2] == task)
        shown = page.eval_on_selector_all(f"#table-{task} tbody tr",
                                          "rows => rows.map(r => [r.dataset.model, r.dataset.editor])")
        assert sorted(map(tuple, shown)) == expected, task
    assert {p.parts[-4] for p in runs} >= set(BOARD_MODELS)
    for task in BOARD_TASKS:
        assert page.locator(f"#task-{task}").count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "leaderboard-committed.png"), full_page=True)
    assert (ARTIFACTS / "leaderboard-committed.png").stat().st_size > 10_000
    recorder.assert_clean()

"""The report of the committed reference results read in a real headless Chromium, as a reader
sees it: at 1400 px every column of every table shows, numbers sort as numbers, each family
card's links land on its sections, and at 900 px nothing runs off the page. The screenshots it
takes (the first screen, the scaling and crossover figures) are kept as test artefacts, under
``build/test-artifacts/``."""

import re
from pathlib import Path

import pytest

from tests import test_report
from tests.conftest import ROOT
from tests.test_report import ARTIFACTS

from bench.render import report

REFERENCE = sorted((ROOT / "results" / "reference").glob("*cpu*.json"))

browser = test_report.browser  # the one way the tests find Chromium and playwright

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]  # one worker, one Chromium


@pytest.fixture(scope="module")
def reference_page(tmp_path_factory) -> Path:
    assert REFERENCE, "no committed reference results"
    return report.write(REFERENCE, tmp_path_factory.mktemp("reference") / "reference.html")


@pytest.fixture
def page(browser, reference_page):
    page, problems = test_report.open_page(browser, reference_page)
    page.set_viewport_size({"width": 1400, "height": 900})
    yield page
    page.close()
    assert problems == []


def test_no_table_hides_a_column_at_1400_px(page):
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    boxes = page.evaluate("""() => Array.from(document.querySelectorAll('table')).map(t => {
        const box = t.parentElement;
        return {head: t.tHead ? t.tHead.innerText.replace(/\\s+/g, ' ').slice(0, 60) : '',
                scroll: box.scrollWidth, client: box.clientWidth, rows: t.rows.length,
                tall: box.scrollHeight > box.clientHeight + 1};
    })""")
    assert len(boxes) >= 5
    hidden = [b for b in boxes if b["scroll"] > b["client"] + 1]
    assert hidden == [], hidden
    # the table of every problem is read whole, not through a small box
    problems = [b for b in boxes if b["head"].startswith("family problem")]
    assert problems and not any(b["tall"] for b in problems), problems


def test_a_fraction_column_sorts_by_its_value(page):
    table = page.locator("table.sortable").filter(has=page.locator("th", has_text="wins")).first
    header = table.locator("th", has_text="wins").first
    col = table.locator("th").all_inner_texts().index(header.inner_text())

    def shares():
        texts = table.evaluate(f"t => Array.from(t.tBodies[0].rows).map(r => r.cells[{col}].textContent)")
        return [int(k) / int(of) for k, of in (re.match(r"(\d+)/(\d+)", t).groups() for t in texts if "/" in t)]

    header.click()
    up = shares()
    assert len(up) >= 3 and len(set(up)) >= 2
    assert up == sorted(up), up
    header.click()
    assert shares() == sorted(up, reverse=True)


def test_each_card_links_to_its_family_and_lands_there(page):
    ids = page.evaluate("Array.from(document.querySelectorAll('[id]')).map(e => e.id)")
    assert len(ids) == len(set(ids)), "element ids repeat"
    cards = page.locator("ul.headlines > li")
    assert cards.count() >= 10
    links = page.locator("ul.headlines .links a")
    hrefs = links.evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert len(hrefs) >= 3 * cards.count()
    for kind in ("problems-", "scaling-", "heatmap-", "tradeoffs-"):
        assert any(h.startswith(f"#{kind}") for h in hrefs), kind
    for i, href in enumerate(hrefs):
        page.evaluate("window.scrollTo(0, 0)")
        links.nth(i).click()
        landed = page.evaluate("""href => {
            const target = document.getElementById(href.slice(1));
            if (!target) return null;
            const r = target.getBoundingClientRect();
            return {hash: location.hash, top: r.top, bottom: r.bottom, height: window.innerHeight};
        }""", href)
        assert landed is not None, f"{href}: no such element"
        assert landed["hash"] == href
        assert 0 <= landed["top"] < landed["height"] and landed["bottom"] > 0, (href, landed)


def test_the_page_fits_900_px_and_its_figures_scale_down(page):
    page.set_viewport_size({"width": 900, "height": 900})
    fit = page.evaluate("""() => ({
        doc: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
        body: document.body.scrollWidth,
        images: Array.from(document.images).map(i => [i.getBoundingClientRect().right, i.naturalWidth]),
    })""")
    width = fit["doc"][1]
    assert fit["doc"][0] <= width and fit["body"] <= width, fit["doc"]
    assert fit["images"] and all(right <= width for right, _ in fit["images"])
    assert any(natural > width for _, natural in fit["images"])  # some were drawn wider, and shrank


def test_screenshots_of_the_first_screen_and_the_scaling_and_crossover_figures(page):
    shots = {"report-first-screen.png": None,
             "report-scaling.png": page.locator("h3[id^='scaling-'] + figure").first,
             "report-crossover.png": page.locator("figure", has=page.locator("img[alt*='across shapes']"))}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, where in shots.items():
        if where is None:
            page.screenshot(path=str(ARTIFACTS / name))
        else:
            assert where.count() == 1, name
            where.scroll_into_view_if_needed()
            where.screenshot(path=str(ARTIFACTS / name))
        assert (ARTIFACTS / name).stat().st_size > 10_000, name

"""The report of a big results file (the real tiny sweep scaled up by ``tests.bigfile``): complete,
its counts those of the rows, and its long tables capped with a note that says so. No test here
asserts a time or a memory size; ``python -m tests.bigfile`` makes the 100k-row file measured
in the notes."""

import json
import re

import pytest

from bench.analysis import results
from bench.analysis.picks import noisy
from bench.render import report
from tests import bigfile
from tests.test_report import assert_captions_once

pytestmark = pytest.mark.xdist_group("big-report")  # one worker: its scaled file and report are a module fixture

ROWS = 2500
CAP = 600  # the tables' cap in this test, so that its rows overflow it


@pytest.fixture(scope="module")
def big(tiny_results, tmp_path_factory):
    """The scaled file, its frame, and its report rendered with tables capped at ``CAP`` rows."""
    doc = bigfile.scale(json.loads(tiny_results.read_text()), ROWS)
    path = tmp_path_factory.mktemp("big") / "big.json"
    path.write_text(json.dumps(doc))
    frame = results.load([path])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "MAX_ROWS", CAP)
        html = report.write([path], path.with_suffix(".html")).read_text()
    return path, frame, html


def section(html: str, start: str, end: str | None = None) -> str:
    part = html.split(f'id="{start}"')[1]
    return part.split(f'id="{end}"')[0] if end else part


def body_rows(block: str) -> list[str]:
    """The rows of the first table's body in ``block``."""
    return block.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]


def test_the_scaled_file_is_a_valid_results_file_of_many_platforms_and_sizes(big):
    path, frame, _ = big
    assert len(frame) == ROWS and not frame.duplicated(results.KEY).any()
    assert frame["dtype"].nunique() == len(bigfile.DTYPES)
    assert frame["problem"].nunique() > 50 and frame["status"].nunique() >= 3
    assert frame["samples"].dropna().map(len).min() >= 3  # timed rows keep their raw samples
    assert json.loads(path.read_text())["jacbench"]["pairs"] == ROWS


def test_the_counts_it_states_are_the_rows(big):
    _, frame, html = big
    assert f"{ROWS} measured pairs" in html
    for status, n in frame["status"].value_counts().items():
        assert f'<span class="status-{status}">{n} {status}</span>' in html, status
    failed = frame[frame["status"] != "ok"]
    assert f"All {len(failed)} pairs that are not" in html
    # the failure overview counts every pair that is not ok, by strategy and status
    overview = body_rows(section(html, "failures", "noise"))
    counted = sum(int(n) for tr in overview for status, n in re.findall(r'status-(\w+)" data-value="(\d+)"', tr)
                  if status != "ok")
    assert counted == len(failed)
    loud = noisy(frame)
    if len(loud):
        assert f"{len(loud)} timed pairs had an IQR/median" in html


def test_every_context_and_family_has_its_figures_and_picks(big):
    _, frame, html = big
    assert 'class="figure-failed"' not in html
    contexts = frame.groupby(["device", "dtype"]).ngroups
    heatmaps = section(html, "heatmap", "tradeoffs")
    assert heatmaps.count("<figure>") == contexts * frame["family"].nunique()
    assert_captions_once(html)
    for problem in frame.loc[frame["status"] == "ok", "problem"].unique():
        assert f'<td class="name">{problem}</td>' in section(html, "recommendations", "scaling"), problem


def test_long_tables_show_their_first_rows_and_say_how_many_there_are(big):
    _, frame, html = big
    rows = section(html, "rows")
    assert f"every pair, {ROWS:,} rows, the first {CAP:,} shown" in rows
    assert f"Showing {CAP:,} of {ROWS:,} rows: the first that ran" in rows
    shown = body_rows(rows)
    assert len(shown) == CAP
    ran = frame[frame["status"] != "unsupported"]
    if len(ran) >= CAP:  # unsupported pairs come last, so none is shown
        assert not any("status-unsupported" in tr for tr in shown)
    loud = noisy(frame)
    noise = section(html, "noise", "load")
    if len(loud) > CAP:
        assert f"Showing {CAP:,} of {len(loud):,} rows: the noisiest" in noise
        assert len(body_rows(noise.split("the noisiest")[1])) == CAP

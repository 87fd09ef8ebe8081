"""What the advisor shows: terminal text at most 100 columns wide, with what torch warns and
logs while it measures caught and summarised, not printed; and a page whose figure is a
dot-and-whisker per strategy on a log axis, whose table has human units and numbers that
never break across lines."""

from __future__ import annotations

import io
import logging
import os
import re
import warnings

import numpy as np
import pytest
import torch

import bench
from bench import advisor
from bench.render import advice as page

from . import test_report
from .conftest import ADVISE, ROOT, run_cli, run_in_terminal, screen_lines, wider
from .test_report import ARTIFACTS, open_page

browser = test_report.browser  # a fixture: the report tests' real headless Chromium

pytestmark = pytest.mark.xdist_group("advise-output")  # one worker: its advice and browser are module fixtures

# A user's module, written where the test runs `jacbench advise` (the current directory).
CHATTY = '''
import torch


def f(x):
    """Branches on a value: dynamo breaks its graph at .item(), vmap warns on tanh's backward."""
    scale = 2.0 if x.sum().item() > 0 else 3.0
    return torch.tanh(x) * scale
'''

TIME = re.compile(r"\d[\d.]* (ns|us|µs|ms|s)")
BYTES = re.compile(r"\d[\d.]* (B|KiB|MiB|GiB)")
ERROR = re.compile(r"\d\.\de[-+]\d\d|0")


def small_fn(x):
    """R^6 -> R^4, smooth."""
    w = torch.arange(24, dtype=x.dtype, device=x.device).reshape(4, 6) / 24
    return torch.tanh(w @ x) + x[:4] ** 2


@pytest.fixture(scope="module")
def advised(tmp_path_factory):
    """A real advice on a small function, with its page: ranked rows, an unsupported one."""
    out = tmp_path_factory.mktemp("advice") / "advice.html"
    advice = bench.advise(small_fn, torch.linspace(-1, 1, 6), settings=ADVISE, output=out,
                          strategies="jacrev,jacfwd,functional,structured,fd-forward")
    return advice, out


# --- the terminal ------------------------------------------------------------------------------


def test_cli_advise_fits_100_columns_and_summarises_what_torch_printed(tmp_path):
    (tmp_path / "chatty.py").write_text(CHATTY)
    out = tmp_path / "advice.html"
    said = "\n".join(screen_lines(run_in_terminal(
        "advise", "chatty:f", "--input-shape", "6", "-o", out, "--strategies",
        "jacrev,jacrev-compiled,grad-batched,structured", columns=100, cwd=tmp_path, timeout=300)))
    assert not wider(said.splitlines(), 100)
    for leak in ("UserWarning", "performance drop", "Graph break", "capture_scalar_outputs", "Traceback"):
        assert leak not in said, leak
    assert not [line for line in said.splitlines() if re.match(r"[DIWE]\d{4} ", line)]  # torch's log lines
    note = re.search(r"note: (\d+) warnings? \(\d+ kinds?\) and (\d+) log messages? \(torch\._dynamo[^)]*\) "
                     r"were caught while measuring; the HTML page lists them", " ".join(said.split()))
    assert note, said
    assert "rank" in said and re.search(r"^use (grad-batched|jacrev): ", said, re.M), said
    html = out.read_text()  # what was caught, in full
    assert "Graph break" in html and "batching rule for aten::tanh_backward" in html


def test_text_wraps_between_words_at_any_width(advised):
    advice, _ = advised
    for columns in (60, 100):
        text = page.text(advice, advisor._cells(advice), columns)
        assert max(map(len, text.splitlines())) <= columns, text
        flat = " ".join(text.split())
        assert " ".join(advice.recommendation.split()) in flat  # no word cut or dropped
        assert "rank" in text and "why it is not ranked" in text and "structured" in text
    reason = advice.row("structured").reason
    line = page.line("structured", "unsupported", reason, 70)
    assert max(map(len, line.splitlines())) <= 70 and " ".join(line.split()) == f"structured unsupported {reason}"


def test_caught_keeps_warnings_and_torch_logs_and_restores_the_handlers():
    log = logging.getLogger("torch._dynamo")
    console = logging.StreamHandler(io.StringIO())  # as torch prints: a plain stream handler
    log.addHandler(console)
    try:
        caught = []
        with advisor._caught(caught):
            warnings.warn("slow fallback", UserWarning)
            log.warning("Graph break from `Tensor.item()`")
            log.warning("Graph break from `Tensor.item()`")
        assert console.stream.getvalue() == ""
        assert {(c.kind, c.source, c.message, c.count) for c in caught} == {
            ("warning", "UserWarning", "slow fallback", 1),
            ("log", "torch._dynamo", "Graph break from `Tensor.item()`", 2)}
        assert console in log.handlers
        log.warning("after")
        assert console.stream.getvalue() == "after\n"
    finally:
        log.removeHandler(console)
    assert page.caught_note(caught) == ("1 warning (1 kind) and 2 log messages (torch._dynamo) were caught while "
                                        "measuring")
    assert page.caught_note([]) == ""


# --- the page ----------------------------------------------------------------------------------


def test_the_figure_is_dot_and_whisker_on_a_log_axis():
    rng = np.random.default_rng(0)
    timed = [("fast", list(1e-4 * (1 + rng.random(25)))), ("slow", list(3e-3 * (1 + rng.random(25))))]
    ax = page.draw(timed).axes[0]
    assert ax.get_xscale() == "log" and not ax.patches  # no bars
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fast", "slow"]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # the first (fastest) at the top
    drawn = {c.get_label(): c for c in ax.collections}
    for y, (_, samples) in enumerate(timed):
        p10, q1, med, q3 = np.percentile(samples, [10, 25, 50, 75])
        np.testing.assert_allclose(drawn["interquartile range"].get_segments()[y], [[q1, y], [q3, y]])
        np.testing.assert_allclose(drawn["median"].get_offsets()[y], [med, y])
        np.testing.assert_allclose(drawn["10th percentile"].get_offsets()[y], [p10, y])


def test_the_page_has_human_units_and_says_what_is_drawn(advised):
    advice, out = advised
    html = out.read_text()
    caption = re.search(r"<figcaption>(.*?)</figcaption>", html, re.S).group(1)
    for said in ("median", "interquartile range", "10th percentile", "log axis"):
        assert said in caption
    assert "bar" not in caption
    cells = re.findall(r'<td class="num" data-value="([^"]*)">([^<]*)</td>', html)
    assert cells
    shown = {float(value): text for value, text in cells}
    for r in advice.ok:
        assert TIME.fullmatch(shown[advisor._median_iqr(r)[0]]) and TIME.fullmatch(shown[r.first_call_s])
        assert ERROR.fullmatch(shown[r.error])
        if "dropped" in r.notes:  # timed no more after its brief visit, memory included (NOTE: [Racing])
            assert r.peak_bytes is None
        else:
            assert BYTES.fullmatch(shown[r.peak_bytes])
    assert advice.best and advice.row(advice.best).peak_bytes
    assert "white-space: nowrap" in html


@pytest.mark.browser
def test_the_page_in_chromium_keeps_every_number_on_one_line(browser, advised):
    _, out = advised
    view, problems = open_page(browser, out)
    view.set_viewport_size({"width": 900, "height": 900})
    lines = view.evaluate("""Array.from(document.querySelectorAll('table.advice td.num, table.advice .strategy'))
        .filter(td => td.textContent.trim())
        .map(td => { const r = document.createRange(); r.selectNodeContents(td);
                     const tops = Array.from(r.getClientRects()).map(b => Math.round(b.top));
                     return [td.textContent, new Set(tops).size]; })""")
    assert lines and all(n == 1 for _, n in lines), lines
    assert view.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
    assert view.evaluate("document.querySelector('figure img').naturalWidth") > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "advice.png"
    view.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot of the advise page: {shot}")
    assert problems == []


def test_a_module_elsewhere_is_named_with_path(tmp_path):
    """The manual's two ways (docs/advise.md) to name your module: --path DIR, or PYTHONPATH;
    without either, one line."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "elsewhere.py").write_text("import torch\n\ndef f(x):\n    return torch.sin(x) * x\n")
    argv = ("advise", "elsewhere:f", "--input-shape", "3", "--strategies", "jacrev,jacfwd")
    lost = run_cli(*argv, cwd=tmp_path)
    assert lost.returncode == 2 and lost.stderr.strip().splitlines() == [
        "jacbench: error: cannot import 'elsewhere': no such module in the current directory, a --path directory "
        "or PYTHONPATH"]
    for way in ({"args": ("--path", "lib")}, {"env": {"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path / 'lib'}"}}):
        proc = run_cli(*argv, *way.get("args", ()), cwd=tmp_path, env=way.get("env", {}), timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert re.search(r"^use (jacrev|jacfwd): ", proc.stdout, re.M), proc.stdout
    assert run_cli(*argv, "--path", "nowhere", cwd=tmp_path).stderr.strip() == (
        "jacbench: error: --path nowhere: no such directory")

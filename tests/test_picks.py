"""The numbers behind the recommendations (NOTE: [Recommendation rules] in bench.analysis.picks) and
the plain-text summary of a real sweep."""

import math
import random
import re
import statistics

import pandas as pd
import pytest

from tests.conftest import run_cli

from bench.analysis import formats, results
from bench.analysis.picks import approximate, best_per_problem, family_picks
from bench.render import summary

CTX = {"machine": "box", "torch": "2.13.0", "device": "cpu", "dtype": "float32"}


def row(problem, strategy, status="ok", median=None, family="fam", n=8, m=8, error=1e-7, ci=0.0, **kw):
    timed = status == "ok"
    return {**CTX, "family": family, "problem": problem, "strategy": strategy, "n": n, "m": m,
            "status": status, "reason": "" if timed else kw.pop("reason", "it broke"),
            "median": median if timed else math.nan, "iqr": 0.1 * median if timed else math.nan,
            "ci_half": ci if timed else math.nan, "rel_iqr": kw.pop("rel_iqr", 0.05) if timed else math.nan,
            "peak_bytes": 1000 if timed else math.nan, "mem_ratio": 4.0 if timed else math.nan,
            "error": error, **kw}


def frame(*rows):
    return pd.DataFrame(list(rows))


def test_fastest_exact_and_fastest_overall_are_both_reported():
    f = frame(row("p", "functional", median=10.0), row("p", "manual-backward", median=8.0),
              row("p", "jacrev", median=2.0), row("p", "fd-forward", median=1.0, error=1e-2))
    best = best_per_problem(f).iloc[0]
    assert best["strategy"] == "fd-forward" and bool(best["approximate"])
    assert best["exact_strategy"] == "jacrev"
    assert best["exact_vs functional"] == pytest.approx(5.0)
    assert best["exact_vs manual-backward"] == pytest.approx(4.0)
    assert best["vs functional"] == pytest.approx(10.0)


def test_a_wrong_pair_is_never_recommended_even_with_a_time():
    # a malformed file could carry a median on a wrong row: it still must not win
    f = frame(row("p", "jacrev", median=2.0), row("p", "jacfwd", median=3.0),
              {**row("p", "functional", status="wrong", error=1.0), "median": 0.5})
    best = best_per_problem(f).iloc[0]
    assert best["exact_strategy"] == "jacrev" and best["strategy"] == "jacrev"
    picks = family_picks(f).iloc[0]
    assert picks["exact_strategy"] == "jacrev"


def test_a_strategy_wrong_anywhere_in_a_family_is_not_its_pick():
    f = frame(row("a", "jacfwd", median=1.0), row("a", "jacrev", median=1.5),
              row("b", "jacfwd", status="wrong", error=1.0), row("b", "jacrev", median=1.0))
    picks = family_picks(f).iloc[0]
    assert picks["exact_strategy"] == "jacrev"
    assert picks["exact_covered"] == 2 and picks["exact_of"] == 2


def test_the_family_pick_prefers_coverage_then_typical_slowdown():
    f = frame(row("a", "fast-but-partial", median=1.0), row("a", "steady", median=1.2),
              row("b", "fast-but-partial", status="error"), row("b", "steady", median=1.0),
              row("c", "steady", median=2.0), row("c", "slow", median=4.0),
              row("a", "slow", median=3.0), row("b", "slow", median=3.0))
    picks = family_picks(f).iloc[0]
    assert picks["exact_strategy"] == "steady"
    assert picks["exact_geo_slowdown"] == pytest.approx(1.2 ** (1 / 3))
    assert picks["exact_wins"] == 2


def _samples(median, spread, n=30, seed=0):
    """Rounds scattered uniformly around a median, from a seeded generator: a fake clock."""
    rng = random.Random(seed)
    return [median * (1 + spread * (rng.random() - 0.5)) for _ in range(n)]


def test_a_runner_up_within_the_noise_is_a_tie_and_a_tie_goes_to_the_exact_then_the_smaller():
    jacrev, batched = _samples(1.00, 0.2, seed=1), _samples(1.02, 0.2, seed=2)
    f = frame(row("p", "jacrev", median=statistics.median(jacrev), samples=jacrev, peak_bytes=4000),
              row("p", "grad-batched", median=statistics.median(batched), samples=batched, peak_bytes=1000),
              row("p", "jacfwd", median=2.0, samples=_samples(2.0, 0.2, seed=3)))
    best = best_per_problem(f).iloc[0]
    assert best["exact_strategy"] == "grad-batched" and best["exact_tied_with"] == "jacrev"
    assert "tied with jacrev within the noise" in best["exact_tie_break"]
    assert best["exact_margin_low"] < 1 < best["exact_margin_high"]
    assert re.search(r"grad-batched +[\d.]+ \w+ +tie with jacrev", summary.render(f))


def test_a_clear_pick_states_its_margin_and_its_speedups_with_intervals():
    fast, slow = _samples(1.0, 0.1, seed=4), _samples(3.0, 0.1, seed=5)
    f = frame(row("p", "jacrev", median=statistics.median(fast), samples=fast),
              row("p", "functional", median=statistics.median(slow), samples=slow))
    best = best_per_problem(f).iloc[0]
    assert best["exact_strategy"] == "jacrev" and not best["exact_tied_with"] and not best["exact_tie_break"]
    assert best["exact_runner_up"] == "functional"
    assert 2.7 < best["exact_margin_low"] < best["exact_margin"] < best["exact_margin_high"] < 3.3
    assert best["exact_vs functional"] == best["exact_margin"]
    text = summary.render(f)
    assert f"{formats.fmt_interval(best['exact_margin'], best['exact_margin_low'], best['exact_margin_high'])} vs functional" in text


def test_a_family_pick_resting_on_one_problem_says_so():
    f = frame(row("p", "jacrev", median=1.0), row("p", "functional", median=2.0))
    assert "1/1 (one problem)" in summary.render(f)


def test_finite_differences_are_told_by_mode_or_by_name():
    f = frame(row("p", "fd-central", median=1.0), row("p", "colored-fd", median=1.0),
              row("p", "jacfwd", median=1.0), row("p", "coloring-forward", median=1.0))
    assert list(approximate(f)) == [True, True, False, False]
    f["mode"] = ["fd", "fd", "forward", "fd"]  # a row's own mode wins over its name
    assert list(approximate(f)) == [True, True, False, True]


def test_random_estimates_are_approximate_and_never_the_exact_pick():
    f = frame(row("p", "penalty-proj1", median=1.0, error=1.3), row("p", "penalty-hutchinson8", median=2.0, error=0.4),
              row("p", "jacrev", median=3.0, error=1e-7))
    f["mode"] = ["reverse", "estimate", "reverse"]  # files of an earlier version called the estimators reverse
    assert list(approximate(f)) == [True, True, False]
    assert best_per_problem(f).iloc[0]["exact_strategy"] == "jacrev"


def test_no_exact_strategy_is_said_plainly():
    f = frame(row("g", "jacrev", status="wrong", error=1.0), row("g", "fd-forward-loop", median=1.0, error=1e-3))
    text = " ".join(summary.render(f).split())  # as read, whatever the lines' width
    assert "no exact one" in text and "fd-forward-loop (no exact one is correct; error 1.0e-03)" in text
    assert "jacrev: wrong 1" in text


def test_formatting():
    assert formats.fmt_time(1.5e-3) == "1.5 ms" and formats.fmt_time(float("nan")) == "-"
    assert formats.fmt_bytes(3 * 2**20) == "3 MiB"
    assert formats.fmt_time(999.96e-6) == "1 ms" and formats.fmt_time(999.4e-6) == "999 us"  # no "1e+03 us"
    assert formats.fmt_time(0.99996) == "1 s" and formats.fmt_time(3e-10) == "0.3 ns"
    assert formats.fmt_bytes(1023.9 * 2**10) == "1 MiB" and formats.fmt_bytes(1000 * 2**10) == "0.977 MiB"
    assert formats.fmt_bytes(999 * 2**10) == "999 KiB" and formats.fmt_bytes(999) == "999 B"
    assert formats.fmt_ratio(12.4) == "12x" and formats.fmt_ratio(1.234) == "1.2x"
    assert formats.fmt_ratio(2500) == "2,500x"
    assert formats.fmt_error(0) == "0" and formats.fmt_error(1.23e-5) == "1.2e-05"


def test_summary_of_a_real_sweep(tiny_results):
    frame_ = results.load([tiny_results])
    text = summary.render(frame_, loads=[results.read(tiny_results)["jacbench"]["load"]])
    assert "best (exact)" in text and "margin over the next" in text and "functional" in text
    assert max(map(len, text.splitlines())) <= 100  # a terminal's width, not 194 columns
    broken = frame_[frame_["problem"] == "graph-break-powers"]  # the tutorial's broken function: only
    assert set(broken.loc[~approximate(broken), "status"]) <= {"wrong", "error", "unsupported"}  # FD is right
    if (broken["status"] == "ok").any():  # not where a busy machine left its one right pair disturbed
        assert "graph-break-powers" in text and "no exact one" in text
    best = best_per_problem(frame_)
    chosen = frame_.merge(best[["problem", "strategy"]], on=["problem", "strategy"])
    assert set(chosen["status"]) == {"ok"}
    proc = run_cli("summary", tiny_results, check=True)
    assert proc.stdout.strip() == text.strip()

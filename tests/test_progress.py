"""What a running sweep shows: the live bar on a real pseudo-terminal, a line per pair in a
file, the closing account, and an estimate of the time left that learns (NOTE: [ETA])."""

import io
import re

import pytest

from tests.conftest import run_cli, run_in_terminal, screen_lines, wider

from bench.analysis.schema import Pair
from bench.sweep.progress import Estimate, Progress, account

PLUGIN = "tests.plugins.misbehaving"
SWEEP = ("run", "--profile", "quick", "--device", "cpu", "--cases", "seed-newton", "--strategies",
         "jacrev,jacfwd,test-crash", "--plugin", PLUGIN)


def _pair(problem: str, strategy: str) -> Pair:
    return Pair("cpu", "float32", problem, strategy)


def _rows(*specs) -> dict:
    """Planned identities: (problem, strategy, family, kind, flops)."""
    return {_pair(p, s).id: {"strategy": s, "family": f, "kind": k, "problem_flops": flops}
            for p, s, f, k, flops in specs}


def _result(status: str = "ok", seconds: float | None = None) -> dict:
    info = {"status": status, "reason": "" if status == "ok" else f"{status} for a reason"}
    return {"extra_info": info if seconds is None else {**info, "seconds": seconds}}


def test_the_estimate_takes_the_nearest_size_of_the_same_strategy_in_the_same_family_then_kind():
    rows = _rows(("mlp-small", "jacrev", "mlp", "vector", 1e3), ("mlp-big", "jacrev", "mlp", "vector", 1e6),
                 ("mlp-mid", "jacrev", "mlp", "vector", 2e5), ("cnn", "jacrev", "cnn", "vector", 3e3),
                 ("batch", "jacrev", "batch", "batched", 1e6), ("mlp-small", "vmap-loop", "mlp", "vector", 1e3),
                 ("other", "jacfwd", "other", "batched", 1e3))
    est = Estimate(rows)
    assert est.pair(_pair("mlp-mid", "jacrev")) is None  # nothing known yet
    est.learn(_pair("mlp-small", "jacrev").id, 1.0)
    est.learn(_pair("mlp-big", "jacrev").id, 10.0)
    est.learn(_pair("mlp-small", "vmap-loop").id, 0.001)  # an unsupported pair: nearly free
    assert est.pair(_pair("mlp-mid", "jacrev")) == 10.0  # 2e5 is nearer 1e6 than 1e3 in log size
    assert est.pair(_pair("cnn", "jacrev")) == 1.0  # no cnn yet: the same kind, nearest size
    assert est.pair(_pair("batch", "jacrev")) == 10.0  # no batched one: any family, nearest size
    assert est.pair(_pair("other", "jacfwd")) == 1.0  # a strategy not seen: the median pair
    est.learn(_pair("mlp-mid", "jacrev").id, 3.0)
    assert est.pair(_pair("mlp-mid", "jacrev")) == 3.0  # timed again: as long as the first time
    est.learn("x", float("nan"))
    est.learn("y", -1)
    assert "x" not in est.took and "y" not in est.took


def test_cheap_pairs_do_not_promise_that_the_large_ones_to_come_are_cheap():
    """The fault the ETA had: 351 quick unsupported pairs made it say 22 s for 4 minutes of
    work. Per strategy and size, the pending big pair costs what the big one of its strategy did."""
    now = [0.0]
    specs = [(f"p{i}", "cheap", "f", "vector", 10.0) for i in range(8)] + [
        ("small", "jacrev", "f", "vector", 10.0), ("big", "jacrev", "g", "vector", 1e6),
        ("big2", "jacrev", "g", "vector", 1e6)]
    pairs = [_pair(p, s) for p, s, *_ in specs]
    history = {pairs[-2].id: _result(seconds=60.0)}  # an earlier piece timed the big one
    progress = Progress(pairs, [pairs[-2].id], history=history, rows=_rows(*specs), stream=io.StringIO(),
                        clock=lambda: now[0], live=False)
    for i, pair in enumerate(pairs[:8]):
        now[0] += 0.1
        progress.finished(pair, {**_result("unsupported", seconds=0.1)["extra_info"]})
    now[0] += 1.0
    progress.finished(pairs[8], _result(seconds=1.0)["extra_info"])
    assert progress.eta() == pytest.approx(60.0 * 1.8 / 1.8)  # wall 1.8 s for 1.8 s of pair work
    now[0] += 1.8  # wall time that no pair's work explains: start-up, polling
    assert progress.eta() == pytest.approx(60.0 * 3.6 / 1.8)


def test_a_run_whose_pairs_recorded_no_time_estimates_at_the_pace_of_the_whole_run():
    now = [0.0]
    pairs = [_pair(f"p{i}", "jacrev") for i in range(10)]
    done = {p.id: _result() for p in pairs[:4]}
    progress = Progress(pairs, done, history=done, pace=(40.0, 4), stream=io.StringIO(), clock=lambda: now[0],
                        live=False)
    assert progress.eta() == 60.0  # 4 pairs in 40 s: 6 left at 10 s each
    now[0] = 100.0  # the first pair of this piece is slow
    progress.finished(pairs[4], {"status": "ok"})
    assert progress.eta() == 140.0  # 5 pairs in 140 s, not 5 left at 100 s each
    unknown = Progress(pairs, done, history=done, stream=io.StringIO(), clock=lambda: now[0], live=False)
    assert unknown.eta() is None  # its pieces were killed outright


@pytest.mark.slow
def test_on_a_terminal_one_live_bar_fits_the_width_and_the_account_groups_the_failures(tmp_path):
    out = run_in_terminal(*SWEEP, "--results-dir", tmp_path, columns=80)
    lines = screen_lines(out)
    assert not wider(lines, 80)
    assert not any(line.startswith("[") for line in lines)  # no line per pair
    bars = [line for line in lines if line.startswith("pairs ") and "elapsed, ETA" in line]
    assert bars and "3/3" in bars[-1] and "elapsed, ETA" in bars[-1]
    assert any(line.startswith("running cpu float32 seed-newton") for line in lines)  # the pair in flight
    text = "\n".join(lines)
    said = " ".join(text.split())
    # an outcome to act on, printed above the bar as it happens, wrapped between words
    assert "error: cpu float32 seed-newton test-crash: the sweep process was killed by SIGSEGV" in said
    assert "3 of 3 pairs done in" in text and "not timed, by reason:" in text
    account = text[text.index("not timed, by reason:"):]
    assert re.search(r"^ +1 +error +the sweep process was killed by SIGSEGV", account, re.M), account


@pytest.mark.slow
def test_verbose_on_a_terminal_is_a_line_per_pair_that_wraps_its_reason_between_words(tmp_path):
    out = run_in_terminal(*SWEEP, "--verbose", "--results-dir", tmp_path, columns=60)
    lines = screen_lines(out)
    assert not wider(lines, 60)
    heads = [line for line in lines if line.startswith("[")]
    assert [h.split("]")[0] for h in heads] == ["[1/3", "[2/3", "[3/3"]
    crashed = lines.index(next(h for h in heads if "test-crash" in h))
    following = []
    for line in lines[crashed + 1:]:
        if line and not line.startswith("    "):
            break
        following.append(line)
    assert following and all(line.startswith("    ") for line in following if line)  # indented under its pair
    said = " ".join(" ".join(following).split())
    assert "the sweep process was killed by SIGSEGV during this pair" in said  # whole words, in order, none cut


@pytest.mark.slow
def test_into_a_file_a_line_per_pair_and_the_account_in_plain_text(tmp_path):
    proc = run_cli(*SWEEP, "--results-dir", tmp_path, check=True)
    assert "\x1b[" not in proc.stderr  # no escape sequences in a log
    heads = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    assert [h.split("]")[0] for h in heads] == ["[1/3", "[2/3", "[3/3"]
    assert "SIGSEGV" in next(h for h in heads if "test-crash" in h)  # the whole reason, on its line
    assert "3 of 3 pairs done in" in proc.stderr and "not timed, by reason:" in proc.stderr


def test_the_account_lists_failures_by_reason_and_counts_the_unsupported_in_one_line():
    results = {f"u{i}": _result("unsupported") for i in range(40)}
    results.update({f"e{i}": {"extra_info": {"status": "error", "reason": "it segfaulted"}} for i in range(3)})
    results.update({"w": {"extra_info": {"status": "wrong", "reason": "off by 1e-2"}}, "o": _result()})
    out = io.StringIO()
    account(results, 50, 75.0, out)
    text = out.getvalue()
    assert text.startswith("45 of 50 pairs done in 0:01:15:")
    assert "40 unsupported: the strategy cannot run" in text
    reasons = text[text.index("not timed, by reason:"):].splitlines()[3:]
    assert [line.split()[:2] for line in reasons] == [["3", "error"], ["1", "wrong"]]  # most common first
    assert "unsupported for a reason" not in text  # not one line per unsupported reason
    assert "time:" not in text  # rows that do not say where their time went (an older file): no line


def test_the_account_says_where_the_time_went_with_the_rest_outside_the_pairs():
    spent = [{"gate": 2.0, "rounds": 30.0, "probes": 8.0}, {"gate": 1.0, "rounds": 15.0, "probes": 4.0}]
    results = {f"p{i}": {"extra_info": {"status": "ok", "spent": s}} for i, s in enumerate(spent)}
    out = io.StringIO()
    account(results, 2, 100.0, out)
    said = " ".join(out.getvalue().split())
    assert ("time: timed rounds 0:00:45 (45%), probes of work and memory 0:00:12 (12%), gates 0:00:03 (3%); "
            "outside the pairs 0:00:40 (40%)") in said, said


@pytest.mark.slow
def test_a_later_pass_is_counted_under_its_own_number(tmp_path):
    """Two visits time a fast pair again in a second pass (NOTE: [Visits]); the lines of that
    pass carry its number, the one its announcement gives."""
    proc = run_cli("run", "--profile", "standard", "--device", "cpu", "--cases", "seed-newton", "--strategies",
                   "jacrev", "--results-dir", tmp_path, "--timing", "visits=2,warmup=0,max_time=0.02", check=True)
    said = proc.stderr.splitlines()
    announced = [int(re.match(r"pass (\d+) \(of at most", line).group(1)) for line in said
                 if re.match(r"pass \d+ \(of at most", line)]
    counted = [int(re.match(r"pass (\d+) \[", line).group(1)) for line in said if re.match(r"pass \d+ \[", line)]
    assert announced and announced[0] == 2 and counted and counted == sorted(counted)
    assert set(counted) == set(announced)

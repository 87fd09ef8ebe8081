"""A real disturbance halfway through a real sweep: CPU-burning processes start when half the
pairs are done and stop a few seconds later. The rows timed meanwhile are flagged and timed
again, the load sampled across the run shows the burn, and no pick changes. Flags, load and
picks are asserted; never a time."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, burning, run_cli

from bench.analysis import load, results, visits
from bench.analysis.journal import Journal
from bench.analysis.picks import best_per_problem
from bench.render import summary

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # it burns the CPUs (NOTE: [Tests in parallel])

# picks far apart (a vectorized Jacobian against loops over 128 outputs), so that "no pick
# changed" is a fact of the strategies and not luck of the timings
# (the quick profile's timing, with its passes that time disturbed pairs again)
SWEEP = ["run", "--profile", "quick", "--device", "cpu", "--threads", "2", "--timing", "retimes=2",
         "--cases", "mlp-in128-out128-w64-d1,mlp-in128-out128-w64-d2,mlp-in128-out128-w256-d1,mlp-in128-out128-w256-d2",
         "--strategies", "jacrev,grad-loop,manual-backward"]


def _burned_run(tmp_path, seconds: float = 8.0) -> tuple:
    """Run the sweep, burning two CPUs for ``seconds`` from the moment half its pairs are done:
    long enough that a problem's pairs, timed together, are timed wholly inside the burn."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JACBENCH_MACHINE": "testbox"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", *SWEEP, "--results-dir", str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    window = None
    try:
        while proc.poll() is None and window is None:
            time.sleep(0.1)
            journals = list((tmp_path / ".partial").glob("*.journal.jsonl"))
            journal = Journal.read(journals[0]) if journals else None
            if journal and len(journal.results) >= len(journal.pairs) // 2:
                begin = time.time()
                with burning(seconds=seconds + 30):
                    time.sleep(seconds)
                window = (begin, time.time())
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert window is not None, "the sweep ended before half its pairs were done"
    (path,) = tmp_path.glob("*.json")
    return path, window, err


def _first_timing(row) -> dict | None:
    """A pair's first timing: the earliest of its visits, kept or dropped as disturbed."""
    tries = [*row["retimed"], *(row["visits"] if isinstance(row["visits"], list) else [])]
    return min(tries, key=lambda v: v["started"]) if tries else None


def _picks(path) -> dict:
    best = best_per_problem(results.load([path]))
    return dict(zip(best["problem"], best["exact_strategy"]))


def test_a_burn_halfway_through_a_sweep_is_flagged_timed_again_seen_in_the_load_and_changes_no_pick(tmp_path):
    quiet = tmp_path / "quiet"
    run_cli(*SWEEP, "--results-dir", quiet, check=True)
    (quiet_file,) = quiet.glob("*.json")
    path, (begin, end), err = _burned_run(tmp_path / "burned")
    frame = results.load([path])

    # the pairs first timed wholly inside the burn were flagged, and timed again after it
    first = [_first_timing(r) for _, r in frame.iterrows()]
    within = frame[[f is not None and begin <= f["started"] and f["started"] + f["seconds"] <= end for f in first]]
    retimed = frame[frame["retimed"].map(bool)]
    assert len(within), "no pair was timed wholly inside the burn"
    assert "whose timing other work disturbed" in err, err[-2000:]
    for _, row in within.iterrows():
        assert row["retimed"], f"{row['problem']} {row['strategy']} ran during the burn and was not timed again"
    for _, row in retimed.iterrows():  # its rounds waited for a CPU, or the load says the machine was busy
        assert visits.bad(row["retimed"][0]), row["retimed"]

    # the load sampled across the run saw the burn
    doc = json.loads(path.read_text())
    samples = doc["jacbench"]["load"]
    assert any(t >= begin and other >= load.BUSY for t, other, _ in samples if t <= end + 2), samples
    assert "busy for" in summary.render(frame, loads=[samples])

    # no pick changed, wherever neither run kept a row out as disturbed
    quiet_picks, burned_picks = _picks(quiet_file), _picks(path)
    kept_out = set(frame.loc[frame["status"] == "disturbed", "problem"])
    kept_out |= set(results.load([quiet_file]).query("status == 'disturbed'")["problem"])
    compared = [p for p in quiet_picks if p not in kept_out]  # none, where other work kept every row out
    assert {p: burned_picks.get(p) for p in compared} == {p: quiet_picks[p] for p in compared}

    # and the report draws the load along the run's timeline
    report = tmp_path / "report.html"
    run_cli("report", path, "-o", report, check=True)
    page = report.read_text()
    assert "Load of the machine across the run" in page and "The machine was busy for" in page

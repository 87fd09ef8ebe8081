"""Published claims, re-measured (NOTE: [Claims] in bench.analysis.claims): the registered
claims name real strategies and sources, and the table's verdicts on frames with known answers."""

import math

import pandas as pd
import pytest
import torch

import cases
from bench import strategies
from bench.analysis.claims import COLUMNS, table
from bench.analysis.formats import missing
from bench.measure.pair import measure_problem
from bench.measure.timing import Policy
from bench.measure.pair import Settings
from cases.claims import claim

CPU = {"machine": "box", "torch": "2.13.0", "device": "cpu", "dtype": "float32"}
CUDA = {**CPU, "machine": "gpu-box", "device": "cuda"}
PUBLISHED = claim("jacfwd", "jacrev", 4.0, "jacfwd 1 ms against jacrev 4 ms", "a tutorial", "https://example.org/t",
                  "CPU", "cpu")
CLAIMS = cases.select(tags="claim")


def row(strategy, samples, platform=CPU, status="ok", reason="", problem="claim-p", published=PUBLISHED):
    """A result row with raw samples; the median is theirs."""
    timed = status == "ok"
    return {**platform, "problem": problem, "strategy": strategy, "status": status, "reason": reason,
            "samples": list(samples) if timed else None,
            "median": float(pd.Series(samples).median()) if timed else math.nan, "claim": published}


def rounds(median, n=20, spread=0.01):
    """n samples around ``median``, evenly spread by +-spread of it."""
    return [median * (1 + spread * (2 * i / (n - 1) - 1)) for i in range(n)]


def verdict(*rows):
    (out,) = table(pd.DataFrame(list(rows))).to_dict("records")
    return out


def test_a_claim_that_holds_in_direction_and_size():
    out = verdict(row("jacfwd", rounds(1.0)), row("jacrev", rounds(5.0)))
    assert out["measured"] == pytest.approx(5.0) and out["measured_low"] < 5.0 < out["measured_high"]
    assert (out["direction"], out["size"], out["verdict"]) == ("holds", "holds", "holds")
    assert out["same_hardware"] and out["published"] == 4.0 and out["url"] == "https://example.org/t"


def test_a_ratio_more_than_twice_off_keeps_its_direction_but_not_its_size():
    smaller = verdict(row("jacfwd", rounds(1.0)), row("jacrev", rounds(1.5)))
    larger = verdict(row("jacfwd", rounds(1.0)), row("jacrev", rounds(9.0)))
    assert (smaller["direction"], smaller["size"]) == ("holds", "smaller")
    assert (larger["direction"], larger["size"]) == ("holds", "larger")
    assert larger["verdict"] == "direction holds, size larger than published"


def test_an_interval_holding_1_is_tied_and_one_below_it_is_reversed():
    tied = verdict(row("jacfwd", rounds(1.0, spread=0.3)), row("jacrev", rounds(1.02, spread=0.3)))
    reversed_ = verdict(row("jacfwd", rounds(3.0)), row("jacrev", rounds(1.0)))
    assert tied["measured_low"] <= 1 <= tied["measured_high"] and tied["direction"] == "tied"
    assert reversed_["direction"] == "reversed" and reversed_["verdict"] == "direction reversed"


def test_a_claim_published_below_1_holds_below_1():
    below = claim("jacfwd", "jacrev", 0.5, "jacrev twice as fast", "s", "https://example.org", "CPU", "cpu")
    out = verdict(row("jacfwd", rounds(2.0), published=below), row("jacrev", rounds(1.0), published=below))
    assert (out["direction"], out["size"]) == ("holds", "holds")


def test_a_pair_that_is_not_ok_leaves_the_claim_not_measured():
    out = verdict(row("jacfwd", [], status="timeout", reason="over 120 s"), row("jacrev", rounds(1.0)))
    assert out["verdict"] == "not measured: jacfwd: timeout (over 120 s)"
    assert math.isnan(out["measured"]) and missing(out["direction"])
    alone = verdict(row("jacrev", rounds(1.0)))
    assert alone["verdict"] == "not measured: jacfwd: no row"


def test_a_cuda_claim_measured_only_on_a_cpu_is_shown_and_awaits_a_cuda_sweep():
    gpu = {**PUBLISHED, "device": "cuda"}
    cpu, waiting = table(pd.DataFrame([row("jacfwd", rounds(1.0), published=gpu),
                                       row("jacrev", rounds(5.0), published=gpu)])).to_dict("records")
    assert cpu["device"] == "cpu" and cpu["same_hardware"] is False and cpu["direction"] == "holds"
    assert waiting["device"] == "cuda" and waiting["verdict"] == "awaits a CUDA sweep"
    assert missing(waiting["machine"]) and math.isnan(waiting["measured"])
    both = table(pd.DataFrame([row(s, rounds(t), platform=p, published=gpu)
                               for p in (CPU, CUDA) for s, t in (("jacfwd", 1.0), ("jacrev", 5.0))]))
    assert list(both["device"]) == ["cpu", "cuda"] and list(both["same_hardware"]) == [False, True]


def test_one_row_per_claim_and_platform_and_none_for_problems_without_a_claim():
    f = pd.DataFrame([row(s, rounds(t), platform=p) for p in (CPU, {**CPU, "dtype": "float64"})
                      for s, t in (("jacfwd", 1.0), ("jacrev", 5.0))]
                     + [row("jacrev", rounds(1.0), problem="mlp-x", published=None)])
    out = table(f)
    assert list(out.columns) == COLUMNS and list(out["dtype"]) == ["float32", "float64"]
    assert set(out["problem"]) == {"claim-p"}
    assert table(f[f["problem"] == "mlp-x"]).empty


@pytest.mark.parametrize("problem", CLAIMS, ids=lambda p: p.name)
def test_every_claim_compares_two_registered_strategies_that_solve_its_problem(problem):
    c = problem.claim
    assert set(c) == {"fast", "slow", "ratio", "figure", "source", "url", "hardware", "device"}
    assert c["url"].startswith("https://") and c["figure"] and c["source"] and c["hardware"]
    assert c["device"] in ("cpu", "cuda") and c["ratio"] > 0 and c["fast"] != c["slow"]
    assert problem.family == "claims" and "claim" in problem.tags and problem.description
    for name in (c["fast"], c["slow"]):
        assert problem.kind in strategies.get(name).kinds, (name, problem.kind)


def test_there_are_five_claims_at_least_and_every_claim_problem_carries_one():
    assert len(CLAIMS) >= 5
    assert all(p.claim is None for p in cases.problems() if "claim" not in p.tags)


def test_a_claim_measured_for_real_feeds_the_table():
    problem = cases.get("claim-tutorial-vmap-in16-out16")
    settings = Settings(profile="quick", policy=Policy(warmup=1, min_rounds=3, max_time=0.05))
    measured = [measure_problem(problem, strategies.get(s), "cpu", "float32", settings)
                for s in (problem.claim["fast"], problem.claim["slow"])]
    assert all(r.status == "ok" for r in measured), [r.reason for r in measured]
    f = pd.DataFrame([{**r.info(), "samples": list(r.samples), "median": float(pd.Series(r.samples).median()),
                       "machine": "here", "torch": torch.__version__} for r in measured])
    (out,) = table(f).to_dict("records")
    assert out["problem"] == problem.name and out["same_hardware"] is True
    assert out["published"] == problem.claim["ratio"]
    assert 0 < out["measured_low"] <= out["measured"] <= out["measured_high"]
    assert out["direction"] in ("holds", "tied", "reversed") and out["size"] in ("holds", "smaller", "larger")

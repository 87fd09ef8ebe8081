"""The picking rules scored by regret (NOTE: [Regret]), the predictor held out by family
(NOTE: [Predictor]), ``bench.jacobian(strategy="predict")`` and ``jacbench rules``."""

import json
import math

import pandas as pd
import pytest
import torch

import bench
from tests.conftest import run_cli

from bench.analysis import results, rules

CTX = {"machine": "box", "torch": "2.13.0", "device": "cpu", "dtype": "float32"}
MODES = {"jacfwd": "forward", "vmap-jacfwd": "forward", "fd-forward": "fd"}


def row(problem, strategy, median=None, status="ok", family="fam", kind="vector", n=10, m=10, t_f=1e-4, visits=None):
    return {**CTX, "problem": problem, "strategy": strategy, "mode": MODES.get(strategy, "reverse"), "family": family,
            "kind": kind, "n": n, "m": m, "t_f": t_f, "status": status,
            "median": median if status == "ok" else math.nan,
            "visits": [{"median": v} for v in visits] if visits else [{"median": median}]}


def frame(*rows):
    return pd.DataFrame(list(rows))


def scored(f):
    s = rules.summary(rules.regrets(f)).set_index("rule")
    return s


def test_regret_of_each_rule_on_a_hand_made_frame():
    f = frame(
        # n <= m: forward mode is the fastest exact; finite differences faster still are not a pick
        row("wide", "jacfwd", 1.0, n=10, m=100), row("wide", "jacrev", 3.0, n=10, m=100),
        row("wide", "functional", 9.0, n=10, m=100), row("wide", "fd-forward", 0.1, n=10, m=100),
        # n >> m: reverse mode; functional raised
        row("tall", "jacrev", 2.0, n=1000, m=10), row("tall", "jacfwd", 8.0, n=1000, m=10),
        row("tall", "functional", status="error", n=1000, m=10),
        # per-sample: functional has no such form
        row("batch", "vmap-jacrev", 1.0, kind="batched", n=200),
        row("batch", "vmap-jacfwd", 2.0, kind="batched", n=200),
    )
    s = scored(f)
    jacrev = s.loc["always jacrev"]
    assert jacrev["solved"] == 3 and jacrev["geomean"] == pytest.approx(3 ** (1 / 3))
    assert jacrev["worst"] == pytest.approx(3.0) and jacrev["worst_at"] == "wide (jacrev)"
    functional = s.loc["always functional"]
    assert (functional["solved"], functional["failed"], functional["unscored"]) == (1, 1, 1)
    assert functional["geomean"] == pytest.approx(9.0) and functional["failures"] == "error 1x"
    assert "tall (functional: error)" in functional["failed_at"]
    for rule in ("size ratio", "lineax"):
        assert s.loc[rule, "geomean"] == pytest.approx(1.0) and s.loc[rule, "worst"] == pytest.approx(1.0)
    # one visit per pair: the advisor is not scored, rather than scored on what it picked from
    assert rules.ADVISOR not in s.index


def test_the_lineax_rule_and_the_size_ratio_differ_where_n_is_small():
    f = frame(row("p", "jacfwd", 4.0, n=64, m=16), row("p", "jacrev", 1.0, n=64, m=16))
    s = scored(f)
    assert s.loc["size ratio", "worst"] == pytest.approx(1.0)  # n > m: jacrev
    assert s.loc["lineax", "worst"] == pytest.approx(4.0)  # n < 100: jacfwd


def test_the_advisor_picks_on_the_first_visit_and_is_scored_on_the_later_one():
    f = frame(row("p", "jacrev", 1.5, visits=[1.0, 2.0]), row("p", "jacfwd", 1.35, visits=[1.5, 1.2]))
    scores = rules.regrets(f)
    advisor = scores[scores["rule"] == rules.ADVISOR].iloc[0]
    assert advisor["pick"] == "jacrev" and advisor["regret"] == pytest.approx(2.0 / 1.2)
    jacrev = scores[scores["rule"] == "always jacrev"].iloc[0]
    assert jacrev["regret"] == pytest.approx(2.0 / 1.2)  # every rule is scored on the later visit


def two_families(a_wins: str, b_wins: str):
    """Families whose problems look alike (the same sizes and t(f)) but whose winners differ."""
    rows = []
    for fam, wins in (("a", a_wins), ("b", b_wins)):
        for i, n in enumerate((16, 32, 64)):
            for s in ("jacrev", "jacfwd"):
                rows.append(row(f"{fam}{i}", s, 1.0 if s == wins else 3.0, family=fam, n=n, m=n, t_f=1e-4 * n))
    return frame(*rows)


def test_the_predictor_held_out_cannot_see_the_held_out_family():
    f = two_families("jacfwd", "jacrev")
    fit = rules.Predictor.fitted_apart(f)
    assert {p["family"] for p in fit("a").points} == {"b"} and {p["family"] for p in fit("b").points} == {"a"}
    picks = rules.held_out(f)
    # so each family gets the other's winner, though its own data would say otherwise
    assert {k[-1]: v for k, v in picks.items()} == {**{f"a{i}": "jacrev" for i in range(3)},
                                                    **{f"b{i}": "jacfwd" for i in range(3)}}
    s = scored(f)
    assert s.loc[rules.PREDICTOR, "geomean"] == pytest.approx(3.0)


def test_a_predictor_fitted_apart_is_the_one_fitted_on_the_rest():
    """One pass over the frame gives each family's held-out predictor, refusals included: a
    strategy refused only in the family held out is a candidate again."""
    rows = [row(f"sparse{i}", s, t, n=64, m=64, family="sparse") for i in range(3)
            for s, t in (("coloring-forward", 0.1), ("jacrev", 1.0))]
    rows += [row(f"dense{i}", s, t, n=4096, m=4096, t_f=1.0, family="dense") for i in range(2)
             for s, t in (("jacrev", 1.0), ("jacfwd", 2.0))]
    rows.append(row("dense-x", "coloring-forward", status="unsupported", n=4096, m=4096, t_f=1.0, family="dense"))
    f = frame(*rows)
    fit = rules.Predictor.fitted_apart(f)
    for family in (None, "sparse", "dense"):
        rest = f if family is None else f[f["family"] != family]
        assert fit(family).points == rules.Predictor.fit(rest).points, family
    assert "coloring-forward" in fit("dense").points[0]["slowdown"]
    assert all("coloring-forward" not in p["slowdown"] for p in fit(None).points)


def test_the_predictor_picks_from_its_nearest_problems_a_strategy_correct_on_all_of_them():
    f = frame(*[row(f"small{i}", s, t, n=8 * (i + 1), m=512, t_f=1e-5) for i in range(5)
                for s, t in (("jacfwd", 1.0), ("jacrev", 2.0))],
              *[row(f"big{i}", s, t, n=4096 * (i + 1), m=8, t_f=1e-2) for i in range(5)
                for s, t in (("jacfwd", 9.0), ("jacrev", 1.0))],
              *[row(f"big{i}", "grad-batched", 0.5 if i else None, status="ok" if i else "wrong",
                    n=4096 * (i + 1), m=8, t_f=1e-2) for i in range(5)])
    model = rules.Predictor.fit(f)
    pick, near = model.pick("vector", "cpu", 16, 512, 1e-5)
    assert pick == "jacfwd" and set(near) == {f"small{i}" for i in range(5)}
    # grad-batched is the fastest on four of the five big ones and wrong on the fifth: jacrev,
    # correct on all five, is picked

    pick, near = model.pick("vector", "cpu", 8192, 8, 1e-2)
    assert set(near) == {f"big{i}" for i in range(5)} and pick == "jacrev"
    assert model.pick("batched", "cpu", 16, 512, 1e-5) == (None, [])
    assert model.pick("vector", "cuda:0", 16, 512, 1e-5) == (None, [])
    assert model.pick("params", "cpu", 16, 512, 1e-5)[0] == "jacfwd"  # borrowed from the vector problems


def test_a_strategy_that_needs_more_than_f_is_never_predicted():
    """Colouring ran fast on the sparse problems and refused a dense one: it needs a pattern."""
    rows = [row(f"sparse{i}", s, t, n=64, m=64) for i in range(5) for s, t in (("coloring-forward", 0.1),
                                                                               ("jacrev", 1.0), ("jacfwd", 2.0))]
    rows.append(row("dense", "coloring-forward", status="unsupported", n=4096, m=4096, t_f=1.0))
    model = rules.Predictor.fit(frame(*rows))
    assert model.pick("vector", "cpu", 64, 64, 1e-4)[0] == "jacrev"


def test_a_predictor_file_round_trips_and_a_bad_one_is_one_line(tmp_path):
    model = rules.Predictor.fit(two_families("jacfwd", "jacrev"))
    again = rules.Predictor.load(model.save(tmp_path / "p.json"))
    assert again.points == json.loads(json.dumps(model.points))
    assert again.pick("vector", "cpu", 32, 32, 32e-4) == model.pick("vector", "cpu", 32, 32, 32e-4)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad.json: not a predictor file") as e:
        rules.Predictor.load(tmp_path / "bad.json")
    assert "\n" not in str(e.value)


def test_the_shipped_predictor_answers_without_measuring_a_strategy():
    model = rules.Predictor.load()
    assert len(model.points) > 20 and {p["kind"] for p in model.points} >= {"vector", "batched"}
    w = torch.randn(64, 8, dtype=torch.float64)

    def fn(x):
        return torch.tanh(w @ x)

    x = torch.randn(8, dtype=torch.float64)
    jac = bench.jacobian(fn, x, strategy="predict")
    expected = torch.autograd.functional.jacobian(fn, x)
    assert torch.allclose(jac, expected)  # the pick is audited like any other (NOTE: [Reference audit])
    why = bench.choice(fn, x)
    assert "predicted without measuring a strategy" in why and "n=8, m=64" in why


def test_predict_without_a_measured_problem_of_the_kind_says_so(tmp_path, monkeypatch):
    only_vector = rules.Predictor([p for p in rules.Predictor.load().points if p["kind"] == "vector"])
    monkeypatch.setattr(rules, "SHIPPED", only_vector.save(tmp_path / "p.json"))
    with pytest.raises(ValueError, match="has measured no batched problem on cpu; use strategy='auto'"):
        bench.jacobian(lambda x: x.sin(), torch.randn(4, 3), strategy="predict", kind="batched")


def test_cli_rules_scores_a_real_sweep_and_fits_a_predictor(tiny_results, tmp_path):
    out = run_cli("rules", tiny_results, "--fit", tmp_path / "p.json", check=True).stdout
    assert "always jacrev" in out and "predictor (held out)" in out
    frame = results.load(tiny_results)
    solved = frame[(frame["status"] == "ok") & ~frame["mode"].isin(["fd"])]["problem"].nunique()
    assert f"{solved} problems with a timed exact strategy" in out and solved > 0
    assert len(rules.Predictor.load(tmp_path / "p.json").points) == solved
    bad = run_cli("rules", tmp_path / "missing.json")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1

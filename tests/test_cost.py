"""Cost in units of f (NOTE: [Cost in units of f] in bench.analysis.cost): t(f) and the ratios
measured on a fake clock, carried through a results file, and the table and the overhead
finding on a hand-made frame with known answers."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

import cases
from bench import strategies
from bench.analysis import cost, results, visits
from bench.analysis.picks import timed
from bench.measure.pair import measure_problem
from bench.measure.timing import Policy
from bench.render import figures as figs
from bench.measure.pair import Settings

TIMED = Settings(profile="quick", policy=Policy(warmup=1, min_rounds=3, max_time=0.05))
F, VJP = 2.0**-10, 3 * 2.0**-10  # fake seconds of one evaluation of f and of one VJP: sums of them are exact
N, M = 6, 4


class Clock:
    """A clock that moves only when f or its VJP runs."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def linear(clock: Clock, name: str) -> cases.Problem:
    """f(x) = W x, R^6 -> R^4, whose evaluation takes F and whose VJP takes VJP on ``clock``."""

    def build(setup: cases.Setup) -> cases.Built:
        w = setup.randn(M, N, gen=setup.generator())

        class Timed(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                clock.now += F
                return w @ x

            @staticmethod
            def backward(ctx, g):
                clock.now += VJP
                return w.T @ g

        return cases.Built(Timed.apply, (setup.randn(N, gen=setup.generator()),), jacobian=lambda: (w,))

    return cases.Problem(name, "fake", "vector", N, M, build, analytic=True)


@pytest.fixture(scope="module")
def measured() -> list:
    """fd-forward-loop (N + 1 evaluations of f) and grad-loop (one evaluation, then M VJPs)
    measured by the real harness on the fake clock."""
    clock = Clock()
    problem = linear(clock, "fake-linear")
    return [measure_problem(problem, strategies.get(s), "cpu", "float32", TIMED, timer=clock)
            for s in ("fd-forward-loop", "grad-loop")]


def test_t_f_is_timed_by_the_same_harness_and_the_rows_by_their_evaluations(measured):
    fd, loop = measured
    assert fd.status == loop.status == "ok", (fd.reason, loop.reason)
    assert (fd.f_s, fd.f_iqr) == (loop.f_s, loop.f_iqr) == (F, 0.0)
    assert set(fd.samples) == {(N + 1) * F}
    assert set(loop.samples) == {F + M * VJP}
    assert loop.work["vjps"] == M and fd.work["vjps"] == fd.work["jvps"] == 0


def _write(path, machine: str, rows) -> None:
    """A results file of ``rows`` as the sweep writes them, for the platform of ``machine``."""
    doc = {"machine_info": {"jacbench": {"machine": machine, "torch": "2.13.0"}}, "benchmarks": [
        visits.record_of(r) for r in rows if r.samples], "jacbench": {"schema": 1, "untimed": [
            {"extra_info": r.info()} for r in rows if not r.samples]}}
    path.write_text(json.dumps(doc))


def test_the_ratios_survive_a_results_file_with_t_f_taken_per_platform(measured, tmp_path):
    fd, loop = measured
    # the same problem on a second machine, where f took 2F on one visit and 4F on another
    elsewhere = [dataclasses.replace(fd, f_s=2 * F), dataclasses.replace(loop, f_s=4 * F),
                 dataclasses.replace(loop, strategy="jacrev", status="wrong", samples=[], f_s=None)]
    _write(tmp_path / "a.json", "a", measured)
    _write(tmp_path / "b.json", "b", elsewhere)
    frame = results.load([tmp_path / "a.json", tmp_path / "b.json"]).set_index(["machine", "strategy"])
    assert frame.loc[("a", "fd-forward-loop"), "t_f"] == frame.loc[("a", "grad-loop"), "t_f"] == F
    assert frame.loc[("a", "fd-forward-loop"), "per_f"] == N + 1
    assert math.isnan(frame.loc[("a", "fd-forward-loop"), "per_product"])  # finite differences make no products
    assert frame.loc[("a", "grad-loop"), "products"] == M
    assert frame.loc[("a", "grad-loop"), "per_f"] == 1 + M * VJP / F
    assert frame.loc[("a", "grad-loop"), "per_product"] == (1 + M * VJP / F) / M
    # machine b's t(f) is the median of its own rows' f_s, never mixed with machine a's
    assert (frame.loc["b", "t_f"] == 3 * F).all()
    assert frame.loc[("b", "fd-forward-loop"), "per_f"] == pytest.approx((N + 1) / 3)
    assert math.isnan(frame.loc[("b", "jacrev"), "per_f"])  # not timed


# --- the table and the overhead finding, on a hand-made frame ------------------------------------

CTX = {"machine": "box", "torch": "2.13.0", "device": "cpu", "dtype": "float32"}


def row(problem, strategy, median, mode="reverse", products=10, family="mlp", status="ok", kind="vector", **kw):
    """A row whose f took 1 s: its median is its per_f."""
    return {**CTX, "family": family, "problem": problem, "strategy": strategy, "mode": mode, "kind": kind,
            "status": status, "median": median, "f_s": 1.0, "vjps": products if mode == "reverse" else 0,
            "jvps": products if mode == "forward" else 0, **kw}


@pytest.fixture
def hand() -> pd.DataFrame:
    rows = [
        # per VJP: 10, 20 and 4 f (outside f's work: 60%, 80%, 0%), and 15 f on a cnn (73%)
        row("p1", "loop", 100), row("p2", "loop", 200), row("p3", "loop", 40), row("q1", "loop", 30, products=2,
                                                                                 family="cnn"),
        row("p1", "loop2", 80),  # 8 f per VJP: 50% outside
        row("p1", "batched", 10), row("p2", "batched", 20), row("p3", "batched", 15),  # below the band
        row("p1", "fwd", 15, mode="forward", products=5), row("p2", "fwd", 15, mode="forward", products=5),
        row("p1", "fd", 8, mode="fd", products=0),
        row("p4", "loop", 1e-9, status="wrong"),  # never timed: a stray median must not count
        row("r1", "loop", 1000, kind="penalty", family="penalty"),  # its products are the head's, not f's
        row("b1", "loop", 1000, kind="batched", family="batch"),  # of a sample or of the batch: not f's either
        {**row("p1", "loop", 50), "device": "cuda"},  # another platform: 5 f per VJP, 20% outside
    ]
    return cost.add_columns(pd.DataFrame(rows))


def test_the_table_gives_each_strategy_its_medians_and_its_share_above_the_band(hand):
    t = cost.table(hand)
    cpu = t[t["device"] == "cpu"].set_index(["family", "strategy"])
    assert list(cpu.loc["mlp"].index) == ["fd", "batched", "fwd", "loop2", "loop"]  # cheapest per f first
    loop = cpu.loc[("mlp", "loop")]
    assert (loop["problems"], loop["per_f"], loop["per_product"]) == (3, 100, 10)
    assert loop["above"] == pytest.approx(2 / 3)  # 4 f per VJP is the band's top, not above it
    assert loop["outside"] == pytest.approx(0.6)
    assert cpu.loc[("cnn", "loop"), "outside"] == pytest.approx(1 - 4 / 15)
    assert cpu.loc[("mlp", "batched"), ["per_product", "above", "outside"]].tolist() == [1.5, 0, 0]
    assert cpu.loc[("mlp", "fwd"), "per_product"] == 3
    fd = cpu.loc[("mlp", "fd")]
    assert fd["per_f"] == 8 and math.isnan(fd["per_product"]) and math.isnan(fd["above"])
    for family in ("penalty", "batch"):
        assert cpu.loc[(family, "loop"), "per_f"] == 1000 and math.isnan(cpu.loc[(family, "loop"), "per_product"])
    cuda = t[t["device"] == "cuda"]
    assert (list(cuda["strategy"]), list(cuda["per_product"])) == (["loop"], [5]) and cuda["outside"].iloc[0] == (
        pytest.approx(0.2))


def test_overhead_ranks_the_exact_strategies_that_spend_most_outside_f_per_platform(hand):
    o = cost.overhead(hand)
    cpu = o[o["device"] == "cpu"]
    assert list(cpu["strategy"]) == ["loop", "loop2"]  # batched, fwd: within or below the band; fd: approximate
    loop = cpu.iloc[0]
    assert loop["outside"] == pytest.approx((0.6 + (1 - 4 / 15)) / 2)  # over p1, p2, p3 and q1
    assert (loop["per_product"], loop["problems"], loop["product"]) == (12.5, 4, "VJP")
    assert loop["finding"] == ("loop spends 67% of its time outside f's work: 12.5 evaluations of f per VJP, "
                               "against the theory's 2 to 4 (median over 4 problems)")
    assert list(cost.overhead(hand, k=1)["strategy"]) == ["loop", "loop"]  # the top one of each platform
    assert o.loc[o["device"] == "cuda", "outside"].tolist() == [pytest.approx(0.2)]


def test_nothing_to_say_is_an_empty_table_with_its_columns(hand):
    none = hand[hand["mode"] == "nothing"]
    assert cost.table(none).empty and list(cost.table(none)) == cost.TABLE
    assert cost.overhead(none).empty and list(cost.overhead(none)) == cost.OVERHEAD
    assert figs.cost_in_f(timed(none), figs.Styles([], set())) is None


def test_the_figure_draws_the_strategies_with_products(hand):
    ok = timed(hand)
    fig = figs.cost_in_f(ok, figs.Styles(list(dict.fromkeys(hand["strategy"])), {"fd"}))
    assert fig is not None and fig.uri.startswith("data:image/svg+xml;base64,")
    assert "batched, fwd, loop2, loop" in fig.alt  # cheapest per product first; fd has no products

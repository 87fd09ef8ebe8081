"""The advisor on functions defined here, not in the registry: ranking, diagnoses, the
reference it gates against, ``bench.jacobian(strategy="auto")`` and the command line."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch import nn

import bench
from .conftest import ADVISE, ROOT, burning, run_cli
from bench import advisor, cli, strategies
from bench.measure.timing import Policy
from bench.sweep.plan import Settings

FEW = "jacrev,jacfwd,functional,structured,fd-forward"


# Functions a user might have written: module-level, so the command line can import them.

def small_fn(x):
    """A smooth map R^6 -> R^4."""
    w = torch.arange(24, dtype=x.dtype, device=x.device).reshape(4, 6) / 24
    return torch.tanh(w @ x) + x[:4] ** 2


def graph_breaking_fn(x):
    return torch.tensor([x[0] ** 2, x[1] * x[2]])  # the classic tutorial's mistake


class SmallNet(nn.Sequential):
    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        super().__init__(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.requires_grad_(False)


# --- end to end --------------------------------------------------------------------------------


def test_advise_runs_end_to_end_on_a_function_outside_the_registry(tmp_path):
    x = torch.linspace(-1, 1, 6)
    advice = bench.advise(small_fn, x, strategies=FEW, settings=ADVISE, output=tmp_path / "advice.html")
    by_name = {r.strategy: r for r in advice.rows}
    assert set(by_name) == set(FEW.split(","))
    assert by_name["structured"].status == "unsupported"  # a plain function has no nn.Sequential
    for name in ("jacrev", "jacfwd", "functional", "fd-forward"):
        assert by_name[name].status == "ok", by_name[name].reason
    medians = [advisor._median_iqr(r)[0] for r in advice.ok]
    assert medians == sorted(medians)  # ranked, fastest first
    assert advice.best in ("jacrev", "jacfwd", "functional")  # exact, never fd
    assert advice.recommendation.startswith(f"use {advice.best}: ")
    assert advice.reference.startswith("float64")
    text = str(advice)  # wrapped between words to fit the terminal
    assert "rank" in text and " ".join(advice.recommendation.split()) in " ".join(text.split())
    page = (tmp_path / "advice.html").read_text()
    assert "<table" in page and advice.best in page and "data:image/png" in page


@pytest.mark.alone  # a visit disturbed by the other tests' load is timed again, and counted otherwise
def test_the_race_measures_work_memory_and_t_f_only_of_the_strategies_it_keeps(temporary_strategy):
    """NOTE: [Racing]: the first visit is brief; the second, of those still in the race, adds the rest."""
    def slow(fn, xs, create_graph=False):
        time.sleep(0.02)
        return strategies.get("jacrev")(fn, xs)

    temporary_strategy("test-slow", slow)
    settings = Settings(profile="advise", policy=Policy(warmup=1, visits=2, min_rounds=4, max_time=0.05))
    advice = bench.advise(small_fn, torch.linspace(-1, 1, 6), strategies="jacrev,test-slow", settings=settings)
    for row in advice.ok:  # test-slow is dropped, unless the machine was busy while it was timed
        if "dropped" in row.notes:
            assert len(row.visits) == 1 and row.peak_bytes is None and row.work is None and row.f_s is None
        else:
            assert len(row.visits) == 2 and row.peak_bytes and row.work["vjps"] == 4 and row.f_s > 0
    assert "dropped" not in advice.row("jacrev").notes
    single = bench.advise(small_fn, torch.linspace(-1, 1, 6), strategies="jacrev", settings=ADVISE)
    assert single.row("jacrev").peak_bytes and single.row("jacrev").f_s  # one visit: all in it


def test_advise_a_module_uses_its_structure_and_a_float64_copy():
    net = SmallNet()
    advice = bench.advise(net, torch.linspace(-1, 1, 6), strategies="jacrev,structured", settings=ADVISE)
    assert {r.strategy: r.status for r in advice.rows} == {"jacrev": "ok", "structured": "ok"}
    assert advice.reference.startswith("float64")
    assert next(net.parameters()).dtype == torch.float32  # the user's module is left alone
    structured = advice.row("structured")
    assert structured.notes["chain_flops"] > 0 and structured.error < 1e-5


@pytest.mark.alone  # it asserts which strategy is picked, which a row disturbed by other tests' load changes
def test_ranking_follows_the_measured_times(temporary_strategy):
    def slow(fn, xs, create_graph=False):
        time.sleep(0.004)
        return strategies.textbook.jacrev(fn, xs)

    temporary_strategy("test-fast", lambda fn, xs, create_graph=False: strategies.textbook.jacrev(fn, xs))
    temporary_strategy("test-slow", slow)
    advice = bench.advise(small_fn, torch.linspace(-1, 1, 6), strategies="test-slow,test-fast", settings=ADVISE)
    assert [r.strategy for r in advice.rows] == ["test-fast", "test-slow"]
    assert advice.best == "test-fast"
    fast, slow_med = (advisor._median_iqr(r)[0] for r in advice.rows)
    assert slow_med > 0.004 > fast


def test_a_wrong_strategy_is_never_recommended(temporary_strategy):
    temporary_strategy("test-wrong", lambda fn, xs, create_graph=False: tuple(2 * b for b in strategies.textbook.jacrev(fn, xs)))
    advice = bench.advise(small_fn, torch.linspace(-1, 1, 6), strategies="test-wrong,jacrev", settings=ADVISE)
    assert advice.row("test-wrong").status == "wrong" and advice.best == "jacrev"
    assert advice.rows[-1].strategy == "test-wrong"


# --- diagnoses ---------------------------------------------------------------------------------


def test_a_graph_breaking_function_is_diagnosed_not_measured():
    advice = bench.advise(graph_breaking_fn, torch.ones(3), settings=ADVISE)
    cut = "cut from the autograd graph by torch.tensor([...]) at test_advise.py:"
    assert cut in advice.diagnosis, advice.diagnosis
    assert advice.rows == [] and advice.best is None
    assert advice.recommendation.startswith("no recommendation: float64 autograd and float64 finite differences")
    with pytest.raises(ValueError, match=re.escape(cut)):
        bench.jacobian(graph_breaking_fn, torch.ones(3))


@pytest.mark.parametrize("fn, x, expected", [
    (lambda x: (x, x ** 2), torch.ones(2), "returned a tuple, not a tensor"),
    (lambda x: float(x.sum()), torch.ones(2), "returned a float, not a tensor: it computes with Python numbers"),
    (torch.log, -torch.ones(3), "3 of 3 NaN or infinite entries"),
    (lambda x: x[5], torch.ones(2), "calling the function raised IndexError"),
    (lambda x: x, torch.ones(2, dtype=torch.long), "needs floating-point inputs"),
])
def test_unusable_functions_get_a_one_line_diagnosis(fn, x, expected):
    advice = bench.advise(fn, x, settings=ADVISE)
    assert expected in advice.diagnosis and "\n" not in advice.diagnosis
    assert advice.rows == []


def test_a_partly_cut_graph_is_caught_by_finite_differences():
    def partly_cut(x):
        return torch.cat([x ** 2, (3 * x[:1]).detach()])  # the last row loses its derivative

    advice = bench.advise(partly_cut, torch.ones(3, dtype=torch.float64), strategies="jacrev", settings=ADVISE)
    assert ".detach() at test_advise.py:" in advice.diagnosis and advice.best is None and not advice.rows


def test_a_function_that_cannot_run_in_float64_falls_back_honestly():
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))  # float32, captured

    def closure(x):
        return torch.tanh(w @ x)

    advice = bench.advise(closure, torch.linspace(-1, 1, 6), strategies="jacrev,jacfwd", settings=ADVISE)
    assert advice.reference.startswith("float32 autograd loops through the function itself")
    assert any(w.startswith("no float64 reference: it does not run on float64") for w in advice.warnings)
    assert not any("central differences" in w for w in advice.warnings)  # no false alarm
    assert all(r.status == "ok" for r in advice.rows)
    # a float64 twin given by the user restores the float64 reference
    twin = bench.advise(closure, torch.linspace(-1, 1, 6), strategies="jacrev", settings=ADVISE,
                        float64=(lambda x: torch.tanh(w.double() @ x), (torch.linspace(-1, 1, 6),)))
    busy = "timed while the machine was busy"  # a busy machine may say so; nothing else is to be said
    assert twin.reference.startswith("float64") and not [w for w in twin.warnings if not w.startswith(busy)]


# --- bench.jacobian ----------------------------------------------------------------------------


@pytest.mark.alone  # it asserts a pick's margin, which a faster rival disturbed by other tests' load withholds
def test_jacobian_auto_uses_the_measured_choice_cached_per_signature(monkeypatch):
    calls = []
    real = advisor.advise

    def counting(fn, *inputs, **kw):
        calls.append(tuple(x.shape for x in inputs))
        return real(fn, *inputs, strategies="jacrev,jacfwd", settings=ADVISE, **kw)

    monkeypatch.setattr(advisor, "advise", counting)

    def f(x):
        return torch.sin(x) * x.sum()

    x = torch.linspace(-1, 1, 5)
    want = torch.func.jacrev(f)(x)
    torch.testing.assert_close(bench.jacobian(f, x), want)
    torch.testing.assert_close(bench.jacobian(f, x * 2), torch.func.jacrev(f)(x * 2))  # same signature: cached
    assert calls == [(torch.Size([5]),)]
    bench.jacobian(f, torch.ones(7))  # a new shape is measured anew
    assert calls == [(torch.Size([5]),), (torch.Size([7]),)]
    assert advisor.memo(f, "advise")[advisor.signature((x,))][0] in ("jacrev", "jacfwd")
    # the choice says how sure it is: a margin with its interval, or a tie within noise
    said = bench.choice(f, x)
    assert said.startswith(f"use {advisor.memo(f, 'advise')[advisor.signature((x,))][0]}:")
    assert "95% interval" in said, said
    with pytest.raises(ValueError, match="no choice was measured"):
        bench.choice(f, torch.ones(9))


def test_jacobian_with_a_named_strategy_and_several_inputs():
    a, b = torch.ones(2, dtype=torch.float64), torch.arange(3.0, dtype=torch.float64)
    blocks = bench.jacobian(lambda a, b: torch.cat([a * 2, b ** 2]), a, b, strategy="jacfwd")
    assert isinstance(blocks, tuple) and [t.shape for t in blocks] == [(5, 2), (5, 3)]
    with pytest.raises(ValueError, match=r"unknown strategy 'nope'; choose 'auto' \(measured\), 'predict'"):
        bench.jacobian(small_fn, torch.ones(6), strategy="nope")
    with pytest.raises(ValueError, match="does not handle batched"):
        bench.jacobian(small_fn, torch.ones(6), strategy="jacrev", kind="batched")
    with pytest.raises(ValueError, match="cannot differentiate its Jacobian again"):
        bench.jacobian(small_fn, torch.ones(6), strategy="structured", create_graph=True)


def test_jacobian_auto_with_create_graph_picks_a_differentiable_strategy(monkeypatch):
    net = SmallNet()
    x = torch.linspace(-1, 1, 6)
    xg = x.clone().requires_grad_(True)
    for point in (x, xg):
        advisor.memo(net, "advise")[advisor.signature((point,))] = ["structured", "jacrev"]  # as if measured
    monkeypatch.setattr(advisor, "advise", lambda *a, **k: pytest.fail("measured again"))
    assert bench.jacobian(net, xg).grad_fn is None  # structured, the fastest
    jac = bench.jacobian(net, xg, create_graph=True)  # jacrev: differentiable with respect to x
    (g,) = torch.autograd.grad(jac.sum(), xg)
    assert g.shape == x.shape and g.abs().sum() > 0


def test_advise_fills_the_cache_that_jacobian_reads(monkeypatch):
    x = torch.linspace(-1, 1, 6)
    advice = bench.advise(small_fn, x, strategies="jacrev,jacfwd", settings=ADVISE)
    monkeypatch.setattr(advisor, "advise", lambda *a, **k: pytest.fail("measured again"))
    torch.testing.assert_close(bench.jacobian(small_fn, x), torch.func.jacrev(small_fn)(x))
    assert advisor.memo(small_fn, "advise")[advisor.signature((x,))][0] == advice.best


# --- the command line and the package surface -------------------------------------------------


def test_params_and_batched_inputs_for_the_command():
    fn, inputs, kind, float64 = cli.build_inputs(SmallNet(), (6,), 4, "params", "cpu", torch.float32)
    assert kind == "params" and len(inputs) == 4 and fn(*inputs).shape == (4, 3)
    fn64, inputs64 = float64
    assert fn64(*inputs64).dtype == torch.float64
    advice = bench.advise(fn, *inputs, kind=kind, float64=float64, strategies="jacrev,functional", settings=ADVISE)
    assert advice.best and advice.reference.startswith("float64")
    _, inputs, kind, _ = cli.build_inputs(small_fn, (6,), 5, "input", "cpu", torch.float32)
    assert kind == "batched" and inputs[0].shape == (5, 6)
    with pytest.raises(ValueError, match="needs an nn.Module"):
        cli.build_inputs(small_fn, (6,), None, "params", "cpu", torch.float32)


def test_cli_advise_end_to_end(tmp_path):
    out = tmp_path / "advice.html"
    proc = run_cli("advise", "tests.test_advise:small_fn", "--input-shape", "6",
                   "--strategies", "jacrev,jacfwd,functional", "-o", out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "use " in proc.stdout and "rank" in proc.stdout and out.exists()
    proc = run_cli("advise", "tests.test_advise:graph_breaking_fn", "--input-shape", "3",
                   "--strategies", "jacrev", timeout=300)
    said = " ".join(proc.stdout.split())  # wrapped between words to fit the terminal
    assert proc.returncode == 1 and "cut from the autograd graph by torch.tensor([...])" in said
    assert "Traceback" not in proc.stderr


def test_cli_errors_are_one_line():
    for args, message in ((("nosuchmodule:f",), "cannot import 'nosuchmodule'"),
                          (("tests.test_advise:nothing",), "has no 'nothing'"),
                          (("tests.test_advise",), "takes MODULE:FUNCTION")):
        with pytest.raises(ValueError, match=message):
            cli.load_target(*args)
    with pytest.raises(ValueError, match="--input-shape takes positive sizes"):
        cli.parse_shape("3,-1")
    assert cli.parse_shape("3,32,32") == (3, 32, 32)
    assert isinstance(cli.load_target("tests.test_advise:SmallNet"), SmallNet)


def test_import_bench_imports_no_torch_until_advise_is_used():
    code = ("import sys, bench; assert 'torch' not in sys.modules; "
            "assert callable(bench.advise) and callable(bench.jacobian); assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# --- how sure the answer is ---------------------------------------------------------------------


def _row(name, samples, peak, disturbed=0.0):
    from bench.analysis.schema import Row

    return Row("p", name, "cpu", "float32", status="ok", samples=list(samples), peak_bytes=peak, error=0.0,
               disturbed=disturbed)


def test_exact_strategies_timed_while_the_machine_was_busy_are_still_picked_over_finite_differences():
    import random

    rng = random.Random(2)
    fast = [1e-3 * (1 + 0.05 * rng.random()) for _ in range(30)]
    rows = [_row("fd-central", fast, 100), _row("jacrev", [3 * s for s in fast], 4000, disturbed=0.9),
            _row("functional", [4 * s for s in fast], 5000, disturbed=0.9)]
    advice = advisor.Advice(rows=rows)
    advisor._conclude(advice)
    assert advice.best == "jacrev" and advice.fastest == "fd-central", advice.recommendation
    assert advice.recommendation.startswith("use jacrev: ") and "only finite differences" not in advice.recommendation
    assert "recommended only because each of its rivals was too" in " ".join(advice.warnings)
    assert "faster than the runner-up functional" in advice.recommendation
    for jacfwd, said in ((2, "faster than the runner-up jacrev (timed while the machine was busy)"),
                         (5, "jacrev measured faster while the machine was busy")):
        calm = advisor.Advice(rows=rows + [_row("jacfwd", [jacfwd * s for s in fast], 3000)])
        calm.rows.sort(key=lambda r: r.samples[0])  # ranked, as advise leaves them
        advisor._conclude(calm)  # an undisturbed exact row is picked, faster disturbed ones or not
        assert calm.best == "jacfwd" and "never recommended" in " ".join(calm.warnings), calm.recommendation
        assert said in calm.recommendation, calm.recommendation


def test_a_tie_within_noise_goes_to_the_strategy_that_needs_less_memory():
    import random

    rng = random.Random(0)
    same = [1e-3 * (1 + 0.05 * rng.random()) for _ in range(30)]
    advice = advisor.Advice(rows=[_row("jacrev", same, 4000), _row("jacfwd", same[::-1], 1000),
                                  _row("functional", [2 * s for s in same], 500)])
    advisor._conclude(advice)
    assert advice.best == "jacfwd"  # tied with jacrev, and needs a quarter of its memory
    assert "a tie within noise with jacrev" in advice.recommendation
    assert "which goes to the one that needs the least memory" in advice.recommendation
    assert "faster than torch.autograd.functional.jacobian" in advice.recommendation
    assert "95% interval" in advice.recommendation


def test_a_clear_winner_states_its_margin_over_the_runner_up_with_an_interval():
    import random

    rng = random.Random(1)
    fast = [1e-3 * (1 + 0.05 * rng.random()) for _ in range(30)]
    advice = advisor.Advice(rows=[_row("jacrev", fast, 4000), _row("jacfwd", [1.2 * s for s in fast[::-1]], 1000)])
    advisor._conclude(advice)
    assert advice.best == "jacrev"
    text = advice.recommendation
    assert "faster than the runner-up jacfwd" in text and "1.20x (95% interval" in text, text


@pytest.mark.alone
def test_a_burn_halfway_through_advise_is_flagged_timed_again_and_changes_no_pick():
    """Two CPU burners start once half the strategies are timed and stop seconds later,
    before advise times its disturbed rows again. Flags and picks are asserted, never a time."""
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0)) / 8

    def wide(x):  # 32 -> 64: loops over 64 outputs against one vectorized Jacobian
        return torch.tanh(w @ torch.tanh(x))

    x = torch.linspace(-1, 1, 32)
    names = "jacrev,grad-loop,manual-backward,functional"
    # rounds of 20 ms: each spans several of the burners' time slices
    settings = Settings(profile="advise", policy=Policy(warmup=0, min_rounds=10, max_time=0.3, min_round_time=0.02))
    quiet = bench.advise(wide, x, strategies=names, settings=settings)
    done, burn = [], contextlib.ExitStack()

    def progress(row):
        done.append(row)
        if len(done) == 2:  # halfway: burn for a few seconds
            burn.enter_context(burning())
            stop.start()
        if len(done) == 4:  # the burn is over before the disturbed rows are timed again
            stop.join()

    stop = threading.Timer(3.0, burn.close)
    try:
        burned = bench.advise(wide, x, strategies=names, settings=settings, progress=progress)
    finally:
        stop.cancel()
        burn.close()
    during = [r for r in done[2:] if advisor._disturbed(r)]
    assert during, [(r.strategy, r.disturbed) for r in done]  # the burn disturbed what it overlapped
    assert all(burned.row(r.strategy).notes.get("remeasured") for r in during)
    stuck = {r.strategy for a in (quiet, burned) for r in a.ok if advisor._disturbed(r)}
    for a in (quiet, burned):  # what stayed disturbed is never picked
        assert a.best not in {r.strategy for r in a.ok if advisor._disturbed(r)}, a.recommendation
    if not stuck:  # a machine busy beyond the test's own burn can keep a row out; otherwise no pick changed
        assert quiet.best == burned.best == "jacrev", (quiet.recommendation, burned.recommendation)

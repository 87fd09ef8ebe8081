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
from .conftest import ADVISE, ROOT, about_f, burning, busy, run_cli
from bench import advisor, cli, strategies
from bench.analysis import stats
from bench.measure.timing import Policy
from bench.measure.pair import Settings

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
    # where the time went: each row's phases, added up in the timing line
    assert all(r.spent["gate"] > 0 and r.seconds == pytest.approx(sum(r.spent.values())) for r in advice.rows)
    longest = max(advice.rows, key=lambda r: r.spent["gate"]).strategy
    assert re.search(rf"measuring took [\d.]+ [mun]?s: the gates [\d.]+ [mun]?s \(first calls, checked; the longest "
                     rf"{re.escape(longest)}'s, [\d.]+ [mun]?s\), the timed rounds [\d.]+ [mun]?s, the probes of work and memory "
                     r"[\d.]+ [mun]?s", advice.timing), advice.timing
    text = str(advice)  # wrapped between words to fit the terminal
    assert "rank" in text and " ".join(advice.recommendation.split()) in " ".join(text.split())
    page = (tmp_path / "advice.html").read_text()
    assert "<table" in page and advice.best in page and "data:image/svg+xml;base64," in page


def test_the_race_measures_work_and_memory_only_of_the_strategies_it_keeps(temporary_strategy):
    """NOTE: [Racing]: the strategies are timed together; those the race drops are timed no
    more, and their work and memory are not measured (t(f) is the problem's: every row has it)."""
    def slow(fn, xs, create_graph=False):
        time.sleep(0.02)
        return strategies.get("jacrev")(fn, xs)

    temporary_strategy("test-slow", slow)
    settings = Settings(profile="advise", policy=Policy(warmup=1, min_rounds=4, max_time=0.05))
    advice = bench.advise(small_fn, torch.linspace(-1, 1, 6), strategies="jacrev,test-slow", settings=settings)
    rows = {r.strategy: r for r in advice.ok}
    assert "dropped" not in rows["jacrev"].notes
    for row in rows.values():  # test-slow, 20 ms against well under 1, unless load dropped every cycle
        if "dropped" in row.notes:
            assert "dropped by the race" in row.notes["dropped"] and row.strategy == "test-slow"
            assert row.peak_bytes is None and row.work is None and row.f_s == rows["jacrev"].f_s
        else:
            assert row.peak_bytes and row.work["vjps"] == 4 and row.f_s > 0
    slow = rows["test-slow"]
    assert rows["jacrev"].cycles[:len(slow.cycles)] == slow.cycles  # timed in the same cycles
    assert slow.clock == "wall"  # its sleep is no CPU time: the CPU clock would not see it


def test_one_hopeless_on_its_first_call_is_shown_with_that_call_and_no_spread(temporary_strategy):
    """NOTE: [Racing]: a first call a hundred times the fastest warm call is a strategy's one
    time in ``advise``; one call has no interquartile range to show."""
    def hopeless(fn, xs, create_graph=False):  # right, and 0.3 s of CPU a call
        busy(0.3)
        return strategies.get("jacrev")(fn, xs)

    temporary_strategy("test-hopeless", hopeless)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU clock, which a busy machine does not lengthen, judges the first call
    try:
        advice = bench.advise(small_fn, torch.linspace(-1, 1, 6), strategies="jacrev,test-hopeless")
    finally:
        torch.set_num_threads(before)
    row = advice.row("test-hopeless")
    assert row.notes["dropped"].startswith("dropped by the race before its rounds: its first call took"), row.notes
    cell = next(c for c in advisor._cells(advice) if c["strategy"] == "test-hopeless")
    assert cell["median"] == row.first_call_s and cell["iqr"] is None
    assert advice.best == "jacrev"


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
    assert twin.reference.startswith("float64") and not about_f(twin.warnings), twin.warnings


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
@pytest.mark.parametrize("threads", [2, 1])
def test_a_burn_halfway_through_the_timing_drops_its_cycles_together_and_changes_no_pick(threads):
    """Two CPU burners start once the strategies are gated, during their interleaved timing,
    and stop a second later. On the wall clock (two threads), the cycles they disturbed are
    dropped for every strategy at once; on the CPU clock (one thread), which waiting for a CPU
    does not lengthen, none is. Flags and picks are asserted, never a time."""
    g = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(128, 64, generator=g) / 8, torch.randn(32, 128, generator=g) / 8

    def mlp(x):  # 64 -> 32: reverse mode is about 1.15x faster than forward mode here
        return w2 @ torch.tanh(w1 @ torch.sin(x))

    x = torch.linspace(-1, 1, 64)
    names = "jacrev,jacfwd,grad-loop,functional"  # the loops are raced out; the two vectorized stay close
    # rounds of 20 ms, each spanning several of the burners' time slices; timed to the cap
    policy = Policy(warmup=0, min_rounds=10, max_time=0.5, precision=1e-4, min_round_time=0.02)
    settings = Settings(profile="advise", policy=policy)
    burn = contextlib.ExitStack()
    start, stop = (threading.Timer(0.4, lambda: burn.enter_context(burning())), threading.Timer(1.6, burn.close))

    def progress(row):
        if row.strategy == names.split(",")[-1]:  # the last gated: the timing begins
            start.start()
            stop.start()

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        quiet = bench.advise(mlp, x, strategies=names, settings=settings)
        burned = bench.advise(mlp, x, strategies=names, settings=settings, progress=progress)
    finally:
        start.cancel(), stop.cancel()
        start.join() if start.is_alive() else None
        burn.close()
        torch.set_num_threads(before)
    through = [r for r in burned.rows if r.strategy in ("jacrev", "jacfwd")]  # never raced out: 1.15x apart
    assert {r.status for r in through} <= {"ok", "disturbed"}, [(r.strategy, r.reason) for r in through]
    assert len({tuple(r.cycles) for r in through}) == 1  # the same cycles kept for both
    dropped = {r.notes.get("cycles_dropped", 0) for r in through}
    if threads == 1:
        assert "CPU time" in burned.timing and dropped == {0}, burned.timing
        assert quiet.best and burned.best
    else:  # dropped together; on a machine busy beyond the burn perhaps every cycle, and then it says so
        assert len(dropped) == 1 and dropped != {0}, [(r.strategy, r.notes, r.reason) for r in through]
        if all(r.disturbed == 1 for r in through):
            assert "timed while the machine was busy" in " ".join(burned.warnings), burned.warnings
    for a in (quiet, burned):
        assert a.best in (None, "jacrev", "jacfwd"), a.recommendation
    if quiet.best and burned.best and "a tie within noise" not in quiet.recommendation:  # a clear margin
        assert quiet.best == burned.best, (quiet.recommendation, burned.recommendation)


def test_the_report_advise_and_compare_state_one_ratio_of_the_same_samples():
    """One statistics layer: the same samples get the same ratio and interval everywhere."""
    import random

    from bench.analysis import compare, picks

    rng = random.Random(3)
    a = [1e-3 * (1 + 0.05 * rng.random()) for _ in range(30)]
    b = [1.2e-3 * (1 + 0.05 * rng.random()) for _ in range(30)]
    unpaired = picks.row_ratio({"samples": a}, {"samples": b})
    assert compare.bootstrap_ratio(a, b) == (unpaired.low, unpaired.high)
    cycles = list(range(30))
    paired = picks.row_ratio({"samples": a, "cycles": cycles}, {"samples": b, "cycles": cycles})
    assert paired == stats.paired(dict(zip(cycles, a)), dict(zip(cycles, b))) != unpaired
    for timed_together, want in ((False, unpaired), (True, paired)):
        rows = [_row("jacrev", a, 4000), _row("jacfwd", b, 1000)]
        for r in rows if timed_together else ():
            r.cycles = cycles
        advice = advisor.Advice(rows=rows)
        advisor._conclude(advice)
        assert f"{want} faster than the runner-up jacfwd" in advice.recommendation, advice.recommendation

"""One pair measured for real: what an ok row carries, and how failures become statuses."""

import time

import pytest
import torch
from torch import nn

import cases
from tests.conftest import burning, busy

from bench import kinds, strategies
from bench.measure import memory, pair
from bench.measure.pair import measure, measure_problem, measure_together
from bench.measure.timing import FEWEST_ROUNDS, Policy
from bench.analysis.schema import Pair
from bench.measure.pair import Settings

TIMED = Settings(profile="quick", policy=Policy(warmup=1, min_rounds=3, max_time=0.05))
MLP = "mlp-in128-out128-w64-d1"
TINY = "seed-linear"  # 2 x 2: jacrev's call takes a fraction of a millisecond


def test_an_ok_row_carries_time_memory_work_and_accuracy():
    row = measure(Pair("cpu", "float32", MLP, "jacrev"), TIMED)
    assert row.status == "ok", row.reason
    assert len(row.samples) >= 3 and all(s > 0 for s in row.samples)
    assert row.first_call_s > 0
    assert row.error <= row.tolerance
    assert row.jac_bytes == 128 * 128 * 4
    assert row.peak_bytes >= row.jac_bytes  # the result itself is allocated during the call
    assert row.work["vjps"] == 128 and row.work["vjps_calls"] == 1 and row.work["fevals"] == 1
    assert row.work["flops"] > 0


def test_one_the_race_sends_apart_is_timed_in_the_fewest_rounds_unprobed_and_every_phase_is_accounted():
    def race(timings):  # the race's verdict is given here: that it is right is test_racing's
        if "fd-central" in timings and not any(t.cycles for t in timings.values()):
            return {"fd-central": "dropped by the race before its rounds: its warm call took 50x as long as jacrev's"}
        return {}

    rows = {r.strategy: r for r in measure_together(cases.get(MLP), ["jacrev", "jacfwd", "fd-central"], "cpu",
                                                    "float32", TIMED, race=race, apart=True, probe_dropped=True)}
    apart = rows["fd-central"]
    assert apart.status == "ok" and len(apart.samples) == FEWEST_ROUNDS and not apart.cycles, apart.reason
    assert apart.notes["timed_apart"] == (f"timed apart, after the rest, in {FEWEST_ROUNDS} rounds, its memory and "
                                          "work not probed: its warm call took 50x as long as jacrev's")
    assert apart.peak_bytes is None and apart.work is None and apart.f_s > 0  # t(f) is the problem's
    for name in ("jacrev", "jacfwd"):
        assert rows[name].peak_bytes >= rows[name].jac_bytes and rows[name].work["fevals"] >= 1 and rows[name].f_s > 0
    for row in rows.values():
        assert row.status == "ok" and set(row.spent) == {"gate", "rounds", "probes"}, row.spent
        assert all(v > 0 for v in row.spent.values()) and row.seconds == pytest.approx(sum(row.spent.values()))
    # the cycles' window is shared among those timed in it; the one sent apart adds its own rounds
    assert rows["jacrev"].spent["rounds"] == rows["jacfwd"].spent["rounds"] < apart.spent["rounds"]
    assert rows["jacrev"].cycles and rows["jacfwd"].cycles


def test_one_sent_apart_whose_call_fills_a_round_has_its_warm_call_as_its_first_round(temporary_strategy):
    calls = []

    def slow(fn, xs, create_graph=False):  # right, and a round of one call: 15 ms of CPU time
        calls.append(1)
        busy(0.015)
        return strategies.get("jacrev")(fn, xs)

    temporary_strategy("test-slow", slow)
    rows = {r.strategy: r for r in measure_together(  # on the CPU clock, a busy machine disturbs no warm call
        cases.get(MLP), ["jacrev", "test-slow"], "cpu", "float32", TIMED, apart=True, cpu_clock=True,
        race=lambda timings: {"test-slow": "dropped: slow"} if not timings["jacrev"].cycles else {})}
    row = rows["test-slow"]
    assert row.status == "ok" and "timed_apart" in row.notes and not row.cycles, row.reason
    assert len(row.samples) == FEWEST_ROUNDS and min(row.samples) >= 0.015
    assert len(calls) == 1 + FEWEST_ROUNDS  # the gate's, the warm call, then two rounds


def test_advise_keeps_the_first_call_of_one_hopeless_on_it_and_warms_up_one_that_prepares(temporary_strategy):
    calls = {"slow": 0, "prepares": 0}

    def slow(fn, xs, create_graph=False):  # right, and 0.3 s a call: a thousand times jacrev's
        calls["slow"] += 1
        busy(0.3)
        return strategies.get("jacrev")(fn, xs)

    def prepares(fn, xs, create_graph=False):  # as slow on its first call only, as a compiled one is
        calls["prepares"] += 1
        busy(0.3 if calls["prepares"] == 1 else 0.0)
        return strategies.get("jacrev")(fn, xs)

    temporary_strategy("test-slow", slow)
    temporary_strategy("test-prepares", prepares, prepares=True)
    rows = {r.strategy: r for r in measure_together(cases.get(TINY), ["jacrev", "test-slow", "test-prepares"], "cpu",
                                                    "float32", TIMED, cpu_clock=True, race=pair.race)}
    row = rows["test-slow"]
    assert calls["slow"] == 1 and row.status == "ok", row.reason  # its gate's call, and no other
    assert row.notes["dropped"].startswith("dropped by the race before its rounds: its first call took")
    assert row.samples == [row.first_call_s] and row.clock == "wall" and not row.cycles
    assert calls["prepares"] > 2 and rows["test-prepares"].cycles and "dropped" not in rows["test-prepares"].notes


def test_where_torch_cannot_be_primed_no_first_call_stands_for_a_warm_one(temporary_strategy, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a transform that fails on the tiny function")

    monkeypatch.setattr(strategies.registry, "_PRIMED", {})  # this process primed afresh, for this test only
    with monkeypatch.context() as m:
        m.setattr(torch.func, "jacfwd", broken)
        assert strategies.prime("cpu") is False
    assert strategies.prime("cpu") is False  # once per process: the failure stands
    calls = []

    def slow(fn, xs, create_graph=False):  # right, and 0.3 s a call: a thousand times jacrev's
        calls.append(1)
        busy(0.3)
        return strategies.get("jacrev")(fn, xs)

    temporary_strategy("test-slow", slow)
    rows = {r.strategy: r for r in measure_together(cases.get(TINY), ["jacrev", "test-slow"], "cpu", "float32",
                                                    TIMED, cpu_clock=True, race=pair.race)}
    assert len(calls) >= 2 and "its first call" not in rows["test-slow"].notes.get("dropped", "")  # warmed up


def test_work_is_counted_not_assumed():
    loop = measure(Pair("cpu", "float32", MLP, "grad-loop"), TIMED).work
    fwd = measure(Pair("cpu", "float32", MLP, "jacfwd"), TIMED).work
    fd = measure(Pair("cpu", "float32", MLP, "fd-central"), TIMED).work
    fd_loop = measure(Pair("cpu", "float32", MLP, "fd-forward-loop"), TIMED).work
    assert (loop["vjps"], loop["vjps_calls"]) == (128, 128)
    assert (fwd["jvps"], fwd["jvps_calls"], fwd["vjps"]) == (128, 1, 0)
    assert (fd["fevals"], fd["fevals_calls"]) == (256, 1)
    assert (fd_loop["fevals"], fd_loop["fevals_calls"]) == (129, 129)


def test_a_wrong_result_is_recorded_with_its_error_and_never_timed(temporary_strategy):
    temporary_strategy("test-transposed", lambda fn, xs, create_graph=False:
                       tuple(b.T for b in strategies.textbook.jacrev(fn, xs)))
    row = measure(Pair("cpu", "float32", MLP, "test-transposed"), TIMED)
    assert row.status == "wrong" and row.error > 0.1
    assert "exceeds the tolerance" in row.reason
    assert row.samples == [] and row.peak_bytes is None


def test_an_exception_is_an_error_with_a_one_line_reason(temporary_strategy):
    def boom(fn, xs, create_graph=False):
        raise ValueError("boom\nsecond line")

    temporary_strategy("test-boom", boom)
    row = measure(Pair("cpu", "float32", MLP, "test-boom"), TIMED)
    assert (row.status, row.reason) == ("error", "ValueError: boom")


def test_a_real_cpu_out_of_memory_is_oom_and_leaves_the_next_pair_unaffected(temporary_strategy, monkeypatch):
    temporary_strategy("test-oom", lambda fn, xs, create_graph=False: torch.empty(2**48))
    before = measure(Pair("cpu", "float32", MLP, "jacrev"), TIMED).peak_bytes
    monkeypatch.setattr(memory, "_spoiled", [False])
    row = measure(Pair("cpu", "float32", MLP, "test-oom"), TIMED)
    assert row.status == "oom", row.reason
    assert "can't allocate memory" in row.reason
    assert memory.spoiled()  # a sweep goes on in a fresh process
    after = measure(Pair("cpu", "float32", MLP, "jacrev"), TIMED).peak_bytes
    assert after == before


def _let_the_recording_grow_by(nbytes, monkeypatch):
    """A profiler share that lets a recording grow by ``nbytes`` while its call runs."""
    available = memory.proc_bytes("/proc/meminfo", "MemAvailable")
    monkeypatch.setattr(memory, "PROFILER_SHARE", memory.EXPANSION * nbytes / available)


def test_a_call_over_its_memory_budget_is_stopped_and_one_within_it_is_not():
    def grow():
        hold = []
        for _ in range(64):
            hold.append(torch.ones(2**20, dtype=torch.uint8))  # 1 MB more per step
            time.sleep(0.005)
        return hold

    with pytest.raises(memory.OverBudget):
        memory.watched(grow, budget=8 * 2**20)
    held, grown = memory.watched(grow, budget=512 * 2**20)
    assert len(held) == 64 and 32 * 2**20 <= grown < 512 * 2**20


def test_a_call_of_too_many_ops_to_profile_is_still_timed_with_its_memory_said_unmeasured(temporary_strategy,
                                                                                         monkeypatch):
    def many_ops(fn, xs, create_graph=False):  # right, but its profile holds over 12 MB of events
        t = torch.zeros(())
        for _ in range(30_000):
            t = t + 1
        return strategies.textbook.jacrev(fn, xs)

    temporary_strategy("test-many-ops", many_ops)
    _let_the_recording_grow_by(4 * 2**20, monkeypatch)
    monkeypatch.setattr(memory, "_spoiled", [False])
    row = measure(Pair("cpu", "float32", MLP, "test-many-ops"), TIMED)
    assert row.status == "ok", row.reason
    assert row.samples and row.peak_bytes is None
    assert row.notes["memory"].startswith("peak memory not measured: recording every op of this call took more")
    assert memory.spoiled()  # the sweep goes on in a fresh process
    monkeypatch.undo()
    assert measure(Pair("cpu", "float32", MLP, "jacrev"), TIMED).peak_bytes >= 128 * 128 * 4


def test_an_allocation_that_fails_only_under_the_profiler_leaves_the_row_timed_with_memory_unmeasured(
        temporary_strategy, monkeypatch):
    def fails_when_recorded(fn, xs, create_graph=False):  # right, but its recording cannot be held
        if torch.autograd.profiler._is_profiler_enabled:
            torch.empty(2**48)  # a real allocation failure: 1 PiB
        return strategies.textbook.jacrev(fn, xs)

    temporary_strategy("test-fails-when-recorded", fails_when_recorded)
    monkeypatch.setattr(memory, "_spoiled", [False])
    row = measure(Pair("cpu", "float32", MLP, "test-fails-when-recorded"), TIMED)
    assert row.status == "ok", row.reason
    assert row.samples and row.peak_bytes is None
    assert row.notes["memory"] == ("peak memory not measured: an allocation failed while the profiler recorded "
                                   "this call (RuntimeError)")
    assert memory.spoiled()


def test_a_call_that_holds_a_lot_itself_is_profiled_all_the_same(temporary_strategy, monkeypatch):
    def big(fn, xs, create_graph=False):  # few ops, 256 MB of its own
        torch.ones(2**26).sum()
        return strategies.textbook.jacrev(fn, xs)

    temporary_strategy("test-big", big)
    _let_the_recording_grow_by(32 * 2**20, monkeypatch)
    row = measure(Pair("cpu", "float32", MLP, "test-big"), TIMED)
    assert row.status == "ok" and "memory" not in row.notes
    assert row.peak_bytes >= 2**28


def test_unsupported_kind_is_recorded_without_running(temporary_strategy):
    temporary_strategy("test-multi-only", lambda fn, xs, create_graph=False: 1 / 0, kinds={"multi"})
    row = measure(Pair("cpu", "float32", MLP, "test-multi-only"), TIMED)
    assert row.status == "unsupported" and "does not handle vector problems" in row.reason


def test_vmap_fallback_is_recorded(temporary_problem):
    # slogdet has no batching rule in the legacy vmap behind functional(vectorize=True).
    from cases import Built, Problem

    def build(s):
        a = s.randn(4, 4, gen=s.generator()) + 4 * torch.eye(4, dtype=s.dtype)
        return Built(lambda x: torch.linalg.slogdet(a + x.reshape(4, 4))[1].reshape(1), (s.randn(16, gen=s.generator()) * 0.1,))

    temporary_problem(Problem("test-slogdet", "test", "vector", n=16, m=1, builder=build))
    row = measure(Pair("cpu", "float64", "test-slogdet", "functional-vectorized"), TIMED)
    assert row.status == "ok" and row.fallback
    assert any("linalg" in op or "diag" in op for op in row.fallback_ops), row.fallback_ops


class FakeCuda:
    """Where no GPU exists: the allocator statistics the CUDA path reads, scripted."""

    def __init__(self):
        self.allocated, self.peak, self.emptied = 1000, 1000, 0

    def install(self, monkeypatch):
        c = torch.cuda
        monkeypatch.setattr(c, "synchronize", lambda *a: None)
        monkeypatch.setattr(c, "reset_peak_memory_stats", lambda *a: setattr(self, "peak", self.allocated))
        monkeypatch.setattr(c, "memory_allocated", lambda *a: self.allocated)
        monkeypatch.setattr(c, "max_memory_allocated", lambda *a: self.peak)
        monkeypatch.setattr(c, "empty_cache", lambda: setattr(self, "emptied", self.emptied + 1))

    def allocate(self, n):
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def free(self, n):
        self.allocated -= n


@pytest.mark.skipif(torch.cuda.is_available(), reason="a real GPU is here: test_cuda_* cover this for real")
def test_cuda_memory_path_with_a_mock(monkeypatch):
    fake = FakeCuda()
    fake.install(monkeypatch)

    def call():
        fake.allocate(500)  # temporaries
        fake.allocate(200)  # the result
        fake.free(500)
        return "result"

    assert memory.peak_bytes(call, torch.device("cuda")) == 700
    fake.allocated = 1000  # the failed call's memory is gone
    memory.release(torch.device("cuda"))
    assert fake.emptied == 1
    assert memory.peak_bytes(call, torch.device("cuda")) == 700  # the next peak is unaffected


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.cuda
@cuda
def test_cuda_pair_is_measured_and_gated():
    row = measure(Pair("cuda", "float32", MLP, "jacrev"), TIMED)
    assert row.status == "ok", row.reason
    assert row.peak_bytes >= row.jac_bytes and row.samples


@pytest.mark.cuda
@cuda
def test_cuda_out_of_memory_is_oom_and_the_next_peak_is_unaffected(temporary_strategy, monkeypatch):
    monkeypatch.setattr(memory, "_spoiled", [False])
    free, _ = torch.cuda.mem_get_info()
    temporary_strategy("test-cuda-oom", lambda fn, xs, create_graph=False:
                       torch.empty(2 * free // 4 + 2**30, device="cuda"))
    before = measure(Pair("cuda", "float32", MLP, "jacrev"), TIMED).peak_bytes
    row = measure(Pair("cuda", "float32", MLP, "test-cuda-oom"), TIMED)
    assert row.status == "oom", row.reason
    assert measure(Pair("cuda", "float32", MLP, "jacrev"), TIMED).peak_bytes == before


@pytest.mark.alone
def test_rounds_timed_beside_cpu_burners_are_flagged_disturbed():
    """Two bounded CPU-burning processes take both cores while a real pair is timed: its
    threads wait for a CPU, and the row says so. Only the flag is asserted, never a time."""
    with burning():
        settings = Settings(profile="quick", policy=Policy(warmup=1, min_rounds=20, max_time=1.0, precision=0.0,
                                                           min_round_time=0.02))
        row = measure_problem(cases.get("mlp-in128-out128-w256-d2"), strategies.get("jacrev"), "cpu", "float32",
                              settings)
    assert row.status == "ok" and len(row.delay) == len(row.switches) == len(row.samples) == len(row.cpu) >= 20
    assert sum(row.delay) > 0 and row.disturbed > 0.25, (row.delay, row.samples)


def test_an_unregistered_problem_goes_through_measure_problem():
    def build(s):
        net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(s.device, s.dtype).requires_grad_(False)
        gen = s.generator()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(s.randn(*p.shape, gen=gen))  # drawn in float64, then cast: the same net in both dtypes
        return cases.Built(net, (s.cast(torch.linspace(-1, 1, 4, dtype=torch.float64)),), module=net)

    problem = cases.Problem("adhoc-test-net", "test", "vector", n=4, m=3, builder=build)
    row = measure_problem(problem, strategies.get("structured"), "cpu", "float32", TIMED)
    assert row.status == "ok", row.reason
    assert kinds.reference(problem).jacobian.shape == (3, 4)

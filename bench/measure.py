"""Measuring one (device, dtype, problem, strategy) pair: gate first, then memory, work, time.

The order matters. A problem whose reference failed its audit (NOTE: [Reference audit]) is
``disputed``, and its strategies are not run. The first call is the gate: its result is
compared with the float64 reference before anything is timed, and a pair that fails it is
recorded as ``wrong`` with its error, never timed. Only a correct pair has its memory, work
and time measured, and the last timed call's result is gated again: a strategy whose answer
changes between calls is ``wrong`` too. Every failure becomes a status with a one-line
reason; nothing here raises for a bad pair.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

import cases

from . import accuracy, memory, state, strategies, training, work
from .plan import Pair, Settings
from .timing import Timer, measure as time_call

_FALLBACK = re.compile(r"batching rule for ([\w:.]+?)\.?\s")


@dataclass
class Row:
    """One pair's outcome; ``extra_info`` of its pytest-benchmark record."""

    problem: str
    strategy: str
    device: str
    dtype: str
    mode: str = ""  # reverse, forward or fd: what the strategy computes with
    fd_order: int = 0  # 0 exact, 1 forward differences, 2 central differences
    family: str = ""
    kind: str = ""
    n: int = 0
    m: int = 0
    status: str = "ok"
    reason: str = ""
    error: float | None = None
    tolerance: float | None = None
    first_call_s: float | None = None
    peak_bytes: int | None = None
    jac_bytes: int | None = None
    fallback: bool = False
    fallback_ops: list[str] = field(default_factory=list)
    work: dict | None = None
    notes: dict = field(default_factory=dict)
    problem_flops: int | None = None
    seed: int = 0
    samples: list[float] = field(default_factory=list, repr=False)
    iterations: int = 1
    precise: bool = False
    cpu: list[float] = field(default_factory=list, repr=False)  # CPU seconds per call, per round
    switches: list[int] = field(default_factory=list, repr=False)  # involuntary switches, per round
    delay: list[float | None] = field(default_factory=list, repr=False)  # seconds waiting for a CPU, per call
    disturbed: float | None = None  # the fraction of rounds disturbed (NOTE: [Disturbance])
    visits: list[dict] = field(default_factory=list)  # each visit's median, rounds, disturbed, started, seconds
    retimed: list[dict] = field(default_factory=list)  # visits dropped as disturbed: the same fields
    started: float | None = None  # when the pair started (unix time): where it sits on the run's timeline
    seconds: float | None = None  # how long the whole pair took: gate, memory, work and timing

    def info(self) -> dict:
        """Everything but the samples, which pytest-benchmark stores in its own stats."""
        d = asdict(self)
        for k in ("samples", "iterations"):
            d.pop(k)
        return d


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(exc).__name__}: {msg}"[:300]


def enable_fallback_warnings() -> None:
    """Make both vmaps warn when an op falls back to a slow loop (they are quiet by default)."""
    if hasattr(torch._C._functorch, "_set_vmap_fallback_warning_enabled"):
        torch._C._functorch._set_vmap_fallback_warning_enabled(True)
    if hasattr(torch._C, "_debug_only_display_vmap_fallback_warnings"):
        torch._C._debug_only_display_vmap_fallback_warnings(True)


def fallback_ops(caught) -> list[str]:
    """The ops named by vmap fallback warnings among recorded warnings."""
    return sorted({m.group(1) for w in caught if (m := _FALLBACK.search(str(w.message)))})


def measure(pair: Pair, settings: Settings, *, timer: Timer = time.perf_counter,
            on_checked: Callable[[Row], None] | None = None, iterations: int | None = None) -> Row:
    """Gate, then measure, one registered pair. Never raises for a failing pair."""
    return measure_problem(cases.get(pair.problem), strategies.get(pair.strategy), pair.device, pair.dtype,
                           settings, timer=timer, on_checked=on_checked, iterations=iterations)


def measure_problem(problem: cases.Problem, strategy: strategies.Strategy, device: str, dtype: str,
                    settings: Settings, *, timer: Timer = time.perf_counter,
                    on_checked: Callable[[Row], None] | None = None, iterations: int | None = None) -> Row:
    """Gate, then measure, one strategy on one problem, registered or not.

    ``on_checked`` is given the row once its first call has passed the gate, before the
    measuring that may run past the pair's time limit: what the gate found is kept even then.
    Torch's global state is restored afterwards (``state.kept``); a pair that changed it
    says so in its reason. ``iterations`` marks a later visit (NOTE: [Visits] in ``visits``):
    the calls per round of the first, and only the gate and the time are measured again.
    """
    row = Row(problem.name, strategy.name, device, dtype, strategy.mode, strategy.fd_order, family=problem.family,
              kind=problem.kind, n=problem.n, m=problem.m, problem_flops=problem.flops, seed=settings.seed)
    reason = strategy.unsupported(problem.kind, device)
    if reason:
        row.status, row.reason = "unsupported", reason
        return row
    changed: list[str] = []
    with state.kept(changed):
        _measure(row, problem, strategy, device, dtype, settings, timer, on_checked, iterations)
    left = state.left_changed(changed)
    if left:
        row.reason = f"{row.reason}; {left}" if row.reason else left
    return row


def _measure(row: Row, problem, strategy, device, dtype, settings, timer, on_checked, iterations) -> None:
    device, dtype = torch.device(device), getattr(torch, dtype)
    built = None
    try:
        torch.manual_seed(settings.seed)
        reference = accuracy.reference(problem, settings.seed)
        if reference.disputed:
            row.status, row.reason = "disputed", reference.disputed
            return
        built = problem.build(device, dtype, settings.seed)
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

        def run(s=strategy, fn=built.fn):
            if problem.kind == "penalty":
                return training.step(fn, *built.inputs, s)
            return s(fn, built.inputs)

        def call():
            with strategies.using(built.module, built.sparsity):
                return run()

        last = []

        def timed_call():  # keeps the last result, to gate it again; the one before is freed first
            last.clear()
            last.append(call())

        def gate(blocks) -> accuracy.Verdict:
            if problem.kind == "penalty":
                return training.verdict(strategy, built, blocks, reference, dtype, row.notes)
            return accuracy.check(blocks, reference, dtype, strategy.fd_order)

        enable_fallback_warnings()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = timer()
            with strategies.using(built.module, built.sparsity, notes=row.notes):
                blocks = run()
            sync()
            row.first_call_s = timer() - start
        row.fallback_ops = fallback_ops(caught)
        row.fallback = bool(row.fallback_ops)
        verdict = gate(blocks)
        row.error, row.tolerance = verdict.error, verdict.tolerance
        if not verdict.ok:
            row.status, row.reason = "wrong", _diagnosed(verdict.reason, built, strategy)
            return
        if reference.note:
            row.reason = reference.note
        row.jac_bytes = _jacobian_bytes(problem, blocks)
        del blocks
        if on_checked is not None:
            on_checked(row)

        if iterations is None:
            row.work = _count_work(problem, built, run)
        timing = time_call(timed_call, settings.policy, timer=timer, sync=sync, estimate=row.first_call_s,
                           iterations=iterations)
        row.samples, row.iterations, row.precise = timing.samples, timing.iterations, timing.precise
        row.cpu, row.switches, row.delay = timing.cpu, timing.switches, timing.delay
        row.disturbed = timing.disturbed(busy_cpu=device.type == "cpu")
        later = _later(gate, last, strategy)
        last.clear()
        if later is not None:
            row.status, row.reason, row.samples = "wrong", later, []
            return
        if iterations is not None:
            return
        try:  # last: a recording too big to finish stops the call part-way
            row.peak_bytes = memory.peak_bytes(call, device)
        except memory.Unmeasurable as exc:
            row.notes["memory"] = str(exc)
    except strategies.Unsupported as exc:
        row.status, row.reason, row.samples = "unsupported", str(exc), []
    except Exception as exc:  # noqa: BLE001 - every failure is a recorded status
        row.status = "oom" if memory.is_oom(exc) else "error"
        memory.spoiled |= row.status == "oom"
        row.reason = _diagnosed(one_line(exc), built, strategy)
        row.samples = []
    finally:
        del built
        if row.status not in ("ok", "unsupported"):
            memory.release(device)


def _later(gate, last: list, strategy) -> str | None:
    """Why the last timed call's result fails the gate that the first call passed, or None.
    An estimator is random by design: its later draw must only keep the layout and be finite."""
    if not last:
        return None
    if getattr(strategy.compute, "estimates", False):
        if all(torch.isfinite(b).all() for b in last[0]):
            return None
        return "its answer changed between calls: a later call returned NaN or infinite entries"
    verdict = gate(last[0])
    if verdict.ok:
        return None
    return f"its answer changed between calls: the first call passed the gate, a later one did not ({verdict.reason})"


def _jacobian_bytes(problem, blocks) -> int:
    """Bytes of the Jacobian itself: the result blocks, or for a penalty step (which returns
    gradients) the per-sample Jacobians it forms: batch x m x hidden."""
    if problem.kind == "penalty":
        return problem.batch * problem.m * problem.n * blocks[0].element_size()
    return sum(b.numel() * b.element_size() for b in blocks)


def _count_work(problem, built, run) -> dict | None:
    """The work counts, or None where the probe cannot follow the strategy. For a penalty
    step the probe sits on the model's head: its evaluations, VJPs and JVPs are the step's."""
    try:
        with strategies.using(built.module, built.sparsity):
            if problem.kind == "penalty":
                def probed_step(probe):
                    head = built.fn.head
                    built.fn.head = _Wrapped(probe(head))
                    try:
                        return run()
                    finally:
                        built.fn.head = head
                return work.count(probed_step).as_dict()
            return work.count(lambda probe: run(fn=probe(built.fn))).as_dict()
    except Exception:  # noqa: BLE001 - counting is best effort; the row stays valid without it
        return None


class _Wrapped(torch.nn.Module):
    """A plain function as a module, so it can stand in for a submodule."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _diagnosed(reason: str, built, strategy) -> str:
    """Prefix the graph-break diagnosis where it explains a failure: of a strategy that
    differentiates through autograd (finite differences need no graph)."""
    if built is None or strategy.mode == "fd":
        return reason
    diagnosis = accuracy.graph_break(built.fn, built.inputs)
    return f"{diagnosis}; {reason}" if diagnosis else reason

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
from typing import TYPE_CHECKING

import torch

import cases

from bench import kinds, strategies
from bench.analysis.schema import Row, Status
from bench.analysis.stats import Summary
from bench.gate import accuracy, state
from bench.measure import counting, memory
from bench.measure.timing import Timer, measure as time_call

if TYPE_CHECKING:
    from bench.sweep.plan import Pair, Settings

_FALLBACK = re.compile(r"batching rule for ([\w:.]+?)\.?\s")


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
                    on_checked: Callable[[Row], None] | None = None, iterations: int | None = None,
                    extras: bool | None = None) -> Row:
    """Gate, then measure, one strategy on one problem, registered or not.

    ``on_checked`` is given the row once its first call has passed the gate, before the
    measuring that may run past the pair's time limit: what the gate found is kept even then.
    Torch's global state is restored afterwards (``bench.gate.state.kept``); a pair that changed it
    says so in its reason. ``iterations`` marks a later visit (NOTE: [Visits] in ``bench.analysis.visits``):
    the calls per round of the first. ``extras`` says whether the work, the memory and t(f)
    are measured too: by default in the first visit only; the advisor's race measures them in
    the later visit, of the strategies left in it (NOTE: [Racing]).
    """
    row = Row.of(problem, strategy, device, dtype, settings.seed)
    reason = kinds.unsupported(strategy, problem.kind, device)
    if reason:
        row.status, row.reason = Status.UNSUPPORTED, reason
        return row
    changed: list[str] = []
    with state.kept(changed):
        _measure(row, problem, strategy, device, dtype, settings, timer, on_checked, iterations,
                 iterations is None if extras is None else extras)
    left = state.left_changed(changed)
    if left:
        row.reason = f"{row.reason}; {left}" if row.reason else left
    return row


def _measure(row: Row, problem, strategy, device, dtype, settings, timer, on_checked, iterations, extras) -> None:
    device, dtype = torch.device(device), getattr(torch, dtype)
    kind = kinds.get(problem.kind)
    built = None
    try:
        torch.manual_seed(settings.seed)
        reference = kinds.reference(problem, settings.seed)
        if reference.disputed:
            row.status, row.reason = Status.DISPUTED, reference.disputed
            return
        built = problem.build(device, dtype, settings.seed)
        sync = sync_of(device)

        def run(fn=built.fn):
            return kind.run(strategy, fn, built.inputs)

        def call():
            with strategies.using(built.module, built.sparsity):
                return run()

        last = []

        def timed_call():  # keeps the last result, to gate it again; the one before is freed first
            last.clear()
            last.append(call())

        enable_fallback_warnings()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = timer()
            with strategies.using(built.module, built.sparsity, notes=row.notes):
                result = run()
            sync()
            row.first_call_s = timer() - start
        row.fallback_ops = fallback_ops(caught)
        row.fallback = bool(row.fallback_ops)
        verdict = kind.check(strategy, built, result, reference, dtype, row.notes)
        row.error, row.tolerance = verdict.error, verdict.tolerance
        if not verdict.ok:
            row.status, row.reason = Status.WRONG, _diagnosed(verdict.reason, built, strategy)
            return
        if reference.note:
            row.reason = reference.note
        row.jac_bytes = kind.jacobian_bytes(problem, result)
        del result
        if on_checked is not None:
            on_checked(row)

        if extras:
            row.work = _count_work(kind, built, run)
        timing = time_call(timed_call, settings.policy, timer=timer, sync=sync, estimate=row.first_call_s,
                           iterations=iterations)
        row.samples, row.iterations, row.precise = timing.samples, timing.iterations, timing.precise
        row.cpu, row.switches, row.delay = timing.cpu, timing.switches, timing.delay
        row.disturbed = timing.disturbed(busy_cpu=device.type == "cpu")
        later = kind.later(strategy, built, last[0], reference, dtype, row.notes) if last else None
        last.clear()
        if later is not None:
            row.status, row.reason, row.samples = Status.WRONG, f"its answer changed between calls: {later}", []
            return
        if not extras:
            return
        row.f_s, row.f_iqr = _time_f(problem, kind, built, device, dtype, settings, timer, sync)
        try:  # last: a recording too big to finish stops the call part-way
            row.peak_bytes = memory.peak_bytes(call, device)
        except memory.Unmeasurable as exc:
            row.notes["memory"] = str(exc)
    except strategies.Unsupported as exc:
        row.status, row.reason, row.samples = Status.UNSUPPORTED, str(exc), []
    except Exception as exc:  # noqa: BLE001 - every failure is a recorded status
        row.status = Status.OOM if memory.is_oom(exc) else Status.ERROR
        if row.status == Status.OOM:
            memory.spoil()
        row.reason = _diagnosed(one_line(exc), built, strategy)
        row.samples = []
    finally:
        del built
        if row.status not in (Status.OK, Status.UNSUPPORTED):
            memory.release(device)


#: t(f) per problem, device, dtype and seed, measured once per process (a problem's pairs run together)
_F_TIMES: dict[tuple, tuple[float, float]] = {}


def _time_f(problem, kind, built, device, dtype, settings, timer, sync) -> tuple[float, float]:
    """:func:`time_f` of a built problem, once per process (the key holds the builder: two
    advised functions may share a label)."""
    key = (problem.name, problem.builder, str(device), str(dtype), settings.seed)
    if key not in _F_TIMES:
        s = time_f(kind, built.fn, built.inputs, settings.policy, timer=timer, sync=sync)
        if len(_F_TIMES) >= 8:  # the key holds the builder, and with it an advised function's inputs
            _F_TIMES.pop(next(iter(_F_TIMES)))
        _F_TIMES[key] = (s.median, s.iqr)
    return _F_TIMES[key]


def time_f(kind, fn, inputs, policy, *, timer: Timer = time.perf_counter, sync=lambda: None) -> Summary:
    """One plain evaluation of f under ``no_grad``, timed by the same harness as the strategies
    (NOTE: [Cost in units of f] in ``bench.analysis.cost``)."""
    def evaluate():
        with torch.no_grad():
            return kind.evaluate(fn, inputs)

    return time_call(evaluate, policy, timer=timer, sync=sync).summary


def sync_of(device: torch.device) -> Callable[[], None]:
    """What waits for a device's queued work inside a timed round: a synchronize on CUDA."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def _count_work(kind, built, run) -> dict | None:
    """The work counts, or None where the probe cannot follow the strategy."""
    try:
        with strategies.using(built.module, built.sparsity):
            return counting.count(lambda probe: kind.probed(run, built.fn, probe)).as_dict()
    except Exception:  # noqa: BLE001 - counting is best effort; the row stays valid without it
        return None


def _diagnosed(reason: str, built, strategy) -> str:
    """Prefix the graph-break diagnosis where it explains a failure: of a strategy that
    differentiates through autograd (finite differences need no graph)."""
    if built is None or strategy.mode == "fd":
        return reason
    diagnosis = accuracy.graph_break(built.fn, built.inputs)
    return f"{diagnosis}; {reason}" if diagnosis else reason

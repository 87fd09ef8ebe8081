"""Measuring (device, dtype, problem, strategy) pairs: the gate first, then time, work, memory.

The order matters. A problem whose reference failed its audit (NOTE: [Reference audit]) is
``disputed``, and its strategies are not run. The first call is the gate: its result is
compared with the float64 reference before anything is timed, and a pair that fails it is
recorded as ``wrong`` with its error, never timed. Only a correct pair is timed and has its
work and memory measured, and the last timed call's result is gated again: a strategy whose
answer changes between calls is ``wrong`` too. Every failure becomes a status with a
one-line reason; nothing here raises for a bad pair.

A problem's strategies are gated one at a time, then timed together, interleaved
(:func:`measure_together`, the way of the sweep and the advisor alike; NOTE: [Paired
timing] in ``bench.analysis.stats``). A pair is timed alone (:func:`measure_problem`) where
it is the only one of its problem in a process, or where the sweep process died while its
problem's pairs were timed together: alone, a crash is the pair's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
import warnings
from collections.abc import Callable

import torch

import cases

from bench import kinds, strategies
from bench.analysis import racing, visits
from bench.analysis.schema import Pair, Row, Status
from bench.analysis.stats import Summary
from bench.gate import accuracy, state
from bench.measure import counting, memory
from bench.measure.timing import FEWEST_ROUNDS, Policy, Timer, Timing, interleave, measure as time_call


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything besides the pairs that decides what a run measures."""

    profile: str = "standard"
    policy: Policy = dataclasses.field(default_factory=Policy)
    pair_timeout: float = 120.0
    threads: int = 1
    seed: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Settings":
        return cls(**{**d, "policy": Policy(**d["policy"])})


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
    are measured too: by default in the first visit only.
    """
    started = time.monotonic()
    gated = Gated(problem, strategy, device, dtype, settings, timer=timer, on_checked=on_checked,
                  extras=iterations is None if extras is None else extras)
    gated.row.spent["gate"] = time.monotonic() - started
    if gated.ready:
        with state.kept(gated.changed), gated.failures():
            with gated.spending("rounds"):
                timing = time_call(gated.call, settings.policy, timer=timer, sync=gated.sync,
                                   estimate=gated.row.first_call_s, iterations=iterations)
            with gated.spending("probes"):
                gated.finish(timing)
    return gated.done()


def measure_together(problem, names: list[str], device: str, dtype: str, settings: Settings, *,
                     cpu_clock: bool = False, race=None, apart: bool = False, probe_dropped: bool = False,
                     extras: bool = True,
                     on_start: Callable[[str], None] | None = None, on_gated: Callable[[Row], None] | None = None,
                     on_together: Callable[[list[str]], None] | None = None, beat: Callable[[], None] = lambda: None,
                     seed: int = 0) -> list[Row]:
    """Gate each strategy of ``names`` on one problem in turn, then time those that passed
    together, interleaved (``bench.measure.timing.interleave``; NOTE: [Paired timing] in
    ``bench.analysis.stats``), then finish each: the answer gated again, t(f), the memory.

    A strategy that changed torch's global state in its gate is timed apart, after the rest:
    it would change the others' rounds. ``race`` is ``interleave``'s (:func:`race`). A
    strategy it drops before any round is timed apart after the rest where ``apart`` (the
    sweep: every row keeps a median of its own), in the fewest rounds and with no probe of
    its work or memory, else keeps its warm call (the advisor);
    one it drops later keeps its rounds, and has its memory and work measured only with
    ``probe_dropped``; ``extras`` (the work, t(f) and memory; not in a later visit) is
    :class:`Gated`'s. ``on_start`` hears of each gate before it begins, ``on_gated`` sees
    each row once gated (final where it failed its gate), ``on_together`` the strategies
    about to be timed together, and ``beat`` (``interleave``'s) each cycle and each finish.
    Each row's ``spent`` holds the seconds of its gate, its rounds (its share of the cycles, or
    its own) and its probes (the answer gated again, the work, t(f) and the memory); its
    ``seconds`` are their sum. The visit of a row timed together spans the cycles (NOTE:
    [Visits]). Where a gate leaves the process spoiled (``memory.spoiled``), nothing more is
    measured: the rows of the gates that failed are returned, and no other."""
    primed = strategies.prime(device)  # torch's one-time costs, before any gate: a first call is then its own
    gated = []
    for name in names:
        if on_start is not None:
            on_start(name)
        started, since = time.time(), time.monotonic()
        g = Gated(problem, strategies.get(name), device, dtype, settings, extras=extras, probe_dropped=probe_dropped)
        g.row.started, g.row.spent["gate"] = started, time.monotonic() - since
        gated.append(g)
        if not g.ready:  # failed its gate: its row is final
            g.done()
        if on_gated is not None:
            on_gated(g.row)
        if memory.spoiled():  # a gate ran out of memory: nothing more is measured in this process
            failed = [g for g in gated if not g.ready]
            for g in gated:
                g.done()  # each freed
            return [g.row for g in failed]
    together = [g for g in gated if g.ready and not g.changed]
    alone = [g for g in gated if g.ready and g.changed]
    hopeless: list[Gated] = []  # those the race sent apart before any cycle
    on_cpu = False  # whether the rounds timed together were on the CPU clock
    if len(together) == 1:
        alone, together = together + alone, []
    if together:
        if on_together is not None:
            on_together([g.row.strategy for g in together])
        changed: list[str] = []
        started, since = time.time(), time.monotonic()
        with state.kept(changed):
            timings = interleave({g.row.strategy: g.call for g in together},
                                 {g.row.strategy: g.row.first_call_s for g in together}, settings.policy,
                                 cpu_clock=cpu_clock, busy_cpu=torch.device(device).type == "cpu",
                                 sync=together[0].sync, seed=seed, race=race, beat=beat,
                                 cold={g.row.strategy: (g.row.first_call_s, g.first_cpu) for g in together
                                       if primed and not g.strategy.prepares})
        window = {"started": started, "seconds": time.monotonic() - since}  # of every round of this visit
        on_cpu = next(iter(timings.values())).clock == "cpu"  # the warm calls waited for nothing off the CPU
        for g in together:
            timing = timings[g.row.strategy]
            g.row.spent["rounds"] = window["seconds"] / len(together)
            g.changed.extend(changed)
            if apart and timing.raced and not timing.cycles and timing.error is None:
                g.row.notes["timed_apart"] = (f"timed apart, after the rest, in {FEWEST_ROUNDS} rounds, its memory "
                                              f"and work not probed: {timing.raced.split(': ', 1)[-1]}")
                alone.append(g)
                hopeless.append(g)
                continue
            with g.spending("probes"), state.kept(g.changed):
                g.finish(timing)
            if g.row.status == Status.OK:
                g.row.visits = [{**visits.visit(g.row), **window}]
            beat()
    for g in alone:
        clock = "cpu" if g in hopeless and on_cpu else "wall"  # the others' clock
        policy, estimate, first = settings.policy, g.row.first_call_s, None  # first: its warm call, as a round
        if g in hopeless:
            # warm (by its warm-up, or by its gated first call alone), and never picked: the fewest
            # rounds that give a median and its quartiles, its warm call the first where one call
            # fills a round, and no probes, which cost several of its slow calls (NOTE: [Racing]
            # in bench.analysis.racing)
            raced = timings[g.row.strategy]
            first = raced if (raced.warm or 0.0) >= policy.min_round_time else None
            policy = dataclasses.replace(policy, warmup=0, min_rounds=FEWEST_ROUNDS - (first is not None), max_time=0.0)
            estimate = raced.warm or estimate
        with state.kept(g.changed), g.failures():
            with g.spending("rounds"):
                timing = time_call(g.call, policy, sync=g.sync, estimate=estimate,
                                   timer=time.process_time if clock == "cpu" else time.perf_counter)
            timing.clock = clock
            if first is not None and timing.iterations == 1:
                for k in ("samples", "cpu", "switches", "delay"):
                    setattr(timing, k, getattr(first, k) + getattr(timing, k))
            with g.spending("probes"):
                g.finish(timing, probes=g not in hopeless)
        beat()
    return [g.done() for g in gated]


def race(timings: dict[str, Timing]) -> dict[str, str]:
    """The strategies clearly slower than the fastest, and why: they are timed no more, and
    never recommended (NOTE: [Racing] in ``bench.analysis.racing``). An exact strategy races
    the exact ones (it is the pick however fast finite differences are); finite differences
    race them all. ``timings`` are the running strategies' (``interleave``)."""
    out = {}
    for exact in (True, False):
        rivals = {name: t for name, t in timings.items() if exact is False or is_exact(name)}
        if not any(t.cycles for t in rivals.values()):  # after the warm-up, before any round
            leader, slower = racing.hopeless({name: t.warm for name, t in rivals.items() if t.warm},
                                             {name: t.first for name, t in rivals.items() if t.first})
            why = {name: f"dropped by the race before its rounds: its {'warm' if rivals[name].warm else 'first'} call "
                         f"took {ratio:.0f}x as long as {leader}'s warm call" for name, ratio in slower.items()}
        else:
            leader, slower = racing.race({name: t.kept() for name, t in rivals.items()})
            why = {name: f"dropped by the race: {ratio} slower than {leader}" for name, ratio in slower.items()}
        out.update({name: text for name, text in why.items() if is_exact(name) == exact})
    return out


def is_exact(name: str) -> bool:
    return strategies.get(name).exact if name in strategies.STRATEGIES else True


class Gated:
    """One strategy on one problem, past its gate: built, and its first call checked against
    the reference. Where it passed (``ready``), ``call`` is the call to time and
    :meth:`finish` takes its timing: the last answer gated again, then (``extras``) the work
    count, t(f) and the memory. :meth:`done` gives the row. Every failure is a status."""

    def __init__(self, problem, strategy, device: str, dtype: str, settings: Settings, *,
                 timer: Timer = time.perf_counter, on_checked: Callable[[Row], None] | None = None,
                 extras: bool = True, probe_dropped: bool = False):
        self.row = Row.of(problem, strategy, device, dtype, settings.seed)
        self.problem, self.strategy, self.settings, self.timer, self.extras = problem, strategy, settings, timer, extras
        self.device, self.dtype = torch.device(device), getattr(torch, dtype)
        self.changed: list[str] = []
        self.ready, self.built, self.last, self.first_cpu = False, None, [], None
        self.probe_dropped = probe_dropped  # whether a strategy the race dropped has its work and memory measured
        self._done = False
        reason = kinds.unsupported(strategy, problem.kind, device)
        if reason:
            self.row.status, self.row.reason = Status.UNSUPPORTED, reason
            return
        with state.kept(self.changed), self.failures():
            self._gate(on_checked)

    def _gate(self, on_checked) -> None:
        row, problem, strategy, timer = self.row, self.problem, self.strategy, self.timer
        self.kind = kind = kinds.get(problem.kind)
        torch.manual_seed(self.settings.seed)
        self.reference = reference = kinds.reference(problem, self.settings.seed)
        if reference.disputed:
            row.status, row.reason = Status.DISPUTED, reference.disputed
            return
        self.built = built = problem.build(self.device, self.dtype, self.settings.seed)
        self.sync = sync = sync_of(self.device)
        enable_fallback_warnings()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start, start_cpu = timer(), time.process_time()
            with strategies.using(built.module, built.sparsity, notes=row.notes):
                result = self._run()
            sync()
            row.first_call_s, self.first_cpu = timer() - start, time.process_time() - start_cpu
        row.fallback_ops = fallback_ops(caught)
        row.fallback = bool(row.fallback_ops)
        verdict = kind.check(strategy, built, result, reference, self.dtype, row.notes)
        row.error, row.tolerance = verdict.error, verdict.tolerance
        if not verdict.ok:
            row.status, row.reason = Status.WRONG, _diagnosed(verdict.reason, built, strategy)
            return
        if reference.note or verdict.note:
            row.reason = "; ".join(filter(None, [verdict.note, reference.note]))
        row.jac_bytes = kind.jacobian_bytes(problem, result)
        del result
        if on_checked is not None:
            on_checked(row)
        self.ready = True

    def _run(self, fn=None):
        return self.kind.run(self.strategy, self.built.fn if fn is None else fn, self.built.inputs)

    def _call(self):
        with strategies.using(self.built.module, self.built.sparsity):
            return self._run()

    def call(self) -> None:
        """The timed call; it keeps its answer, to gate it again (the one before is freed first)."""
        self.last.clear()
        self.last.append(self._call())

    def finish(self, timing: Timing, probes: bool = True) -> None:
        """Take the timing (of the cycles kept, where interleaved; of all of them, disturbed,
        where none was kept: NOTE: [Visits] times it again), gate the last answer again,
        and measure t(f), then (``probes``) the work and the memory (``extras``; of a strategy
        the race dropped, only with ``probe_dropped``)."""
        row = self.row
        with self.failures():
            if timing.error is not None:
                raise timing.error
            kept = timing.kept() or set(timing.cycles)  # every cycle disturbed: all kept, as the evidence
            index = [i for i, c in enumerate(timing.cycles) if c in kept] if timing.cycles else range(len(timing.samples))
            rounds = lambda values: [values[i] for i in index]  # noqa: E731 - the rounds kept
            row.samples, row.cpu, row.switches, row.delay = map(rounds, (timing.samples, timing.cpu, timing.switches,
                                                                         timing.delay))
            row.iterations, row.precise, row.clock = timing.iterations, timing.precise, timing.clock
            if timing.first is not None and not timing.samples:  # dropped on its gated first call: its one time
                row.samples, row.clock, row.disturbed = [timing.first], "wall", 0.0
            elif timing.cycles:
                row.cycles = rounds(timing.cycles)
                row.wall = rounds(timing.wall) if timing.clock == "cpu" else []
                row.disturbed = len(timing.dropped) / len(timing.cycles)
                if timing.dropped:
                    row.notes["cycles_dropped"] = len(timing.dropped)
            else:
                # on the CPU clock, waiting for a CPU is no part of a round (NOTE: [Paired timing])
                row.disturbed = 0.0 if timing.clock == "cpu" else timing.disturbed(busy_cpu=self.device.type == "cpu")
            if timing.raced:
                row.notes["dropped"] = timing.raced
            later = (self.kind.later(self.strategy, self.built, self.last[0], self.reference, self.dtype, row.notes)
                     if self.last else None)
            self.last.clear()
            if later is not None:
                row.status, row.reason, row.samples = Status.WRONG, f"its answer changed between calls: {later}", []
                return
            if not self.extras:
                return
            row.f_s, row.f_iqr = _time_f(self.problem, self.kind, self.built, self.device, self.dtype, self.settings,
                                         self.timer, self.sync)  # once per problem: its cost in units of f
            if not probes or ("dropped" in row.notes and not self.probe_dropped):
                return
            row.work, grown = _count_work(self.kind, self.built, self._run, watch=self.device.type == "cpu")
            try:  # last: a recording too big to finish stops the call part-way
                row.peak_bytes = memory.peak_bytes(self._call, self.device, grown)
            except memory.Unmeasurable as exc:
                row.notes["memory"] = str(exc)

    def done(self) -> Row:
        """The row, with the global state it left changed, if any; the built problem freed.
        Once: later calls give the same row."""
        if self._done:
            return self.row
        self.built, self.ready, self._done = None, False, True
        self.row.seconds = sum(self.row.spent.values()) if self.row.spent else self.row.seconds
        left = state.left_changed(self.changed)
        if left:
            self.row.reason = f"{self.row.reason}; {left}" if self.row.reason else left
        if self.row.status not in (Status.OK, Status.UNSUPPORTED):
            memory.release(self.device)
        return self.row

    @contextlib.contextmanager
    def spending(self, phase: str):
        """Add the seconds of the block to the row's ``spent`` on ``phase``."""
        started = time.monotonic()  # a duration: not moved by the system clock being set
        try:
            yield
        finally:
            self.row.spent[phase] = self.row.spent.get(phase, 0.0) + time.monotonic() - started

    @contextlib.contextmanager
    def failures(self):
        """Every failure becomes the row's status with a one-line reason."""
        row = self.row
        try:
            yield
        except strategies.Unsupported as exc:
            row.status, row.reason, row.samples, self.ready = Status.UNSUPPORTED, str(exc), [], False
        except Exception as exc:  # noqa: BLE001 - every failure is a recorded status
            row.status = Status.OOM if memory.is_oom(exc) else Status.ERROR
            if row.status == Status.OOM:
                memory.spoil()
            row.reason = _diagnosed(one_line(exc), self.built, self.strategy)
            row.samples, self.ready = [], False


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


def _count_work(kind, built, run, watch: bool = False) -> tuple[dict | None, int | None]:
    """The work counts, or None where the probe cannot follow the strategy; with ``watch``,
    also how far the resident memory grew in the counted call (``memory.watched``), which
    spares the memory probe a call of its own (None where not watched or not counted)."""
    def counted():
        with strategies.using(built.module, built.sparsity):
            return counting.count(lambda probe: kind.probed(run, built.fn, probe)).as_dict()

    try:
        return memory.watched(counted) if watch else (counted(), None)
    except Exception:  # noqa: BLE001 - counting is best effort; the row stays valid without it
        return None, None


def _diagnosed(reason: str, built, strategy) -> str:
    """Prefix the graph-break diagnosis where it explains a failure: of a strategy that
    differentiates through autograd (finite differences need no graph)."""
    if built is None or strategy.mode == "fd":
        return reason
    diagnosis = accuracy.graph_break(built.fn, built.inputs)
    return f"{diagnosis}; {reason}" if diagnosis else reason

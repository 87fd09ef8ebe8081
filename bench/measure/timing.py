"""Timing one call: warm-up, calibration, adaptive rounds, raw samples.

The clock is injectable (``timer``) so tests can drive the stopping rule with a fake clock;
``sync`` runs inside every timed round, after the calls, so on CUDA the round ends when the
device's work has ended, not when it was queued.
"""

from __future__ import annotations

import math
import os
import random
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from bench.analysis.stats import Summary, disturbed, summarize

Timer = Callable[[], float]
Usage = Callable[[], tuple[float, int, float | None]]


def process_usage() -> tuple[float, int, float | None]:
    """The process's CPU seconds and involuntary context switches, all threads together, and
    the seconds its threads have spent runnable but waiting for a CPU (the run-queue delay
    of Linux's ``/proc/<pid>/task/<tid>/schedstat``; None where the kernel does not keep it)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_nivcsw, _run_queue_delay()


def _run_queue_delay() -> float | None:
    waited = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                waited += int(f.read().split()[1])
        except FileNotFoundError:
            continue  # a thread that ended between the listing and the read
        except (OSError, IndexError, ValueError):
            return None
    return waited / 1e9

#: the fewest rounds a median and its quartiles are taken from, however slow the call
FEWEST_ROUNDS = 3


@dataclass(frozen=True)
class Policy:
    """How long and how precisely to time one pair.

    Attributes:
        warmup: untimed calls before timing (after the gated first call).
        visits: how many times a pair is timed, each time in a fresh process at another
            moment of the run (NOTE: [Visits] in ``bench.analysis.visits``). The rules below are for the
            pair's pooled rounds: a visit's time cap is ``max_time / visits``, its fewest
            rounds ``min_rounds / visits`` (at least :data:`FEWEST_ROUNDS`) and its precision
            target ``precision * sqrt(visits)``.
        retimes: how many times, at most, a pair whose visit other work disturbed is timed
            again in a later pass (NOTE: [Visits]); 0 keeps a disturbed visit's evidence and
            times it no more.
        min_rounds: rounds taken before the time cap applies; calls so slow that these rounds
            would outlast ``min_rounds * max_time`` stop at :data:`FEWEST_ROUNDS` once that
            much time is spent (a pair of 25 s calls is not held for minutes more).
        max_rounds: rounds never exceeded.
        max_time: seconds of timed rounds after which timing stops (the time cap); warm-up
            calls also stop once they have taken this long.
        precision: target half-width of the median's 95% CI as a fraction of the median.
        min_round_time: a round repeats the call until it lasts this long, so that fast
            calls are not dominated by the clock's own cost.
    """

    warmup: int = 1
    visits: int = 1
    retimes: int = 2
    min_rounds: int = 5
    max_rounds: int = 1000
    max_time: float = 0.5
    precision: float = 0.02
    min_round_time: float = 2e-4


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)  # seconds per call, one per round
    iterations: int = 1  # calls per round
    precise: bool = False  # stopped because the target precision was reached
    cpu: list[float] = field(default_factory=list)  # CPU seconds per call, one per round
    switches: list[int] = field(default_factory=list)  # involuntary context switches, one per round
    delay: list[float | None] = field(default_factory=list)  # seconds per call waiting for a CPU, per round
    cycles: list[int] = field(default_factory=list)  # the cycle of each round, timed together (interleave)
    wall: list[float] = field(default_factory=list)  # wall seconds per call, per round (interleave)
    clock: str = "wall"  # what the samples are: "wall" (synchronized) seconds, or the process's "cpu" seconds
    dropped: list[int] = field(default_factory=list)  # cycles dropped as disturbed, for every strategy at once
    raced: str | None = None  # why the race stopped timing it (interleave)
    warm: float | None = None  # its warm-up call's seconds, by the clock, where undisturbed (interleave)
    first: float | None = None  # its first call's wall seconds, where the race judged it by that alone (interleave)
    error: BaseException | None = None  # what its call raised while timed together (interleave)

    @property
    def summary(self) -> Summary:
        return summarize(self.samples)

    def kept(self) -> dict[int, float]:
        """The samples of the cycles kept (``interleave``), by cycle."""
        dropped = set(self.dropped)
        return {c: s for c, s in zip(self.cycles, self.samples) if c not in dropped}

    def disturbed(self, busy_cpu: bool = True) -> float:
        """The fraction of rounds that were disturbed (NOTE: [Disturbance] in ``bench.analysis.stats``)."""
        k = self.iterations
        flags = [disturbed(w * k, c * k, s, None if d is None else d * k, busy_cpu=busy_cpu)
                 for w, c, s, d in zip(self.samples, self.cpu, self.switches, self.delay)]
        return sum(flags) / len(flags) if flags else 0.0


def measure(call: Callable[[], object], policy: Policy, *, timer: Timer = time.perf_counter,
            sync: Callable[[], None] = lambda: None, estimate: float | None = None,
            usage: Usage = process_usage, iterations: int | None = None) -> Timing:
    """Time ``call`` under ``policy`` (NOTE: [Median precision] in ``bench.analysis.stats``).

    Args:
        call: the work; its result is discarded.
        policy: rounds, time cap and precision target.
        timer: the clock, seconds as a float.
        sync: waits for queued device work; runs inside each timed round.
        estimate: seconds per call if already known (the first call); otherwise the warm-up
            supplies it.
        usage: the process's CPU seconds, involuntary context switches and run-queue delay,
            read around each timed round as evidence of disturbance (NOTE: [Disturbance] in
            ``bench.analysis.stats``).
        iterations: calls per round, where a pair's earlier visit fixed them (its rounds
            and these are then one sample); otherwise calibrated from the estimate.
    """

    def round_of(k: int) -> float:
        start = timer()
        for _ in range(k):
            call()
        sync()
        return (timer() - start) / k

    cap, least, target = _visit(policy)
    warm = 0.0
    for _ in range(policy.warmup):
        if warm >= cap:
            break  # a slow call is warm after its first call and one more
        estimate = round_of(1)
        warm += estimate
    if estimate is None:
        estimate = round_of(1)
    if iterations is None:
        iterations = max(1, min(10_000, math.ceil(policy.min_round_time / max(estimate, 1e-9))))

    timing = Timing(iterations=iterations)
    spent = 0.0
    while len(timing.samples) < policy.max_rounds:
        cpu, switches, delay = usage()
        sample = round_of(iterations)
        cpu_after, switches_after, delay_after = usage()
        timing.samples.append(sample)
        timing.cpu.append((cpu_after - cpu) / iterations)
        timing.switches.append(switches_after - switches)
        timing.delay.append(None if delay is None or delay_after is None else (delay_after - delay) / iterations)
        spent += sample * iterations
        if len(timing.samples) < min(least, FEWEST_ROUNDS):
            continue
        if len(timing.samples) < least and spent < least * cap:
            continue
        s = summarize(timing.samples)
        if s.median > 0 and s.ci_half <= target * s.median:
            timing.precise = True
            break
        if spent >= cap:
            break
    return timing


def interleave(calls: dict[str, Callable[[], object]], estimates: dict[str, float], policy: Policy, *,
               cpu_clock: bool = False, busy_cpu: bool = True, timer: Timer = time.perf_counter,
               cpu_timer: Timer = time.process_time, sync: Callable[[], None] = lambda: None,
               usage: Usage = process_usage, seed: int = 0,
               race: Callable[[dict[str, Timing]], dict[str, str]] | None = None,
               cold: Mapping[str, tuple[float, float]] | None = None,
               beat: Callable[[], None] = lambda: None) -> dict[str, Timing]:
    """Time several calls together, interleaved (NOTE: [Paired timing] in ``bench.analysis.stats``).

    Each cycle times one round of every call still running, in a fresh random order; each
    call's rounds are calibrated from its ``estimates`` (seconds per call) to last about
    ``policy.min_round_time``. A cycle in which a round was disturbed (NOTE: [Disturbance])
    is dropped for every call at once, so that the rounds left pair up. Timing stops once
    ``policy.min_rounds`` cycles are kept and every call's ratio to the fastest is known to
    ``policy.precision``, or once the calls still running have spent ``policy.max_time`` each
    (the time of a call the race dropped is saved, not given to the rest), never before
    :data:`FEWEST_ROUNDS` kept cycles unless three times that is spent (a machine too busy
    for any). Those three are a visit's where the policy has several (:class:`Policy`), as
    :func:`measure`'s are. ``race`` is asked which calls to time no more, and why (NOTE: [Racing] in
    ``bench.analysis.racing``): once after the warm-up (each ``Timing.warm`` known, no round
    yet), then at growing intervals; those it drops keep their rounds (dropped after the
    warm-up: the warm call as their one round). The warm-ups go in the order of the
    estimates, fastest first; for a call in ``cold``, which maps it to its first call's wall
    and CPU-clock seconds where that call stands for a warm one, the race is asked first
    with that call as its ``Timing.first`` (with ``cpu_clock``, its CPU seconds against the
    warm calls' wall seconds less their wait for a CPU: neither a busy machine nor a call
    that waits off the CPU makes it look slower than it is), and one it drops then is not
    warmed up, and has no round (its ``first``: the wall seconds). A call that raises is timed
    no more, the exception kept in its ``Timing.error``.

    With ``cpu_clock`` (one CPU thread), a round is timed by the process's CPU time, its
    wall time kept beside it: waiting for a CPU that other work holds is no part of the
    sample, so no round is dropped for it; where a call's warm call, or later its rounds,
    spent more than :data:`IDLE_SHARE` of their wall time off the CPU (a sleep, a device),
    every call goes back to the wall clock. Otherwise by the wall clock, with ``sync``
    inside the round. The usage read as evidence of disturbance is outside the timed region.

    ``beat`` is called after each call's warm-up and after each cycle, outside the timed
    rounds: a sign of life for whoever watches for a hang.
    """
    from bench.analysis.stats import disturbed

    rng = random.Random(seed)
    names = list(calls)
    estimates = dict(estimates)
    timings = {n: Timing(clock="cpu" if cpu_clock else "wall") for n in names}
    warm: dict[str, tuple] = {}  # each call's last warm-up call: wall, CPU-clock and usage seconds
    cold, unwarmed = cold or {}, {}  # unwarmed: those the race dropped on their first call, and why

    def held(w: tuple) -> float:  # a warm call's seconds as a user waits for them, less any wait for a CPU
        wall, own, _, _, waited = w
        return wall if not cpu_clock else own if waited is None else wall - waited

    for n in sorted(names, key=estimates.get):  # warm-up, fastest first: a slow call is warm after two
        if race is not None and n in cold and warm:
            # the first call by the CPU clock with one thread: no wait for a CPU lengthens it, and
            # one that waits on something else (a sleep, a device) is not made to look slower
            why = race({**{m: Timing(warm=held(w)) for m, w in warm.items()},
                        n: Timing(first=cold[n][1 if cpu_clock else 0])}).get(n)
            if why:
                unwarmed[n] = why
                continue
        spent = 0.0
        for _ in range(policy.warmup):
            if spent >= policy.max_time:
                break
            cpu, switches, delay = usage()
            start, start_cpu = timer(), cpu_timer()
            try:
                calls[n]()
                sync()
            except Exception as exc:  # noqa: BLE001 - its row says so; the others go on
                timings[n].error = exc
                break
            wall, own = timer() - start, cpu_timer() - start_cpu
            cpu_after, switches_after, delay_after = usage()
            waited = None if delay is None or delay_after is None else delay_after - delay
            estimates[n], spent = wall, spent + wall  # a warm call: the first one may have compiled
            warm[n] = (wall, own, cpu_after - cpu, switches_after - switches, waited)
        beat()
    if cpu_clock and any(wall - own - (waited or 0.0) > IDLE_SHARE * wall for wall, own, _, _, waited in warm.values()):
        cpu_clock = False  # a call waits off the CPU (a sleep, a device): the CPU clock would not see it
        for t in timings.values():
            t.clock = "wall"
    for n, (wall, own, cpu, switches, waited) in warm.items():  # an undisturbed warm call is a round of one call
        if cpu_clock or not disturbed(wall, cpu, switches, waited, busy_cpu=busy_cpu):
            timings[n].warm = own if cpu_clock else wall
    for n, t in timings.items():
        t.iterations = max(1, min(10_000, math.ceil(policy.min_round_time / max(estimates[n], 1e-9))))
    for n, why in unwarmed.items():
        timings[n].raced, timings[n].first = why, cold[n][0]
    running = [n for n in names if timings[n].error is None and n not in unwarmed]
    if race is not None and len(running) > 1:  # before the rounds, from the warm calls alone
        for n, why in race({m: timings[m] for m in running}).items():
            running.remove(n)
            t = timings[n]
            t.raced, t.iterations = why, 1
            t.samples, t.cpu, t.switches, t.delay = [t.warm], [warm[n][2]], [warm[n][3]], [warm[n][4]]
    used: dict[str, list[float]] = {n: [] for n in names}  # the CPU clock's seconds per call, per round
    waits: set[int] = set()  # the cycles in which a round waited for a CPU: disturbed on the wall clock

    def wall_clock() -> None:
        """Time by the wall clock after all: the CPU clock missed a call's waiting."""
        for n, t in timings.items():
            t.clock, t.precise = "wall", False
            if t.cycles:
                t.samples, t.dropped = list(t.wall), sorted(waits & set(t.cycles))
            elif t.samples:  # raced out after its warm call: that call's wall time
                t.samples = [warm[n][0]]

    cap, least, target = _visit(policy)  # a call's time this visit, while it runs
    spent = {n: 0.0 for n in running}  # each call's seconds in its rounds

    def capped(times: float) -> bool:  # whether the calls still running spent their caps, times this
        return sum(spent[n] for n in running) >= times * cap * len(running)

    cycle, kept, check = 0, 0, FEWEST_ROUNDS
    while running and kept < policy.max_rounds and not capped(3):  # the cycles
        order = running[:]
        rng.shuffle(order)
        waited_here = False
        for n in order:
            t, k, call = timings[n], timings[n].iterations, calls[n]
            cpu, switches, delay = usage()
            start, start_cpu = timer(), cpu_timer()
            try:
                for _ in range(k):
                    call()
                sync()
            except Exception as exc:  # noqa: BLE001 - its row says so; the others go on
                t.error = exc
                running.remove(n)
                continue
            wall, own = (timer() - start) / k, (cpu_timer() - start_cpu) / k
            cpu_after, switches_after, delay_after = usage()
            t.wall.append(wall)
            used[n].append(own)
            t.samples.append(own if t.clock == "cpu" else wall)
            t.cpu.append((cpu_after - cpu) / k)
            t.switches.append(switches_after - switches)
            t.delay.append(None if delay is None or delay_after is None else (delay_after - delay) / k)
            t.cycles.append(cycle)
            spent[n] += wall * k
            waited = None if t.delay[-1] is None else t.delay[-1] * k
            waited_here = waited_here or disturbed(wall * k, t.cpu[-1] * k, t.switches[-1], waited, busy_cpu=busy_cpu)
        on_cpu = timings[names[0]].clock == "cpu"  # one clock for all
        if waited_here:
            waits.add(cycle)
            for n in order if not on_cpu else ():
                if timings[n].cycles[-1:] == [cycle]:
                    timings[n].dropped.append(cycle)
        if on_cpu and _idles(timings, used):
            wall_clock()
            on_cpu = False
        cycle += 1
        beat()
        kept = cycle - (0 if on_cpu else len(waits))
        if kept < FEWEST_ROUNDS:
            continue
        if kept >= check:
            check = max(check + 1, math.ceil(check * 1.5))
            if race is not None and len(running) > 1:
                for n, why in race({m: timings[m] for m in running}).items():
                    running.remove(n)
                    timings[n].raced = why
            if kept >= least and _precise(timings, running, target):
                for n in running:
                    timings[n].precise = True
                break
        if capped(1):
            break
    return timings


def _visit(policy: Policy) -> tuple[float, int, float]:
    """One visit's time cap, fewest rounds and precision target (:class:`Policy`)."""
    return (policy.max_time / policy.visits,
            max(min(policy.min_rounds, FEWEST_ROUNDS), math.ceil(policy.min_rounds / policy.visits)),
            policy.precision * math.sqrt(policy.visits))


#: a call whose rounds' wall time exceeds its CPU time and its wait for a CPU by more than
#: this share is waiting on something else (a sleep, a device, another thread): the CPU clock
#: would not see what a user waits for, so the problem is timed by the wall clock
IDLE_SHARE = 0.25


def _idles(timings: dict[str, Timing], used: dict[str, list[float]]) -> bool:
    """Whether a call's median round spent more than :data:`IDLE_SHARE` of its wall time
    neither on a CPU (``used``) nor waiting for one (the run-queue delay)."""
    for n, t in timings.items():
        if t.wall:
            idle = [(w - u - (d or 0.0)) / w for w, u, d in zip(t.wall, used[n], t.delay) if w > 0]
            if idle and statistics.median(idle) > IDLE_SHARE:
                return True
    return False


def _precise(timings: dict[str, Timing], running: list[str], precision: float) -> bool:
    """Whether every running call's paired ratio to the fastest is known to ``precision``
    (half its 95% interval); of a call timed alone, its median."""
    from bench.analysis.stats import paired

    kept = {n: timings[n].kept() for n in running}
    leader = min(running, key=lambda n: summarize(kept[n].values()).median)
    own = summarize(kept[leader].values())
    if len(running) == 1:
        return own.ci_half <= precision * own.median
    return all((r.high - r.low) / 2 <= precision * r.value
               for r in (paired(kept[leader], kept[n], floor=0) for n in running if n != leader))

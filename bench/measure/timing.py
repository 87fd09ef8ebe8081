"""Timing one call: warm-up, calibration, adaptive rounds, raw samples.

The clock is injectable (``timer``) so tests can drive the stopping rule with a fake clock;
``sync`` runs inside every timed round, after the calls, so on CUDA the round ends when the
device's work has ended, not when it was queued.
"""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass, field
from typing import Callable

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

    @property
    def summary(self) -> Summary:
        return summarize(self.samples)

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

    cap = policy.max_time / policy.visits
    least = max(min(policy.min_rounds, FEWEST_ROUNDS), math.ceil(policy.min_rounds / policy.visits))
    target = policy.precision * math.sqrt(policy.visits)
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

"""Timing statistics driven by a fake clock: deterministic, no sleeping, no real time."""

import math

import pytest

from bench.analysis.stats import summarize
from bench.measure.timing import Policy, measure


class FakeClock:
    """A clock that advances only when the timed call runs, by scripted durations."""

    def __init__(self, durations, sync_cost=0.0):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0
        self.sync_cost = sync_cost

    def __call__(self) -> float:
        return self.now

    def call(self):
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1

    def sync(self):
        self.now += self.sync_cost


def test_stops_at_min_rounds_once_the_median_is_precise():
    clock = FakeClock([1e-3])
    t = measure(clock.call, Policy(warmup=1, min_rounds=5, precision=0.01), timer=clock)
    assert t.samples == [1e-3] * 5 and t.precise and t.iterations == 1
    assert clock.calls == 1 + 5  # one warm-up, five rounds


def test_noisy_calls_run_until_the_time_cap():
    clock = FakeClock([1e-3, 3e-3])  # IQR/median stays at 1: never precise
    t = measure(clock.call, Policy(warmup=0, min_rounds=3, max_time=0.1, precision=0.01), timer=clock,
                estimate=2e-3)
    assert not t.precise
    spent = sum(t.samples)
    assert spent >= 0.1 and spent - t.samples[-1] < 0.1  # stopped by the first round over the cap
    assert len(t.samples) == 50


def test_precision_is_reached_when_noise_shrinks_with_rounds():
    # 1.57 * IQR / sqrt(n) <= 2% of the median: with IQR = 10% of the median, n >= 62.
    clock = FakeClock([0.95e-3, 1.0e-3, 1.05e-3, 1.0e-3])
    t = measure(clock.call, Policy(warmup=0, min_rounds=5, max_time=10, precision=0.02), timer=clock,
                estimate=1e-3)
    s = summarize(t.samples)
    assert t.precise and s.ci_half <= 0.02 * s.median
    shorter = summarize(t.samples[:-1])
    assert shorter.ci_half > 0.02 * shorter.median  # it stopped at the first precise round


@pytest.mark.parametrize("seconds, warmups, rounds", [
    (1.0, 2, 7),  # min_rounds take 7 s, within min_rounds * max_time = 14 s: all of them
    (3.0, 1, 5),  # the fifth round passes 14 s
    (25.0, 1, 3),  # far past it: the fewest rounds a median and quartiles are taken from
])
def test_slow_calls_take_fewer_warm_ups_and_rounds(seconds, warmups, rounds):
    clock = FakeClock([seconds])
    t = measure(clock.call, Policy(warmup=2, min_rounds=7, max_time=2.0, precision=0.01), timer=clock,
                estimate=seconds)
    assert len(t.samples) == rounds and clock.calls == warmups + rounds


def test_max_rounds_bounds_everything():
    clock = FakeClock([1e-6, 5e-6])
    t = measure(clock.call, Policy(warmup=0, min_rounds=2, max_rounds=7, max_time=100, precision=1e-9,
                                   min_round_time=0), timer=clock, estimate=1e-6)
    assert len(t.samples) == 7


def test_fast_calls_are_repeated_within_a_round():
    clock = FakeClock([1e-5])
    t = measure(clock.call, Policy(warmup=1, min_rounds=3, min_round_time=2e-4), timer=clock)
    assert t.iterations == 20
    assert t.samples == pytest.approx([1e-5] * 3)  # seconds per call, not per round
    assert clock.calls == 1 + 3 * 20


def test_sync_runs_inside_the_timed_round():
    clock = FakeClock([1e-3], sync_cost=4e-3)  # the device finishes 4 ms after the call returns
    t = measure(clock.call, Policy(warmup=1, min_rounds=3), timer=clock, sync=clock.sync)
    assert t.samples == pytest.approx([5e-3] * 3)


def test_summary_statistics():
    s = summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s.n, s.median, s.q1, s.q3, s.min, s.max, s.mean) == (5, 3.0, 2.0, 4.0, 1.0, 5.0, 3.0)
    assert s.iqr == 2.0 and s.rel_iqr == pytest.approx(2 / 3) and s.noisy
    assert s.ci_half == pytest.approx(1.57 * 2 / math.sqrt(5))
    assert not summarize([1.0, 1.01, 1.02, 1.0]).noisy
    with pytest.raises(ValueError):
        summarize([])


# --- disturbance (NOTE: [Disturbance]) ---------------------------------------------------------


class FakeUsage:
    """The process's CPU time, involuntary switches and run-queue delay, scripted per timed
    round: each round reads them twice, before and after. ``delay`` is the share of the
    round's wall time spent waiting for a CPU, or None where the kernel keeps no such count."""

    def __init__(self, clock, rounds):
        self.clock, self.rounds, self.reads = clock, rounds, 0
        self.cpu, self.switches, self.delay = 0.0, 0, 0.0

    def __call__(self):
        share, switches, delay = self.rounds[(self.reads // 2) % len(self.rounds)]
        if self.reads % 2:  # after a round: it used this share of a CPU, was switched out so often
            wall = self.clock.now - self.start
            self.cpu += share * wall
            self.switches += switches
            self.delay += (delay or 0.0) * wall
        else:
            self.start = self.clock.now
        self.reads += 1
        return self.cpu, self.switches, None if delay is None else self.delay


def test_rounds_that_waited_for_a_cpu_are_disturbed():
    clock = FakeClock([0.01])
    # waited 0, 5%, 30%, 0 and 90% of the round for a CPU; switches alone decide nothing here
    usage = FakeUsage(clock, [(1.0, 0, 0.0), (1.0, 5, 0.05), (1.0, 0, 0.3), (0.2, 0, 0.0), (0.5, 1, 0.9)])
    t = measure(clock.call, Policy(warmup=0, min_rounds=5, max_rounds=5), timer=clock, sync=clock.sync,
                usage=usage)
    assert t.switches == [0, 5, 0, 0, 1]
    assert t.delay == pytest.approx([0.0, 0.0005, 0.003, 0.0, 0.009])
    assert t.cpu == pytest.approx([0.01, 0.01, 0.01, 0.002, 0.005])
    assert t.disturbed() == pytest.approx(2 / 5)


def test_without_a_run_queue_delay_switches_and_cpu_share_decide():
    clock = FakeClock([0.01])
    # quiet, switched out 5 times in 10 ms, quiet, given a fifth of a CPU, switched out once
    usage = FakeUsage(clock, [(1.0, 0, None), (1.0, 5, None), (1.9, 0, None), (0.2, 0, None), (1.0, 1, None)])
    t = measure(clock.call, Policy(warmup=0, min_rounds=5, max_rounds=5), timer=clock, sync=clock.sync,
                usage=usage)
    assert t.delay == [None] * 5
    assert t.cpu == pytest.approx([0.01, 0.01, 0.019, 0.002, 0.01])
    assert t.disturbed() == pytest.approx(2 / 5)
    assert t.disturbed(busy_cpu=False) == pytest.approx(1 / 5)  # on CUDA a waiting CPU is no evidence


def test_disturbance_rule_and_spread():
    from bench.analysis.stats import disturbed, spread

    assert disturbed(0.01, 0.01, 0, 0.002) and not disturbed(0.01, 0.002, 9, 0.0005)  # the delay decides
    assert not disturbed(1.0, 1.0, 3, None)  # three switches in a second-long round: housekeeping
    assert not disturbed(0.05, 0.1, 2, None)  # two in 50 ms: housekeeping as well
    assert disturbed(0.01, 0.01, 3, None) and disturbed(1.0, 0.4, 0, None)
    assert not disturbed(1.0, 0.4, 0, None, busy_cpu=False)
    assert not disturbed(0.01, None, None)
    assert spread([1.0] * 9 + [10.0]) == pytest.approx(1.9) and spread([2.0]) == 1.0
    assert spread([0.0] * 5 + [1.0]) == math.inf


def test_ratio_intervals_tell_a_tie_from_a_margin_deterministically():
    import random

    from bench.analysis.stats import ratio

    rng = random.Random(7)
    a = [1.0 + 0.1 * rng.random() for _ in range(25)]
    tie = ratio(a, a[::-1])
    assert tie.tie and tie.value == 1.0 and tie.low < 1.0 < tie.high
    margin = ratio(a, [1.2 * v for v in reversed(a)])
    assert not margin.tie and margin.low > 1.1 and margin.value == pytest.approx(1.2)
    assert ratio(a, [1.2 * v for v in a]) == ratio(a, [1.2 * v for v in a])  # seeded: the same answer twice
    assert str(margin).startswith("1.20x (95% interval")

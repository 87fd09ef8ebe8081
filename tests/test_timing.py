"""Timing statistics driven by a fake clock: deterministic, no sleeping, no real time."""

import math
import random

import pytest

from bench.analysis.stats import summarize
from bench.measure.timing import Policy, interleave, measure


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


# --- timed together (NOTE: [Paired timing]) ------------------------------------------------------


class DriftingClock:
    """A fake clock on which every call takes twice as long while ``slow(now, calls)`` holds
    (``calls``: how many calls ran before it)."""

    def __init__(self, slow):
        self.now, self.slow, self.calls = 0.0, slow, 0

    def __call__(self) -> float:
        return self.now

    def call(self, seconds: float):
        def run():
            self.now += seconds * (2 if self.slow(self.now, self.calls) else 1)
            self.calls += 1
        return run


QUIET = lambda: (0.0, 0, 0.0)  # noqa: E731 - no disturbance evidence


def test_a_drift_that_slows_every_call_leaves_paired_ratios_exact_where_one_after_another_does_not():
    from bench.analysis.stats import RERUN_FLOOR, paired

    policy = Policy(warmup=1, min_rounds=10, max_time=0.05, precision=0.01, min_round_time=1e-3)
    speeds = {"a": 1e-3, "b": 2e-3, "c": 3e-3}
    clock = DriftingClock(lambda now, calls: 0.1 < now < 0.2 or now > 0.3)  # slow in stretches
    apart = {}
    for name, s in speeds.items():  # one after another, as a sweep of pairs
        apart[name] = measure(clock.call(s), policy, timer=clock, usage=QUIET).summary.median
        clock.now += 0.1
    assert abs(apart["b"] / apart["a"] - 2) > 0.5  # the drift landed in one of them

    clock = DriftingClock(lambda now, calls: calls // 3 % 2 == 1)  # every other cycle (3 calls) at half speed
    t = interleave({n: clock.call(s) for n, s in speeds.items()}, speeds, policy, timer=clock, cpu_timer=clock,
                   usage=QUIET)
    assert t["a"].cycles == t["b"].cycles == t["c"].cycles and t["a"].iterations == 1
    assert {round(x, 9) for x in t["a"].samples} == {1e-3, 2e-3}  # the drift is in the rounds...
    for name, want in (("b", 2), ("c", 3)):
        r = paired(t["a"].kept(), t[name].kept())
        assert r.value == pytest.approx(want)  # ...and cancels in every cycle's ratio: the interval is the floor's
        assert r.low == pytest.approx(want / (1 + RERUN_FLOOR)) and r.high == pytest.approx(want * (1 + RERUN_FLOOR))
    assert t["a"].precise and not t["a"].dropped


def test_a_disturbed_cycle_is_dropped_for_every_call_at_once():
    clock = DriftingClock(lambda now, calls: False)
    rounds = []

    def usage():  # the run-queue delay jumps by 1 s during the 5th round of all: that round waited
        rounds.append(None)
        delay = 1.0 if len(rounds) >= 10 else 0.0
        return clock.now, 0, delay

    policy = Policy(warmup=0, min_rounds=6, max_time=1.0, precision=0.5)
    t = interleave({"a": clock.call(1e-3), "b": clock.call(2e-3)}, {"a": 1e-3, "b": 2e-3}, policy, timer=clock,
                   cpu_timer=clock, usage=usage)
    assert t["a"].dropped == t["b"].dropped == [2]  # the 3rd cycle: two usage reads per round, two rounds a cycle
    assert 2 not in t["a"].kept() and 2 not in t["b"].kept() and len(t["a"].kept()) == len(t["b"].kept()) >= 6


def test_with_the_cpu_clock_waiting_for_a_cpu_is_no_part_of_a_round_and_drops_no_cycle():
    wall, cpu = DriftingClock(lambda now, calls: False), DriftingClock(lambda now, calls: False)

    def call(seconds):
        def run():
            cpu.now += seconds
            wall.now += 3 * seconds  # it waited twice as long as it ran
        return run

    delay = iter(range(10_000))
    usage = lambda: (cpu.now, 0, float(next(delay)))  # noqa: E731 - a run-queue delay that grows every read
    t = interleave({"a": call(1e-3), "b": call(2e-3)}, {"a": 1e-3, "b": 2e-3}, Policy(warmup=0, min_rounds=5),
                   cpu_clock=True, timer=wall, cpu_timer=cpu, usage=usage)
    assert t["a"].clock == "cpu" and t["a"].samples == pytest.approx([1e-3] * len(t["a"].samples))
    assert t["a"].wall == pytest.approx([3e-3] * len(t["a"].samples))
    assert not t["a"].dropped and t["a"].precise


def test_a_call_that_raises_is_timed_no_more_and_the_others_go_on():
    clock = DriftingClock(lambda now, calls: False)
    calls = []

    def breaks():
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("out of memory, say")
        clock.now += 1e-3

    t = interleave({"ok": clock.call(1e-3), "breaks": breaks}, {"ok": 1e-3, "breaks": 1e-3},
                   Policy(warmup=1, min_rounds=5), timer=clock, cpu_timer=clock, usage=QUIET)
    assert isinstance(t["breaks"].error, RuntimeError) and len(t["ok"].samples) >= 5 and t["ok"].error is None


def test_a_call_that_waits_off_the_cpu_is_timed_by_the_wall_clock_with_the_others():
    wall, cpu = DriftingClock(lambda now, calls: False), DriftingClock(lambda now, calls: False)

    def call(seconds, sleeps):
        def run():
            cpu.now += seconds
            wall.now += seconds + sleeps  # a sleep, a device, another thread: no CPU, and no wait for one
        return run

    calls = {"a": call(1e-3, 0.0), "sleeps": call(1e-3, 4e-3), "hopeless": call(0.1, 0.0)}
    t = interleave(calls, {"a": 1e-3, "sleeps": 5e-3, "hopeless": 0.1}, Policy(warmup=1, min_rounds=5),
                   cpu_clock=True, timer=wall, cpu_timer=cpu, usage=QUIET,
                   race=lambda ts: {n: "raced" for n, x in ts.items() if x.warm and x.warm > 0.05 and not x.cycles})
    assert t["a"].clock == t["sleeps"].clock == t["hopeless"].clock == "wall"
    assert t["sleeps"].samples == pytest.approx([5e-3] * len(t["sleeps"].samples)) and len(t["a"].samples) >= 5
    assert t["hopeless"].raced and t["hopeless"].samples == pytest.approx([0.1])  # its warm call, by the wall clock


def test_a_call_hopeless_on_its_first_call_is_not_warmed_up_unless_it_prepares_on_that_call():
    from bench.measure.pair import race

    clock = DriftingClock(lambda now, calls: False)
    counted = {}

    def call(name, seconds):
        run = clock.call(seconds)

        def counting():
            counted[name] = counted.get(name, 0) + 1
            run()
        return counting

    # first calls, as gated: the leader's is 20x its warm call (torch's one-time costs are primed,
    # but a first call still builds its vmap plan); "slow" took 200x, as did "compiles", which
    # prepares on its first call, and whose warm call is as fast as the leader's
    seconds = {"jacrev": 1e-3, "jacfwd": 0.2, "jacrev-compiled": 1e-3}
    first = {"jacrev": 2e-2, "jacfwd": 0.2, "jacrev-compiled": 0.2}
    calls = {name: call(name, s) for name, s in seconds.items()}
    cold = {name: (first[name], first[name]) for name in ("jacrev", "jacfwd")}  # wall and CPU: one fake clock
    t = interleave(calls, first, Policy(warmup=1, min_rounds=5), timer=clock, cpu_timer=clock, usage=QUIET,
                   race=race, cold=cold)
    assert t["jacfwd"].raced.startswith("dropped by the race before its rounds: its first call took 200x as long as "
                                        "jacrev's warm call") and "jacfwd" not in counted
    assert t["jacfwd"].first == 0.2 and not t["jacfwd"].samples and not t["jacfwd"].cycles
    assert t["jacrev-compiled"].raced is None and t["jacrev-compiled"].cycles  # warmed up, then timed with the rest
    # a first call under the slack's reach is warmed up, and judged by its warm call
    t = interleave(calls, {**first, "jacfwd": 9e-3}, Policy(warmup=1, min_rounds=5), timer=clock, cpu_timer=clock,
                   usage=QUIET, race=race, cold={**cold, "jacfwd": (9e-3, 9e-3)})
    assert t["jacfwd"].first is None and t["jacfwd"].raced.startswith(
        "dropped by the race before its rounds: its warm call took 200x")


def test_the_time_of_a_call_the_race_dropped_is_saved_not_given_to_the_rest():
    clock = DriftingClock(lambda now, calls: False)
    rng = random.Random(0)

    def call():  # 1 ms, give or take 5%: never precise to the 0.1% asked for below
        clock.now += 1e-3 * rng.uniform(0.95, 1.05)

    calls = dict.fromkeys(("a", "b", "c", "d"), call)
    policy = Policy(warmup=1, min_rounds=5, max_time=0.05, precision=1e-3, min_round_time=1e-3)
    t = interleave(calls, dict.fromkeys(calls, 1e-3), policy, timer=clock, cpu_timer=clock, usage=QUIET,
                   race=lambda ts: {n: "raced" for n in ("c", "d") if n in ts and ts[n].cycles})
    assert len(t["c"].samples) == len(t["d"].samples) == 3  # dropped after the fewest cycles
    # a and b spend their own 50 ms each (50 rounds of 1 ms), not c's and d's too
    assert 45 <= len(t["a"].samples) == len(t["b"].samples) <= 55


def test_the_paired_interval_is_the_order_statistics_one_and_holds_the_median_as_often_as_it_says():
    import numpy as np
    from scipy.stats import quantile_test

    from bench.analysis.stats import median_interval, paired

    rng = np.random.default_rng(7)
    for n in (*range(6, 40), 97, 250, 1001):  # scipy's interval, computed another way (binomial tails)
        data = sorted(rng.lognormal(0, 0.2, n).tolist())
        want = quantile_test(data, q=float(np.median(data)), p=0.5).confidence_interval(0.95)
        assert median_interval(data) == (want.low, want.high)
    for n in range(1, 6):  # no two order statistics hold 95% with so few: the whole range
        data = sorted(rng.lognormal(0, 0.2, n).tolist())
        assert median_interval(data) == (data[0], data[-1])
    for n in (6, 10, 31):  # skewed ratios whose true median is 2: held at least 95% of the time
        draws = 2 * rng.lognormal(0, 0.3, (4000, n))
        held = [lo <= 2 <= hi for lo, hi in (median_interval(sorted(d)) for d in draws.tolist())]
        assert np.mean(held) >= 0.95
    a, b = {c: 1.0 for c in range(9)}, {c: 2.0 + 0.1 * (c % 3) for c in range(9)}
    r = paired(a, b, floor=0)
    assert (r.value, r.low, r.high) == pytest.approx((2.1, 2.0, 2.2))

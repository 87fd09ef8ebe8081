"""The race inside a problem (NOTE: [Racing]) on a fake clock: strategies whose calls take
seeded random times on a machine whose speed moves every few cycles, timed together by the
real routine (``timing.interleave``) under the advisor's policy. No wall time is read."""

from __future__ import annotations

import random

import pytest

from bench.advisor import POLICY
from bench.analysis import racing
from bench.analysis.stats import RERUN_FLOOR
from bench.measure import pair, timing

DRIFT = 0.215  # the machine's speed moves by 24% (one standard deviation, NOTE: [Visits])


class Machine:
    """A fake clock whose speed changes every ``stretch`` seconds, each call varying by its
    own ``noise`` and one in fifty stalling for up to 3x as long."""

    def __init__(self, seed: int, drift: float, stretch: float = 0.02):
        self.rng, self.drift, self.stretch = random.Random(seed), drift, stretch
        self.now, self.speed, self.until = 0.0, 1.0, stretch

    def __call__(self) -> float:
        return self.now

    def call(self, seconds: float, noise: float):
        def run():
            if self.now >= self.until:
                self.speed, self.until = self.rng.lognormvariate(0.0, self.drift), self.now + self.stretch
            t = seconds * self.speed * self.rng.lognormvariate(0.0, noise)
            if self.rng.random() < 0.02:
                t *= 1 + 2 * self.rng.random()
            self.now += t
        return run


def _race(seed: int, speeds: dict[str, float], drift: float = DRIFT) -> dict[str, str]:
    """Time ``speeds`` together as ``advise`` does; the strategies the race dropped."""
    machine = Machine(seed, drift)
    rng = random.Random(seed)
    calls = {name: machine.call(s, rng.uniform(0.03, 0.10)) for name, s in speeds.items()}
    timings = timing.interleave(calls, speeds, POLICY, timer=machine, cpu_timer=machine,
                                usage=lambda: (0.0, 0, 0.0), seed=seed, race=pair.race)
    return {name: t.raced for name, t in timings.items() if t.raced}


def test_the_race_never_drops_a_winner_only_1_2x_faster():
    speeds = {"winner": 1e-3, "runner-up": 1.2e-3, "close": 1.3e-3, "slower": 2e-3, "slow": 5e-3}
    dropped = [_race(seed, speeds) for seed in range(100)]
    assert not [d for d in dropped if "winner" in d or "runner-up" in d]
    assert sum("slow" in d for d in dropped) >= 95  # and the race does drop what is clearly slower


def test_a_clearly_slower_strategy_is_dropped():
    speeds = {"fast": 1e-3, "twice": 2e-3, "ten-times": 1e-2, "hundred-times": 0.1}
    for seed in range(20):
        dropped = _race(seed, speeds)
        assert {"ten-times", "hundred-times"} <= set(dropped) and "fast" not in dropped, (seed, dropped)
        assert dropped["hundred-times"].startswith("dropped by the race before its rounds: its warm call took")
        assert "fast" in dropped["ten-times"]


def test_only_a_hopeless_warm_call_is_dropped_before_the_rounds():
    leader, dropped = racing.hopeless({"fast": 1e-3, "slower": 9e-3, "slow": 1.2e-2, "gone": 1.0})
    assert leader == "fast" and set(dropped) == {"slow", "gone"} and dropped["gone"] == 1000


def test_strategies_tied_with_the_leader_are_kept():
    speeds = {"one": 1e-3, "same": 1e-3, "within-noise": 1.03e-3}
    for seed in range(100):
        assert _race(seed, speeds) == {}, seed


def test_the_race_reads_paired_ratios():
    fast = {c: 1e-3 * (1 + 0.3 * (c % 3)) for c in range(6)}  # the machine's speed moves by 60%
    slow = {c: 3 * s for c, s in fast.items()}  # but each cycle, slow took 3x as long
    leader, dropped = racing.race({"fast": fast, "slow": slow})
    assert leader == "fast" and set(dropped) == {"slow"}
    r = dropped["slow"]  # exact: its interval is the floor's alone (NOTE: [Paired timing])
    assert r.value == 3.0 and r.low == pytest.approx(3 / (1 + RERUN_FLOOR))
    assert r.high == pytest.approx(3 * (1 + RERUN_FLOOR))
    unpaired = {c: s for c, s in zip(range(6), sorted(slow.values(), reverse=True))}  # paired differently
    assert racing.race({"fast": fast, "slow": unpaired})[1]["slow"].low < 3.0


def test_a_first_call_alone_drops_a_strategy_only_far_beyond_a_warm_calls_reach():
    reach = racing.HOPELESS * racing.FIRST_CALL_SLACK
    leader, dropped = racing.hopeless({"fast": 1e-3, "slow": 2e-2},
                                      {"near": 0.99 * reach * 1e-3, "far": 1.01 * reach * 1e-3, "fast": 1.0})
    assert leader == "fast" and set(dropped) == {"slow", "far"}  # a warm call outranks a first call
    assert racing.hopeless({}, {"far": 1.0}) == (None, {})  # a first call never leads

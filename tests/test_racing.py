"""The advisor's race (NOTE: [Racing]) on a fake clock: strategies whose calls take seeded
random times, timed by the real stopping rule (``timing.measure``) under the advisor's
policy, in visits as ``advise`` takes them. No wall time is read."""

from __future__ import annotations

import random

from bench.advisor import POLICY
from bench.analysis import racing, visits
from bench.measure import timing

DRIFT = 0.215  # a visit's median moves by 24% (one standard deviation, NOTE: [Visits])


def _visit(rng: random.Random, seconds: float, noise: float, drift: float, iterations=None) -> timing.Timing:
    """One visit of a strategy whose calls take ``seconds``: the visit lands at a drifted
    speed, each call varies by ``noise`` and one in fifty stalls for up to 3x as long."""
    now = [0.0]
    state = seconds * rng.lognormvariate(0.0, drift)

    def call():
        t = state * rng.lognormvariate(0.0, noise)
        if rng.random() < 0.02:
            t *= 1 + 2 * rng.random()
        now[0] += t

    return timing.measure(call, POLICY, timer=lambda: now[0], usage=lambda: (0.0, 0, 0.0), iterations=iterations)


def _dropped(entrants, drift=None) -> dict:
    return racing.race(entrants, drift)[1]


def _race(seed: int, speeds: dict[str, float], drift: float = DRIFT) -> list[set[str]]:
    """Race ``speeds`` as ``advise`` does: a first visit for all, then a second for those
    left; the strategies dropped after each pass."""
    rng = random.Random(seed)
    noise = {name: rng.uniform(0.03, 0.10) for name in speeds}
    first = {name: _visit(rng, s, noise[name], drift) for name, s in speeds.items()}
    out = [set(_dropped({n: racing.Entrant(t.samples) for n, t in first.items()}))]
    later = {n: _visit(rng, speeds[n], noise[n], drift, first[n].iterations) for n in speeds if n not in out[0]}
    moved = visits.drift({"visits": [{"median": first[n].summary.median}, {"median": t.summary.median}]}
                         for n, t in later.items())
    both = {n: racing.Entrant(first[n].samples + t.samples, visits=2) for n, t in later.items()}
    out.append(set(_dropped(both, moved)))
    return out


def test_the_race_never_drops_a_winner_only_1_2x_faster():
    speeds = {"winner": 1e-3, "runner-up": 1.2e-3, "close": 1.3e-3, "slower": 2e-3, "slow": 5e-3}
    kept = sum("winner" not in set.union(*_race(seed, speeds)) for seed in range(100))
    assert kept >= 99, kept


def test_a_clearly_slower_strategy_is_dropped_after_its_brief_visit():
    speeds = {"fast": 1e-3, "twice": 2e-3, "ten-times": 1e-2, "hundred-times": 0.1}
    for seed in range(20):
        dropped = _race(seed, speeds)[0]
        assert {"ten-times", "hundred-times"} <= dropped and "fast" not in dropped, (seed, dropped)


def test_strategies_tied_with_the_leader_are_kept():
    speeds = {"one": 1e-3, "same": 1e-3, "within-noise": 1.03e-3}
    for seed in range(100):  # on a quiet machine, never dropped
        assert _race(seed, speeds, drift=0.02) == [set(), set()], seed
    kept = sum(_race(seed, speeds) == [set(), set()] for seed in range(100))  # a visit's median drifting by 24%
    assert kept >= 99, kept


def test_a_disturbed_timing_is_timed_again_not_dropped():
    fast = [1e-3 * (1 + 0.01 * k) for k in range(10)]
    slow = [10 * s for s in fast]
    assert set(_dropped({"fast": racing.Entrant(fast), "slow": racing.Entrant(slow)})) == {"slow"}
    assert _dropped({"fast": racing.Entrant(fast), "slow": racing.Entrant(slow, disturbed=True)}) == {}
    ratio = _dropped({"fast": racing.Entrant(fast), "slow": racing.Entrant(slow)})["slow"]
    assert ratio.low > 1 + racing.MARGIN and abs(ratio.value - 10) < 1e-9

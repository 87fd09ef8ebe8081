"""Racing the advisor's strategies: which of them are still worth timing. Pure Python.

NOTE: [Racing]
    ``advise`` times every strategy in one brief visit, then spends the rest of its timing
    only on those that could still win. The brief visit is the gated first call, which is
    also its warm-up, and the rounds; the work count, the memory recording and t(f) wait for
    the second visit, which only the strategies left in the race get. The race goes as a
    race of confidence intervals does (Maron and Moore's Hoeffding races): a strategy is
    dropped once the 95% interval of its median's ratio to the leader's lies wholly above
    ``1 + MARGIN``. The interval is the bootstrap
    one from the rounds (``stats.ratio``), widened by how far a visit's median may move on
    this machine (``visits.widened``): by the run's own drift where it has been measured,
    but never by less than :data:`DRIFT`, the drift measured between two runs on the 2-core
    virtual CPU (NOTE: [Visits]). With one visit each, that alone makes the interval about
    1.8x wide either way, so only a strategy about 2.7x as slow as the leader or worse is
    dropped: a wrongly dropped strategy can never win back, and a visit's median drifts
    that far. The leader, its ties and anything near it are timed in full, and the
    conclusion compares them with every visit's rounds. A strategy whose timing was
    disturbed is never dropped (its times say how busy the machine was, not how fast it
    is): it is timed again. A dropped strategy keeps its brief times, is shown with the
    ratio that dropped it, and is never recommended. On a fake clock where the winner is
    1.2x faster than the runner-up, with 3-10% noise per round, one call in fifty stalled
    and a visit's median drifting by 24%, the race kept the winner in 1100 of 1100 seeded
    trials, and two tied strategies both in 99 of 100 (``tests/test_racing.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.analysis import stats, visits

MARGIN = 0.5  # a strategy is dropped only when even the fastest it may be is this much slower
DRIFT = math.log(1.24)  # the least drift between visits assumed: a visit's median moved by 24% (NOTE: [Visits])


@dataclass(frozen=True)
class Entrant:
    """What the race knows of one strategy: its rounds so far (seconds per call), how
    many visits they came from, and whether its timing was disturbed."""

    samples: Sequence[float]
    visits: int = 1
    disturbed: bool = False


def race(entrants: Mapping[str, Entrant], drift: float | None = None) -> tuple[str | None, dict[str, stats.Ratio]]:
    """The leader (the entrant with the lowest median) and those clearly slower than it,
    each with the ratio of its median to the leader's that dropped it (NOTE: [Racing]).
    ``drift`` is the run's measured drift between visits, if any; :data:`DRIFT` is its floor."""
    timed = {name: e for name, e in entrants.items() if len(e.samples) >= 2}
    if not timed:
        return None, {}
    spread = max(DRIFT, drift or 0.0)
    medians = {name: stats.summarize(e.samples).median for name, e in timed.items()}
    leader = min(medians, key=medians.get)
    lead = timed[leader]
    out = {}
    for name, e in timed.items():
        if name == leader or e.disturbed or medians[name] <= medians[leader] * (1 + MARGIN):
            continue
        r = visits.widened(stats.ratio(lead.samples, e.samples), spread, lead.visits, e.visits)
        if r.low > 1 + MARGIN:
            out[name] = r
    return leader, out

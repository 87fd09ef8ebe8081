"""Racing the strategies of one problem: which of them are still worth timing. Pure Python.

NOTE: [Racing]
    The sweep and ``advise`` time a problem's strategies together, interleaved (NOTE:
    [Paired timing] in ``bench.analysis.stats``), and spend the timing only on those that
    could still win. Before the first cycle, a strategy whose warm-up call took
    :data:`HOPELESS` times as long as the fastest's (both undisturbed) leaves the cycles: a
    cycle lasts as long as its slowest round, and a forward-mode or finite-difference
    Jacobian of a CNN takes a second where the reverse-mode ones take milliseconds. The
    sweep times it apart, after the others, in the fewest rounds a median and its quartiles
    are taken from (``timing.FEWEST_ROUNDS``), with no second warm-up and no probe of its
    work or memory: every row of a sweep has a median of its own, and the probes, which
    would cost several of its slow calls each, go to the strategies still in the race (the
    ``probes`` of a row's ``spent``, which the closing account of ``jacbench run`` adds up).
    ``advise`` keeps its warm call and times it no more. The warm-ups go fastest first call
    first, and a strategy whose first call alone took :data:`HOPELESS` times
    :data:`FIRST_CALL_SLACK` as long as the fastest warm call so far is dropped with no warm-up
    at all (``advise`` keeps that first call as its time): torch's one-time costs are paid
    before any gate (``strategies.prime``), and a strategy that prepares on its first call
    (compiles, captures, colours: ``Strategy.prepares``) is always warmed up. Then the race goes
    as a race of confidence intervals does (Maron and Moore's Hoeffding races): after
    :data:`LEAST_CYCLES` cycles, and again at growing intervals, a strategy is dropped once the
    95% interval of its paired ratio to the leader (the median over cycles of its round over the
    leader's in the same cycle, ``stats.paired``) lies wholly above ``1 + MARGIN``. Paired
    ratios carry no drift between the two rounds of a cycle, which is why their intervals are
    honest after a few cycles; with six the interval spans the six ratios, so a strategy is
    dropped only when it was more than 1.5x slower in every one of them. A wrongly dropped
    strategy can never win back. Rounds of a cycle that was disturbed are dropped for every strategy
    (``timing.interleave``), so a busy moment drops no strategy. A dropped strategy keeps its
    rounds, is shown with the ratio that dropped it, and is never recommended; the time it would
    have had is saved, not given to the strategies still in the race (each spends its own
    ``max_time``); ``advise`` records no memory for it, the sweep does. On a fake clock where
    the winner is 1.2x faster than the runner-up, with 3-10% noise per round, one call in fifty
    stalled for up to 3x, and the machine's speed moving by 24% every few cycles, the race kept
    the winner in every one of the seeded trials of ``tests/test_racing.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from bench.analysis import stats

MARGIN = 0.5  # a strategy is dropped only when even the fastest it may be is this much slower
HOPELESS = 10.0  # before any round, a warm call this many times the fastest's is dropped
#: How much longer than a warm call a first call is taken to be at most, where the strategy
#: prepares nothing and torch's one-time costs are paid (NOTE: [Racing]). Over two ``standard``
#: sweeps (1,046 such rows each, ``python -m tests.firstcalls RESULTS.json``), a first call took
#: 3.8-4.0x its row's median at the 99th percentile, and at most 22.7x once (structured, 10 ms
#: against 0.46 ms). A first call stands for a strategy only at
#: ``HOPELESS * FIRST_CALL_SLACK`` = 100x the fastest warm call: to drop the fastest strategy
#: it would have to be 100x its own warm call, which no such first call came near.
FIRST_CALL_SLACK = 10.0
#: The fewest cycles after which a strategy may leave the race: its ratio is then the median of
#: six paired ratios, whose interval (their range) holds the true median 97% of the time; of
#: three, 75%. Two back-to-back ``standard`` runs of the MLP subset each way, alternating
#: (``python -m tests.agreement A.json B.json``): racing after three cycles, 81 of 133 ratios to
#: the problem's fastest agreed within 10% and 95 fell inside the first run's interval; after
#: six, 105 and 114, for 66-69 s of sweep against 57-58 s.
LEAST_CYCLES = 6


def race(kept: Mapping[str, Mapping[int, float]]) -> tuple[str | None, dict[str, stats.Ratio]]:
    """The leader (the strategy with the lowest median) and those clearly slower than it,
    each with its paired ratio to the leader (NOTE: [Racing]). ``kept`` maps each strategy to
    its rounds by cycle, of the cycles kept."""
    timed = {name: k for name, k in kept.items() if len(k) >= LEAST_CYCLES}
    if not timed:
        return None, {}
    medians = {name: stats.summarize(k.values()).median for name, k in timed.items()}
    leader = min(medians, key=medians.get)
    out = {}
    for name, k in timed.items():
        if name == leader or medians[name] <= medians[leader] * (1 + MARGIN):
            continue
        r = stats.paired(timed[leader], k)
        if r.low > 1 + MARGIN:
            out[name] = r
    return leader, out


def hopeless(warm: Mapping[str, float], first: Mapping[str, float] | None = None
             ) -> tuple[str | None, dict[str, float]]:
    """Before any round: the fastest warm call, and the strategies whose warm call took at
    least :data:`HOPELESS` times as long, or, of those known by their ``first`` call alone,
    whose first call took :data:`FIRST_CALL_SLACK` times that, each with its ratio to the
    fastest warm call (NOTE: [Racing]). One call each, undisturbed: on the small CNN of
    docs/advise.md, a second against a few milliseconds."""
    if not warm:
        return None, {}
    leader = min(warm, key=warm.get)
    out = {name: w / warm[leader] for name, w in warm.items() if w >= HOPELESS * warm[leader]}
    return leader, {**out, **{name: c / warm[leader] for name, c in (first or {}).items()
                              if name not in warm and c >= FIRST_CALL_SLACK * HOPELESS * warm[leader]}}

"""Statistics of raw timing samples. Pure Python: loading and reporting use it without torch.

NOTE: [Median precision]
    The sweep reports medians. The half-width of an approximate 95% confidence interval of
    the median is ``1.57 * IQR / sqrt(n)`` (McGill, Tukey and Larsen's notch, the one box
    plots draw). Timing stops once that half-width is below a target fraction of the
    median, or once the time cap is spent, whichever comes first (``bench.measure.timing.measure``).
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass

NOISE_WARNING = 0.10  # IQR / median above this marks a row as noisy

#: NOTE: [Disturbance]
#:     A round of timing was disturbed when the process's threads were ready to run and had
#:     to wait for a CPU that something else held. Linux counts that wait per thread: the
#:     run-queue delay of ``/proc/<pid>/task/<tid>/schedstat``. Each round records it beside
#:     the wall time, with the process's CPU time and involuntary context switches. Measured
#:     on an idle 2-core machine with rounds of ten 300x300 matmuls: the delay was 0 in 80%
#:     of rounds and at most 1.2% of a round's wall time. With two CPU-burning processes
#:     beside it, it was 42-68% of the wall time with 1 torch thread (in 80% of rounds) and
#:     86-150% with 2 threads (in every round); the wall time's 90th/10th percentile spread
#:     grew from 1.1-1.25 to 2.8-10. So a round is disturbed when its threads waited longer
#:     than :data:`DELAY_SHARE` of its wall time.
#:
#:     Where the kernel keeps no run-queue delay, a round is disturbed when it had at least
#:     :data:`SWITCHES` involuntary switches at more than :data:`SWITCH_RATE` a second, or
#:     when the process got less than :data:`CPU_SHARE` of one CPU over the round (its main
#:     thread was off the CPU for most of it). Switches alone mislead: on the idle machine a
#:     2-thread round of 10-50 ms often has 1 or 2 of them (housekeeping that costs
#:     microseconds). The CPU test applies where calls keep the CPU busy (the CPU device); a
#:     CUDA call that waits in a blocking synchronize is judged by switches alone.
#:
#:     Not seen by any of these: time a hypervisor steals from the virtual CPU, and other
#:     processes' use of the memory bandwidth; the load sampled across the run shows the first.
DELAY_SHARE = 0.10
SWITCHES = 3
SWITCH_RATE = 100.0
CPU_SHARE = 0.5
STALL_SPREAD = 3.0  # samples spread wider than this (p90 / p10) were stalled, not merely noisy
DISTURBED_SHARE = 0.25  # a row with more of its rounds disturbed than this is itself disturbed


def is_disturbed(share: float | None) -> bool:
    """Whether a row whose rounds were disturbed in this ``share`` is itself disturbed."""
    return share is not None and share == share and share > DISTURBED_SHARE


def disturbed(wall: float, cpu: float | None, switches: int | None, delay: float | None = None, *,
              busy_cpu: bool = True) -> bool:
    """Whether a timed round of ``wall`` seconds was disturbed, given the process's CPU
    seconds, involuntary switches and run-queue delay over it (NOTE: [Disturbance]).
    Unknown evidence (None) counts as undisturbed."""
    if delay is not None:
        return delay > DELAY_SHARE * wall
    if switches is not None and switches >= SWITCHES and switches > SWITCH_RATE * wall:
        return True
    return busy_cpu and cpu is not None and wall > 0 and cpu < CPU_SHARE * wall


def spread(samples) -> float:
    """The 90th over the 10th percentile of a row's samples: near 1 on a quiet machine."""
    data = sorted(float(s) for s in samples)
    if len(data) == 1:
        lo = hi = data[0]
    else:
        q = statistics.quantiles(data, n=10, method="inclusive")
        lo, hi = q[0], q[-1]
    return hi / lo if lo > 0 else math.inf


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float
    mean: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def rel_iqr(self) -> float:
        return self.iqr / self.median if self.median > 0 else math.inf

    @property
    def ci_half(self) -> float:
        """Half-width of the median's ~95% confidence interval (NOTE: [Median precision])."""
        return NOTCH * self.iqr / math.sqrt(self.n)

    @property
    def noisy(self) -> bool:
        return self.rel_iqr > NOISE_WARNING


def summarize(samples) -> Summary:
    data = sorted(float(s) for s in samples)
    if not data:
        raise ValueError("no samples")
    if len(data) == 1:
        q1 = med = q3 = data[0]
    else:
        q1, med, q3 = statistics.quantiles(data, n=4, method="inclusive")
    return Summary(len(data), med, q1, q3, data[0], data[-1], statistics.fmean(data))


@dataclass(frozen=True)
class Ratio:
    """How many times slower ``b`` is than ``a`` (the ratio of their medians), with a 95%
    bootstrap interval of that ratio."""

    value: float
    low: float
    high: float

    @property
    def tie(self) -> bool:
        """The interval holds 1: the two cannot be told apart within the noise."""
        return self.low <= 1.0 <= self.high

    def __str__(self) -> str:
        return f"{self.value:.2f}x (95% interval {self.low:.2f}-{self.high:.2f}x)"


#: NOTE: [Paired timing]
#:     A machine's speed drifts in stretches of about a second, and a shared machine's other
#:     work comes and goes. Two strategies timed one after the other land in different
#:     stretches, and their ratio inherits the drift; timed in one process 3.2 s each, eight
#:     strategies of one problem kept 123 of 140 ratios within 10% between processes on a
#:     quiet 2-core machine, and 22 of 140 beside two busy loops. So a problem's strategies
#:     are timed together (``bench.measure.timing.interleave``): each cycle times one round of
#:     each, in a fresh random order, and a ratio between two of them is the median over
#:     cycles of one's round over the other's in the same cycle (:func:`paired`), with the
#:     distribution-free interval of that median (:func:`median_interval`). Whatever slowed a cycle slowed both rounds
#:     in it, and cancels. Interleaved, the same eight kept 140 of 140 ratios within 10% on the
#:     quiet machine. With one CPU thread, rounds are timed by the process's CPU time, which
#:     waiting for a CPU does not inflate: beside two busy loops, interleaved CPU-time medians
#:     were 0.98-1.06x the quiet wall-time ones, and 120 of 140 ratios held within 10%.
#:
#:     The sweep and ``advise`` both time this way (``bench.measure.pair.measure_together``).
#:     This departs from the design's pair as the unit of timing: the pair stays the unit of
#:     gating, isolation and records (one pytest-benchmark record per pair, each round with
#:     its cycle), and the problem becomes the unit of timing.
#:
#:     A paired interval says how precisely one run knows its ratio; a rerun in a fresh
#:     process sees the same ratio within a few percent, not within that precision. Three
#:     ``standard`` sweeps of the MLP subset in one visit (19 problems, 8 strategies, one
#:     thread; the third beside two busy loops), the first against the other two
#:     (``python -m tests.agreement A.json B.json``): a row's ratio to its problem's fastest,
#:     paired or (timed apart) not, moved between runs by 1.8-2.0% at the median, 6.9-8.5% at
#:     the 95th percentile, and at most 9.2% between quiet runs (27.6% once, beside the busy
#:     loops). So no ratio's interval is narrower than :data:`RERUN_FLOOR` either way: it
#:     states what a rerun sees, not one run's precision. (With a 3% floor, set on five quiet
#:     ``advise`` runs of three small functions, 72% of the sweeps' rerun ratios fell inside.)
RERUN_FLOOR = 0.08
RESAMPLES = 999  # the resamples of the one bootstrap left, of a ratio of rows not timed together (:func:`ratio`)
Z95 = 1.96  # the standard normal's 97.5th percentile: a 95% interval is +-Z95 standard errors
NOTCH = 1.57  # the median's ~95% interval is +-NOTCH * IQR / sqrt(n) (NOTE: [Median precision])


def paired(a, b, *, floor: float = RERUN_FLOOR) -> Ratio:
    """b / a from rounds timed together (NOTE: [Paired timing]): ``a`` and ``b`` map a cycle
    to its round's seconds per call; the ratio is the median over the cycles both have of
    b's over a's, with the distribution-free 95% interval of that median (:func:`median_interval`),
    never narrower than ``floor`` either way (what a rerun moves; 0: this run's precision alone)."""
    common = a.keys() & b.keys()
    if not common:
        return Ratio(math.nan, math.nan, math.nan)
    r = sorted(b[c] / a[c] for c in common)
    low, high = median_interval(r)
    return _floored(Ratio(statistics.median(r), low, high), floor)


def median_interval(data: list[float]) -> tuple[float, float]:
    """The 95% interval of the median of sorted ``data`` from its order statistics: the
    interval ``scipy.stats.quantile_test(...).confidence_interval()`` gives, which holds the
    true median at least 95% of the time whatever the distribution (the sign test inverted);
    with fewer than 6 values, where no pair of order statistics reaches 95%, the whole range.
    It costs a sort, where scipy's own call costs about 1.4 ms and a bootstrap of a median
    2-9 ms: picks, racing and the timing's stop rule ask for thousands (NOTE: [Paired timing])."""
    k = _outer_ranks(len(data))
    return data[k], data[len(data) - 1 - k]


@functools.lru_cache(maxsize=None)
def _outer_ranks(n: int) -> int:
    """How many of ``n`` sorted values lie outside the median's 95% interval on each side: the
    largest k such that k or fewer of them fall below the median with a chance of at most 2.5%,
    P(Bin(n, 1/2) <= k) <= 1/40; 0 where no k is that rare. Exact, in integers."""
    k, term, tail = 0, 1, 1  # C(n, k), and the sum of C(n, i) for i <= k: P(Bin <= k) = tail / 2**n
    while 40 * tail <= 2 ** n:
        k += 1
        term = term * (n - k + 1) // k
        tail += term
    return max(k - 1, 0)


def between(a, b, a_cycles=(), b_cycles=()) -> Ratio:
    """The one ratio of every verdict (picks, ``advise``, racing, ``compare``): b's time over
    a's, paired over the cycles where both rows were timed together (:func:`paired`), else
    (fewer than :data:`PAIRED_LEAST` such cycles) of their medians (:func:`ratio`); never
    narrower than :data:`RERUN_FLOOR` either way (NOTE: [Paired timing])."""
    if is_paired(a, b, a_cycles, b_cycles):
        return paired(dict(zip(a_cycles, a)), dict(zip(b_cycles, b)))
    return _floored(ratio(a, b), RERUN_FLOOR)


def _floored(r: Ratio, floor: float) -> Ratio:
    """``r`` with its interval no narrower than ``floor`` either way."""
    return Ratio(r.value, min(r.low, r.value / (1 + floor)), max(r.high, r.value * (1 + floor)))


PAIRED_LEAST = 3  # cycles two rows must share for their ratio to be paired


def is_paired(a, b, a_cycles, b_cycles) -> bool:
    """Whether two rows' rounds pair up: each round has its cycle, and they share at least
    :data:`PAIRED_LEAST` cycles (a row timed apart, or in another visit, shares none)."""
    return (bool(a_cycles) and bool(b_cycles) and len(a_cycles) == len(a) and len(b_cycles) == len(b)
            and len(set(a_cycles) & set(b_cycles)) >= PAIRED_LEAST)


def ratio(a, b, *, resamples: int = RESAMPLES, seed: int = 0) -> Ratio:
    """median(b) / median(a), with a percentile bootstrap 95% interval that resamples each
    row's rounds independently (``scipy.stats.bootstrap``); deterministic for a seed."""
    value = float(statistics.median(b) / statistics.median(a))
    if len(a) < 2 or len(b) < 2:
        return Ratio(value, value, value)
    import numpy as np
    from scipy.stats import bootstrap  # a second's import, paid only where rows were timed apart

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)

    def statistic(x, y, axis=-1):
        return np.median(y, axis=axis) / np.median(x, axis=axis)

    result = bootstrap((a, b), statistic, n_resamples=resamples, method="percentile", vectorized=True,
                       random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return Ratio(value, float(min(low, value)), float(max(high, value)))

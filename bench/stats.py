"""Statistics of raw timing samples. Pure Python: loading and reporting use it without torch.

NOTE: [Median precision]
    The sweep reports medians. The half-width of an approximate 95% confidence interval of
    the median is ``1.57 * IQR / sqrt(n)`` (McGill, Tukey and Larsen's notch, the one box
    plots draw). Timing stops once that half-width is below a target fraction of the
    median, or once the time cap is spent, whichever comes first (``timing.measure``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

NOISE_WARNING = 0.10  # IQR / median above this marks a row as noisy


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
        return 1.57 * self.iqr / math.sqrt(self.n)

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

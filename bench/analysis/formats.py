"""How numbers are written: times, bytes, ratios with their intervals, errors. No torch."""

from __future__ import annotations

import math

import pandas as pd


def missing(v) -> bool:
    """None, NaN or pandas' NA: a value a results file did not have."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def fmt_time(seconds) -> str:
    """Three digits in the unit they round into: 999.96 us is ``1 ms``, not ``1e+03 us``."""
    if missing(seconds):
        return "-"
    seconds = float(f"{seconds:.3g}")
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_bytes(n) -> str:
    if missing(n):
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale * 999.5 / 1024:  # what rounds to 1000 of the unit below is shown in this one
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def fmt_ratio(x) -> str:
    """A speedup or slowdown: ``3.2x``, ``45x``, ``1,230x``."""
    if missing(x):
        return "-"
    return f"{x:.2g}x" if x < 10 else f"{x:,.0f}x"


def fmt_interval(x, low, high) -> str:
    """A ratio with its 95% interval: ``3.2x (2.9-3.5)``."""
    if missing(x):
        return "-"
    if missing(low) or missing(high):
        return fmt_ratio(x)
    return f"{fmt_ratio(x)} ({fmt_ratio(low).rstrip('x')}-{fmt_ratio(high)})"


def fmt_error(e) -> str:
    if missing(e):
        return "-"
    return "0" if e == 0 else f"{e:.1e}"


def fmt_pct(x) -> str:
    return "-" if missing(x) else f"{100 * x:.0f}%"

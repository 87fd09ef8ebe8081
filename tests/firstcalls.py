"""A MEASUREMENT of how far a first call stands from its row's median, not a test.

For the ``ok`` rows of a results file whose strategy prepares nothing on its first call
(``Strategy.prepares``), the first call's seconds over the row's median: per strategy, and
over all of them, at the median, the 99th percentile and the most. This is what
``bench.analysis.racing.FIRST_CALL_SLACK`` rests on (NOTE: [Racing]).

``python -m tests.firstcalls RESULTS.json``
"""

from __future__ import annotations

import sys

from bench import strategies
from bench.analysis import results


def ratios(path: str):
    frame = results.load([path])
    ok = frame[(frame["status"] == "ok") & frame["median"].notna()]
    ok = ok[[not strategies.get(s).prepares for s in ok["strategy"]]]
    return ok.assign(ratio=ok["first_call_s"] / ok["median"])


if __name__ == "__main__":
    rows = ratios(sys.argv[1])
    by = rows.groupby("strategy")["ratio"].describe(percentiles=[0.5, 0.99])[["count", "50%", "99%", "max"]]
    print(by.sort_values("max").round(1).to_string())
    worst = rows.loc[rows["ratio"].idxmax()]
    print(f"{len(rows)} rows: first call over median {rows['ratio'].median():.2f}x at the median, "
          f"{rows['ratio'].quantile(0.99):.2f}x at the 99th percentile, {worst['ratio']:.1f}x at most "
          f"({worst['problem']} {worst['strategy']})")

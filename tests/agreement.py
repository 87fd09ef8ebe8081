"""A MEASUREMENT of how well two results files of the same plan agree, not a test.

For the rows timed in both: the medians within 10%; each row's ratio to its problem's
fastest (by the first file) within 10%, and inside the first file's stated interval; the
spread of those moves; and the exact pick per problem where the first file's margin excludes
1, and overall. Ratios are the picks' own (``picks.row_ratio``: paired where timed together).

``python -m tests.agreement FIRST.json SECOND.json``
"""

from __future__ import annotations

import math
import sys

import numpy as np

from bench.analysis import picks, results

KEY = ["device", "dtype", "problem", "strategy"]


def agreement(first: str, second: str) -> str:
    a, b = (results.load([p]) for p in (first, second))
    ra, rb = a.set_index(KEY), b.set_index(KEY)
    ok = [k for k in ra.index if k in rb.index and ra.loc[k, "status"] == "ok" == rb.loc[k, "status"]]
    medians = [abs(math.log(rb.loc[k, "median"] / ra.loc[k, "median"])) for k in ok]
    moves, inside = [], 0
    for problem, g in a[a["status"] == "ok"].groupby(KEY[:3]):
        fastest = (*problem, g.sort_values("median")["strategy"].iloc[0])
        for k in [(*problem, s) for s in g["strategy"]]:
            if k == fastest or k not in ok or fastest not in ok:
                continue
            x, y = ([side.loc[j].to_dict() | {"strategy": j[3]} for j in (fastest, k)] for side in (ra, rb))
            first_r, second_r = picks.row_ratio(*x), picks.row_ratio(*y)
            moves.append(abs(math.log(second_r.value / first_r.value)))
            inside += first_r.low <= second_r.value <= first_r.high
    pa, pb = (picks.best_per_problem(f).set_index("problem") for f in (a, b))
    shared = [p for p in pa.index if p in pb.index]
    sure = [p for p in shared if (pa.loc[p, "exact_margin_low"] or 0) > 1]
    same = lambda ps: sum(pa.loc[p, "exact_strategy"] == pb.loc[p, "exact_strategy"] for p in ps)  # noqa: E731
    within = lambda xs: sum(x <= math.log(1.1) for x in xs)  # noqa: E731
    spread = ", ".join(f"{math.expm1(q):.1%}" for q in np.quantile(moves, [0.5, 0.95, 1.0]))
    return (f"rows timed in both: {len(ok)}; medians within 10%: {within(medians)}/{len(ok)}; ratios to the "
            f"problem's fastest within 10%: {within(moves)}/{len(moves)}, inside the first run's interval: "
            f"{inside}/{len(moves)}, moved by (median, 95th percentile, most) {spread}; the same exact pick "
            f"where the margin excludes 1: {same(sure)}/{len(sure)}, overall: {same(shared)}/{len(shared)}")


if __name__ == "__main__":
    print(agreement(*sys.argv[1:3]))

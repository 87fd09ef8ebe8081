"""A CROSS-CHECK of a results file's CPU medians against ``torch.utils.benchmark``, not a test.

Each timed CPU row of the file is gated again as the sweep gates it, then timed by
``torch.utils.benchmark.Timer.blocked_autorange`` with the thread count the run used; the
file's median over that one is printed per row, with the share within 10%, their geometric
mean and the worst. The two are taken minutes apart, so a drifting machine shows up here as
a spread that no pairing can cancel.

``python -m tests.crosscheck RESULTS.json [SECONDS]`` (each row's ``min_run_time``, 0.3 s).
"""

from __future__ import annotations

import math
import sys

import torch
import torch.utils.benchmark as tb

import cases

from bench import strategies
from bench.analysis import results
from bench.measure.pair import Gated
from bench.sweep.plan import Settings


def crosscheck(path: str, seconds: float = 0.3) -> list[tuple[str, float]]:
    frame = results.load([path])
    rows = frame[(frame.status == "ok") & (frame.device == "cpu")]
    threads = int(rows["threads"].iloc[0]) if "threads" in rows and len(rows) else 1
    settings = Settings(threads=threads)
    out = []
    for r in rows.to_dict("records"):
        g = Gated(cases.get(r["problem"]), strategies.get(r["strategy"]), "cpu", r["dtype"], settings, extras=False)
        if not g.ready:
            continue
        measured = tb.Timer(stmt="call()", globals={"call": g.call}, num_threads=threads).blocked_autorange(
            min_run_time=seconds)
        g.done()
        ratio = r["median"] / measured.median
        out.append((f"{r['problem']} {r['strategy']}", ratio))
        print(f"{r['problem']:34} {r['strategy']:24} {r['median'] * 1e3:9.3f} ms  {ratio:5.2f}x", flush=True)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    found = crosscheck(sys.argv[1], *map(float, sys.argv[2:3]))
    ratios = [r for _, r in found]
    within = sum(abs(r - 1) <= 0.10 for r in ratios)
    geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
    worst = max(found, key=lambda x: abs(math.log(x[1])))
    print(f"{within} of {len(ratios)} medians within 10% of torch.utils.benchmark's; geometric mean {geo:.3f}, "
          f"worst {worst[1]:.2f}x ({worst[0]})")

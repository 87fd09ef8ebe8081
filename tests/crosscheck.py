"""A CROSS-CHECK of jacbench's timing against ``torch.utils.benchmark``, not a test.

Each timed CPU row of a results file is gated again as the sweep gates it, then timed
alternately, side by side, by jacbench (``bench.measure.timing.measure`` under the file's
policy, on the clock the run used) and by ``torch.utils.benchmark.Timer.blocked_autorange``
with the thread count the run used, ``ROUNDS`` times each; the ratio of the two medians of
medians is printed per row, with the share within 10%, their geometric mean and the worst.
Taken side by side, the two see the same machine: a drift between the run and this check,
which no timing method can cancel (``tests.agreement`` measures it), is no part of the
ratio. ``--file`` compares the file's own medians instead, taken minutes before.

``python -m tests.crosscheck RESULTS.json [SECONDS] [--file]`` (each ``min_run_time``, 0.3 s).
"""

from __future__ import annotations

import math
import statistics
import sys
import time

import torch
import torch.utils.benchmark as tb

import cases

from bench import strategies
from bench.analysis import results
from bench.measure.pair import Gated
from bench.measure.timing import Policy, measure
from bench.measure.pair import Settings


ROUNDS = 3  # alternations of the two methods per row


def crosscheck(path: str, seconds: float = 0.3, file: bool = False) -> list[tuple[str, float]]:
    frame = results.load([path])
    rows = frame[(frame.status == "ok") & (frame.device == "cpu")]
    threads = int(rows["threads"].iloc[0]) if "threads" in rows and len(rows) else 1
    settings = Settings(threads=threads)
    policy = Policy(**results.read(path)["jacbench"]["settings"]["policy"])  # the run's, as it timed alone
    out = []
    for r in rows.to_dict("records"):
        g = Gated(cases.get(r["problem"]), strategies.get(r["strategy"]), "cpu", r["dtype"], settings, extras=False)
        if not g.ready:
            continue
        timer = time.process_time if r.get("clock") == "cpu" else time.perf_counter
        ours, theirs = [], []
        for _ in range(1 if file else ROUNDS):
            if not file:
                ours.append(measure(g.call, policy, timer=timer, estimate=r["first_call_s"]).summary.median)
            theirs.append(tb.Timer(stmt="call()", globals={"call": g.call}, num_threads=threads).blocked_autorange(
                min_run_time=seconds).median)
        g.done()
        mine = r["median"] if file else statistics.median(ours)
        ratio = mine / statistics.median(theirs)
        out.append((f"{r['problem']} {r['strategy']}", ratio))
        print(f"{r['problem']:34} {r['strategy']:24} {mine * 1e3:9.3f} ms  {ratio:5.2f}x", flush=True)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    args = [a for a in sys.argv[1:] if a != "--file"]
    found = crosscheck(args[0], *map(float, args[1:2]), file="--file" in sys.argv)
    ratios = [r for _, r in found]
    within = sum(abs(r - 1) <= 0.10 for r in ratios)
    geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
    worst = max(found, key=lambda x: abs(math.log(x[1])))
    print(f"{within} of {len(ratios)} medians within 10% of torch.utils.benchmark's; geometric mean {geo:.3f}, "
          f"worst {worst[1]:.2f}x ({worst[0]})")

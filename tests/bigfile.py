"""A RENDERING FIXTURE, not results: a real results file scaled up to many rows, to measure and
test what the report does with a big sweep (a 100k-row file is the size of several ``full``
sweeps of a GPU box across dtypes).

``scale(doc, rows)`` copies the file's records (timed and untimed alike) onto more platforms and
sizes, the way a bigger sweep would have them: copy k runs in dtype ``DTYPES[k % 4]`` (a platform
of its own in the report) at size rung ``k // 4``, where every problem is renamed
``NAME-r{rung}`` (so each family gains a size ladder of problems whose names differ only in a
number, and its shapes n:m keep their ratios) with n and m times ``GROWTH ** rung``. A copy's
raw samples are the original's, scaled by the size (more for row loops than for batched
strategies) and jittered, so medians, IQRs, ties and noise look like a real run's; its stats
are recomputed from them. Memory scales with the Jacobian, ``started`` times follow one another
as in one long run, and the load samples are repeated across it. The result is valid for
``bench.analysis.results.read``.

``python -m tests.bigfile SRC.json ROWS OUT.json`` writes one.
"""

from __future__ import annotations

import copy
import json
import math
import random
import statistics
import sys
from pathlib import Path

DTYPES = ("float32", "float64", "bfloat16", "float16")
ITEMSIZE = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
GROWTH = 2 ** 0.25  # n and m grow by this at each rung: the Jacobian doubles every two rungs
LOOPS = ("manual-backward", "grad-loop", "functional", "fd-forward-loop", "fd-central-loop", "batch-loop")


def _stats(data: list[float], iterations: int) -> dict:
    """pytest-benchmark's stats of raw samples (the fields ``pytest-benchmark compare`` reads)."""
    q1, median, q3 = statistics.quantiles(data, n=4, method="inclusive") if len(data) > 1 else [data[0]] * 3
    mean = statistics.fmean(data)
    return {"min": min(data), "max": max(data), "mean": mean,
            "stddev": statistics.stdev(data) if len(data) > 1 else 0.0, "rounds": len(data),
            "median": median, "iqr": q3 - q1, "q1": q1, "q3": q3, "total": sum(data),
            "ops": 1 / mean if mean else 0.0, "data": data, "iterations": iterations}


def _copy(rec: dict, k: int, rng: random.Random, shift: float) -> dict:
    """Copy ``k`` of one record: its dtype, rung, sizes, timings and memory."""
    rec = copy.deepcopy(rec)
    info = rec["extra_info"]
    rung, dtype = divmod(k, len(DTYPES))[0], DTYPES[k % len(DTYPES)]
    grow = GROWTH ** rung
    old_dtype, info["dtype"] = info["dtype"], dtype
    if rung:
        info["problem"] = f"{info['problem']}-r{rung}"
        info["n"], info["m"] = max(1, round(info["n"] * grow)), max(1, round(info["m"] * grow))
        if info.get("problem_flops"):
            info["problem_flops"] = info["problem_flops"] * grow
    bytes_scale = grow ** 2 * ITEMSIZE.get(dtype, 4) / ITEMSIZE.get(old_dtype, 4)
    for key in ("jac_bytes", "peak_bytes"):
        if info.get(key):
            info[key] = int(info[key] * bytes_scale)
    if info.get("error"):
        info["error"] *= math.exp(rng.gauss(0, 0.3))
    # time grows with the work: row loops by the rows they run, batched strategies less
    t_scale = grow ** (1.5 if info["strategy"] in LOOPS else 1.1) * math.exp(rng.gauss(0, 0.15))
    if info.get("first_call_s"):
        info["first_call_s"] *= t_scale
    if info.get("started"):
        info["started"] += shift
    if info.get("seconds"):
        info["seconds"] *= t_scale
    for visit in (info.get("visits") or []) + (info.get("retimed") or []):
        if isinstance(visit, dict):
            for key, factor in (("median", t_scale), ("seconds", t_scale)):
                if visit.get(key):
                    visit[key] *= factor
            if visit.get("started"):
                visit["started"] += shift
    if "stats" in rec:
        data = [x * t_scale * math.exp(rng.gauss(0, 0.02)) for x in rec["stats"]["data"]]
        rec["stats"] = _stats(data, rec["stats"].get("iterations", 1))
    pair = f"{info['device']}-{dtype}-{info['problem']}-{info['strategy']}"
    names = {"group": f"{info['device']} {dtype} {info['problem']}", "name": f"test_pair[{pair}]",
             "fullname": f"bench/sweep.py::test_pair[{pair}]", "params": {"pair": pair}, "param": pair}
    rec.update({key: value for key, value in names.items() if key in rec})
    return rec


def scale(doc: dict, rows: int, seed: int = 0) -> dict:
    """``doc`` (a parsed results file) grown to ``rows`` records, as the module says."""
    doc = copy.deepcopy(doc)
    jb = doc["jacbench"]
    timed, untimed = doc["benchmarks"], jb["untimed"]
    records = [(True, r) for r in timed] + [(False, r) for r in untimed]
    if not records:
        raise ValueError("nothing to scale: the file has no records")
    rng = random.Random(seed)
    load = jb.get("load") or []
    times = [r["extra_info"]["started"] for _, r in records if r["extra_info"].get("started")] + [s[0] for s in load]
    span = max(times) - min(times) + 1.0 if times else 0.0  # copy k runs k spans after the original
    new_timed, new_untimed, new_load = [], [], []
    k = 0
    while len(new_timed) + len(new_untimed) < rows:
        shift = k * span
        for is_timed, rec in records:
            if len(new_timed) + len(new_untimed) >= rows:
                break
            (new_timed if is_timed else new_untimed).append(_copy(rec, k, rng, shift))
        new_load += [[s[0] + shift, *s[1:]] for s in load]
        k += 1
    doc["benchmarks"], jb["untimed"], jb["load"] = new_timed, new_untimed, new_load
    jb["pairs"] = len(new_timed) + len(new_untimed)
    if jb.get("wall_s"):
        jb["wall_s"] *= k
    return doc


def main(argv=None) -> int:
    src, rows, out = (argv if argv is not None else sys.argv[1:])
    doc = scale(json.loads(Path(src).read_text()), int(rows))
    Path(out).write_text(json.dumps(doc))
    print(f"wrote {out}: {len(doc['benchmarks'])} timed and {len(doc['jacbench']['untimed'])} untimed records")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A MEASUREMENT of how often the gate's verdict on a finite-difference row flips, not a test.

Each seed builds every problem of a profile at another point (``--seed``, as ``jacbench run
--seed`` does), and the gate judges each finite-difference strategy there, exactly as a
sweep's pair does (``Kind.check``), untimed. A row (problem, strategy, dtype) flips when its
verdicts over the seeds are not all the same; the table gives, per dtype, the rows judged
in every seed, those that flipped, and those that stayed at their tolerance's edge.

``python -m tests.flips [--profile quick] [--seeds 10] [--dtypes float32,float64]``
"""

from __future__ import annotations

import argparse
import collections
import sys
import warnings

import torch

import cases
from bench import kinds, strategies


def verdicts(profile: str, dtypes: list[str], seeds: int, patterns: str | None = None):
    """``{(dtype, problem, strategy): [(ok, error / tolerance, note), ...]}``, a verdict per seed."""
    names = [n for n, s in strategies.STRATEGIES.items() if s.fd_order]
    out = collections.defaultdict(list)
    for seed in range(seeds):
        for problem in cases.select(patterns, profile=profile):
            kind = kinds.get(problem.kind)
            ref = kinds.reference(problem, seed)
            if ref.disputed:
                continue
            for dtype in dtypes:
                dt = getattr(torch, dtype)
                built = problem.build("cpu", dt, seed)
                for name in names:
                    strategy = strategies.get(name)
                    if kinds.unsupported(strategy, problem.kind, "cpu"):
                        continue
                    notes: dict = {}
                    try:
                        with strategies.using(built.module, built.sparsity, notes=notes), warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            result = kind.run(strategy, built.fn, built.inputs)
                            verdict = kind.check(strategy, built, result, ref, dt, notes)
                    except Exception:  # noqa: BLE001 - the sweep's error row: no verdict to flip
                        continue
                    ratio = (verdict.error or float("inf")) / verdict.tolerance
                    out[dtype, problem.name, name].append((verdict.ok, ratio, getattr(verdict, "note", "")))
        print(f"seed {seed + 1}/{seeds}", file=sys.stderr)
    return out


def table(found, seeds: int) -> str:
    lines = ["| dtype | rows judged in every seed | flipped | ok in all | wrong in all | said to sit at the edge |",
             "|---|---|---|---|---|---|"]
    flipped = []
    for dtype in dict.fromkeys(k[0] for k in found):
        rows = {k: v for k, v in found.items() if k[0] == dtype and len(v) == seeds}
        flips = [k for k, v in rows.items() if len({ok for ok, _, _ in v}) > 1]
        flipped += [(k, [f"{'ok' if ok else 'wrong'} {r:.2f}" for ok, r, _ in rows[k]]) for k in flips]
        edge = sum(any(b for _, _, b in v) for v in rows.values())
        lines.append(f"| {dtype} | {len(rows)} | {len(flips)} | {sum(all(ok for ok, _, _ in v) for v in rows.values())}"
                     f" | {sum(not any(ok for ok, _, _ in v) for v in rows.values())} | {edge} |")
    lines += [f"flipped: {k[1]} {k[2]} {k[0]}: {', '.join(v)}" for k, v in flipped]
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--dtypes", default="float32,float64")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(table(verdicts(args.profile, args.dtypes.split(","), args.seeds), args.seeds))

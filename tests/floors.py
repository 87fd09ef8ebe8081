"""A MEASUREMENT of the gate's row and column floors, not a test (NOTE: [Tolerances]).

Every exact strategy that handles the problem (compiled and CUDA-graph ones aside) is run on
every registered problem of a profile, in every dtype, and checked against the float64
reference as a whole. For each result that passes, it finds the smallest floor its rows and
its columns need, in machine epsilons: row i passes when ``max_j |J - R|_ij <= max(tol *
max_j |R_ij|, floor * eps * max|R|)``. The largest need per dtype is what
``accuracy.LINE_EPS`` must stay above, with room; the table also gives the 99th percentile
and the result that needs the most.

``python -m tests.floors [--profile standard] [--dtypes float64,float32,float16,bfloat16]``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings

import numpy as np
import torch

import cases
from bench import kinds, strategies
from bench.gate import accuracy


def needed(got: torch.Tensor, ref: torch.Tensor, tol: float, eps: float) -> tuple[float, float]:
    """The smallest floors, in machine epsilons of ``max|R|``, that let every row, and every
    column, of ``got`` pass at ``tol``."""
    err, top = (got - ref).abs(), ref.abs()
    scale = top.max().item()
    out = []
    for dim in (1, 0):  # rows (the max over columns), then columns
        e, s = err.amax(dim=dim) / scale, top.amax(dim=dim) / scale
        over = e > tol * s
        out.append(float((e[over] / eps).max()) if over.any() else 0.0)
    return out[0], out[1]


def measure(profile: str, dtypes: list[str], seed: int = 0):
    names = [n for n, s in strategies.STRATEGIES.items()
             if s.exact and not s.fd_order and "compiled" not in n and "cudagraph" not in n]
    problems = [p for p in cases.select(profile=profile) if p.kind != "penalty"]  # parts: own scales
    rows, started = [], time.monotonic()
    for i, problem in enumerate(problems):
        kind = kinds.get(problem.kind)
        ref = kinds.reference(problem, seed)
        if ref.disputed or ref.scale == 0:
            continue
        want = ref.jacobian
        for dtype in dtypes:
            dt = getattr(torch, dtype)
            built = problem.build("cpu", dt, seed)
            tol = accuracy.tolerance(dt, 0, ref)
            for name in names:
                strategy = strategies.get(name)
                if kinds.unsupported(strategy, problem.kind, "cpu"):
                    continue
                try:
                    with strategies.using(built.module, built.sparsity), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        got = accuracy.flatten(kind.run(strategy, built.fn, built.inputs), ref.m)
                except Exception:  # noqa: BLE001 - a strategy that fails here is the sweep's error row
                    continue
                if got.shape != want.shape or not torch.isfinite(got).all():
                    continue
                whole = accuracy._relative(got, want)
                if whole > tol:
                    continue
                row, col = needed(got, want, tol, torch.finfo(dt).eps)
                rows.append((dtype, problem.name, name, whole / tol, row, col))
        print(f"[{i + 1}/{len(problems)}] {problem.name} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return rows


def table(rows) -> str:
    lines = ["| dtype | results | rows: largest floor needed, eps (result) | rows: 99th pct | "
             "columns: largest (result) | columns: 99th pct |", "|---|---|---|---|---|---|"]
    for dtype in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == dtype]
        cells = [dtype, str(len(mine))]
        for k in (4, 5):
            worst = max(mine, key=lambda r: r[k])
            cells += [f"{worst[k]:.2g} ({worst[1]}, {worst[2]})", f"{np.quantile([r[k] for r in mine], 0.99):.2g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--dtypes", default="float64,float32,float16,bfloat16")
    args = ap.parse_args()
    torch.set_num_threads(1)
    measured = measure(args.profile, args.dtypes.split(","))
    print(table(measured))
    print(f"largest whole error / tolerance among them: {max(r[3] for r in measured):.2g}"
          if measured else "nothing passed", file=sys.stderr if not measured else sys.stdout)
    sys.exit(0 if measured and all(math.isfinite(r[4]) for r in measured) else 1)

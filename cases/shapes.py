"""Shape sweep: one smooth map at every input:output ratio from 1:4096 to 4096:1.

``shape-in{n}-out{m}`` is ``y = tanh(W x + b)`` with ``W`` an m x n matrix: one layer, so the
cost of an evaluation is small and the sweep shows what the *shape* of the Jacobian does to
each strategy (m VJPs for reverse mode, n JVPs for forward mode and finite differences)
rather than what a deep network does. Its Jacobian is ``diag(1 - y^2) W``, so every size,
4096 x 4096 included, is gated against an exact answer.

For m = 1 the output is a 0-d scalar, ``tanh(w . x + b)``, as a loss is: its Jacobian is a
gradient, shaped like x (NOTE: [Jacobian layout] in ``bench.strategies``).

The grid: every pair of n, m in {1, 16, 256, 4096}, the 64k-entry ratio ladder n * m = 2^16
from 16:4096 to 4096:16 (the classic 32 -> 2048 and 2048 -> 32 among it), 1:1024, 1024:1
and 1024 x 1024. The quick profile takes 16:256, the shapes 1:256, 16:16 and 256:1 of one
size n*m = 256 (a crossover), and the squares 1:1, 16:16 and 256:256 (a scaling ladder); the
standard one adds 1:1024, 32:2048, 2048:32 and 1024:1; the extremes 1:4096 and 4096:1 (4096
backward passes or evaluations per loop call) and the large squares are in the full profile.
"""

from __future__ import annotations

import torch

from .problem import Built, Problem, Setup
from .registry import register

EDGES = (1, 16, 256, 4096)
LADDER = ((16, 4096), (32, 2048), (64, 1024), (128, 512), (256, 256), (512, 128), (1024, 64),
          (2048, 32), (4096, 16))
QUICK = ((16, 256), (1, 256), (16, 16), (256, 1), (1, 1), (256, 256))
STANDARD = ((1, 1024), (32, 2048), (2048, 32), (1024, 1))
EXTRA = ((1, 1024), (1024, 1), (1024, 1024))


def grid() -> list[tuple[int, int]]:
    sizes = [(n, m) for n in EDGES for m in EDGES] + list(LADDER) + list(EXTRA)
    return sorted(set(sizes), key=lambda nm: (nm[0] * nm[1], nm[0]))


def tier(n: int, m: int) -> int:
    if (n, m) in QUICK:
        return 0
    return 1 if (n, m) in STANDARD else 2


def _problem(n: int, m: int) -> Problem:
    def builder(s: Setup) -> Built:
        g = s.generator()
        w = s.randn(m, n, gen=g, scale=0.5 * n ** -0.5)  # pre-activations ~ N(0, 1/4): tanh unsaturated
        b = s.randn(m, gen=g, scale=0.1)
        x = s.randn(n, gen=g)
        if m == 1:
            w, b = w[0], b[0]  # w . x + b is then a 0-d scalar

        def fn(x):
            return torch.tanh(w @ x + b)

        def jacobian():
            y = fn(x)
            return ((1 - y * y).unsqueeze(-1) * w,)

        return Built(fn, (x,), jacobian=jacobian)

    out = "a 0-d scalar" if m == 1 else f"{m} outputs"
    ins = "1 input" if n == 1 else f"{n} inputs"
    return Problem(
        f"shape-in{n}-out{m}", "shape", "vector", n=n, m=m, builder=builder,
        sizes=(("n", n), ("m", m)), tags=frozenset({"shape"} | ({"scalar-output"} if m == 1 else set())),
        tier=tier(n, m), flops=2 * m * n, analytic=True,
        description=f"y = tanh(W x + b), {ins} -> {out} (n:m = {n}:{m}); J = diag(1 - y^2) W",
    )


register(*(_problem(n, m) for n, m in grid()))

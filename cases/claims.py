"""Published claims: setups from docs and issue threads whose speed figures jacbench re-measures.

Each problem is a published benchmark's function at its published sizes, and carries the
figure it was published with (``Problem.claim``: the strategy claimed faster, the one it was
compared with, their published time ratio, the source, its address and its hardware). The
report's "Published claims" section (``bench.analysis.claims``) puts the measured ratio of
the same two strategies beside it. Where a source's method is not exactly a strategy
jacbench registers, the claim names the closest one and its ``figure`` says what differs.

The sources:

- the functorch "Jacobians, Hessians, hvp, vhp, and more" notebook (later the torch.func
  tutorial), ``predict(weight, bias, x) = F.linear(x, weight, bias).tanh()`` timed with
  ``torch.utils.benchmark.Timer`` on one CPU thread: jacfwd against jacrev at 32 -> 2048 and
  2048 -> 32, and jacrev against a loop of ``autograd.grad`` rows at 16 -> 16. It draws its
  weights from N(0, 1), which saturates tanh; here they are N(0, 1/n), as in ``cases.shapes``,
  so that the gate judges a Jacobian that is not numerically zero. The work of a call is
  the same;
- pytorch#94395, a table of t_jacfwd / t_jacrev on an A100 for ``(x * y).sum()`` and
  ``x @ y``. It gives the total input size of x and y only: ``(x * y).sum()`` needs x and y
  of one shape, so each holds half of it, and ``x @ y`` with 512 inputs and 256 outputs is
  only possible as two 16 x 16 matrices;
- functorch#328: per-sample Jacobians of an MLP 3 -> 64 -> 5 (tanh) on a batch of 128 points
  drawn from U(0, 1), on the CPU. Its network has torch's default initialisation; here it is
  ``cases.mlp``'s seeded one, the same work.
"""

from __future__ import annotations

import torch

from .mlp import mlp
from .problem import Built, Problem, Setup
from .registry import register

TUTORIAL = ("https://github.com/pytorch/functorch/blob/04181096cfd2ff845585706adb2ed31969de5327/notebooks/"
            "jacobians_hessians.ipynb")
TUTORIAL_HARDWARE = "CPU, 1 thread (torch.utils.benchmark, 500 runs); functorch on torch 1.11"
ISSUE_94395 = "https://github.com/pytorch/pytorch/issues/94395"
A100 = "NVIDIA A100 (torch of 2023-02, version not stated)"
ISSUE_328 = "https://github.com/pytorch/functorch/issues/328"


def claim(fast: str, slow: str, ratio: float, figure: str, source: str, url: str, hardware: str,
          device: str) -> dict:
    """A published figure: ``ratio`` is time(slow) / time(fast) as published."""
    return {"fast": fast, "slow": slow, "ratio": ratio, "figure": figure, "source": source, "url": url,
            "hardware": hardware, "device": device}


def _tutorial(n: int, m: int, tier: int, figure: dict, what: str) -> Problem:
    """The notebook's ``tanh(F.linear(x, weight, bias))``, n inputs -> m outputs."""

    def builder(s: Setup) -> Built:
        g = s.generator()
        w, b, x = s.randn(m, n, gen=g, scale=n ** -0.5), s.randn(m, gen=g), s.randn(n, gen=g)

        def fn(x):
            return torch.nn.functional.linear(x, w, b).tanh()

        return Built(fn, (x,), jacobian=lambda: ((1 - fn(x) ** 2).unsqueeze(-1) * w,))

    return Problem(
        f"claim-tutorial-{what}-in{n}-out{m}", "claims", "vector", n=n, m=m, builder=builder,
        sizes=(("n", n), ("m", m)), tags=frozenset({"claim"}), tier=tier, flops=2 * m * n, analytic=True,
        claim=figure, description=f"functorch tutorial: tanh(Linear) {n} -> {m}, {figure['fast']} against "
                                  f"{figure['slow']}",
    )


def _sum_of_product(n: int, tier: int, figure: dict) -> Problem:
    """pytorch#94395's ``(x * y).sum()`` of x and y of n // 2 elements each: a 0-d output."""
    half = n // 2

    def builder(s: Setup) -> Built:
        g = s.generator()
        x, y = s.randn(half, gen=g), s.randn(half, gen=g)
        return Built(lambda x, y: (x * y).sum(), (x, y), jacobian=lambda: (y.clone(), x.clone()))

    return Problem(
        f"claim-pytorch94395-sum-in{n}", "claims", "multi", n=n, m=1, builder=builder,
        sizes=(("n", n), ("m", 1)), tags=frozenset({"claim", "multi-input", "scalar-output"}), tier=tier,
        flops=2 * half, analytic=True, claim=figure,
        description=f"pytorch#94395: (x * y).sum() of x, y of {half} each ({n} -> 1), jacrev against jacfwd",
    )


def _matmul(k: int, tier: int, figure: dict) -> Problem:
    """pytorch#94395's ``x @ y`` of two k x k matrices: 2 k^2 inputs -> k^2 outputs."""

    def builder(s: Setup) -> Built:
        g = s.generator()
        x, y = s.randn(k, k, gen=g), s.randn(k, k, gen=g)
        eye = torch.eye(k, dtype=s.dtype, device=s.device)
        # d(xy)_ij / dx_ab = [i = a] y_bj;  d(xy)_ij / dy_ab = x_ia [j = b]
        return Built(lambda x, y: x @ y, (x, y), jacobian=lambda: (torch.einsum("ia,bj->ijab", eye, y),
                                                                   torch.einsum("ia,jb->ijab", x, eye)))

    return Problem(
        f"claim-pytorch94395-matmul-in{2 * k * k}-out{k * k}", "claims", "multi", n=2 * k * k, m=k * k,
        builder=builder, sizes=(("n", 2 * k * k), ("m", k * k)), tags=frozenset({"claim", "multi-input"}),
        tier=tier, flops=2 * k ** 3, analytic=True, claim=figure,
        description=f"pytorch#94395: x @ y of two {k}x{k} matrices ({2 * k * k} -> {k * k}), jacrev against jacfwd",
    )


def _functorch328(tier: int, figure: dict) -> Problem:
    """functorch#328's MLP 3 -> 64 -> 5 (tanh) on a batch of 128 points from U(0, 1)."""
    n, width, m, batch = 3, 64, 5, 128

    def builder(s: Setup) -> Built:
        net = mlp(s, n, m, width, 1)
        return Built(net, (s.uniform(batch, n, gen=s.generator(), low=0.0),), module=net)

    return Problem(
        f"claim-functorch328-mlp-in{n}-out{m}-b{batch}", "claims", "batched", n=n, m=m, builder=builder,
        sizes=(("batch", batch), ("n", n), ("m", m), ("width", width)), tags=frozenset({"claim", "batched", "network"}),
        tier=tier, batch=batch, claim=figure,
        description=f"functorch#328: tanh MLP {n} -> {width} -> {m} on a batch of {batch}, per-sample Jacobians "
                    "by the sum over the batch against vmap(jacrev)",
    )


register(
    _tutorial(32, 2048, 1, claim(
        "jacfwd", "jacrev", 12.46 / 1.32, "jacfwd 1.32 ms against jacrev 12.46 ms (Din = 32, Dout = 2048)",
        "functorch Jacobians and Hessians tutorial", TUTORIAL, TUTORIAL_HARDWARE, "cpu"), "jacfwd"),
    _tutorial(2048, 32, 1, claim(
        "jacrev", "jacfwd", 7.99 / 1.09, "jacrev 1.09 ms against jacfwd 7.99 ms (Din = 2048, Dout = 32)",
        "functorch Jacobians and Hessians tutorial", TUTORIAL, TUTORIAL_HARDWARE, "cpu"), "jacrev"),
    _tutorial(16, 16, 1, claim(
        "jacrev", "grad-loop", 2.25e-3 / 884.34e-6,
        "jacrev 884.34 us against a loop of autograd.grad rows, compute_jac, 2.25 ms (D = 16). compute_jac "
        "evaluates f again for every row; grad-loop evaluates it once and keeps its graph",
        "functorch Jacobians and Hessians tutorial", TUTORIAL, TUTORIAL_HARDWARE, "cpu"), "vmap"),
    _sum_of_product(512, 1, claim(
        "jacrev", "jacfwd", 1.804932, "t_jacfwd / t_jacrev = 1.804932 +- 0.111175 for (x * y).sum() (512 -> 1)",
        "pytorch#94395", ISSUE_94395, A100, "cuda")),
    _sum_of_product(32768, 2, claim(
        "jacrev", "jacfwd", 9.524201, "t_jacfwd / t_jacrev = 9.524201 +- 0.681554 for (x * y).sum() (32768 -> 1)",
        "pytorch#94395", ISSUE_94395, A100, "cuda")),
    _matmul(16, 1, claim(
        "jacrev", "jacfwd", 1.189705, "t_jacfwd / t_jacrev = 1.189705 +- 0.045282 for x @ y (512 -> 256)",
        "pytorch#94395", ISSUE_94395, A100, "cuda")),
    _functorch328(1, claim(
        "batch-sum-trick", "vmap-jacrev", 732 / 691,
        "functional.jacobian of the batch sum 691 us +- 20.4 us against vmap(jacrev) 732 us +- 10.2 us (%timeit: "
        "mean +- std. dev. of 7 runs, 1000 loops each). The thread's sum used "
        "torch.autograd.functional.jacobian(create_graph=True, vectorize=True); batch-sum-trick is torch.func.jacrev "
        "of the sum, without a graph",
        "functorch#328", ISSUE_328, "CPU (the thread's tensors are on the CPU; torch not stated, functorch of 2021-12)",
        "cpu")),
)

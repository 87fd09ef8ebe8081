"""Sparse and structured Jacobians: diagonal, tridiagonal, banded and block-diagonal, n to 10^4.

Square maps R^n -> R^n whose Jacobian has O(n) nonzeros, where dense strategies pay O(n^2)
(n VJPs or JVPs of O(n) each, and an n x n result) and structure-aware ones (colouring, a
sparsity pattern) need a handful of products. Every problem carries its analytic Jacobian
and its sparsity pattern (``Built.sparsity``), so the gate never needs an autograd loop and
the largest sizes stay checkable; n = 10^4 (an 800 MB float64 reference) is full-only.

* ``sparse-diag-n{n}``: ``f(x) = sin x + x^3 / 3``, elementwise; J = diag(cos x + x^2).
* ``sparse-burgers-n{n}``: the residual of the steady viscous Burgers equation
  ``u u_x - nu u_xx`` by central differences on n interior points of (0, 1) with zero
  Dirichlet boundaries: the classic tridiagonal Jacobian of a 1-D PDE Newton solve
  (NOTE: [Burgers residual Jacobian]).
* ``sparse-banded-n{n}-k{k}``: ``tanh(w * x)``, a (2k+1)-tap 1-D convolution with zero
  padding, then tanh; J is banded with half-bandwidth k: ``J[i, i+t-k] = (1 - y_i^2) w_t``.
* ``sparse-blockdiag-n{n}-b{b}``: n/b independent dense maps ``tanh(W_j x_j + c_j)`` on
  consecutive blocks of b inputs; J is block diagonal with b x b blocks.

NOTE: [Burgers residual Jacobian]
    With h = 1/(n+1), u_0 = u_{n+1} = 0 and
        r_i = u_i (u_{i+1} - u_{i-1}) / (2h) - nu (u_{i+1} - 2 u_i + u_{i-1}) / h^2,
    the three nonzeros of row i are
        dr_i/du_{i-1} = -u_i / (2h) - nu / h^2,
        dr_i/du_i     = (u_{i+1} - u_{i-1}) / (2h) + 2 nu / h^2,
        dr_i/du_{i+1} =  u_i / (2h) - nu / h^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .problem import Built, Problem, Setup
from .registry import register

#: n per profile: the quick profile takes the PDE at n = 100; the standard one the PDE at 1000
#: and the other structures at 500; the full one every structure at 500, 1000 and 10^4.
SIZES = (500, 1000, 10_000)
QUICK = 100
STANDARD = {"burgers": 1000, "other": 500}
NU = 0.05
BAND = 4
BLOCK = 10


def tier(n: int, structure: str = "other") -> int:
    if n == QUICK and structure == "burgers":
        return 0
    return 1 if n == STANDARD.get(structure) else 2


def _dense(n: int, s: Setup) -> torch.Tensor:
    return torch.zeros(n, n, dtype=s.dtype, device=s.device)


def band_pattern(n: int, lower: int, upper: int) -> torch.Tensor:
    """The bool (n, n) pattern of a band matrix: J[i, j] may be nonzero for -lower <= j-i <= upper."""
    pattern = torch.zeros(n, n, dtype=torch.bool)
    for offset in range(-lower, upper + 1):
        pattern.diagonal(offset).fill_(True)
    return pattern


def _problem(name, n, builder, *, structure, tags, flops, description, tier):
    return Problem(
        name, "sparse", "vector", n=n, m=n, builder=builder,
        sizes=(("n", n),) + tuple(structure), tags=frozenset({"sparse", *tags}), tier=tier, flops=flops,
        description=description, analytic=True,
    )


# --- diagonal ------------------------------------------------------------------------------

def _diag(n: int) -> Problem:
    def builder(s: Setup) -> Built:
        x = s.randn(n, gen=s.generator())

        def fn(x):
            return torch.sin(x) + x * x * x / 3

        return Built(fn, (x,), jacobian=lambda: (torch.diag(torch.cos(x) + x * x),),
                     sparsity=band_pattern(n, 0, 0))

    return _problem(f"sparse-diag-n{n}", n, builder, structure=(), tags={"diagonal", "elementwise"},
                    flops=6 * n, tier=tier(n),
                    description=f"elementwise sin x + x^3/3 on {n} inputs: a diagonal Jacobian")


# --- tridiagonal: 1-D Burgers -------------------------------------------------------------

def burgers(u: torch.Tensor, nu: float = NU) -> torch.Tensor:
    """The residual of NOTE: [Burgers residual Jacobian] at n interior values ``u``."""
    h = 1.0 / (u.shape[-1] + 1)
    padded = F.pad(u, (1, 1))
    left, right = padded[..., :-2], padded[..., 2:]
    return u * (right - left) / (2 * h) - nu * (right - 2 * u + left) / (h * h)


def burgers_jacobian(u: torch.Tensor, nu: float = NU) -> torch.Tensor:
    n = u.shape[0]
    h = 1.0 / (n + 1)
    padded = F.pad(u, (1, 1))
    j = torch.zeros(n, n, dtype=u.dtype, device=u.device)
    j.diagonal(0).copy_((padded[2:] - padded[:-2]) / (2 * h) + 2 * nu / (h * h))
    j.diagonal(-1).copy_(-u[1:] / (2 * h) - nu / (h * h))
    j.diagonal(1).copy_(u[:-1] / (2 * h) - nu / (h * h))
    return j


def _burgers(n: int) -> Problem:
    def builder(s: Setup) -> Built:
        t = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
        u = s.cast(torch.sin(torch.pi * t)) + s.randn(n, gen=s.generator(), scale=0.05)
        return Built(burgers, (u,), jacobian=lambda: (burgers_jacobian(u),), sparsity=band_pattern(n, 1, 1))

    return _problem(f"sparse-burgers-n{n}", n, builder, structure=(("bandwidth", 1),),
                    tags={"tridiagonal", "pde"}, flops=10 * n, tier=tier(n, "burgers"),
                    description=(f"1-D viscous Burgers residual u u_x - {NU} u_xx, central differences "
                                 f"on {n} points: tridiagonal"))


# --- banded: convolution + tanh ------------------------------------------------------------

def _banded(n: int, k: int) -> Problem:
    def builder(s: Setup) -> Built:
        g = s.generator()
        w = s.randn(2 * k + 1, gen=g, scale=(2 * k + 1) ** -0.5)
        x = s.randn(n, gen=g)

        def fn(x):
            return torch.tanh(F.conv1d(x[None, None], w[None, None], padding=k)[0, 0])

        def jacobian():
            y = fn(x)
            j = _dense(n, s)
            for t in range(2 * k + 1):  # tap t couples output i to input i + t - k
                j.diagonal(t - k).fill_(w[t])
            return (j.mul_((1 - y * y)[:, None]),)

        return Built(fn, (x,), jacobian=jacobian, sparsity=band_pattern(n, k, k))

    return _problem(f"sparse-banded-n{n}-k{k}", n, builder, structure=(("bandwidth", k),),
                    tags={"banded"}, flops=2 * (2 * k + 1) * n + n, tier=tier(n),
                    description=f"tanh of a {2 * k + 1}-tap 1-D convolution on {n} inputs: banded, half-bandwidth {k}")


# --- block diagonal ------------------------------------------------------------------------

def _blockdiag(n: int, b: int) -> Problem:
    nb = n // b

    def builder(s: Setup) -> Built:
        g = s.generator()
        w = s.randn(nb, b, b, gen=g, scale=b ** -0.5)
        c = s.randn(nb, b, gen=g, scale=0.1)
        x = s.randn(n, gen=g)

        def fn(x):
            return torch.tanh((w @ x.reshape(nb, b, 1)).squeeze(-1) + c).reshape(-1)

        def jacobian():
            y = fn(x).reshape(nb, b, 1)
            return (torch.block_diag(*((1 - y * y) * w)),)

        blocks = torch.arange(n) // b
        return Built(fn, (x,), jacobian=jacobian, sparsity=blocks[:, None] == blocks[None, :])

    return _problem(f"sparse-blockdiag-n{n}-b{b}", n, builder, structure=(("block", b),),
                    tags={"block-diagonal"}, flops=2 * n * b + n, tier=tier(n),
                    description=f"{nb} independent tanh(W x + c) maps on blocks of {b}: block diagonal, {b}x{b} blocks")


register(*(_diag(n) for n in SIZES))
register(*(_burgers(n) for n in (QUICK,) + SIZES))
register(*(_banded(n, BAND) for n in SIZES))
register(*(_blockdiag(n, BLOCK) for n in SIZES))

"""Strategies that return wrong Jacobians in the ways a real bug would: a gate's adversaries.

Importing this module (``jacbench run --plugin tests.plugins.spoiled``) registers them, and
:data:`SPREAD`, a problem whose rows and columns span six orders of magnitude. Each wraps
``torch.func.jacrev`` and spoils its answer; :data:`SPOILED` names what each does.
"""

from __future__ import annotations

import torch

import cases
from bench import strategies

_SEEN: set[int] = set()


def _right(fn, inputs, create_graph=False):
    return strategies.get("jacrev")(fn, inputs, create_graph=create_graph)


def _per_block(spoil):
    def compute(fn, inputs, create_graph=False):
        return tuple(spoil(b, x) for b, x in zip(_right(fn, inputs), inputs))
    return compute


def _sign_row(b, x):
    out = b.contiguous().clone()
    out.view(-1, x.numel())[0] *= -1
    return out


def smallest_line(b: torch.Tensor, x: torch.Tensor, dim: int) -> int:
    """The smallest row (``dim=1``) or column (``dim=0``) of the block as an ``(m, n)`` matrix
    whose largest entry stands well above the gate's rounding floor (``accuracy.LINE_EPS``
    epsilons of the whole's largest)."""
    top = b.detach().abs().reshape(-1, x.numel()).amax(dim=dim).double()
    above = top >= 12 * torch.finfo(b.dtype).eps * top.max()
    return int(torch.where(above, top, torch.inf).argmin())


def _small_row(b, x):
    out = b.contiguous().clone()
    out.view(-1, x.numel())[smallest_line(b, x, 1)] *= -1
    return out


def _small_column(b, x):
    out = b.contiguous().clone()
    out.view(-1, x.numel())[:, smallest_line(b, x, 0)] *= -1
    return out


def _nan(b, x):
    out = b.contiguous().clone()
    out.view(-1)[out.numel() // 2] = float("nan")
    return out


def _transpose(b, x):
    m = b.numel() // x.numel()
    return b.reshape(m, x.numel()).T.reshape(b.shape)  # the right shape, the entries transposed


def _stale(fn, inputs, create_graph=False):
    """Right on the first call for a function, zeros afterwards: a stale cache."""
    blocks = _right(fn, inputs)
    if id(fn) in _SEEN:
        return tuple(torch.zeros_like(b) for b in blocks)
    _SEEN.add(id(fn))
    return blocks


def _detached(fn, inputs, create_graph=False):
    """The right value, cut from the graph: a penalty built on it trains nothing."""
    return tuple(b.detach() for b in _right(fn, inputs, create_graph))


def _grads_off(fn, inputs, create_graph=False):
    """The right value whose derivative is 10% short: a penalty's gradients 10% off."""
    return tuple(0.9 * b + 0.1 * b.detach() for b in _right(fn, inputs, create_graph))


#: name -> (compute, what it spoils, registered with create_graph: it runs on penalty steps)
SPOILED = {
    "bad-zeros": (_per_block(lambda b, x: torch.zeros_like(b)), "all zeros", False),
    "bad-transpose": (_per_block(_transpose), "transposed entries in the right shape", False),
    "bad-sign-row": (_per_block(_sign_row), "one row's sign flipped", False),
    "bad-small-row": (_per_block(_small_row), "the sign of the smallest row above the rounding floor flipped", False),
    "bad-small-column": (_per_block(_small_column), "the sign of the smallest column above the rounding floor "
                         "flipped", False),
    "bad-scale": (_per_block(lambda b, x: b * 1.01), "scaled by 1%", False),
    "bad-nan": (_per_block(_nan), "one NaN entry", False),
    "bad-reversed-dims": (_per_block(lambda b, x: b.permute(*reversed(range(b.dim())))), "dims reversed", False),
    "bad-flat": (_per_block(lambda b, x: b.reshape(-1)), "a flat 1-D block", False),
    "bad-missing-block": (lambda fn, inputs, create_graph=False: _right(fn, inputs)[:-1], "the last block missing",
                          False),
    "bad-stale": (_stale, "right, then zeros", False),
    "bad-detached-penalty": (_detached, "a detached Jacobian", True),
    "bad-penalty-grads": (_grads_off, "penalty gradients 10% off", True),
}

for _name, (_compute, _what, _graph) in SPOILED.items():
    _compute.__doc__ = f"jacrev, spoiled: {_what}.\n\nCost: one jacrev."
    strategies.register(_name, "reverse", create_graph=_graph)(_compute)


def _spread(s: cases.Setup) -> cases.Built:
    """r * tanh(A (c * x)), r and c from 1 down to 1e-6: rows and columns of every scale."""
    gen = s.generator()
    a, x = s.randn(8, 8, gen=gen), s.randn(8, gen=gen)
    r, c = (s.cast(torch.logspace(0, -6, 8, dtype=torch.float64)) for _ in range(2))
    return cases.Built(lambda v: r * torch.tanh(a @ (c * v)), (x,))


SPREAD = cases.Problem("spoiled-spread-in8-out8", "spoiled", "vector", n=8, m=8, builder=_spread,
                       description="rows and columns from 1 to 1e-6 of the largest")
if SPREAD.name not in {p.name for p in cases.problems()}:
    cases.register(SPREAD)

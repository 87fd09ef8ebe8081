"""The empirical neural tangent kernel, K = J J^T, as a derived row of parameter Jacobians.

``ntk-<strategy>`` computes the parameter Jacobian with ``<strategy>`` and then the kernel
between all outputs, K = sum over parameter tensors of J_k J_k^T. The gate checks the
Jacobian (what the strategy returns); the timed call includes the contraction, so the row's
time is the NTK's and its difference to ``<strategy>``'s row is the contraction's cost.
"""

from __future__ import annotations

import torch

from bench.strategies.registry import STRATEGIES, register

BASES = ("jacrev", "jacfwd", "grad-batched")


def kernel(blocks, m: int) -> torch.Tensor:
    """K = J J^T over every parameter block; ``m`` outputs."""
    flat = [b.reshape(m, -1) for b in blocks]
    return sum(f @ f.T for f in flat)


def _ntk(base):
    def compute(fn, inputs, create_graph=False):
        blocks = base(fn, inputs)
        m = blocks[0].numel() // inputs[0].numel()
        kernel(blocks, m)  # inside the timed call; the gate checks the Jacobian it came from
        return blocks

    return compute


for _name in BASES:
    _base = STRATEGIES[_name]
    _c = _ntk(_base)
    _c.__doc__ = f"""The empirical NTK J J^T, with J from ``{_name}``.

    Cost: {_name}'s, plus one (m x P) @ (P x m) product per parameter tensor;
    memory: {_name}'s plus the m x m kernel.
    """
    register(f"ntk-{_name}", _base.mode, kinds=("params",), needs=_base.needs, prepares=_base.prepares)(_c)

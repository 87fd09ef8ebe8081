"""Jacobians with respect to parameters: the empirical neural tangent kernel's kind.

``fn(*params)`` is ``torch.func.functional_call(net, params, (X,))`` for a fixed batch X, so
the inputs are the network's parameter tensors and every multi-input strategy applies: one
Jacobian block per parameter tensor, each shaped ``[B, m, *param.shape]``. ``-all`` takes
every parameter; ``-layerK`` only the K-th linear layer's weight and bias (the others held
fixed), which is what per-layer NTK and pruning scores need.
"""

from __future__ import annotations

import torch

from .mlp import mlp
from .problem import Built, Problem, Setup
from .registry import register


def _problem(n: int, m: int, width: int, depth: int, batch: int, layer: int | None, tier: int) -> Problem:
    dims = [n] + [width] * depth + [m]
    shapes = [((b, a), (b,)) for a, b in zip(dims[:-1], dims[1:])]
    chosen = range(len(shapes)) if layer is None else [layer]
    count = sum(b * a + b for k, ((b, a), _) in enumerate(shapes) if k in chosen)

    def builder(s: Setup) -> Built:
        net = mlp(s, n, m, width, depth)
        x = s.randn(batch, n, gen=torch.Generator().manual_seed(s.seed + 1))
        params = dict(net.named_parameters())
        names = [k for k in params if layer is None or k.startswith(f"{2 * layer}.")]
        fixed = {k: v.detach() for k, v in params.items() if k not in names}

        def fn(*tensors):
            return torch.func.functional_call(net, {**fixed, **dict(zip(names, tensors))}, (x,))

        return Built(fn, tuple(params[k].detach() for k in names))

    which = "all" if layer is None else f"layer{layer}"
    return Problem(
        f"params-mlp-in{n}-out{m}-w{width}-d{depth}-b{batch}-{which}", "params", "params", n=count, m=batch * m,
        builder=builder, sizes=(("params", count), ("batch", batch), ("m", m), ("width", width), ("depth", depth)),
        tags=frozenset({"params", "ntk", "network"}), tier=tier,
        description=f"outputs of a tanh MLP {n} -> {depth}x{width} -> {m} on {batch} samples w.r.t. "
                    + ("all its parameters" if layer is None else f"linear layer {layer}'s weight and bias")
                    + f" ({count} parameters)",
    )


register(
    _problem(8, 4, 32, 2, 8, None, 0),
    _problem(8, 4, 32, 2, 8, 1, 0),
    _problem(16, 4, 64, 2, 16, None, 1),
    *(_problem(16, 4, 64, 2, 16, k, 1) for k in range(3)),
    _problem(32, 10, 256, 2, 32, None, 2),
    *(_problem(32, 10, 256, 2, 32, k, 2) for k in range(3)),
)


# --- several inputs of different shapes ----------------------------------------------------


def _affine(n: int, m: int, tier: int) -> Problem:
    """y = tanh(W x + b) as a function of (W, x, b): three blocks of three shapes."""

    def builder(s: Setup) -> Built:
        g = s.generator()
        w, x, b = s.randn(m, n, gen=g, scale=n**-0.5), s.randn(n, gen=g), s.randn(m, gen=g, scale=0.1)

        def fn(w, x, b):
            return torch.tanh(w @ x + b)

        def jacobian():
            slope = 1 - fn(w, x, b) ** 2  # tanh'
            eye = torch.eye(m, dtype=w.dtype, device=w.device)
            return (slope[:, None, None] * eye[:, :, None] * x[None, None, :],  # dy_i / dW_jk
                    slope[:, None] * w, torch.diag(slope))

        return Built(fn, (w, x, b), jacobian=jacobian)

    return Problem(
        f"multi-affine-in{n}-out{m}", "multi", "multi", n=m * n + n + m, m=m, builder=builder,
        sizes=(("n", n), ("m", m)), tags=frozenset({"multi-input"}), tier=tier, analytic=True,
        flops=2 * m * n, description=f"tanh(W x + b) as f(W, x, b): blocks [{m},{m},{n}], [{m},{n}], [{m},{m}]",
    )


register(_affine(8, 4, 0), _affine(64, 32, 1), _affine(512, 128, 2))

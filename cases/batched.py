"""Per-sample Jacobians over a batch: x of shape [B, n] -> J of shape [B, m, n].

The usual case (``batch-mlp``): samples are independent, so the per-sample Jacobians are
the diagonal blocks of the full [B, m, B, n] Jacobian and every per-sample strategy applies.
The interacting case (``batch-bn-train``): BatchNorm in training mode normalises each
sample with the batch's statistics, so each output depends on every sample. The per-sample
Jacobian is still the diagonal block d f(X)_b / d x_b, but the "sum over the batch" trick
adds the off-diagonal blocks to it and is wrong there, and the gate says so.
"""

from __future__ import annotations

import torch
from torch import nn

from .mlp import mlp
from .problem import Built, Problem, Setup
from .registry import register

BATCHES = (1, 8, 64, 256, 1024)


def _independent(n: int, m: int, width: int, batch: int, tier: int) -> Problem:
    def builder(s: Setup) -> Built:
        net = mlp(s, n, m, width, 2)
        return Built(net, (s.randn(batch, n, gen=s.generator()),), module=net)

    return Problem(
        f"batch-mlp-in{n}-out{m}-w{width}-b{batch}", "batch-mlp", "batched", n=n, m=m, builder=builder,
        sizes=(("batch", batch), ("n", n), ("m", m), ("width", width)), tags=frozenset({"batched", "network"}),
        tier=tier, batch=batch, description=f"tanh MLP {n} -> 2x{width} -> {m} on a batch of {batch} "
                                            f"independent samples: J is [{batch}, {m}, {n}]",
    )


class BatchNormNet(nn.Module):
    """Linear -> BatchNorm1d (training mode: batch statistics) -> tanh -> Linear.

    ``track_running_stats=False``: the normalisation is the same, but no buffer is updated in
    place, which ``torch.func`` transforms refuse (and which would change state between calls).
    """

    def __init__(self, s: Setup, n: int, hidden: int, m: int):
        super().__init__()
        g, kw = s.generator(), {"device": s.device, "dtype": s.dtype}
        self.net = nn.Sequential(nn.Linear(n, hidden, **kw), nn.BatchNorm1d(hidden, track_running_stats=False, **kw), nn.Tanh(),
                                 nn.Linear(hidden, m, **kw))
        with torch.no_grad():
            for layer in (self.net[0], self.net[3]):
                layer.weight.copy_(s.randn(*layer.weight.shape, gen=g, scale=layer.weight.shape[1] ** -0.5))
                layer.bias.copy_(s.randn(*layer.bias.shape, gen=g, scale=0.1))
        self.requires_grad_(False).train()

    def forward(self, x):
        return self.net(x)


def _interacting(n: int, hidden: int, m: int, batch: int, tier: int) -> Problem:
    def builder(s: Setup) -> Built:
        net = BatchNormNet(s, n, hidden, m)
        return Built(net, (s.randn(batch, n, gen=s.generator()),), module=net)

    return Problem(
        f"batch-bn-train-in{n}-out{m}-b{batch}", "batch-bn-train", "batched", n=n, m=m, builder=builder,
        sizes=(("batch", batch), ("n", n), ("m", m), ("hidden", hidden)),
        tags=frozenset({"batched", "interacting", "network"}), tier=tier, batch=batch,
        description=f"{n} -> BatchNorm1d(train) {hidden} -> {m} on a batch of {batch}: samples interact "
                    "through the batch statistics, so the sum-over-batch trick is wrong",
    )


register(*(_independent(32, 8, 64, b, {8: 0, 1: 1, 64: 1, 256: 1}.get(b, 2)) for b in BATCHES))
register(_interacting(16, 32, 4, 8, 0), _interacting(16, 32, 4, 32, 1), _interacting(16, 32, 4, 128, 2))

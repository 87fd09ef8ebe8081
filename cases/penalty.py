"""Training steps whose loss holds a Jacobian penalty: the forum thread's use case.

The model is ``x -> h = encoder(x) -> y = head(h)``; the penalty is on the per-sample
Jacobian ``J_b = d y_b / d h_b`` between the hidden layer and the output, averaged over the
batch, and the loss is ``mse(y, target) + lam * penalty`` with either

* ``identity``: ``||J_b - I||_F^2`` (the forum's "as close as possible to identity"; needs
  as many outputs as hidden units), or
* ``frobenius``: ``||J_b||_F^2`` (a smoothness penalty, as in Hoffman, Roberts & Yaida 2019).

One step is the forward pass, the Jacobian with ``create_graph=True``, the penalty and the
backward pass to the parameters (``bench.kinds.penalty`` runs it). The built function is the
:class:`PenaltyModel` itself; its inputs are the batch and its targets.
"""

from __future__ import annotations

import torch
from torch import nn

from .problem import Built, Problem, Setup
from .registry import register

class PenaltyModel(nn.Module):
    """encoder: Linear -> tanh (n -> k); head: Linear -> tanh -> Linear (k -> width -> m)."""

    def __init__(self, s: Setup, n: int, k: int, width: int, m: int, target: str, lam: float = 0.1):
        super().__init__()
        kw = {"device": s.device, "dtype": s.dtype}
        self.encoder = nn.Sequential(nn.Linear(n, k, **kw), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(k, width, **kw), nn.Tanh(), nn.Linear(width, m, **kw))
        g = s.generator()
        with torch.no_grad():
            for layer in (self.encoder[0], self.head[0], self.head[2]):
                layer.weight.copy_(s.randn(*layer.weight.shape, gen=g, scale=layer.weight.shape[1] ** -0.5))
                layer.bias.copy_(s.randn(*layer.bias.shape, gen=g, scale=0.1))
        self.target, self.lam = target, lam

    def forward(self, x):
        return self.head(self.encoder(x))


def _problem(n: int, k: int, width: int, m: int, batch: int, target: str, tier: int) -> Problem:
    def builder(s: Setup) -> Built:
        model = PenaltyModel(s, n, k, width, m, target)
        g = torch.Generator().manual_seed(s.seed + 1)
        x, y = s.randn(batch, n, gen=g), s.randn(batch, m, gen=g, scale=0.5)
        return Built(model, (x, y), module=model)

    params = n * k + k + k * width + width + width * m + m
    return Problem(
        f"penalty-{target}-h{k}-out{m}-b{batch}", f"penalty-{target}", "penalty", n=k, m=m, builder=builder,
        sizes=(("hidden", k), ("m", m), ("batch", batch), ("width", width), ("params", params)),
        tags=frozenset({"penalty", "training", target}), tier=tier, batch=batch,
        description=f"one training step of mse + 0.1 * mean ||{'J - I' if target == 'identity' else 'J'}||_F^2, "
                    f"J = d(output {m}) / d(hidden {k}) per sample, batch {batch}, {params} parameters",
    )


register(
    _problem(16, 16, 64, 16, 8, "identity", 0),
    _problem(32, 64, 128, 64, 32, "identity", 1),
    _problem(64, 256, 256, 256, 64, "identity", 2),
    _problem(16, 32, 64, 8, 8, "frobenius", 0),
    _problem(32, 128, 128, 16, 32, "frobenius", 1),
    _problem(64, 512, 256, 32, 64, "frobenius", 2),
)

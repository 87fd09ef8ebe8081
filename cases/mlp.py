"""MLP family: tanh networks whose input:output ratio crosses the forward/reverse crossover.

``mlp-in{n}-out{m}-w{width}-d{depth}`` is ``Linear(n, w), Tanh`` followed by ``depth - 1``
hidden ``Linear(w, w), Tanh`` blocks and a final ``Linear(w, m)``: ``depth`` hidden layers.
Reverse mode costs about m backward passes and forward mode about n forward passes, so the
ratio n:m decides which wins; the ratios run from 1:64 to 64:1. tanh keeps the function
smooth, so finite differences are judged on their step error, not on ReLU kinks.
"""

from __future__ import annotations

import torch
from torch import nn

from .problem import Built, Problem, Setup
from .registry import register

RATIOS = ((16, 1024), (32, 512), (64, 256), (128, 128), (256, 64), (512, 32), (1024, 16))
WIDTHS = (64, 256, 1024)
DEPTHS = (1, 2, 3)
#: The quick profile's networks: three shapes at width 256 (a crossover) and three widths of the
#: square one (a scaling ladder), so that its report has both figures.
QUICK = ((32, 512, 256, 2), (128, 128, 256, 2), (512, 32, 256, 2), (128, 128, 64, 2), (128, 128, 1024, 2))


def dims(n: int, m: int, width: int, depth: int) -> list[int]:
    return [n] + [width] * depth + [m]


def mlp(s: Setup, n: int, m: int, width: int, depth: int) -> nn.Sequential:
    """A tanh MLP with N(0, 1/fan_in) weights and N(0, 0.1^2) biases drawn from the seed."""
    g = s.generator()
    layers: list[nn.Module] = []
    ds = dims(n, m, width, depth)
    for i, (a, b) in enumerate(zip(ds[:-1], ds[1:])):
        lin = nn.Linear(a, b, device=s.device, dtype=s.dtype)
        with torch.no_grad():
            lin.weight.copy_(s.randn(b, a, gen=g, scale=a ** -0.5))
            lin.bias.copy_(s.randn(b, gen=g, scale=0.1))
        layers.append(lin)
        if i < len(ds) - 2:
            layers.append(nn.Tanh())
    # The Jacobian is taken with respect to the input: the weights are constants, so that
    # backward() does not also compute (and accumulate) their gradients.
    return nn.Sequential(*layers).requires_grad_(False)


def flops(n: int, m: int, width: int, depth: int) -> int:
    """Multiply-adds of the linear layers, two flops each; elementwise work is not counted."""
    ds = dims(n, m, width, depth)
    return sum(2 * a * b for a, b in zip(ds[:-1], ds[1:]))


def tier(n: int, m: int, width: int, depth: int) -> int:
    if (n, m, width, depth) in QUICK:
        return 0
    if (width, depth) == (256, 2):
        return 1  # standard: the whole ratio ladder
    if (n, m) == (128, 128) or ((n, m) in ((32, 512), (512, 32)) and width == 256):
        return 1  # standard: width and depth ladders through the square and two skewed shapes
    return 2


def _problem(n: int, m: int, width: int, depth: int) -> Problem:
    def builder(s: Setup) -> Built:
        net = mlp(s, n, m, width, depth)
        x = s.randn(n, gen=torch.Generator().manual_seed(s.seed + 1))
        return Built(net, (x,), module=net)

    return Problem(
        f"mlp-in{n}-out{m}-w{width}-d{depth}", "mlp", "vector", n=n, m=m, builder=builder,
        sizes=(("n", n), ("m", m), ("width", width), ("depth", depth)),
        tags=frozenset({"mlp", "network"}), tier=tier(n, m, width, depth),
        flops=flops(n, m, width, depth),
        description=f"tanh MLP {n} -> {depth}x{width} -> {m} (n:m = {n}:{m})",
    )


register(*(_problem(n, m, w, d) for n, m in RATIOS for w in WIDTHS for d in DEPTHS))

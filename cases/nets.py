"""Networks users take Jacobians of: a small CNN, a transformer encoder block, an LSTM.

All are ``torch.nn`` modules as a user writes them, in eval mode, with seeded weights
(:func:`seeded`), and the Jacobian is taken with respect to one unbatched input:

* ``cnn-{C}x{H}x{W}-out{k}``: an image ``(C, H, W)`` through two ``Conv2d(3x3) -> Tanh ->
  AvgPool2d(2)`` blocks (8 then 16 channels) and a linear head to k logits. Few outputs and
  many inputs: reverse mode's home ground. Average pooling and tanh keep it smooth, so
  finite differences are judged on their step error, not on max-pool or ReLU kinks.
* ``transformer-len{L}-d{d}-h{heads}``: ``nn.TransformerEncoderLayer`` (pre-norm, GELU, MLP
  width 4d, no dropout) on a sequence ``(L, d)``; n = m = L * d. Its attention runs
  ``scaled_dot_product_attention``, whose CPU kernel has no forward-mode derivative and no
  vmap batching rule for its backward: the sweep records which strategies that stops.
* ``lstm-len{T}-in{d}-h{h}``: ``nn.LSTM`` over a sequence ``(T, d)``, every step's hidden
  state as output ``(T, h)``: a block lower-triangular (causal) Jacobian. ``-last`` takes the
  final hidden state only. ``nn.LSTM`` is one fused op with no vmap batching rule.

The weights are constants: ``requires_grad_(False)``, as in ``cases.mlp``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .problem import Built, Problem, Setup
from .registry import register


def seeded(module: nn.Module, s: Setup, gen: torch.Generator | None = None) -> nn.Module:
    """``module`` with every parameter drawn from the seed, in eval mode, as constants.

    Weights (two or more dimensions) are N(0, 1/fan_in) with fan_in = ``shape[1] *
    prod(shape[2:])``; one-dimensional weights (norm layers' scales) are 1 + N(0, 0.1^2);
    biases are N(0, 0.1^2). Values are drawn in float64 on the CPU in ``named_parameters``
    order and only then cast, so the float32 and float64 builds are the same network.
    """
    g = gen if gen is not None else s.generator()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                fan_in = p.shape[1] * math.prod(p.shape[2:])
                value = torch.randn(p.shape, generator=g, dtype=torch.float64) * fan_in ** -0.5
            else:
                value = torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1
                if name.endswith("weight"):
                    value += 1
            p.copy_(value)
    return module.to(device=s.device, dtype=s.dtype).eval().requires_grad_(False)


def input_generator(s: Setup) -> torch.Generator:
    """A second stream for the point, so that weights and input do not share draws."""
    return torch.Generator().manual_seed(s.seed + 1)


# --- CNN -----------------------------------------------------------------------------------

CNN_CHANNELS = (8, 16)


def cnn_layers(c: int, h: int, w: int, classes: int) -> list[nn.Module]:
    """The CNN's layers, unseeded: two conv blocks, then ``Flatten(0)`` and the head."""
    a, b = CNN_CHANNELS
    return [
        nn.Conv2d(c, a, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(a, b, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(0), nn.Linear(b * (h // 4) * (w // 4), classes),
    ]


def cnn_flops(c: int, h: int, w: int, classes: int) -> int:
    """Multiply-adds of the convolutions and the head, two flops each."""
    a, b = CNN_CHANNELS
    return 2 * (a * h * w * c * 9 + b * (h // 2) * (w // 2) * a * 9 + b * (h // 4) * (w // 4) * classes)


CNNS = (  # (C, H, W, classes, tier)
    (1, 28, 28, 10, 0),
    (3, 32, 32, 10, 2),
    (3, 32, 32, 100, 2),
    (3, 64, 64, 10, 2),
)


def _cnn(c: int, h: int, w: int, classes: int, tier: int) -> Problem:
    def builder(s: Setup) -> Built:
        net = seeded(nn.Sequential(*cnn_layers(c, h, w, classes)), s)
        x = s.randn(c, h, w, gen=input_generator(s))
        return Built(net, (x,), module=net)

    a, b = CNN_CHANNELS
    return Problem(
        f"cnn-{c}x{h}x{w}-out{classes}", "cnn", "vector", n=c * h * w, m=classes, builder=builder,
        sizes=(("channels", c), ("height", h), ("width", w), ("m", classes)),
        tags=frozenset({"cnn", "network"}), tier=tier, flops=cnn_flops(c, h, w, classes),
        description=(f"CNN on a {c}x{h}x{w} image: 2x [conv3x3 ({a}, {b} ch) -> tanh -> avgpool2] "
                     f"-> linear -> {classes} logits"),
    )


# --- transformer encoder block -------------------------------------------------------------

HEAD_DIM = 16
TRANSFORMERS = tuple(  # (L, d): n = m = L * d <= 2048 keeps the float64 reference loop cheap
    (L, d) for d in (32, 64) for L in (8, 16, 32, 64) if L * d <= 2048
)
TRANSFORMER_QUICK = (8, 32)
TRANSFORMER_STANDARD = ((8, 32), (16, 32))


def transformer_flops(L: int, d: int) -> int:
    """Projections (4 d^2 per token), the MLP (8 d^2 per token) and the two attention
    products (2 L d per token each), as multiply-adds."""
    return 2 * (12 * L * d * d + 2 * L * L * d)


def _transformer(L: int, d: int) -> Problem:
    heads = d // HEAD_DIM

    def builder(s: Setup) -> Built:
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        net = seeded(layer, s)
        x = s.randn(L, d, gen=input_generator(s))
        return Built(net, (x,), module=net)

    tier = 0 if (L, d) == TRANSFORMER_QUICK else 1 if (L, d) in TRANSFORMER_STANDARD else 2
    return Problem(
        f"transformer-len{L}-d{d}-h{heads}", "transformer", "vector", n=L * d, m=L * d, builder=builder,
        sizes=(("length", L), ("d", d), ("heads", heads)),
        tags=frozenset({"transformer", "network", "attention"}), tier=tier, flops=transformer_flops(L, d),
        description=(f"nn.TransformerEncoderLayer (pre-norm, {heads} heads, GELU MLP {4 * d}) "
                     f"on a {L}x{d} sequence -> {L}x{d}"),
    )


# --- LSTM ----------------------------------------------------------------------------------

LSTMS = (  # (T, d_in, hidden, last, tier)
    (16, 8, 32, False, 1),
    (64, 8, 32, True, 0),
    (64, 8, 32, False, 2),
    (64, 32, 64, False, 2),
    (256, 8, 32, False, 2),
    (256, 8, 32, True, 2),
)


def _lstm(T: int, d: int, h: int, last: bool, tier: int) -> Problem:
    def builder(s: Setup) -> Built:
        net = seeded(nn.LSTM(d, h), s)
        x = s.randn(T, d, gen=input_generator(s))
        if last:
            def fn(x):
                return net(x)[0][-1]
        else:
            def fn(x):
                return net(x)[0]
        return Built(fn, (x,))  # fn is not the module: it picks the output out of a tuple

    m = h if last else T * h
    what = f"the last hidden state ({h})" if last else f"every hidden state ({T}x{h})"
    return Problem(
        f"lstm-len{T}-in{d}-h{h}" + ("-last" if last else ""), "rnn", "vector", n=T * d, m=m,
        builder=builder, sizes=(("length", T), ("d", d), ("hidden", h)),
        tags=frozenset({"rnn", "lstm", "network"}), tier=tier, flops=2 * T * 4 * h * (d + h),
        description=f"nn.LSTM({d}, {h}) over a {T}x{d} sequence -> {what}",
    )


register(*(_cnn(*spec) for spec in CNNS))
register(*(_transformer(L, d) for L, d in TRANSFORMERS))
register(*(_lstm(*spec) for spec in LSTMS))

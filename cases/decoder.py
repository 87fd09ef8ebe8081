"""Decoder: a VAE-style generator from a small latent to an image. Few inputs, many outputs.

``decoder-z{d}-{C}x{H}x{W}`` maps a latent ``z`` of d dims to a ``(C, H, W)`` image:
``Linear(d, 32 * s * s) -> SiLU -> Unflatten`` to a 32-channel s x s map (s = 7 for 28 x 28,
8 otherwise), then ``ConvTranspose2d(4x4, stride 2)`` upsamplings, each doubling the side
(32 -> 16 channels, SiLU between), to C channels and a ``Sigmoid``. The Jacobian
``d image / d z`` is what latent-space analyses (pull-back metrics, latent traversals) need.

With d <= 64 inputs and 784 to 12288 outputs, forward mode (d JVPs) and finite differences
(d + 1 or 2d evaluations) should beat reverse mode (m VJPs) by orders of magnitude; the
reverse loops at 3x64x64 (12288 backward passes) are left to the full profile. SiLU keeps the
map smooth, so finite differences are judged on their step error, not on ReLU kinks.
"""

from __future__ import annotations

import math

from torch import nn

from .nets import input_generator, seeded
from .problem import Built, Problem, Setup
from .registry import register

LATENTS = (2, 8, 16, 32, 64)
IMAGES = ((1, 28, 28), (3, 32, 32), (3, 64, 64))
QUICK = (16, (1, 28, 28))
STANDARD = ((16, (1, 28, 28)), (64, (1, 28, 28)))
WIDTH = 32


def _channels(h: int) -> tuple[int, list[int]]:
    """The seed map's side and the channels after each upsampling (the last is C)."""
    side = 7 if h % 7 == 0 else 8
    ups = int(math.log2(h // side))
    if side * 2 ** ups != h:
        raise ValueError(f"image side {h} is not 7 or 8 times a power of two")
    return side, [max(WIDTH // 2 ** (i + 1), 16) for i in range(ups)]


def decoder_layers(d: int, c: int, h: int) -> list[nn.Module]:
    side, chans = _channels(h)
    chans[-1] = c
    layers: list[nn.Module] = [nn.Linear(d, WIDTH * side * side), nn.SiLU(), nn.Unflatten(0, (WIDTH, side, side))]
    prev = WIDTH
    for i, ch in enumerate(chans):
        layers.append(nn.ConvTranspose2d(prev, ch, 4, stride=2, padding=1))
        layers.append(nn.SiLU() if i < len(chans) - 1 else nn.Sigmoid())
        prev = ch
    return layers


def decoder_flops(d: int, c: int, h: int) -> int:
    """Multiply-adds of the linear layer and the transposed convolutions, two flops each."""
    side, chans = _channels(h)
    chans[-1] = c
    total, prev, s = d * WIDTH * side * side, WIDTH, side
    for ch in chans:
        total += prev * ch * 16 * s * s  # each input pixel scatters a 4x4 kernel per channel pair
        prev, s = ch, 2 * s
    return 2 * total


def tier(d: int, image: tuple[int, int, int]) -> int:
    if (d, image) == QUICK:
        return 0
    return 1 if (d, image) in STANDARD else 2


def _problem(d: int, image: tuple[int, int, int]) -> Problem:
    c, h, w = image

    def builder(s: Setup) -> Built:
        net = seeded(nn.Sequential(*decoder_layers(d, c, h)), s)
        z = s.randn(d, gen=input_generator(s))
        return Built(net, (z,), module=net)

    side, chans = _channels(h)
    return Problem(
        f"decoder-z{d}-{c}x{h}x{w}", "decoder", "vector", n=d, m=c * h * w, builder=builder,
        sizes=(("latent", d), ("channels", c), ("height", h), ("width", w)),
        tags=frozenset({"decoder", "network"}), tier=tier(d, image), flops=decoder_flops(d, c, h),
        description=(f"VAE-style decoder: latent {d} -> linear -> {WIDTH}x{side}x{side} -> "
                     f"{len(chans)}x convT(stride 2) -> sigmoid image {c}x{h}x{w}"),
    )


register(*(_problem(d, image) for image in IMAGES for d in LATENTS))

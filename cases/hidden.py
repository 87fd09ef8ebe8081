"""Hidden layer: the Jacobian of a network's output with respect to a hidden activation.

What saliency, probing and layer-wise attribution methods need: ``d logits / d h_k`` where
``h_k`` is the activation after layer block k for one sample. The function is the rest of the
network (an ``nn.Sequential`` slice, so structure-aware strategies can use it) and the input
is ``h_k``, computed in float64 from a seeded sample and only then cast, so the float32 and
float64 builds take the Jacobian at the same point.

* ``hidden-mlp-l{k}-in{n}-out10``: a tanh MLP classifier 784 -> 512 -> 256 -> 128 -> 10,
  with respect to the output of hidden layer k (n = 512, 256, 128).
* ``hidden-cnn-b{k}-{C}x{H}x{W}-out10``: the CNN of ``cases.nets`` on a 3x32x32 image, with
  respect to the feature map after conv block k (8x16x16 or 16x8x8).
"""

from __future__ import annotations

import torch
from torch import nn

from .nets import cnn_flops, cnn_layers, input_generator, seeded
from .problem import Built, Problem, Setup
from .registry import register

MLP_DIMS = (784, 512, 256, 128, 10)


def mlp_layers() -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(MLP_DIMS[:-1], MLP_DIMS[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(MLP_DIMS) - 2:
            layers.append(nn.Tanh())
    return layers


def _split_builder(layers, split: int, sample_shape):
    """A builder for ``layers[split:]`` at ``layers[:split](sample)``."""

    def builder(s: Setup) -> Built:
        cpu64 = Setup(torch.device("cpu"), torch.float64, s.seed)
        net = seeded(nn.Sequential(*layers()), cpu64)
        x = cpu64.randn(*sample_shape, gen=input_generator(s))
        with torch.no_grad():
            h = net[:split](x)
        rest = net[split:].to(device=s.device, dtype=s.dtype)
        return Built(rest, (s.cast(h),), module=rest)

    return builder


def _mlp(k: int, tier: int) -> Problem:
    n = MLP_DIMS[k]
    rest = MLP_DIMS[k:]
    return Problem(
        f"hidden-mlp-l{k}-in{n}-out10", "hidden", "vector", n=n, m=10,
        builder=_split_builder(mlp_layers, 2 * k, (MLP_DIMS[0],)),
        sizes=(("layer", k), ("n", n), ("m", 10)), tags=frozenset({"hidden", "network", "mlp"}), tier=tier,
        flops=sum(2 * a * b for a, b in zip(rest[:-1], rest[1:])),
        description=(f"logits of a tanh MLP {' -> '.join(map(str, MLP_DIMS))} w.r.t. hidden layer {k} "
                     f"({n} activations of one sample)"),
    )


CNN_IMAGE = (3, 32, 32)
CNN_MAPS = {1: (8, 16, 16), 2: (16, 8, 8)}


def _cnn(k: int, tier: int) -> Problem:
    c, h, w = CNN_MAPS[k]
    n = c * h * w
    total = cnn_flops(*CNN_IMAGE, 10)
    done = cnn_flops(*CNN_IMAGE, 0) if k == 2 else 2 * CNN_MAPS[1][0] * 32 * 32 * 3 * 9
    return Problem(
        f"hidden-cnn-b{k}-{c}x{h}x{w}-out10", "hidden", "vector", n=n, m=10,
        builder=_split_builder(lambda: cnn_layers(*CNN_IMAGE, 10), 3 * k, CNN_IMAGE),
        sizes=(("block", k), ("channels", c), ("height", h), ("width", w), ("m", 10)),
        tags=frozenset({"hidden", "network", "cnn"}), tier=tier, flops=total - done,
        description=(f"logits of the 3x32x32 CNN (cnn-3x32x32-out10) w.r.t. its {c}x{h}x{w} "
                     f"feature map after conv block {k}"),
    )


register(_mlp(1, 1), _mlp(2, 0), _mlp(3, 1), _cnn(2, 1), _cnn(1, 2))

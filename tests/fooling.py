"""Functions that fool a gate which trusts autograd, and the problems made of them.

:data:`EXPECTED` says what the gate must conclude of each: ``disputed`` with words its
diagnosis must hold, ``ok`` with a note (a zero Jacobian both sides agree on), or ``exact``:
nothing to say, its Jacobian is right. ``jacbench run --plugin tests.plugins.fooling``
registers :func:`problems`, one of family ``misbehaving`` per function.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import cases


class Doubled(torch.autograd.Function):
    """sin, with a backward that is twice the derivative: a bug."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * grad * x.cos()


class StraightThrough(torch.autograd.Function):
    """Rounding, with the identity as its backward: a straight-through estimator, on purpose."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(4 * x) / 4

    @staticmethod
    def backward(ctx, grad):
        return grad


def item(x):
    return x * x[0].item()


def detach_branch(x):
    return torch.sin(x) + x.detach() ** 2


def no_grad_block(x):
    with torch.no_grad():
        scale = x.exp().sum()
    return x * scale


def data(x):
    return x.data ** 2 + x


def numpy_round_trip(x):
    return torch.from_numpy(np.cos(x.detach().cpu().numpy())).to(x) + x


def doubled_backward(x):
    return Doubled.apply(x) + x ** 2


def straight_through(x):
    return StraightThrough.apply(x) * 2


def dropout(x):
    return F.dropout(torch.tanh(x), 0.5, training=True)


def rounded(x):
    return torch.round(3 * x)


def to_long(x):
    return x.long().to(x.dtype) * 2


def leaks_no_grad(x):
    torch.set_grad_enabled(False)
    return torch.tanh(x) * 2


def relu_at_kink(x):
    return torch.relu(x) * 3


def abs_at_kink(x):
    return x.abs() + x


def tensor_of_elements(x):
    return torch.tensor([x[0] ** 2, x[1] * x[2], x[3]])


def in_place(x):
    with torch.no_grad():
        x.add_(0.01)  # a running statistic kept in its input, say
    return torch.sin(x)


def complex_out(x):
    return x * 1j


def complex_in(z):
    return (z * z).real


def empty_in(x):
    return x * 2


def empty_out(x):
    return x[:0] * 2


def zero_dim(x):
    return torch.stack([x.sin(), x.cos(), x * x])


#: name -> (function, status, words the diagnosis holds)
EXPECTED = {
    "item": (item, "disputed", [".item() at fooling.py:"]),
    "detach-branch": (detach_branch, "disputed", [".detach() at fooling.py:"]),
    "no-grad-block": (no_grad_block, "disputed", ["grad disabled", "fooling.py:"]),
    "data": (data, "disputed", [".data at fooling.py:"]),
    "numpy-round-trip": (numpy_round_trip, "disputed", [".detach() at fooling.py:"]),
    "doubled-backward": (doubled_backward, "disputed", ["custom autograd.Function Doubled (fooling.py:",
                                                        "does not match"]),
    "straight-through": (straight_through, "disputed", ["StraightThrough (fooling.py:", "deliberate",
                                                        "straight-through"]),
    "dropout": (dropout, "disputed", ["f is random"]),
    "rounded": (rounded, "ok", ["round at fooling.py:", "zero almost everywhere"]),
    "to-long": (to_long, "ok", ["long at fooling.py:", "zero almost everywhere"]),
    "leaks-no-grad": (leaks_no_grad, "disputed", ["grad disabled", "fooling.py:", "grad mode disabled"]),
    "relu-at-kink": (relu_at_kink, "disputed", ["not differentiable", "kink"]),
    "abs-at-kink": (abs_at_kink, "disputed", ["not differentiable", "kink"]),
    "tensor-of-elements": (tensor_of_elements, "disputed", ["torch.tensor([...]) at fooling.py:"]),
    "in-place": (in_place, "disputed", ["f changes input 0 in place, by up to 0.01"]),
    "complex-out": (complex_out, "disputed", ["returns complex", "torch.view_as_real(out)"]),
    "complex-in": (complex_in, "disputed", ["input 0 is complex", "torch.view_as_real(x)"]),
    "empty-in": (empty_in, "disputed", ["input 0 is empty (shape (0,))"]),
    "empty-out": (empty_out, "disputed", ["output is empty (shape (0,))"]),
    "zero-dim": (zero_dim, "exact", []),  # not misbehaving: a 0-dimensional input has its Jacobian
}
#: the number of output elements of each function at its point, where it is not N (an empty
#: input or output is registered as the N it was meant to have: a builder's bug)
OUTPUTS = {"tensor-of-elements": 3, "complex-in": 3, "zero-dim": 3}
N = 6


def point(dtype=torch.float64, device="cpu", name: str = "") -> torch.Tensor:
    """The inputs: seeded normals, with zeros (the kinks) for the kink functions."""
    x = torch.randn(N, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    if "kink" in name:
        x[::2] = 0.0
    if name == "empty-in":
        x = x[:0]
    if name == "zero-dim":
        x = x[0]
    x = x.to(device, dtype)
    return torch.view_as_complex(x.reshape(-1, 2)) if name == "complex-in" else x


def problems() -> list[cases.Problem]:
    """One problem per function, at :func:`point`."""
    def problem(name, fn):
        def builder(s: cases.Setup) -> cases.Built:
            return cases.Built(fn, (point(s.dtype, s.device, name),))

        n = point(name=name).numel() or N
        return cases.Problem(f"misbehaving-{name}", "misbehaving", "vector", n=n, m=OUTPUTS.get(name, N),
                             builder=builder,
                             tags=frozenset({"misbehaving"}), description=f"misbehaving: {fn.__name__}")

    return [problem(name, fn) for name, (fn, _, _) in EXPECTED.items()]

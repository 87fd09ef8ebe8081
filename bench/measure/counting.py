"""Counting the work a strategy does: evaluations of f, VJPs, JVPs and FLOPs.

Counted, not assumed, in one extra untimed call. The function's output passes through an
identity ``autograd.Function`` (the probe) whose forward, backward and jvp each mark the
next tensor operation. A ``TorchDispatchMode`` sits below ``vmap`` and autograd, so it sees
that operation on the physical tensor: a VJP batched by ``vmap`` over k cotangents arrives
there with k times the elements of one. The mark therefore counts products, not calls:
``jacrev`` on m outputs counts m VJPs in 1 backward call, the ``grad-loop`` m VJPs in m
calls. FLOPs are those of matrix products and convolutions as ``FlopCounterMode`` counts
them (its formula registry) on the same physical tensors; elementwise work is not included.
(``FlopCounterMode`` itself cannot be used: its module tracker breaks ``autograd.grad``.)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from bench.strategies import registry


@dataclass(frozen=True)
class Work:
    fevals: int  # evaluations of f (a vmapped evaluation of k points counts k)
    fevals_calls: int  # calls of f
    vjps: int
    vjps_calls: int
    jvps: int
    jvps_calls: int
    flops: int  # matmul/conv FLOPs actually executed

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Marks(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.pending: tuple[str, int] | None = None
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.pending is not None:
            what, logical = self.pending
            self.pending = None
            physical = args[0].numel() if args and isinstance(args[0], torch.Tensor) else logical
            self.counts[what] += max(1, physical // max(logical, 1))
            self.counts[what + "_calls"] += 1
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.counts["flops"] += int(formula(*args, **kwargs, out_val=out))
        return out


_active: list[_Marks] = []


def _mark(what: str, t: torch.Tensor) -> torch.Tensor:
    if _active:
        _active[-1].pending = (what, t.numel())
    return t.clone()


class _Probe(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return _mark("fevals", x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return _mark("vjps", grad)

    @staticmethod
    def jvp(ctx, tangent):
        return _mark("jvps", tangent)


def probed(fn):
    """``fn`` with the probe on its output."""

    def wrapped(*args):
        return _Probe.apply(fn(*args))

    return wrapped


def count(run) -> Work:
    """Run ``run(probe)`` once, where ``probe`` wraps a function as :func:`probed` does."""
    marks = _Marks()
    _active.append(marks)
    try:
        with marks, registry.probe():
            run(probed)
    finally:
        _active.pop()
    c = marks.counts
    return Work(c["fevals"], c["fevals_calls"], c["vjps"], c["vjps_calls"], c["jvps"], c["jvps_calls"], c["flops"])

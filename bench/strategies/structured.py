"""Structured accumulation: the Jacobian of an ``nn.Sequential`` as a product of its layers'
local Jacobians, multiplied in the cheapest order.

NOTE: [Matrix-chain accumulation]
    For ``f = f_L o ... o f_1`` the chain rule gives ``J = F_L ... F_2 F_1`` with ``F_k`` the
    ``d_k x d_{k-1}`` Jacobian of layer k at its input (sizes flattened). Every order of
    multiplication gives the same matrix but not the same cost. Forward accumulation is
    ``F_L (... (F_2 F_1))`` (what forward mode does: carry ``n`` tangents through every
    layer), reverse accumulation ``((F_L F_{L-1}) ...) F_1`` (what reverse mode does: carry
    ``m`` cotangents back); for a chain of three or more factors there are orders cheaper than
    both. The cheapest is found by the classic matrix-chain dynamic programme over split
    points, O(L^3) for L factors, with two refinements:

    - an elementwise layer (tanh, ReLU, ...) has a *diagonal* Jacobian, stored as a vector;
      multiplying a ``p x q`` matrix by it costs ``p q`` flops, two diagonals ``q``; a product
      of diagonals stays diagonal;
    - a reshape (``Flatten``) is the identity in the flattened view and drops out.

    Dense products cost ``2 p q r`` flops (a multiply and an add per term). A ``Linear``
    layer's local Jacobian is its weight, free; other layers get theirs from ``jacrev`` or
    ``jacfwd`` at their input (whichever the shape favours), counted as part of the forward
    pass. The flop count of the chosen order, and those of the two extreme orders, are
    recorded in the row's notes (``chain_flops``, ``forward_flops``, ``reverse_flops``):
    the chosen order is the suite's "how close to the limit" reference.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from bench.strategies.registry import Unsupported, context, note, probing, register

DENSE, DIAG = "dense", "diag"

# Elementwise layers whose derivative follows from the layer's input h and output y.
_CLOSED_FORM = {
    nn.Tanh: lambda h, y: 1 - y * y,
    nn.Sigmoid: lambda h, y: y * (1 - y),
    nn.ReLU: lambda h, y: (h > 0).to(h.dtype),
    nn.Identity: lambda h, y: torch.ones_like(h),
}
# Elementwise layers whose derivative is one JVP with a tangent of ones (J 1 = diag(J)).
_ELEMENTWISE = (nn.GELU, nn.SiLU, nn.Softplus, nn.ELU, nn.CELU, nn.SELU, nn.LeakyReLU, nn.Hardtanh,
                nn.ReLU6, nn.Mish, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Hardsigmoid, nn.Hardswish)
_RESHAPES = (nn.Flatten, nn.Unflatten)


# --- the dynamic programme -----------------------------------------------------------------


def product_cost(p: int, q: int, r: int, left: str, right: str) -> int:
    """Flops of ``(p x q) @ (q x r)`` where either side may be diagonal (then p = q or q = r)."""
    if left == DIAG and right == DIAG:
        return q
    if left == DIAG or right == DIAG:
        return p * r
    return 2 * p * q * r


@dataclass(frozen=True)
class Order:
    """A parenthesisation of factors ``lo..hi`` (0-based, ``F_0`` applied first).

    ``split`` is None for a single factor; otherwise the product is
    ``(F_hi ... F_split+1) (F_split ... F_lo)``.
    """

    lo: int
    hi: int
    split: int | None
    cost: int
    kind: str

    left: "Order | None" = None   # the factors applied last (higher indices)
    right: "Order | None" = None  # the factors applied first

    def text(self, names=None) -> str:
        names = names or [f"J{k + 1}" for k in range(self.hi + 1)]
        if self.split is None:
            return names[self.lo]
        return f"({self.left.text(names)} {self.right.text(names)})"


def _leaf(k: int, kind: str) -> Order:
    return Order(k, k, None, 0, kind)


def _join(left: Order, right: Order, dims) -> Order:
    # left spans lo..hi of the later factors, right the earlier ones: the product is
    # (d_hi+1 x d_split+1) @ (d_split+1 x d_lo), sizes indexed as in ``best_order``.
    p, q, r = dims[left.hi + 1], dims[right.hi + 1], dims[right.lo]
    kind = DIAG if left.kind == DIAG and right.kind == DIAG else DENSE
    cost = left.cost + right.cost + product_cost(p, q, r, left.kind, right.kind)
    return Order(right.lo, left.hi, right.hi, cost, kind, left, right)


def best_order(dims: list[int], kinds: list[str]) -> Order:
    """The cheapest order of ``F_{L-1} ... F_0`` (NOTE: [Matrix-chain accumulation]).

    Args:
        dims: ``d_0 .. d_L``; factor k is ``d_{k+1} x d_k``.
        kinds: ``dense`` or ``diag`` for each of the L factors.
    """
    n = len(kinds)
    if len(dims) != n + 1 or n == 0:
        raise ValueError(f"{n} factors need {n + 1} sizes, got {len(dims)}")
    table: dict[tuple[int, int], Order] = {(k, k): _leaf(k, kinds[k]) for k in range(n)}
    for span in range(1, n):
        for lo in range(n - span):
            hi = lo + span
            table[lo, hi] = min((_join(table[s + 1, hi], table[lo, s], dims) for s in range(lo, hi)),
                                key=lambda o: o.cost)
    return table[0, n - 1]


def forward_order(dims: list[int], kinds: list[str]) -> Order:
    """``F_{L-1} (... (F_1 F_0))``: forward accumulation."""
    order = _leaf(0, kinds[0])
    for k in range(1, len(kinds)):
        order = _join(_leaf(k, kinds[k]), order, dims)
    return order


def reverse_order(dims: list[int], kinds: list[str]) -> Order:
    """``((F_{L-1} F_{L-2}) ...) F_0``: reverse accumulation."""
    n = len(kinds)
    order = _leaf(n - 1, kinds[n - 1])
    for k in range(n - 2, -1, -1):
        order = _join(order, _leaf(k, kinds[k]), dims)
    return order


def multiply(order: Order, factors: list[torch.Tensor]) -> torch.Tensor:
    """Evaluate ``order`` over ``factors`` (diagonal ones as vectors)."""
    if order.split is None:
        return factors[order.lo]
    a, b = multiply(order.left, factors), multiply(order.right, factors)
    if order.left.kind == DIAG and order.right.kind == DIAG:
        return a * b
    if order.left.kind == DIAG:
        return a[:, None] * b
    if order.right.kind == DIAG:
        return a * b[None, :]
    return a @ b


# --- the strategy --------------------------------------------------------------------------


def layers(module: nn.Module) -> list[nn.Module]:
    """The leaf layers of a (possibly nested) ``nn.Sequential``, in order."""
    out = []
    for layer in module:
        out.extend(layers(layer) if isinstance(layer, nn.Sequential) else [layer])
    return out


def _local(layer: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The layer's output at ``h`` and its local Jacobian (flattened), with its kind.

    The Jacobian is None for a reshape, which drops out of the chain.
    """
    if isinstance(layer, nn.Linear) and h.dim() == 1:
        return layer(h), layer.weight, DENSE
    if type(layer) in _CLOSED_FORM:
        y = layer(h)
        return y, _CLOSED_FORM[type(layer)](h, y).reshape(-1), DIAG
    if isinstance(layer, _ELEMENTWISE):
        y, d = torch.func.jvp(layer, (h,), (torch.ones_like(h),))
        return y, d.reshape(-1), DIAG
    if isinstance(layer, _RESHAPES):
        return layer(h), None, DENSE
    if isinstance(layer, nn.Dropout) and not layer.training:
        return h, None, DENSE
    if layer.training and any(isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm)) for m in layer.modules()):
        raise Unsupported(f"{type(layer).__name__} in training mode has no per-input local Jacobian")
    y = layer(h)
    jac = torch.func.jacrev if y.numel() <= h.numel() else torch.func.jacfwd
    return y, jac(layer)(h).reshape(y.numel(), h.numel()), DENSE


@dataclass
class _Chain:
    dims: list[int]
    kinds: list[str]
    order: Order
    names: list[str]


_PLANS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _sequential(fn) -> nn.Sequential:
    module = context().module
    if module is None and isinstance(fn, nn.Module):
        module = fn
    if not isinstance(module, nn.Sequential):
        what = "no nn.Module" if module is None else f"a {type(module).__name__}, not an nn.Sequential"
        raise Unsupported(f"structured accumulation needs an nn.Sequential; this function has {what}")
    # The work probe wraps fn (bench.measure.counting); the chain is the module's all the same.
    if fn is not module and not probing():
        raise Unsupported("structured accumulation needs fn to be the nn.Sequential itself, not a function of it")
    return module


@register("structured", "structured", kinds={"vector"})
def structured(fn, inputs, create_graph=False):
    """Per-layer local Jacobians of an ``nn.Sequential``, multiplied in the cheapest order
    found by matrix-chain dynamic programming (NOTE: [Matrix-chain accumulation]).

    Cost: one forward pass, then the chain products of the chosen order; records their flops
    (``chain_flops``) beside those of pure forward and reverse accumulation; memory: the
    local Jacobians (a ``Linear``'s is its weight, an activation's a vector) and the
    intermediate products of that order. Needs the function to be an ``nn.Sequential`` of
    a vector; unsupported otherwise.
    """
    module = _sequential(fn)
    if len(inputs) != 1 or inputs[0].dim() != 1:
        raise Unsupported("structured accumulation takes one 1-D input vector")
    x = inputs[0]
    with torch.no_grad():
        h, factors, kinds, names, dims = x, [], [], [], [x.numel()]
        for i, layer in enumerate(layers(module)):
            y, jac, kind = _local(layer, h)
            if jac is not None:
                factors.append(jac)
                kinds.append(kind)
                names.append(f"{type(layer).__name__}{i}")
                dims.append(y.numel())
            h = y
        out = h
        if not factors:  # a chain of reshapes: the identity
            return (torch.eye(out.numel(), x.numel(), dtype=x.dtype, device=x.device).reshape(out.shape + x.shape),)
        key = (tuple(dims), tuple(kinds))
        plans = _PLANS.setdefault(module, {})
        chain = plans.get(key)
        if chain is None:
            chain = _Chain(dims, kinds, best_order(dims, kinds), names)
            plans[key] = chain
            fwd, rev = forward_order(dims, kinds), reverse_order(dims, kinds)
            note(order=chain.order.text(names), chain_flops=chain.order.cost, forward_flops=fwd.cost,
                 reverse_flops=rev.cost, factors=len(factors))
        jac = multiply(chain.order, factors)
        if chain.order.kind == DIAG:
            jac = torch.diag(jac)
        if jac.shape != (out.numel(), x.numel()):  # e.g. a lone weight, returned as itself
            raise RuntimeError(f"structured chain gave {tuple(jac.shape)}, expected {(out.numel(), x.numel())}")
        if jac.data_ptr() in {f.data_ptr() for f in factors}:
            jac = jac.clone()  # a one-factor chain: never hand out the layer's own weight
    return (jac.reshape(out.shape + x.shape),)

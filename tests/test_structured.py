"""Structured accumulation: per-layer Jacobians multiplied in the cheapest order."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from .conftest import checked, measured
from bench import strategies
from bench.strategies import structured

MLP = "mlp-in128-out128-w64-d1"


# --- structured -------------------------------------------------------------------------------


def _brute_force(dims, kinds, lo, hi):
    """Every parenthesisation of factors lo..hi: the cheapest cost and the product's kind."""
    if lo == hi:
        return 0, kinds[lo]
    best = None
    for s in range(lo, hi):
        right_cost, right_kind = _brute_force(dims, kinds, lo, s)
        left_cost, left_kind = _brute_force(dims, kinds, s + 1, hi)
        cost = left_cost + right_cost + structured.product_cost(dims[hi + 1], dims[s + 1], dims[lo], left_kind, right_kind)
        best = cost if best is None else min(best, cost)
    kind = "diag" if all(k == "diag" for k in kinds[lo:hi + 1]) else "dense"
    return best, kind


def _random_chain(rng, length):
    dims, kinds = [rng.randint(1, 40)], []
    for _ in range(length):
        kind = rng.choice(["dense", "dense", "diag"])
        kinds.append(kind)
        dims.append(dims[-1] if kind == "diag" else rng.randint(1, 40))
    return dims, kinds


def _factor(kind, rows, cols, gen):
    return torch.randn(rows, generator=gen, dtype=torch.float64) if kind == "diag" else \
        torch.randn(rows, cols, generator=gen, dtype=torch.float64)


def _dense(f):
    return torch.diag(f) if f.dim() == 1 else f


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 6])
def test_structured_order_agrees_with_brute_force(length):
    rng, gen = random.Random(length), torch.Generator().manual_seed(length)
    for _ in range(25):
        dims, kinds = _random_chain(rng, length)
        order = structured.best_order(dims, kinds)
        assert order.cost == _brute_force(dims, kinds, 0, length - 1)[0]
        assert order.cost <= min(structured.forward_order(dims, kinds).cost, structured.reverse_order(dims, kinds).cost)
        factors = [_factor(k, dims[i + 1], dims[i], gen) for i, k in enumerate(kinds)]
        naive = _dense(factors[0])
        for f in factors[1:]:
            naive = _dense(f) @ naive
        torch.testing.assert_close(_dense(structured.multiply(order, factors)), naive)


def test_structured_beats_both_extremes_on_an_hourglass():
    # n=m=64 through a 2-wide bottleneck: multiplying at the bottleneck first is far cheaper.
    dims, kinds = [64, 256, 2, 256, 64], ["dense"] * 4
    best = structured.best_order(dims, kinds)
    assert best.cost < min(structured.forward_order(dims, kinds).cost, structured.reverse_order(dims, kinds).cost)
    assert best.text() == "((J4 J3) (J2 J1))"


def test_structured_notes_its_order_and_flops():
    row = checked(MLP, "structured")
    notes = row.notes
    assert notes["chain_flops"] <= min(notes["forward_flops"], notes["reverse_flops"])
    assert notes["order"].count("Linear") == 2 and notes["factors"] == 3


def test_structured_handles_other_layers_and_nesting():
    net = nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.Sequential(nn.Linear(7, 6), nn.Softplus()),
                        nn.LayerNorm(6), nn.Flatten(0), nn.Linear(6, 3)).double().requires_grad_(False)
    x = torch.randn(5, dtype=torch.float64)
    (got,) = strategies.get("structured")(net, (x,))
    torch.testing.assert_close(got, torch.func.jacrev(net)(x))


def test_structured_is_unsupported_without_a_sequential():
    row = measured("seed-powers", "structured")
    assert row.status == "unsupported" and "needs an nn.Sequential" in row.reason


def test_all_parenthesisations_are_counted_by_catalan_numbers():
    # A sanity check of the brute force itself: C(L-1) orders for L factors.
    def orders(lo, hi):
        if lo == hi:
            return 1
        return sum(orders(lo, s) * orders(s + 1, hi) for s in range(lo, hi))

    assert [orders(0, n - 1) for n in range(1, 7)] == [1, 1, 2, 5, 14, 42]

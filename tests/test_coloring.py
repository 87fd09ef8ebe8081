"""Colouring: a sparse Jacobian from few products, one per colour of its columns."""

from __future__ import annotations

import pytest
import torch

import cases
from cases.ops import GatedLinearUnit

from .conftest import measured
from bench import strategies
from bench.strategies import coloring

MLP = "mlp-in128-out128-w64-d1"


# --- colouring --------------------------------------------------------------------------------


def _band(n, k):
    i = torch.arange(n)
    return (i[:, None] - i[None, :]).abs() <= k


@pytest.mark.parametrize("n", [3, 10, 1000])
def test_tridiagonal_needs_at_most_three_colours(n):
    colour = coloring.greedy_coloring(_band(n, 1))
    assert coloring.count_colors(colour) == min(3, n)
    assert coloring.count_colors(coloring.greedy_coloring(_band(n, 1).T)) <= 3


@pytest.mark.parametrize("dense_path", [False, True])
def test_colouring_is_valid_and_banded_needs_2k_plus_1(monkeypatch, dense_path):
    if dense_path:
        monkeypatch.setattr(coloring, "_LIST_WORK", 0)
    for k in (0, 2, 4):
        pattern = _band(200, k)
        colour = coloring.greedy_coloring(pattern)
        assert coloring.count_colors(colour) == 2 * k + 1
    gen = torch.Generator().manual_seed(0)
    pattern = torch.rand(60, 80, generator=gen) < 0.05
    colour = coloring.greedy_coloring(pattern)
    for c in range(coloring.count_colors(colour)):  # no two columns of a colour share a row
        assert (pattern[:, colour == c].sum(1) <= 1).all()


def test_colouring_detects_the_pattern_when_the_problem_has_none():
    def residual(u):  # a tridiagonal PDE residual with a zero at the input point
        left = torch.cat([u[:1] * 0, u[:-1]])
        right = torch.cat([u[1:], u[:1] * 0])
        return left - 2 * u + right + u ** 3

    u = torch.linspace(-1, 1, 50, dtype=torch.float64)
    u[10] = 0.0  # d(u^3)/du vanishes here, but the diagonal entry stays (it is -2 + 3u^2)
    for name in ("coloring-forward", "coloring-reverse"):
        notes = {}
        with strategies.using(notes=notes):
            (got,) = strategies.get(name)(residual, (u,))
        assert notes["colors"] == 3 and notes["pattern"] == "detected"
        torch.testing.assert_close(got, torch.func.jacrev(residual)(u))


def test_pattern_detection_falls_back_to_the_mode_that_works():
    def f(x):  # m = 2n favours forward mode, which this op lacks
        s = GatedLinearUnit.apply(x)  # a backward, no jvp: forward mode raises on it
        return torch.cat([s, 2 * s])

    x = torch.linspace(0, 1, 20, dtype=torch.float64)
    notes = {}
    with strategies.using(notes=notes):
        (got,) = strategies.get("coloring-reverse")(f, (x,))
    assert notes["colors"] == 2 and notes["pattern"] == "detected"
    torch.testing.assert_close(got, torch.func.jacrev(f)(x))


def test_colouring_a_dense_function_is_unsupported():
    row = measured(MLP, "coloring-forward")
    assert row.status == "unsupported" and "no compression" in row.reason


def test_colouring_multi_input_blocks():
    built = cases.get("seed-article-multi").build("cpu", torch.float64)
    pattern = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    with strategies.using(sparsity=pattern):
        got = strategies.get("coloring-reverse")(built.fn, built.inputs)
    want = strategies.get("jacrev")(built.fn, built.inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)

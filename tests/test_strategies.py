"""Every strategy against the analytic Jacobians of the seed problems, and the gate's verdicts."""

import pytest
import torch

import cases

from .conftest import measured
from bench import kinds, strategies
from bench.gate import accuracy
from bench.strategies import differences

SEEDS = [p for p in cases.problems() if p.family == "seed"]
# Strategies of the small profiles (compiled ones, in the full profile, have their own tests).
CHEAP = [name for name, s in strategies.STRATEGIES.items() if s.tier <= 1]


@pytest.mark.parametrize("strategy", CHEAP)
@pytest.mark.parametrize("problem", SEEDS, ids=lambda p: p.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_strategy_matches_the_analytic_jacobian(strategy, problem, dtype):
    s = strategies.get(strategy)
    reason = kinds.unsupported(s, problem.kind)
    if reason:
        assert "does not handle" in reason
        return
    built = problem.build("cpu", dtype)
    try:
        with strategies.using(built.module, built.sparsity):
            blocks = s(built.fn, built.inputs)
    except strategies.Unsupported:
        return  # a structural strategy that found no structure to use: recorded, not wrong
    out = built.fn(*built.inputs)
    assert isinstance(blocks, tuple) and len(blocks) == len(built.inputs)
    for block, x in zip(blocks, built.inputs):
        assert block.shape == out.shape + x.shape  # NOTE: [Jacobian layout]
    verdict = accuracy.check(blocks, kinds.reference(problem), dtype, s.fd_order)
    assert verdict.ok, verdict.reason
    if s.exact:
        assert verdict.error <= 20 * torch.finfo(dtype).eps


def test_multi_input_blocks_are_the_columns():
    built = cases.get("seed-article-multi").build("cpu", torch.float64)
    expected = torch.tensor([[1.0, 1, 0], [5, 0, 3], [0, 48, 0]], dtype=torch.float64)
    for name in ("manual-backward", "grad-loop", "grad-batched", "functional", "jacrev", "jacfwd"):
        blocks = strategies.get(name)(built.fn, built.inputs)
        assert [b.shape for b in blocks] == [torch.Size([3])] * 3, name
        assert torch.equal(torch.stack(blocks, dim=1), expected), name


@pytest.mark.parametrize("problem", cases.select(tags="graph-break"), ids=lambda p: p.name)
def test_graph_break_problems_are_flagged(problem):
    rows = {s: measured(problem.name, s) for s in CHEAP}
    for name, row in rows.items():
        s = strategies.get(name)
        if row.status == "unsupported":
            continue  # not run at all: another kind, or no structure to exploit
        if name.endswith("-loop") and s.mode == "fd":
            assert row.status == "ok", (name, row.reason)  # finite differences only evaluate f
        else:
            assert row.status in ("wrong", "error"), (name, row.status)
            assert not row.samples  # never timed
            if s.mode == "fd":  # vmap over .item(), not the missing graph, stops batched differences
                assert "graph break" not in row.reason and ".item()" in row.reason, (name, row.reason)
            else:
                assert row.reason.startswith("graph break:"), (name, row.reason)
    assert rows["functional"].status == "wrong" and rows["functional"].error == 1.0  # all zeros
    assert rows["manual-backward"].status == "error"  # backward() raises


def test_fd_steps_are_exactly_representable_and_scale_with_x():
    x = torch.tensor([0.0, 1e-3, 3.0, -250.0, 1e6], dtype=torch.float32)
    for order in (1, 2):
        up, down = differences.fd_steps(x, order)
        assert torch.equal((x + up) - x, up)
        k = 0.5 if order == 1 else 1 / 3
        nominal = torch.finfo(torch.float32).eps ** k * x.abs().clamp(min=1)
        torch.testing.assert_close(up, nominal, rtol=1e-3, atol=0)
        if order == 2:
            assert torch.equal(x - (x - down), down)


def test_fd_tolerance_follows_the_step():
    ref = kinds.reference(cases.get("seed-trig"))
    t32 = [accuracy.tolerance(torch.float32, k, ref) for k in (0, 1, 2)]
    t64 = [accuracy.tolerance(torch.float64, k, ref) for k in (0, 1, 2)]
    assert t32[0] < t32[2] < t32[1]  # exact < central < forward
    assert all(a > b for a, b in zip(t32, t64))
    ratio = (1 + ref.out_scale / ref.scale) * accuracy.FD_FACTOR
    assert t32[1] == pytest.approx(ratio * torch.finfo(torch.float32).eps ** 0.5)


def test_every_strategy_states_its_cost_model():
    for s in strategies.STRATEGIES.values():
        assert s.summary and s.cost.startswith("Cost:") and "memory" in s.cost, s.name


def test_unsupported_kind_gives_a_reason_not_an_exception():
    reason = kinds.unsupported(strategies.get("jacrev"), "batched")
    assert "does not handle batched problems" in reason
    assert kinds.unsupported(strategies.get("jacrev"), "vector") is None
    assert kinds.unsupported(strategies.get("jacrev"), "penalty") is None  # create_graph: J can sit in a loss
    assert "no create_graph" in kinds.unsupported(strategies.get("manual-backward"), "penalty")
    assert all(check() for check in strategies.FEATURES.values())  # this torch has them all


def test_unknown_strategy_lists_choices():
    with pytest.raises(ValueError, match="unknown strategy 'jacrevv'; choose from manual-backward"):
        strategies.get("jacrevv")

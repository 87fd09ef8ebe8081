"""Jacobian kinds beyond one vector: per-sample batches, parameters, several inputs, and a
Jacobian penalty inside a training step."""

import pytest
import torch

import cases

from .conftest import measured
from bench import kinds, strategies
from bench.kinds import penalty
from bench.strategies import ntk

PER_SAMPLE = ["batch-loop", "batch-full-diagonal", "batch-sum-trick", "batch-grad-batched", "vmap-jacrev",
              "vmap-jacfwd"]


@pytest.mark.parametrize("strategy", PER_SAMPLE)
def test_per_sample_strategies_agree_with_the_float64_reference(strategy):
    r = measured("batch-mlp-in32-out8-w64-b8", strategy)
    assert r.status == "ok", r.reason
    assert r.jac_bytes == 8 * 8 * 32 * 4  # the [B, m, n] stack


def test_the_interacting_batch_flags_the_sum_trick():
    name = "batch-bn-train-in16-out4-b8"
    rows = {s: measured(name, s) for s in PER_SAMPLE}
    assert rows["batch-full-diagonal"].status == "ok"  # the definition: always right
    for s in ("batch-sum-trick", "batch-grad-batched"):  # sum the off-diagonal blocks in
        assert rows[s].status == "wrong" and rows[s].error > 0.1, (s, rows[s].reason)
    for s in ("batch-loop", "vmap-jacrev", "vmap-jacfwd"):  # one sample per batch: BatchNorm refuses
        assert rows[s].status == "error" and "Expected more than 1 value per channel" in rows[s].reason


def test_batched_reference_is_the_diagonal_of_the_full_jacobian():
    p = cases.get("batch-bn-train-in16-out4-b8")
    built = p.build("cpu", torch.float64)
    (x,) = built.inputs
    full = torch.autograd.functional.jacobian(built.fn, x)  # (B, m, B, n)
    diag = torch.stack([full[b, :, b] for b in range(x.shape[0])])
    torch.testing.assert_close(kinds.reference(p).jacobian, diag.reshape(-1, x.shape[1]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("strategy", ["manual-backward", "grad-loop", "grad-batched", "functional",
                                      "functional-vectorized", "jacrev", "jacfwd", "fd-central-loop"])
@pytest.mark.parametrize("problem", ["params-mlp-in8-out4-w32-d2-b8-all", "params-mlp-in8-out4-w32-d2-b8-layer1"])
def test_parameter_jacobians_agree_with_the_reference(problem, strategy):
    r = measured(problem, strategy)
    assert r.status == "ok", r.reason


def test_parameter_blocks_follow_the_parameters_and_the_ntk_is_j_jt():
    p = cases.get("params-mlp-in8-out4-w32-d2-b8-all")
    built = p.build("cpu", torch.float64)
    blocks = strategies.get("jacrev")(built.fn, built.inputs)
    assert [b.shape for b in blocks] == [torch.Size([8, 4]) + x.shape for x in built.inputs]
    j = kinds.reference(p).jacobian
    torch.testing.assert_close(ntk.kernel(blocks, 32), j @ j.T)
    assert measured(p.name, "ntk-jacrev").status == "ok"


def test_strategies_without_a_kind_say_so():
    r = measured("seed-article-multi", "batch-sum-trick")
    assert r.status == "unsupported" and "does not handle multi problems" in r.reason
    r = measured("batch-mlp-in32-out8-w64-b8", "jacrev")
    assert r.status == "unsupported" and "does not handle batched problems" in r.reason


EXACT_WITH_GRAPH = ["grad-loop", "grad-batched", "functional", "functional-vectorized", "jacrev", "jacfwd"]


@pytest.mark.parametrize("problem", ["penalty-identity-h16-out16-b8", "penalty-frobenius-h32-out8-b8"])
@pytest.mark.parametrize("strategy", EXACT_WITH_GRAPH)
def test_exact_penalty_steps_agree_with_the_float64_step(problem, strategy):
    r = measured(problem, strategy)
    assert r.status == "ok", r.reason
    assert r.error <= 1e3 * torch.finfo(torch.float32).eps and r.samples


@pytest.mark.parametrize("strategy", ["manual-backward", "fd-forward", "functional-forward"])
def test_strategies_that_cannot_build_a_graph_are_unsupported_or_fail_loudly(strategy):
    r = measured("penalty-identity-h16-out16-b8", strategy)
    assert r.status in ("unsupported", "error") and r.reason, r


def test_estimators_report_their_error_over_draws_and_shrink_with_projections():
    one, eight = measured("penalty-frobenius-h32-out8-b8", "penalty-proj1"), measured("penalty-frobenius-h32-out8-b8", "penalty-proj8")
    for r in (one, eight):
        assert r.status == "ok", r.reason
        assert r.notes["draws"] == penalty.DRAWS
        assert 0 < r.notes["penalty_rel_error"] < 1 and r.error == r.notes["grad_rel_error"]
    assert eight.notes["penalty_rel_error"] < one.notes["penalty_rel_error"]
    assert eight.work["vjps"] > one.work["vjps"]


def test_a_penalty_that_silently_detaches_is_wrong(temporary_strategy):
    def detached(fn, inputs, create_graph=False):
        return tuple(b.detach() for b in strategies.textbook.jacrev(fn, inputs))

    temporary_strategy("test-detached", detached, create_graph=True)
    r = measured("penalty-identity-h16-out16-b8", "test-detached")
    assert r.status == "wrong" and "does not reach the parameters" in r.reason


def test_the_penalty_step_moves_the_parameters_as_a_float64_finite_difference_gradient_predicts():
    p = cases.get("penalty-identity-h16-out16-b8")
    built = p.build("cpu", torch.float64)
    model, (x, y) = built.fn, built.inputs
    grads = penalty.step(model, x, y, strategies.get("jacrev"))[1:]
    params = list(model.parameters())

    def loss():
        with torch.enable_grad():
            return penalty.step(model, x, y, strategies.get("grad-loop"))[0] * model.lam + (
                (model(x) - y) ** 2).mean()

    # central finite differences of the loss along the step's own gradient direction
    direction = [g / torch.cat([h.reshape(-1) for h in grads]).norm() for g in grads]
    eps = 1e-5
    with torch.no_grad():
        for prm, d in zip(params, direction):
            prm.add_(eps * d)
    up = loss().item()
    with torch.no_grad():
        for prm, d in zip(params, direction):
            prm.sub_(2 * eps * d)
    down = loss().item()
    with torch.no_grad():
        for prm, d in zip(params, direction):
            prm.add_(eps * d)
    fd_slope = (up - down) / (2 * eps)
    predicted = sum((g * d).sum() for g, d in zip(grads, direction)).item()  # = |grad|
    assert fd_slope == pytest.approx(predicted, rel=1e-6)
    before = loss().item()
    with torch.no_grad():  # one SGD step lowers the loss as the gradient predicts
        for prm, g in zip(params, grads):
            prm.sub_(1e-3 * g)
    assert loss().item() < before

"""The problem families of issue 3: shapes, networks, decoder, hidden layer, least squares,
sparse and op coverage. Their grids, their analytic Jacobians (checked against float64
reverse mode at sizes the generic test in test_cases.py skips), and what the gate records
on the op-coverage problems."""

import math

import pytest
import torch

import cases
from cases import decoder, hidden, lsq, nets, shapes, sparse

from .conftest import measured
from bench import kinds
from bench.gate import accuracy

FAMILIES = {  # family -> name prefix
    "shape": "shape-", "cnn": "cnn-", "transformer": "transformer-", "rnn": "lstm-", "decoder": "decoder-",
    "hidden": "hidden-", "lsq": "lsq-", "sparse": "sparse-", "ops": "ops-",
}
OURS = [p for p in cases.problems() if p.family in FAMILIES]


def reverse_mode(problem: cases.Problem) -> torch.Tensor:
    built = problem.build("cpu", torch.float64)
    return accuracy.flatten(accuracy.reverse_loop(built.fn, built.inputs), problem.m)


def assert_analytic_agrees(problem: cases.Problem):
    analytic = kinds.reference(problem).jacobian
    torch.testing.assert_close(analytic, reverse_mode(problem), rtol=1e-12, atol=1e-12 * analytic.abs().max().item())


# --- the registry: names, tags, profiles ---------------------------------------------------


def test_each_family_has_its_prefix_tag_and_one_quick_problem_but_the_shape_ladders():
    for family, prefix in FAMILIES.items():
        members = [p for p in OURS if p.family == family]
        assert members, family
        assert all(p.name.startswith(prefix) for p in members), family
        assert {p.name for p in cases.select(prefix + "*")} == {p.name for p in members}
        quick = {(p.n, p.m) for p in members if p.in_profile("quick")}
        assert quick == set(shapes.QUICK) if family == "shape" else len(quick) == 1, family
    assert {p.name for p in cases.select(tags="sparse")} == {p.name for p in OURS if p.family == "sparse"}


def test_descriptions_and_sizes_say_what_each_problem_is():
    for p in OURS:
        assert p.sizes and len(p.description) > 30 and "\n" not in p.description, p.name
        assert p.flops is None or p.flops > 0, p.name


def test_non_analytic_references_stay_cheap():
    # The gate's float64 autograd loop runs min(m, n) products; the big problems carry J.
    for p in OURS:
        if not p.analytic:
            assert min(p.m, p.n) <= 2048, p.name


def test_shape_sweep_spans_1_to_4096_both_ways():
    grid = {(p.n, p.m) for p in cases.select("shape-*")}
    assert {(1, 4096), (4096, 1), (32, 2048), (2048, 32), (1, 1)} <= grid
    standard = {(p.n, p.m) for p in cases.select("shape-*", profile="standard")}
    assert {(1, 1024), (1024, 1), (32, 2048), (2048, 32)} <= standard
    assert all(p.analytic for p in cases.select("shape-*"))


def test_scalar_output_is_0d_and_its_jacobian_is_a_gradient():
    built = cases.get("shape-in256-out1").build("cpu", torch.float64)
    (x,) = built.inputs
    assert built.fn(x).shape == ()
    (grad,) = built.jacobian()
    assert grad.shape == x.shape
    torch.testing.assert_close(grad, torch.func.grad(built.fn)(x))


def test_shape_jacobian_at_the_sizes_the_generic_test_skips():
    # shape-in1-out4096 and larger (m > 2048); the builder is the same at every size.
    for n, m in ((1, 4096), (16, 4096)):
        assert_analytic_agrees(cases.get(f"shape-in{n}-out{m}"))


def test_decoder_grid_latent_2_to_64_images_28_to_64():
    decs = cases.select("decoder-*")
    assert {dict(p.sizes)["latent"] for p in decs} == {2, 8, 16, 32, 64}
    assert {p.m for p in decs} == {784, 3072, 3 * 64 * 64}
    assert all(p.n < p.m for p in decs)
    built = cases.get("decoder-z8-3x64x64").build("cpu", torch.float32)
    img = built.fn(*built.inputs)
    assert img.shape == (3, 64, 64) and 0 < img.min() and img.max() < 1  # a sigmoid image
    assert decoder.decoder_flops(8, 3, 64) == cases.get("decoder-z8-3x64x64").flops


def test_networks_cover_cnn_transformer_and_lstm_ladders():
    assert len({(dict(p.sizes)["length"], dict(p.sizes)["d"]) for p in cases.select("transformer-*",
                                                                                  profile="standard")}) >= 2
    lengths = {dict(p.sizes)["length"] for p in cases.select("transformer-*")}
    widths = {dict(p.sizes)["d"] for p in cases.select("transformer-*")}
    assert len(lengths) >= 3 and len(widths) >= 2
    assert any(p.m < p.n for p in cases.select("lstm-*"))  # last state only
    for p in cases.select("cnn-*"):
        built = p.build("cpu", torch.float32)
        assert built.inputs[0].dim() == 3 and isinstance(built.module, torch.nn.Sequential)


def test_lstm_jacobian_is_causal():
    problem = cases.get("lstm-len16-in8-h32")
    jac = kinds.reference(problem).jacobian.reshape(16, 32, 16, 8)
    later_inputs = torch.triu(torch.ones(16, 16, dtype=torch.bool), diagonal=1)  # input step > output step
    assert jac.permute(0, 2, 1, 3)[later_inputs].abs().max() == 0
    assert jac.permute(0, 2, 1, 3)[~later_inputs].abs().max() > 0


@pytest.mark.parametrize("name, whole", [
    ("hidden-cnn-b2-16x8x8-out10", "cnn-3x32x32-out10"),
    ("hidden-cnn-b1-8x16x16-out10", "cnn-3x32x32-out10"),
])
def test_hidden_problem_is_the_rest_of_the_same_network_at_the_same_sample(name, whole):
    part, full = cases.get(name).build("cpu", torch.float64), cases.get(whole).build("cpu", torch.float64)
    torch.testing.assert_close(part.fn(*part.inputs), full.fn(*full.inputs))
    # Chain rule: d logits / d image = (d logits / d h) (d h / d image).
    (h,) = part.inputs
    k = len(full.module) - len(part.module)
    d_rest = torch.func.jacrev(part.fn)(h).reshape(10, -1)
    d_head = torch.func.jacrev(full.module[:k])(full.inputs[0]).reshape(h.numel(), -1)
    torch.testing.assert_close(d_rest @ d_head, torch.func.jacrev(full.fn)(full.inputs[0]).reshape(10, -1))


def test_hidden_mlp_layers():
    for k, n in ((1, 512), (2, 256), (3, 128)):
        p = cases.get(f"hidden-mlp-l{k}-in{n}-out10")
        built = p.build("cpu", torch.float32)
        assert built.inputs[0].shape == (n,) and built.inputs[0].abs().max() < 1  # a tanh activation
    assert hidden.MLP_DIMS[0] == 784


def test_lsq_has_the_84_by_576_fit_and_its_jacobian_is_right_at_every_size():
    p = cases.get("lsq-blobs-k21-grid24")
    assert (p.n, p.m) == (84, 576) and p.m > 4 * p.n
    for k, g in ((3, 10), (21, 24)):
        assert_analytic_agrees(lsq._problem(k, g, 2))


def test_lsq_residual_is_small_near_the_truth():
    built = cases.get("lsq-blobs-k21-grid24").build("cpu", torch.float64)
    r = built.fn(*built.inputs)
    assert r.abs().max() < 1 and r.std() > 0.01  # a fit in progress: near, not at, the data


SMALL_SPARSE = [sparse._diag(40), sparse._burgers(40), sparse._banded(40, 3), sparse._blockdiag(40, 8)]


@pytest.mark.parametrize("problem", SMALL_SPARSE, ids=lambda p: p.name)
def test_sparse_analytic_jacobian_and_pattern_at_a_small_size(problem):
    # The n = 10^4 problems are too big for an autograd check; their builders are the same.
    assert_analytic_agrees(problem)
    built = problem.build("cpu", torch.float64)
    jac = built.jacobian()[0]
    assert built.sparsity.dtype == torch.bool and built.sparsity.shape == (problem.m, problem.n)
    assert not jac[~built.sparsity].any()  # every nonzero is inside the pattern
    assert jac[built.sparsity].ne(0).float().mean() > 0.9  # and the pattern is tight


def test_sparse_grid_reaches_ten_thousand_in_full_only():
    structures = ("diagonal", "tridiagonal", "banded", "block-diagonal")
    for profile in ("standard", "full"):
        chosen = cases.select("sparse-*", profile=profile)
        assert all(any(t in p.tags for p in chosen) for t in structures), profile
        assert all(p.analytic and "sparse" in p.tags for p in chosen)
    assert max(p.n for p in cases.select("sparse-*", profile="standard")) <= 1000
    big = [p for p in cases.select("sparse-*") if p.n == 10_000]
    assert len(big) == len(structures) and not any(p.in_profile("standard") for p in big)


def test_sparsity_patterns_of_registered_problems_are_exact_nonzeros():
    for name in ("sparse-burgers-n100", "sparse-banded-n500-k4", "sparse-blockdiag-n500-b10"):
        built = cases.get(name).build("cpu", torch.float64)
        jac = built.jacobian()[0]
        assert torch.equal(jac != 0, built.sparsity), name


def test_seeded_weights_do_not_depend_on_dtype():
    a = cases.get("transformer-len8-d32-h2").build("cpu", torch.float32)
    b = cases.get("transformer-len8-d32-h2").build("cpu", torch.float64)
    for pa, pb in zip(a.module.parameters(), b.module.parameters()):
        torch.testing.assert_close(pa.double(), pb, rtol=1e-7, atol=1e-7)
    assert nets.seeded is not None and not any(p.requires_grad for p in a.module.parameters())


# --- op coverage: what the gate records -----------------------------------------------------

OPS = [p.name for p in cases.select("ops-*")]
LOOPS = ("grad-loop", "functional", "manual-backward")


def _one_line_error(row, *fragments):
    assert row.status == "error", (row.strategy, row.status, row.reason)
    assert row.reason and "\n" not in row.reason and len(row.reason) <= 300
    assert all(f in row.reason for f in fragments), row.reason
    assert not row.samples  # never timed


@pytest.mark.parametrize("strategy", LOOPS)
@pytest.mark.parametrize("problem", OPS)
def test_reverse_mode_loops_stay_ok_on_every_op_problem(problem, strategy):
    row = measured(problem, strategy)
    assert row.status == "ok", (problem, strategy, row.reason)
    assert not row.fallback  # loops never go through vmap


@pytest.mark.parametrize("problem, op", [("ops-slogdet-k8", "linalg"), ("ops-solve-k8-r4", "linalg")])
def test_linalg_falls_back_in_the_legacy_vmap_and_the_row_says_so(problem, op):
    row = measured(problem, "functional-vectorized")
    assert row.status == "ok", row.reason
    assert row.fallback and any(op in o for o in row.fallback_ops), row.fallback_ops
    jacrev = measured(problem, "jacrev")
    assert jacrev.status == "ok" and not jacrev.fallback  # torch.func has the batching rules


def test_custom_function_without_jvp_fails_forward_mode_with_a_clear_reason():
    name = "ops-custom-fn-n64-m64"
    for strategy in ("jacfwd", "functional-forward"):
        _one_line_error(measured(name, strategy), "jvp")
    for strategy in ("jacrev", "functional-vectorized", "fd-forward"):
        assert measured(name, strategy).status == "ok", strategy  # reverse mode and vmap still work


def test_legacy_custom_function_is_refused_by_torch_func_but_not_by_autograd():
    name = "ops-custom-fn-legacy-n64-m64"
    for strategy in ("jacrev", "jacfwd", "fd-forward"):
        _one_line_error(measured(name, strategy), "setup_context")
    for strategy in ("functional", "functional-vectorized", "fd-forward-loop"):
        assert measured(name, strategy).status == "ok", strategy


def test_writes_into_an_unbatched_buffer_break_vmapped_evaluation_only():
    name = "ops-inplace-buffer-n128"
    _one_line_error(measured(name, "fd-forward"), "vmap")
    for strategy in ("jacrev", "fd-forward-loop"):
        assert measured(name, strategy).status == "ok", strategy


@pytest.mark.parametrize("problem", ["ops-dropout-eval-n64-m64", "ops-batchnorm-eval-1x16x16-out10",
                                     "ops-inplace-n128", "ops-gather-scatter-n128-m64",
                                     "ops-softplus-n64-m64"])
def test_vmap_friendly_ops_are_right_under_torch_func(problem):
    for strategy in ("jacrev", "jacfwd"):
        row = measured(problem, strategy)
        assert row.status == "ok", (strategy, row.reason)
        assert row.error <= row.tolerance


def test_eval_mode_makes_dropout_and_batchnorm_deterministic():
    for name in ("ops-dropout-eval-n64-m64", "ops-batchnorm-eval-1x16x16-out10"):
        built = cases.get(name).build("cpu", torch.float64)
        assert torch.equal(built.fn(*built.inputs), built.fn(*built.inputs))
    assert math.isfinite(kinds.reference(cases.get("ops-batchnorm-eval-1x16x16-out10")).scale)

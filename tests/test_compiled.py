"""The compiled, chunked and CUDA-graph strategies: right, and what they trade.

Compiling is slow on a CPU (seconds per function), so only a few tiny functions are compiled."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cases

from .conftest import QUICK, checked, measured
from bench import strategies
from bench.measure.pair import measure_problem
from bench.strategies import chunked, compiled

MLP = "mlp-in128-out128-w64-d1"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


# --- every new strategy against the float64 reference -----------------------------------------


@pytest.mark.parametrize("name", ["structured", "jacrev-chunk4", "jacrev-chunk16", "jacrev-chunk64",
                                  "jacfwd-chunk4", "jacfwd-chunk16", "jacfwd-chunk64"])
def test_mlp_strategies_agree_with_the_reference(name):
    row = checked(MLP, name)
    if "chunk" in name:
        k = int(name.rsplit("chunk", 1)[1])
        assert row.notes == {"chunk_size": k, "chunks": -(-128 // k)}


@pytest.mark.parametrize("name", ["coloring-forward", "coloring-reverse"])
@pytest.mark.parametrize("problem", ["sparse-burgers-n100", "sparse-diag-n1000"])
def test_coloring_agrees_with_the_reference_in_few_passes(name, problem):
    row = checked(problem, name)
    colours = {"sparse-burgers-n100": 3, "sparse-diag-n1000": 1}[problem]
    assert row.notes["colors"] == colours and row.notes["pattern"] == "problem"
    kind = "jvps" if name.endswith("forward") else "vjps"
    assert row.work[kind] == colours  # a handful of products, counted, instead of n


def test_chunked_strategies_trade_memory_for_time():
    rows = {k: checked(MLP, f"jacrev-chunk{k}") for k in (4, 64)}
    full = checked(MLP, "jacrev")
    assert rows[4].peak_bytes < rows[64].peak_bytes <= full.peak_bytes


def test_chunked_forward_mode_never_holds_the_whole_identity():
    row = checked("shape-in4096-out16", "jacfwd-chunk16")
    assert row.peak_bytes < 4096 * 4096 * 4 / 8  # an N x N float32 basis alone is 64 MiB


def test_chunks_that_hold_everything_are_unsupported_not_duplicates():
    row = measured(MLP, "jacrev-chunk256")
    assert row.status == "unsupported" and "one chunk, the same computation as jacrev" in row.reason


def test_cuda_graphs_are_unsupported_on_the_cpu_with_a_reason():
    for name in ("jacrev-cudagraph", "jacfwd-cudagraph"):
        row = measured(MLP, name)  # ruled out before anything is built
        assert row.status == "unsupported" and row.reason == f"{name} runs on cuda only"
        built = cases.get(MLP).build("cpu", torch.float32)
        with pytest.raises(strategies.Unsupported, match="CUDA graphs need CUDA tensors"):
            strategies.get(name)(built.fn, built.inputs)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("name", ["jacrev-cudagraph", "jacfwd-cudagraph"])
def test_cuda_graphs_agree_with_the_reference_and_follow_new_inputs(name):
    row = checked(MLP, name, "float32", "cuda")
    assert row.notes["captured"] == name.split("-")[0]
    built = cases.get(MLP).build("cuda", torch.float32)
    s = strategies.get(name)
    for scale in (1.0, -2.0):  # replays must read the new input, not the captured one
        x = built.inputs[0] * scale
        (got,) = s(built.fn, (x,))
        torch.testing.assert_close(got, torch.func.jacrev(built.fn)(x))


# --- compiled ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jacrev-compiled", "jacfwd-compiled"])
def test_compiled_agrees_with_the_reference_and_with_eager(name):
    row = checked("seed-article-multi", name)
    assert row.notes["compiled_graphs"] >= 1 and row.notes["compile_s"] > 0
    assert row.first_call_s > sum(row.samples) / len(row.samples)  # the compile is not in the median
    built = cases.get("seed-article-multi").build("cpu", torch.float32)
    got = strategies.get(name)(built.fn, built.inputs)
    eager = strategies.get(name.replace("-compiled", ""))(built.fn, built.inputs)
    assert [g.shape for g in got] == [e.shape for e in eager]
    for g, e in zip(got, eager):
        torch.testing.assert_close(g, e)


def test_vmap_jacrev_compiled_gives_per_sample_jacobians():
    row = checked("batch-mlp-in32-out8-w64-b8", "vmap-jacrev-compiled")
    assert row.notes["compiled_graphs"] >= 1
    built = cases.get("batch-mlp-in32-out8-w64-b8").build("cpu", torch.float32)
    (got,) = strategies.get("vmap-jacrev-compiled")(built.fn, built.inputs)
    (eager,) = strategies.get("vmap-jacrev")(built.fn, built.inputs)
    assert got.shape == eager.shape == (8, 8, 32)
    torch.testing.assert_close(got, eager)


def test_each_compiled_function_has_its_own_dynamo_cache():
    # dynamo gives up on a code object after recompile_limit entries and runs it eagerly.
    # With a limit of 1, a second function compiled through a shared code object would run
    # eagerly; each compiled function must have its own code object, and be compiled.
    import torch._dynamo

    with torch._dynamo.config.patch(recompile_limit=1):  # (monkeypatch breaks dynamo's config)
        for scale in (2.0, 3.0):
            def f(x, scale=scale):
                return torch.sin(x) * scale

            notes = {}
            with strategies.using(notes=notes):
                (got,) = strategies.get("jacrev-compiled")(f, (torch.ones(3),))
            assert notes["compiled_graphs"] >= 1
            torch.testing.assert_close(got, torch.diag(torch.cos(torch.ones(3)) * scale))
    a, b = compiled._fresh(len, "a"), compiled._fresh(len, "b")
    assert a.__code__ is not b.__code__


class _CustomBackward(torch.autograd.Function):
    """Forward 3x with a custom backward of 1 (a straight-through-style gradient)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return 3 * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad


def test_a_compiled_result_that_differs_from_eager_is_never_ok():
    # A known mismatch (torch 2.13): compiled jacrev differentiates the custom Function's
    # forward (3) instead of calling its backward (1), which eager jacrev uses. Neither is
    # called right: the float64 autograd reference (1) disagrees with finite differences of
    # f (3), so the audit disputes it and no strategy on the problem is ok.
    def build(s):
        return cases.Built(lambda x: _CustomBackward.apply(x), (s.cast(torch.linspace(-1, 1, 3, dtype=torch.float64)),))

    problem = cases.Problem("adhoc-custom-backward", "test", "vector", n=3, m=3, builder=build)
    built = problem.build("cpu", torch.float32)
    (eager,) = strategies.get("jacrev")(built.fn, built.inputs)
    row = measure_problem(problem, strategies.get("jacrev-compiled"), "cpu", "float32", QUICK)
    torch.testing.assert_close(eager, torch.eye(3))
    (compiled_result,) = strategies.get("jacrev-compiled")(built.fn, built.inputs)
    assert not torch.allclose(compiled_result, eager) or torch.allclose(compiled_result, 3 * torch.eye(3))
    assert row.status == "disputed", row
    assert "custom autograd.Function _CustomBackward (test_compiled.py:" in row.reason, row.reason


def test_a_failed_compile_leaves_autograd_working():
    # torch 2.13: compiling jacfwd of layer_norm fails inside dynamo, and the failed trace's
    # frames, once collected, used to switch autograd off for the whole process.
    import gc

    w, b = torch.ones(4), torch.zeros(4)

    def norm(x):
        return nn.functional.layer_norm(x, (4,), w, b)

    tls = torch._C._dispatch_tls_local_include_set(), torch._C._dispatch_tls_local_exclude_set()
    try:
        strategies.get("jacfwd-compiled")(norm, (torch.randn(2, 4),))
    except RuntimeError as exc:  # where a torch fixes the bug, the call simply works
        assert str(exc).startswith("torch.compile failed:")
    gc.collect()
    assert (torch._C._dispatch_tls_local_include_set(), torch._C._dispatch_tls_local_exclude_set()) == tls
    x = torch.ones(2, requires_grad=True)
    assert (x * 2).requires_grad
    assert torch.func.jacrev(torch.sin)(x).shape == (2, 2)
    # the legacy vmap too (it read a stale Tracer exclusion as "no tensor arguments")
    a = 4 * torch.eye(3, dtype=torch.float64)
    torch.autograd.functional.jacobian(lambda v: torch.linalg.slogdet(a + v.reshape(3, 3))[1].reshape(1),
                                       (torch.zeros(9, dtype=torch.float64),), vectorize=True)


def test_memo_lives_on_the_function_and_is_not_copied():
    import copy

    net = nn.Linear(2, 2)
    compiled.memo(net, "x")["k"] = 1
    assert compiled.memo(net, "x") == {"k": 1}
    assert compiled.memo(copy.deepcopy(net), "x") == {}
    bound = nn.Linear(2, 2).forward
    compiled.memo(bound, "x")["k"] = 2
    assert compiled.memo(bound.__self__.forward, "x") == {"k": 2}


def test_every_new_strategy_states_its_cost_model_and_tier():
    new = [n for n in strategies.STRATEGIES
           if any(t in n for t in ("compiled", "chunk", "cudagraph", "structured", "coloring"))]
    assert len(new) == 3 + 2 * len(chunked.CHUNKS) + 2 + 1 + 2
    for name in new:
        s = strategies.get(name)
        assert s.summary and s.cost.startswith("Cost:") and "memory" in s.cost, name
        if "compiled" in name or "chunk" in name:
            assert s.tier == 2  # seconds per problem: the full profile only
        if "cudagraph" in name:  # cheap where it runs, and ruled out at once elsewhere
            assert s.tier == 1 and s.devices == ("cuda",)
    quick = sorted(n for n in new if strategies.get(n).tier == 0)
    assert quick == ["coloring-forward", "coloring-reverse", "structured"]  # cheap, or unsupported at once

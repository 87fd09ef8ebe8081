"""Beyond the textbook: compiled, chunked, CUDA-graph, structured and colouring strategies.

Compiling is slow on a CPU (seconds per function), so only a few tiny functions are compiled.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import cases
from bench import accuracy, coloring, compiled, strategies, structured
from bench.measure import measure, measure_problem
from bench.plan import Pair, Settings
from bench.timing import Policy

FAST = Settings(profile="quick", policy=Policy(warmup=0, min_rounds=2, max_time=0.01))
MLP = "mlp-in128-out128-w64-d1"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def ok(pair: Pair):
    row = measure(pair, FAST)
    assert row.status == "ok", (pair, row.status, row.reason)
    assert row.error <= row.tolerance
    return row


# --- every new strategy against the float64 reference -----------------------------------------


@pytest.mark.parametrize("name", ["structured", "jacrev-chunk4", "jacrev-chunk16", "jacrev-chunk64",
                                  "jacfwd-chunk4", "jacfwd-chunk16", "jacfwd-chunk64"])
def test_mlp_strategies_agree_with_the_reference(name):
    row = ok(Pair("cpu", "float32", MLP, name))
    if "chunk" in name:
        k = int(name.rsplit("chunk", 1)[1])
        assert row.notes == {"chunk_size": k, "chunks": -(-128 // k)}


@pytest.mark.parametrize("name", ["coloring-forward", "coloring-reverse"])
@pytest.mark.parametrize("problem", ["sparse-burgers-n100", "sparse-diag-n1000"])
def test_coloring_agrees_with_the_reference_in_few_passes(name, problem):
    row = ok(Pair("cpu", "float32", problem, name))
    colours = {"sparse-burgers-n100": 3, "sparse-diag-n1000": 1}[problem]
    assert row.notes["colors"] == colours and row.notes["pattern"] == "problem"
    kind = "jvps" if name.endswith("forward") else "vjps"
    assert row.work[kind] == colours  # a handful of products, counted, instead of n


def test_chunked_strategies_trade_memory_for_time():
    rows = {k: ok(Pair("cpu", "float32", MLP, f"jacrev-chunk{k}")) for k in (4, 64)}
    full = ok(Pair("cpu", "float32", MLP, "jacrev"))
    assert rows[4].peak_bytes < rows[64].peak_bytes <= full.peak_bytes


def test_chunked_forward_mode_never_holds_the_whole_identity():
    row = ok(Pair("cpu", "float32", "shape-in4096-out16", "jacfwd-chunk16"))
    assert row.peak_bytes < 4096 * 4096 * 4 / 8  # an N x N float32 basis alone is 64 MiB


def test_chunks_that_hold_everything_are_unsupported_not_duplicates():
    row = measure(Pair("cpu", "float32", MLP, "jacrev-chunk256"), FAST)
    assert row.status == "unsupported" and "one chunk, the same computation as jacrev" in row.reason


def test_cuda_graphs_are_unsupported_on_the_cpu_with_a_reason():
    for name in ("jacrev-cudagraph", "jacfwd-cudagraph"):
        row = measure(Pair("cpu", "float32", MLP, name), FAST)  # ruled out before anything is built
        assert row.status == "unsupported" and row.reason == f"{name} runs on cuda only"
        built = cases.get(MLP).build("cpu", torch.float32)
        with pytest.raises(strategies.Unsupported, match="CUDA graphs need CUDA tensors"):
            strategies.get(name)(built.fn, built.inputs)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("name", ["jacrev-cudagraph", "jacfwd-cudagraph"])
def test_cuda_graphs_agree_with_the_reference_and_follow_new_inputs(name):
    row = ok(Pair("cuda", "float32", MLP, name))
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
    row = ok(Pair("cpu", "float32", "seed-article-multi", name))
    assert row.notes["compiled_graphs"] >= 1 and row.notes["compile_s"] > 0
    assert row.first_call_s > sum(row.samples) / len(row.samples)  # the compile is not in the median
    built = cases.get("seed-article-multi").build("cpu", torch.float32)
    got = strategies.get(name)(built.fn, built.inputs)
    eager = strategies.get(name.replace("-compiled", ""))(built.fn, built.inputs)
    assert [g.shape for g in got] == [e.shape for e in eager]
    for g, e in zip(got, eager):
        torch.testing.assert_close(g, e)


def test_vmap_jacrev_compiled_gives_per_sample_jacobians():
    row = ok(Pair("cpu", "float32", "batch-mlp-in32-out8-w64-b8", "vmap-jacrev-compiled"))
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
    row = measure_problem(problem, strategies.get("jacrev-compiled"), "cpu", "float32", FAST)
    torch.testing.assert_close(eager, torch.eye(3))
    (compiled_result,) = strategies.get("jacrev-compiled")(built.fn, built.inputs)
    assert not torch.allclose(compiled_result, eager) or torch.allclose(compiled_result, 3 * torch.eye(3))
    assert row.status == "disputed", row
    assert "custom autograd.Function _CustomBackward (test_advanced.py:" in row.reason, row.reason


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
    row = ok(Pair("cpu", "float32", MLP, "structured"))
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
    row = measure(Pair("cpu", "float32", "seed-powers", "structured"), FAST)
    assert row.status == "unsupported" and "needs an nn.Sequential" in row.reason


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


class _NoForwardAD(torch.autograd.Function):
    """sin, with a backward but no jvp: forward mode raises on it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.sin()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.cos()


def test_pattern_detection_falls_back_to_the_mode_that_works():
    def f(x):  # m = 2n favours forward mode, which this op lacks
        s = _NoForwardAD.apply(x)
        return torch.cat([s, 2 * s])

    x = torch.linspace(0, 1, 20, dtype=torch.float64)
    notes = {}
    with strategies.using(notes=notes):
        (got,) = strategies.get("coloring-reverse")(f, (x,))
    assert notes["colors"] == 2 and notes["pattern"] == "detected"
    torch.testing.assert_close(got, torch.func.jacrev(f)(x))


def test_colouring_a_dense_function_is_unsupported():
    row = measure(Pair("cpu", "float32", MLP, "coloring-forward"), FAST)
    assert row.status == "unsupported" and "no compression" in row.reason


def test_colouring_multi_input_blocks():
    built = cases.get("seed-article-multi").build("cpu", torch.float64)
    pattern = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    with strategies.using(sparsity=pattern):
        got = strategies.get("coloring-reverse")(built.fn, built.inputs)
    want = strategies.get("jacrev")(built.fn, built.inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_every_new_strategy_states_its_cost_model_and_tier():
    new = [n for n in strategies.STRATEGIES
           if any(t in n for t in ("compiled", "chunk", "cudagraph", "structured", "coloring"))]
    assert len(new) == 3 + 2 * len(compiled.CHUNKS) + 2 + 1 + 2
    for name in new:
        s = strategies.get(name)
        assert s.summary and s.cost.startswith("Cost:") and "memory" in s.cost, name
        if "compiled" in name or "chunk" in name:
            assert s.tier == 2  # seconds per problem: the full profile only
        if "cudagraph" in name:  # cheap where it runs, and ruled out at once elsewhere
            assert s.tier == 1 and s.devices == ("cuda",)
    quick = sorted(n for n in new if strategies.get(n).tier == 0)
    assert quick == ["coloring-forward", "coloring-reverse", "structured"]  # cheap, or unsupported at once


def test_an_unregistered_problem_goes_through_measure_problem():
    def build(s):
        net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(s.device, s.dtype).requires_grad_(False)
        gen = s.generator()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(s.randn(*p.shape, gen=gen))  # drawn in float64, then cast: the same net in both dtypes
        return cases.Built(net, (s.cast(torch.linspace(-1, 1, 4, dtype=torch.float64)),), module=net)

    problem = cases.Problem("adhoc-test-net", "test", "vector", n=4, m=3, builder=build)
    row = measure_problem(problem, strategies.get("structured"), "cpu", "float32", FAST)
    assert row.status == "ok", row.reason
    assert accuracy.reference(problem).jacobian.shape == (3, 4)


def test_all_parenthesisations_are_counted_by_catalan_numbers():
    # A sanity check of the brute force itself: C(L-1) orders for L factors.
    def orders(lo, hi):
        if lo == hi:
            return 1
        return sum(orders(lo, s) * orders(s + 1, hi) for s in range(lo, hi))

    assert [orders(0, n - 1) for n in range(1, 7)] == [1, 1, 2, 5, 14, 42]

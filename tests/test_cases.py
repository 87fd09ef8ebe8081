"""The problem registry: invariants, builds, analytic Jacobians, selection."""

import re

import pytest
import torch

import cases

from bench import kinds, strategies
from bench.gate import accuracy

PROBLEMS = cases.problems()


def test_names_are_unique_kebab_case_ids():
    names = [p.name for p in PROBLEMS]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9]+(?:[.-][a-z0-9]+)*", n) for n in names)


def test_every_problem_is_well_formed():
    for p in PROBLEMS:
        assert p.kind in kinds.KINDS and p.family and p.description, p
        assert p.tier in range(len(cases.PROFILES))
        assert p.n > 0 and p.m > 0
        assert hash(p) == hash(cases.get(p.name))  # frozen and hashable: usable as a group key


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_every_problem_builds_on_cpu(problem, dtype):
    built = problem.build("cpu", dtype)
    out = built.fn(*built.inputs[:1] if problem.kind == "penalty" else built.inputs)
    assert isinstance(out, torch.Tensor)
    assert out.numel() == problem.m * problem.batch
    if problem.kind in ("vector", "multi", "params"):
        assert sum(x.numel() for x in built.inputs) == problem.n
    elif problem.kind == "batched":
        assert built.inputs[0].shape == (problem.batch, problem.n)
    assert all(x.dtype == dtype for x in built.inputs)
    if problem.family != "graph-break":  # torch.tensor([...]) picks its own dtype
        assert out.dtype == dtype


def test_builds_are_deterministic_and_seeded():
    p = cases.get("mlp-in32-out512-w64-d2")
    a, b, c = p.build(seed=0), p.build(seed=0), p.build(seed=1)
    assert torch.equal(a.fn(*a.inputs), b.fn(*b.inputs))
    assert not torch.equal(a.fn(*a.inputs), c.fn(*c.inputs))


def _autograd_twin(problem):
    """The problem itself, or for a graph-break problem its torch.stack twin."""
    if problem.family == "graph-break":
        return cases.get(problem.name.replace("graph-break-", "seed-"))
    return problem


@pytest.mark.parametrize("problem", [p for p in PROBLEMS if p.analytic and p.m <= 2048], ids=lambda p: p.name)
def test_analytic_jacobian_agrees_with_float64_reverse_mode(problem):
    # (larger problems are checked by their family's tests at a smaller size)
    analytic = kinds.reference(problem)
    twin = _autograd_twin(problem).build("cpu", torch.float64)
    reverse = accuracy.flatten(accuracy.reverse_loop(twin.fn, twin.inputs), analytic.jacobian.shape[0])
    torch.testing.assert_close(analytic.jacobian, reverse, rtol=1e-12, atol=1e-12)


def test_article_jacobian_is_the_articles_matrix():
    expected = torch.tensor([[1.0, 1, 0], [5, 0, 3], [0, 48, 0]], dtype=torch.float64)
    assert torch.equal(kinds.reference(cases.get("seed-article")).jacobian, expected)
    assert torch.equal(kinds.reference(cases.get("seed-article-multi")).jacobian, expected)
    built = cases.get("seed-article").build("cpu", torch.float32)
    for name in ("manual-backward", "grad-loop", "functional", "jacrev", "jacfwd"):
        (block,) = strategies.get(name)(built.fn, built.inputs)
        assert torch.equal(block.double(), expected), name


def test_forum_linear_map_jacobian_is_w1():
    built = cases.get("seed-linear").build("cpu", torch.float64)
    (x,) = built.inputs
    assert x.shape == (2, 1)
    w1 = torch.func.jacrev(built.fn)(x).reshape(2, 2)
    assert torch.equal(built.fn(torch.eye(2, dtype=torch.float64)), w1)  # w1 @ I = w1
    assert torch.equal(kinds.reference(cases.get("seed-linear")).jacobian, w1)


def test_mlp_ladder_crosses_the_forward_reverse_crossover():
    mlps = cases.select("mlp-*")
    ratios = {p.n / p.m for p in mlps}
    assert min(ratios) <= 1 / 64 and max(ratios) >= 64
    assert {64, 1024} <= {dict(p.sizes)["width"] for p in mlps}
    assert len({dict(p.sizes)["depth"] for p in mlps}) >= 3
    assert cases.get("mlp-in128-out128-w256-d2").in_profile("quick")
    assert cases.get("mlp-in32-out512-w256-d3").in_profile("standard")


def test_profiles_are_nested():
    quick, standard, full = (set(cases.select(profile=p)) for p in cases.PROFILES)
    assert quick < standard < full == set(PROBLEMS)


@pytest.mark.parametrize("family", ["mlp", "shape"])
def test_the_quick_profile_has_what_the_scaling_and_crossover_figures_need(family):
    """Its report draws both figures for these families: the figures' own rules decide, on the
    profile's problems, with jacrev twice as fast as jacfwd at every size."""
    from tests.test_picks import frame, row

    from bench.analysis.picks import timed
    from bench.render import figures as figs

    quick = [p for p in cases.select(profile="quick") if p.family == family]
    ok = timed(frame(*(row(p.name, s, median=t * p.flops, q1=t * p.flops, q3=t * p.flops, family=family, n=p.n,
                           m=p.m, problem_flops=p.flops)
                       for p in quick for s, t in (("jacrev", 1e-9), ("jacfwd", 2e-9)))))
    styles = figs.Styles(["jacrev", "jacfwd"], set())
    assert figs.scaling(ok, family, styles) is not None
    sweeps = figs.shape_sweeps(ok, forward="jacfwd", reverse="jacrev")
    assert not sweeps.empty and sweeps["problem"].str.startswith(family).all()


@pytest.mark.parametrize("kwargs, fragment", [
    ({"patterns": "nosuch-*"}, "no problem matches 'nosuch-*'; families: "),
    ({"tags": "nosuch"}, "unknown tag 'nosuch'; choose from "),
    ({"profile": "huge"}, "unknown profile 'huge'; choose from quick, standard, full"),
    ({"kinds": "matrix"}, "unknown kind 'matrix'; choose from vector"),
])
def test_bad_selection_is_a_one_line_error_with_choices(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        cases.select(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_selection_by_glob_tag_and_profile():
    assert {p.name for p in cases.select("seed-arm*")} == {"seed-arm2", "seed-arm3"}
    assert all("graph-break" in p.tags for p in cases.select(tags="graph-break"))
    assert all(p.in_profile("quick") for p in cases.select(profile="quick"))


@pytest.mark.parametrize("size", ["n", "m", "batch"])
def test_a_problem_without_inputs_or_outputs_is_refused_in_one_line(size):
    sizes = {"n": 3, "m": 2, "batch": 1, size: 0}
    with pytest.raises(ValueError, match=rf"^problem 'empty' has {size}=0; a Jacobian needs at least one input"):
        cases.Problem("empty", "f", "vector", builder=lambda s: None, **sizes)

"""Sparse Jacobians by colouring: a handful of batched products instead of n.

NOTE: [Colouring]
    Two columns of J that share no row are *structurally orthogonal*: one JVP with the sum of
    their unit tangents gives both columns, each in its own rows. A colouring of the columns
    in which no two columns of one colour share a row therefore yields J from one JVP per
    colour: the compressed matrix ``B = J S`` (S the N x c seed matrix, ``S[j, colour(j)] =
    1``) holds ``J[i, j]`` at ``B[i, colour(j)]`` for every nonzero (i, j) of the pattern.
    Reverse mode colours rows the same way (no two rows of one colour share a column) and
    uses one VJP per colour. A tridiagonal J needs 3 colours whatever n is; a band of
    half-width k needs 2k + 1; a diagonal one needs 1. The c products run as one ``vmap``-
    batched JVP (or VJP), then the nonzeros are scattered into the dense result (the layout
    of NOTE: [Jacobian layout]).

    The colouring is greedy in natural order (optimal for banded patterns). The pattern
    comes from the problem (``Context.sparsity``) or, where it has none, is detected once
    per function: the union of the nonzeros of dense Jacobians at the input and at two
    nearby random points, so that an entry that happens to vanish at one point is not
    mistaken for a structural zero. A detected pattern is a measurement, not a proof: an
    entry that is zero at all three points is missed, and the gate catches that. Where the
    colouring compresses nothing (as many colours as columns), the pair is ``unsupported``:
    it would be ``jacfwd`` (or ``jacrev``) with extra steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.strategies.memo import memo, signature
from bench.strategies.registry import VECTOR_KINDS, Unsupported, context, note, probing, register

#: largest m x N Jacobian whose pattern is detected densely (a problem's own pattern has no limit)
DETECT_LIMIT = 2**26
#: colour from Python lists up to this much work (the sum of squared row lengths), else from
#: the dense column-conflict matrix while that costs at most _DENSE_WORK multiply-adds
_LIST_WORK = 4_000_000
_DENSE_WORK = 2_000_000_000


def greedy_coloring(pattern: torch.Tensor) -> torch.Tensor:
    """Colours of the columns of a bool ``(m, N)`` pattern, greedy in natural order: no two
    columns of one colour share a row. Returns a long tensor of N colours ``0..c-1``."""
    pattern = pattern.to("cpu", torch.bool)
    m, n = pattern.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    rows, cols = pattern.nonzero(as_tuple=True)
    row_len = torch.bincount(rows, minlength=m)
    if m and int(row_len.max()) == n:
        return torch.arange(n)  # a full row: every pair of columns conflicts
    if int((row_len * row_len).sum()) <= _LIST_WORK or m * n * n > _DENSE_WORK:
        return _greedy_lists(rows, cols, m, n)
    return _greedy_dense(pattern)


def _greedy_lists(rows, cols, m: int, n: int) -> torch.Tensor:
    # rows are sorted (nonzero is row-major); sort by column for the column -> rows lists.
    row_cols: list[list[int]] = [[] for _ in range(m)]
    col_rows: list[list[int]] = [[] for _ in range(n)]
    for r, c in zip(rows.tolist(), cols.tolist()):
        row_cols[r].append(c)
        col_rows[c].append(r)
    colour = [-1] * n
    for j in range(n):
        forbidden = {colour[k] for r in col_rows[j] for k in row_cols[r]}
        c = 0
        while c in forbidden:
            c += 1
        colour[j] = c
    return torch.tensor(colour, dtype=torch.long)


def _greedy_dense(pattern: torch.Tensor) -> torch.Tensor:
    p = pattern.to(torch.float32)
    conflict = ((p.T @ p) > 0).numpy()  # (N, N): columns sharing a row; numpy for cheap small ops
    n = pattern.shape[1]
    colour = np.full(n, -1, dtype=np.int64)
    for j in range(n):
        used = colour[conflict[j]]
        taken = np.zeros(n + 1, dtype=bool)
        taken[used[used >= 0]] = True
        colour[j] = int(np.argmin(taken))  # the first colour not taken
    return torch.from_numpy(colour)


def count_colors(colour: torch.Tensor) -> int:
    return int(colour.max()) + 1 if colour.numel() else 0


# --- the pattern -----------------------------------------------------------------------------


def detect_pattern(g, x: torch.Tensor, m: int, points: int = 2, seed: int = 0) -> torch.Tensor:
    """The nonzeros of the dense Jacobian of ``g`` (flat ``x`` -> flat output) at ``x`` and at
    ``points`` random points near it, as a bool ``(m, N)`` CPU tensor (NOTE: [Colouring])."""
    n = x.numel()
    if m * n > DETECT_LIMIT:
        raise Unsupported(f"detecting the sparsity pattern needs a dense {m} x {n} Jacobian; "
                          "give the problem's pattern (Built.sparsity, or advise(..., sparsity=))")
    modes = [torch.func.jacrev, torch.func.jacfwd] if m <= n else [torch.func.jacfwd, torch.func.jacrev]
    gen = torch.Generator().manual_seed(seed)
    pattern = torch.zeros(m, n, dtype=torch.bool)
    finite = 0
    for k in range(points + 1):
        if k == 0:
            at = x
        else:
            noise = torch.randn(n, generator=gen, dtype=torch.float64).to(x.device, x.dtype)
            at = x + 0.01 * (1 + x.abs()) * noise
        try:
            j = modes[0](lambda v: g(v).reshape(-1))(at.detach())
        except (NotImplementedError, RuntimeError):
            # the cheaper mode is missing for an op (no forward AD for an RNN kernel, say):
            # the other mode, and keep to it
            modes.reverse()
            j = modes[0](lambda v: g(v).reshape(-1))(at.detach())
        if torch.isfinite(j).all():
            pattern |= (j != 0).cpu()
            finite += 1
    if not finite:
        raise Unsupported("cannot detect the sparsity pattern: the Jacobian is not finite at the input")
    return pattern


@dataclass
class _Plan:
    colors: int
    source: str
    nnz: int
    seeds: torch.Tensor  # (c, N) tangents or (c, m) cotangents, on the device
    rows: torch.Tensor  # nonzero rows, on the device
    cols: torch.Tensor  # nonzero columns
    slot: torch.Tensor  # the colour each nonzero is read from
    m: int
    n: int


def _flat(fn, inputs):
    """All inputs as one flat vector, and ``fn`` as a function of it."""
    flat = torch.cat([x.detach().reshape(-1) for x in inputs])
    sizes = [x.numel() for x in inputs]

    def g(v):
        return fn(*(p.reshape(x.shape) for p, x in zip(torch.split(v, sizes), inputs)))

    return flat, sizes, g


_LAST: dict = {}  # the latest plan, by (axis, signature): what the work probe's wrapped fn reuses


def _plan(fn, inputs, flat, g, axis: str) -> _Plan:
    key = (axis, signature(inputs))
    cache = memo(fn, "coloring")
    plan = cache.get(key)
    if plan is None and probing():
        plan = _LAST.get(key)  # the probe wraps fn in a new function; the pattern is the same
    if plan is not None:
        return plan
    with torch.no_grad():
        m = g(flat).numel()
    n = flat.numel()
    given = context().sparsity
    if given is not None:
        if tuple(given.shape) != (m, n):
            raise Unsupported(f"the problem's sparsity pattern is {tuple(given.shape)}, the Jacobian {(m, n)}")
        pattern, source = given.to("cpu", torch.bool), "problem"
    else:
        # The input point first: more points only add nonzeros, so if its pattern already
        # compresses nothing, the dearer union is not needed to say so.
        pattern, source = detect_pattern(g, flat, m, points=0), "detected"
        along = pattern if axis == "columns" else pattern.T
        if count_colors(greedy_coloring(along)) < along.shape[1]:
            pattern |= detect_pattern(g, flat, m)
    along = pattern if axis == "columns" else pattern.T
    colour = greedy_coloring(along)
    c = count_colors(colour)
    note(colors=c, pattern=source, nnz=int(pattern.sum()), **{axis: along.shape[1]})
    if c >= along.shape[1] and along.shape[1] > 1:
        raise Unsupported(f"no compression: the {source} pattern needs {c} colours for {along.shape[1]} {axis}")
    rows, cols = pattern.nonzero(as_tuple=True)
    slot = colour[cols] if axis == "columns" else colour[rows]
    seeds = torch.zeros(c, along.shape[1], dtype=flat.dtype)
    seeds[colour, torch.arange(along.shape[1])] = 1
    dev = flat.device
    plan = _Plan(c, source, rows.numel(), seeds.to(dev), rows.to(dev), cols.to(dev), slot.to(dev), m, n)
    _LAST.clear()
    cache[key] = _LAST[key] = plan
    return plan


def _blocks(jac: torch.Tensor, out_shape, inputs, sizes):
    return tuple(p.reshape(out_shape + x.shape) for p, x in zip(torch.split(jac, sizes, dim=1), inputs))


@register("coloring-forward", "forward", kinds=VECTOR_KINDS, needs=("torch.func",), prepares=True)
def coloring_forward(fn, inputs, create_graph=False):
    """Column colouring: one ``vmap``-batched JVP per colour, then the nonzeros are
    scattered into J (NOTE: [Colouring]). Notes the number of colours.

    Cost: c JVPs in one batched forward pass (c = 3 for a tridiagonal J, 2k+1 for a band of
    half-width k) instead of N, plus detecting the pattern once where the problem gives
    none; memory: c times the forward intermediates, the nonzero indices and the dense J.
    """
    flat, sizes, g = _flat(fn, inputs)
    plan = _plan(fn, inputs, flat, g, "columns")

    def compressed(t):
        return torch.func.jvp(g, (flat,), (t,))[1]

    b = torch.func.vmap(compressed)(plan.seeds)  # (c, *out)
    out_shape = b.shape[1:]
    b = b.reshape(plan.colors, -1)
    jac = torch.zeros(plan.m, plan.n, dtype=b.dtype, device=b.device)
    jac[plan.rows, plan.cols] = b[plan.slot, plan.rows]
    return _blocks(jac, out_shape, inputs, sizes)


@register("coloring-reverse", "reverse", kinds=VECTOR_KINDS, needs=("torch.func",), prepares=True)
def coloring_reverse(fn, inputs, create_graph=False):
    """Row colouring: one ``vmap``-batched VJP per colour, then the nonzeros are scattered
    into J (NOTE: [Colouring]). Notes the number of colours.

    Cost: one forward and c VJPs in one batched backward pass (c = 3 for a tridiagonal J)
    instead of m, plus detecting the pattern once where the problem gives none; memory: c
    times the backward intermediates, the nonzero indices and the dense J.
    """
    flat, sizes, g = _flat(fn, inputs)
    plan = _plan(fn, inputs, flat, g, "rows")
    out, pullback = torch.func.vjp(g, flat)
    cot = plan.seeds.reshape((plan.colors,) + out.shape)
    (b,) = torch.func.vmap(pullback)(cot)  # (c, N)
    jac = torch.zeros(plan.m, plan.n, dtype=b.dtype, device=b.device)
    jac[plan.rows, plan.cols] = b[plan.slot, plan.cols]
    return _blocks(jac, out.shape, inputs, sizes)

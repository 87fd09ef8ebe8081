"""The correctness gate: a float64 reference, a dtype-aware tolerance, and a verdict.

NOTE: [Tolerances]
    The error of a Jacobian J against the reference R is ``max|J - R| / max|R|``: one number,
    relative to the Jacobian's own scale, that a single wrong entry is enough to raise.
    Exact strategies (reverse and forward mode) round like any float computation; their
    tolerance is ``EXACT_FACTOR * eps`` for the dtype's machine epsilon, which leaves room
    for long accumulations and for the reference being built from float64 constants (see
    ``cases.problem``); measured errors sit near ``10 * eps``.

    Finite differences carry the error of their step h (NOTE: [Finite-difference step] in
    ``strategies``): truncation of order ``eps^k * |J|`` and rounding of order
    ``eps * |f| / h = eps^k * |f|``, with k = 1/2 for forward and 2/3 for central
    differences. Relative to the Jacobian's scale that is ``eps^k * (1 + |f| / |J|)``, so
    their tolerance is ``FD_FACTOR * eps^k * (1 + max|f| / max|J|)``, both maxima taken
    from the reference. The rounding of f is not the same in a batched and a looped
    evaluation (a looped difference reuses the same kernel and mostly the same partial sums,
    so its two sides round alike), which is why batched finite differences measure a few
    times less accurate and why the factor is not smaller.

    A wrong result misses by orders of magnitude (a graph break gives exactly 1.0).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from cases import Problem

EXACT_FACTOR = 1000.0
FD_FACTOR = 20.0
REFERENCE_DTYPE = torch.float64


@dataclass(frozen=True)
class Reference:
    """The reference Jacobian as a float64 CPU ``(m, N)`` matrix, and the scale of f."""

    jacobian: torch.Tensor
    out_scale: float

    @property
    def scale(self) -> float:
        return self.jacobian.abs().max().item()


def tolerance(dtype: torch.dtype, fd_order: int, ref: Reference) -> float:
    """The gate's relative tolerance for a result in ``dtype`` (see NOTE: [Tolerances])."""
    eps = torch.finfo(dtype).eps
    if fd_order == 0:
        return EXACT_FACTOR * eps
    k = 0.5 if fd_order == 1 else 2 / 3
    return FD_FACTOR * eps ** k * (1 + ref.out_scale / max(ref.scale, 1e-300))


def flatten(blocks, m: int) -> torch.Tensor:
    """Blocks (NOTE: [Jacobian layout]) -> one float64 CPU ``(m, N)`` matrix."""
    return torch.cat([b.detach().to("cpu", REFERENCE_DTYPE).reshape(m, -1) for b in blocks], dim=1)


@functools.lru_cache(maxsize=2)  # the sweep runs a problem's pairs together; a reference can be 100s of MB
def reference(problem: Problem, seed: int = 0) -> Reference:
    """The reference Jacobian of ``problem`` at its built point.

    The analytic Jacobian where the problem has one; otherwise float64 autograd on the CPU,
    by plain loops that do not go through ``vmap`` (so a batching-rule bug in a strategy
    cannot hide in its own reference): reverse mode row by row when m <= N, forward-mode
    dual numbers column by column when N < m, falling back to reverse mode where an op has
    no forward derivative.
    """
    built = problem.build("cpu", REFERENCE_DTYPE, seed)
    if problem.kind == "penalty":
        from .training import reference_blocks

        blocks = reference_blocks(built)
        return Reference(flatten(blocks, 1), abs(blocks[0].item()))
    with torch.no_grad():
        out = built.fn(*built.inputs)
    m = out.numel()
    if built.jacobian is not None:
        blocks = built.jacobian()
    elif problem.kind == "batched":
        blocks = _per_sample(built, independent="interacting" not in problem.tags)
    else:
        blocks = None
        if sum(x.numel() for x in built.inputs) < m:
            try:
                blocks = _forward_loop(built.fn, built.inputs)
            except (NotImplementedError, RuntimeError):
                blocks = None
        if blocks is None:
            blocks = _reverse_loop(built.fn, built.inputs)
    return Reference(flatten(blocks, m), out.abs().max().item())


def _reverse_loop(fn, inputs):
    xs = tuple(x.detach().requires_grad_(True) for x in inputs)
    out = fn(*xs).reshape(-1)
    rows = []
    for i in range(out.numel()):
        grads = torch.autograd.grad(out[i], xs, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(x) if g is None else g).reshape(-1) for g, x in zip(grads, xs)]))
    return (torch.stack(rows),)


def _per_sample(built, independent: bool):
    """Per-sample Jacobians, stacked (B, m, n): one small Jacobian per sample where samples
    are independent; the diagonal blocks of the full (B m, B n) Jacobian where they interact."""
    (x,) = built.inputs
    b = x.shape[0]
    if independent:
        rows = [_reverse_loop(lambda xi: built.fn(xi[None])[0], (x[i],))[0] for i in range(b)]
        return (torch.stack(rows),)
    (full,) = _reverse_loop(built.fn, (x,))  # (B*m, B*n)
    full = full.reshape(b, -1, b, x[0].numel())
    return (torch.stack([full[i, :, i] for i in range(b)]),)


def _forward_loop(fn, inputs):
    import torch.autograd.forward_ad as fwAD

    cols = []
    with fwAD.dual_level():
        for k, x in enumerate(inputs):
            for j in range(x.numel()):
                t = torch.zeros_like(x)
                t.view(-1)[j] = 1
                duals = tuple(fwAD.make_dual(xi, t) if i == k else xi for i, xi in enumerate(inputs))
                out = fn(*duals)
                tangent = fwAD.unpack_dual(out).tangent
                cols.append(torch.zeros(out.numel(), dtype=out.dtype) if tangent is None else tangent.reshape(-1))
    return (torch.stack(cols, dim=1),)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    error: float | None
    tolerance: float
    reason: str = ""


def check(blocks, reference: Reference, dtype: torch.dtype, fd_order: int) -> Verdict:
    """Compare a strategy's blocks with the reference."""
    tol = tolerance(dtype, fd_order, reference)
    ref = reference.jacobian
    if not isinstance(blocks, (tuple, list)) or not all(isinstance(b, torch.Tensor) for b in blocks):
        return Verdict(False, None, tol, f"returned {type(blocks).__name__}, not a tuple of tensors")
    m = ref.shape[0]
    sizes = [b.numel() for b in blocks]
    if sum(sizes) != ref.numel():
        return Verdict(False, None, tol, f"returned {sum(sizes)} entries in {len(blocks)} blocks; "
                                         f"the reference has {m} x {ref.shape[1]}")
    got = flatten(blocks, m)
    if not torch.isfinite(got).all():
        bad = int((~torch.isfinite(got)).sum())
        return Verdict(False, None, tol, f"{bad} of {got.numel()} entries are NaN or infinite")
    scale = reference.scale
    err = (got - ref).abs().max().item() / (scale if scale > 0 else 1.0)
    if err <= tol:
        return Verdict(True, err, tol)
    hint = "; the Jacobian is all zeros" if scale > 0 and not got.any() else ""
    return Verdict(False, err, tol, f"max relative error {err:.2e} exceeds the tolerance {tol:.1e}{hint}")


GRAPH_BREAK = ("graph break: the output does not require grad, so autograd sees no path from the "
               "inputs (torch.tensor([...]), .item(), .numpy() or .detach() inside the function)")


def graph_break(fn, inputs) -> str | None:
    """A one-line diagnosis if ``fn`` cuts the autograd graph, else None."""
    xs = tuple(x.detach().requires_grad_(True) for x in inputs)
    try:
        with torch.enable_grad():
            out = fn(*xs)
    except Exception:  # the strategy's own error is reported instead
        return None
    if isinstance(out, torch.Tensor) and not out.requires_grad:
        return GRAPH_BREAK
    return None

"""The correctness gate: a checked float64 reference, a dtype-aware tolerance, and a verdict.

NOTE: [Tolerances]
    The error of a Jacobian J against the reference R is ``max|J - R| / max|R|``: one number,
    relative to the Jacobian's own scale, that a single wrong entry is enough to raise. (A
    penalty step's result has parts of unrelated scales, the penalty and each parameter's
    gradient: each part is measured against its own scale, and the error is the worst part's.)

    Exact strategies (reverse and forward mode) round like any float computation; their
    tolerance is ``EXACT_FACTOR * eps`` for the dtype's machine epsilon, which leaves room
    for long accumulations and for the reference being built from float64 constants (see
    ``cases.problem``); measured errors sit near ``10 * eps`` in float32 and within ``4 * eps``
    in float16 and bfloat16.

    Finite differences carry the error of their step h (NOTE: [Finite-difference step] in
    ``bench.strategies.differences``): truncation of order ``eps^k * |J|`` and rounding of order
    ``eps * |f| / h = eps^k * |f|``, with k = 1/2 for forward and 2/3 for central
    differences. Relative to the Jacobian's scale that is ``eps^k * (1 + |f| / |J|)``, so
    their tolerance is ``FD_FACTOR * eps^k * (1 + max|f| / max|J|)``, both maxima taken
    from the reference. The rounding of f is not the same in a batched and a looped
    evaluation (a looped difference reuses the same kernel and mostly the same partial sums,
    so its two sides round alike), which is why batched finite differences measure a few
    times less accurate and why the factor is not smaller.

    Both stop at a ceiling that a user would accept, whatever the formula says:
    :data:`CEILING` per dtype for exact strategies (1000 eps is 0.98 in float16 and 7.8 in
    bfloat16, where even an all-zero Jacobian would pass), and :data:`FD_CEILING` for
    finite differences. So an all-zero, transposed or NaN Jacobian, or one row's sign
    flipped, fails in every dtype, and a Jacobian scaled by 1% fails in float64, float32
    and float16 (bfloat16 keeps 8 bits of mantissa: its own rounding reaches 3%).

    A whole-matrix error hides a wrong row or column that is small beside the largest entry
    (one row's sign flipped, where that row is 1/48 of the largest, is 4% of the whole). So an
    exact result must also hold each row (what reverse mode computes alone) and each column
    (forward mode's) to the tolerance against that line's own largest entry, or within
    :data:`LINE_EPS` machine epsilons of the whole's largest, whichever allows more: a line at
    the rounding level of the whole rounds at the whole's scale, not its own. The floor is
    measured, not guessed: ``python -m tests.floors`` runs every exact strategy on every
    registered problem of the standard profile in every dtype and finds the largest floor
    any correct result needs (0.86 eps, in bfloat16; 0.1 to 0.55 eps in the others). So a
    row or column whose largest entry stands above 2 eps of the whole's is caught flipped,
    above 4 eps zeroed, and one swapped or scaled beyond the tolerance likewise.

    The reference itself is checked first (NOTE: [Reference audit] in ``audit``): where it
    disagrees with finite differences of f, nothing on that problem is gated.

NOTE: [Finite-difference verdicts]
    The tolerance of finite differences is a model of their error, and their true error moves
    with the point: on one network it sat at 1.1 times the tolerance in one run and under it
    in the next, so its verdict flipped. So finite differences are also judged by their own
    estimate: where an answer misses the tolerance, the gate runs the strategy again at half
    its steps (``differences.steps_scaled``), and the largest change between the two answers
    measures their truncation and rounding there. An answer is right where its error is within the
    tolerance plus :data:`ESTIMATE_FACTOR` times that change (which adds at most
    :data:`FD_CEILING`: an estimate can widen the tolerance, never excuse a useless answer),
    and every row and column, less as much, is within the tolerance of its own scale, floored
    at :data:`FD_LINE_FLOOR` of the whole's. The largest change, not each entry's: rounding
    makes each entry's change random, small by chance somewhere among thousands, while it is
    the same noise in every line; so a line is checked where it stands above that noise. A
    result over the tolerance and within its estimate says so in its row ("at the edge of its
    tolerance"). A bug is not excused by its own estimate: a wrong sign, a wrong divisor or a
    dropped row gives the same wrong answer at h and h/2. A strategy that ignores
    ``steps_scaled`` changes nothing, and is held to the tolerance alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.gate import audit

EXACT_FACTOR = 1000.0
FD_FACTOR = 20.0
#: The largest relative error an exact strategy may have in each dtype (NOTE: [Tolerances]).
CEILING = {torch.float64: 1e-10, torch.float32: 1e-3, torch.float16: 8e-3, torch.bfloat16: 6e-2}
#: Rows and columns are each judged against their own largest entry, but a line may always be
#: off by this many machine epsilons of the whole Jacobian's largest: its rounding floor
#: (NOTE: [Tolerances]; correct strategies need at most 0.86, ``python -m tests.floors``).
LINE_EPS = 4.0
#: The largest relative error finite differences may have in any dtype.
FD_CEILING = 5e-2
REFERENCE_DTYPE = torch.float64


@dataclass(frozen=True)
class Reference:
    """The reference result, float64 on the CPU, in the layout a strategy returns.

    Attributes:
        blocks: one block per input (NOTE: [Jacobian layout]), or for a penalty step the
            penalty and the loss's gradient per parameter.
        out_scale: the largest ``|f|``.
        m: the number of output elements, the rows of :attr:`jacobian`.
        parts: names of blocks measured each against its own scale (a penalty step's), or
            empty: the blocks are one Jacobian, measured against its largest entry.
        extra: for a penalty step, the penalty's own gradient per parameter.
        disputed: why nothing can be gated against it (NOTE: [Reference audit]), or None.
        note: what a user should know about f although the reference holds.
    """

    blocks: tuple[torch.Tensor, ...]
    out_scale: float
    m: int = 1
    parts: tuple[str, ...] = ()
    extra: tuple[torch.Tensor, ...] = ()
    disputed: str | None = None
    note: str = ""

    @property
    def jacobian(self) -> torch.Tensor:
        """The blocks as one ``(m, N)`` matrix."""
        return flatten(self.blocks, self.m)

    @property
    def scale(self) -> float:
        return max((b.abs().max().item() for b in self.blocks if b.numel()), default=0.0)


def tolerance(dtype: torch.dtype, fd_order: int, ref: Reference) -> float:
    """The gate's relative tolerance for a result in ``dtype`` (see NOTE: [Tolerances])."""
    eps = torch.finfo(dtype).eps
    if fd_order == 0:
        return min(EXACT_FACTOR * eps, CEILING.get(dtype, 1e-3))
    k = 0.5 if fd_order == 1 else 2 / 3
    return min(FD_FACTOR * eps ** k * (1 + ref.out_scale / max(ref.scale, 1e-300)), FD_CEILING)


def flatten(blocks, m: int) -> torch.Tensor:
    """Blocks (NOTE: [Jacobian layout]) -> one float64 CPU ``(m, N)`` matrix."""
    return torch.cat([b.detach().to("cpu", REFERENCE_DTYPE).reshape(m, -1) for b in blocks], dim=1)


def reverse_loop(fn, inputs):
    """The Jacobian as one block ``(J,)``, J of shape ``(m, N)``, by reverse-mode autograd row by row."""
    xs = tuple(x.detach().requires_grad_(True) for x in inputs)
    with torch.enable_grad():
        out = fn(*xs).reshape(-1)
    if not out.requires_grad:  # the whole graph is cut: to autograd, the Jacobian is zero
        return (torch.zeros(out.numel(), sum(x.numel() for x in xs), dtype=out.dtype),)
    rows = []
    for i in range(out.numel()):
        grads = torch.autograd.grad(out[i], xs, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(x) if g is None else g).reshape(-1) for g, x in zip(grads, xs)]))
    return (torch.stack(rows),)


def forward_loop(fn, inputs):
    """The Jacobian as one block ``(J,)``, J of shape ``(m, N)``, by forward-mode dual numbers column by column."""
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
    """The gate's verdict: ``reason`` says why a result is not ``ok``; ``note`` what a user
    should know of one that is (finite differences at the edge of their tolerance)."""
    ok: bool
    error: float | None
    tolerance: float
    reason: str = ""
    note: str = ""


def check(blocks, reference: Reference, dtype: torch.dtype, fd_order: int, half=None) -> Verdict:
    """Compare a strategy's blocks with the reference: their number and shapes exactly
    (NOTE: [Jacobian layout]), then their values (NOTE: [Tolerances]). ``half`` is a finite
    differences strategy's answer at half its steps (NOTE: [Finite-difference verdicts])."""
    tol = tolerance(dtype, fd_order, reference)
    if not isinstance(blocks, (tuple, list)) or not all(isinstance(b, torch.Tensor) for b in blocks):
        return Verdict(False, None, tol, f"returned {type(blocks).__name__}, not a tuple of tensors")
    want = reference.blocks
    if len(blocks) != len(want):
        return Verdict(False, None, tol, f"returned {len(blocks)} block{'s' * (len(blocks) != 1)} where "
                                         f"{len(want)} {'are' if len(want) != 1 else 'is'} expected "
                                         f"({'one per part' if reference.parts else 'one per input'})")
    for k, (b, r) in enumerate(zip(blocks, want)):
        if b.shape != r.shape:
            return Verdict(False, None, tol, f"block {k} has shape {tuple(b.shape)} where {tuple(r.shape)} is "
                                             "expected (the output's shape, then the input's)")
    if not all(torch.isfinite(b).all() for b in blocks):
        bad = sum(int((~torch.isfinite(b)).sum()) for b in blocks)
        return Verdict(False, None, tol, f"{bad} of {sum(b.numel() for b in blocks)} entries are NaN or infinite")
    if reference.parts:  # each part against its own scale
        errors = [_relative(flatten((b,), 1), flatten((r,), 1)) for b, r in zip(blocks, want)]
        worst = max(range(len(errors)), key=errors.__getitem__)
        err, where = errors[worst], f" in {reference.parts[worst]}"
    else:
        got, want = flatten(blocks, reference.m), reference.jacobian
        err, where = _relative(got, want), ""
        floor = LINE_EPS * torch.finfo(dtype).eps / tol  # the rounding floor, as a fraction of the whole
        if fd_order:
            spread = torch.zeros_like(got)
            if half is not None and [h.shape for h in half] == [r.shape for r in reference.blocks]:
                spread = (got - flatten(half, reference.m)).abs().nan_to_num(0.0)
            return _differences(got, want, spread, err, tol, floor)
        if err <= tol:
            line, index, worst = _worst_line(got, want, (got - want).abs(), floor)
            if worst > tol:
                return Verdict(False, err, tol, f"{line} {index} of {want.shape[line == 'column']} is off by "
                                                f"{worst:.2e} of its own largest entry, over the tolerance {tol:.1e}, "
                                                f"though the whole Jacobian's error is {err:.2e}")
    if err <= tol:
        return Verdict(True, err, tol)
    hint = "; the result is all zeros" if reference.scale > 0 and not any(b.any() for b in blocks) else ""
    return Verdict(False, err, tol, f"max relative error {err:.2e}{where} exceeds the tolerance {tol:.1e}{hint}")


def _worst_line(got: torch.Tensor, ref: torch.Tensor, err: torch.Tensor, floor: float) -> tuple[str, int, float]:
    """The row or column of ``got`` (an ``(m, N)`` matrix) whose ``err`` (entrywise, beyond
    what is allowed) is largest relative to its own largest entry of ``ref``, floored at
    ``floor`` times the whole's: ``("row" or "column", index, error)`` (NOTE: [Tolerances])."""
    top = ref.abs()
    least = floor * top.max().item()
    if least == 0 or not ref.numel():
        return "row", 0, 0.0
    worst = ("row", 0, 0.0)
    for dim, line in ((1, "row"), (0, "column")):
        rel = err.amax(dim=dim) / top.amax(dim=dim).clamp(min=least)
        k = int(rel.argmax())
        if rel[k].item() > worst[2]:
            worst = (line, k, rel[k].item())
    return worst


#: Finite differences may be off by this many times their own error estimate (the change
#: from step h to h/2) beyond their tolerance (NOTE: [Finite-difference verdicts]). Truncation
#: alone makes a correct answer's error twice its estimate for forward differences and 4/3 of
#: it for central ones; the rest is room for rounding, which the half step doubles. The flip
#: rates this gives are ``python -m tests.flips``'s.
ESTIMATE_FACTOR = 3.0
#: The lines of finite differences are held to their tolerance down to this fraction of the
#: whole's largest entry; below it, their rounding model's own floor (``1 / FD_FACTOR``).
FD_LINE_FLOOR = 1 / FD_FACTOR


def _differences(got, want, spread, err: float, tol: float, floor: float) -> Verdict:
    """The verdict on finite differences ``got``, whose answer at half the steps differs from
    it by ``spread`` (entrywise; its largest is the estimate): NOTE: [Finite-difference verdicts]."""
    scale = want.abs().max().item() or 1.0
    estimate = spread.max().item() / scale
    if err > tol + min(ESTIMATE_FACTOR * estimate, FD_CEILING):
        allowed = (f"{ESTIMATE_FACTOR:g} times its own estimate {estimate:.1e}"
                   if ESTIMATE_FACTOR * estimate <= FD_CEILING
                   else f"the ceiling {FD_CEILING:.0e}, the most its own estimate {estimate:.1e} may add")
        return Verdict(False, err, tol, f"max relative error {err:.2e} exceeds the tolerance {tol:.1e} plus "
                                        f"{allowed} (steps h and h/2 differ by the estimate)")
    beyond = ((got - want).abs() - ESTIMATE_FACTOR * estimate * scale).clamp(min=0)
    line, index, worst = _worst_line(got, want, beyond, max(floor, FD_LINE_FLOOR))
    if worst > tol:
        return Verdict(False, err, tol, f"{line} {index} of {want.shape[line == 'column']} is off by {worst:.2e} "
                                        f"of its own largest entry beyond {ESTIMATE_FACTOR:g} times its own "
                                        f"estimate, over the tolerance {tol:.1e}")
    note = (f"at the edge of its tolerance: its error {err:.1e} is over the tolerance {tol:.1e} by less than "
            f"{ESTIMATE_FACTOR:g} times its own estimate {estimate:.1e} (steps h and h/2 differ by it)"
            if err > tol else "")
    return Verdict(True, err, tol, note=note)


def _relative(got: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.abs().max().item() if ref.numel() else 0.0
    return (got - ref).abs().max().item() / (scale if scale > 0 else 1.0) if ref.numel() else 0.0


def graph_break(fn, inputs) -> str | None:
    """A one-line diagnosis if ``fn`` cuts the autograd graph, naming the calls that cut it,
    else None."""
    xs = tuple(x.detach().requires_grad_(True) for x in inputs)
    try:
        with torch.enable_grad():
            out = fn(*xs)
    except Exception:  # the strategy's own error is reported instead
        return None
    if isinstance(out, torch.Tensor) and not out.requires_grad:
        cuts = audit.cuts_text(audit.watch(fn, inputs)[0])
        return ("graph break: the output does not require grad, so autograd sees no path from the inputs ("
                + (cuts or "torch.tensor([...]), .item(), .numpy() or .detach() inside the function") + ")")
    return None

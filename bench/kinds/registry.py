"""The kind registry: what a problem kind owns, how kinds are registered, and the reference.

A problem's ``kind`` (``cases.Problem.kind``) is its calling convention. The kind object
decides everything that depends on it: which strategies can run it, how a strategy is called
on a built problem, the float64 reference and its audit, the gate, the size of the Jacobian,
and where the work probe sits. The measuring of a pair, the advisor and the CLI dispatch
through :func:`get`; none of them names a kind.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from cases import Problem

from bench import strategies
from bench.gate import accuracy, audit, state
from bench.gate.accuracy import REFERENCE_DTYPE, Reference, Verdict
from bench.strategies.differences import steps_scaled

KINDS: dict[str, "Kind"] = {}


class Kind:
    """How problems of one kind are run, checked and sized. The defaults are those of a
    plain Jacobian of ``fn(*inputs)``, one block per input (NOTE: [Jacobian layout]).

    Attributes:
        name: the kind's id, as problems name it.
        advisable: whether ``bench.advise`` takes a user's function of this kind.
    """

    name: str = ""
    advisable: bool = True

    def __init__(self, name: str | None = None):
        if name is not None:
            self.name = name

    def refuses(self, strategy) -> str | None:
        """Why ``strategy`` cannot compute what a problem of this kind needs, or None."""
        if self.name in strategy.kinds:
            return None
        return f"{strategy.name} does not handle {self.name} problems (it handles {', '.join(sorted(strategy.kinds))})"

    def run(self, strategy, fn, inputs):
        """Call ``strategy`` on a built problem's function and inputs; the result is gated."""
        return strategy(fn, inputs)

    def evaluate(self, fn, inputs):
        """One plain evaluation of the problem's function: the unit of cost (NOTE: [Cost in
        units of f] in ``bench.analysis.cost``)."""
        return fn(*inputs)

    def probed(self, run, fn, probe):
        """Call ``run(fn)`` with the work probe on the function whose evaluations count."""
        return run(probe(fn))

    def batch(self, inputs) -> int:
        """Samples per call: n and m count one sample's elements."""
        return 1

    def reference(self, problem: Problem, seed: int) -> Reference:
        """The float64 reference at the problem's built point, audited (NOTE: [Reference audit])."""
        built = problem.build("cpu", REFERENCE_DTYPE, seed)
        with torch.no_grad():
            out = built.fn(*audit.own(built.inputs))
        refused = audit.refused(built.inputs, out)
        if refused:
            return Reference((), 0.0, disputed=refused)
        if built.jacobian is not None:
            source, blocks = "the analytic Jacobian", built.jacobian()
        else:
            source, blocks = "float64 autograd", self.autograd_reference(built.fn, built.inputs, problem)
        blocks = self.layout(accuracy.flatten(blocks, out.numel()), out, built.inputs)
        found = self.audit(built.fn, built.inputs, blocks, source=source, seed=seed,
                           precision=getattr(built.fn, "precision", None))
        return Reference(blocks, out.abs().max().item(), out.numel(), disputed=found.disputed, note=found.note)

    def autograd_reference(self, fn, inputs, problem: Problem):
        """The Jacobian by plain float64 autograd loops that do not go through ``vmap``, so a
        batching-rule bug in a strategy cannot hide in its own reference: forward-mode dual
        numbers column by column when N < m, else (or where an op has no forward derivative)
        reverse mode row by row."""
        with torch.no_grad():
            m = fn(*inputs).numel()
        if sum(x.numel() for x in inputs) < m:
            try:
                return accuracy.forward_loop(fn, inputs)
            except (NotImplementedError, RuntimeError):
                pass
        return accuracy.reverse_loop(fn, inputs)

    def layout(self, jacobian: torch.Tensor, out: torch.Tensor, inputs) -> tuple[torch.Tensor, ...]:
        """One ``(m, N)`` matrix, split into the blocks a strategy returns."""
        columns = torch.split(jacobian, [x.numel() for x in inputs], dim=1)
        return tuple(c.reshape(out.shape + x.shape) for c, x in zip(columns, inputs))

    def audit(self, fn, inputs, blocks, *, source: str, seed: int = 0, precision=None,
              floor: float | None = None) -> audit.Audit:
        """Audit a Jacobian in the layout a strategy returns (NOTE: [Reference audit])."""
        with torch.no_grad():
            m = fn(*inputs).numel()
        return audit.audit(fn, inputs, accuracy.flatten(blocks, m), seed=seed, source=source, precision=precision,
                           floor=floor)

    def check(self, strategy, built, result, reference: Reference, dtype: torch.dtype, notes: dict) -> Verdict:
        """The gate: ``result`` against the reference (NOTE: [Tolerances]). Finite differences
        that miss the tolerance answer again at half their steps, their own error estimate,
        which can only widen what they are allowed (NOTE: [Finite-difference verdicts] in
        ``bench.gate.accuracy``)."""
        verdict = accuracy.check(result, reference, dtype, strategy.fd_order)
        if strategy.fd_order and not verdict.ok and verdict.error is not None:
            with steps_scaled(0.5), strategies.using(built.module, built.sparsity):
                half = self.run(strategy, built.fn, built.inputs)
            verdict = accuracy.check(result, reference, dtype, strategy.fd_order, half)
        return verdict

    def later(self, strategy, built, result, reference: Reference, dtype: torch.dtype, notes: dict) -> str | None:
        """Why a later call's result fails where the first call's passed, or None: a
        strategy's answer must not change between calls."""
        verdict = self.check(strategy, built, result, reference, dtype, notes)
        return None if verdict.ok else f"the first call passed the gate, a later one did not ({verdict.reason})"

    def jacobian_bytes(self, problem: Problem, result) -> int:
        """Bytes of the Jacobian itself."""
        return sum(b.numel() * b.element_size() for b in result)


def register(kind: Kind) -> Kind:
    """Add a kind to the registry; its name must be new."""
    if not kind.name or kind.name in KINDS:
        raise ValueError(f"kind {kind.name!r} is {'registered twice' if kind.name else 'unnamed'}")
    KINDS[kind.name] = kind
    return kind


def get(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown kind {name!r}; choose from {', '.join(KINDS)}") from None


def unsupported(strategy, kind: str, device: str | None = None) -> str | None:
    """Why ``strategy`` cannot run a problem of ``kind`` (on ``device``) here, or None."""
    return strategy.unavailable(device) or get(kind).refuses(strategy)


@functools.lru_cache(maxsize=2)  # the sweep runs a problem's pairs together; a reference can be 100s of MB
def reference(problem: Problem, seed: int = 0) -> Reference:
    """The reference of ``problem`` at its built point, checked (NOTE: [Reference audit]).

    A reference that cannot be computed is returned ``disputed``, with the reason, rather
    than raised: the pairs say so, not the strategies.
    """
    changed: list[str] = []
    try:
        with state.kept(changed):
            ref = get(problem.kind).reference(problem, seed)
    except Exception as exc:  # noqa: BLE001 - the reference's failure is every pair's status
        text = str(exc).strip().splitlines()
        ref = Reference((), 0.0, disputed="the float64 reference could not be computed: "
                        f"{type(exc).__name__}: {text[0] if text else ''}"[:300])
    if changed:
        extra = f"f leaves {', '.join(changed)} behind (restored after each pair)"
        ref = dataclasses.replace(ref, disputed=f"{ref.disputed}; {extra}" if ref.disputed else None,
                                  note=f"{ref.note}; {extra}" if ref.note else extra)
    return ref

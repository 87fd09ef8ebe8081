"""A Jacobian penalty inside a training step, computed exactly or estimated.

A ``penalty`` problem builds a model ``x -> h = encoder(x) -> y = head(h)`` with a batch
(x, target) (see ``cases.penalty``). One step (:func:`step`) runs the forward pass, the
penalty on the per-sample Jacobians ``J_b = d y_b / d h_b`` with ``create_graph=True``, and
the backward pass of ``mse + lam * penalty`` to every parameter; it returns the penalty and
the parameter gradients. That whole step is what the sweep times.

Every penalty needs two per-sample quantities, ``||J_b||_F^2`` and ``tr J_b`` (the identity
target is ``||J_b - I||_F^2 = ||J_b||_F^2 - 2 tr J_b + k``):

* exact strategies (those registered with ``create_graph=True``) compute J itself, of
  ``h -> head(h).sum(0)`` (the sum over the batch is exact here: samples do not interact
  in the head), and take both quantities from it;
* estimators (``bench.strategies.penalty``) never form J: random VJPs give unbiased
  estimates of both.

NOTE: [Estimator accuracy]
    An estimator is random, so it is not gated like an exact strategy: the gate draws
    :data:`DRAWS` steps and reports the relative RMS error of the penalty and of the
    gradient as the row's accuracy. It is ``wrong`` if its mean penalty is off the exact
    one by more than 4 standard errors (biased), or if its gradient does not reach the
    parameters (a detached penalty).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from bench.gate import accuracy, audit
from bench.gate.accuracy import Reference, Verdict, check
from bench.kinds.registry import Kind, register
from bench.strategies import Strategy, Unsupported, get

DRAWS = 16


# --- the step ------------------------------------------------------------------------------


def quantities(strategy: Strategy, head, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``||J_b||_F^2`` and ``tr J_b``, differentiable w.r.t. the parameters."""
    if estimates(strategy):
        return strategy(head, (h,), create_graph=True)
    if not strategy.create_graph:
        raise Unsupported(f"{strategy.name} cannot build a differentiable Jacobian (create_graph)")
    (j,) = strategy(lambda hh: head(hh).sum(0), (h,), create_graph=True)  # (m, B, k)
    j = j.movedim(1, 0)  # (B, m, k)
    square = min(j.shape[1], j.shape[2])
    trace = j[:, :square, :square].diagonal(dim1=1, dim2=2).sum(1)
    return (j**2).sum((1, 2)), trace


def loss(model, x, target, strategy: Strategy) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's loss ``mse + lam * penalty``, and the penalty, both differentiable."""
    h = model.encoder(x)
    y = model.head(h)
    fro, trace = quantities(strategy, model.head, h)
    per_sample = fro - 2 * trace + h.shape[1] if model.target == "identity" else fro
    penalty = per_sample.mean()
    return ((y - target) ** 2).mean() + model.lam * penalty, penalty


def step(model, x, target, strategy: Strategy) -> tuple[torch.Tensor, ...]:
    """One training step: returns ``(penalty, *parameter gradients)``."""
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    total, penalty = loss(model, x, target, strategy)
    grads = torch.autograd.grad(total, params, allow_unused=True)
    return (penalty.detach(),) + tuple(torch.zeros_like(p) if g is None else g for g, p in zip(grads, params))


def penalty_grads(model, x, target, strategy) -> tuple[torch.Tensor, ...] | None:
    """The penalty's own gradient per parameter, or None where it does not depend on them."""
    params = list(model.parameters())
    _, penalty = loss(model, x, target, strategy)
    if not penalty.requires_grad:
        return None
    grads = torch.autograd.grad(penalty, params, allow_unused=True)
    return tuple(torch.zeros_like(p) if g is None else g for g, p in zip(grads, params))


# --- the gate ------------------------------------------------------------------------------


def _reference(built) -> Reference:
    """The exact step in the built (float64) precision with the plain ``grad-loop`` (no vmap),
    the penalty's own gradients, and their audit (NOTE: [Reference audit]) twice over: the
    head's Jacobian that the penalty is built from, for one sample, and the loss's gradient."""
    model, (x, target) = built.fn, built.inputs
    loop = get("grad-loop")
    blocks = tuple(b.detach() for b in step(model, x, target, loop))
    own = tuple(g.detach() for g in penalty_grads(model, x, target, loop))
    names = [name for name, _ in model.named_parameters()]
    with torch.no_grad():
        h0 = model.encoder(x)[0]
    (head_jac,) = accuracy.reverse_loop(model.head, (h0,))
    found = audit.audit(model.head, (h0,), head_jac, seed=1)
    if not found.disputed:
        found = audit.audit(_Loss(model, x, target, loop).of_parameters(), tuple(p.detach() for p in model.parameters()),
                            torch.cat([g.reshape(1, -1) for g in blocks[1:]], dim=1), seed=2)
    return Reference(blocks, abs(blocks[0].item()), 1, ("the penalty",) + tuple(f"the gradient of {n}" for n in names),
                     own, found.disputed, found.note)


class _Loss(torch.nn.Module):
    """The step's loss as a module, so that finite differences can vary its parameters."""

    def __init__(self, model, x, target, strategy):
        super().__init__()
        self.model, self.x, self.target, self.strategy = model, x, target, strategy

    def forward(self):
        return loss(self.model, self.x, self.target, self.strategy)[0]

    def of_parameters(self):
        """The loss as a function of the model's parameters, in ``named_parameters`` order."""
        names = [f"model.{n}" for n, _ in self.model.named_parameters()]

        def f(*params):
            with torch.enable_grad():  # the penalty needs autograd, whatever the caller's mode
                return torch.func.functional_call(self, dict(zip(names, params)), ()).detach().reshape(1)

        return f


def _check(strategy: Strategy, built, first: tuple, reference: Reference, dtype, notes: dict) -> Verdict:
    """Gate one penalty strategy: the penalty and each gradient against its own scale, and the
    penalty's own gradient apart (NOTE: [Estimator accuracy] for estimators)."""
    model, (x, target) = built.fn, built.inputs
    own = penalty_grads(model, x, target, strategy)
    if own is None or not any(bool(g.abs().max() > 0) for g in own):
        return Verdict(False, None, 0.0, "the penalty's gradient does not reach the parameters "
                                         "(the Jacobian was detached from the graph)")
    if not estimates(strategy):
        notes["penalty"] = float(first[0])
        v = check(first, reference, dtype, 0)
        if not v.ok:
            return v
        # the penalty's own gradient apart: in the loss's, the mse's gradient can hide its error
        alone = replace(reference, blocks=reference.blocks[:1] + reference.extra,
                        parts=reference.parts[:1] + tuple(p.replace("the gradient", "the penalty's own gradient")
                                                          for p in reference.parts[1:]))
        own_verdict = check(first[:1] + own, alone, dtype, 0)
        return replace(own_verdict, error=max(v.error, own_verdict.error or 0.0))
    exact_penalty = reference.blocks[0].item()
    exact_grad = reference.jacobian[0, 1:]
    draws = [first] + [step(model, x, target, strategy) for _ in range(DRAWS - 1)]
    pens = torch.tensor([float(d[0]) for d in draws], dtype=torch.float64)
    grads = torch.stack([torch.cat([g.detach().double().cpu().reshape(-1) for g in d[1:]]) for d in draws])
    pen_err = ((pens - exact_penalty) ** 2).mean().sqrt().item() / abs(exact_penalty)
    grad_err = ((grads - exact_grad).norm(dim=1) / exact_grad.norm()).pow(2).mean().sqrt().item()
    bias = abs(pens.mean().item() - exact_penalty)
    bound = 4 * pens.std().item() / math.sqrt(DRAWS) + 1e-3 * abs(exact_penalty)
    notes.update(draws=DRAWS, penalty_rel_error=pen_err, grad_rel_error=grad_err, penalty=exact_penalty)
    if bias > bound:
        return Verdict(False, grad_err, bound / abs(exact_penalty),
                       f"biased: mean penalty over {DRAWS} draws is off by {bias:.3g} (> {bound:.3g})")
    return Verdict(True, grad_err, bound / abs(exact_penalty))


def estimates(strategy: Strategy) -> bool:
    """Whether ``strategy`` estimates the penalty's quantities instead of computing J."""
    return getattr(strategy.compute, "estimates", False)


class Penalty(Kind):
    """A training step whose loss holds a Jacobian penalty: it is run, gated and sized as a step."""

    name = "penalty"
    advisable = False  # the advisor takes a function, not a training step

    def refuses(self, strategy) -> str | None:
        if self.name in strategy.kinds:
            return None
        if "vector" in strategy.kinds:
            if strategy.create_graph:
                return None  # it computes the J that the penalty is built from
            return (f"{strategy.name} cannot differentiate its Jacobian again (no create_graph), "
                    "so it cannot sit inside a training loss")
        return super().refuses(strategy)

    def run(self, strategy, fn, inputs):
        return step(fn, *inputs, strategy)

    def evaluate(self, fn, inputs):
        """The model's forward pass on the batch, without the loss or the penalty."""
        return fn(inputs[0])

    def probed(self, run, fn, probe):
        """The probe sits on the model's head: its evaluations, VJPs and JVPs are the step's."""
        head = fn.head
        fn.head = _Wrapped(probe(head))
        try:
            return run(fn)
        finally:
            fn.head = head

    def reference(self, problem, seed):
        return _reference(problem.build("cpu", accuracy.REFERENCE_DTYPE, seed))

    def check(self, strategy, built, result, reference, dtype, notes):
        return _check(strategy, built, result, reference, dtype, notes)

    def later(self, strategy, built, result, reference, dtype, notes):
        """An estimator is random by design: its later draw must only keep the layout and be finite."""
        if not estimates(strategy):
            return super().later(strategy, built, result, reference, dtype, notes)
        if all(torch.isfinite(b).all() for b in result):
            return None
        return "a later call returned NaN or infinite entries"

    def jacobian_bytes(self, problem, result) -> int:
        """A step returns gradients: the Jacobian is the per-sample ones it forms, batch x m x hidden."""
        return problem.batch * problem.m * problem.n * result[0].element_size()


class _Wrapped(torch.nn.Module):
    """A plain function as a module, so it can stand in for a submodule."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


PENALTY = register(Penalty())

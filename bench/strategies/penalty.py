"""Penalty estimators: a Jacobian penalty's ||J||_F^2 and tr J estimated from random VJPs,
without forming J (the ``penalty`` kind, ``bench.kinds.penalty``).

With k random vectors v_b, E[v v^T] = I, each VJP ``v_b^T J_b`` gives ``||v^T J||^2`` and
``v^T J v``, unbiased for ``||J||_F^2`` and ``tr J``. ``penalty-projK`` draws v uniformly on
the sphere of radius sqrt(m), Hoffman, Roberts & Yaida (2019)'s random projections;
``penalty-hutchinsonK`` draws Rademacher vectors, Hutchinson's trace estimator. They are
gated as estimates (NOTE: [Estimator accuracy]).
"""

from __future__ import annotations

import math

import torch

from bench.strategies.registry import register

PENALTY = ("penalty",)


def _estimator(k: int, draw):
    def compute(fn, inputs, create_graph=True):
        (h,) = inputs
        y = fn(h)
        fro = trace = 0
        for _ in range(k):
            v = draw(y)
            (vj,) = torch.autograd.grad(y, h, v, create_graph=True, retain_graph=True)  # v_b^T J_b
            square = min(vj.shape[1], v.shape[1])
            fro = fro + (vj**2).sum(1)
            trace = trace + (vj[:, :square] * v[:, :square]).sum(1)
        return fro / k, trace / k

    compute.estimates = True
    return compute


def _sphere(y):
    v = torch.randn_like(y)
    return v / v.norm(dim=1, keepdim=True) * math.sqrt(y.shape[1])


def _rademacher(y):
    return torch.randint(0, 2, y.shape, device=y.device).to(y.dtype) * 2 - 1


for _k in (1, 8):
    _c = _estimator(_k, _sphere)
    _c.__doc__ = f"""Random-projection estimate of ||J||_F^2 and tr J (Hoffman, Roberts & Yaida 2019), {_k} projection{'s' if _k > 1 else ''}.

    Cost: {_k} VJP{'s' if _k > 1 else ''} of the head per step, batched over the samples, no Jacobian formed;
    memory: {_k} extra backward graph{'s' if _k > 1 else ''}. Unbiased; its variance falls as 1/{_k}.
    """
    register(f"penalty-proj{_k}", "estimate", kinds=PENALTY, create_graph=True)(_c)

_c = _estimator(8, _rademacher)
_c.__doc__ = """Hutchinson-style estimate of ||J||_F^2 and tr J with 8 Rademacher vectors.

    Cost: 8 VJPs of the head per step, batched over the samples; memory: 8 extra backward
    graphs. Unbiased; Rademacher vectors give the lowest-variance trace estimate.
    """
register("penalty-hutchinson8", "estimate", kinds=PENALTY, create_graph=True)(_c)

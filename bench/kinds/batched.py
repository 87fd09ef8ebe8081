"""Per-sample Jacobians of a batch: ``x`` of shape ``[B, ...]`` -> the ``(B, m, n)`` stack of
each sample's Jacobian. Samples may interact (batch norm, attention across the batch): the
reference then takes the diagonal blocks of the full Jacobian."""

from __future__ import annotations

import torch

from bench.gate import accuracy, audit
from bench.kinds.registry import Kind, register


class Batched(Kind):
    name = "batched"

    def batch(self, inputs) -> int:
        return inputs[0].shape[0]

    def autograd_reference(self, fn, inputs, problem):
        """Per-sample Jacobians, stacked (B, m, n): one small Jacobian per sample where samples
        are independent; the diagonal blocks of the full (B m, B n) Jacobian where they interact."""
        (x,) = inputs
        b = x.shape[0]
        if "interacting" not in problem.tags:
            rows = [accuracy.reverse_loop(lambda xi: fn(xi[None])[0], (x[i],))[0] for i in range(b)]
            return (torch.stack(rows),)
        (full,) = accuracy.reverse_loop(fn, (x,))  # (B*m, B*n)
        full = full.reshape(b, -1, b, x[0].numel())
        return (torch.stack([full[i, :, i] for i in range(b)]),)

    def layout(self, jacobian, out, inputs):
        (x,) = inputs
        return (jacobian.reshape((x.shape[0],) + out.shape[1:] + x.shape[1:]),)

    def audit(self, fn, inputs, blocks, *, source, seed=0, precision=None, floor=None):
        """The blocks of the first and last samples, each perturbed in its own slot."""
        (x,) = inputs
        (jac,) = blocks
        found = audit.Audit()
        for i in sorted({0, x.shape[0] - 1}):
            def one(xi, i=i):
                return fn(torch.cat([x[:i], xi[None], x[i + 1:]]))[i]

            found = audit.audit(one, (x[i],), accuracy.flatten((jac[i],), jac[i].numel() // x[i].numel()),
                                seed=seed + i, source=source, precision=precision, floor=floor)
            if found.disputed:
                break
        return found


BATCHED = register(Batched())

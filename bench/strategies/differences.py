"""Finite differences: the Jacobian from evaluations of f alone, no autograd (NOTE: [Finite-difference step])."""

from __future__ import annotations

import contextlib
import contextvars

import torch

from bench.strategies.registry import Blocks, register


def _columns_to_blocks(cols: torch.Tensor, out_shape: torch.Size, inputs: Blocks) -> Blocks:
    """Columns ``d out / d x_flat[j]`` stacked as ``(N, *out_shape)`` -> blocks."""
    mat = cols.reshape(cols.shape[0], -1).T  # (m, N)
    pieces = torch.split(mat, [x.numel() for x in inputs], dim=1)
    return tuple(p.reshape(out_shape + x.shape) for p, x in zip(pieces, inputs))


def _flat(inputs: Blocks):
    """All inputs as one flat vector, and the inverse map."""
    flat = torch.cat([x.reshape(-1) for x in inputs])
    sizes = [x.numel() for x in inputs]

    def unflatten(v):
        return tuple(p.reshape(x.shape) for p, x in zip(torch.split(v, sizes, dim=-1), inputs))

    return flat, unflatten


# --- finite differences ------------------------------------------------------------------
#
# NOTE: [Finite-difference step]
#   The step for x_j is h_j = eps^(1/2) * max(1, |x_j|) for forward and eps^(1/3) * max(1,
#   |x_j|) for central differences, eps the dtype's machine epsilon: these balance the
#   truncation error (h |f''| or h^2 |f'''|) against the rounding error (eps |f| / h), which
#   leaves an error of order eps^(1/2) or eps^(2/3) relative to the Jacobian's scale. The
#   step is then made exactly representable, h = (x + h) - x, so the divisor is the step
#   that was actually taken. ``bench.gate.accuracy.tolerance`` derives the gate's tolerance from the
#   same orders.


_STEP_SCALE: contextvars.ContextVar[float] = contextvars.ContextVar("jacbench_fd_step_scale", default=1.0)


@contextlib.contextmanager
def steps_scaled(factor: float):
    """Finite differences inside take steps ``factor`` times their usual ones: the gate's
    second answer at h/2, whose difference from the first estimates their error (NOTE:
    [Finite-difference verdicts] in ``bench.gate.accuracy``)."""
    token = _STEP_SCALE.set(factor)
    try:
        yield
    finally:
        _STEP_SCALE.reset(token)


def fd_steps(x: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Representable steps (up, down) for each element of flat ``x``; down is 0 for order 1."""
    eps = torch.finfo(x.dtype).eps
    h = _STEP_SCALE.get() * eps ** (0.5 if order == 1 else 1 / 3) * x.abs().clamp(min=1.0)
    up = (x + h) - x
    down = x - (x - h) if order == 2 else torch.zeros_like(x)
    return up, down


def _fd_batched(fn, inputs, order: int):
    with torch.no_grad():
        x, unflatten = _flat(inputs)
        n = x.numel()
        up, down = fd_steps(x, order)
        # The base point rides in the same batch as the perturbed points (forward differences),
        # so both sides of each difference come from the same kernels and round alike.
        if order == 1:
            shifts = torch.cat([torch.zeros_like(x)[None], torch.diag(up)])
        else:
            shifts = torch.cat([torch.diag(up), -torch.diag(down)])
        evals = torch.func.vmap(lambda v: fn(*unflatten(v)))(x + shifts)  # (N+1 or 2N, *out)
        diffs = evals[1:] - evals[:1] if order == 1 else evals[:n] - evals[n:]
        cols = diffs / (up + down).reshape((-1,) + (1,) * (diffs.dim() - 1))
        return _columns_to_blocks(cols, diffs.shape[1:], inputs)


def _fd_loop(fn, inputs, order: int):
    with torch.no_grad():
        x, unflatten = _flat(inputs)
        up, down = fd_steps(x, order)
        f0 = fn(*inputs) if order == 1 else None
        cols = []
        for j in range(x.numel()):
            e = torch.zeros_like(x)
            e[j] = 1
            hi = fn(*unflatten(x + up[j] * e))
            lo = f0 if order == 1 else fn(*unflatten(x - down[j] * e))
            cols.append((hi - lo) / (up[j] + down[j]))
        return _columns_to_blocks(torch.stack(cols), cols[0].shape, inputs)


@register("fd-forward", "fd", fd_order=1, needs=("torch.func",))
def fd_forward(fn, inputs, create_graph=False):
    """Forward differences, all N perturbed inputs evaluated in one ``vmap``-batched call.

    Cost: N + 1 evaluations of ``fn`` under ``no_grad`` as one batched call; memory: an
    (N + 1) x N block of perturbed inputs and N + 1 outputs. Error O(eps^(1/2)).
    """
    return _fd_batched(fn, inputs, 1)


@register("fd-central", "fd", fd_order=2, needs=("torch.func",))
def fd_central(fn, inputs, create_graph=False):
    """Central differences, all 2N perturbed inputs evaluated in one ``vmap``-batched call.

    Cost: 2N evaluations of ``fn`` under ``no_grad`` as one batched call; memory: 2N x N
    perturbed inputs and 2N outputs. Error O(eps^(2/3)).
    """
    return _fd_batched(fn, inputs, 2)


@register("fd-forward-loop", "fd", fd_order=1)
def fd_forward_loop(fn, inputs, create_graph=False):
    """Forward differences in a Python loop over the N inputs.

    Cost: N + 1 separate evaluations of ``fn`` under ``no_grad``; memory: one evaluation.
    Shows what batching the evaluations buys.
    """
    return _fd_loop(fn, inputs, 1)


@register("fd-central-loop", "fd", fd_order=2)
def fd_central_loop(fn, inputs, create_graph=False):
    """Central differences in a Python loop over the N inputs.

    Cost: 2N separate evaluations of ``fn`` under ``no_grad``; memory: one evaluation.
    """
    return _fd_loop(fn, inputs, 2)

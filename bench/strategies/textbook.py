"""The textbook strategies: reverse mode and forward mode through autograd and torch.func.

When each mode wins (m outputs, N inputs, C the cost of one evaluation of ``fn``):
    reverse mode needs m vector-Jacobian products (VJPs), about m * 3C, so it wins when m << N;
    forward mode needs N Jacobian-vector products (JVPs), about N * 2C, so it wins when N << m;
    vectorised variants (``vmap``, ``is_grads_batched``) do the same products as one batched
    pass, trading Python overhead for memory: the whole batch of cotangents or tangents and
    its intermediates are alive at once. Finite differences need N (forward) or 2N (central)
    extra evaluations of ``fn`` and no graph, at the price of O(sqrt(eps)) or O(eps^(2/3))
    accuracy.
"""

from __future__ import annotations

import torch

from bench.strategies.registry import Blocks, register

# --- shared pieces -----------------------------------------------------------------------


def _leaves(inputs: Blocks, create_graph: bool) -> Blocks:
    """Inputs that require grad. With ``create_graph`` an input already in a graph is kept,
    so the Jacobian stays differentiable with respect to whatever produced it."""
    return tuple(x if create_graph and x.requires_grad else x.detach().requires_grad_(True) for x in inputs)


def _grads_or_zeros(grads, xs) -> Blocks:
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, xs))


def _stack_rows(rows: list[Blocks], out_shape: torch.Size, xs: Blocks) -> Blocks:
    """Rows ``d out[i] / d xs`` (one tuple per output element) -> blocks (see NOTE: [Jacobian layout])."""
    return tuple(torch.stack([r[k] for r in rows]).reshape(out_shape + x.shape) for k, x in enumerate(xs))


# --- reverse mode ------------------------------------------------------------------------


@register("manual-backward", "reverse", create_graph=False)
def manual_backward(fn, inputs, create_graph=False):
    """m calls of ``out.backward(one_hot, retain_graph=True)``, reading ``x.grad`` after each.

    Cost: one forward, then m full VJPs each paying Python, engine and ``.grad`` bookkeeping;
    memory: one retained graph. The textbook loop, slowest exact method when m is large.
    """
    xs = _leaves(inputs, False)
    out = fn(*xs)
    rows = []
    for i in range(out.numel()):
        for x in xs:
            x.grad = None
        one_hot = torch.zeros(out.shape, dtype=out.dtype, device=out.device)  # contiguous, unlike zeros_like
        one_hot.view(-1)[i] = 1
        out.backward(one_hot, retain_graph=True)
        rows.append(_grads_or_zeros([x.grad for x in xs], xs))
    return _stack_rows(rows, out.shape, xs)


@register("grad-loop", "reverse", create_graph=True)
def grad_loop(fn, inputs, create_graph=False):
    """m calls of ``torch.autograd.grad(out[i], inputs, retain_graph=True)``.

    Cost: one forward, then m VJPs with Python overhead per row; memory: one retained graph.
    """
    xs = _leaves(inputs, create_graph)
    out = fn(*xs)
    flat = out.reshape(-1)
    rows = [
        _grads_or_zeros(torch.autograd.grad(flat[i], xs, retain_graph=True, create_graph=create_graph,
                                            allow_unused=True), xs)
        for i in range(flat.numel())
    ]
    return _stack_rows(rows, out.shape, xs)


@register("grad-batched", "reverse", needs=("is_grads_batched",), create_graph=True)
def grad_batched(fn, inputs, create_graph=False):
    """One ``torch.autograd.grad(out, inputs, eye(m), is_grads_batched=True)``.

    Cost: one forward and m VJPs batched by vmap into one backward pass; memory: an m x m
    identity plus every intermediate of the backward pass times m.
    """
    xs = _leaves(inputs, create_graph)
    out = fn(*xs)
    m = out.numel()
    eye = torch.eye(m, dtype=out.dtype, device=out.device).reshape((m,) + out.shape)
    grads = torch.autograd.grad(out, xs, eye, create_graph=create_graph, allow_unused=True,
                                is_grads_batched=True)
    return tuple(torch.zeros(out.shape + x.shape, dtype=x.dtype, device=x.device) if g is None
                 else g.reshape(out.shape + x.shape) for g, x in zip(grads, xs))


@register("functional", "reverse", create_graph=True)
def functional(fn, inputs, create_graph=False):
    """``torch.autograd.functional.jacobian(fn, inputs)`` with its defaults (``vectorize=False``).

    Cost: one forward and m VJPs in a Python loop inside torch; memory: one retained graph.
    """
    return torch.autograd.functional.jacobian(fn, inputs, create_graph=create_graph)


@register("functional-vectorized", "reverse", needs=("vectorize=",), create_graph=True)
def functional_vectorized(fn, inputs, create_graph=False):
    """``torch.autograd.functional.jacobian(fn, inputs, vectorize=True)``.

    Cost: one forward and m VJPs batched by the legacy vmap into one backward pass; memory:
    m times the backward intermediates. Ops without a legacy batching rule fall back to a loop.
    """
    return torch.autograd.functional.jacobian(fn, inputs, create_graph=create_graph, vectorize=True)


@register("jacrev", "reverse", needs=("torch.func",), create_graph=True)
def jacrev(fn, inputs, create_graph=False):
    """``torch.func.jacrev(fn, argnums=all)(*inputs)``.

    Cost: one forward and m VJPs batched by ``torch.func.vmap``; memory: m times the
    backward intermediates. Wins when m << N.
    """
    return torch.func.jacrev(fn, argnums=tuple(range(len(inputs))))(*inputs)


# --- forward mode ------------------------------------------------------------------------


@register("functional-forward", "forward", needs=("vectorize=", "strategy="))
def functional_forward(fn, inputs, create_graph=False):
    """``torch.autograd.functional.jacobian(fn, inputs, vectorize=True, strategy="forward-mode")``.

    Cost: N JVPs batched by the legacy vmap over forward-mode dual tensors; memory: N times
    the forward intermediates. Wins when N << m.
    """
    return torch.autograd.functional.jacobian(fn, inputs, vectorize=True, strategy="forward-mode")


@register("jacfwd", "forward", needs=("torch.func",), create_graph=True)
def jacfwd(fn, inputs, create_graph=False):
    """``torch.func.jacfwd(fn, argnums=all)(*inputs)``.

    Cost: N JVPs batched by ``torch.func.vmap`` in one forward pass; memory: N times the
    forward intermediates, no graph. Wins when N << m.
    """
    return torch.func.jacfwd(fn, argnums=tuple(range(len(inputs))))(*inputs)

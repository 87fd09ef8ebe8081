"""Per-sample Jacobians of a batched function: X [B, n] -> J [B, m, n].

Every strategy here returns one block shaped ``(B, m, n)`` (more generally
``(B, *out_sample, *in_sample)``) for a ``batched`` problem. They differ in how they get
there, and in what they assume: the sum trick and the batched-gradient form assume the
samples do not interact (no batch statistics), and are wrong where they do.
"""

from __future__ import annotations

import torch

from bench.strategies.registry import register

BATCHED = ("batched",)


def _single(fn):
    """``fn`` on one sample: f_single(x) = fn(x[None])[0]."""
    return lambda x: fn(x.unsqueeze(0)).squeeze(0)


@register("batch-loop", "reverse", kinds=BATCHED)
def batch_loop(fn, inputs, create_graph=False):
    """A Python loop over the samples, ``torch.autograd.functional.jacobian`` of fn on each.

    Cost: B separate Jacobians, each one forward and m VJPs; memory: one sample's graph.
    Evaluates fn on batches of one, so a model with batch statistics sees a different
    function.
    """
    (x,) = inputs
    one = _single(fn)
    return (torch.stack([torch.autograd.functional.jacobian(one, x[b], create_graph=create_graph)
                         for b in range(x.shape[0])]),)


@register("batch-full-diagonal", "reverse", kinds=BATCHED, needs=("torch.func",))
def batch_full_diagonal(fn, inputs, create_graph=False):
    """``jacrev`` of the whole batch, [B, m, B, n], then its diagonal blocks.

    Cost: B*m VJPs batched by vmap, each through the whole batch: B times the work and
    B^2 m n memory. Exact even when samples interact: it is the definition.
    """
    (x,) = inputs
    full = torch.func.jacrev(fn)(x)  # (B, *out, B, *in)
    b = x.shape[0]
    out_dims = full.dim() - x.dim()  # B and the per-sample output dims
    index = torch.arange(b, device=x.device)
    return (full.movedim(out_dims, 1)[index, index],)  # (B, *out_sample, *in_sample)


@register("batch-sum-trick", "reverse", kinds=BATCHED, needs=("torch.func",))
def batch_sum_trick(fn, inputs, create_graph=False):
    """``jacrev`` of ``fn(X).sum(0)``: [m, B, n], transposed to [B, m, n].

    Cost: m VJPs batched by vmap, each through the batch once; memory: m times one backward
    pass. Sums the off-diagonal blocks into the diagonal ones: exact only for independent
    samples.
    """
    (x,) = inputs
    j = torch.func.jacrev(lambda x: fn(x).sum(0))(x)  # (*out_sample, B, *in_sample)
    out_dims = j.dim() - x.dim()
    return (j.movedim(out_dims, 0),)


@register("batch-grad-batched", "reverse", kinds=BATCHED, needs=("is_grads_batched",))
def batch_grad_batched(fn, inputs, create_graph=False):
    """``autograd.grad(fn(X), X, e_i for every sample at once, is_grads_batched=True)``.

    Cost: m VJPs batched into one backward pass, the sum trick written with autograd.grad;
    memory: m times one backward pass. Exact only for independent samples.
    """
    x = inputs[0].detach().requires_grad_(True)
    y = fn(x)
    m = y[0].numel()
    eye = torch.eye(m, dtype=y.dtype, device=y.device).reshape((m, 1) + y.shape[1:]).expand((m,) + y.shape)
    (g,) = torch.autograd.grad(y, x, eye, create_graph=create_graph, is_grads_batched=True)  # (m, B, *in)
    return (g.movedim(0, 1).reshape(y.shape + x.shape[1:]),)


@register("vmap-jacrev", "reverse", kinds=BATCHED, needs=("torch.func",))
def vmap_jacrev(fn, inputs, create_graph=False):
    """``vmap(jacrev(f_single))(X)``: per-sample reverse mode, vectorised over the batch.

    Cost: B*m VJPs in one vmapped pass; memory: B*m times one sample's backward pass.
    """
    return (torch.func.vmap(torch.func.jacrev(_single(fn)))(inputs[0]),)


@register("vmap-jacfwd", "forward", kinds=BATCHED, needs=("torch.func",))
def vmap_jacfwd(fn, inputs, create_graph=False):
    """``vmap(jacfwd(f_single))(X)``: per-sample forward mode, vectorised over the batch.

    Cost: B*n JVPs in one vmapped forward pass; memory: B*n times one sample's forward
    intermediates. Wins over vmap-jacrev when n < m.
    """
    return (torch.func.vmap(torch.func.jacfwd(_single(fn)))(inputs[0]),)

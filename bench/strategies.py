"""HOW a Jacobian is computed: the strategy registry.

A strategy is one small function ``compute(fn, inputs, create_graph=False)``, registered
under a stable kebab-case name. Its docstring's first paragraph states its cost model.

NOTE: [Jacobian layout]
    ``fn(*inputs)`` returns one tensor ``out``. Every strategy returns a tuple with one block
    per input; block ``k`` has shape ``out.shape + inputs[k].shape`` and holds
    ``d out[i] / d inputs[k][j]``. This is the layout of ``torch.autograd.functional.jacobian``
    and ``torch.func.jacrev(argnums=...)`` for tuple inputs, so those strategies return their
    library's answer untouched; the loops and finite differences assemble the same layout.
    The correctness gate flattens the blocks to one ``(m, N)`` matrix (``accuracy.flatten``).

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

import contextlib
import contextvars
import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

Blocks = tuple[torch.Tensor, ...]


class Unsupported(Exception):
    """Raised by a strategy that finds, at call time, that it cannot handle this function
    (no ``nn.Sequential`` to exploit, no sparsity pattern, ...). The message is the reason;
    the pair is recorded as ``unsupported``, not as an error."""

# --- what a strategy may know beyond (fn, inputs) ----------------------------------------


@dataclass(frozen=True)
class Context:
    """What the caller knows about ``fn`` besides being callable: the ``nn.Module`` behind it
    and the Jacobian's sparsity pattern, for strategies that exploit structure. Strategies
    read it with :func:`context`; the sweep and the advisor set it with :func:`using`."""

    module: torch.nn.Module | None = None
    sparsity: torch.Tensor | None = None


_CONTEXT: contextvars.ContextVar[Context] = contextvars.ContextVar("jacbench_context", default=Context())
_NOTES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("jacbench_notes", default=None)


def context() -> Context:
    return _CONTEXT.get()


@contextlib.contextmanager
def using(module=None, sparsity=None, notes: dict | None = None):
    """Run strategies with this context; ``notes`` collects what they :func:`note`."""
    tokens = _CONTEXT.set(Context(module, sparsity)), _NOTES.set(notes)
    try:
        yield
    finally:
        _CONTEXT.reset(tokens[0])
        _NOTES.reset(tokens[1])


def note(**facts) -> None:
    """Record facts about this call (e.g. the number of colours) in the row's ``notes``."""
    notes = _NOTES.get()
    if notes is not None:
        notes.update(facts)


# --- torch features a strategy may need, for running across torch versions -------------


def _has_param(fn_path: str, param: str) -> Callable[[], bool]:
    def check() -> bool:
        obj = torch
        for part in fn_path.split(".")[1:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return False
        try:
            return param in inspect.signature(obj).parameters
        except (TypeError, ValueError):
            return False

    return check


FEATURES: dict[str, Callable[[], bool]] = {
    "torch.func": lambda: hasattr(torch, "func") and hasattr(torch.func, "jacrev"),
    "is_grads_batched": _has_param("torch.autograd.grad", "is_grads_batched"),
    "vectorize=": _has_param("torch.autograd.functional.jacobian", "vectorize"),
    "strategy=": _has_param("torch.autograd.functional.jacobian", "strategy"),
    "chunk_size": _has_param("torch.func.jacrev", "chunk_size"),
    "torch.compile": lambda: hasattr(torch, "compile"),
}


@dataclass(frozen=True)
class Strategy:
    """A registered way of computing a Jacobian.

    Attributes:
        name: stable kebab-case id; a DataFrame value, pytest id, CLI filter and label.
        compute: ``compute(fn, inputs, create_graph=False) -> Blocks``.
        mode: ``reverse``, ``forward`` or ``fd``: what kind of products it performs;
            ``structured`` (no autograd) or ``estimate`` (a random estimate of what the
            problem needs, e.g. a penalty's ||J||_F^2, not the Jacobian itself).
        kinds: problem kinds it accepts; others are ``unsupported`` with a reason.
        fd_order: 0 for exact strategies, 1 for forward and 2 for central differences.
        needs: torch features it calls (keys of :data:`FEATURES`).
        create_graph: whether its result can be differentiated again.
        tier: index into ``cases.PROFILES`` of the smallest profile that runs it (costly
            strategies, such as compiled ones, stay out of the small profiles).
        devices: device types it runs on.
    """

    name: str
    compute: Callable[..., Blocks] = field(compare=False, repr=False)
    mode: str
    kinds: frozenset[str]
    fd_order: int = 0
    needs: tuple[str, ...] = ()
    create_graph: bool = False
    tier: int = 0
    devices: tuple[str, ...] = ("cpu", "cuda")

    @property
    def exact(self) -> bool:
        return self.fd_order == 0 and self.mode != "estimate"

    def _paragraphs(self) -> list[str]:
        return [" ".join(p.split()) for p in inspect.cleandoc(self.compute.__doc__ or "").split("\n\n")]

    @property
    def summary(self) -> str:
        """What it calls: the docstring's first paragraph, on one line."""
        return self._paragraphs()[0]

    @property
    def cost(self) -> str:
        """Its cost model: the docstring's paragraph that starts with ``Cost:``."""
        return next((p for p in self._paragraphs() if p.startswith("Cost:")), "")

    def unsupported(self, kind: str, device: str | None = None) -> str | None:
        """Why this strategy cannot run a problem of this kind (on this device) here, or None."""
        if device is not None and device.split(":")[0] not in self.devices:
            return f"{self.name} runs on {' and '.join(self.devices)} only"
        for feature in self.needs:
            if not FEATURES[feature]():
                return f"torch {torch.__version__} lacks {feature}"
        if kind == "penalty" and "penalty" not in self.kinds and "vector" in self.kinds:
            if self.create_graph:
                return None  # it computes the J that the penalty is built from
            return (f"{self.name} cannot differentiate its Jacobian again (no create_graph), "
                    "so it cannot sit inside a training loss")
        if kind not in self.kinds:
            return f"{self.name} does not handle {kind} problems (it handles {', '.join(sorted(self.kinds))})"
        return None

    def __call__(self, fn, inputs, create_graph: bool = False) -> Blocks:
        # tuple(): functional.jacobian's forward mode returns a list where its reverse mode
        # returns a tuple.
        return tuple(self.compute(fn, tuple(inputs), create_graph=create_graph))


STRATEGIES: dict[str, Strategy] = {}
VECTOR_KINDS = frozenset({"vector", "multi", "params"})


def register(name: str, mode: str, kinds=VECTOR_KINDS, **kw):
    """Decorator: register ``compute`` as strategy ``name``."""

    def wrap(compute):
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is registered twice")
        STRATEGIES[name] = Strategy(name, compute, mode, frozenset(kinds), **kw)
        return compute

    return wrap


def get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}") from None


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


# --- finite differences ------------------------------------------------------------------
#
# NOTE: [Finite-difference step]
#   The step for x_j is h_j = eps^(1/2) * max(1, |x_j|) for forward and eps^(1/3) * max(1,
#   |x_j|) for central differences, eps the dtype's machine epsilon: these balance the
#   truncation error (h |f''| or h^2 |f'''|) against the rounding error (eps |f| / h), which
#   leaves an error of order eps^(1/2) or eps^(2/3) relative to the Jacobian's scale. The
#   step is then made exactly representable, h = (x + h) - x, so the divisor is the step
#   that was actually taken. ``accuracy.tolerance`` derives the gate's tolerance from the
#   same orders.


def fd_steps(x: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Representable steps (up, down) for each element of flat ``x``; down is 0 for order 1."""
    eps = torch.finfo(x.dtype).eps
    h = eps ** (0.5 if order == 1 else 1 / 3) * x.abs().clamp(min=1.0)
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


# Strategies beyond the textbook register themselves from their own modules.
from . import coloring, compiled, ntk, persample, structured, training  # noqa: E402,F401

"""Op coverage: small functions built around the operations that trip vmap and forward mode.

Each problem is small (n, m <= 256), so what its rows show is not speed but *whether* a
strategy runs, falls back to a slow per-sample loop, or fails, and with which reason. The
sweep records vmap fallbacks ("batching rule not implemented" warnings) as ``fallback`` and
``fallback_ops`` on the row and failures as ``error`` with a one-line reason; reverse-mode
loops never go through vmap and stay the baseline. What to expect (torch 2.x):

* ``ops-softplus``: ``softplus`` inside a two-layer map. Runs everywhere.
* ``ops-gather-scatter``: ``gather`` then ``index_put(accumulate=True)`` into a fresh
  buffer, out of place: the sparse, repeated-index reads and writes of graph and mesh codes.
* ``ops-inplace``: a clone written in place through views (``mul_``, ``add_`` on a slice,
  ``sin_``, a strided ``*=``): fine for every transform.
* ``ops-inplace-buffer``: writes into a preallocated ``torch.zeros`` buffer, the common
  idiom. Under ``vmap`` of the function itself the buffer is unbatched and the written
  values are batched, so the vmap-batched finite differences fail with vmap's in-place
  error; reverse mode only vmaps the backward, and forward mode batches only the tangents
  (the primal buffer stays unbatched), so both run.
* ``ops-dropout-eval``: an MLP with ``nn.Dropout`` in eval mode (the identity).
* ``ops-batchnorm-eval``: a CNN with ``nn.BatchNorm2d`` in eval mode (running statistics).
* ``ops-solve``, ``ops-slogdet``: ``torch.linalg.solve`` and ``slogdet`` of a perturbed
  matrix; the legacy vmap behind ``functional(vectorize=True)`` has no batching rules for
  their backward and falls back.
* ``ops-custom-fn``: a ``torch.autograd.Function`` with a hand-written backward and
  ``setup_context``/``generate_vmap_rule``, but no ``jvp``: reverse mode and vmap work,
  forward mode (``jacfwd``, ``functional-forward``) fails with a clear error.
* ``ops-custom-fn-legacy``: the same function written the old way (``forward(ctx, x)``,
  no ``setup_context``): ``torch.func`` transforms (and so ``jacrev``, ``jacfwd``, the
  vmap-batched finite differences and colouring) refuse it outright, while the reverse-mode
  ``torch.autograd`` strategies and the finite-difference loops still work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nets import input_generator, seeded
from .problem import Built, Problem, Setup
from .registry import register


def _problem(name, n, m, builder, *, tags, description, tier=1, flops=None, analytic=True, sizes=None):
    return Problem(
        f"ops-{name}", "ops", "vector", n=n, m=m, builder=builder,
        sizes=sizes or (("n", n), ("m", m)), tags=frozenset({"ops", *tags}), tier=tier, flops=flops,
        description=description, analytic=analytic,
    )


def _linear(s: Setup, gen, m: int, n: int):
    return s.randn(m, n, gen=gen, scale=n ** -0.5), s.randn(m, gen=gen, scale=0.1)


# --- softplus ------------------------------------------------------------------------------

def _sandwich(s: Setup, n: int, m: int, act, dact) -> Built:
    """W2 act(W1 x + b1) + b2, with its Jacobian W2 diag(act'(W1 x + b1)) W1."""
    g = s.generator()
    w1, b1 = _linear(s, g, n, n)
    w2, b2 = _linear(s, g, m, n)
    x = s.randn(n, gen=g)

    def fn(x):
        return w2 @ act(w1 @ x + b1) + b2

    return Built(fn, (x,), jacobian=lambda: (w2 @ (dact(w1 @ x + b1)[:, None] * w1),))


def _softplus(n: int = 64, m: int = 64) -> Problem:
    def builder(s: Setup) -> Built:
        return _sandwich(s, n, m, lambda z: F.softplus(z, beta=2.0), lambda z: torch.sigmoid(2.0 * z))

    return _problem(f"softplus-n{n}-m{m}", n, m, builder, tags={"softplus"}, flops=2 * n * (n + m),
                    description=f"W2 softplus(W1 x + b1, beta=2) + b2, {n} -> {m}")


# --- gather / index_put --------------------------------------------------------------------

def _gather(n: int = 128, m: int = 64, k: int = 256) -> Problem:
    """out[j] = sum over i with dst[i] = j of w_i x[src[i]]^2: k reads and k accumulated writes."""

    def builder(s: Setup) -> Built:
        g = s.generator()
        src = torch.randint(n, (k,), generator=g).to(s.device)
        dst = torch.randint(m, (k,), generator=g).to(s.device)
        w = s.randn(k, gen=g)
        x = s.randn(n, gen=g)

        def fn(x):
            picked = torch.gather(x, 0, src)
            return torch.zeros(m, dtype=x.dtype, device=x.device).index_put((dst,), w * picked * picked,
                                                                              accumulate=True)

        def jacobian():
            j = torch.zeros(m, n, dtype=x.dtype, device=x.device)
            return (j.index_put_((dst, src), 2 * w * x[src], accumulate=True),)

        return Built(fn, (x,), jacobian=jacobian)

    return _problem(f"gather-scatter-n{n}-m{m}", n, m, builder, tags={"gather", "index-put"},
                    sizes=(("n", n), ("m", m), ("edges", k)), flops=3 * k,
                    description=(f"gather {k} of {n} inputs, square and weight, index_put(accumulate=True) "
                                 f"into {m} outputs (out of place)"))


# --- in-place writes -----------------------------------------------------------------------

def _inplace(n: int = 128) -> Problem:
    def builder(s: Setup) -> Built:
        g = s.generator()
        a = s.uniform(n, gen=g, low=0.5, high=1.5)
        x = s.randn(n, gen=g)

        def fn(x):
            y = x.clone()
            y.mul_(a)
            y[1:].add_(x[:-1], alpha=0.5)  # in place on a view
            y.sin_()
            y[::2] *= 2  # in place on a strided view
            return y

        def jacobian():
            z = a * x
            z[1:] += 0.5 * x[:-1]
            scale = torch.cos(z)
            scale[::2] *= 2
            inner = torch.diag(a)
            inner.diagonal(-1).fill_(0.5)
            return (scale[:, None] * inner,)

        return Built(fn, (x,), jacobian=jacobian)

    return _problem(f"inplace-n{n}", n, n, builder, tags={"inplace"}, flops=5 * n,
                    description="x.clone() then mul_, add_ on a slice view, sin_, *= on a strided view")


def _inplace_buffer(n: int = 128) -> Problem:
    def builder(s: Setup) -> Built:
        x = s.randn(n, gen=s.generator())

        def fn(x):
            out = torch.zeros(2 * n - 1, dtype=x.dtype, device=x.device)
            out[:n] = torch.tanh(x)
            out[n:] = x[:-1] * x[1:]
            return out

        def jacobian():
            j = torch.zeros(2 * n - 1, n, dtype=x.dtype, device=x.device)
            j[:n] = torch.diag(1 - torch.tanh(x) ** 2)
            j[n:].diagonal(0).copy_(x[1:])
            j[n:].diagonal(1).copy_(x[:-1])
            return (j,)

        return Built(fn, (x,), jacobian=jacobian)

    return _problem(f"inplace-buffer-n{n}", n, 2 * n - 1, builder, tags={"inplace", "vmap-error"}, flops=2 * n,
                    description=("out = torch.zeros(...); out[:n] = tanh(x); out[n:] = x[:-1] * x[1:]: "
                                 "batched values written into an unbatched buffer"))


# --- dropout and batch norm in eval mode ---------------------------------------------------

def _dropout(n: int = 64, width: int = 128, m: int = 64) -> Problem:
    def builder(s: Setup) -> Built:
        net = seeded(nn.Sequential(nn.Linear(n, width), nn.Tanh(), nn.Dropout(0.5),
                                   nn.Linear(width, width), nn.Tanh(), nn.Dropout(0.5), nn.Linear(width, m)), s)
        return Built(net, (s.randn(n, gen=input_generator(s)),), module=net)

    return _problem(f"dropout-eval-n{n}-m{m}", n, m, builder, tags={"dropout", "network"}, analytic=False,
                    flops=2 * width * (n + width + m),
                    description=f"tanh MLP {n} -> {width} -> {width} -> {m} with nn.Dropout(0.5) in eval mode")


class _BatchedImage(nn.Module):
    """Runs a network that needs a batch dimension (BatchNorm2d) on one image."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.unsqueeze(0)).squeeze(0)


def _batchnorm(c: int = 1, h: int = 16, classes: int = 10) -> Problem:
    def builder(s: Setup) -> Built:
        g = s.generator()
        net = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Tanh(), nn.AvgPool2d(2),
                            nn.Flatten(1), nn.Linear(8 * (h // 2) ** 2, classes))
        net = seeded(net, s, g)
        bn = net[1]
        bn.running_mean.copy_(s.randn(8, gen=g, scale=0.1))
        bn.running_var.copy_(s.uniform(8, gen=g, low=0.5, high=2.0))
        model = _BatchedImage(net).eval()
        return Built(model, (s.randn(c, h, h, gen=input_generator(s)),))

    n = c * h * h
    return _problem(f"batchnorm-eval-{c}x{h}x{h}-out{classes}", n, classes, builder,
                    tags={"batchnorm", "network", "cnn"}, analytic=False,
                    sizes=(("channels", c), ("height", h), ("width", h), ("m", classes)),
                    flops=2 * (8 * h * h * c * 9 + 8 * (h // 2) ** 2 * classes),
                    description=(f"conv3x3 -> nn.BatchNorm2d (eval mode, running stats) -> tanh -> avgpool "
                                 f"-> linear on a {c}x{h}x{h} image -> {classes}"))


# --- linear algebra ------------------------------------------------------------------------

def _matrix(s: Setup, gen, k: int) -> torch.Tensor:
    """A well-conditioned k x k matrix: the identity times 2 plus a N(0, 1/k) perturbation."""
    return s.randn(k, k, gen=gen, scale=k ** -0.5) + 2 * s.cast(torch.eye(k, dtype=torch.float64))


def _solve(k: int = 8, r: int = 4) -> Problem:
    """Y = (A + X)^-1 B for a perturbation X: dY = -(A + X)^-1 dX Y."""

    def builder(s: Setup) -> Built:
        g = s.generator()
        a, b = _matrix(s, g, k), s.randn(k, r, gen=g)
        x = s.randn(k, k, gen=g, scale=0.1)

        def fn(x):
            return torch.linalg.solve(a + x, b)

        def jacobian():
            inv = torch.linalg.inv(a + x)
            y = inv @ b
            return (-torch.einsum("ip,qj->ijpq", inv, y),)  # d Y[i, j] / d X[p, q]

        return Built(fn, (x,), jacobian=jacobian)

    return _problem(f"solve-k{k}-r{r}", k * k, k * r, builder, tags={"linalg", "vmap-fallback"},
                    sizes=(("k", k), ("rhs", r)), flops=2 * k ** 3 // 3 + 2 * k * k * r,
                    description=f"torch.linalg.solve(A + X, B) for a {k}x{k} input X and {r} right-hand sides")


def _slogdet(k: int = 8) -> Problem:
    """log|det(A + X)|, a 0-d scalar: its gradient is (A + X)^-T."""

    def builder(s: Setup) -> Built:
        g = s.generator()
        a = _matrix(s, g, k)
        x = s.randn(k, k, gen=g, scale=0.1)

        def fn(x):
            return torch.linalg.slogdet(a + x)[1]

        return Built(fn, (x,), jacobian=lambda: (torch.linalg.inv(a + x).T,))

    return _problem(f"slogdet-k{k}", k * k, 1, builder, tags={"linalg", "vmap-fallback", "scalar-output"},
                    sizes=(("k", k), ("m", 1)), flops=2 * k ** 3 // 3,
                    description=f"torch.linalg.slogdet(A + X).logabsdet for a {k}x{k} input X: a scalar")


# --- custom autograd.Function without forward mode -----------------------------------------

def _gated(z):
    return z * torch.sigmoid(1.702 * z)


def _gated_grad(z):
    sg = torch.sigmoid(1.702 * z)
    return sg + 1.702 * z * sg * (1 - sg)


class GatedLinearUnit(torch.autograd.Function):
    """``z * sigmoid(1.702 z)`` (a GELU approximation) with a hand-written backward and no
    ``jvp``: usable by reverse mode and vmap (``generate_vmap_rule``), not by forward mode."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z):
        return _gated(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * _gated_grad(z)


class LegacyGatedLinearUnit(torch.autograd.Function):
    """The same function written the pre-2.0 way: ``forward(ctx, z)``, no ``setup_context``."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return _gated(z)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * _gated_grad(z)


def _custom(function, suffix: str, n: int = 64, m: int = 64) -> Problem:
    def builder(s: Setup) -> Built:
        return _sandwich(s, n, m, function.apply, _gated_grad)

    legacy = suffix == "-legacy"
    how = ("old-style forward(ctx, z), no setup_context" if legacy
           else "setup_context + generate_vmap_rule, no jvp")
    return _problem(f"custom-fn{suffix}-n{n}-m{m}", n, m, builder,
                    tags={"custom-function", "vmap-error" if legacy else "no-forward-mode"},
                    flops=2 * n * (n + m), tier=0 if not legacy else 1,
                    description=f"W2 g(W1 x + b1) + b2, g a custom autograd.Function ({how}), {n} -> {m}")


register(
    _softplus(), _gather(), _inplace(), _inplace_buffer(), _dropout(), _batchnorm(), _solve(), _slogdet(),
    _custom(GatedLinearUnit, ""), _custom(LegacyGatedLinearUnit, "-legacy"),
)

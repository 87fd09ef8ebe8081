"""Compiled strategies: the textbook transforms, compiled by ``torch.compile``.

NOTE: [Compiled strategies]
    ``jacrev-compiled``, ``jacfwd-compiled`` and ``vmap-jacrev-compiled`` are
    ``torch.compile`` (inductor, default mode, ``dynamic=False``) of the transform. The first
    call of a function compiles it; that call is the row's ``first_call_s`` and is also noted
    as ``compile_s`` with the number of graphs dynamo produced and its graph breaks. Later
    calls with the same input shapes, dtypes and device reuse the compiled code, so the
    steady-state median is the compiled code's, and the break-even call count is
    ``(first_call_s[compiled] - first_call_s[eager]) / (median[eager] - median[compiled])``.

    Two traps are avoided on purpose:

    - dynamo keeps its compiled entries on the *code object* of the frame it traces, and
      gives up after ``recompile_limit`` (8) entries, silently running that frame eagerly
      from then on. Every ``torch.func.jacrev(f)`` is the same code object, so in a sweep the
      ninth compiled problem would be timed *eagerly*. Each compiled function here gets a
      fresh code object of its own (:func:`_fresh`), and a first call that produced no
      graph is reported as ``unsupported`` rather than timed as if compiled.
    - the compiled function is cached on ``fn`` itself (:func:`memo`), not in a global
      table, so it dies with the function (and, on CUDA, frees its memory pool).

    Known differences from eager (torch 2.13, CPU), all caught by the gate or reported:

    - a custom ``autograd.Function`` with ``generate_vmap_rule``: compiled ``jacrev``
      differentiates its forward instead of calling its backward (a straight-through
      gradient comes out as the forward's derivative), and compiled ``jacfwd`` succeeds
      where eager ``jacfwd`` raises for want of a ``jvp``; the gate marks the first ``wrong``;
    - ``jacfwd`` of ``layer_norm`` (the transformer block) fails inside dynamo with an
      internal assert, and the failed trace used to switch autograd off for the rest of the
      process (NOTE: [A failed compile must not take autograd with it]);
    - ``nn.LSTM``: dynamo breaks the graph and compiles nothing, so the pair is
      ``unsupported`` instead of an eager run timed as compiled.

    The work counts (``bench.measure.counting``) of a compiled or graphed strategy are taken on its
    eager equivalent: compiling fuses kernels, it does not change how many products of
    which kind are formed, and the counting probe cannot see inside compiled kernels.
"""

from __future__ import annotations

import itertools
import re
import time
import types

import torch

from bench.strategies.memo import memo, signature
from bench.strategies.registry import Unsupported, note, probing, register

# --- torch.compile -------------------------------------------------------------------------

_COUNTER = itertools.count()


def _fresh(target, label: str):
    """``target`` behind a function with a code object of its own (NOTE: [Compiled strategies])."""

    def compiled_entry(*args):
        return target(*args)

    code = compiled_entry.__code__.replace(co_name=label)
    if hasattr(code, "co_qualname"):
        code = code.replace(co_qualname=label)
    return types.FunctionType(code, compiled_entry.__globals__, label, None, compiled_entry.__closure__)


def _dynamo_counts() -> tuple[int, int, int]:
    """Graphs dynamo produced, graph breaks, and inductor's on-disk FX-graph cache hits so far."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - torch without dynamo
        return 0, 0, 0
    return (counters["stats"]["unique_graphs"], sum(counters["graph_break"].values()),
            counters["inductor"]["fxgraph_cache_hit"])


def _sync(inputs) -> None:
    for x in inputs:
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
            return


def _run_compiled(variant: str, fn, inputs, make):
    """Call ``make(fn, k)`` compiled, compiling on the first call of this input signature."""
    if probing():
        return make(fn, len(inputs))(*inputs)
    cache = memo(fn, "compiled")
    key = (variant, signature(inputs))
    compiled = cache.get(key)
    if compiled is not None:
        return compiled(*inputs)
    label = f"jacbench_{variant.replace('-', '_')}_{next(_COUNTER)}"
    compiled = torch.compile(_fresh(make(fn, len(inputs)), label), dynamic=False)
    before = _dynamo_counts()
    state = _dispatch_state()
    start = time.perf_counter()
    failure = None
    try:
        out = compiled(*inputs)
    except Exception as exc:
        failure = _compile_failure(exc)
        _drop_frames(exc)
    if failure is not None:  # raised out here, so that nothing refers to the failed trace
        _restore(state)
        raise RuntimeError(failure)
    _sync(inputs)
    seconds = time.perf_counter() - start
    graphs, breaks, hits = (after - b for after, b in zip(_dynamo_counts(), before))
    if graphs == 0:
        raise Unsupported(f"torch.compile produced no graph for this function ({breaks} graph breaks): "
                          "it would run eagerly")
    # compile_s depends on inductor's on-disk cache: a warm cache (fx_cache_hits > 0) skips
    # the C++ compilation and cuts it several-fold.
    note(compile_s=round(seconds, 4), compiled_graphs=graphs, graph_breaks=breaks, fx_cache_hits=hits,
         work_counted_on="the eager transform")
    cache[key] = compiled
    return out


# NOTE: [A failed compile must not take autograd with it]
#   When dynamo fails while tracing a functorch transform (e.g. ``jacfwd`` of ``layer_norm``
#   in torch 2.13: an internal assert under fake tensors), the frames of the failed trace hold
#   guard objects that restore the thread's dispatch-key state when they are destroyed. They
#   die later, at some garbage collection, and restore a stale state that excludes the
#   autograd keys: from then on nothing in the process requires grad, and every later pair of
#   a sweep fails with "element 0 of tensors does not require grad". So a failed first call
#   drops its frames now, collects them, and puts the state back as it was before the call.


_FORCED: list = []


def _dispatch_state():
    c = torch._C
    return (c._dispatch_tls_local_include_set(), c._dispatch_tls_local_exclude_set(), torch.is_grad_enabled(),
            c._is_fwd_grad_enabled() if hasattr(c, "_is_fwd_grad_enabled") else None)


def _compile_failure(exc: BaseException) -> str:
    """One line: what failed, with the error dynamo met inside its trace where it names one."""
    text = str(exc)
    first = (text.strip().splitlines() or [""])[0]
    inner = re.search(r"got (\w+)\('([^'\n]{1,160})", text)
    detail = f" (inside: {inner.group(1)}: {inner.group(2)})" if inner else ""
    return f"torch.compile failed: {type(exc).__name__}: {first}{detail}"


def _drop_frames(exc: BaseException) -> None:
    """Clear the frames of ``exc`` and of the exceptions it chains to."""
    import traceback

    seen = set()
    e = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if e.__traceback__ is not None:
            traceback.clear_frames(e.__traceback__)
            e.__traceback__ = None
        e = e.__cause__ or e.__context__


def _restore(state) -> None:
    """Collect what is left of a failed trace, then put the dispatch state back (see the NOTE
    above)."""
    import gc

    gc.collect()
    c = torch._C
    include, exclude, grad, fwd = state
    if (c._dispatch_tls_local_include_set(), c._dispatch_tls_local_exclude_set()) != (include, exclude):
        # Not every key has a Python name (Tracer has none), so the two sets are forced back
        # whole: a guard entered and never exited, kept alive so that it never restores.
        guard = c._ForceDispatchKeyGuard(include, exclude)
        guard.__enter__()
        _FORCED.append(guard)
    torch.set_grad_enabled(grad)
    if fwd is not None:
        c._set_fwd_grad_enabled(fwd)


def _all(k: int) -> tuple[int, ...]:
    return tuple(range(k))


def _single(fn):
    """``fn`` on one sample of a batch: ``fn(x[None])[0]`` (as ``bench.strategies.persample`` does)."""
    return lambda x: fn(x.unsqueeze(0)).squeeze(0)


@register("jacrev-compiled", "reverse", needs=("torch.func", "torch.compile"), tier=2, prepares=True)
def jacrev_compiled(fn, inputs, create_graph=False):
    """``torch.compile(torch.func.jacrev(fn, argnums=all))(*inputs)`` (NOTE: [Compiled strategies]).

    Cost: the first call compiles (seconds, noted as ``compile_s``); then one forward and m
    VJPs batched by vmap, as fused kernels; memory: m times the backward intermediates,
    less what fusion avoids materialising.
    """
    return _run_compiled("jacrev", fn, inputs, lambda f, k: torch.func.jacrev(f, argnums=_all(k)))


@register("jacfwd-compiled", "forward", needs=("torch.func", "torch.compile"), tier=2, prepares=True)
def jacfwd_compiled(fn, inputs, create_graph=False):
    """``torch.compile(torch.func.jacfwd(fn, argnums=all))(*inputs)`` (NOTE: [Compiled strategies]).

    Cost: the first call compiles (seconds, noted as ``compile_s``); then N JVPs batched by
    vmap in one forward pass, as fused kernels; memory: N times the forward intermediates.
    """
    return _run_compiled("jacfwd", fn, inputs, lambda f, k: torch.func.jacfwd(f, argnums=_all(k)))


@register("vmap-jacrev-compiled", "reverse", kinds={"batched"}, needs=("torch.func", "torch.compile"), tier=2,
          prepares=True)
def vmap_jacrev_compiled(fn, inputs, create_graph=False):
    """``torch.compile(vmap(jacrev(f_single)))(X)``: per-sample Jacobians [B, m, n], compiled.

    Cost: the first call compiles (seconds, noted as ``compile_s``); then B*m VJPs in one
    vmapped pass, as fused kernels; memory: B*m times one sample's backward intermediates.
    """
    if len(inputs) != 1:
        raise Unsupported("vmap-jacrev-compiled takes one batched input")
    return _run_compiled("vmap-jacrev", fn, inputs,
                         lambda f, k: (lambda x: (torch.func.vmap(torch.func.jacrev(_single(f)))(x),)))

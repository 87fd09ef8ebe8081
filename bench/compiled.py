"""Compiled, chunked and CUDA-graph strategies: the textbook transforms, run differently.

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

    The work counts (``bench.work``) of a compiled or graphed strategy are taken on its
    eager equivalent: compiling fuses kernels, it does not change how many products of
    which kind are formed, and the counting probe cannot see inside compiled kernels.

NOTE: [Chunked strategies]
    ``jacrev-chunk{K}`` is ``jacrev(..., chunk_size=K)``: the m VJPs are vmapped K at a time,
    so the backward intermediates of K cotangents, not m, are alive at once; K = 1 is a loop
    and K >= m is plain ``jacrev``. ``jacfwd-chunk{K}`` does the same for the N JVPs of
    forward mode (``vmap(jvp)`` over K rows of the identity at a time; ``jacfwd`` does it
    over all N rows at once). Like ``jacrev``'s, its chunks of the basis are made one at a
    time: an N x N identity would be a memory cost of its own (23.6 GB at N = 76810).
    Sizes where one chunk holds everything are ``unsupported`` (the row would
    duplicate ``jacrev``/``jacfwd``). Across K the rows trace a memory/time curve.

NOTE: [CUDA graphs]
    ``jacrev-cudagraph`` and ``jacfwd-cudagraph`` capture the vectorized transform once per
    (function, input signature) in a ``torch.cuda.CUDAGraph`` and replay it: each call
    copies the inputs into the captured buffers, replays every kernel with one launch, and
    clones the captured outputs (the next replay overwrites them). This removes the Python
    and launch overhead that dominates small problems on a GPU; it cannot help a large
    one. CUDA only: elsewhere the pair is ``unsupported``.
"""

from __future__ import annotations

import inspect
import itertools
import math
import re
import time
import types
from collections import OrderedDict

import torch

from . import work
from .strategies import Unsupported, note, register

# --- a cache that lives on the function --------------------------------------------------

_MEMO_ATTR = "_jacbench_memo"
_FALLBACK: "OrderedDict[int, tuple[object, dict]]" = OrderedDict()
_FALLBACK_SIZE = 8


class _Memo(dict):
    """A per-function cache stored as an attribute of the function. Copies of the function
    (``copy.deepcopy`` of a module, pickling) start with an empty one: compiled code and
    captured graphs are never copied."""

    def __deepcopy__(self, memo):
        return type(self)()

    def __copy__(self):
        return type(self)()

    def __reduce__(self):
        return (type(self), ())


def memo(fn, namespace: str) -> dict:
    """A dict private to ``namespace`` that lives as long as ``fn`` does.

    Stored on ``fn`` itself, so cycles through it (a compiled function that calls ``fn``)
    are collected with ``fn``. A bound method stores it on its object, per method. Objects
    that take no attributes fall back to a small table of the most recent ones, which
    keeps them alive until they drop out of it.
    """
    holder, sub = fn, namespace
    if inspect.ismethod(fn):
        holder, sub = fn.__self__, (namespace, fn.__func__)
    try:
        store = holder.__dict__.get(_MEMO_ATTR)
        if store is None:
            store = _Memo()
            setattr(holder, _MEMO_ATTR, store)
        return store.setdefault(sub, {})
    except (AttributeError, TypeError):
        key = id(holder)
        entry = _FALLBACK.get(key)
        if entry is None or entry[0] is not holder:
            entry = _FALLBACK[key] = (holder, {})
            while len(_FALLBACK) > _FALLBACK_SIZE:
                _FALLBACK.popitem(last=False)
        _FALLBACK.move_to_end(key)
        return entry[1].setdefault(sub, {})


def signature(inputs) -> tuple:
    """What a compiled or captured function is specialised on."""
    return tuple((tuple(x.shape), x.dtype, x.device, x.requires_grad) for x in inputs)


def probing() -> bool:
    """True while ``bench.work`` counts a call (the function is then wrapped in its probe)."""
    return bool(work.counting())


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
    """``fn`` on one sample of a batch: ``fn(x[None])[0]`` (as ``bench.persample`` does)."""
    return lambda x: fn(x.unsqueeze(0)).squeeze(0)


@register("jacrev-compiled", "reverse", needs=("torch.func", "torch.compile"), tier=2)
def jacrev_compiled(fn, inputs, create_graph=False):
    """``torch.compile(torch.func.jacrev(fn, argnums=all))(*inputs)`` (NOTE: [Compiled strategies]).

    Cost: the first call compiles (seconds, noted as ``compile_s``); then one forward and m
    VJPs batched by vmap, as fused kernels; memory: m times the backward intermediates,
    less what fusion avoids materialising.
    """
    return _run_compiled("jacrev", fn, inputs, lambda f, k: torch.func.jacrev(f, argnums=_all(k)))


@register("jacfwd-compiled", "forward", needs=("torch.func", "torch.compile"), tier=2)
def jacfwd_compiled(fn, inputs, create_graph=False):
    """``torch.compile(torch.func.jacfwd(fn, argnums=all))(*inputs)`` (NOTE: [Compiled strategies]).

    Cost: the first call compiles (seconds, noted as ``compile_s``); then N JVPs batched by
    vmap in one forward pass, as fused kernels; memory: N times the forward intermediates.
    """
    return _run_compiled("jacfwd", fn, inputs, lambda f, k: torch.func.jacfwd(f, argnums=_all(k)))


@register("vmap-jacrev-compiled", "reverse", kinds={"batched"}, needs=("torch.func", "torch.compile"), tier=2)
def vmap_jacrev_compiled(fn, inputs, create_graph=False):
    """``torch.compile(vmap(jacrev(f_single)))(X)``: per-sample Jacobians [B, m, n], compiled.

    Cost: the first call compiles (seconds, noted as ``compile_s``); then B*m VJPs in one
    vmapped pass, as fused kernels; memory: B*m times one sample's backward intermediates.
    """
    if len(inputs) != 1:
        raise Unsupported("vmap-jacrev-compiled takes one batched input")
    return _run_compiled("vmap-jacrev", fn, inputs,
                         lambda f, k: (lambda x: (torch.func.vmap(torch.func.jacrev(_single(f)))(x),)))


# --- chunked -------------------------------------------------------------------------------

#: chunk sizes swept, and the tier of each. All are in the full profile: a chunked Jacobian is a
#: loop of ceil(m / K) (or N / K) passes, which a CPU standard sweep cannot afford on every
#: problem (measured: ~20 minutes for K = 16 alone across the standard problems at 2 threads).
CHUNKS: dict[int, int] = {1: 2, 4: 2, 16: 2, 64: 2, 256: 2}


def _output_size(fn, inputs) -> int:
    """m, from one evaluation on the first call of this signature (cached on ``fn``)."""
    cache = memo(fn, "chunked")
    key = signature(inputs)
    if key not in cache:
        with torch.no_grad():
            cache[key] = fn(*inputs).numel()
    return cache[key]


def _jacrev_chunked(k: int):
    def compute(fn, inputs, create_graph=False):
        m = _output_size(fn, inputs)
        if k >= m:
            raise Unsupported(f"chunk_size {k} >= m = {m}: one chunk, the same computation as jacrev")
        note(chunk_size=k, chunks=math.ceil(m / k))
        return torch.func.jacrev(fn, argnums=_all(len(inputs)), chunk_size=k)(*inputs)

    compute.__doc__ = f"""``torch.func.jacrev(fn, argnums=all, chunk_size={k})(*inputs)`` (NOTE: [Chunked strategies]).

    Cost: one forward, then m VJPs vmapped {k} at a time, ceil(m / {k}) backward passes;
    memory: {k} times the backward intermediates instead of m times. Unsupported where
    m <= {k}.
    """
    return compute


def _basis_rows(start: int, stop: int, like: torch.Tensor) -> torch.Tensor:
    """Rows start..stop-1 of the N x N identity, N = like.numel()."""
    rows = like.new_zeros(stop - start, like.numel())
    rows.diagonal(start).fill_(1)
    return rows


def _jacfwd_chunked(k: int):
    def compute(fn, inputs, create_graph=False):
        n = sum(x.numel() for x in inputs)
        if k >= n:
            raise Unsupported(f"chunk_size {k} >= N = {n}: one chunk, the same computation as jacfwd")
        note(chunk_size=k, chunks=math.ceil(n / k))
        flat = torch.cat([x.reshape(-1) for x in inputs])
        sizes = [x.numel() for x in inputs]

        def g(v):
            return fn(*(p.reshape(x.shape) for p, x in zip(torch.split(v, sizes), inputs)))

        def column(t):
            return torch.func.jvp(g, (flat,), (t,))[1]

        # A chunk's rows of the identity at a time, as jacrev's chunk_size does: never all N x N.
        cols = torch.cat([torch.func.vmap(column)(_basis_rows(start, min(start + k, n), flat))
                          for start in range(0, n, k)])  # (N, *out)
        out_shape = cols.shape[1:]
        mat = cols.reshape(n, -1).T
        return tuple(p.reshape(out_shape + x.shape) for p, x in zip(torch.split(mat, sizes, dim=1), inputs))

    compute.__doc__ = f"""``vmap(jvp)`` over {k} rows of the identity at a time: ``jacfwd`` {k} columns at a time (NOTE: [Chunked strategies]).

    Cost: ceil(N / {k}) forward passes of {k} tangents each; memory: {k} times the forward
    intermediates instead of N times, and {k} rows of the basis instead of N x N. Unsupported
    where N <= {k}.
    """
    return compute


for _k, _tier in CHUNKS.items():
    register(f"jacrev-chunk{_k}", "reverse", needs=("torch.func", "chunk_size"), tier=_tier)(_jacrev_chunked(_k))
    register(f"jacfwd-chunk{_k}", "forward", needs=("torch.func",), tier=_tier)(_jacfwd_chunked(_k))


# --- CUDA graphs ---------------------------------------------------------------------------


def _graphed(variant: str, fn, inputs, make):
    devices = {x.device.type for x in inputs}
    if devices != {"cuda"}:
        raise Unsupported(f"CUDA graphs need CUDA tensors; the inputs are on {', '.join(sorted(devices))}")
    target = make(fn, len(inputs))
    if probing():
        return target(*inputs)
    cache = memo(fn, "cudagraph")
    key = (variant, signature(inputs))
    entry = cache.get(key)
    if entry is None:
        static_in = tuple(x.detach().clone() for x in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the capture: lazy inits, cuBLAS workspaces
                target(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static_out = tuple(target(*static_in))
        except Exception as exc:  # noqa: BLE001 - a function that cannot be captured
            torch.cuda.synchronize()
            text = (str(exc).strip().splitlines() or [""])[0]
            raise Unsupported(f"cannot be captured in a CUDA graph: {type(exc).__name__}: {text}"[:300]) from None
        entry = cache[key] = (graph, static_in, static_out)
        note(captured=variant, graph_nodes=_nodes(graph))
    graph, static_in, static_out = entry
    for buf, x in zip(static_in, inputs):
        buf.copy_(x)
    graph.replay()
    return tuple(o.clone() for o in static_out)


def _nodes(graph) -> int | None:
    try:
        return int(graph.num_nodes()) if hasattr(graph, "num_nodes") else None
    except Exception:  # noqa: BLE001 - informational only
        return None


@register("jacrev-cudagraph", "reverse", needs=("torch.func",), tier=1, devices=("cuda",))
def jacrev_cudagraph(fn, inputs, create_graph=False):
    """``jacrev`` captured once in a CUDA graph and replayed (NOTE: [CUDA graphs]). CUDA only.

    Cost: one graph replay (one launch for every kernel of a forward and m batched VJPs) plus
    copying the inputs in and the Jacobian out; memory: the graph's private pool holds the
    intermediates of one call for as long as the function lives. For small, launch-bound
    problems.
    """
    return _graphed("jacrev", fn, inputs, lambda f, k: torch.func.jacrev(f, argnums=_all(k)))


@register("jacfwd-cudagraph", "forward", needs=("torch.func",), tier=1, devices=("cuda",))
def jacfwd_cudagraph(fn, inputs, create_graph=False):
    """``jacfwd`` captured once in a CUDA graph and replayed (NOTE: [CUDA graphs]). CUDA only.

    Cost: one graph replay (one launch for every kernel of N batched JVPs) plus copying the
    inputs in and the Jacobian out; memory: the graph's private pool holds the intermediates
    of one call for as long as the function lives. For small, launch-bound problems.
    """
    return _graphed("jacfwd", fn, inputs, lambda f, k: torch.func.jacfwd(f, argnums=_all(k)))


"""CUDA-graph strategies: the vectorized transforms captured once and replayed.

NOTE: [CUDA graphs]
    ``jacrev-cudagraph`` and ``jacfwd-cudagraph`` capture the vectorized transform once per
    (function, input signature) in a ``torch.cuda.CUDAGraph`` and replay it: each call
    copies the inputs into the captured buffers, replays every kernel with one launch, and
    clones the captured outputs (the next replay overwrites them). This removes the Python
    and launch overhead that dominates small problems on a GPU; it cannot help a large
    one. CUDA only: elsewhere the pair is ``unsupported``.
"""

from __future__ import annotations

import torch

from bench.strategies.memo import memo, signature
from bench.strategies.registry import Unsupported, note, probing, register


def _all(k: int) -> tuple[int, ...]:
    return tuple(range(k))


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


@register("jacrev-cudagraph", "reverse", needs=("torch.func",), tier=1, devices=("cuda",), prepares=True)
def jacrev_cudagraph(fn, inputs, create_graph=False):
    """``jacrev`` captured once in a CUDA graph and replayed (NOTE: [CUDA graphs]). CUDA only.

    Cost: one graph replay (one launch for every kernel of a forward and m batched VJPs) plus
    copying the inputs in and the Jacobian out; memory: the graph's private pool holds the
    intermediates of one call for as long as the function lives. For small, launch-bound
    problems.
    """
    return _graphed("jacrev", fn, inputs, lambda f, k: torch.func.jacrev(f, argnums=_all(k)))


@register("jacfwd-cudagraph", "forward", needs=("torch.func",), tier=1, devices=("cuda",), prepares=True)
def jacfwd_cudagraph(fn, inputs, create_graph=False):
    """``jacfwd`` captured once in a CUDA graph and replayed (NOTE: [CUDA graphs]). CUDA only.

    Cost: one graph replay (one launch for every kernel of N batched JVPs) plus copying the
    inputs in and the Jacobian out; memory: the graph's private pool holds the intermediates
    of one call for as long as the function lives. For small, launch-bound problems.
    """
    return _graphed("jacfwd", fn, inputs, lambda f, k: torch.func.jacfwd(f, argnums=_all(k)))


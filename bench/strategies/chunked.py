"""Chunked strategies: the vectorized transforms K products at a time, trading time for memory.

NOTE: [Chunked strategies]
    ``jacrev-chunk{K}`` is ``jacrev(..., chunk_size=K)``: the m VJPs are vmapped K at a time,
    so the backward intermediates of K cotangents, not m, are alive at once; K = 1 is a loop
    and K >= m is plain ``jacrev``. ``jacfwd-chunk{K}`` does the same for the N JVPs of
    forward mode (``vmap(jvp)`` over K rows of the identity at a time; ``jacfwd`` does it
    over all N rows at once). Like ``jacrev``'s, its chunks of the basis are made one at a
    time: an N x N identity would be a memory cost of its own (23.6 GB at N = 76810).
    Sizes where one chunk holds everything are ``unsupported`` (the row would
    duplicate ``jacrev``/``jacfwd``). Across K the rows trace a memory/time curve.
"""

from __future__ import annotations

import math

import torch

from bench.strategies.memo import memo, signature
from bench.strategies.registry import Unsupported, note, register

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
        return torch.func.jacrev(fn, argnums=tuple(range(len(inputs))), chunk_size=k)(*inputs)

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

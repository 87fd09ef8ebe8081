"""Peak memory of one call, above what was allocated before it.

CUDA: the caching allocator's own statistics. ``reset_peak_memory_stats`` then one call,
synchronized; the peak of ``memory_allocated`` minus its value before the call. This counts
every tensor the call allocates on the device, its result included, but not the allocator's
cached free blocks or workspace that libraries (cuBLAS, cuDNN) take outside it.

CPU: the profiler's memory events (``profile_memory=True``). Every allocation and free of
the CPU tensor allocator is an event with a size and a time; the running sum of those
events, in time order, peaks at the high-water mark of tensor memory during the call. This
sees tensors only: Python objects, allocator-internal caches and the scratch buffers of
BLAS/oneDNN are invisible to it. Profiling slows the call, so this call is never timed.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import torch


def peak_bytes(call: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated by ``call`` above the level before it; None if unmeasurable."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = call()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del result
        return int(peak)
    if device.type == "cpu":
        return _cpu_peak(call)
    return None


def _cpu_peak(call) -> int | None:
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = call()
    del result
    events = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if events is None:
        return None
    sizes = [(e.start_ns(), e.nbytes()) for e in events.events() if e.name() == "[memory]"]
    level = peak = 0
    for _, nbytes in sorted(sizes, key=lambda t: t[0]):
        level += nbytes
        peak = max(peak, level)
    return int(peak)


@contextlib.contextmanager
def quiet_stderr():
    """Silence the C++ side's stderr (the profiler logs its start and stop there)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def release(device: torch.device) -> None:
    """Give cached memory back after a failure (an OOM above all) so the next pair starts clean."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()

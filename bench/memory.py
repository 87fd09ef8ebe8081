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
Recording costs memory per op, about 20 kB: a call of millions of small ops (an LSTM's
Jacobian one row at a time) would need tens of GB for its events. So the recording may take
only a share of the memory available; a call that outgrows it is stopped and its peak is
reported as not measured, the call itself being fine.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import threading
from typing import Callable

import torch


PROFILER_SHARE = 0.5  # of the memory available: what recording one call on the CPU may take
# The recording holds about 2 kB per op while the call runs; stopping the profiler expands it
# to about 20 kB per op (measured on torch 2.13), with no Python running to interrupt it.
EXPANSION = 12


class Unmeasurable(Exception):
    """The peak of this call cannot be measured; the message says why, in one line."""


def peak_bytes(call: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated by ``call`` above the level before it; None on a device without
    a way to measure it. Raises :class:`Unmeasurable` where measuring it would take more
    memory than the machine can spare."""
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

    try:
        budget = int(PROFILER_SHARE * proc_bytes("/proc/meminfo", "MemAvailable") / EXPANSION)
    except (OSError, KeyError, ValueError):
        budget = None  # not Linux: no way to watch the recording grow
    over = False
    try:
        with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            within(budget, call)  # its result is dropped at once
        events = getattr(getattr(prof, "profiler", None), "kineto_results", None)
        sizes = None if events is None else [(e.start_ns(), e.nbytes()) for e in events.events() if e.name() == "[memory]"]
    except OverBudget:
        over = True
    finally:
        prof = events = None
        _give_back_heap()  # the recording took GBs, maybe: return them before the call is timed
    if over:
        raise Unmeasurable("peak memory not measured: recording every op of this call took more memory than "
                           f"the profiler may use ({PROFILER_SHARE:.0%} of what was available)")
    if sizes is None:
        return None
    level = peak = 0
    for _, nbytes in sorted(sizes, key=lambda t: t[0]):
        level += nbytes
        peak = max(peak, level)
    return int(peak)


class OverBudget(Exception):
    """Raised into a call that grew this process's memory past its budget."""


def within(budget: int | None, call: Callable[[], object], poll: float = 0.05):
    """``call()``, stopped with :class:`OverBudget` at its next line of Python once this
    process's resident memory has grown by more than ``budget`` bytes since it began.

    A watcher thread polls the resident size and raises the exception into this thread; the
    lock makes sure it lands inside the call or not at all. The calls that outgrow a budget
    (millions of small ops) run Python between their ops, so it lands within one poll."""
    if budget is None:
        return call()
    _give_back_heap()
    target, start = ctypes.c_ulong(threading.get_ident()), _resident()
    lock, stop = threading.Lock(), threading.Event()

    def watch():
        while not stop.wait(poll):
            if _resident() - start > budget:
                with lock:
                    if not stop.is_set():
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(OverBudget))
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        return call()
    finally:
        with lock:
            stop.set()
            ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)  # withdraw one not yet landed
        watcher.join()


def _give_back_heap() -> None:
    """Free what is garbage and give the heap's free pages back to the system (glibc): the
    resident size then grows with what a call allocates, not into pages freed before it."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def is_oom(exc: BaseException) -> bool:
    """An allocation that failed: torch's own error, or C++'s ``std::bad_alloc`` (MemoryError)."""
    oom_type = getattr(torch, "OutOfMemoryError", getattr(torch.cuda, "OutOfMemoryError", ()))
    text = str(exc).lower()
    return isinstance(exc, (MemoryError, oom_type)) or "out of memory" in text or "can't allocate memory" in text


def proc_bytes(path: str, key: str) -> int:
    """A size in kB from a Linux ``/proc`` file (``MemAvailable``, ``VmSize``, ...), in bytes."""
    with open(path) as f:
        return int(dict(line.split(":", 1) for line in f)[key].split()[0]) * 1024


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

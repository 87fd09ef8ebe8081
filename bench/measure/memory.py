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
only a share of the memory available, on top of what the call itself takes unprofiled; a
call that outgrows it is stopped and its peak is reported as not measured, the call itself
being fine. So is a call during whose recording an allocation fails (the watcher samples
resident memory every few ms; an allocation can outrun it, or hit the address-space cap of
a CPU sweep). Being stopped part-way may leave torch's state half-unwound, so the sweep then
goes on in a fresh process.
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


def peak_bytes(call: Callable[[], object], device: torch.device, grown: int | None = None) -> int | None:
    """Peak bytes allocated by ``call`` above the level before it; None on a device without
    a way to measure it. Raises :class:`Unmeasurable` where measuring it would take more
    memory than the machine can spare. On the CPU, ``grown`` is how far the process's
    resident memory grew in one unprofiled call (:func:`watched`), where an earlier probe
    of the call measured it; otherwise one more call measures it."""
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
        return _cpu_peak(call, grown)
    return None


def _cpu_peak(call, grown: int | None) -> int | None:
    from torch.profiler import ProfilerActivity, profile

    try:
        available = proc_bytes("/proc/meminfo", "MemAvailable")
    except (OSError, KeyError, ValueError):
        available = None  # not Linux: no way to watch the recording grow
    if available is not None:
        own = watched(call)[1] if grown is None else grown
        budget = own + int(PROFILER_SHARE * available / EXPANSION)  # its own, then the recording's
    try:
        with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            call() if available is None else watched(call, budget)  # the result is dropped at once
        events = getattr(getattr(prof, "profiler", None), "kineto_results", None)
        if events is None:
            return None
        sizes = [(e.start_ns(), e.nbytes()) for e in events.events() if e.name() == "[memory]"]
    except BaseException as exc:  # noqa: BLE001 - re-raised unless the recording is what did not fit
        if not isinstance(exc, OverBudget) and not is_oom(exc):
            raise
        prof = None
        spoil()
        _give_back_heap()  # the recording took GBs: return them to the system
        why = (f"recording every op of this call took more memory than the profiler may use ({PROFILER_SHARE:.0%} "
               "of what was available)" if isinstance(exc, OverBudget) else
               f"an allocation failed while the profiler recorded this call ({type(exc).__name__})")
        raise Unmeasurable(f"peak memory not measured: {why}") from None
    level = peak = 0
    for _, nbytes in sorted(sizes, key=lambda t: t[0]):
        level += nbytes
        peak = max(peak, level)
    return int(peak)


_spoiled = [False]


def spoil() -> None:
    """Mark this process as one that may no longer measure truly, so the sweep goes on in a
    fresh one:

    - a call was stopped part-way: the context managers it was inside may not have run
      their exits (grad mode, a transform's level);
    - an allocation failed: what ran out may stay short (on the CPU, the address space), and
      what failed half-way may stay broken (a module import, a thread, a oneDNN primitive),
      so every later pair would fail for a reason of its own.
    """
    _spoiled[0] = True


def spoiled() -> bool:
    """Whether :func:`spoil` was called in this process."""
    return _spoiled[0]


class OverBudget(BaseException):
    """Raised into a call that grew this process's memory past its budget. A BaseException,
    like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""


def watched(call: Callable[[], object], budget: int | None = None, poll: float = 0.01) -> tuple[object, int]:
    """``call()`` and the most this process's resident memory grew during it (sampled every
    ``poll`` seconds). With a ``budget`` in bytes, the call is stopped with
    :class:`OverBudget` at its next line of Python once it has grown by more than that.

    A watcher thread polls the resident size and raises the exception into this thread; the
    lock makes sure it lands inside the call or not at all. The calls that outgrow a budget
    (millions of small ops) run Python between their ops, so it lands within a poll or two."""
    _give_back_heap(collect=False)
    target, start = ctypes.c_ulong(threading.get_ident()), _resident()
    lock, stop, grown = threading.Lock(), threading.Event(), [0]

    def watch():
        while not stop.wait(poll):
            grown[0] = max(grown[0], _resident() - start)
            if budget is not None and grown[0] > budget:
                with lock:
                    if not stop.is_set():
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(OverBudget))
                return  # once: a second one could land while the first unwinds, past this finally

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = call()
    finally:
        with lock:
            stop.set()
            ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)  # withdraw one not yet landed
        watcher.join()
    return result, max(grown[0], _resident() - start)


def _give_back_heap(collect: bool = True) -> None:
    """Give the heap's free pages back to the system (glibc), after freeing what is garbage
    if ``collect``: the resident size then grows with what a call allocates, not into pages
    freed before it."""
    if collect:
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

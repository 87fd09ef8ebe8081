"""Strategies that misbehave for real, for the sweep's robustness tests (``--plugin``).

Each is a real failure, not a simulation: a segfault through ctypes, a call that never
returns (the first, or every one after a right first), an allocation the CPU allocator
refuses, a slow but correct strategy, a correct one that waits until the test lets it go
on, and a correct one of too many ops to profile (with JACBENCH_TEST_PROFILER_MB, the MB its
recording may take while it runs). The correct ones note the process they ran in.
"""

import ctypes
import os
import time
import weakref

import torch

from bench import strategies
from bench.measure import memory

if os.environ.get("JACBENCH_TEST_PROFILER_MB"):
    available = memory.proc_bytes("/proc/meminfo", "MemAvailable")
    memory.PROFILER_SHARE = memory.EXPANSION * float(os.environ["JACBENCH_TEST_PROFILER_MB"]) * 2**20 / available


def _crash(fn, inputs, create_graph=False):
    """Cost: a segfault."""
    ctypes.string_at(0)


def _hang(fn, inputs, create_graph=False):
    """Cost: forever."""
    while True:
        time.sleep(1)


_first_call_done = False


def _hang_after_first_call(fn, inputs, create_graph=False):
    """Cost: one right jacrev, then forever: a pair that passes the gate and hangs while timed."""
    global _first_call_done
    if _first_call_done:
        _hang(fn, inputs)
    _first_call_done = True
    return strategies.textbook.jacrev(fn, inputs)


def _cpu_oom(fn, inputs, create_graph=False):
    """Cost: an allocation of 2^50 bytes, which the CPU allocator refuses."""
    torch.empty(2**48, dtype=torch.float32)


def _slow(fn, inputs, create_graph=False):
    """Cost: one jacrev after a pause (JACBENCH_TEST_DELAY seconds, 0.05 by default): a pair
    slower than a brief visit's time cap."""
    time.sleep(float(os.environ.get("JACBENCH_TEST_DELAY", "0.05")))
    strategies.note(pid=os.getpid())
    return strategies.textbook.jacrev(fn, inputs)


_problems_held: list[weakref.ref] = []  # the inputs of each problem test-held was called on in this process


def _held(fn, inputs, create_graph=False):
    """Cost: one jacrev, once the file JACBENCH_TEST_HOLD names is gone: a test holds a sweep
    in this pair for as long as it needs (``tests.conftest.Hold``), then lets it go on. With
    JACBENCH_TEST_HOLD_FROM=k, only from the k-th problem the process calls it on (a problem
    is known by its built inputs, the same objects in every call): the problems before it
    are measured, and journaled, first."""
    if not any(seen() is inputs[0] for seen in _problems_held):
        _problems_held.append(weakref.ref(inputs[0]))
    hold = os.environ.get("JACBENCH_TEST_HOLD")
    while hold and len(_problems_held) >= int(os.environ.get("JACBENCH_TEST_HOLD_FROM", "1")) and os.path.exists(hold):
        time.sleep(0.01)
    strategies.note(pid=os.getpid())
    return strategies.textbook.jacrev(fn, inputs)


def _many_ops(fn, inputs, create_graph=False):
    """Cost: 30,000 tiny ops, over 12 MB of profiler recording."""
    t = torch.zeros(())
    for _ in range(30_000):
        t = t + 1
    strategies.note(pid=os.getpid())
    return strategies.textbook.jacrev(fn, inputs)


for name, compute in [("test-crash", _crash), ("test-hang", _hang), ("test-hang-later", _hang_after_first_call),
                      ("test-oom", _cpu_oom), ("test-slow", _slow), ("test-held", _held),
                      ("test-many-ops", _many_ops)]:
    if name not in strategies.STRATEGIES:
        strategies.register(name, "reverse")(compute)

"""Strategies that misbehave for real, for the sweep's robustness tests (``--plugin``).

Each is a real failure, not a simulation: a segfault through ctypes, a call that never
returns, an allocation the CPU allocator refuses, and a slow but correct strategy.
"""

import ctypes
import os
import time

import torch

from bench import strategies


def _crash(fn, inputs, create_graph=False):
    """Cost: a segfault."""
    ctypes.string_at(0)


def _hang(fn, inputs, create_graph=False):
    """Cost: forever."""
    while True:
        time.sleep(1)


def _cpu_oom(fn, inputs, create_graph=False):
    """Cost: an allocation of 2^50 bytes, which the CPU allocator refuses."""
    torch.empty(2**48, dtype=torch.float32)


def _slow(fn, inputs, create_graph=False):
    """Cost: one jacrev after a pause (JACBENCH_TEST_DELAY seconds), so a sweep can be killed mid-way."""
    time.sleep(float(os.environ.get("JACBENCH_TEST_DELAY", "0.05")))
    return strategies.jacrev(fn, inputs)


for name, compute in [("test-crash", _crash), ("test-hang", _hang), ("test-oom", _cpu_oom), ("test-slow", _slow)]:
    if name not in strategies.STRATEGIES:
        strategies.register(name, "reverse")(compute)

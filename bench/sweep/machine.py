"""The environment a run measured in, and the machine's own ceilings.

``describe`` feeds pytest-benchmark's machine-info hook, so every results file carries the
torch, CUDA and cuDNN versions, the device and CPU, the thread count and the git commit.
``ceilings`` measures, once per run and device, the matrix-multiply FLOP/s and the memory
bandwidth that rows are compared against (their roofline).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from bench.analysis.schema import host

ROOT = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def git_commit() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)

    try:
        rev = git("rev-parse", "HEAD")
        if rev.returncode != 0:
            return {"id": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"id": rev.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"id": None, "dirty": None}


def machine_name() -> str:
    """``JACBENCH_MACHINE``, else in a SLURM job its cluster and partition (a partition is one
    kind of machine, and the name holds when a resumed task lands on another of its hosts),
    else the host's short name."""
    partition = os.environ.get("SLURM_JOB_PARTITION")
    in_slurm = f"{os.environ.get('SLURM_CLUSTER_NAME', 'slurm')}-{partition}" if partition else None
    return os.environ.get("JACBENCH_MACHINE") or in_slurm or host()


def describe(device: str) -> dict:
    """The environment of a run on ``device``, as stored under ``machine_info['jacbench']``."""
    cuda = torch.version.cuda if torch.cuda.is_available() else None
    cudnn = torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None
    return {
        "machine": machine_name(),
        "torch": torch.__version__.split("+")[0],
        "torch_build": torch.__version__,
        "cuda": cuda,
        "cudnn": cudnn,
        "device": device,
        "device_kind": device_kind(device),
        "device_name": device_name(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "commit": git_commit(),
    }


def device_kind(device: str) -> str:
    """A short slug of the device for file names: ``cpu`` or e.g. ``cuda-h100``."""
    if not device.startswith("cuda"):
        return "cpu"
    words = [w for w in device_name(device).lower().replace("nvidia", "").split() if w.isalnum()]
    return "cuda-" + "-".join(words[:2]) if words else "cuda"


def ceilings(device: str, dtype: torch.dtype) -> dict:
    """Measured matmul FLOP/s in ``dtype`` and copy bandwidth in bytes/s on ``device``.

    The best of a few repetitions: a ceiling is what the machine can do, not what it did
    on average. Sizes are large enough to leave launch and Python overhead behind.
    """
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    size = 4096 if dev.type == "cuda" else 1024
    a = torch.randn(size, size, device=dev, dtype=dtype)
    b = torch.randn(size, size, device=dev, dtype=dtype)
    buf = torch.empty(64 * 2**20 // 4, device=dev, dtype=torch.float32)

    def best(fn, reps=5) -> float:
        fn()
        sync()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return min(times)

    t_mm = best(lambda: a @ b)
    t_copy = best(lambda: buf.clone())
    return {
        "matmul_flops": 2 * size**3 / t_mm,
        "bandwidth": 2 * buf.numel() * buf.element_size() / t_copy,  # read + write
        "dtype": str(dtype).removeprefix("torch."),
    }


def cpus() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_threads() -> int:
    """Torch threads for a CPU sweep or ``advise``: one CPU fewer than this process may use.

    Measured on a 2-core machine (docs/timing.md, "Threads"): on a quiet machine 2 threads and 1 ran
    within 0.82-1.22x of each other (geometric mean 1.0); beside one other busy process, 2
    threads were 1.1-2.8x slower than 1 (a parallel op waits for its descheduled thread),
    while 1 thread lost at most a third. The CPU left free takes the runner, the system and
    a neighbour's process."""
    return max(1, cpus() - 1)


def devices(choice: str) -> list[str]:
    import torch

    have_cuda = torch.cuda.is_available()
    if choice == "cuda" and not have_cuda:
        raise ValueError(f"CUDA is not available here (torch {torch.__version__}, no GPU visible); use --device cpu")
    if choice == "all":
        return ["cpu"] + (["cuda"] if have_cuda else [])
    return [choice]

"""Shared fixtures: the CLI as a user runs it, a real tiny sweep, temporary registrations."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from bench.analysis.schema import Row
from bench.measure.pair import measure
from bench.measure.timing import Policy
from bench.sweep.plan import Pair, Settings

ROOT = Path(__file__).resolve().parent.parent

#: Timing that exercises the machinery in the least time: tests check outcomes, never times.
QUICK = Settings(profile="quick", policy=Policy(warmup=0, min_rounds=2, max_time=0.01))
#: The statuses of a pair that passed the gate and was timed: ``disturbed`` is the machine's
#: doing, not the pair's, so a test that is not about the load accepts either (CI machines are busy).
TIMED = frozenset({"ok", "disturbed"})
#: The same, as the advisor's settings.
ADVISE = Settings(profile="advise", policy=Policy(warmup=0, min_rounds=3, max_time=0.02))

TINY_CASES = "seed-article,seed-article-multi,seed-linear,graph-break-powers,mlp-in128-out128-w64-d1"
TINY_STRATEGIES = "manual-backward,functional,jacrev,jacfwd,fd-forward,fd-forward-loop"


def run_cli(*args, timeout=600, check=False, **kw) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` in a child process, as a user would run ``jacbench``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JACBENCH_MACHINE": "testbox", **kw.pop("env", {})}
    proc = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=kw.pop("cwd", ROOT), env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"jacbench {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_in_terminal(*args, columns: int = 80, timeout: float = 600, cwd=ROOT) -> str:
    """``python -m bench ARGS`` on a real pseudo-terminal ``columns`` wide: what a user at a
    terminal sees, with its escape sequences."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(PYTHONPATH=str(ROOT), JACBENCH_MACHINE="testbox", TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, env=env, stdin=slave,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
    finally:
        proc.kill() if proc.poll() is None else None
        proc.wait()
        os.close(master)
    assert proc.returncode == 0, f"jacbench {' '.join(map(str, args))} failed ({proc.returncode}):\n{out[-3000:]}"
    return out.decode(errors="replace")


def screen_lines(text: str) -> list[str]:
    """What each write to the terminal puts on one line: the text between carriage returns and
    newlines, without escape sequences."""
    return [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", s) for s in re.split(r"\r?\n|\r", text)]


def wider(lines, columns: int) -> list[str]:
    """The lines wider than ``columns``, but for those that name a path: a path is never wrapped."""
    return [line for line in lines if len(line) > columns and "/" not in line]


def measured(problem: str, strategy: str, dtype: str = "float32", device: str = "cpu") -> Row:
    """One registered pair, gated and measured with :data:`QUICK` timing."""
    return measure(Pair(device, dtype, problem, strategy), QUICK)


def checked(problem: str, strategy: str, dtype: str = "float32", device: str = "cpu") -> Row:
    """:func:`measured`, which must have passed the gate and been timed."""
    row = measured(problem, strategy, dtype, device)
    assert row.status == "ok", (problem, strategy, row.status, row.reason)
    assert row.error <= row.tolerance
    return row


@contextlib.contextmanager
def burning(processes: int = 2, seconds: float = 30.0):
    """Processes that keep a CPU each busy until the block ends (or ``seconds`` pass, should
    the test die first): a real disturbance for the timings taken meanwhile."""
    burn = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(processes)]
    try:
        time.sleep(0.3)  # the interpreters are up and burning
        yield
    finally:
        for p in burners:
            p.kill()
            p.wait()


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory) -> Path:
    """A real sweep of a few problems and strategies through the CLI; its results file."""
    out = tmp_path_factory.mktemp("results")
    run_cli("run", "--profile", "quick", "--device", "cpu", "--cases", TINY_CASES,
            "--strategies", TINY_STRATEGIES, "--results-dir", out, check=True)
    files = list(out.glob("*.json"))
    assert len(files) == 1, files
    return files[0]


@pytest.fixture
def temporary_strategy():
    """Register strategies for one test, and remove them afterwards."""
    from bench import strategies

    added = []

    def add(name, compute, **kw):
        strategies.register(name, kw.pop("mode", "reverse"), **kw)(compute)
        added.append(name)
        return strategies.get(name)

    yield add
    for name in added:
        strategies.STRATEGIES.pop(name, None)


@pytest.fixture
def temporary_problem():
    """Register problems for one test, and remove them afterwards."""
    from cases import registry

    added = []

    def add(problem):
        registry.register(problem)
        added.append(problem.name)
        return problem

    yield add
    for name in added:
        registry._PROBLEMS.pop(name, None)

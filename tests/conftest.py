"""Shared fixtures: the CLI as a user runs it, a real tiny sweep, temporary registrations,
and the rules that let the suite run in parallel (``make test`` runs it under pytest-xdist).

NOTE: [Tests in parallel]
    ``make test`` runs the tests in three worker processes on the 2-core machine (``-n 3
    --dist loadgroup``): much of a test's time is its child processes starting (importing
    torch) or waiting for one another, and another worker's test uses the CPU meanwhile.
    From a fresh clone, the whole suite took 23 min in one process and under 10 in three.
    Four rules keep that safe:

    * A test that disturbs the machine or whose verdict hangs on the load (CPU burners,
      visits counted as disturbed) is marked ``alone``: it waits until the tests running
      beside it end, and none starts beside it until it ends (:func:`_room`, a pair of file
      locks that every test passes through). They are collected last, so that they run
      after the rest rather than drain the workers in the middle of the run; the ``slow``
      ones first, so that the run does not end on one long test.
    * What is expensive to make is made once per test run, by whichever worker asks first,
      and shared (:func:`made_once`): the tiny sweep, the killed run. A module whose
      module-scoped fixtures hold a real sweep or a browser is one ``xdist_group``, run by
      one worker, so the fixture is made once; so are the SLURM tests (one cluster per run).
    * Sweeps time as little as their checks need (:data:`LEAST`, passed by :func:`run_cli`):
      no warm-up, brief rounds, and no pass timing disturbed pairs again, since the other
      workers' load would disturb them. A test of the timing passes asks for its own timing,
      and a test of a sweep's outcome accepts ``disturbed`` beside ``ok`` (:data:`TIMED`).
    * No test waits for a guessed time: a sweep to be stopped part-way is held in a pair
      (:class:`Hold`) until the test has done what it tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest
import torch

from bench.analysis.schema import Row
from bench.measure.pair import measure
from bench.measure.timing import Policy
from bench.analysis.schema import Pair
from bench.measure.pair import Settings

ROOT = Path(__file__).resolve().parent.parent

#: Timing that exercises the machinery in the least time: tests check outcomes, never times.
QUICK = Settings(profile="quick", policy=Policy(warmup=0, min_rounds=2, max_time=0.01))
#: The statuses of a pair that passed the gate and was timed: ``disturbed`` is the machine's
#: doing, not the pair's, so a test that is not about the load accepts either (CI machines are busy).
TIMED = frozenset({"ok", "disturbed"})
#: The same, as the advisor's settings.
ADVISE = Settings(profile="advise", policy=Policy(warmup=0, min_rounds=3, max_time=0.02))
#: How the advisor's warnings about the machine's load begin: a busy CI machine may say them.
LOAD_WARNINGS = ("other work used", "timed while the machine was busy")


def about_f(warnings: list[str]) -> list[str]:
    """The advisor's warnings about the function and its measurement, less those about the load."""
    return [w for w in warnings if not w.startswith(LOAD_WARNINGS)]

TINY_CASES = "seed-article,seed-article-multi,seed-linear,graph-break-powers,mlp-in128-out128-w64-d1"
TINY_STRATEGIES = "manual-backward,functional,jacrev,jacfwd,fd-forward,fd-forward-loop"


#: The least timing a sweep's checks need (``--timing``): tests check outcomes, never times.
LEAST = "warmup=0,max_time=0.02,retimes=0"


def sweep_args(args) -> list[str]:
    """``args`` of a ``jacbench run``, ``matrix`` or ``advise``, with :data:`LEAST` timing
    unless they set a timing or resume a run (whose timing is its journal's); ``advise``,
    which times in one pass, without its ``retimes``."""
    args = [str(a) for a in args]
    if args[:1] in (["run"], ["matrix"], ["advise"]) and "--timing" not in args and "--resume" not in args:
        return [*args, "--timing", LEAST.replace(",retimes=0", "") if args[0] == "advise" else LEAST]
    return args


def run_cli(*args, timeout=600, check=False, **kw) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` in a child process, as a user would run ``jacbench``; a sweep
    with :data:`LEAST` timing unless it sets its own (:func:`sweep_args`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JACBENCH_MACHINE": "testbox", **kw.pop("env", {})}
    proc = subprocess.run([sys.executable, "-m", "bench", *sweep_args(args)], cwd=kw.pop("cwd", ROOT), env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"jacbench {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_main(*args) -> subprocess.CompletedProcess:
    """``jacbench ARGS`` through ``bench.cli.main`` in this process, as :func:`run_cli` would
    run it, less the seconds a fresh interpreter takes to import torch: for a command that
    stops at a one-line error before any work, and imports no ``--plugin`` (whose strategies
    would stay registered in this process). Its status, stdout and stderr."""
    from bench import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(sweep_args(args))
        except SystemExit as e:  # argparse's errors
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_in_terminal(*args, columns: int = 80, timeout: float = 600, cwd=ROOT) -> str:
    """``python -m bench ARGS`` on a real pseudo-terminal ``columns`` wide: what a user at a
    terminal sees, with its escape sequences."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(PYTHONPATH=str(ROOT), JACBENCH_MACHINE="testbox", TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "bench", *sweep_args(args)], cwd=cwd, env=env, stdin=slave,
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


class Hold:
    """A file that holds the strategy ``test-held`` (``tests/plugins/misbehaving.py``) in its
    calls while it exists: a sweep started with :attr:`env` waits there, for as long as the
    test needs to do what it tests, and goes on at full speed once :meth:`release` is called.
    Waiting on the test, not on a guess of how long is enough. A problem's pairs are journaled
    once the problem is measured (NOTE: [Paired timing]), so a test that needs pairs done
    before the held one holds from the second problem (``problem=2``)."""

    def __init__(self, path: Path, problem: int = 1):
        self.path, self.problem = Path(path), problem  # it holds from the problem-th a process measures
        self.path.touch()

    @property
    def env(self) -> dict:
        return {"JACBENCH_TEST_HOLD": str(self.path), "JACBENCH_TEST_HOLD_FROM": str(self.problem)}

    def hold(self) -> None:
        self.path.touch()

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def in_flight(journal: Path | None) -> str | None:
    """The pair a sweep's journal says is running now (started, with no result yet), or None."""
    if journal is None or not Path(journal).exists():
        return None
    current = None
    for line in Path(journal).read_text().splitlines()[1:]:
        try:
            entry = json.loads(line)
        except ValueError:  # a line being written
            break
        if entry.get("type") == "start":
            current = entry["pair"]
        elif entry.get("type") == "result":
            current = None
    return current


def busy(seconds: float) -> None:
    """Keep this process's CPU busy for ``seconds`` of its CPU time: a strategy's own slow work,
    which a busy machine lengthens in wall time only."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


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


# --- in parallel (NOTE: [Tests in parallel]) ---------------------------------------------------

#: pytest-xdist's name for this test run, the same in every worker; None outside a worker (set
#: by :func:`pytest_configure`: a pytest that a test starts inherits the worker's environment,
#: and must not take the run's locks)
RUN: str | None = None


def pytest_configure(config):
    global RUN
    if hasattr(config, "workerinput"):  # an xdist worker
        RUN = config.workerinput["testrunuid"]
        torch.set_num_threads(1)  # beside other workers on few cores: not two threads that wait on each other


@contextlib.contextmanager
def _room(alone: bool):
    """Every test enters a room: an ``alone`` test once the others have left, and none enters
    while it is there. Two file locks: the door (held by an ``alone`` test while it waits
    and runs, so that no test slips in meanwhile) and the room (shared, or held alone)."""
    if RUN is None:  # one process: every test runs alone
        yield
        return
    base = Path(tempfile.gettempdir()) / f"jacbench-tests-{RUN}"
    with open(f"{base}.door", "a") as door, open(f"{base}.room", "a") as room:
        fcntl.flock(door, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(door, fcntl.LOCK_UN)
        yield


def pytest_collection_modifyitems(items):
    """``slow`` tests first and ``alone`` tests last (a stable sort: the same order in every
    worker). xdist hands out its groups first and the single tests in this order: the long
    ones start early, where the short ones fill in beside them, rather than end the run on
    one worker; and an ``alone`` test runs where the others have left, never emptying a
    room mid-run. One in an ``xdist_group`` runs with its group."""
    def order(item):
        return item.get_closest_marker("alone") is not None, item.get_closest_marker("slow") is None

    items.sort(key=order)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    with _room(item.get_closest_marker("alone") is not None):
        yield


def made_once(tmp_path_factory, name: str, make) -> Path:
    """The directory ``name``, filled by ``make(directory)`` once per test run: by the first
    worker to ask, while the others wait for it, then shared by all."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if RUN is not None else root  # the workers' common directory
    made = root / name
    with open(root / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (made / ".made").exists():
            shutil.rmtree(made, ignore_errors=True)
            made.mkdir()
            make(made)
            (made / ".made").touch()
    return made


def one_results_file(directory: Path) -> Path:
    files = list(Path(directory).glob("*.json"))
    assert len(files) == 1, files
    return files[0]


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory) -> Path:
    """A real sweep of a few problems and strategies through the CLI, made once per test run;
    its results file, which no test may change."""
    return one_results_file(made_once(tmp_path_factory, "tiny", lambda out: run_cli(
        "run", "--profile", "quick", "--device", "cpu", "--cases", TINY_CASES, "--strategies", TINY_STRATEGIES,
        "--timing", "warmup=0,max_time=0.02", "--results-dir", out, check=True)))  # disturbed pairs timed again


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

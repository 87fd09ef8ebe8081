"""pytest wiring of the sweep: parametrization from the journal, the machine-info hook, and
the fixture that measures one pair and journals its pytest-benchmark record.

Loaded with ``-p bench.sweep.plugin`` by ``jacbench run``, which gives it the journal.
"""

from __future__ import annotations

import time

import pytest

from bench.analysis import visits
from bench.analysis.journal import Journal
from bench.analysis.schema import Status
from bench.sweep import machine
from bench.sweep.plan import Pair, Settings

_SESSION = pytest.StashKey["Sweep"]()


def pytest_addoption(parser):
    group = parser.getgroup("jacbench")
    group.addoption("--jacbench-journal", default=None, help="run the pending pairs of this journal (set by `jacbench run`)")
    group.addoption("--jacbench-max-pairs", type=int, default=None, help="run at most this many of them, in plan order")


def pytest_configure(config):
    path = config.getoption("jacbench_journal", None)
    if path:
        config.stash[_SESSION] = Sweep(Journal.read(path))


def pytest_generate_tests(metafunc):
    if "pair" not in metafunc.fixturenames:
        return
    sweep = metafunc.config.stash.get(_SESSION, None)
    if sweep is None:
        raise pytest.UsageError("the sweep runs through `jacbench run`, which passes --jacbench-journal")
    ids = sweep.journal.remaining()[: metafunc.config.getoption("jacbench_max_pairs")]
    metafunc.parametrize("pair", ids, ids=ids)


@pytest.fixture
def jacbench(request) -> "Sweep":
    return request.config.stash[_SESSION]


def pytest_benchmark_update_machine_info(config, machine_info):
    sweep = config.stash.get(_SESSION, None)
    if sweep is not None:
        machine_info["jacbench"] = machine.describe(sweep.device)


def pytest_sessionstart(session):
    sweep = session.config.stash.get(_SESSION, None)
    if sweep is not None:
        sweep.start(session.config)


def record(pair: Pair, info: dict, stats: dict | None = None, options: dict | None = None) -> dict:
    """A pytest-benchmark benchmark record (``Metadata.as_dict`` layout) for one pair."""
    rec = {
        "group": f"{pair.device} {pair.dtype} {pair.problem}",
        "name": f"test_pair[{pair.id}]",
        "fullname": f"bench/sweep/suite.py::test_pair[{pair.id}]",
        "params": {"pair": pair.id},
        "param": pair.id,
        "extra_info": info,
        "options": options or {},
    }
    if stats is not None:
        rec["stats"] = stats
    return rec


def _cap_address_space(fraction: float = 0.8) -> None:
    """On a CPU sweep, cap this process's address space at what it uses now plus a fraction
    of the memory available: an allocation beyond it then fails at once with "can't allocate
    memory" (recorded as ``oom``) instead of driving the machine into swap or the kernel's
    OOM killer. Not on CUDA sweeps: the CUDA driver reserves far more address space than
    it uses."""
    import resource

    from bench.measure.memory import proc_bytes

    try:
        limit = proc_bytes("/proc/self/status", "VmSize") + int(fraction * proc_bytes("/proc/meminfo", "MemAvailable"))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or limit < hard:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, KeyError, ValueError):
        pass  # not Linux, or no /proc: no cap


#: The sweep process's exit status when its journal cannot be written (EX_IOERR).
UNWRITABLE = 74


class Sweep:
    """The child process's view of a run: its plan, settings and journal."""

    def __init__(self, journal: Journal):
        from bench.sweep.plan import load_plugins

        load_plugins(journal.header.get("plugins"))
        self.journal = journal
        self.settings = Settings.from_dict(journal.header["settings"])
        self.pairs = journal.planned()
        self.device = journal.header["device"]

    def write(self, entry: dict, durable: bool = True) -> None:
        """Journal an entry; where the journal cannot take it (a full disk, say), stop the
        sweep at once with :data:`UNWRITABLE`: the runner says so, and records no pair."""
        try:
            self.journal.append(entry, durable)
        except OSError as e:
            pytest.exit(f"cannot write the journal {self.journal.path}: {e.strerror or e}", returncode=UNWRITABLE)

    def start(self, config) -> None:
        import torch

        torch.set_num_threads(self.settings.threads)
        if self.device == "cpu":
            _cap_address_space()
        if self.journal.env is None:
            import pytest_benchmark

            machine_info = config.hook.pytest_benchmark_generate_machine_info(config=config)
            config.hook.pytest_benchmark_update_machine_info(config=config, machine_info=machine_info)
            commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config)
            dtypes = sorted({p.dtype for p in self.pairs.values()})
            ceilings = {dt: machine.ceilings(self.device, getattr(torch, dt)) for dt in dtypes}
            self.write({"type": "env", "machine_info": machine_info, "commit_info": commit_info,
                                 "ceilings": ceilings, "pytest_benchmark": pytest_benchmark.__version__})

    def run(self, pair_id: str, benchmark) -> None:
        from bench.measure.pair import measure

        pair = self.pairs[pair_id]
        before = self.journal.results.get(pair_id) if pair_id in self.journal.retiming else None
        started = time.time()
        self.write({"type": "start", "pair": pair_id, "time": started}, durable=False)
        row = measure(pair, self.settings, iterations=before["stats"].get("iterations", 1) if before else None,
                      on_checked=lambda row: self.write(
                          {"type": "checked", "pair": pair_id, "info": row.info()}, durable=False))
        row.started, row.seconds = started, time.time() - started
        if row.status == Status.OK:
            row.visits = [visits.visit(row)]
        if before is not None:  # a later visit (NOTE: [Visits])
            visits.merge(row, before)
        benchmark.group = f"{pair.device} {pair.dtype} {pair.problem}"
        benchmark.extra_info.update(row.info())
        stats = options = None
        if row.status == Status.OK:
            # pytest-benchmark times by itself; our rounds adapt to a precision target and
            # synchronize CUDA, so we hand it the samples instead (its one private seam).
            metadata = benchmark._make_stats(row.iterations)
            for sample in row.samples:
                metadata.update(sample * row.iterations)
            as_dict = metadata.as_dict(include_data=True)
            stats, options = as_dict["stats"], {**as_dict["options"], "policy": self.settings.as_dict()["policy"]}
        else:
            benchmark.skipped = True  # nothing was timed; silences "fixture was not used"
        entry = {"type": "result", "pair": pair_id, "record": record(pair, row.info(), stats, options)}
        self.write({**entry, "replaces": True} if before is not None else entry)
        from bench.measure import memory

        if memory.spoiled():  # the runner starts a fresh process for the rest
            pytest.exit("a call was stopped part-way or ran out of memory; the rest of the sweep needs a fresh process",
                        returncode=0)

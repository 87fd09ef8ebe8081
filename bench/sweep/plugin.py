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
from bench.analysis.schema import Pair
from bench.measure.pair import Settings

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
    sweep.ids = ids = sweep.journal.remaining()[: metafunc.config.getoption("jacbench_max_pairs")]
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
        self.ids: list[str] = []  # the pairs this process runs, in order

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
        """Measure a pair: with the other pairs of its problem this process runs, timed
        together (:meth:`together`), or alone where it is the only one or an earlier attempt
        to time its problem together died (the journal's ``apart``: alone, a crash or a
        hang is the pair's own)."""
        pending = set(self.journal.remaining())
        if pair_id not in pending:  # measured with its problem, in this process
            benchmark.skipped = True
            return
        pair = self.pairs[pair_id]
        group = [p for p in self.ids if p in pending and self.pairs[p].timed_with == pair.timed_with
                 and p not in self.journal.apart]
        if pair_id in self.journal.apart or len(group) < 2:
            self.alone(pair_id, benchmark)
        else:
            self.together(group)
            benchmark.skipped = True

    def alone(self, pair_id: str, benchmark) -> None:
        from bench.measure.pair import measure

        pair = self.pairs[pair_id]
        before = self.before(pair_id)
        started = time.time()
        self.write({"type": "start", "pair": pair_id, "time": started}, durable=False)
        row = measure(pair, self.settings, iterations=before["stats"].get("iterations", 1) if before else None,
                      on_checked=lambda row: self.checked(pair_id, row))
        row.started = started  # its seconds are those it spent (``Row.spent``)
        self.journal_row(pair_id, row, before)
        benchmark.skipped = True  # its record is journaled; pytest-benchmark's own report has none
        self.fresh_if_spoiled()

    def together(self, group: list[str]) -> None:
        """Gate each pair of one (device, dtype, problem) in turn, each journaled as it starts,
        then time those that passed together, interleaved (NOTE: [Paired timing] in
        ``bench.analysis.stats``), and journal each pair's record. The ``together`` entry
        tells the runner whom to time apart if the cycles die or hang, and a ``beat`` after
        each warm-up and cycle that they still go on."""
        import cases
        from bench.measure import pair as measuring

        ids = {self.pairs[p].strategy: p for p in group}
        journaled: set[str] = set()
        first = self.pairs[group[0]]
        rows = measuring.measure_together(
            cases.get(first.problem), list(ids), first.device, first.dtype, self.settings,
            cpu_clock=first.device == "cpu" and self.settings.threads == 1, race=measuring.race, apart=True,
            probe_dropped=True, extras=all(self.before(p) is None for p in group), seed=self.settings.seed,
            on_start=lambda name: self.write({"type": "start", "pair": ids[name], "time": time.time()}, durable=False),
            on_gated=lambda row: self.gated(ids[row.strategy], row, journaled),
            on_together=lambda names: self.write({"type": "together", "pairs": [ids[n] for n in names]}),
            beat=lambda: self.write({"type": "beat"}, durable=False))
        base = CYCLES_PER_PASS * (self.journal.passes - 1)  # a later visit's cycles are its own
        for row in rows:
            if ids[row.strategy] not in journaled:
                row.cycles = [base + c for c in row.cycles]
                self.journal_row(ids[row.strategy], row, self.before(ids[row.strategy]))
        self.fresh_if_spoiled()

    def checked(self, pair_id: str, row) -> None:
        """Journal what the gate found of a pair whose first call passed it."""
        if row.status == Status.OK:
            self.write({"type": "checked", "pair": pair_id, "info": row.info()}, durable=False)

    def gated(self, pair_id: str, row, journaled: set[str]) -> None:
        """Journal a gated row: what it found where it passed, its record where it failed."""
        if row.status == Status.OK:
            self.checked(pair_id, row)
        else:
            self.journal_row(pair_id, row, self.before(pair_id))
            journaled.add(pair_id)

    def before(self, pair_id: str) -> dict | None:
        """The pair's record so far, where this is a later visit (NOTE: [Visits])."""
        return self.journal.results.get(pair_id) if pair_id in self.journal.retiming else None

    def journal_row(self, pair_id: str, row, before: dict | None) -> None:
        """Journal a measured row as the pair's pytest-benchmark record, joined to its earlier
        visits."""
        from pytest_benchmark.stats import Stats

        pair = self.pairs[pair_id]
        if row.status == Status.OK and not row.visits:  # one timed together has its visit: the cycles' span
            row.visits = [visits.visit(row)]
        if before is not None:  # a later visit (NOTE: [Visits])
            visits.merge(row, before)
        stats = options = None
        if row.status == Status.OK:
            # pytest-benchmark times by itself; our rounds adapt to a precision target, are
            # interleaved across strategies and synchronize CUDA, so we hand it the samples
            summary = Stats()
            for sample in row.samples:
                summary.update(sample)
            stats = {**summary.as_dict(), "data": list(summary.data), "iterations": row.iterations}
            options = {"timer": "time.process_time" if row.clock == "cpu" else "time.perf_counter",
                       "policy": self.settings.as_dict()["policy"]}
        entry = {"type": "result", "pair": pair_id, "record": record(pair, row.info(), stats, options)}
        self.write({**entry, "replaces": True} if before is not None else entry)

    @staticmethod
    def fresh_if_spoiled() -> None:
        """End this process where a call spoiled it, for a fresh one to go on."""
        from bench.measure import memory

        if memory.spoiled():  # the runner starts a fresh process for the rest
            pytest.exit("a call was stopped part-way or ran out of memory; the rest of the sweep needs a fresh process",
                        returncode=0)


#: a later visit's cycles are numbered from this many times its pass, so that rounds pair
#: only with rounds of the same visit
CYCLES_PER_PASS = 1_000_000

"""A sweep farmed out as one job array, a shard per task, through submitit (SLURM, or local processes).

``jacbench run --executor slurm --tasks N`` plans the sweep here, submits one array of N tasks
per partition, and watches it. Each task runs ``--shard i/N`` of the plan on its node with the
ordinary runner (:func:`run_task`): its own journal under ``RESULTS/.partial``, its own results
file in ``RESULTS``. When every task is done, the shards' files are merged and checked to be
exactly the plan: every planned pair once per partition, none twice.

Where things land (``RESULTS`` is ``--results-dir``, on the file system the nodes share):

* ``RESULTS/*.json``: one results file per task, its machine named ``CLUSTER-PARTITION``
  (:func:`bench.sweep.machine.machine_name`), each row with the host and job it ran on;
* ``RESULTS/.partial/``: the journal of each unfinished task;
* ``RESULTS/.sweeps/ID/``: the sweep's state (``sweep.json``: the plan's selection, the
  tasks, their job ids and results files) and submitit's files (each task's log).

The time limit of a task, unless ``--time-limit`` gives it, is the most its shard can take
without the runner stopping a pair: the shard's pairs times the profile's per-pair limit
(``--pair-timeout``) times the visits of its timing policy, plus 5 minutes for starting up.
A task that reaches it anyway loses nothing: its journal keeps every finished pair.

A task that fails, is cancelled, preempted or timed out is resubmitted by running the same
command again, or ``jacbench run --executor slurm --resume``: it resumes its own journal and
redoes no pair; tasks still pending or running are watched again, not resubmitted.

Ctrl-C detaches from a SLURM array: the tasks go on, and ``--resume`` watches them again
(``scancel JOBID`` stops them). Local tasks are this machine's processes: Ctrl-C stops them,
and ``--resume`` goes on from their journals.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.analysis import files, results
from bench.analysis.journal import Journal, JournalError, RunError
from bench.analysis.schema import host
from bench.sweep import machine, plan as planning, runner
from bench.measure.pair import Settings

SWEEPS = ".sweeps"
POLL = 2.0  # seconds between looks at the array
STARTUP_S = 300  # a task's allowance, besides its pairs, for starting and measuring the machine


@dataclass(frozen=True)
class Spec:
    """What a task runs, besides its shard: the selection and settings of ``jacbench run``."""

    profile: str
    device: str
    cases: list | None
    tags: list | None
    strategies: list | None
    dtype: list | None
    seed: int
    threads: int | None  # None: the default of the node the task runs on
    pair_timeout: float | None
    plugins: list
    results_dir: str  # absolute: the tasks' working directory may differ
    timing: str | None = None  # --timing

    @property
    def selection(self) -> dict:
        return {k: getattr(self, k) for k in ("cases", "tags", "strategies", "dtype")}

    def settings(self) -> Settings:
        return planning.settings(self.profile, timing_text=self.timing, pair_timeout=self.pair_timeout,
                                 threads=self.threads, seed=self.seed)

    def devices(self, gpus: int) -> list[str]:
        """The devices the tasks will find: ``all`` is the CPU, and CUDA where GPUs are asked for."""
        return {"all": ["cpu", "cuda"] if gpus else ["cpu"]}.get(self.device, [self.device])

    def pairs(self, device: str, shard: tuple[int, int] | None = None) -> list:
        return planning.make(self.profile, devices=[device], dtypes=self.dtype, problems=self.cases, tags=self.tags,
                             strategy_patterns=self.strategies, shard=shard)


def run_task(spec: Spec, shard: str, fresh: bool = False) -> list[str]:
    """One array task: shard ``i/n`` of the plan on each device of this node, with the ordinary
    runner (resuming its journal where an earlier task left it). Returns the results files."""
    planning.load_plugins(spec.plugins)
    settings, out = spec.settings(), []
    for device in machine.devices(spec.device):
        pairs = spec.pairs(device, planning.parse_shard(shard))
        path, resumed = runner.prepare(pairs, settings, device, Path(spec.results_dir), spec.selection,
                                       fresh=fresh, shard=shard, plugins=spec.plugins)
        print(f"{'resuming' if resumed else 'running'} shard {shard}: {len(pairs)} pairs on {device} "
              f"of {machine.machine_name()} (host {host()})", file=sys.stderr, flush=True)
        out.append(str(runner.execute(path)))
    return out


def time_limit(spec: Spec, tasks: int, gpus: int) -> int:
    """Minutes: the largest shard's pairs x the per-pair limit x the policy's visits, plus
    :data:`STARTUP_S` (the most a task takes with no pair stopped; see the module's doc)."""
    settings = spec.settings()
    largest = max(sum(len(spec.pairs(d, (i, tasks))) for d in spec.devices(gpus)) for i in range(1, tasks + 1))
    return math.ceil((largest * settings.pair_timeout * settings.policy.visits + STARTUP_S) / 60)


def sbatch_flags(texts: list[str] | None) -> dict:
    """``--sbatch "--constraint=h100 --exclusive"`` -> submitit's additional parameters."""
    flags = {}
    for word in shlex.split(" ".join(texts or [])):
        key, eq, value = word.lstrip("-").partition("=")
        if not word.startswith("--") or not key:
            raise ValueError(f"--sbatch takes long sbatch options such as --constraint=h100, not {word!r}")
        flags[key.replace("-", "_")] = value if eq else True
    return flags


class Sweep:
    """A farmed sweep's state, kept in ``RESULTS/.sweeps/ID/sweep.json``: its spec, executor,
    submission options and tasks, each ``{"partition", "shard", "job", "files"}``."""

    def __init__(self, path: Path, state: dict):
        self.path, self.state = Path(path), state
        self.spec = Spec(**state["spec"])

    @classmethod
    def plan(cls, args, options: dict) -> "Sweep":
        """The sweep of these ``jacbench run`` arguments: the unfinished one of the same plan,
        or a new one (``--fresh``: always new)."""
        spec = Spec(profile=args.profile, device=args.device, cases=args.cases, tags=args.tags,
                    strategies=args.strategies, dtype=args.dtype, seed=args.seed, threads=args.threads,
                    pair_timeout=args.pair_timeout, plugins=planning.load_plugins(args.plugin),
                    results_dir=str(Path(args.results_dir).absolute()), timing=args.timing)
        spec.settings()  # a bad --timing, and
        for device in spec.devices(options["gpus"]):
            spec.pairs(device)  # a bad selection: its one-line error now, not in every task
        partitions = args.partition or [None]
        ident = json.dumps([asdict(spec), args.executor, args.tasks, partitions], sort_keys=True)
        path = Path(spec.results_dir) / SWEEPS / hashlib.sha1(ident.encode()).hexdigest()[:12] / "sweep.json"
        if path.exists() and not args.fresh:
            sweep = cls.read(path)
            if not sweep.state["finished"]:
                return sweep
        files.directory(path.parent)
        state = {"spec": asdict(spec), "executor": args.executor, "options": options,
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "finished": False,
                 "fresh": bool(args.fresh),
                 "tasks": [{"partition": p, "shard": f"{i}/{args.tasks}", "job": None, "files": None, "pairs": 0}
                           for p in partitions for i in range(1, args.tasks + 1)]}
        return cls(path, state)

    @classmethod
    def read(cls, path: Path) -> "Sweep":
        try:
            return cls(path, json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunError(f"{path}: not a sweep this jacbench can resume ({e})") from None

    @classmethod
    def latest(cls, results_dir: Path) -> "Sweep":
        found = sorted((Path(results_dir) / SWEEPS).glob("*/sweep.json"), key=lambda p: p.stat().st_mtime,
                       reverse=True)
        for path in found:
            sweep = cls.read(path)
            if not sweep.state["finished"]:
                return sweep
        raise ValueError(f"no unfinished sweep under {Path(results_dir) / SWEEPS}")

    def save(self) -> None:
        files.write_atomic(self.path, json.dumps(self.state, indent=1))

    @property
    def folder(self) -> Path:
        return self.path.parent / "%j"

    def executor(self, partition: str | None):
        import submitit

        o = self.state["options"]
        ex = submitit.AutoExecutor(folder=self.folder, cluster=self.state["executor"])
        params = {"name": "jacbench", "timeout_min": o["time_limit"], "slurm_array_parallelism": o["parallelism"],
                  "slurm_additional_parameters": o["sbatch"]}
        params.update({k: v for k, v in (("gpus_per_node", o["gpus"]), ("slurm_partition", partition),
                                         ("slurm_account", o["account"]), ("slurm_qos", o["qos"])) if v})
        ex.update_parameters(**params)
        return ex

    def job(self, task: dict):
        """The submitit job of a task, re-attached from its id (None before it is submitted)."""
        if task["job"] is None:
            return None
        from submitit.local.local import LocalJob
        from submitit.slurm.slurm import SlurmJob

        kind = SlurmJob if self.state["executor"] == "slurm" else LocalJob
        return kind(folder=self.folder, job_id=task["job"])

    def submit(self) -> dict:
        """Submit every task that is neither done nor still queued or running: one array per
        partition. Returns the submitit jobs of the tasks being watched, by task index."""
        jobs, todo = {}, {}
        for k, task in enumerate(self.state["tasks"]):
            if task["files"] is not None:
                continue
            job = self.job(task)
            outcome = _state(job, attached=True) if job is not None else ("failed", "")
            if outcome[0] in ("pending", "running", "done"):
                jobs[k] = job
            else:
                todo.setdefault(task["partition"], []).append(k)
        fresh = self.state.pop("fresh", False)
        try:
            for partition, ks in todo.items():
                ex = self.executor(partition)
                shards = [self.state["tasks"][k]["shard"] for k in ks]
                submitted = ex.map_array(run_task, [self.spec] * len(ks), shards, [fresh] * len(ks))
                for k, job in zip(ks, submitted):
                    self.state["tasks"][k]["job"] = job.job_id
                    jobs[k] = job
        except RuntimeError as e:  # submitit's FailedJobError: sbatch refused (a partition, a limit)
            raise RunError(f"submitting the array failed: {' '.join(str(e).split())[:400]}") from None
        finally:
            self.save()
        return jobs

def _state(job, attached: bool = False) -> tuple[str, str]:
    """A task's state: ``pending``, ``running``, ``done`` or ``failed``, and why it failed.
    A job just submitted is ``UNKNOWN`` until the accounting knows it; a job ``attached``
    again from an id (``--resume``) is unknown when the accounting has forgotten it."""
    state = job.state.upper()
    if state in ("PENDING", "REQUEUED", "CONFIGURING", "READY", "SUSPENDED", "RESIZING") or (
            state == "UNKNOWN" and not attached):
        return "pending", ""
    if state in ("RUNNING", "COMPLETING", "STAGE_OUT"):
        return "running", ""
    if state in ("COMPLETED", "FINISHED") or job.paths.result_pickle.exists():
        try:
            job.result()
            return "done", ""
        except Exception as e:  # noqa: BLE001 - the task's own failure, kept in its pickle
            lines = [line for line in str(e).splitlines() if line.strip()]
            return "failed", lines[-1][:200] if lines else type(e).__name__
    return "failed", state.lower()


def farm(args) -> list[Path]:
    """``jacbench run --executor slurm|local``: submit, watch, merge; the results files."""
    results_dir = Path(args.results_dir)
    if importlib.util.find_spec("submitit") is None:
        raise ValueError("--executor needs submitit: pip install 'jacbench[slurm]'")
    if args.executor == "local" and args.partition:
        raise ValueError("--partition is SLURM's; local tasks all run on this machine")
    if args.resume is not None:
        if any(getattr(args, k) for k in ("cases", "tags", "strategies", "shard", "dtype", "partition")) or args.fresh:
            raise ValueError("--resume continues a sweep as it was planned; drop the selection options")
        sweep = Sweep.read(args.resume) if args.resume != "latest" else Sweep.latest(results_dir)
        planning.load_plugins(sweep.spec.plugins)
        print(f"resuming the sweep {sweep.path.parent.name} ({sweep.path})", file=sys.stderr)
    else:
        if args.shard:
            raise ValueError("--shard runs one shard here; with --executor, --tasks N splits the plan into N shards")
        gpus = args.gpus_per_task if args.gpus_per_task is not None else int(args.device == "cuda")
        options = {"gpus": gpus, "account": args.account, "qos": args.qos, "parallelism": args.array_parallelism,
                   "sbatch": sbatch_flags(args.sbatch), "time_limit": None}
        sweep = Sweep.plan(args, options)
        if sweep.state["options"]["time_limit"] is None:
            sweep.state["options"]["time_limit"] = args.time_limit or time_limit(sweep.spec, args.tasks, gpus)
    jobs = sweep.submit()
    tasks = sweep.state["tasks"]
    ids = sorted({t["job"].split("_")[0] for t in tasks if t["job"]}, key=int)
    where = "SLURM job array" if sweep.state["executor"] == "slurm" else "local process"
    print(f"{len(tasks)} tasks ({where}{'s' if len(ids) > 1 else ''} {', '.join(ids)}), a time limit of "
          f"{sweep.state['options']['time_limit']} min each; logs in {sweep.path.parent}", file=sys.stderr)
    try:
        failed = _watch(sweep, jobs)
    except KeyboardInterrupt:
        running = [j for j in jobs.values() if _state(j)[0] in ("pending", "running")]
        if sweep.state["executor"] == "slurm":
            print(f"\ndetached: {len(running)} tasks go on ({', '.join(j.job_id for j in running)}); "
                  f"`jacbench run --executor slurm --resume` watches them again, `scancel` stops them", file=sys.stderr)
        else:
            for job in running:
                job.cancel(check=False)
        raise
    if failed:
        raise RunError(f"{len(failed)} of {len(tasks)} tasks failed ({'; '.join(failed[:3])}); their journals keep "
                       f"what they did: run the same command again, or with --resume, to resubmit them")
    written = [Path(f) for t in tasks for f in t["files"]]
    _check(sweep, written)
    sweep.state["finished"] = True
    sweep.save()
    return written


def _watch(sweep: Sweep, jobs: dict) -> list[str]:
    """Show the array's progress until no task is pending or running; the failed tasks."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    tasks = sweep.state["tasks"]
    gpus = sweep.state["options"]["gpus"]
    total = sum(len(sweep.spec.pairs(d, planning.parse_shard(t["shard"]))) for t in tasks
                for d in sweep.spec.devices(gpus))
    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("pairs"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                   disable=not console.is_terminal)
    shown, failed, done = None, [], 0
    with bar:
        pairs = bar.add_task("", total=total)
        while True:
            if sweep.state["executor"] == "slurm" and jobs:
                next(iter(jobs.values())).watcher.update()  # one sacct for the whole array
            states, failed = {}, []
            for k, job in jobs.items():
                task = tasks[k]
                state, why = _state(job) if task["files"] is None else ("done", "")
                if state == "done" and task["files"] is None:
                    task["files"] = job.result()
                    task["pairs"] = sum(results.read(Path(f))["jacbench"]["pairs"] for f in task["files"])
                    sweep.save()
                elif state == "failed":
                    failed.append(f"shard {task['shard']}{' on ' + task['partition'] if task['partition'] else ''} "
                                  f"(job {job.job_id}): {why}")
                states[state] = states.get(state, 0) + 1
            done = max(done, _pairs_done(sweep))  # (a finished task's journal goes before its job does)
            counts = " ".join(f"{states.get(s, 0)} {s}" for s in ("pending", "running", "done", "failed"))
            bar.update(pairs, completed=done, description=f"tasks: {counts} |")
            if not console.is_terminal and (counts, done) != shown:
                print(f"tasks: {counts} | {done}/{total} pairs", file=sys.stderr, flush=True)
                shown = (counts, done)
            if not states.get("pending") and not states.get("running"):
                return failed
            time.sleep(POLL)


def _pairs_done(sweep: Sweep) -> int:
    """Pairs with a result: in the finished tasks' results files and in the others' journals."""
    done = sum(task["pairs"] for task in sweep.state["tasks"])
    shards = {t["shard"] for t in sweep.state["tasks"] if t["files"] is None}
    for path in runner.partial_dir(Path(sweep.spec.results_dir)).glob("*.journal.jsonl"):
        try:
            journal = Journal.read(path)
        except JournalError:  # finished and removed meanwhile, or not one of ours
            continue
        header = journal.header
        if header.get("shard") in shards and (header.get("selection"), header["settings"]["profile"]) == (
                sweep.spec.selection, sweep.spec.profile):
            done += len(journal.results)
    return done


def _check(sweep: Sweep, written: list[Path]) -> None:
    """The tasks' files hold exactly the plan once per partition: no pair twice, none missing."""
    partitions = len({t["partition"] for t in sweep.state["tasks"]})
    names = {results.read(f)["machine_info"]["jacbench"]["machine"] for f in written}
    if len(names) != partitions:
        raise RunError(f"{partitions} partitions gave {len(names)} machine names ({', '.join(sorted(names))}); "
                       f"set no JACBENCH_MACHINE for a sweep over partitions")
    frame = results.merge(written)  # a pair in two files is a ResultsError naming both
    gpus = sweep.state["options"]["gpus"]
    devices = sorted(set(sweep.spec.devices(gpus)) & set(frame["device"])) or ["cpu"]
    plan = sorted(p.id for d in devices for p in sweep.spec.pairs(d))
    for name, rows in frame.groupby("machine"):
        got = sorted(f"{r.device}-{r.dtype}-{r.problem}-{r.strategy}" for r in rows.itertuples())
        if got != plan:
            missing = sorted(set(plan) - set(got))
            raise RunError(f"the results of {name} are not the plan: {len(got)} pairs for {len(plan)} planned"
                           + (f", {missing[0]} missing" if missing else ""))
    print(f"merged {len(frame)} pairs from {len(written)} files: the plan's {len(plan)} pairs on each of "
          f"{len(names)} machine{'s' if len(names) > 1 else ''} ({', '.join(sorted(names))})", file=sys.stderr)

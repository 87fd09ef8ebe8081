"""A sweep farmed out as a job array (bench.sweep.slurm), on a real single-node SLURM cluster
that the tests start and stop themselves (tests/cluster/cluster.sh), and through submitit's
local executor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TIMED, run_cli, run_main, sweep_args

from bench.analysis import results
from bench.analysis.journal import Journal, find_unfinished
from bench.analysis.schema import Row, host, job
from bench.sweep import machine, plan, slurm
from bench.sweep.slurm import Spec

pytestmark = pytest.mark.xdist_group("slurm")  # one worker: one cluster per test run

CLUSTER = ROOT / "tests" / "cluster" / "cluster.sh"
CASES = "seed-newton,seed-linear,seed-trig"
STRATEGIES = "jacrev,jacfwd"  # 6 pairs, 2 in each of 3 shards
SWEEP = ("--profile", "quick", "--device", "cpu", "--cases", CASES, "--strategies", STRATEGIES, "--threads", "1")
#: No JACBENCH_MACHINE (the tests' other runs set one): in a SLURM job the machine is the partition.
IN_SLURM = {"JACBENCH_MACHINE": ""}


def _plan(cases: str = CASES) -> list[str]:
    return sorted(p.id for p in plan.make("quick", devices=["cpu"], problems=[cases], strategy_patterns=[STRATEGIES]))


def _ids_unsorted(frame) -> list[str]:
    return [f"{r.device}-{r.dtype}-{r.problem}-{r.strategy}" for r in frame.itertuples()]


def _ids(frame) -> list[str]:
    return sorted(_ids_unsorted(frame))


def _sweep_state(results_dir: Path) -> dict | None:
    found = list((results_dir / slurm.SWEEPS).glob("*/sweep.json"))
    return json.loads(found[0].read_text()) if found else None


@pytest.fixture(scope="session")
def cluster():
    """The cluster, up for the session and down after it, with no daemon left running."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM cluster needs root to start its daemons")
    if not all(shutil.which(t) for t in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch")):
        pytest.skip("SLURM is not installed (`make slurm` installs it where apt-get and root are)"
                    if shutil.which("apt-get") else "SLURM is not installed and there is no apt-get to install it")
    before = os.environ.get("SLURM_CONF")
    up = subprocess.run([CLUSTER, "up"], capture_output=True, text=True, timeout=120)
    conf = subprocess.run([CLUSTER, "env"], capture_output=True, text=True).stdout.split("=", 1)[1].strip()
    os.environ["SLURM_CONF"] = conf
    try:
        assert up.returncode == 0, f"the cluster did not start: {up.stderr[-2000:]}"
        yield conf
    finally:
        started = Path(conf).parent / "started"
        pidfiles = [line.split()[1] for line in started.read_text().splitlines()] if started.exists() else []
        down = subprocess.run([CLUSTER, "down"], capture_output=True, text=True, timeout=120)
        os.environ.pop("SLURM_CONF")
        if before is not None:
            os.environ["SLURM_CONF"] = before
        assert down.returncode == 0, down.stderr
        assert not any(Path(p).exists() for p in pidfiles), "a daemon of the cluster is still running"


def _wait_for_a_task_midway(results_dir: Path, sweep: subprocess.Popen) -> tuple[str, dict, Path]:
    """The job id of a running task whose journal has some results and some pairs left,
    those results (pair -> the time it started) and the journal, as soon as there is one."""
    while sweep.poll() is None:
        state = _sweep_state(results_dir)
        for path in find_unfinished(results_dir / ".partial"):
            try:
                journal = Journal.read(path)
            except Exception:  # noqa: BLE001 - being written this very moment
                continue
            if journal.results and journal.remaining() and state:
                task = next(t for t in state["tasks"] if t["shard"] == journal.header["shard"])
                return task["job"], {p: r["extra_info"]["started"] for p, r in journal.results.items()}, path
        time.sleep(0.05)
    raise AssertionError(f"the sweep ended before any task was midway: {sweep.stderr.read()[-2000:]}")


@pytest.mark.slurm
def test_a_task_cancelled_midway_resumes_and_the_array_merges_into_exactly_the_plan(cluster, tmp_path):
    out = tmp_path / "results"
    args = ["run", "--executor", "slurm", "--tasks", "3", *SWEEP, "--results-dir", out]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **IN_SLURM}
    sweep = subprocess.Popen([sys.executable, "-m", "bench", *sweep_args(args)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cancelled, kept, journal = _wait_for_a_task_midway(out, sweep)
        subprocess.run(["scancel", cancelled], check=True)
        _, err = sweep.communicate(timeout=300)
    finally:
        sweep.kill()
    left = Journal.read(journal).remaining()  # on a busy machine the task may finish its pairs before the cancel
    assert sweep.returncode == 2 and "1 of 3 tasks failed" in err and cancelled in err, err
    before = _sweep_state(out)
    assert [t["files"] is None for t in before["tasks"]].count(True) == 1

    again = run_cli("run", "--executor", "slurm", "--resume", "--results-dir", out, env=IN_SLURM, check=True)
    after = _sweep_state(out)
    assert after["finished"] and "merged 6 pairs from 3 files" in again.stderr
    resubmitted = [(b["job"], a["job"]) for b, a in zip(before["tasks"], after["tasks"]) if b["job"] != a["job"]]
    assert len(resubmitted) == 1 and resubmitted[0][0] == cancelled  # only the cancelled task ran again
    files = [f for t in after["tasks"] for f in t["files"]]
    frame = results.merge(files)  # a pair in two files would raise
    assert _ids(frame) == _plan() and set(frame["status"]) <= TIMED
    assert set(frame["machine"]) == {"jacbench-cpu-a"} and set(frame["host"]) == {host()}
    rows = dict(zip(_ids_unsorted(frame), frame.itertuples()))
    for pair, started in kept.items():  # what the cancelled task finished is kept, not measured again
        visits = [v["started"] for v in rows[pair].visits + rows[pair].retimed]  # (a later pass may add visits)
        assert visits.count(started) == 1 and min(visits) == started
    redone = [p for p, r in rows.items() if r.job == resubmitted[0][1]]
    assert redone or not left  # what the cancelled task left, its resubmission measured
    assert all(min(v["started"] for v in rows[p].visits + rows[p].retimed) > max(kept.values())
                          for p in redone if p not in kept)
    assert not list((out / ".partial").glob("*.journal.jsonl"))


@pytest.mark.slurm
def test_two_partitions_run_the_same_plan_into_one_frame_and_report_keyed_by_both(cluster, tmp_path):
    out, report = tmp_path / "results", tmp_path / "report.html"
    proc = run_cli("run", "--executor", "slurm", "--partition", "cpu-a", "--partition", "cpu-b", "--profile", "quick",
                   "--device", "cpu", "--cases", "seed-newton", "--strategies", "jacrev", "--threads", "1",
                   "--results-dir", out, "--report", report, env=IN_SLURM, check=True)
    frame = results.merge(sorted(out.glob("*.json")))
    assert sorted(frame["machine"].unique()) == ["jacbench-cpu-a", "jacbench-cpu-b"], proc.stderr
    for _, rows in frame.groupby("machine"):
        assert list(rows["strategy"]) == ["jacrev"] and list(rows["problem"]) == ["seed-newton"]
    assert frame.groupby("machine")["job"].first().nunique() == 2  # one array per partition
    html = report.read_text()
    assert "jacbench-cpu-a" in html and "jacbench-cpu-b" in html
    side = html[html.index('id="side-by-side"'):]  # the partitions' picks, side by side
    assert "jacbench-cpu-a" in side[:side.index("</table>")] and "jacbench-cpu-b" in side[:side.index("</table>")]


@pytest.mark.slow
def test_the_local_executor_merges_into_exactly_the_plan(tmp_path):
    out = tmp_path / "results"
    cases = "seed-newton,seed-linear"  # 4 pairs: 3 in one shard, 1 in the other
    proc = run_cli("run", "--executor", "local", "--tasks", "2", *SWEEP[:4], "--cases", cases, *SWEEP[6:],
                   "--results-dir", out, check=True)
    state = _sweep_state(out)
    assert state["finished"] and [t["shard"] for t in state["tasks"]] == ["1/2", "2/2"]
    frame = results.merge([f for t in state["tasks"] for f in t["files"]])
    assert _ids(frame) == _plan(cases) and set(frame["machine"]) == {"testbox"}, proc.stderr
    assert set(frame["job"].fillna("none")) == {job() or "none"}  # no job of its own (unless the tests run in one)


# --- without a cluster ----------------------------------------------------------------------

def test_a_slurm_job_names_the_machine_by_cluster_and_partition_and_rows_carry_host_and_job(monkeypatch):
    monkeypatch.delenv("JACBENCH_MACHINE", raising=False)
    for var in ("SLURM_JOB_PARTITION", "SLURM_CLUSTER_NAME", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    assert machine.machine_name() == host()
    assert Row("p", "s", "cpu", "float32").job is None
    monkeypatch.setenv("SLURM_JOB_PARTITION", "h100")
    monkeypatch.setenv("SLURM_CLUSTER_NAME", "big")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert machine.machine_name() == "big-h100"
    assert Row("p", "s", "cpu", "float32").job == "77"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    row = Row("p", "s", "cpu", "float32")
    assert (row.job, row.host) == ("70_3", host())
    assert row.info()["job"] == "70_3"
    monkeypatch.setenv("JACBENCH_MACHINE", "mine")  # the user's name wins
    assert machine.machine_name() == "mine"


def test_the_time_limit_is_the_largest_shard_at_the_per_pair_limit_for_every_visit():
    spec = Spec(profile="standard", device="cpu", cases=[CASES], tags=None, strategies=[STRATEGIES], dtype=None,
                seed=0, threads=1, pair_timeout=None, plugins=[], results_dir="results")
    largest = max(len(spec.pairs("cpu", (i, 2))) for i in (1, 2))
    profile = plan.profile("standard")
    assert slurm.time_limit(spec, 2, gpus=0) == -(-(largest * profile.pair_timeout * profile.policy.visits
                                                    + slurm.STARTUP_S) // 60)
    assert slurm.time_limit(spec, 1, gpus=0) > slurm.time_limit(spec, 2, gpus=0)
    assert spec.devices(gpus=1) == ["cpu"] and Spec(**{**spec.__dict__, "device": "all"}).devices(1) == ["cpu", "cuda"]


def test_sbatch_flags_pass_through_and_a_bad_one_is_one_line():
    assert slurm.sbatch_flags(["--constraint=h100 --exclusive", "--mem-per-gpu=40G"]) == {
        "constraint": "h100", "exclusive": True, "mem_per_gpu": "40G"}
    with pytest.raises(ValueError, match="long sbatch options"):
        slurm.sbatch_flags(["-p gpu"])


@pytest.mark.parametrize("extra, says", [
    (["--executor", "local", "--partition", "a"], "--partition is SLURM's"),
    (["--executor", "local", "--shard", "1/2"], "--tasks N splits the plan"),
    (["--executor", "local", "--resume", "--cases", "seed-newton"], "drop the selection options"),
    (["--executor", "local", "--cases", "no-such-case"], "no problem"),
    (["--executor", "local", "--sbatch=-p gpu"], "long sbatch options"),
])
def test_bad_executor_options_are_one_line_errors(tmp_path, extra, says):
    proc = run_main("run", "--results-dir", tmp_path, "--profile", "quick", *extra)
    assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(tmp_path.glob(f"{slurm.SWEEPS}/*/sweep.json"))

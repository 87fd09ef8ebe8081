"""The sweep survives everything: SIGKILL then resume, a hanging pair, a crashing pair.

These run real sweeps in real child processes, with strategies that really misbehave
(``tests/plugins/misbehaving.py``).
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, TIMED, Hold, in_flight, run_cli, sweep_args

from bench.analysis import results
from bench.analysis.journal import Journal, running

pytestmark = pytest.mark.slow
PLUGIN = "tests.plugins.misbehaving"


def _records(path):
    doc = json.loads(path.read_text())
    return {r["param"]: r for r in doc["benchmarks"] + doc["jacbench"]["untimed"]}


def _start_and_kill(argv, tmp_path, after: int = 0, stop=signal.SIGKILL, until=None, hold: Hold | None = None,
                    delay: float = 0) -> Journal:
    """Start a real sweep and send ``stop`` to its runner once ``after`` pairs are journaled
    and its ``test-held`` pair is in flight, held by ``hold`` (made here if not given), or
    once ``until(journal)`` holds. Only the runner gets it: its sweep child must die with it,
    not go on measuring as an orphan. SIGINT goes to the whole process group instead, as a
    terminal's Ctrl-C does."""
    if until is None:
        hold = Hold(tmp_path.parent / f"{tmp_path.name}.hold", problem=2 if after else 1)
        until = lambda journal: len(journal.results) >= after and "test-held" in (in_flight(journal.path) or "")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JACBENCH_MACHINE": "testbox", "JACBENCH_TEST_DELAY": str(delay),
           **(hold.env if hold else {})}
    # a terminal's Ctrl-C reaches a runner that handles SIGINT, even where these tests were
    # started in the background of a shell, which ignores it (and children inherit that)
    proc = subprocess.Popen([sys.executable, "-m", "bench", *sweep_args(argv)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    journal_dir = tmp_path / ".partial"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.05)
        journals = list(journal_dir.glob("*.journal.jsonl")) if journal_dir.exists() else []
        if journals and until(Journal.read(journals[0])):
            break
    else:
        raise AssertionError("the sweep never reached the point to stop it at")
    if stop == signal.SIGINT:
        os.killpg(proc.pid, stop)
    else:
        os.kill(proc.pid, stop)
    assert proc.wait(timeout=60) == (-stop if stop == signal.SIGKILL else 128 + stop)
    (journal,) = journal_dir.glob("*.journal.jsonl")
    size = journal.stat().st_size
    if hold:
        hold.release()  # an orphan would go on now, and write
    time.sleep(1.5)
    assert journal.stat().st_size == size  # no orphan is still writing
    before = Journal.read(journal)
    assert after <= len(before.results) and before.remaining()
    assert not list(tmp_path.glob("*.json"))  # no results file: the run did not finish
    return before


def _kept(final: dict, before: dict) -> bool:
    """A pair's final record keeps what was measured before a kill: it is that record, or a
    later pass timed it again (its machine was busy then) and that first visit is among the
    record's visits, kept or dropped (NOTE: [Visits])."""
    if final == before:
        return True
    (first,) = before["extra_info"]["visits"]
    tries = [*final["extra_info"]["retimed"], *final["extra_info"]["visits"]]
    return any((v["started"], v["median"]) == (first["started"], first["median"]) for v in tries)


def test_sigkill_mid_sweep_then_resume_loses_and_repeats_nothing(tmp_path):
    argv = ["run", "--profile", "quick", "--device", "cpu", "--cases", "seed-*", "--strategies",
            "test-held,jacrev,jacfwd", "--plugin", PLUGIN, "--results-dir", tmp_path]
    before = _start_and_kill(argv, tmp_path, after=2)  # a problem done, test-held held in the next
    resumed = run_cli("run", "--resume", "--results-dir", tmp_path, check=True)
    assert "resuming" in resumed.stderr
    (final,) = tmp_path.glob("*.json")
    records = _records(final)
    assert sorted(records) == sorted(before.pairs)  # every pair, once
    doc = json.loads(final.read_text())
    assert len(doc["benchmarks"]) + len(doc["jacbench"]["untimed"]) == len(before.pairs)
    for pair, rec in before.results.items():  # measured before the kill: kept as measured
        assert _kept(records[pair], rec), (records[pair]["extra_info"], rec["extra_info"])
    assert not before.path.exists()
    results.load([final])


def test_the_same_command_resumes_an_unfinished_run(tmp_path):
    argv = ["run", "--profile", "quick", "--device", "cpu", "--cases", "seed-newton,seed-trig,seed-arm2",
            "--strategies", "test-held,jacfwd", "--plugin", PLUGIN, "--results-dir", tmp_path]
    before = _start_and_kill(argv, tmp_path, after=1)
    again = run_cli(*argv, check=True)
    assert "resuming 6 pairs on cpu" in again.stderr and f"{len(before.results)} already done" in again.stderr
    (final,) = tmp_path.glob("*.json")
    assert sorted(_records(final)) == sorted(before.pairs)
    fresh = run_cli(*argv, "--fresh", check=True)  # a finished run is not resumed; --fresh is a new run
    assert "running 6 pairs" in fresh.stderr and len(list(tmp_path.glob("*.json"))) == 2


def test_a_run_killed_while_it_times_pairs_again_resumes_and_every_pair_has_its_visits(tmp_path):
    """Two visits time each fast pair twice, the second time in a later pass (NOTE: [Visits]);
    a SIGKILL during that pass loses nothing and redoes no first pass."""
    argv = ["run", "--profile", "standard", "--device", "cpu", "--cases", "seed-newton,seed-trig,seed-arm2,seed-arm3,"
            "seed-powers", "--strategies", "jacrev,jacfwd,test-slow,test-held", "--plugin", PLUGIN, "--results-dir", tmp_path,
            "--timing", "visits=2,warmup=0,max_time=0.02"]  # brief visits; passes time disturbed ones again
    hold = Hold(tmp_path.parent / f"{tmp_path.name}.hold")
    hold.release()  # the first pass runs free; the second is held at its first test-held pair

    def in_the_second_pass(journal) -> bool:
        if journal.passes >= 2:
            hold.hold()  # before its fresh process has started
        return journal.passes >= 2 and "test-held" in (in_flight(journal.path) or "")

    before = _start_and_kill(argv, tmp_path, until=in_the_second_pass, hold=hold, delay=0.02)
    assert before.passes == 2 and 0 < len(before.retiming) <= len(before.pairs)
    firsts = {p: r["extra_info"]["visits"][0] for p, r in before.results.items()}
    resumed = run_cli(*argv, check=True)
    assert "resuming" in resumed.stderr
    (final,) = tmp_path.glob("*.json")
    records = _records(final)
    assert sorted(records) == sorted(before.pairs)
    for pair, rec in records.items():
        info = rec["extra_info"]
        assert info["status"] in TIMED, info["reason"]
        first = (firsts[pair]["started"], firsts[pair]["median"])  # kept, marked busy or not (NOTE: [Visits])
        assert any((v["started"], v["median"]) == first for v in [*info["visits"], *info["retimed"]])
        if "test-slow" in pair and not info["retimed"]:  # slower than a visit's cap: one visit
            assert len(info["visits"]) == 1
        elif not info["retimed"]:
            assert len(info["visits"]) == 2 and len(rec["stats"]["data"]) == sum(v["rounds"] for v in info["visits"])


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_an_interrupted_run_keeps_its_wall_time_and_a_resume_by_other_code_says_so(tmp_path, stop):
    argv = ["run", "--profile", "quick", "--device", "cpu", "--cases", "seed-newton,seed-trig",
            "--strategies", "test-held,jacfwd", "--plugin", PLUGIN, "--results-dir", tmp_path]
    held = []  # when the test first saw the test-held pair held

    def held_a_while(journal) -> bool:  # in the second problem: the first one's pairs are journaled
        if not journal.results or "test-held" not in (in_flight(journal.path) or ""):
            return False
        held.append(time.monotonic())
        return held[-1] - held[0] >= 0.5

    before = _start_and_kill(argv, tmp_path, after=1, stop=stop, until=held_a_while,
                             hold=Hold(tmp_path.parent / f"{tmp_path.name}.hold", problem=2))
    assert before.wall_s >= held[-1] - held[0] >= 0.5  # the runner ran all the while the pair was held
    # every pair the sweep process journaled counts, whether or not the runner had seen it finish
    assert before.pace[0] == before.wall_s and before.pace[1] == len(before.results)
    entries = [json.loads(line) for line in before.path.read_text().splitlines()]
    (env,) = [e for e in entries if e["type"] == "env"]
    now = env["machine_info"]["jacbench"]["commit"]["id"]
    if now is None:
        pytest.skip("not a git checkout: no commit to compare")
    env["machine_info"]["jacbench"]["commit"]["id"] = "0123456789" + "0" * 30  # started by older code
    before.path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    resumed = run_cli(*argv, check=True)
    assert f"this run started at commit 0123456789 and resumes at {now[:10]}" in resumed.stderr
    (final,) = tmp_path.glob("*.json")
    assert json.loads(final.read_text())["jacbench"]["wall_s"] > before.wall_s


def test_after_a_call_stopped_part_way_the_sweep_goes_on_in_a_fresh_process(tmp_path):
    run_cli("run", "--profile", "quick", "--device", "cpu", "--cases", "seed-newton,seed-trig", "--strategies",
            "test-many-ops,test-slow", "--plugin", PLUGIN, "--results-dir", tmp_path, check=True,
            env={"JACBENCH_TEST_PROFILER_MB": "4"})
    rows = {(r["problem"], r["strategy"]): r for r in results.load(tmp_path.glob("*.json")).to_dict("records")}
    assert len(rows) == 4 and all(r["status"] in TIMED for r in rows.values())
    for problem in ("seed-newton", "seed-trig"):
        stopped, other = rows[(problem, "test-many-ops")], rows[(problem, "test-slow")]
        assert stopped["notes"]["memory"].startswith("peak memory not measured") and math.isnan(stopped["peak_bytes"])
        assert other["peak_bytes"] > 0 and "memory" not in other["notes"]
    assert len({r["notes"]["pid"] for r in rows.values()}) >= 2  # a pair after the first stop ran in a new process


def test_after_an_out_of_memory_the_sweep_goes_on_in_a_fresh_process(tmp_path):
    run_cli("run", "--profile", "quick", "--device", "cpu", "--cases", "seed-newton,seed-trig", "--strategies",
            "test-oom,test-slow", "--plugin", PLUGIN, "--results-dir", tmp_path, check=True)
    rows = {(r["problem"], r["strategy"]): r for r in results.load(tmp_path.glob("*.json")).to_dict("records")}
    assert [rows[(p, "test-oom")]["status"] for p in ("seed-newton", "seed-trig")] == ["oom", "oom"]
    slow = [rows[(p, "test-slow")] for p in ("seed-newton", "seed-trig")]
    assert len(slow) == 2 and all(r["status"] in TIMED for r in slow)
    assert slow[0]["notes"]["pid"] != slow[1]["notes"]["pid"]  # an out-of-memory between them


def _running(results_dir) -> bool:
    return any(running(p) for p in results_dir.glob(".partial/*.journal.jsonl"))


def test_a_second_runner_on_the_same_run_is_refused(tmp_path):
    argv = ["run", "--profile", "quick", "--device", "cpu", "--cases", "seed-newton,seed-trig",
            "--strategies", "test-held", "--plugin", PLUGIN, "--results-dir", tmp_path]
    hold = Hold(tmp_path.parent / f"{tmp_path.name}.hold")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JACBENCH_MACHINE": "testbox", **hold.env}
    first = subprocess.Popen([sys.executable, "-m", "bench", *sweep_args(argv)], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not _running(tmp_path):
            time.sleep(0.05)
        second = run_cli(*argv)
        assert second.returncode == 2 and f"process {first.pid} on " in second.stderr.splitlines()[-1]
    finally:
        hold.release()
        first.wait(timeout=120)
    assert first.returncode == 0 and len(list(tmp_path.glob("*.json"))) == 1


def test_a_hanging_pair_times_out_and_the_sweep_goes_on(tmp_path):
    proc = run_cli("run", "--profile", "quick", "--device", "cpu", "--cases", "seed-newton",
                   "--strategies", "jacrev,test-hang,test-hang-later,jacfwd", "--plugin", PLUGIN, "--pair-timeout",
                   "10", "--results-dir", tmp_path, check=True)  # from each pair's start: a cold gate, loaded, fits
    (final,) = tmp_path.glob("*.json")
    status = {r["extra_info"]["strategy"]: r["extra_info"] for r in _records(final).values()}
    hang, later = status["test-hang"], status["test-hang-later"]
    assert hang["status"] == "timeout" and hang["reason"] == "stopped after the per-pair limit of 10 s"
    assert hang["error"] is None and hang["first_call_s"] is None  # it never got past its first call
    assert later["status"] == "timeout" and later["reason"].endswith("after its first call passed the accuracy check")
    assert later["error"] <= later["tolerance"] and later["first_call_s"] > 0  # what the gate found is kept
    assert status["jacrev"]["status"] in TIMED and status["jacfwd"]["status"] in TIMED
    assert not status["jacrev"]["cycles"] and not status["jacfwd"]["cycles"]  # the cycles hung: timed apart after
    assert "timeout" in proc.stderr


def test_a_crashing_pair_costs_only_that_pair(tmp_path):
    run_cli("run", "--profile", "quick", "--device", "cpu", "--cases", "seed-newton,seed-trig",
            "--strategies", "test-crash,jacrev", "--plugin", PLUGIN, "--results-dir", tmp_path, check=True)
    (final,) = tmp_path.glob("*.json")
    rows = {(r["extra_info"]["problem"], r["extra_info"]["strategy"]): r["extra_info"] for r in _records(final).values()}
    for problem in ("seed-newton", "seed-trig"):
        crashed = rows[(problem, "test-crash")]
        assert crashed["status"] == "error" and "SIGSEGV" in crashed["reason"]
        assert rows[(problem, "jacrev")]["status"] in TIMED


def test_progress_shows_counts_current_pair_elapsed_and_eta(tmp_path):
    proc = run_cli("run", "--profile", "quick", "--device", "cpu", "--cases", "seed-newton",
                   "--strategies", "jacrev,jacfwd,fd-forward", "--results-dir", tmp_path, check=True)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == ["[1/3", "[2/3", "[3/3"]
    assert "cpu float32 seed-newton jacrev" in lines[0]
    assert all("elapsed, ETA" in line for line in lines)
    assert lines[-1].rstrip().endswith("ok 3")

"""Every fault a one-line answer, and no file of the user's ever clobbered.

Each fault is made for real: a FIFO, a symbolic link, a device node made in the test's own
directory, a tiny tmpfs filled to the last byte, permissions enforced on root by dropping the
capabilities that override them, two processes started together, a run killed outright, a
torn journal. Where the machine does not allow one (mounting, making a device node), that
test skips.
"""

import ctypes
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT, TIMED, Hold, in_flight, made_once, run_cli, run_main, sweep_args

from bench.analysis import files
from bench.analysis.journal import Journal, running

pytestmark = pytest.mark.slow
PLUGIN = "tests.plugins.misbehaving"
ENV = {"PYTHONPATH": str(ROOT), "JACBENCH_MACHINE": "testbox"}


def one_line(proc, *fragments) -> str:
    """The command failed with exit status 2 and one line, and no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    error = [line for line in lines if line.startswith("jacbench: error:")]
    assert len(error) == 1 and error[0] == lines[-1], proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in error[0], (fragment, error[0])
    return error[0]


def snapshot(directory: Path) -> dict:
    """Every entry under ``directory``: its kind, inode and content (of regular files)."""
    out = {}
    for path in sorted(Path(directory).rglob("*")):
        st = os.lstat(path)
        body = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(path)] = (stat.S_IFMT(st.st_mode), st.st_ino, body)
    return out


def _sweep(results_dir, *extra, strategies="test-held", cases="seed-newton,seed-trig"):
    return ["run", "--profile", "quick", "--device", "cpu", "--cases", cases, "--strategies", strategies,
            "--plugin", PLUGIN, "--results-dir", results_dir, *extra]


def _start(argv, hold: Hold | None = None, **kw) -> subprocess.Popen:
    """A sweep started in the background; with ``hold``, its ``test-held`` pairs wait on it."""
    env = {**os.environ, **ENV, **(hold.env if hold else {})}
    return subprocess.Popen([sys.executable, "-m", "bench", *sweep_args(argv)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _finish(proc: subprocess.Popen, timeout=300) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def _journal(results_dir: Path) -> Path | None:
    found = list(Path(results_dir).glob(".partial/*.journal.jsonl"))
    return found[0] if found else None


def _done(results_dir, n):
    path = _journal(results_dir)
    return path is not None and len(Journal.read(path).results) >= n


def _held(results_dir) -> bool:
    """A ``test-held`` pair of the sweep in ``results_dir`` is in flight: held, if held."""
    return "test-held" in (in_flight(_journal(results_dir)) or "")


@pytest.fixture(scope="session")
def killed(tmp_path_factory) -> Path:
    """The results directory of a run killed outright after the two pairs of its first
    problem, made once per test run (copy it)."""
    def kill(results):
        hold = Hold(results.parent / "killed.hold", problem=2)
        proc = _start(_sweep(results, strategies="test-held,jacrev"), hold, start_new_session=True)
        _wait_for(lambda: _done(results, 2) and _held(results))  # one problem done, test-held held in the next
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        hold.release()

    return made_once(tmp_path_factory, "killed", kill)


def _copy(killed: Path, to: Path) -> Path:
    """A copy of the killed run in ``to``, its results to go there too: the copy's journal."""
    shutil.copytree(killed, to, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".made"))
    journal = _journal(to)
    header, rest = journal.read_text().split("\n", 1)
    header = json.loads(header)
    header["output"] = str(to / Path(header["output"]).name)
    journal.write_text(json.dumps(header) + "\n" + rest)
    return journal


def _pairs(results_dir: Path) -> list[str]:
    (out,) = Path(results_dir).glob("*.json")
    doc = json.loads(out.read_text())
    return sorted(r["param"] for r in doc["benchmarks"] + doc["jacbench"]["untimed"])


# --- outputs: written whole, over regular files only ------------------------------------------

def _make(kind: str, where: Path) -> Path:
    path = where / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":  # /dev/full's numbers, on a node of our own
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        except PermissionError:
            pytest.skip("this machine does not let the tests make a device node")
    elif kind == "directory":
        path.mkdir()
    return path


OUTPUTS = {
    "report": lambda r, out: ("report", r, "-o", out),
    "compare": lambda r, out: ("compare", r, r, "-o", out),
    "run --report": lambda r, out: ("run", "--device", "cpu", "--profile", "quick", "--cases", "seed-trig",
                                    "--strategies", "jacrev", "--results-dir", out.parent / "r", "--report", out),
    "advise": lambda r, out: ("advise", "tests.test_advise:SmallNet", "--input-shape", "6", "-o", out),
}
KINDS = {"fifo": "is a FIFO", "device": "is a character device", "directory": "is a directory"}


@pytest.mark.parametrize("command", OUTPUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_an_output_that_is_not_a_regular_file_is_refused_before_any_work(tiny_results, tmp_path, command, kind):
    target = _make(kind, tmp_path)
    before = snapshot(tmp_path)
    # in this process (seconds less), but for the FIFO: opened by mistake, it would block for good
    proc = run_cli(*OUTPUTS[command](tiny_results, target), timeout=120) if kind == "fifo" else \
        run_main(*OUTPUTS[command](tiny_results, target))
    one_line(proc, f"{target} {KINDS[kind]}; jacbench writes only regular files")
    assert snapshot(tmp_path) == before  # untouched, and nothing else made (no run started)


def test_an_output_through_a_symlink_replaces_the_file_it_points_to(tiny_results, tmp_path):
    real, link, dangling = tmp_path / "real.html", tmp_path / "link.html", tmp_path / "dangling.html"
    real.write_text("old")
    link.symlink_to(real)
    dangling.symlink_to(tmp_path / "sub" / "new.html")
    for out in (link, dangling):
        run_cli("report", tiny_results, "-o", out, check=True)
        assert out.is_symlink()
    for written in (real, tmp_path / "sub" / "new.html"):  # the second in the directory it was missing
        assert written.read_text().startswith("<!doctype html>")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dangling.html", "link.html", "new.html", "real.html",
                                                           "sub"]


@pytest.mark.parametrize("where, fragment", [
    ("/proc/jacbench-forbidden/x.html", "/proc/jacbench-forbidden: cannot create directory"),
    ("FILE/x.html", "FILE/x.html: cannot write: Not a directory"),
])
def test_an_output_in_a_place_that_takes_no_file_is_one_line(tiny_results, tmp_path, where, fragment):
    (tmp_path / "FILE").write_text("mine")
    out = where.replace("FILE", str(tmp_path / "FILE"))
    one_line(run_main("report", tiny_results, "-o", out), fragment.replace("FILE", str(tmp_path / "FILE")))
    assert (tmp_path / "FILE").read_text() == "mine"


def test_a_relative_results_dir_is_the_one_in_the_users_directory(tmp_path):
    """The sweep process runs in the repository; the paths it is given are the user's."""
    run_cli("run", "--profile", "quick", "--device", "cpu", "--cases", "seed-trig", "--strategies", "jacrev",
            "--results-dir", "mine", cwd=tmp_path, check=True)
    assert _pairs(tmp_path / "mine") == ["cpu-float32-seed-trig-jacrev"]


def test_a_results_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("mine")
    one_line(run_cli(*_sweep(tmp_path / "taken")), f"{tmp_path / 'taken'} is not a directory")
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_writer_killed_mid_write_leaves_a_temporary_file_the_next_write_removes(tmp_path):
    out = tmp_path / "r.json"
    out.write_text("old")
    slow = ("import sys; from bench.analysis import files; "
            "files.write_atomic(sys.argv[1], {str(i): list(range(50)) for i in range(400_000)})")
    proc = subprocess.Popen([sys.executable, "-c", slow, str(out)], cwd=ROOT, env={**os.environ, **ENV})
    _wait_for(lambda: list(tmp_path.glob(".r.json.*.tmp")))
    proc.kill()
    proc.wait()
    assert out.read_text() == "old" and list(tmp_path.glob(".r.json.*.tmp"))
    files.write_atomic(out, {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1} and sorted(tmp_path.iterdir()) == [out]


# --- a full disk ----------------------------------------------------------------------------

@contextmanager
def tmpfs(where: Path, size: str):
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(where: Path) -> Path:
    """Take every free byte of the file system ``where`` is on."""
    filler = where / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_full_disk_keeps_the_old_report_whole(tiny_results, tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        out = disk / "report.html"
        out.write_text("the old report")
        fill(disk)
        before = snapshot(disk)
        one_line(run_cli("report", tiny_results, "-o", out), f"{out}: cannot write: No space left on device")
        assert snapshot(disk) == before  # the old report whole, no temporary file left


def test_a_disk_that_fills_up_mid_sweep_stops_it_in_one_line_and_a_rerun_loses_nothing(tmp_path):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        argv = _sweep(disk, strategies="test-held,jacrev,jacfwd")
        hold = Hold(tmp_path / "hold", problem=2)
        proc = _start(argv, hold)
        _wait_for(lambda: _done(disk, 1) and _held(disk))
        filler = fill(disk)
        hold.release()  # its next write finds the disk full
        one_line(_finish(proc), "No space left on device")
        kept = Journal.read(_journal(disk)).results
        assert kept and not list(disk.glob("*.json"))
        filler.unlink()
        run_cli(*argv, check=True)
        pairs = _pairs(disk)
        assert len(pairs) == len(set(pairs)) == 6 and set(kept) <= set(pairs)  # none lost, none twice
        doc = json.loads(next(disk.glob("*.json")).read_text())
        records = doc["benchmarks"] + doc["jacbench"]["untimed"]
        assert all(r["extra_info"]["status"] in TIMED for r in records), [
            (r["param"], r["extra_info"]["status"], r["extra_info"]["reason"]) for r in records]


# --- permissions: root without the capabilities that override them --------------------------

def _no_override():
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    bounding set, so that the command, run as root, meets file permissions like any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


def as_user(*argv) -> subprocess.CompletedProcess:
    return run_cli(*argv, preexec_fn=_no_override, timeout=300)


@pytest.fixture
def permissions(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    proc = subprocess.run(["touch", str(probe / "x")], preexec_fn=_no_override, capture_output=True)
    if proc.returncode == 0:
        pytest.skip("permissions do not bind here even without CAP_DAC_OVERRIDE")
    yield
    for path in tmp_path.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_an_unwritable_results_dir_is_one_line(tmp_path, permissions):
    results = tmp_path / "results"
    results.mkdir(mode=0o555)
    one_line(as_user(*_sweep(results)), f"{results}: cannot write here: Permission denied")
    assert not list(results.iterdir())


def test_an_unwritable_partial_dir_is_one_line(tmp_path, permissions):
    results = tmp_path / "results"
    (results / ".partial").mkdir(parents=True)
    (results / ".partial").chmod(0o555)
    one_line(as_user(*_sweep(results)), f"{results / '.partial'}: cannot write here: Permission denied")
    assert not list((results / ".partial").iterdir())


def test_a_read_only_journal_is_one_line_and_stays_as_it_was(killed, tmp_path, permissions):
    journal = _copy(killed, tmp_path)
    journal.chmod(0o444)
    journal.parent.chmod(0o555)
    before = snapshot(tmp_path)
    one_line(as_user(*_sweep(tmp_path, strategies="test-held,jacrev")), f"{journal}", "Permission denied")
    assert snapshot(tmp_path) == before


def test_an_unwritable_report_directory_is_one_line_before_rendering(tiny_results, tmp_path, permissions):
    out = tmp_path / "reports"
    out.mkdir(mode=0o555)
    one_line(as_user("report", tiny_results, "-o", out / "r.html"), f"{out}: cannot write here: Permission denied")


# --- one run per journal --------------------------------------------------------------------

def test_of_two_identical_runs_started_together_exactly_one_runs(tmp_path):
    for attempt in range(2):
        results, hold = tmp_path / str(attempt), Hold(tmp_path / f"hold{attempt}")
        procs = [_start(_sweep(results), hold) for _ in range(2)]
        _wait_for(lambda: any(p.poll() is not None for p in procs))  # one refused while the other is held
        hold.release()
        done = [_finish(p) for p in procs]
        assert sorted(d.returncode for d in done) == [0, 2], [d.stderr[-1000:] for d in done]
        winner = procs[[d.returncode for d in done].index(0)]
        error = one_line(next(d for d in done if d.returncode == 2))
        assert f"process {winner.pid} on " in error and "is running" in error
        assert _pairs(results) == ["cpu-float32-seed-newton-test-held", "cpu-float32-seed-trig-test-held"]
        assert not list(results.glob(".partial/*"))  # the journal finished and removed; no lock file left


def test_a_different_plan_in_the_same_results_dir_runs_alongside_and_says_so(tmp_path):
    hold = Hold(tmp_path / "hold")
    first = _start(_sweep(tmp_path), hold)
    _wait_for(lambda: _held(tmp_path))
    second = run_cli(*_sweep(tmp_path, cases="seed-arm2"))
    hold.release()
    assert _finish(first).returncode == 0 and second.returncode == 0, second.stderr
    assert "note: 1 other run is going on in" in second.stderr
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_resume_takes_the_newest_journal_that_is_not_running(killed, tmp_path):
    idle = _copy(killed, tmp_path)
    hold = Hold(tmp_path.parent / f"{tmp_path.name}.hold")
    busy = _start(_sweep(tmp_path, cases="seed-arm2"), hold)
    try:
        _wait_for(lambda: any(running(p) for p in tmp_path.glob(".partial/*.journal.jsonl")))
        proc = run_cli("run", "--resume", "--results-dir", tmp_path)
        assert proc.returncode == 0 and f"resuming {idle}" in proc.stderr, proc.stderr
    finally:
        hold.release()
        _finish(busy)


# --- journals -------------------------------------------------------------------------------

def test_a_torn_journal_tail_resumes_at_the_first_try(killed, tmp_path):
    journal = _copy(killed, tmp_path)
    done = Journal.read(journal).results
    with open(journal, "a") as f:
        f.write('{"type": "result", "pair": "cpu-flo')  # a write the kill cut short
    proc = run_cli(*_sweep(tmp_path, strategies="test-held,jacrev"))
    assert proc.returncode == 0, proc.stderr
    assert len(_pairs(tmp_path)) == 4 and set(done) <= set(_pairs(tmp_path))


@pytest.mark.parametrize("damage, fragment", [
    (lambda h: h.pop("pairs"), "the header's 'pairs' is missing"),
    (lambda h: h.update(settings=[]), "the header's 'settings' is list"),
    (lambda h: h["pairs"][0].pop("problem"), "the header's pair 1: 'problem' is missing"),
])
def test_a_journal_missing_header_keys_is_one_line(killed, tmp_path, damage, fragment):
    journal = _copy(killed, tmp_path)
    lines = journal.read_text().splitlines()
    header = json.loads(lines[0])
    damage(header)
    journal.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    one_line(run_cli("run", "--resume", journal), f"{journal}: {fragment}; not a journal this jacbench can run")


@pytest.mark.parametrize("source, fragment", [
    ("def broken(:\n", "SyntaxError: "),
    ("raise RuntimeError('no GPU budget today')\n", "RuntimeError: no GPU budget today"),
])
def test_a_broken_plugin_is_one_line(tmp_path, source, fragment):
    (tmp_path / "myplugin.py").write_text(source)
    proc = run_cli("run", "--device", "cpu", "--plugin", "myplugin", "--results-dir", tmp_path / "r",
                   cwd=tmp_path, env={"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    one_line(proc, "cannot import plugin 'myplugin': ", fragment)
    assert not (tmp_path / "r").exists()


# --- signals --------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def test_a_sweep_process_killed_by_an_operator_is_recorded_with_its_signal(tmp_path):
    hold = Hold(tmp_path.parent / f"{tmp_path.name}.hold")
    proc = _start(_sweep(tmp_path), hold)
    _wait_for(lambda: _held(tmp_path))
    (child,) = _children(proc.pid)
    os.kill(child, signal.SIGKILL)
    hold.release()  # the next pair, in a fresh process, goes on at once
    assert _finish(proc).returncode == 0
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    killed = [r["extra_info"] for r in doc["jacbench"]["untimed"]]
    assert len(killed) == 1 and killed[0]["status"] == "error"
    assert "was killed by SIGKILL" in killed[0]["reason"]
    if "oom_kill " in Path("/proc/vmstat").read_text():
        assert "the kernel's OOM killer did not act meanwhile" in killed[0]["reason"]

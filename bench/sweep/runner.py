"""Running a sweep so that nothing is lost: a supervised pytest child and its journal.

The sweep runs in a child process (``pytest bench/sweep/suite.py -p bench.sweep.plugin``). This process
watches the journal the child appends to, prints progress, and steps in when the child
misbehaves:

* a pair that runs past the per-pair time limit: the child is killed, the pair is recorded
  as ``timeout``, and a new child carries on with the rest;
* a child that dies (segfault, abort, a signal): the pair it was running is recorded as
  ``error`` with the signal, or as ``oom`` where the kernel's OOM killer's count of kills
  rose meanwhile (its SIGKILL looks like anyone's), and a new child carries on.

When every pair has a result, the results file is assembled from the journal and written
atomically, and the journal is removed. A run stopped with Ctrl-C or a plain ``kill``
(SIGTERM, as a batch scheduler's time limit sends) journals the wall time it spent first; a
run killed outright leaves its journal all the same. Running the same command again (or
``jacbench run --resume``) finishes the rest. One process at a time runs a journal (its
:class:`~bench.analysis.journal.Lock`); a second is refused with the first one's name.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from bench.analysis import files, load, visits
from bench.analysis.journal import Journal, JournalError, Lock, RunError, Terminated, find_unfinished
from bench.analysis.results import assemble, file_name
from bench.analysis.schema import Row, Status
from bench.render import terminal
from bench.sweep import machine, plan as planning
from bench.analysis.schema import Pair
from bench.measure.pair import Settings
from bench.sweep.plugin import UNWRITABLE, record
from bench.sweep.progress import Progress, account

ROOT = Path(__file__).resolve().parents[2]
SWEEP = Path(__file__).resolve().parent / "suite.py"
POLL = 0.1
#: seconds a fresh sweep process may take to start (import torch, collect the plan) before the
#: per-pair limit applies: a loaded machine's slow start-up is not the first pair's timeout
STARTUP_S = 60.0


def partial_dir(results_dir: Path) -> Path:
    return Path(results_dir) / ".partial"


def prepare(pairs: list[Pair], settings: Settings, device: str, results_dir: Path,
            selection: dict, *, fresh: bool = False, shard: str | None = None,
            plugins: list[str] | None = None) -> tuple[Path, bool]:
    """The journal for this plan: an unfinished one with the same fingerprint, or a new one.

    Returns the journal path and whether it resumes earlier work. The journal is named after
    the plan's fingerprint, so that two processes starting the same plan at once meet at one
    journal, which only one of them runs; a different plan has a journal of its own.
    """
    files.directory(results_dir)
    ident = {"torch": machine.describe(device)["torch_build"], "device": device,
             "machine": machine.machine_name()}
    fingerprint = planning.fingerprint(pairs, settings, ident)
    path = partial_dir(results_dir) / f"{device}-{fingerprint}.journal.jsonl"
    if not fresh:
        earlier = [path] if path.exists() else find_unfinished(partial_dir(results_dir), fingerprint)
        if earlier:  # (a journal of an older jacbench is named otherwise)
            return earlier[0], True
    started = datetime.now()
    run_id = uuid.uuid4().hex[:12]
    header = {
        "run_id": run_id,
        "created": started.astimezone(timezone.utc).isoformat(),
        "fingerprint": fingerprint,
        "output": str(Path(results_dir).absolute() / file_name(machine.describe(device), started)),
        "device": device,
        "settings": settings.as_dict(),
        "selection": selection,
        "shard": shard,
        "plugins": plugins or [],
        "pairs": [{"id": p.id, **p.__dict__, "row": planning.identity(p, settings.seed)} for p in pairs],
    }
    try:
        if path.exists():  # --fresh over an earlier run of this plan, unless a process runs it now
            with Lock(path):
                Journal.create(path, header, replace=True)
        else:
            Journal.create(path, header)
    except FileExistsError:  # the same plan, started by another process this very moment
        return path, True
    return path, False


def _output(journal: Journal) -> Path:
    """Where the results go: the planned name, unless a results file of another run took it
    (two runs started in the same second)."""
    out = Path(journal.header["output"])
    try:
        taken = json.loads(out.read_text())["jacbench"]["run_id"] != journal.header["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        taken = out.exists()
    return out.with_name(f"{out.stem}-{journal.header['run_id'][:6]}{out.suffix}") if taken else out


def execute(journal_path: Path, *, python: str = sys.executable, stream=sys.stderr,
            clock=time.monotonic, max_pairs: int | None = None, live: bool | None = None) -> Path | None:
    """Run the journal's pending pairs and write the results file once none is left.

    Args:
        python: the interpreter of the sweep child (another torch environment, say).
        max_pairs: run this many pending pairs, in plan order, and the rest of the last one's
            problem (its pairs are timed together), then return None if pairs remain
            (environments interleave this way, a slice of the plan at a time).
        live: a live bar (``bench.sweep.progress``) rather than a line per pair; by default
            where ``stream`` is a terminal.
    """
    journal_path = Path(journal_path).absolute()  # the sweep process runs in the repository
    with Lock(journal_path), _terminate_as_interrupt():
        return _execute(journal_path, python, stream, clock, max_pairs, live)


class _terminate_as_interrupt:
    """While a run executes, SIGTERM raises :class:`Terminated` instead of ending the process
    on the spot, so the run's ``finally`` journals the wall time this piece spent. Only where
    Python lets a handler be set (the main thread) and none was set outside Python."""

    def __enter__(self):
        self.previous = signal.getsignal(signal.SIGTERM)
        if self.previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._raise)
        else:
            self.previous = None

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False

    @staticmethod
    def _raise(signum, frame):
        raise Terminated()


def _execute(journal_path, python, stream, clock, max_pairs, live) -> Path | None:
    journal = Journal.read(journal_path)
    target = set(_whole_problems(journal, max_pairs))
    _warn_if_code_changed(journal, stream)
    rows = {p["id"]: {"strategy": p["strategy"], **(p.get("row") or {})} for p in journal.header["pairs"]}
    planned = journal.planned()
    progress = Progress(list(planned.values()), journal.results, history=journal.results, rows=rows,
                        pace=journal.pace, stream=stream, clock=clock, live=live)
    log = Path(journal_path).with_suffix(".log")
    began, failed, done_before = clock(), None, len(journal.results)
    try:
        journal = _run(journal_path, target, progress, python, log, clock)
        progress.close()
        policy = Settings.from_dict(journal.header["settings"]).policy.__dict__  # its defaults filled in
        last = policy["visits"] + policy["retimes"]
        while not journal.remaining() and journal.passes < last:
            _mark_busy(journal, journal_path)
            again = [p for p in journal.pairs if visits.wanted(journal.results[p], policy)]
            if not again:
                break
            disturbed = sum(visits.disturbed(journal.results[p]) for p in again)
            terminal.say(f"pass {journal.passes + 1} (of at most {last}): timing {len(again)} pairs again, in a "
                         f"fresh process: {len(again) - disturbed} for another visit, {disturbed} whose timing "
                         f"other work disturbed (their rounds waited for a CPU, or the machine was busy)", stream)
            journal.append({"type": "retime", "pairs": again, "round": journal.passes + 1})
            progress = Progress([planned[p] for p in again], history=journal.results, rows=rows, stream=stream,
                                clock=clock, label=f"pass {journal.passes} ", live=live)  # the one just begun
            journal = _run(journal_path, set(again), progress, python, log, clock)
            progress.close()
        if not journal.remaining():
            _mark_busy(journal, journal_path)
            for pair in journal.pairs:
                final = visits.settled(journal.results[pair])
                if final is not None:
                    journal.append({"type": "result", "pair": pair, "record": final, "replaces": True})
    except BaseException as e:
        failed = e
        raise
    finally:  # an interrupted piece of a run counts towards its wall time too
        progress.close()
        try:  # with every pair the sweep process journaled, whether or not this process saw it yet
            journal = Journal.read(journal_path)
            journal.append({"type": "wall", "seconds": clock() - began, "pairs": len(journal.results) - done_before})
        except (OSError, JournalError):
            if failed is None:  # else the failure that stopped the run is the one to tell
                raise
        if isinstance(failed, KeyboardInterrupt):
            terminal.say(f"stopped with {len(journal.results)} of {len(journal.pairs)} pairs done, "
                         f"kept in {journal_path}", stream)
    if journal.remaining():
        return None
    account(journal.results, len(journal.pairs), journal.wall_s, stream)
    out = files.write_atomic(_output(journal), assemble(journal, wall_s=journal.wall_s,
                                                                load=load.read(load.path(journal_path))))
    for path in (journal_path, log, load.path(journal_path)):
        Path(path).unlink(missing_ok=True)
    return out


def _whole_problems(journal: Journal, n: int | None) -> list[str]:
    """The first ``n`` pending pairs (all where None), and the rest of the last one's problem:
    a problem's pairs are timed together, in one process (NOTE: [Paired timing])."""
    remaining, planned = journal.remaining(), journal.planned()
    take = remaining[:n] if n is not None else remaining
    while take and len(take) < len(remaining):
        following = remaining[len(take)]
        if planned[following].timed_with != planned[take[-1]].timed_with:
            break
        take.append(following)
    return take


def _mark_busy(journal: Journal, journal_path) -> None:
    """Mark the visits during which the sampled load says the machine was busy (NOTE: [Visits])."""
    samples = load.read(load.path(journal_path))
    for pair in journal.pairs:
        marked = visits.annotated(journal.results[pair], samples)
        if marked is not None:
            journal.append({"type": "result", "pair": pair, "record": marked, "replaces": True})


def _run(journal_path, target: set, progress, python, log, clock) -> Journal:
    """Run the target pairs still pending, with a fresh process after each crash or timeout."""
    journal = Journal.read(journal_path)
    settings = Settings.from_dict(journal.header["settings"])
    pairs = journal.planned()
    identities = {p["id"]: p.get("row") for p in journal.header["pairs"]}
    sampler = load.Sampler(load.path(journal_path))
    while target & set(journal.remaining()):
        pending = len(target & set(journal.remaining()))
        outcome, current = _supervise(journal_path, settings.pair_timeout, progress, python, log, pairs,
                                      clock, pending, sampler)
        journal = Journal.read(journal_path)
        if outcome == _exit_text(UNWRITABLE):
            said = [line for line in _lines(log) if "cannot write the journal" in line]
            why = said[-1].rsplit(": ", 1)[-1].strip(" !") if said else f"see {log}"
            raise RunError(f"the sweep process could not write the journal {journal_path} ({why}); "
                           f"free space or fix its permissions, then run the same command again")
        if not target & set(journal.remaining()):
            break
        if isinstance(current, list):  # it died timing a problem's pairs together: alone, a crash is the pair's own
            journal.append({"type": "apart", "pairs": [p for p in current if p in journal.remaining()]})
            continue
        if current is None or current not in journal.remaining():
            if outcome == "ended" and len(target & set(journal.remaining())) < pending:
                continue  # it finished a pair and asked for a fresh process
            raise RunError(f"the sweep process {outcome} with {len(journal.remaining())} pairs left and none "
                           f"running; see {log}: {_tail(log)}")
        status, reason = _blame(outcome, settings.pair_timeout)
        entry = {"type": "result", "pair": current}
        if current in journal.retiming:  # a later visit failed: the earlier visits stand, and say so
            before = journal.results[current]
            info = {**before["extra_info"], "revisit_failed": True, "reason": f"timing it again in a later visit: {reason}"}
            entry.update(record=record(pairs[current], info, before.get("stats"), before.get("options")),
                         replaces=True)
        else:
            info = _untimed_info(pairs[current], identities[current], settings, status, reason, journal.checked.get(current))
            entry["record"] = record(pairs[current], info)
        journal.append(entry)
        progress.finished(pairs[current], info)
    return journal


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the runner dies, however it dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _supervise(journal_path, timeout, progress, python, log, pairs, clock, limit,
               sampler: "load.Sampler") -> tuple[str, str | list[str] | None]:
    """Run one child until it exits or a pair times out. Returns (outcome, pair in flight),
    or the pairs in flight where it was timing a problem's pairs together."""
    # pytest with the two plugins the sweep needs and no other: none of the environment's own
    # (hypothesis imports itself at exit, xdist reads options), and not the hooks that collect
    # the garbage of a torch-sized heap several times over on the way out (1.4 s a process)
    cmd = [python, "-m", "pytest", str(SWEEP), "-p", "pytest_benchmark.plugin", "-p", "bench.sweep.plugin",
           f"--jacbench-journal={journal_path}", f"--jacbench-max-pairs={limit}", "-p", "no:unraisableexception",
           "-p", "no:threadexception", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(ROOT),
           "-W", "ignore::DeprecationWarning"]
    path = [str(ROOT), os.getcwd(), os.environ.get("PYTHONPATH", "")]  # the cwd, for --plugin modules
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p), "PYTHONUNBUFFERED": "1",
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with open(log, "ab") as log_file:
        # Its own session, so a timeout kills the child with any workers it started (compile
        # workers); and death with the parent, so a killed runner leaves no orphan measuring on.
        child = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                 start_new_session=True, preexec_fn=_die_with_parent)
    offset = Path(journal_path).stat().st_size
    oom_kills = _oom_kills()
    current, together, last_event, allowance = None, [], clock(), STARTUP_S  # the child's start-up is no pair's
    try:
        while True:
            offset, entries = _read_new(journal_path, offset)
            for e in entries:
                if e["type"] != "checked":  # the per-pair limit counts from the pair's start
                    last_event = clock()
                if e["type"] == "start":
                    current, allowance = e["pair"], 0.0
                    progress.running(pairs[current])
                elif e["type"] == "together":  # a problem's pairs timed together; each cycle beats
                    current, together = None, list(e["pairs"])
                elif e["type"] == "result":
                    current, together = None, [p for p in together if p != e["pair"]]
                    progress.finished(pairs[e["pair"]], e["record"]["extra_info"])
            sampler.sample(child.pid)
            code = child.poll()
            if code is not None:
                offset, entries = _read_new(journal_path, offset)
                for e in entries:
                    if e["type"] == "result":
                        current, together = None, [p for p in together if p != e["pair"]]
                        progress.finished(pairs[e["pair"]], e["record"]["extra_info"])
                    elif e["type"] == "start":
                        current = e["pair"]
                    elif e["type"] == "together":
                        current, together = None, list(e["pairs"])
                return _exit_text(code, oom_kills), together or current
            if clock() - last_event > timeout + allowance:
                _kill(child)
                if together:
                    return Status.TIMEOUT, together
                if current is None:
                    current = next(iter(Journal.read(journal_path).remaining()), None)
                return Status.TIMEOUT, current
            time.sleep(POLL)
    except BaseException:
        _kill(child)
        raise


def _read_new(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    entries = [json.loads(line) for line in data[:end].decode().splitlines() if line.strip()]
    return offset + end, entries


def _kill(child: subprocess.Popen) -> None:
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()


def _oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (Linux), or None."""
    try:
        with open("/proc/vmstat") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("oom_kill ")), None)
    except OSError:
        return None


def _exit_text(code: int, oom_kills: int | None = None) -> str:
    """How the child ended. A SIGKILL is the kernel's OOM killer's only where its count of
    kills went up meanwhile; otherwise someone sent it, and it is recorded as that signal."""
    if code in (0, 1):
        return "ended"
    if code == -signal.SIGKILL:
        now = _oom_kills()
        if oom_kills is not None and now is not None and now > oom_kills:
            return "was killed by the kernel's OOM killer"
        return "was killed by SIGKILL" + (" (the kernel's OOM killer did not act meanwhile)" if now is not None else "")
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _blame(outcome: str, timeout: float) -> tuple[str, str]:
    if outcome == "timeout":
        return Status.TIMEOUT, f"stopped after the per-pair limit of {timeout:g} s"
    oom = outcome == "was killed by the kernel's OOM killer"
    return Status.OOM if oom else Status.ERROR, f"the sweep process {outcome} during this pair"


def _untimed_info(pair: Pair, planned: dict | None, settings: Settings, status: str, reason: str,
                  checked: dict | None = None) -> dict:
    """The row of a pair the child could not finish: what its gate found, if it got past it,
    else its planned identity (a journal from before identities were planned names the pair only)."""
    if checked is not None:
        return {**checked, "status": status, "reason": f"{reason}, after its first call passed the accuracy check"}
    row = Row(**planned) if planned else Row(pair.problem, pair.strategy, pair.device, pair.dtype, seed=settings.seed)
    row.status, row.reason = status, reason
    return row.info()


def _lines(log: Path) -> list[str]:
    try:
        return [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ["(no log)"]


def _tail(log: Path, lines: int = 3) -> str:
    return " | ".join(_lines(log)[-lines:])[-400:] or "(empty log)"


def _warn_if_code_changed(journal: Journal, stream) -> None:
    """A run resumed by other code than it started with says so: its file records the first
    commit only, and the pairs measured before and after may not be comparable."""
    started = (((journal.env or {}).get("machine_info") or {}).get("jacbench") or {}).get("commit") or {}
    now = machine.git_commit()
    if started.get("id") and now["id"] and started["id"] != now["id"]:
        terminal.say(f"jacbench: warning: this run started at commit {started['id'][:10]} and resumes at "
                     f"{now['id'][:10]}; if the measuring code changed, start over with --fresh", stream)

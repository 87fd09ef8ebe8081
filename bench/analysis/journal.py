"""The run journal: an append-only JSON-lines file that makes a sweep survive anything.

Line one is the header (the plan and settings). Then, as the sweep goes, ``env`` (the
environment, once per process), ``start`` (a pair is about to run), ``checked`` (its first
call passed the accuracy gate: what the gate found, kept should the pair not finish),
``result`` (a pair's record), ``retime`` (the pairs a later pass times again, for another
visit or because their timing was disturbed: NOTE: [Visits]; a ``result`` that
``replaces`` is their new record), ``together`` (the pairs of one problem, past their
gates, about to be timed together: NOTE: [Paired timing]; then a ``beat`` after each cycle
and each pair's finish, from which the runner's per-pair limit counts), ``apart`` (pairs to
time alone, because the process died while timing them together: alone, a crash is the
pair's own), ``owner`` (the process that took the journal's :class:`Lock` to run it) and
``wall`` (the seconds one ``jacbench run`` spent on it and the pairs it finished, when it
stops: a sweep resumed or interleaved in slices adds up its pieces). Each result is written,
flushed and fsynced as soon as it is measured (a pair that fails its gate at once, the
others once their problem is timed), so a run killed at any moment keeps every pair it
finished, and one killed while a problem's pairs were timed together times them again. A
line cut short by the kill is ignored on reading and trimmed (:func:`trim`) before the
journal is run again.

A journal is created whole and exclusively (two processes starting the same plan at once
cannot both create it), and one process at a time runs it (:class:`Lock`). Pure Python: no torch.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.analysis import files
from bench.analysis.schema import Pair

SCHEMA = 1


class JournalError(Exception):
    """A journal that cannot be read; the message is one line naming the file."""


class RunError(Exception):
    """The sweep itself (not a pair) cannot go on; the message is one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, which stops a run the way Ctrl-C does: its wall time is journaled first."""


class Journal:
    def __init__(self, path: Path, header: dict, entries: list[dict]):
        self.path = Path(path)
        self.header = header
        self.env: dict | None = next((e for e in entries if e["type"] == "env"), None)
        self.results: dict[str, dict] = {}
        self.checked: dict[str, dict] = {}  # the gate's row of each pair whose first call passed it
        self.wall_s = 0.0
        self.pace = (0.0, 0)  # seconds and pairs finished, of the pieces that recorded both
        self.retiming: dict[str, int] = {}  # pairs to be timed again, with the pass that does it
        self.passes = 1  # passes over the plan begun: the first, then those timing pairs again
        self.apart: set[str] = set()  # pairs to time alone: timing them with their problem's died
        for e in entries:
            self._take(e)

    def _take(self, entry: dict) -> None:
        if entry["type"] == "result":
            if entry.get("replaces"):
                self.retiming.pop(entry["pair"], None)
                self.results[entry["pair"]] = entry["record"]
            else:
                self.results.setdefault(entry["pair"], entry["record"])
        elif entry["type"] == "retime":
            self.passes = max(self.passes, entry["round"])
            self.retiming.update((p, entry["round"]) for p in entry["pairs"] if p in self.results)
        elif entry["type"] == "apart":
            self.apart.update(entry["pairs"])
        elif entry["type"] == "checked":
            self.checked[entry["pair"]] = entry["info"]
        elif entry["type"] == "env" and self.env is None:
            self.env = entry
        elif entry["type"] == "wall":
            self.wall_s += entry["seconds"]
            if "pairs" in entry:
                self.pace = (self.pace[0] + entry["seconds"], self.pace[1] + entry["pairs"])

    @property
    def pairs(self) -> list[str]:
        """Pair ids of the whole plan, in order."""
        return [p["id"] for p in self.header["pairs"]]

    def planned(self) -> dict[str, Pair]:
        """The plan's pairs by id."""
        return {p["id"]: Pair(p["device"], p["dtype"], p["problem"], p["strategy"]) for p in self.header["pairs"]}

    def remaining(self) -> list[str]:
        """Pairs with no result yet, then pairs to be timed again."""
        return [p for p in self.pairs if p not in self.results] + [p for p in self.pairs if p in self.retiming]

    @classmethod
    def create(cls, path: Path, header: dict, *, replace: bool = False) -> "Journal":
        """Write a new journal whole under ``path``, which must not exist (two processes
        starting the same plan at once: one creates it, the other gets ``FileExistsError``),
        or which it replaces (``replace``: the caller holds the old one's :class:`Lock`)."""
        path = Path(path)
        files.directory(path.parent)
        header = {"type": "header", "schema": SCHEMA, **header}
        fd, tmp = files.temporary(path)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(header) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # atomic, and refuses an existing name
        finally:
            Path(tmp).unlink(missing_ok=True)
        return cls(path, header, [])

    @classmethod
    def read(cls, path: Path) -> "Journal":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise JournalError(f"{path}: cannot read journal ({e.strerror})") from None
        lines = text.split("\n")
        complete = lines[:-1]  # the last piece has no newline: empty, or cut short by a kill
        entries = []
        for i, line in enumerate(complete, 1):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise JournalError(f"{path}: line {i} is not valid JSON") from None
        if not entries or not isinstance(entries[0], dict) or entries[0].get("type") != "header":
            raise JournalError(f"{path}: not a jacbench journal (no header line)")
        if not isinstance(entries[0].get("schema", 0), int) or entries[0].get("schema", 0) > SCHEMA:
            raise JournalError(f"{path}: journal schema {entries[0]['schema']!r} is newer than this jacbench")
        problem = _invalid(entries[0], entries[1:])
        if problem:
            raise JournalError(f"{path}: {problem}; not a journal this jacbench can run")
        return cls(path, entries[0], entries[1:])

    def append(self, entry: dict, durable: bool = True) -> None:
        """Append one entry; ``durable`` fsyncs it before returning."""
        trim(self.path)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        self._take(entry)


def trim(path: Path) -> None:
    """Cut a torn last line (a write cut short by a kill) off the journal. The runner does it
    once, holding the journal's lock, before anyone reads the journal: a reader that started
    at the old size would read from the middle of the next line."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        data = f.seek(0) or f.read()
        f.truncate(data.rfind(b"\n") + 1)


#: The header's fields and their types, and each entry type's: what the runner and the sweep read.
_HEADER = {"run_id": str, "created": str, "output": str, "device": str, "settings": dict, "pairs": list}
_PAIR = {"id": str, "device": str, "dtype": str, "problem": str, "strategy": str}
_ENTRIES = {"result": {"pair": str, "record": dict}, "checked": {"pair": str, "info": dict},
            "retime": {"pairs": list, "round": int}, "wall": {"seconds": (int, float)}, "start": {"pair": str},
            "together": {"pairs": list}, "apart": {"pairs": list}}


def _lacks(entry: dict, fields: dict) -> str | None:
    for key, kind in fields.items():
        if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
            return f"{key!r} is {type(entry.get(key)).__name__ if key in entry else 'missing'}"
    return None


def _invalid(header: dict, entries: list) -> str | None:
    """What makes a journal unusable (missing or mistyped fields), or None."""
    wrong = _lacks(header, _HEADER)
    if wrong:
        return f"the header's {wrong}"
    for i, pair in enumerate(header["pairs"]):
        wrong = _lacks(pair, _PAIR) if isinstance(pair, dict) else "not an object"
        if wrong:
            return f"the header's pair {i + 1}: {wrong}"
    for i, entry in enumerate(entries, 2):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            return f"line {i} has no entry type"
        wrong = _lacks(entry, _ENTRIES.get(entry["type"], {}))
        if wrong:
            return f"line {i} ({entry['type']}): {wrong}"
    return None


class Lock:
    """The right to run a journal: an exclusive ``flock`` on the journal file itself.

    It belongs to this process's open file, so it ends however the process ends; a second
    process is refused with the holder's name (the ``owner`` entry each holder appends).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = open(self.path, "rb")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise RunError(_busy(self.path)) from None
        try:
            if not _same_file(self.path, self.file):
                raise RunError(f"{self.path} was finished or replaced by another jacbench process meanwhile")
            trim(self.path)
            Journal.read(self.path).append({"type": "owner", "pid": os.getpid(), "host": socket.gethostname(),
                                            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        except BaseException:
            self.file.close()
            raise

    def release(self) -> None:
        self.file.close()

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def _same_file(path: Path, file) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(file.fileno()).st_ino
    except FileNotFoundError:
        return False


def running(path: Path) -> bool:
    """Whether a process holds the journal's :class:`Lock` now."""
    try:
        with open(path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _busy(path: Path, wait: float = 2.0) -> str:
    """Who holds the journal's lock: its last ``owner`` entry, once the holder has written it
    (an entry of a process on this host that is gone is an earlier holder's)."""
    deadline = time.monotonic() + wait
    while True:
        owner = _owner(path)
        if owner and (owner.get("host") != socket.gethostname() or files.alive(owner.get("pid"))):
            who = f"process {owner['pid']} on {owner['host']}, since {owner.get('since')},"
            break
        if time.monotonic() > deadline:
            who = "another jacbench process"
            break
        time.sleep(0.05)
    return f"{who} is running {path}; wait for it, or stop it and run again to resume"


def _owner(path: Path) -> dict | None:
    try:
        entries = [json.loads(line) for line in Path(path).read_text().split("\n")[:-1]]
    except (OSError, ValueError):
        return None
    return next((e for e in reversed(entries) if isinstance(e, dict) and e.get("type") == "owner"), None)


def find_unfinished(directory: Path, fingerprint: str | None = None) -> list[Path]:
    """Journals under ``directory`` (newest first), optionally only those of one plan."""
    found = []
    for path in sorted(Path(directory).glob("*.journal.jsonl"), key=_mtime, reverse=True):
        try:
            header = Journal.read(path).header
        except JournalError:
            continue
        if fingerprint is None or header.get("fingerprint") == fingerprint:
            found.append(path)
    return found


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # finished and removed meanwhile
        return 0.0

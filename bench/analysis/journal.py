"""The run journal: an append-only JSON-lines file that makes a sweep survive anything.

Line one is the header (the plan and settings). Then, as the sweep goes, ``env`` (the
environment, once per process), ``start`` (a pair is about to run), ``checked`` (its first
call passed the accuracy gate: what the gate found, kept should the pair not finish),
``result`` (a pair's record), ``retime`` (the pairs a later pass times again, for another
visit or because their timing was disturbed: NOTE: [Visits]; a ``result`` that
``replaces`` is their new record) and ``wall`` (the seconds one
``jacbench run`` spent on it and the pairs it finished, when it stops: a sweep resumed or
interleaved in slices adds up its pieces). Each result is written, flushed and fsynced before the next pair starts, so a run
killed at any moment keeps every pair it finished. A line cut short by the kill is ignored
on reading and trimmed before appending. Pure Python: no torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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
    def create(cls, path: Path, header: dict) -> "Journal":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"type": "header", "schema": SCHEMA, **header}
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(header) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
        if not entries or entries[0].get("type") != "header":
            raise JournalError(f"{path}: not a jacbench journal (no header line)")
        if entries[0].get("schema", 0) > SCHEMA:
            raise JournalError(f"{path}: journal schema {entries[0]['schema']} is newer than this jacbench")
        return cls(path, entries[0], entries[1:])

    def append(self, entry: dict, durable: bool = True) -> None:
        """Append one entry; ``durable`` fsyncs it before returning."""
        self._trim_torn_tail()
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        self._take(entry)

    def _trim_torn_tail(self) -> None:
        with open(self.path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            data = f.seek(0) or f.read()
            f.truncate(data.rfind(b"\n") + 1)


def find_unfinished(directory: Path, fingerprint: str | None = None) -> list[Path]:
    """Journals under ``directory`` (newest first), optionally only those of one plan."""
    found = []
    for path in sorted(Path(directory).glob("*.journal.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            header = Journal.read(path).header
        except JournalError:
            continue
        if fingerprint is None or header.get("fingerprint") == fingerprint:
            found.append(path)
    return found

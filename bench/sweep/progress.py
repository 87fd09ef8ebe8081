"""What a running sweep shows: a live bar on a terminal, one line per pair elsewhere, and at
the end a short account of what ran and what failed, grouped by why.

NOTE: [ETA]
    The estimate of the time left learns from the pairs done: each pending pair is expected
    to take what the nearest-sized pair of the same strategy took, in the same family if one
    is done, else of the same kind, else anywhere; a strategy not seen yet takes the median
    pair's time. The sum is scaled by the wall time per second of pair work seen so far (the
    sweep process's start-up, the runner's polling), so a run of cheap ``unsupported`` pairs
    does not promise that the large networks to come will be as quick.
"""

from __future__ import annotations

import bisect
import math
import sys
import time
from collections import Counter

from bench.analysis.schema import Pair, Status
from bench.render import terminal

#: The statuses the live display prints above its bar as they happen: the ones to act on.
NOTEWORTHY = (Status.WRONG, Status.DISPUTED, Status.ERROR, Status.OOM, Status.TIMEOUT)
#: The statuses of pairs that were timed.
TIMED = (Status.OK, Status.DISTURBED)
#: Failure groups the closing account lists; the report's Failures table has every pair.
GROUPS = 8


def clock_text(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Estimate:
    """The seconds the pending pairs will take, learnt from those done (NOTE: [ETA]).

    Each pending pair keeps its best match so far, ``(rank, distance, seconds)``: rank 0 is
    the pair itself (timed again), 1 a pair of its strategy and family, 2 of its strategy and
    kind, 3 of its strategy; the distance is in log size. A pair done is compared with the
    pending pairs of its strategy only, and the sum is kept as it changes, so a sweep of
    thousands of pairs pays little per pair for its estimate.
    """

    def __init__(self, rows: dict[str, dict], pending=()):
        self.rows = rows  # pair id -> its planned identity (strategy, family, kind, problem_flops, n, m)
        self.took: dict[str, float] = {}  # pair id -> seconds of pair work
        self.times: list[float] = []  # every pair's seconds, sorted: their median
        self.pending: dict[str, Pair] = {}
        self.pending_by: dict[str, set[str]] = {}  # strategy -> its pending pairs
        self.best: dict[str, tuple] = {}  # pending pair id -> (rank, distance, seconds) of its best match
        self.done_by: dict[str, list[str]] = {}  # strategy -> its pairs done
        self.known = 0.0  # the sum of the pending pairs' matched seconds
        for pair in pending:
            self.expect(pair)

    def _where(self, pair_id: str) -> tuple:
        row = self.rows.get(pair_id) or {}
        size = row.get("problem_flops") or (row.get("n") or 1) * (row.get("m") or 1)
        return row.get("family"), row.get("kind"), math.log(max(float(size), 1.0))

    def _match(self, pair_id: str, done: str) -> tuple:
        """How well the pair ``done`` (of the same strategy) stands for the pending ``pair_id``."""
        if done == pair_id:
            return 0, 0.0, self.took[done]
        (family, kind, size), (f, k, s) = self._where(pair_id), self._where(done)
        return (1 if f == family else 2 if k == kind else 3), abs(s - size), self.took[done]

    def _set(self, pair_id: str, best: tuple | None) -> None:
        old = self.best.pop(pair_id, None)
        self.known -= old[2] if old else 0.0
        if best is not None:
            self.best[pair_id] = best
            self.known += best[2]

    def expect(self, pair: Pair) -> None:
        """Count ``pair`` among those still to run."""
        self.pending[pair.id] = pair
        self.pending_by.setdefault(pair.strategy, set()).add(pair.id)
        matches = [self._match(pair.id, d) for d in self.done_by.get(pair.strategy, ())]
        self._set(pair.id, min(matches) if matches else None)

    def learn(self, pair_id: str, seconds, strategy: str | None = None) -> None:
        """``pair_id`` (of ``strategy``, else the one its row names) took ``seconds``; it is
        no longer pending."""
        pair = self.pending.pop(pair_id, None)
        strategy = pair.strategy if pair else strategy or (self.rows.get(pair_id) or {}).get("strategy")
        if pair:
            self.pending_by[strategy].discard(pair_id)
            self._set(pair_id, None)
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            return
        if pair_id in self.took:
            self.times.remove(self.took[pair_id])
        else:
            self.done_by.setdefault(strategy, []).append(pair_id)
        self.took[pair_id] = float(seconds)
        bisect.insort(self.times, float(seconds))
        for other in self.pending_by.get(strategy, ()):
            match = self._match(other, pair_id)
            if other not in self.best or match[:2] < self.best[other][:2]:
                self._set(other, match)

    def _median(self) -> float:
        return self.times[len(self.times) // 2]

    def pair(self, pair: Pair) -> float | None:
        """What the pending ``pair`` will take, or None before any pair is done."""
        if not self.times:
            return None
        if pair.id not in self.pending:
            matches = [self._match(pair.id, d) for d in self.done_by.get(pair.strategy, ())]
            return min(matches)[2] if matches else self._median()
        return self.best[pair.id][2] if pair.id in self.best else self._median()  # a strategy not seen yet

    def seconds(self) -> float | None:
        """What the pending pairs will take together, or None before any pair is done."""
        if not self.times:
            return None
        return max(0.0, self.known) + (len(self.pending) - len(self.best)) * self._median()


class Progress:
    """Progress of one pass over ``pairs``, of which those in ``done`` are already done.

    ``history`` holds every result known (their seconds teach the estimate) and ``rows`` the
    planned identity of each pair. ``pace`` is the wall time and pair count of the earlier
    pieces of a resumed run. ``live`` draws a bar (a terminal); otherwise each finished pair
    is one line, as in a log.
    """

    def __init__(self, pairs: list[Pair], done=(), *, history: dict | None = None, rows: dict | None = None,
                 pace: tuple[float, int] = (0.0, 0), stream=sys.stderr, clock=time.monotonic, label: str = "",
                 live: bool | None = None):
        self.pairs, self.stream, self.clock, self.label = list(pairs), stream, clock, label
        done = set(done)
        self.pending = {p.id: p for p in self.pairs if p.id not in done}
        self.total = len(self.pairs)
        history = history or {}
        self.counts = Counter(history[p]["extra_info"]["status"] for p in done if p in history)
        self.estimate = Estimate(rows or {})
        for pair_id, result in history.items():
            self.estimate.learn(pair_id, result["extra_info"].get("seconds"))
        for pair in self.pending.values():
            self.estimate.expect(pair)
        before = [p for p in done if p in self.estimate.took]
        # the pair work the earlier pieces' wall time (``pace``) covers, where some of them
        # were killed before they recorded theirs: at the average pair's work
        self.before = (pace[0], sum(self.estimate.took[p] for p in before) * pace[1] / len(before) if before else 0.0,
                       pace[1])
        self.here, self.work = 0, 0.0  # the pairs finished in this piece, and their seconds of work
        self.started = clock()
        self.current: Pair | None = None
        self.live = _Live(self) if (terminal.is_terminal(stream) if live is None else live) else None

    @property
    def done(self) -> int:
        return self.total - len(self.pending)

    def session_elapsed(self) -> float:
        return self.clock() - self.started

    def eta(self) -> float | None:
        """Seconds left: the pending pairs' expected work times the wall time per second of
        pair work so far (at least 1); where no pair's work is known, the wall time per pair."""
        wall = self.session_elapsed() + self.before[0]
        work = self.estimate.seconds()
        if work is None:
            pairs = self.here + self.before[2]
            return wall / pairs * len(self.pending) if pairs else None
        seen = self.work + self.before[1]
        return work * max(1.0, wall / seen if seen > 0 else 1.0)

    def running(self, pair: Pair) -> None:
        self.current = pair
        if self.live:
            self.live.update()

    def finished(self, pair: Pair, info: dict) -> None:
        if pair.id not in self.pending:
            return
        del self.pending[pair.id]
        status = info["status"]
        self.counts[status] += 1
        self.estimate.learn(pair.id, info.get("seconds"), pair.strategy)
        self.here += 1
        self.work += self.estimate.took.get(pair.id, 0.0) if info.get("seconds") is not None else 0.0
        if self.current == pair:
            self.current = None
        if self.live:
            if status in NOTEWORTHY:
                self.live.note(f"{status}: {pair.label()}: {info.get('reason', '')}")
            self.live.update()
        else:
            self._line(pair, info)

    def tallies(self) -> str:
        return " ".join(f"{k} {v}" for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1]))

    def _line(self, pair: Pair, info: dict) -> None:
        """One line per pair; on a terminal (``--verbose``) a long reason wraps, indented, at
        the terminal's width, never inside a word."""
        width = len(str(self.total))
        eta = self.eta()
        head = (f"{self.label}[{self.done:>{width}}/{self.total}] {info['status']:<11} {pair.label()}  | "
                f"{clock_text(self.session_elapsed())} elapsed, ETA {clock_text(eta) if eta is not None else '?'}"
                f" | {self.tallies()}")
        reason = info.get("reason", "") if info["status"] != Status.OK else ""
        if terminal.is_terminal(self.stream):
            columns = terminal.width(self.stream)
            head = terminal.paragraph(head, columns, then="    ")
            terminal.say(head + ("\n" + terminal.paragraph(reason, columns, "    ") if reason else ""), self.stream)
        else:
            self.stream.write(f"{head}{'  ' + reason if reason else ''}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.live.stop()
            self.live = None


def account(results: dict, total: int, elapsed: float, stream=sys.stderr) -> None:
    """The closing account of a run: its pairs per status, and those that failed grouped by
    status and reason, most common first, in the terminal's width (at most 100 columns)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, width=terminal.width(stream), force_terminal=None if terminal.is_terminal(stream) else False)
    infos = [r["extra_info"] for r in results.values()]
    counts = Counter(i["status"] for i in infos)
    console.print(f"{len(infos)} of {total} pairs done in {clock_text(elapsed)}:", highlight=False)
    spent = where_the_time_went(infos, elapsed)
    if spent:
        console.print(spent, highlight=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("status")
    table.add_column("pairs", justify="right")
    for status, n in counts.most_common():
        table.add_row(str(status), str(n))
    console.print(table)
    unsupported = counts.get(Status.UNSUPPORTED, 0)
    if unsupported:
        console.print(f"{unsupported} unsupported: the strategy cannot run the problem's kind, device or torch, "
                      f"and says so at no cost.", highlight=False)
    failed = Counter((i["status"], i.get("reason") or "-") for i in infos
                     if i["status"] not in TIMED and i["status"] != Status.UNSUPPORTED)
    if not failed:
        return
    console.print("not timed, by reason:", highlight=False)
    groups = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    groups.add_column("pairs", justify="right")
    groups.add_column("status")
    groups.add_column("reason", overflow="fold", ratio=1)
    for (status, reason), n in failed.most_common(GROUPS):
        groups.add_row(str(n), str(status), reason)
    console.print(groups)
    if len(failed) > GROUPS:
        console.print(f"and {len(failed) - GROUPS} more reasons; the report's Failures table lists every pair")


#: The phases of a pair's ``spent`` (``bench.measure.pair``), as the account names them.
PHASES = {"rounds": "timed rounds", "gate": "gates", "probes": "probes of work and memory"}


def where_the_time_went(infos: list[dict], elapsed: float) -> str | None:
    """A run's wall time by phase: the pairs' timed rounds, gates (the first call checked
    against the reference, which the first gate of a problem computes) and probes (the
    answer gated again, the work count, t(f), the memory), and the rest outside any pair
    (starting processes, the runner's bookkeeping). None where no row says (an older file)."""
    spent = Counter()
    for info in infos:
        spent.update(info.get("spent") or {})
    if not spent or elapsed <= 0:
        return None
    parts = [f"{PHASES.get(k, k)} {clock_text(v)} ({v / elapsed:.0%})" for k, v in spent.most_common()]
    rest = elapsed - sum(spent.values())
    return "time: " + ", ".join(parts) + (f"; outside the pairs {clock_text(rest)} ({rest / elapsed:.0%})"
                                          if rest > 0 else "")


class _Live:
    """The bar on a terminal: pairs done of all, the pair running, status counts, elapsed and
    ETA; noteworthy outcomes are printed above it as they happen (rich)."""

    def __init__(self, progress: Progress):
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn
        from rich.text import Text

        self.progress = progress
        self.console = Console(file=progress.stream)
        self.bar = Bar(TextColumn(progress.label or "pairs"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[clock]}"), console=self.console)
        self.task = self.bar.add_task("", total=progress.total, completed=progress.done, clock="")
        self.status = Text(no_wrap=True, overflow="ellipsis")
        self.display = Live(Group(self.bar, self.status), console=self.console, refresh_per_second=4,
                            transient=False)
        self.display.start()
        self.update()

    def update(self) -> None:
        p = self.progress
        eta = p.eta()
        self.bar.update(self.task, completed=p.done,
                        clock=f"{clock_text(p.session_elapsed())} elapsed, ETA {clock_text(eta) if eta is not None else '?'}")
        running = f"running {p.current.label()}" if p.current else ""
        self.status.plain = "  ".join(s for s in (running, p.tallies()) if s)

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def stop(self) -> None:
        self.update()
        self.display.stop()

"""The machine's load across a run: how much of the CPUs other work took while the sweep measured.

NOTE: [Load across the run]
    About once a second the runner reads how many CPUs the whole machine kept busy
    (``/proc/stat``: user, nice, system, irq, softirq and steal time, since a hypervisor
    that takes the virtual CPU disturbs a timing as another process does), takes away what
    the runner and the sweep child's session used (``/proc/<pid>/stat``: the child, its
    threads and any workers it started), and keeps the rest: the CPUs
    other work used, averaged over the second. Beside it goes the kernel's CPU pressure
    where it has one (``/proc/pressure/cpu``, "some": the share of the last 10 s in which
    some task waited for a CPU). The machine was busy while other work used at least
    :data:`BUSY` of a CPU. Pure Python, Linux only: elsewhere nothing is sampled, and the
    report says so.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

EVERY = 1.0  # seconds between samples
BUSY = 0.5  # CPUs used by other work from which the machine counts as busy
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def path(journal_path) -> Path:
    """Where a run's samples are kept until its results file is written."""
    return Path(journal_path).with_suffix(".load.jsonl")


def _machine_busy() -> float | None:
    """CPU seconds the whole machine has been busy, all CPUs together."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _stat(pid) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _own_cpu(field: int, value: str) -> float:
    """CPU seconds used by this process and by the processes whose ``/proc/<pid>/stat``
    field ``field`` is ``value``: 1, the parent (a compiler's worker pool); 3, the session
    (a sweep child, which starts one of its own, with its threads and workers). Those others
    count with their ended children (cutime, cstime)."""
    me, total = str(os.getpid()), 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fields = _stat(pid)
        if fields is None:
            continue
        if pid == me:
            total += int(fields[11]) + int(fields[12])  # utime, stime
        elif fields[field] == value:
            total += sum(int(v) for v in fields[11:15])
    return total / _TICK


class Watch:
    """The CPUs other work used while a block of this process's work ran (``other()``):
    the sampler's measure, for a single process such as ``advise``. None off Linux."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self.start = (clock(), _machine_busy(), _own_cpu(1, str(os.getpid())))

    def other(self) -> float | None:
        then, machine_then, own_then = self.start
        now, machine = self.clock(), _machine_busy()
        if machine is None or machine_then is None or now - then < EVERY / 2:
            return None
        return max(0.0, (machine - machine_then - (_own_cpu(1, str(os.getpid())) - own_then)) / (now - then))


def _pressure() -> float | None:
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()
        return float(some[1].split("=")[1]) / 100
    except (OSError, IndexError, ValueError):
        return None


class Sampler:
    """Samples the load into a JSON-lines file, ``[unix time, other CPUs, pressure]`` per line,
    when called at least :data:`EVERY` seconds after its last sample."""

    def __init__(self, file: Path, clock=time.time):
        self.file, self.clock = Path(file), clock
        self.last: tuple[float, float, float, int] | None = None  # time, machine, own, child pid

    def sample(self, child: int) -> None:
        now = self.clock()
        if self.last is not None and now - self.last[0] < EVERY:
            return
        machine = _machine_busy()
        if machine is None:
            return
        own = _own_cpu(3, str(child))
        if self.last is not None and self.last[3] == child:  # a new child's CPU time starts over
            then, machine_then, own_then, _ = self.last
            other = max(0.0, (machine - machine_then - (own - own_then)) / (now - then))
            try:
                with open(self.file, "a") as f:
                    f.write(json.dumps([round(now, 3), round(other, 3), _pressure()]) + "\n")
            except OSError:
                pass  # the load is evidence beside the results, never a reason to stop a run
        self.last = (now, machine, own, child)


def read(file: Path) -> list[list]:
    """The samples written so far; a line cut short by a kill is left out."""
    try:
        lines = Path(file).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def during(samples, start: float, end: float) -> float | None:
    """The CPUs other work used, on average, while something ran from ``start`` to ``end``
    (unix times): the samples whose second overlaps it; None where none does."""
    seen = [other for t, other, *_ in samples if other is not None and start < t and t - EVERY < end]
    return sum(seen) / len(seen) if seen else None


def baseline(samples) -> float:
    """The load a run lives with: the 25th percentile of the CPUs other work used. Work that
    was there all along (a neighbour's steady job, a hypervisor's steady steal) slows every
    timing alike and is no reason to time one again; what rises above it is."""
    others = sorted(other for _, other, *_ in samples if other is not None)
    return others[len(others) // 4] if others else 0.0


def busy_spans(samples, gap: float = 3 * EVERY) -> list[tuple[float, float, float]]:
    """The stretches of time in which other work used at least :data:`BUSY` CPUs:
    ``(start, end, mean CPUs)``; samples closer than ``gap`` seconds join one stretch."""
    spans: list[list[float]] = []
    for t, other, *_ in samples:
        if other is None or other < BUSY:
            continue
        if spans and t - spans[-1][1] <= gap:
            spans[-1][1] = t
            spans[-1][2].append(other)
        else:
            spans.append([t - EVERY, t, [other]])
    return [(a, b, sum(o) / len(o)) for a, b, o in spans]


def _span_text(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def describe(samples) -> str:
    """One sentence: when, and for how long, other work kept the machine busy during a run."""
    if len(samples) < 2:
        return "The load was not sampled during this run (it is sampled on Linux, by jacbench from this version on)."
    whole = samples[-1][0] - samples[0][0] + EVERY
    spans = busy_spans(samples)
    peak = max(s[1] for s in samples)
    if not spans:
        return (f"The machine was quiet: other work never used {BUSY:g} of a CPU during the run's "
                f"{_span_text(whole)} (at most {peak:.2f}).")
    busy = sum(b - a for a, b, _ in spans)
    t0 = samples[0][0] - EVERY
    clock = lambda t: f"{int(t - t0) // 60}:{int(t - t0) % 60:02d}"
    longest = sorted(spans, key=lambda s: s[0] - s[1])[:3]
    when = "; ".join(f"{clock(a)}-{clock(b)} ({cpus:.1f} CPUs)" for a, b, cpus in longest)
    more = f", and {len(spans) - 3} shorter stretches" if len(spans) > 3 else ""
    return (f"The machine was busy for {_span_text(busy)} of the run's {_span_text(whole)} "
            f"({busy / whole:.0%}): other work used at least {BUSY:g} of a CPU from {when} (minutes:seconds "
            f"after the start){more}.")

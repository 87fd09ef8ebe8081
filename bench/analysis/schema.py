"""The row schema: what one measured pair is, and the statuses it can end in. No torch.

Every stage speaks of a pair's outcome in these terms: the measuring child writes a
:class:`Row` into the journal, the runner writes one for a pair the child could not finish,
and results, summaries, comparisons, reports and the advisor read them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field
from enum import Enum


@dataclass(frozen=True, order=True)
class Pair:
    """One (device, dtype, problem, strategy) pair of a plan; its ``id`` keys the journal."""

    device: str
    dtype: str
    problem: str
    strategy: str

    @property
    def id(self) -> str:
        return f"{self.device}-{self.dtype}-{self.problem}-{self.strategy}"

    def label(self) -> str:
        return f"{self.device} {self.dtype} {self.problem} {self.strategy}"

    @property
    def timed_with(self) -> tuple[str, str, str]:
        """What its strategy is timed together with: the (device, dtype, problem) it shares
        with them (NOTE: [Paired timing])."""
        return self.device, self.dtype, self.problem


class Status(str, Enum):
    """How a pair ended, in the order reports list them: the timed ones first."""

    OK = "ok"  # passed the gate and was timed
    DISTURBED = "disturbed"  # timed, but the machine was busy in every visit (NOTE: [Visits])
    WRONG = "wrong"  # failed the gate (NOTE: [Tolerances])
    DISPUTED = "disputed"  # the reference failed its audit (NOTE: [Reference audit])
    ERROR = "error"  # raised
    OOM = "oom"  # ran out of memory
    TIMEOUT = "timeout"  # passed the per-pair limit
    UNSUPPORTED = "unsupported"  # the strategy cannot run this kind, device or torch

    def __str__(self) -> str:
        return self.value


#: Every status's name, in report order.
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


def status_rank(status: str) -> int:
    """A status's place in report order; an unknown one goes last."""
    return STATUSES.index(status) if status in STATUSES else len(STATUSES)


def host() -> str:
    """The short name of the host this process runs on."""
    return socket.gethostname().split(".")[0]


def job() -> str | None:
    """The SLURM job this process runs in (``JOB_TASK`` for a task of a job array), or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


@dataclass
class Row:
    """One pair's outcome; ``extra_info`` of its pytest-benchmark record."""

    problem: str
    strategy: str
    device: str
    dtype: str
    mode: str = ""  # reverse, forward or fd: what the strategy computes with
    fd_order: int = 0  # 0 exact, 1 forward differences, 2 central differences
    family: str = ""
    kind: str = ""
    n: int = 0
    m: int = 0
    status: str = "ok"
    reason: str = ""
    error: float | None = None
    tolerance: float | None = None
    first_call_s: float | None = None
    peak_bytes: int | None = None
    jac_bytes: int | None = None
    fallback: bool = False
    fallback_ops: list[str] = field(default_factory=list)
    work: dict | None = None
    notes: dict = field(default_factory=dict)
    problem_flops: int | None = None
    seed: int = 0
    claim: dict | None = None  # the published figure a claim problem re-measures (cases.Problem.claim)
    f_s: float | None = None  # the median time of one plain evaluation of f (NOTE: [Cost in units of f])
    f_iqr: float | None = None
    samples: list[float] = field(default_factory=list, repr=False)
    iterations: int = 1
    precise: bool = False
    cpu: list[float] = field(default_factory=list, repr=False)  # CPU seconds per call, per round
    switches: list[int] = field(default_factory=list, repr=False)  # involuntary switches, per round
    delay: list[float | None] = field(default_factory=list, repr=False)  # seconds waiting for a CPU, per call
    disturbed: float | None = None  # the fraction of rounds disturbed (NOTE: [Disturbance])
    clock: str = "wall"  # what the samples are: synchronized wall seconds, or the process's "cpu" seconds
    cycles: list[int] = field(default_factory=list, repr=False)  # each round's cycle, where timed together
    wall: list[float] = field(default_factory=list, repr=False)  # wall seconds per call, per round, beside cpu ones
    visits: list[dict] = field(default_factory=list)  # each visit's median, rounds, disturbed, started, seconds
    retimed: list[dict] = field(default_factory=list)  # visits dropped as disturbed: the same fields
    started: float | None = None  # when the pair started (unix time): where it sits on the run's timeline
    seconds: float | None = None  # how long the whole pair took: gate, memory, work and timing
    spent: dict = field(default_factory=dict)  # seconds by phase, every visit's: gate, rounds, probes
    host: str = field(default_factory=host)  # where it ran: a cluster's rows differ by host and job
    job: str | None = field(default_factory=job)

    def info(self) -> dict:
        """Everything but the samples, which pytest-benchmark stores in its own stats."""
        d = asdict(self)
        for k in ("samples", "iterations"):
            d.pop(k)
        return d

    def identity(self) -> dict:
        """What names the pair and what it measured, before any outcome: the fields a row of
        a pair that never finished is built from (:data:`IDENTITY`)."""
        return {k: getattr(self, k) for k in IDENTITY}

    @classmethod
    def of(cls, problem, strategy, device: str, dtype: str, seed: int = 0, **outcome) -> "Row":
        """The row of ``strategy`` on ``problem`` (a registered ``cases.Problem`` and
        ``Strategy``, or anything with their attributes), before anything is measured."""
        return cls(problem.name, strategy.name, device, dtype, strategy.mode, strategy.fd_order, family=problem.family,
                   kind=problem.kind, n=problem.n, m=problem.m, problem_flops=problem.flops, seed=seed,
                   claim=getattr(problem, "claim", None), **outcome)


#: A row's fields that name its pair and what it measured, before any outcome.
IDENTITY = ("problem", "strategy", "device", "dtype", "mode", "fd_order", "family", "kind", "n", "m", "problem_flops",
            "seed", "claim")

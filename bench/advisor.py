"""The advisor: which way of computing a Jacobian is fastest for *your* function, measured.

``advise(fn, *inputs)`` runs every applicable strategy on the user's own function and inputs
through the sweep's own machinery (``bench.measure.pair``: the float64 correctness gate,
memory, work) on an ad-hoc, unregistered :class:`cases.Problem`, times the correct ones
together, interleaved (``pair.measure_together``; NOTE: [Paired timing] in
``bench.analysis.stats``), and returns an :class:`Advice`: the ranked rows and a one-line
recommendation with the measured speedup. ``jacobian(fn, *inputs, strategy="auto")`` uses
that measured choice, cached on the function per input signature (shapes, dtypes, device),
so the winner can be dropped into the user's code. ``jacbench advise MODULE:FUNCTION`` is
the command-line form.

NOTE: [Advisor reference]
    The gate needs a float64 Jacobian to compare with. An ``nn.Module`` is deep-copied and
    converted with ``.to(float64)``; a plain function is simply called with float64 inputs
    (``advise(..., float64=(fn64, inputs64))`` supplies a float64 twin where that cannot
    work, e.g. a closure over float32 weights). The reference is then float64 autograd on
    the CPU, by loops (``kinds.reference``). Where the function does not run in float64
    (it raises, or returns another dtype), the reference falls back to the same loops
    through the function *in its own dtype and device*, cast to float64 afterwards; this is
    said in :attr:`Advice.reference` and in the output. Such a reference shares the
    function's own rounding, so it can confirm that strategies agree, not that they are
    accurate to float64. Either way the reference is audited against finite differences of
    the function (NOTE: [Reference audit] in ``bench.gate.audit``): where they disagree, nothing is
    measured and nothing recommended, and :func:`jacobian` raises with the diagnosis. A
    strategy named to :func:`jacobian` has its own result audited the same way, once per
    input signature.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

import cases

from bench import kinds, strategies as registry
from bench.analysis import files, load, rules, stats, visits
from bench.analysis.formats import fmt_time
from bench.analysis.picks import row_ratio
from bench.analysis.schema import Row, Status, status_rank
from bench.analysis.stats import Ratio
from bench.gate import accuracy, audit, state
from bench.measure import pair
from bench.measure.timing import Policy
from bench.strategies.memo import memo, signature
from bench.measure.pair import Settings
from bench.sweep.plan import select_strategies

#: How long each strategy is timed: a quick sweep's budget, enough to rank.
POLICY = Policy(warmup=1, min_rounds=5, max_time=0.3, precision=0.03, min_round_time=0.02)
#: Strategies of every profile are candidates, except the chunk sweep's intermediate sizes
#: (a memory/time curve, not a candidate) unless named.
_SKIP_BY_DEFAULT = re.compile(r"^jac(rev|fwd)-chunk(1|4|64|256)$")
BASELINE = "functional"

_COUNTER = itertools.count(1)


# --- what the user gets ----------------------------------------------------------------------


@dataclass(frozen=True)
class Caught:
    """A warning or log message that a library (torch, mostly) emitted while the advisor
    measured, kept instead of printed (NOTE: [Caught while measuring])."""

    kind: str  # "warning" or "log"
    source: str  # the warning's category, or the logger's name
    message: str
    count: int


@dataclass
class Advice:
    """What the advisor measured and concluded.

    Attributes:
        rows: one :class:`Row` per strategy tried, ranked: correct ones fastest first,
            then the others by status.
        best: the fastest correct *exact* strategy, or None.
        fastest: the fastest correct strategy, finite differences included, or None.
        recommendation: one line: what to use and the measured speedup, or why nothing can be.
        diagnosis: a one-line reason the function cannot be measured at all, or None.
        warnings: anything the user should know about the measurement (e.g. the reference).
        reference: how the reference Jacobian was made (NOTE: [Advisor reference]).
        timing: how the strategies were timed: together, by which clock (NOTE: [Paired timing]).
        device, dtype, kind: what was measured.
        caught: what libraries warned and logged while it measured, instead of printing it.
    """

    rows: list[Row] = field(default_factory=list)
    best: str | None = None
    fastest: str | None = None
    recommendation: str = ""
    diagnosis: str | None = None
    warnings: list[str] = field(default_factory=list)
    reference: str = ""
    timing: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    kind: str = "vector"
    drift: float | None = None  # how far a median moved between visits (NOTE: [Visits])
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    name: str = "fn"
    caught: list[Caught] = field(default_factory=list)

    @property
    def ok(self) -> list[Row]:
        return [r for r in self.rows if r.status == Status.OK]

    def row(self, strategy: str) -> Row | None:
        return next((r for r in self.rows if r.strategy == strategy), None)

    def __str__(self) -> str:
        """What was measured, the ranked table and the recommendation, as plain text that fits
        the terminal (at most 100 columns)."""
        from bench.render import advice as page

        return page.text(self, _cells(self))

    def to_html(self, path) -> Path:
        """Write this advice as a self-contained HTML page."""
        return files.write_atomic(path, _html(self))


def _median_iqr(row: Row) -> tuple[float | None, float | None]:
    """A row's median and interquartile range; one round (a strategy the race dropped before its
    rounds: its warm call, or its first) has no spread to show."""
    if not row.samples:
        return None, None
    from bench.analysis.stats import summarize

    s = summarize(row.samples)
    return s.median, s.iqr if len(row.samples) > 1 else None


def _notes_text(row: Row) -> str:
    keep = ("colors", "pattern", "order", "chain_flops", "compile_s", "chunk_size", "captured", "graph_breaks")
    parts = [k if v is True else f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in ((k, row.notes[k]) for k in keep if k in row.notes)]
    if "dropped" in row.notes:
        parts.insert(0, row.notes["dropped"])
    if _disturbed(row):
        parts.append(f"disturbed: {row.disturbed:.0%} of its cycles were dropped, a round in them having waited "
                     "for a CPU" if row.cycles else f"disturbed: {row.disturbed:.0%} of its rounds waited for a CPU")
    if row.fallback:
        parts.append("vmap fallback: " + ", ".join(row.fallback_ops))
    return "; ".join(parts)


def _cells(advice: Advice) -> list[dict]:
    """The raw cells of the ranked table, one dict per row (see ``bench.render.advice``)."""
    cells = []
    for i, r in enumerate(advice.rows, 1):
        med, iqr = _median_iqr(r)
        cells.append(dict(rank=i if r.status == Status.OK else None, strategy=r.strategy, status=str(r.status),
                          median=med, iqr=iqr, first=r.first_call_s, peak=r.peak_bytes, error=r.error,
                          extra=r.reason if r.status != Status.OK else _notes_text(r)))
    return cells


def progress_line(row: Row) -> str:
    """One measured strategy as a line (wrapped between words where long) for the terminal."""
    from bench.render import advice as page

    med, _ = _median_iqr(row)
    if med is None and row.status == Status.OK:  # gated: timed with the others next
        return page.line(row.strategy, "correct", f"first call {fmt_time(row.first_call_s)}")
    return page.line(row.strategy, str(row.status), fmt_time(med) if med is not None else row.reason)


# --- diagnosis -----------------------------------------------------------------------------


def diagnose(fn, inputs) -> str | None:
    """A one-line reason why ``fn`` has no Jacobian to measure at ``inputs``, or None."""
    refused = audit.refused(inputs)
    if refused:
        return refused
    xs = tuple(x.detach().clone().requires_grad_(True) for x in inputs)
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.tensor(tensor) warns; the diagnosis says more
            out = fn(*xs)
    except Exception as exc:  # noqa: BLE001 - the user's function, reported in one line
        return f"calling the function raised {pair.one_line(exc)}"
    if not isinstance(out, torch.Tensor):
        hint = {
            tuple: "return one tensor (torch.cat or torch.stack the outputs)",
            list: "return one tensor (torch.stack the list)",
            float: "it computes with Python numbers (.item(), float(), math.*), which autograd cannot see",
            int: "it computes with Python numbers, which autograd cannot see",
        }.get(type(out), "return one tensor")
        return f"the function returned a {type(out).__name__}, not a tensor: {hint}"
    refused = audit.refused(inputs, out)
    if refused:
        return refused
    bad = int((~torch.isfinite(out.detach())).sum())
    if bad:
        return (f"the function's output has {bad} of {out.numel()} NaN or infinite entries at these inputs, "
                "so its Jacobian is undefined there")
    return audit.changes_inputs(fn, inputs)


# --- the ad-hoc problem ----------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _float64_twin(fn, inputs, float64) -> tuple[object, tuple, str | None]:
    """``(fn64, inputs64, None)``, or ``(None, None, why)`` where fn does not run in float64."""
    if float64 is not None:
        fn64, xs64 = float64
        xs64 = tuple(x.detach().to("cpu", torch.float64) for x in xs64)
    else:
        xs64 = tuple(x.detach().to("cpu", torch.float64) for x in inputs)
        fn64 = fn
        if isinstance(fn, torch.nn.Module):
            try:
                fn64 = copy.deepcopy(fn).to("cpu", torch.float64)
            except Exception as exc:  # noqa: BLE001 - an uncopyable module: say so, fall back
                return None, None, f"the module cannot be copied to float64 ({pair.one_line(exc)})"
    try:
        with torch.no_grad():
            out = fn64(*xs64)
    except Exception as exc:  # noqa: BLE001
        return None, None, f"it does not run on float64 CPU inputs ({pair.one_line(exc)})"
    if not isinstance(out, torch.Tensor) or out.dtype != torch.float64:
        got = _dtype_name(out.dtype) if isinstance(out, torch.Tensor) else type(out).__name__
        return None, None, f"given float64 inputs it returns {got} (constants or casts inside are not float64)"
    if not torch.isfinite(out).all():
        return None, None, "its float64 output is not finite"
    return fn64, xs64, None


def _problem(fn, inputs, kind: str, module, sparsity, float64, label: str):
    """An unregistered problem around the user's function, a description of its reference,
    and warnings about it."""
    device, dtype = inputs[0].device, inputs[0].dtype
    fn64, xs64, why = _float64_twin(fn, inputs, float64)
    warnings = []
    if why is None:
        reference = "float64 autograd on the CPU, by loops"
    else:
        reference = (f"{_dtype_name(dtype)} autograd loops through the function itself on {device}, cast to "
                     "float64: it confirms that strategies agree, not that they are accurate to float64")
        warnings.append(f"no float64 reference: {why}")
    mod64 = fn64 if isinstance(fn64, torch.nn.Module) else None

    def builder(s: cases.Setup) -> cases.Built:
        if s.device.type == device.type and s.dtype == dtype:
            return cases.Built(fn, audit.own(inputs), module=module, sparsity=sparsity)  # each strategy its own
        if (s.device.type, s.dtype) == ("cpu", torch.float64):
            if fn64 is not None:
                return cases.Built(fn64, xs64, module=mod64 if isinstance(module, torch.nn.Module) else None,
                                   sparsity=sparsity)

            def same_dtype(*xs):  # NOTE: [Advisor reference]: the fallback
                return fn(*(x.to(device, dtype) for x in xs)).to("cpu", torch.float64)

            same_dtype.precision = dtype  # what the audit sizes its steps for
            return cases.Built(same_dtype, tuple(x.detach().to("cpu", torch.float64) for x in inputs))
        raise ValueError(f"the advisor measures on {device} {_dtype_name(dtype)}, not {s.device} {_dtype_name(s.dtype)}")

    with torch.no_grad():
        out = fn(*inputs)
    batch = kinds.get(kind).batch(inputs)
    n = sum(x.numel() for x in inputs) // batch
    m = out.numel() // batch
    problem = cases.Problem(f"user-{label}-{next(_COUNTER)}", "user", kind, n=n, m=m, builder=builder,
                            description=f"{label} (the advisor's)", batch=batch)
    return problem, reference, warnings


# --- the advisor -----------------------------------------------------------------------------


def candidates(kind: str, patterns=None, device_type: str = "cpu") -> list[str]:
    """Strategy names the advisor tries for a problem of ``kind``: those matching ``patterns``
    (every profile), or by default every strategy except the chunk sweep's inner sizes (and
    CUDA graphs off CUDA)."""
    if patterns:
        return select_strategies(patterns)  # named: tried, and an unsupported kind is a row
    return [n for n, s in registry.STRATEGIES.items() if not _SKIP_BY_DEFAULT.match(n)
            and kinds.unsupported(s, kind) is None and ("cudagraph" not in n or device_type == "cuda")]


def advise(fn, *inputs, strategies: list[str] | str | None = None, kind: str | None = None,
           module: torch.nn.Module | None = None, sparsity: torch.Tensor | None = None,
           float64=None, settings: Settings | None = None, name: str | None = None,
           progress=None, output=None) -> Advice:
    """Measure every applicable strategy on ``fn(*inputs)`` and rank them.

    Args:
        fn: the function; ``fn(*inputs)`` returns one tensor. An ``nn.Module`` works as is.
        inputs: the point at which the Jacobian is taken; they set the device and dtype.
        strategies: name globs to try (default: every strategy for this kind of problem,
            compiled ones included, less the chunk sweep's inner sizes).
        kind: ``vector`` / ``multi`` (the default, by the number of inputs), ``batched``
            (per-sample Jacobians of a batch along dim 0) or ``params``.
        module: the ``nn.Module`` behind ``fn`` (defaults to ``fn`` when it is one), for
            strategies that exploit its structure.
        sparsity: the Jacobian's known sparsity pattern, a bool ``(m, N)`` tensor.
        float64: ``(fn64, inputs64)``, the same function in float64, where ``fn`` cannot be
            converted (NOTE: [Advisor reference]).
        settings: timing settings (default: :data:`POLICY`).
        name: a label for the output.
        progress: called with each finished row (the CLI prints them).
        output: also write the HTML page here.

    Returns:
        An :class:`Advice`; also remembered for :func:`jacobian` with ``strategy="auto"``.
    """
    if not inputs:
        raise ValueError("advise(fn, *inputs) needs at least one input tensor")
    inputs = audit.own(inputs)  # nothing f or a strategy does to them reaches the caller
    label = name or getattr(fn, "__name__", None) or type(fn).__name__
    kind = kind or ("vector" if len(inputs) == 1 else "multi")
    advisable = [k for k, v in kinds.KINDS.items() if v.advisable]
    if kind not in advisable:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(advisable)}")
    first = inputs[0] if isinstance(inputs[0], torch.Tensor) else torch.empty(0)
    device, dtype = first.device, first.dtype
    advice = Advice(device=str(device), dtype=_dtype_name(dtype), kind=kind,
                    shapes=[tuple(x.shape) if isinstance(x, torch.Tensor) else () for x in inputs], name=label)
    advice.diagnosis = diagnose(fn, inputs)
    if not advice.diagnosis and len({(x.device, x.dtype) for x in inputs}) > 1:
        advice.diagnosis = "the inputs differ in device or dtype; give them all the same"
    if advice.diagnosis:
        advice.recommendation = f"no recommendation: {advice.diagnosis}"
        return _finish(advice, output)
    if module is None and isinstance(fn, torch.nn.Module):
        module = fn
    settings = settings or Settings(profile="advise", policy=POLICY, threads=torch.get_num_threads())
    with _caught(advice.caught):
        _measure(advice, fn, inputs, module, sparsity, float64, settings, candidates(kind, strategies, device.type),
                 progress)
    return _finish(advice, output)


def _measure(advice: Advice, fn, inputs, module, sparsity, float64, settings: Settings, names: list[str],
             progress) -> None:
    """Gate and time the strategies ``names`` on ``fn(*inputs)`` into ``advice``: the
    reference first, then each strategy's gate, then the correct ones timed together, then
    the conclusion."""
    usual = load.Watch()  # the load other work keeps up anyway, read while the reference is computed
    problem, advice.reference, advice.warnings = _problem(fn, inputs, advice.kind, module, sparsity, float64,
                                                          advice.name)
    checked = kinds.reference(problem, settings.seed)
    usual = usual.other() or 0.0
    if checked.disputed:  # NOTE: [Reference audit]: nothing can be gated, so nothing is measured
        advice.diagnosis = checked.disputed
        advice.recommendation = f"no recommendation: {advice.diagnosis}"
        return
    if checked.note:
        advice.warnings.append(checked.note)

    # every strategy gated in turn, then the correct ones timed together, interleaved, with
    # the clearly slower ones raced out (NOTE: [Paired timing], NOTE: [Racing])
    watch = load.Watch()
    cpu_clock = advice.device == "cpu" and torch.get_num_threads() == 1
    rows = pair.measure_together(problem, names, advice.device, advice.dtype, settings, cpu_clock=cpu_clock,
                                 race=pair.race, on_gated=progress, seed=settings.seed)
    other = watch.other()
    busy = None if other is None else max(0.0, other - usual)
    if busy is not None and busy >= load.BUSY:  # a load the pairing cancels: said, not held against a row
        advice.warnings.append(f"other work used {busy:.1f} CPUs while the strategies were timed; timed together, "
                               "they were slowed alike" + ("" if cpu_clock else ", and the cycles in which a round "
                                                           "waited for a CPU were dropped"))
    for row in rows:
        if row.status == Status.OK and not row.visits:
            row.visits = [visits.visit(row)]
    advice.timing = _timing_said(rows)
    advice.drift = visits.drift(r.info() for r in rows)
    advice.rows = _rank(rows)
    _conclude(advice)
    if advice.best:
        exact = [r.strategy for r in advice.ok if _is_exact(r) and r.strategy != advice.best]
        memo(fn, "advise")[signature(inputs)] = [advice.best] + exact
        memo(fn, "choice")[signature(inputs)] = advice.recommendation


@contextlib.contextmanager
def _caught(into: list[Caught]):
    """Keep what libraries warn and log in the block in ``into`` instead of printing it.

    NOTE: [Caught while measuring]
        Measuring runs the user's function thousands of times through torch's transforms and
        compiler, which warn (vmap's "performance drop" for an op without a batching rule) and
        log (dynamo's graph breaks, a traceback each). Printed, they bury the advice; what they
        say for a strategy is in its row anyway (``vmap fallback``, ``graph_breaks``). So the
        warnings are recorded under the filters in force (a warning the caller silenced stays
        silent; one shown once per place is counted once per place), and the stream handlers
        by which torch's loggers print are swapped for a recording one for the block (their
        other handlers, such as a trace file's, are left alone). ``Advice.caught`` keeps
        both, grouped by source and message; the text says how many in one line, and the
        page lists them.
    """
    records: dict[int, logging.LogRecord] = {}
    keep = logging.Handler()
    keep.emit = lambda record: records.setdefault(id(record), record)  # once, however many handlers saw it
    loggers = [lg for name, lg in list(logging.root.manager.loggerDict.items())
               if name.partition(".")[0] == "torch" and isinstance(lg, logging.Logger)]
    saved = [lg.handlers for lg in loggers]
    for lg in loggers:  # torch prints through plain stream handlers; a file's or a trace's is a subclass
        lg.handlers = [keep if type(h) is logging.StreamHandler else h for h in lg.handlers]
    try:
        with warnings.catch_warnings(record=True) as seen:
            yield
    finally:
        for lg, handlers in zip(loggers, saved):
            lg.handlers = handlers
        counts = Counter([("warning", w.category.__name__, str(w.message)) for w in seen]
                         + [("log", r.name, r.getMessage()) for r in records.values()])
        into.extend(Caught(*key, n) for key, n in counts.items())


def _timing_said(rows: list[Row]) -> str:
    """How the rows were timed, in a line: together in how many cycles, by which clock, and
    for the CPU clock how the wall clock compared (NOTE: [Paired timing])."""
    timed = [r for r in rows if r.cycles]
    if not timed:
        return ""
    dropped = max(r.notes.get("cycles_dropped", 0) for r in timed)
    cycles = max(len(r.cycles) for r in timed) + dropped
    said = f"the correct strategies were timed together, interleaved, in {cycles} cycles"
    if timed[0].clock == "cpu":
        wall = stats.summarize([w / c for r in timed for w, c in zip(r.wall, r.samples) if c > 0]).median
        said += (" by this process's CPU time (one thread), which waiting for a CPU does not lengthen; "
                 f"their wall time was {wall:.2f}x that (median over every round)")
    else:
        said += " by the wall clock" + (", synchronized" if timed[0].device.startswith("cuda") else "")
    return said + (f"; {dropped} cycles were dropped as disturbed" if dropped else "") + _spent_said(rows)


def _spent_said(rows: list[Row]) -> str:
    """Where the strategies' time went (``Row.spent``): their gates (first calls, compiling
    included, each checked), the longest named, their timed rounds and their probes."""
    spent = Counter()
    for r in rows:
        spent.update(r.spent)
    if not spent:
        return ""
    longest = max(rows, key=lambda r: r.spent.get("gate", 0.0))
    return (f"; measuring took {fmt_time(sum(spent.values()))}: the gates {fmt_time(spent['gate'])} (first calls, "
            f"checked; the longest {longest.strategy}'s, {fmt_time(longest.spent.get('gate', 0.0))}), the timed "
            f"rounds {fmt_time(spent['rounds'])}, the probes of work and memory {fmt_time(spent['probes'])}")


def _dropped(row: Row) -> bool:
    """Whether the race dropped the row: clearly slower than the fastest, timed no more."""
    return "dropped" in row.notes


def _disturbed(row: Row) -> bool:
    """A timed row one of whose visits had more than a quarter of its rounds wait for a CPU,
    or was measured while other work kept the machine busy (NOTE: [Visits] in ``bench.analysis.visits``)."""
    return row.status == Status.OK and visits.disturbed({"extra_info": row.info()})


def _finish(advice: Advice, output) -> Advice:
    if output:
        advice.to_html(output)
    return advice


def _rank(rows: list[Row]) -> list[Row]:
    def key(r):
        med, _ = _median_iqr(r)
        return (status_rank(r.status), med if med is not None else math.inf, r.strategy)

    return sorted(rows, key=key)


def _is_exact(row: Row) -> bool:
    return pair.is_exact(row.strategy)


def _conclude(advice: Advice) -> None:
    """The recommendation, with how sure it is: the winner against the runner-up and against
    ``functional`` as ratios with 95% intervals (``stats.between``), widened by the
    drift between visits. Strategies that cannot be told apart from the fastest are a tie
    within noise, which goes to the one that needs the least memory. Rows still disturbed
    after re-measuring are shown, never picked over an undisturbed row of their kind (exact,
    or finite differences where no exact one is correct)."""
    from bench.analysis.formats import fmt_bytes

    ok = advice.ok
    running = [r for r in ok if not _dropped(r)]  # NOTE: [Racing]: a dropped row is never picked
    calm = [r for r in running if not _disturbed(r)]
    # a disturbed exact row is still correct: finite differences are never the only choice
    # because the exact rows were timed while the machine was busy
    exact = [r for r in calm if _is_exact(r)] or [r for r in running if _is_exact(r)]
    usable = calm or running
    if len(calm) < len(running):
        noisy = ", ".join(r.strategy for r in running if _disturbed(r))
        doubtful = _disturbed((exact or usable)[0])  # the row the pick comes from
        advice.warnings.append(f"timed while the machine was busy, even when timed again: {noisy}; shown, "
                               + ("and recommended only because each of its rivals was too, so the ranking "
                                  "is doubtful" if doubtful else "never recommended"))
    advice.fastest = usable[0].strategy if usable else None
    if not ok:
        reasons = sorted({r.reason.split(";")[0] for r in advice.rows if r.status in ("wrong", "error")})
        advice.recommendation = ("no recommendation: no strategy gave a correct Jacobian"
                                 + (f" ({reasons[0]})" if reasons else ""))
        return
    if not exact:
        advice.recommendation = (f"use {usable[0].strategy} ({fmt_time(_median_iqr(usable[0])[0])} per call): only "
                                 "finite differences were correct here, so the result is approximate "
                                 f"(error {usable[0].error:.1e})")
        return
    fastest = exact[0]
    def ratio(a: Row, b: Row) -> Ratio:  # the report's own (NOTE: [Paired timing])
        return row_ratio(*({"samples": r.samples, "cycles": r.cycles, "visits": r.visits, "drift": advice.drift}
                           for r in (a, b)))

    ties = [r for r in exact[1:] if ratio(fastest, r).tie]
    best = min([fastest] + ties, key=lambda r: (r.peak_bytes if r.peak_bytes is not None else math.inf))
    advice.best = best.strategy
    med = _median_iqr(best)[0]
    parts = []
    base = advice.row(BASELINE)
    if base is not None and base.status == Status.OK and best.strategy != BASELINE and not _disturbed(base):
        parts.append(f"{ratio(best, base)} faster than torch.autograd.functional.jacobian "
                     f"({fmt_time(_median_iqr(base)[0])})")
    rivals = [r for r in [fastest] + ties if r is not best]
    others = [r for r in ok if _is_exact(r) and r not in exact]  # dropped by the race, or disturbed
    # the runner-up: the next calm exact row, else the fastest slower one of the others
    runner = exact[1] if len(exact) > 1 else next((r for r in others if _median_iqr(r)[0] > med), None)
    if rivals:
        parts.append(f"a tie within noise with {', '.join(r.strategy for r in rivals)} "
                     f"({ratio(best, rivals[0])}), which goes to the one that needs the least "
                     f"memory ({fmt_bytes(best.peak_bytes)})")
    elif runner is not None:
        parts.append(f"{ratio(best, runner)} faster than the runner-up {runner.strategy}"
                     + (" (dropped by the race)" if _dropped(runner) else
                        " (timed while the machine was busy)" if _disturbed(runner) else ""))
    elif others:  # faster, but disturbed
        parts.append(f"{others[0].strategy} measured faster while the machine was busy")
    else:
        parts.append("the only correct exact strategy")
    text = f"use {best.strategy}: {fmt_time(med)} per call, " + "; ".join(parts)
    eager = next((r for r in exact if "compile_s" not in r.notes and "captured" not in r.notes), None)
    e_med = _median_iqr(eager)[0] if eager is not None else None
    if ("compile_s" in best.notes or "captured" in best.notes) and eager is not None and e_med > med:
        calls = max(1, math.ceil((best.first_call_s - eager.first_call_s) / (e_med - med)))
        text += (f"; its first call takes {fmt_time(best.first_call_s)} (compiling), so it pays off after "
                 f"{calls} calls: for fewer, use {eager.strategy} ({fmt_time(e_med)})")
    if usable[0] is not best and not _is_exact(usable[0]):
        fd = usable[0]
        text += (f" [{fd.strategy} is {med / _median_iqr(fd)[0]:.1f}x faster still but approximate: "
                 f"error {fd.error:.1e}]")
    advice.recommendation = text


# --- bench.jacobian ------------------------------------------------------------------------


def choice(fn, *inputs) -> str:
    """Why ``bench.jacobian(fn, *inputs)`` uses the strategy it uses, and how sure that is:
    the recommendation of the measurement behind it, with the winner's margin over the
    runner-up and over ``functional`` as ratios with 95% intervals, or a tie within noise.

    Raises:
        ValueError: nothing was measured yet for ``fn`` at inputs of this signature.
    """
    text = memo(fn, "choice").get(signature(inputs))
    if text is None:
        raise ValueError("no choice was measured for this function and input signature yet: call "
                         "bench.jacobian(fn, *inputs) or bench.advise(fn, *inputs) first")
    return text


def jacobian(fn, *inputs, strategy: str = "auto", module=None, sparsity=None, create_graph: bool = False,
             **advise_options):
    """The Jacobian of ``fn`` at ``inputs`` by ``strategy``, or by the advisor's measured choice.

    With ``strategy="predict"`` no strategy is measured: the predictor fitted on the reference
    sweep picks from the function's sizes, kind and the time of one evaluation (NOTE:
    [Predictor] in ``bench.analysis.rules``), in the time of a few evaluations of ``fn``;
    :func:`choice` says from which measured problems. With ``strategy="auto"`` the first call
    for an input signature (shapes, dtypes, device) runs :func:`advise` (seconds to a minute:
    every strategy is measured) and remembers the ranking of the correct exact strategies on
    ``fn``; this and later calls with that signature use the fastest of them (with
    ``create_graph``, the fastest that supports it). Calling :func:`advise` first fills the
    same cache. Whichever strategy is used, its result for a new input signature is audited
    against finite differences of ``fn`` (NOTE: [Reference audit]) before it is returned.

    Returns:
        For one input, a tensor shaped ``out.shape + x.shape``; for several, a tuple of such
        blocks (NOTE: [Jacobian layout]), as ``torch.autograd.functional.jacobian`` does.

    Raises:
        ValueError: the function cannot be differentiated (the advisor's diagnosis), its
            reference or the strategy's result disagrees with finite differences of it (the
            audit's diagnosis), or the strategy is unknown or does not handle this problem.
    """
    if not inputs:
        raise ValueError("jacobian(fn, *inputs) needs at least one input tensor")
    inputs = audit.own(inputs)  # nothing f or a strategy does to them reaches the caller
    kind = advise_options.get("kind") or ("vector" if len(inputs) == 1 else "multi")
    if strategy not in ("auto", "predict", *registry.STRATEGIES):
        raise ValueError(f"unknown strategy {strategy!r}; choose 'auto' (measured), 'predict' (not measured) or one "
                         f"of {', '.join(registry.STRATEGIES)}")
    if strategy != "auto":  # auto's advice diagnoses f itself
        said = memo(fn, "diagnosed")
        if signature(inputs) not in said:
            said[signature(inputs)] = diagnose(fn, inputs)
        if said[signature(inputs)]:
            raise ValueError(said[signature(inputs)])
    if strategy == "predict":
        strategy = _predicted(fn, inputs, kind, create_graph)
    elif strategy == "auto":
        cache = memo(fn, "advise")
        key = signature(inputs)
        if key not in cache:
            advice = advise(fn, *inputs, module=module, sparsity=sparsity, **advise_options)
            if advice.best is None:
                raise ValueError(advice.recommendation)
        ranked = [n for n in cache[key] if registry.get(n).create_graph or not create_graph]
        if not ranked:
            raise ValueError(f"none of the correct strategies ({', '.join(cache[key])}) supports create_graph")
        strategy = ranked[0]
    chosen = registry.get(strategy)
    reason = kinds.unsupported(chosen, kind)
    if reason:
        raise ValueError(reason)
    if create_graph and not chosen.create_graph:
        raise ValueError(f"{strategy} cannot differentiate its Jacobian again (create_graph); "
                         f"choose from {', '.join(n for n, s in registry.STRATEGIES.items() if s.create_graph)}")
    if module is None and isinstance(fn, torch.nn.Module):
        module = fn
    try:
        with registry.using(module, sparsity), state.kept():  # a function that leaks grad mode leaks nothing here
            blocks = chosen(fn, audit.own(inputs), create_graph=create_graph)  # checked at the inputs as given
    except Exception as exc:
        cuts = audit.cuts_text(audit.watch(fn, inputs)[0])
        if cuts:  # the failure's cause, in the user's code
            raise ValueError(f"{strategy} failed ({pair.one_line(exc)}): part of f is cut from the autograd "
                             f"graph by {cuts}") from exc
        raise
    _verify(fn, inputs, blocks, chosen, kind, advise_options.get("float64"))
    return blocks[0] if len(inputs) == 1 else blocks


def _predicted(fn, inputs, kind: str, create_graph: bool) -> str:
    """The predictor's pick for ``fn`` at inputs of this signature (NOTE: [Predictor]), remembered."""
    cache, key = memo(fn, "predict"), signature(inputs)
    if key not in cache:
        how = kinds.get(kind)
        with torch.no_grad(), state.kept():  # a function that leaks grad mode leaks nothing here
            out = how.evaluate(fn, inputs)
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"fn must return one tensor to have a Jacobian; it returned {type(out).__name__}")
            t_f = pair.time_f(how, fn, inputs, _F_POLICY, sync=pair.sync_of(inputs[0].device)).median
        batch = how.batch(inputs)
        n, m = sum(x.numel() for x in inputs) // batch, out.numel() // batch
        device = inputs[0].device.type
        pick, near = rules.Predictor.load().pick(kind, device, n, m, t_f)
        if pick is None:
            raise ValueError(f"the predictor has measured no {kind} problem on {device}; use strategy='auto', "
                             "which measures the strategies on this function")
        if create_graph and not registry.get(pick).create_graph:
            raise ValueError(f"the predicted {pick} cannot differentiate its Jacobian again (create_graph); "
                             "use strategy='auto'")
        cache[key] = pick
        memo(fn, "choice")[key] = (f"{pick}, predicted without measuring a strategy (n={n}, m={m}, "
                                   f"f takes {fmt_time(t_f)}): the fastest over the {len(near)} nearest measured "
                                   f"{kind} problems, {', '.join(near)}")
    return cache[key]


#: One evaluation of f, timed for the predictor: a few rounds, a tenth of a second at most.
_F_POLICY = Policy(warmup=1, min_rounds=5, max_time=0.1, precision=0.05)


def _verify(fn, inputs, blocks, strategy, kind: str, float64) -> None:
    """Raise ``ValueError`` where ``blocks`` disagree with finite differences of ``fn``
    (NOTE: [Reference audit]): in float64 where ``fn`` runs in it, else in its own dtype. Done
    once per strategy and input signature; a verdict against it is kept and raised again."""
    seen = memo(fn, "verified")
    key = (strategy.name, signature(inputs))
    if key not in seen:
        dtype = inputs[0].dtype
        fn64, xs64, why = _float64_twin(fn, inputs, float64)
        precision = None if why is None else dtype
        if why is not None:
            fn64, xs64 = fn, tuple(x.detach() for x in inputs)
        floor = accuracy.FD_CEILING if strategy.fd_order else accuracy.tolerance(dtype, 0, None)
        with state.kept():
            found = kinds.get(kind).audit(fn64, xs64, blocks, source=f"{strategy.name}'s Jacobian",
                                          precision=precision, floor=floor)
        seen[key] = found.disputed
    if seen[key]:
        raise ValueError(seen[key])


def _html(advice: Advice) -> str:
    from bench.render import advice as page

    return page.render(advice, _cells(advice), [(r.strategy, r.samples) for r in advice.ok],
                       torch_version=torch.__version__, threads=torch.get_num_threads())

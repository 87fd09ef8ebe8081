"""The advisor's output: its page (the recommendation, the ranked table and a dot-and-whisker
figure of the correct strategies' times, one self-contained HTML file) and its text for a
terminal (``bench.render.terminal``'s tables and paragraphs, at most 100 columns). No torch.

``rows`` are the table's raw cells, one dict per strategy as ``bench.advisor`` ranks them:
``rank`` (None where not ranked), ``strategy``, ``status``, ``median``, ``iqr``, ``first``
(seconds), ``peak`` (bytes), ``error`` and ``extra`` (notes of a ranked row, the reason of
another). ``advice.caught`` holds what libraries warned and logged while it measured, as
objects with ``kind`` ("warning" or "log"), ``source`` (the warning's category, the
logger's name), ``message`` and ``count``.
"""

from __future__ import annotations

import statistics
import sys

from bench.analysis.formats import fmt_bytes, fmt_error, fmt_time
from bench.render import figures as figs, html, terminal

_NUMBERS = (("median", fmt_time), ("iqr", fmt_time), ("first", fmt_time), ("peak", fmt_bytes), ("error", fmt_error))


def render(advice, rows: list[dict], timed: list[tuple[str, list[float]]], *, torch_version: str, threads: int) -> str:
    """The page of ``advice`` (a ``bench.advisor.Advice``): ``rows`` are its table's raw cells,
    ``timed`` each correct strategy's name and raw samples, fastest first."""
    cells = [{**r, **{k: (fmt(r[k]), r[k]) for k, fmt in _NUMBERS}} for r in rows]
    return html.render("advice.html.j2", a=advice, rows=cells, shapes=_shapes(advice), figure=_figure(timed),
                       caught=caught_note(advice.caught), torch_version=torch_version, threads=threads)


def _shapes(advice) -> str:
    return "[" + ", ".join("x".join(map(str, s)) or "scalar" for s in advice.shapes) + "]"


# --- the figure ------------------------------------------------------------------------------


def spots(samples: list[float]) -> tuple[float, float, float, float]:
    """The 10th percentile, first quartile, median and third quartile of raw samples, taken as
    ``bench.analysis.stats.summarize`` takes its quartiles."""
    data = sorted(samples)
    if len(data) == 1:
        return data[0], data[0], data[0], data[0]
    q1, med, q3 = statistics.quantiles(data, n=4, method="inclusive")
    return statistics.quantiles(data, n=10, method="inclusive")[0], q1, med, q3


def _figure(timed: list[tuple[str, list[float]]]) -> str | None:
    return figs.inline(draw(timed)) if timed else None


def draw(timed: list[tuple[str, list[float]]]):
    """Dot and whisker per correct strategy, in the order given (fastest first) from the top,
    on a log time axis: the median as a dot, the interquartile range as a thick line, the
    10th percentile as a tick. The statistics are of the raw samples (:func:`spots`): on a
    log axis seaborn would take them of their logarithms."""
    import seaborn as sns

    names = [name for name, _ in timed]
    p10, q1, med, q3 = zip(*(spots(ts) for _, ts in timed))
    at = range(len(timed))
    with figs.theme():
        colour = sns.color_palette()[0]
        fig, axes = figs.subplots(7, 0.32 * len(timed) + 1.4)
        ax = axes[0][0]
        figs.log_scale(ax, "x")
        ax.hlines(at, q1, q3, colors=[colour], linewidth=7, alpha=0.4, label="interquartile range")
        ax.scatter(med, at, s=36, color=colour, zorder=3, label="median")
        ax.scatter(p10, at, marker="|", s=160, linewidths=1.8, color="black", zorder=3, label="10th percentile")
        ax.set_yticks(list(at), names)
        ax.set_ylim(len(timed) - 0.5, -0.5)  # the fastest at the top
        ax.set_xlim(min(p10) / 1.3, max(q3) * 1.3)
        figs.log_axis(ax, "x", figs.times)
        ax.set(xlabel="time per call (log scale)", ylabel="")
        ax.grid(axis="y", visible=False)
        fig.legend(loc="outside upper center", ncols=3, frameon=False)
    return fig


# --- the terminal --------------------------------------------------------------------------


def text(advice, rows: list[dict], columns: int | None = None) -> str:
    """``advice`` as plain text at most ``columns`` wide (default: the terminal's, see
    ``bench.render.terminal``): what was measured, its warnings, the ranked table, each
    strategy's notes or why it is not ranked, what was caught from libraries, and the
    recommendation. Long lines wrap between words."""
    import pandas as pd

    columns = columns or terminal.width()
    out = [f"{advice.name}: {advice.kind} Jacobian of inputs {_shapes(advice)} on {advice.device}, {advice.dtype}"]
    if advice.reference:
        out.append(f"reference: {advice.reference}")
    if advice.timing:
        out.append(f"timing: {advice.timing}")
    out += [f"warning: {w}" for w in advice.warnings]
    ranked = [r for r in rows if r["rank"] is not None]
    if ranked:
        numbers = pd.DataFrame([[r["rank"], r["strategy"], *(fmt(r[k]) for k, fmt in _NUMBERS)] for r in ranked],
                               columns=["rank", "strategy", "median", "IQR", "first call", "peak mem", "error"])
        out += ["", terminal.table(numbers, columns, keep=("strategy",))]
    said = [r for r in rows if r["extra"]]
    if said:  # words need the width: a table of their own, in the same order
        words = pd.DataFrame([[r["strategy"], r["status"], r["extra"]] for r in said],
                             columns=["strategy", "status", "notes, or why it is not ranked"])
        out += ["", terminal.table(words, columns, keep=("strategy", "status"))]
    note = caught_note(advice.caught)
    if note:
        out += ["", f"note: {note}; the HTML page lists them"]
    out += ["", advice.recommendation]
    return terminal.fit("\n".join(out), columns)


def line(strategy: str, status: str, outcome: str, columns: int | None = None) -> str:
    """One strategy's outcome as it is measured, for standard error (where the command line
    reports progress), wrapped under its own column."""
    head = f"  {strategy:<24} {status:<11} "
    return terminal.paragraph(outcome or "-", columns or terminal.width(sys.stderr), head, " " * len(head))


def caught_note(caught) -> str:
    """What was caught while measuring, in one phrase, e.g. "3 warnings (2 kinds) and 1 log
    message (torch._dynamo) were caught while measuring"; '' where nothing was."""
    warned = [c for c in caught if c.kind == "warning"]
    logged = [c for c in caught if c.kind == "log"]
    parts = []
    if warned:
        parts.append(f"{_times(sum(c.count for c in warned), 'warning')} ({_times(len(warned), 'kind')})")
    if logged:
        loggers = ", ".join(sorted({c.source for c in logged}))
        parts.append(f"{_times(sum(c.count for c in logged), 'log message')} ({loggers})")
    if not parts:
        return ""
    return f"{' and '.join(parts)} {'was' if sum(c.count for c in caught) == 1 else 'were'} caught while measuring"


def _times(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

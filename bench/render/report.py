"""The HTML report: one self-contained page that answers "which strategy should I use?".

``write(paths, out)`` is a pure function of result files: it loads them (``bench.analysis.results``),
takes the numbers from ``bench.analysis.picks`` (NOTE: [Recommendation rules]) and the
figures from ``figures``,
and renders ``templates/report.html.j2`` (the figures drawn in worker processes while the
tables are made: :class:`Drawer`). The page fetches nothing: styles and scripts are inline
and figures are SVG data URIs. Every string from a results file reaches the page
through Jinja2's autoescape. No torch.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import re
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.analysis import claims, cost, files, load, results, rules
from bench.analysis.formats import fmt_bytes, fmt_error, fmt_interval, fmt_pct, fmt_ratio, fmt_time, missing
from bench.analysis.picks import (BASELINES, PLATFORM, approximate, best_per_problem, failures, family_picks, noisy,
                                  platforms, timed, winners)
from bench.analysis.schema import STATUSES
from bench.analysis.stats import NOISE_WARNING, RERUN_FLOOR
from bench.render import figures as figs, html
from bench.render.summary import drift_text, platform_label

# --- tables as data: the template renders them all the same way -----------------------------

@dataclass(frozen=True)
class Cell:
    text: str
    value: object = None  # what the column sorts by, where it is not the text
    cls: str = ""
    note: str = ""        # a second, smaller line
    link: str = ""        # where the text links to: an https address, or nothing


@dataclass(frozen=True)
class Column:
    label: str
    tip: str = ""
    num: bool = False


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[Cell]] = field(default_factory=list)
    total: int | None = None  # the rows there are, where the table shows only some (``capped``)
    shown: str = ""           # which of them it shows, where it does not show them all
    ids: dict[int, str] = field(default_factory=dict)  # element ids of some rows, by index: links land there


# A table of more rows than this shows this many: a page of 100,000 rows takes gigabytes to
# render and minutes to open, and no one reads it; the results files hold every row.
MAX_ROWS = 5000


def capped(frame: pd.DataFrame, which: str) -> tuple[pd.DataFrame, dict]:
    """The first :data:`MAX_ROWS` rows of ``frame`` and the ``Table`` fields that say so;
    ``which`` names them ("the noisiest")."""
    if len(frame) <= MAX_ROWS:
        return frame, {}
    return frame.head(MAX_ROWS), {"total": len(frame), "shown": which}


def context_labels(frame: pd.DataFrame) -> list[str]:
    """:func:`platform_label` of every row, without a Series per row."""
    return [platform_label(dict(zip(PLATFORM, key))) for key in zip(*(frame[c] for c in PLATFORM))]


def _num(v):
    return "" if missing(v) else repr(float(v))


def time_cell(s) -> Cell:
    return Cell(fmt_time(s), _num(s), "num")


def spread_cell(median, iqr) -> Cell:
    if missing(median):
        return time_cell(median)
    rel = "" if missing(iqr) or not median else f" \u00b1{100 * iqr / median:.0f}%"
    return Cell(fmt_time(median) + rel, _num(median), "num")


def ratio_cell(x) -> Cell:
    return Cell(fmt_ratio(x), _num(x), "num")


def interval(low, high) -> str:
    """A 95% interval, ``2.9-3.5x``, or nothing where it is not known."""
    return "" if missing(low) or missing(high) else f"{fmt_ratio(low).rstrip('x')}\u2013{fmt_ratio(high)}"


def interval_cell(rec, name: str) -> Cell:
    """A ratio, its 95% interval on a second line; sorts by the ratio."""
    return Cell(fmt_ratio(rec[name]), _num(rec[name]), "num", interval(rec[f"{name}_low"], rec[f"{name}_high"]))


def share_cell(k, of, note: str = "") -> Cell:
    """``k/of``, sorting by the share k/of (then by k): 2/2 and 1/1 above 1/9."""
    if missing(k) or missing(of) or not of:
        return Cell("-", None, "num")
    return Cell(f"{int(k)}/{int(of)}", repr(float(k) / float(of) + float(k) * 1e-9), "num", note)


def bytes_cell(b) -> Cell:
    return Cell(fmt_bytes(b), _num(b), "num")


def error_cell(e) -> Cell:
    return Cell(fmt_error(e), _num(e), "num")


def text_cell(t, cls: str = "") -> Cell:
    return Cell("" if missing(t) else str(t), None, cls)


def int_cell(v) -> Cell:
    return Cell("-" if missing(v) else f"{int(v)}", _num(v), "num")


def status_cell(s) -> Cell:
    return Cell(str(s), None, f"status-{s}")


# --- the environment -----------------------------------------------------------------------

def _duration(s) -> str:
    if missing(s):
        return "-"
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def origin_table(docs, frame: pd.DataFrame) -> Table:
    """One column per results file: what it ran on and how."""
    fields = [("machine", "machine"), ("device", "device"), ("device name", "device_name"),
              ("torch", "torch_build"), ("CUDA", "cuda"), ("cuDNN", "cudnn"), ("CPU", "cpu"),
              ("threads", "threads"), ("Python", "python"), ("git commit", "commit"), ("dtypes", None),
              ("profile", None), ("pairs", None), ("wall time", None), ("started", None), ("run id", None),
              ("shard", None), ("measured ceilings", None)]
    table = Table([Column("")] + [Column(Path(p).name) for p, _ in docs])
    for label, key in fields:
        row = [Cell(label, None, "muted")]
        for path, doc in docs:
            env = doc.get("machine_info", {}).get("jacbench", {}) or {}
            jb = doc["jacbench"]
            if key == "torch_build":
                v = env.get("torch_build") or env.get("torch")
            elif key == "cpu":
                v = env.get("cpu")
                if env.get("cpu_count"):
                    v = f"{v} ({env['cpu_count']} logical CPUs)"
            elif key == "commit":
                c = env.get("commit") or {}
                v = (c.get("id") or "unknown")[:12] + (" (with uncommitted changes)" if c.get("dirty") else "")
            elif key is not None:
                v = env.get(key)
            elif label == "dtypes":
                mine = frame[frame["file"] == str(path)] if "file" in frame else frame.iloc[0:0]
                v = ", ".join(sorted(mine["dtype"].astype(str).unique()))
            elif label == "profile":
                v = jb.get("profile")
            elif label == "pairs":
                v = jb.get("pairs")
            elif label == "wall time":
                v = _duration(jb.get("wall_s"))
            elif label == "started":
                v = jb.get("started")
            elif label == "run id":
                v = jb.get("run_id")
            elif label == "shard":
                v = jb.get("shard") or "whole run"
            else:
                v = "; ".join(
                    f"{dt}: {c['matmul_flops'] / 1e9:.3g} GFLOP/s matmul, {c['bandwidth'] / 1e9:.3g} GB/s copy"
                    for dt, c in (jb.get("ceilings") or {}).items()
                    if isinstance(c, dict) and c.get("matmul_flops") and c.get("bandwidth"))
            row.append(text_cell("-" if v is None or v == "" else v))
        table.rows.append(row)
    return table


# --- recommendations -----------------------------------------------------------------------

def anchor(*names: str) -> str:
    """An element id made of names: the same names give the same id on every render."""
    return re.sub(r"[^a-z0-9_.]+", "-", "-".join(n for n in names if n).lower()).strip("-")


@dataclass
class Card:
    """A family's recommendation, in sentences that use one meaning of "fastest" (NOTE: [Fastest])."""
    family: str
    solved: str
    pick: str | None  # the exact strategy to use
    verdict: str      # what follows the pick's name, or why there is none
    details: str = ""
    warning: str = ""
    notes: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, element id) of the family's sections


def _within(x) -> str:
    """A slowdown as a reader takes it in: ``3%`` near 1, else ``1.8x``."""
    return f"{max(1, round(100 * (x - 1)))}%" if x < 1.1 else fmt_ratio(x)


def card(p: pd.Series, ok: pd.DataFrame, links=()) -> Card:
    """The card of a family's picks ``p`` (a row of ``family_picks``), ``ok`` its timed rows."""
    plural = "s" if p["problems"] != 1 else ""
    c = Card(str(p["family"]), f"{p['solved']} of {p['problems']} problem{plural} solved", None, "",
             links=list(links))
    exact = p["exact_strategy"] if isinstance(p["exact_strategy"], str) else None
    if exact:
        c.pick = exact
        wins, of = int(p["exact_wins"]), int(p["exact_of"])
        if wins == of:
            c.verdict = "the fastest on " + ("its one problem" if of == 1 else f"every one of its {of} problems")
        else:
            c.verdict = (f"typically within {_within(p['exact_geo_slowdown'])} of each problem's fastest, "
                         f"{_within(p['exact_worst_slowdown'])} at worst; the fastest on {wins} of {of}")
        speedups = [f"{fmt_interval(p[f'exact_vs {b}'], p[f'exact_vs {b}_low'], p[f'exact_vs {b}_high'])} over {b}"
                    for b in BASELINES if b != exact and not missing(p[f"exact_vs {b}"])]
        memory = (f"peak memory {fmt_ratio(p['exact_mem_ratio'])} the Jacobian; "
                  f"error at most {fmt_error(p['exact_max_error'])}.")
        c.details = (f"Speedup {' and '.join(speedups)} (geometric means over its problems, with 95% intervals); "
                     f"{memory}" if speedups else memory[0].upper() + memory[1:])
        if p["exact_covered"] < of:
            c.warning = f"It solved only {int(p['exact_covered'])} of {of} problems; no exact strategy solved them all."
        others = winners(ok[~ok["approximate"]])["strategy"]
        others = others[others != exact].value_counts()
        if len(others):
            c.notes.append("The fastest on the other problems: " +
                           ", ".join(f"{name} ({n})" for name, n in others.items()) + ".")
    else:
        c.verdict = ("no exact strategy gave a correct Jacobian" if p["solved"] else
                     "no strategy gave a correct Jacobian")
    overall = p["strategy"] if isinstance(p["strategy"], str) and p["strategy"] != exact else None
    if overall:
        geo = p["geo_slowdown"]
        how = (f"the fastest of any kind on {int(p['wins'])} of {int(p['of'])}" if exact is None else
               f"typically {fmt_ratio(1 / geo)} faster than each problem's fastest" if geo < 1 else
               f"typically within {_within(geo)} of each problem's fastest")
        c.notes.insert(0, f"Fastest with approximate strategies allowed: {overall} ({how}, with errors up to "
                          f"{fmt_error(p['max_error'])}).")
    return c


def family_table(picks: pd.DataFrame) -> Table:
    t = Table([
        Column("family"), Column("solved", "problems some strategy solved / problems run", True),
        Column("use (exact)", "the exact strategy with the smallest typical slowdown (NOTE: Recommendation rules)"),
        Column("typical", "geometric-mean slowdown vs each problem's fastest (exact) strategy", True),
        Column("worst", "largest slowdown vs a problem's fastest (exact) strategy", True),
        Column("wins", "problems where it was the fastest (exact) strategy / problems; sorts by the share", True),
        *[Column(f"\u00d7 vs {b}", f"geometric-mean speedup over {b} on the same problems, with its 95% interval",
                 True) for b in BASELINES],
        Column("mem / J", "peak memory as a multiple of the Jacobian's size (geo. mean)", True),
        Column("max error", "largest error vs the float64 reference over the family", True),
        Column("fastest incl. FD", "the pick when finite differences may be used"),
        Column("typical", "its geometric-mean time relative to each problem's fastest exact strategy (below 1: "
                          "faster)", True),
        Column("its max error", "", True),
    ])
    for _, p in picks.iterrows():
        has = isinstance(p["exact_strategy"], str)
        t.rows.append([
            text_cell(p["family"], "name"), share_cell(p["solved"], p["problems"]),
            text_cell(p["exact_strategy"] if has else "no exact one", "strong" if has else "bad"),
            ratio_cell(p["exact_geo_slowdown"]), ratio_cell(p["exact_worst_slowdown"]),
            share_cell(p["exact_wins"], p["exact_of"], "one problem" if p["exact_of"] == 1 else "")
            if has else share_cell(None, None),
            *[interval_cell(p, f"exact_vs {b}") for b in BASELINES],
            ratio_cell(p["exact_mem_ratio"]), error_cell(p["exact_max_error"]),
            text_cell(p["strategy"] if isinstance(p["strategy"], str) else "-", "name"),
            ratio_cell(p["geo_slowdown"]), error_cell(p["max_error"]),
        ])
    return t


def problem_table(best: pd.DataFrame, id_of=lambda family: "") -> Table:
    """A row per problem; the first row of each family has the element id ``id_of(family)``."""
    t = Table([
        Column("family"), Column("problem"), Column("n", "inputs", True), Column("m", "outputs", True),
        Column("best exact", "fastest exact strategy; below it, its runner-up, or after ~ the rivals within the "
                             "noise (a tie goes to the exact strategy that needs less memory)"),
        Column("margin", "how many times faster than the runner-up (named under the pick), with its 95% "
                         "interval; a tie when the interval holds 1 (sorts by the ratio)", True),
        Column("median", "median time per Jacobian, \u00b1 its IQR relative to the median", True),
        *[Column(f"\u00d7 vs {b}", f"{b}'s time / this time, with the 95% interval", True)
          for b in BASELINES],
        Column("peak mem", "peak memory of one call", True), Column("error", "vs the float64 reference", True),
        Column("fastest incl. FD", "where finite differences beat every exact strategy: which, how fast and how "
                                   "accurate (sorts by its median)", True),
    ])
    for i, (_, b) in enumerate(best.iterrows()):
        if i == 0 or b["family"] != best["family"].iloc[i - 1]:
            t.ids[i] = id_of(b["family"])
        has = isinstance(b["exact_strategy"], str)
        name = b["exact_strategy"] if has else "no exact one"
        tie = f"~ {b['exact_tied_with']}" if has and b["exact_tied_with"] else ""
        fd = b["approximate"] and isinstance(b["strategy"], str)
        t.rows.append([
            text_cell(b["family"], "name"), text_cell(b["problem"], "name"), int_cell(b["n"]), int_cell(b["m"]),
            Cell(name, None, "strong" if has else "bad", b["exact_tie_break"] or tie or (
                f"runner-up {b['exact_runner_up']}" if has and b["exact_runner_up"] else "")),
            Cell("tie" if has and b["exact_tied_with"] else fmt_ratio(b["exact_margin"]), _num(b["exact_margin"]),
                 "num", interval(b["exact_margin_low"], b["exact_margin_high"])),
            spread_cell(b["exact_median"], b["exact_iqr"]),
            *[interval_cell(b, f"exact_vs {base}") for base in BASELINES],
            bytes_cell(b["exact_peak_bytes"]), error_cell(b["exact_error"]),
            Cell(b["strategy"], _num(b["median"]), "name",
                 f"{fmt_time(b['median'])}, error {fmt_error(b['error'])}") if fd
            else Cell("= best exact", _num(b["exact_median"]), "muted"),
        ])
    return t


# --- failures, noise, every row ------------------------------------------------------------

@dataclass
class Group:
    strategy: str
    counts: str
    table: Table
    open: bool


def cost_table(per_family: pd.DataFrame) -> Table:
    """Each strategy's cost in units of f, per family (NOTE: [Cost in units of f])."""
    t = Table([
        Column("family"), Column("strategy"), Column("problems", "problems it solved in the family", True),
        Column("time / t(f)", "median time over the time of one evaluation of f", True),
        Column("per product", "median time / (VJPs or JVPs counted x t(f)); the theory's band is 2 to 4", True),
        Column("above the band", "share of its problems where one product cost more than 4 evaluations of f", True),
        Column("outside f's work", "median share of its time left once its products are paid at 4 f each", True),
    ])
    for _, r in per_family.iterrows():
        t.rows.append([
            text_cell(r["family"], "name"), text_cell(r["strategy"], "name"), int_cell(r["problems"]),
            ratio_cell(r["per_f"]), ratio_cell(r["per_product"]),
            Cell(fmt_pct(r["above"]), _num(r["above"]), "num"), Cell(fmt_pct(r["outside"]), _num(r["outside"]), "num"),
        ])
    return t


def rules_table(summary: pd.DataFrame) -> Table:
    """Each picking rule's regret on one platform (NOTE: [Regret] in ``bench.analysis.rules``)."""
    t = Table([
        Column("rule"), Column("solved", "problems where its pick was correct and timed / problems scored", True),
        Column("regret", "geometric-mean time of its pick over the problem's fastest exact strategy", True),
        Column("worst", "its largest regret", True),
        Column("within 10%", "share of the problems it solved where its pick took at most 1.1x the fastest", True),
        Column("failed", "problems where its pick failed, was wrong or cannot run the kind", True),
        Column("where", "where its regret was worst, and where its pick failed; not scored: the rule names no "
                        "strategy for the kind, or its pick was not run or stayed disturbed"),
    ])
    for _, r in summary.iterrows():
        where = [f"worst: {r['worst_at']}" if isinstance(r["worst_at"], str) else "",
                 f"failed: {r['failed_at']}{', ...' if r['failed'] > 3 else ''}" if r["failed"] else "",
                 f"{r['unscored']} not scored" if r["unscored"] else ""]
        t.rows.append([
            text_cell(r["rule"], "name"), share_cell(r["solved"], r["problems"]), ratio_cell(r["geomean"]),
            ratio_cell(r["worst"]), Cell(fmt_pct(r["within_10pct"]), _num(r["within_10pct"]), "num"),
            int_cell(r["failed"]), text_cell("; ".join(w for w in where if w), "reason"),
        ])
    return t


def claims_table(frame: pd.DataFrame) -> Table | None:
    """Each published claim beside its measurement on each platform (NOTE: [Claims])."""
    found = claims.table(frame)
    if found.empty:
        return None
    t = Table([
        Column("claim", "the problem, and where the figure was published"), Column("published", "as published"),
        Column("measured on", "the platform of this run; the claim's own hardware is below the published figure"),
        Column("fast vs slow", "the strategy claimed faster, against the one it was compared with"),
        Column("published ratio", "time of the slower over the faster, as published", True),
        Column("measured ratio", "the same ratio measured here, with its 95% interval", True),
        Column("verdict", "direction: the interval lies on the published side of 1; size: it meets half to twice "
                          "the published ratio"),
    ])
    for _, c in found.iterrows():
        url = c["url"] if isinstance(c["url"], str) and c["url"].startswith("https://") else ""
        platform = "-" if missing(c["machine"]) else platform_label({k: c[k] for k in PLATFORM})
        measured = not missing(c["measured"])
        verdict = "strong" if c["verdict"] == "holds" else "bad" if c["direction"] == "reversed" else "reason"
        t.rows.append([
            Cell(c["problem"], None, "name", c["source"], link=url),
            Cell(c["figure"], None, "reason", c["hardware"]),
            Cell(platform, None, "", "other hardware than published" if c["same_hardware"] is False else ""),
            text_cell(f"{c['fast']} vs {c['slow']}", "name"), ratio_cell(c["published"]),
            Cell(fmt_ratio(c["measured"]), _num(c["measured"]), "num", interval(c["measured_low"], c["measured_high"]))
            if measured else text_cell("-", "num"),
            text_cell(c["verdict"], verdict),
        ])
    return t


def failure_overview(frame: pd.DataFrame) -> Table:
    """Strategies x statuses: how many pairs of each strategy ended how."""
    statuses = [s for s in STATUSES if (frame["status"] == s).any()]
    t = Table([Column("strategy")] + [Column(s, "", True) for s in statuses])
    for strategy, g in frame.groupby("strategy", sort=False):
        counts = g["status"].value_counts()
        t.rows.append([text_cell(strategy)] + [
            Cell(str(int(counts.get(s, 0))) if counts.get(s, 0) else "", str(int(counts.get(s, 0))),
                 f"num status-{s}") for s in statuses])
    return t


def failure_groups(frame: pd.DataFrame, many_contexts: bool) -> list[Group]:
    """Every row that is not ok, by strategy; rows that failed for the same reason share a line
    that names each of their problems."""
    bad = failures(frame)
    groups = []
    for strategy, g in bad.groupby("strategy", sort=False):
        cols = [Column("status"), Column("pairs", "", True), Column("problems"), Column("reason")]
        if many_contexts:
            cols.insert(1, Column("context"))
        t = Table(cols)
        g = g.assign(_context=context_labels(g))
        for (status, context, reason), same in g.groupby(["status", "_context", "reason"], sort=False, dropna=False):
            row = [status_cell(status), int_cell(len(same)), text_cell(", ".join(same["problem"]), "problems"),
                   text_cell(reason, "reason")]
            if many_contexts:
                row.insert(1, text_cell(context))
            t.rows.append(row)
        counts = ", ".join(f"{n} {s}" for s, n in g["status"].value_counts().items())
        only_unsupported = (g["status"] == "unsupported").all()
        groups.append(Group(str(strategy), counts, t, len(t.rows) <= 6 and not only_unsupported))
    # strategies that broke come first; those that merely do not apply to some problems last
    groups.sort(key=lambda gr: all(r[0].text == "unsupported" for r in gr.table.rows))
    return groups


def noise_table(frame: pd.DataFrame, many_contexts: bool) -> Table:
    loud, cap = capped(noisy(frame), "the noisiest")
    cols = [Column("problem"), Column("strategy"), Column("IQR / median", "", True), Column("median", "", True),
            Column("IQR", "", True), Column("rounds", "samples taken", True),
            Column("p90 / p10", "how far apart the rounds lie: above 3x, the calls stalled", True),
            Column("disturbed", "share of rounds in which the process was switched out or short of CPU", True),
            Column("precise", "did the median reach the profile's target precision before the time cap?")]
    if many_contexts:
        cols.insert(2, Column("context"))
    t = Table(cols, **cap)
    for _, r in loud.iterrows():
        row = [text_cell(r["problem"]), text_cell(r["strategy"]),
               Cell(fmt_pct(r["rel_iqr"]), _num(r["rel_iqr"]), "num"), time_cell(r["median"]),
               time_cell(r["iqr"]), int_cell(r["rounds"]), ratio_cell(r.get("stall")),
               Cell(fmt_pct(r.get("disturbed")), _num(r.get("disturbed")), "num"),
               text_cell("-" if missing(r.get("precise")) else "yes" if bool(r.get("precise")) else "no")]
        if many_contexts:
            row.insert(2, text_cell(platform_label(r)))
        t.rows.append(row)
    return t


def all_rows(frame: pd.DataFrame, many_contexts: bool) -> Table:
    """Every row, or where there are more than :data:`MAX_ROWS`, the first of those that ran:
    unsupported pairs carry no numbers, and the failure tables count them. Its platform is a
    column where the page has more than one."""
    ran = frame["status"] != "unsupported"
    frame, cap = capped(pd.concat([frame[ran], frame[~ran]]) if len(frame) > MAX_ROWS else frame,
                        "the first that ran (in the files' order; unsupported pairs last)")
    t = Table([Column("problem"), Column("family"), Column("n", "", True), Column("m", "", True),
               Column("strategy"), Column("status"),
               Column("median", "", True), Column("IQR/med", "", True), Column("rounds", "", True),
               Column("first call", "first call: tracing, caches, compilation", True),
               Column("peak mem", "", True), Column("mem / J", "", True), Column("error", "", True),
               Column("tolerance", "", True), Column("f evals", "", True), Column("VJPs", "", True),
               Column("JVPs", "", True), Column("vmap fallback", "the operators vmap ran in a slow loop")], **cap)
    if many_contexts:
        t.columns.insert(5, Column("context"))
    for _, r in frame.iterrows():
        row = [
            text_cell(r["problem"]), text_cell(r["family"]), int_cell(r["n"]), int_cell(r["m"]),
            text_cell(r["strategy"]), status_cell(r["status"]), time_cell(r["median"]),
            Cell(fmt_pct(r["rel_iqr"]), _num(r["rel_iqr"]), "num"),
            int_cell(r["rounds"]), time_cell(r["first_call_s"]), bytes_cell(r["peak_bytes"]),
            ratio_cell(r["mem_ratio"]), error_cell(r["error"]), error_cell(r["tolerance"]),
            int_cell(r.get("fevals")), int_cell(r.get("vjps")), int_cell(r.get("jvps")),
            text_cell(None if missing(r.get("fallback_ops")) else str(r["fallback_ops"]).replace(",", ", "), "ops"),
        ]
        if many_contexts:
            row.insert(5, text_cell(platform_label(r)))
        t.rows.append(row)
    return t


# --- figures, guarded --------------------------------------------------------------------

@dataclass
class Failed:
    """A figure that could not be drawn; shown on the page instead of hiding the problem."""
    title: str
    message: str
    failed: bool = True


def _figure(title: str, fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - one broken figure must not cost the whole report
        print(f"jacbench report: figure {title!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return Failed(title, f"{type(exc).__name__}: {exc}")


#: A page of more figures than this draws them in worker processes, one per CPU: drawing is
#: most of a report's time (46 figures of the standard sweep took 15 of its 22 s), and each
#: figure is a pure function of its frames. Fewer are drawn here, sooner than workers start.
PARALLEL_FIGURES = 12


class Drawer:
    """Draws the page's figures, each guarded (:func:`_figure`): ``drawer(title, fn, *args)``
    returns a future of the figure. Inside ``with Drawer(n):``, for ``n`` figures above
    :data:`PARALLEL_FIGURES` on a machine of several CPUs, they are drawn in a pool of worker
    processes (forked where this process runs one thread, else from a fork server), while the
    page's tables are made here; otherwise each is drawn at once."""

    def __init__(self, figures: int):
        self.workers = min(os.cpu_count() or 1, 8) if figures > PARALLEL_FIGURES else 1
        self.pool = None

    def __enter__(self):
        if self.workers > 1:
            method = "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "forkserver"
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context(method))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def __call__(self, title: str, fn, *args) -> Future:
        if self.pool is not None:
            return self.pool.submit(_figure, title, fn, *args)
        done: Future = Future()
        done.set_result(_figure(title, fn, *args))
        return done


# --- the page ------------------------------------------------------------------------------

@dataclass
class Section:
    """One platform's recommendations and figures. Figures of a family are ``(family, figure)``;
    the family's place in each part of the page has the element id ``id(part, family)``."""
    label: str
    key: dict
    rows: int
    prefix: str  # of its element ids: empty where the page has one platform
    cards: list = field(default_factory=list)
    families: Table | None = None
    problems: Table | None = None
    scaling: list = field(default_factory=list)
    no_scaling: list = field(default_factory=list)
    crossover: object = None
    findings: list = field(default_factory=list)
    heatmaps: list = field(default_factory=list)
    tradeoffs: list = field(default_factory=list)
    no_tradeoffs: list = field(default_factory=list)
    noise: object = None
    drift: str = ""
    rules: Table | None = None
    regret: object = None
    cost: Table | None = None
    cost_figure: object = None
    overhead: list = field(default_factory=list)

    def id(self, part: str, family: str) -> str:
        return anchor(part, self.prefix, family)


def _context(key: dict, g: pd.DataFrame, styles, columns: list[str], prefix: str, scores, draw: Drawer) -> Section:
    """One platform's section; ``scores()`` gives the picking rules' regrets (``rules.regrets``)."""
    ok = timed(g)
    families = list(dict.fromkeys(g["family"]))
    # every figure asked for first, so that workers draw them while the tables are made
    scale = figs.heatmap_scale(ok)
    drawn = {fam: (draw(f"scaling {fam}", figs.scaling, ok[ok["family"] == fam], fam, styles),
                   draw(f"heatmap {fam}", figs.heatmap, g[g["family"] == fam], ok[ok["family"] == fam], fam, columns,
                        scale),
                   draw(f"trade-offs {fam}", figs.tradeoffs, ok[ok["family"] == fam], fam, styles))
             for fam in families}
    cross = draw("crossover", figs.crossover, ok, styles)
    noise = draw("noise", figs.noise, ok, styles, columns)
    cost_figure = draw("cost in units of f", figs.cost_in_f, ok, styles)
    scores = scores()  # the rules' regrets of every platform, once the figures above are being drawn
    mine = scores[(scores[PLATFORM] == pd.Series(key)).all(axis=1)] if len(scores) else scores
    regret = draw("regret", figs.regret, mine) if len(mine) else None

    picks = family_picks(g)
    ctx = Section(platform_label(key), key, len(g), prefix, drift=drift_text(g))
    ctx.families = family_table(picks)
    best = best_per_problem(g)
    ctx.problems = problem_table(best, lambda fam: ctx.id("problems", fam))
    per_family = cost.table(g)
    ctx.cost = cost_table(per_family) if len(per_family) else None
    ctx.overhead = cost.overhead(g)["finding"].tolist()
    if len(mine):
        ctx.rules = rules_table(rules.summary(mine))

    solved = set(ok["family"])
    for fam in families:
        scaling, heatmap, tradeoffs = (f.result() for f in drawn[fam])
        if scaling is not None:
            ctx.scaling.append((fam, scaling))
        elif fam in solved:
            ctx.no_scaling.append(fam)
        if heatmap is not None:
            ctx.heatmaps.append((fam, heatmap))
        if tradeoffs is not None:
            ctx.tradeoffs.append((fam, tradeoffs))
        elif fam in solved:
            ctx.no_tradeoffs.append(fam)
    cross = cross.result()
    if isinstance(cross, tuple):
        ctx.crossover, ctx.findings = cross
    elif cross is not None:
        ctx.crossover = cross
    ctx.noise, ctx.cost_figure = noise.result(), cost_figure.result()
    ctx.regret = regret.result() if regret is not None else None
    parts = [("problems", "problems", set(best["family"]))] + [
        (part, label, {fam for fam, _ in figures}) for part, label, figures in
        (("scaling", "scaling", ctx.scaling), ("heatmap", "heatmap", ctx.heatmaps),
         ("tradeoffs", "trade-offs", ctx.tradeoffs))]
    for _, p in picks.iterrows():
        fam = p["family"]
        links = [(label, ctx.id(part, fam)) for part, label, families in parts if fam in families]
        ctx.cards.append(card(p, ok[ok["family"] == fam], links))
    return ctx


def side_by_side(sections: list[Section]) -> Table:
    """Each family's exact pick on each platform (GPU kinds, machines, torch versions), and
    whether they agree: where a pick depends on the hardware, it says so."""
    picks = [{c.family: c.pick for c in s.cards} for s in sections]
    families = list(dict.fromkeys(f for p in picks for f in p))
    t = Table([Column("family")] + [Column(s.label) for s in sections] +
              [Column("the picks", "whether every platform that solved the family picks the same strategy")])
    for family in families:
        names = [p.get(family) for p in picks]
        differ = len({n for n in names if n}) > 1
        t.rows.append([text_cell(family)] + [text_cell(n or "-", "strong" if differ and n else "") for n in names]
                      + [text_cell("differ", "bad") if differ else text_cell("agree", "muted")])
    return t


def build(frame: pd.DataFrame, docs) -> str:
    """The page for a loaded frame and its parsed files ``[(path, doc), ...]``."""
    started = time.perf_counter()
    approximate_names = sorted(set(frame.loc[approximate(frame), "strategy"])) if len(frame) else []
    strategies = list(dict.fromkeys(frame["strategy"]))
    styles = figs.Styles(strategies, set(approximate_names))
    ok_all = timed(frame)
    columns = figs.strategy_order(ok_all) if len(ok_all) else []
    columns += [s for s in strategies if s not in columns]
    groups = list(platforms(frame))
    many = len(groups) > 1
    with Drawer(sum(3 * g["family"].nunique() + 4 for _, g in groups) + len(docs)) as draw:
        loads = [(Path(p).name, load.describe(doc["jacbench"].get("load") or []),
                  draw("load", figs.load_timeline, doc["jacbench"].get("load") or [],
                       frame[frame["file"] == str(p)] if "file" in frame else frame)) for p, doc in docs]
        scores = functools.cache(lambda: rules.regrets(frame) if len(frame) else pd.DataFrame())
        ctxs = [_context(key, g, styles, columns, platform_label(key) if many else "", scores, draw)
                for key, g in groups]
        loads = [(name, said, figure.result()) for name, said, figure in loads]
    counts = [(s, int((frame["status"] == s).sum())) for s in STATUSES if (frame["status"] == s).any()]
    return html.render(
        "report.html.j2",
        title="jacbench report",
        files=[Path(p).name for p, _ in docs],
        env=origin_table(docs, frame),
        total=len(frame),
        counts=counts,
        contexts=ctxs,
        many=many,
        side=side_by_side(ctxs) if many else None,
        claims=claims_table(frame),
        baselines=BASELINES,
        captions={"scaling": figs.SCALING_CAPTION, "crossover": figs.CROSSOVER_CAPTION,
                  "heatmap": figs.HEATMAP_CAPTION, "tradeoffs": figs.TRADEOFF_CAPTION},
        noise_warning=f"{NOISE_WARNING:.0%}",
        rerun_floor=f"{RERUN_FLOOR:.0%}",
        failures=failure_groups(frame, many),
        failure_overview=failure_overview(frame),
        n_failures=int((frame["status"] != "ok").sum()),
        noise=noise_table(frame, many),
        loads=loads,
        rows=all_rows(frame, many),
        approximate_names=approximate_names,
        elapsed=lambda: f"{time.perf_counter() - started:.1f} s",
    )


def header(doc: dict) -> dict:
    """A parsed results file without its records (``build`` reads them from the frame): its
    environment, settings and load, all that the page takes from the file itself."""
    return {**doc, "benchmarks": [], "jacbench": {**doc["jacbench"], "untimed": []}}


def write(paths, out: Path) -> Path:
    """Render the report of result files ``paths`` to ``out`` (one self-contained HTML file)."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    docs = []
    frame = results.load(paths, on_read=lambda path, doc: docs.append((path, header(doc))))
    page = build(frame, docs)
    return files.write_atomic(out, page)

"""What a results frame says, in numbers and in plain text: the best strategy per problem and
per family, with its speedups over the baselines. The HTML report (``report``) shows the
same numbers; ``render`` is the terminal's version, for a remote GPU box. No torch.

NOTE: [Recommendation rules]
    A recommendation is made within one context (machine, torch, device, dtype) and only
    from rows whose status is ``ok``: a ``wrong`` pair is never timed, so it can never be
    the fastest. Two picks are made, because finite differences are often the fastest on a
    CPU but carry an error near sqrt(eps):

    - the fastest strategy overall, finite differences included;
    - the fastest *exact* strategy (reverse or forward mode: see ``approximate``).

    "Faster" needs evidence: where the runner-up's median lies within the pair's ~95%
    confidence intervals of the median (NOTE: [Median precision] in ``stats``), the two are
    reported as tied. Speedups over the baselines are ratios of medians of the same problem
    in the same context. A family's pick is the strategy with the smallest geometric-mean
    slowdown relative to the fastest strategy of each problem, among strategies that are
    ``ok`` on every problem of the family that any of them solves and that are never
    ``wrong`` in it; when none covers every problem, the widest coverage wins.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from .stats import DISTURBED_SHARE, NOISE_WARNING, STALL_SPREAD

BASELINES = ("functional", "manual-backward")
CONTEXT = ["machine", "torch", "device", "dtype"]
STATUS_ORDER = ("ok", "wrong", "disputed", "error", "oom", "timeout", "unsupported")


# --- formatting ----------------------------------------------------------------------------

def missing(v) -> bool:
    """None, NaN or pandas' NA: a value a results file did not have."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def fmt_time(seconds) -> str:
    if missing(seconds):
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_bytes(n) -> str:
    if missing(n):
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def fmt_ratio(x) -> str:
    """A speedup or slowdown: ``3.2x``, ``45x``, ``1,230x``."""
    if missing(x):
        return "-"
    return f"{x:.2g}x" if x < 10 else f"{x:,.0f}x"


def fmt_error(e) -> str:
    if missing(e):
        return "-"
    return "0" if e == 0 else f"{e:.1e}"


def fmt_pct(x) -> str:
    return "-" if missing(x) else f"{100 * x:.0f}%"


# --- the facts -------------------------------------------------------------------------------

# Approximate strategies by name, for files whose rows lack a telling ``mode``: finite
# differences (an ``fd`` word) and the penalty's random estimators.
_APPROXIMATE_NAME = re.compile(r"(?:^|[-_])fd(?:$|[-_])|^penalty-(?:proj|hutchinson)\d")
APPROXIMATE_MODES = ("fd", "estimate")


def approximate(frame: pd.DataFrame) -> pd.Series:
    """True for rows of approximate strategies (finite differences, random estimates), False
    for exact ones: by the row's ``mode`` where the file has one, and by the strategy's name
    (files written before the estimators had a mode of their own call them ``reverse``)."""
    by_name = frame["strategy"].astype(str).str.contains(_APPROXIMATE_NAME)
    if "mode" in frame:
        return (by_name | frame["mode"].isin(APPROXIMATE_MODES)).astype(bool)
    return by_name.astype(bool)


def context_label(key: dict) -> str:
    return f"{key['device']} {key['dtype']}, torch {key['torch']}, {key['machine']}"


def contexts(frame: pd.DataFrame):
    """``(key, rows)`` for each context (machine, torch, device, dtype), in file order."""
    for key, g in frame.groupby(CONTEXT, sort=False, dropna=False):
        yield dict(zip(CONTEXT, key)), g


def timed(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``ok`` rows that have a median, with ``approximate`` and ``slowdown`` (median over
    the fastest ``ok`` median of the same problem in the same context)."""
    ok = frame[(frame["status"] == "ok") & frame["median"].notna()].copy()
    ok["approximate"] = approximate(ok)
    ok["slowdown"] = ok["median"] / ok.groupby(CONTEXT + ["problem"], dropna=False)["median"].transform("min")
    return ok


def geomean(values) -> float:
    """The geometric mean of the positive values (NaN if there are none)."""
    v = np.asarray([x for x in values if not missing(x) and x > 0], dtype=float)
    return float(np.exp(np.log(v).mean())) if len(v) else math.nan


def _pick(g: pd.DataFrame, everyone: pd.DataFrame, prefix: str) -> dict:
    """The fastest row of ``g`` (a problem's ``ok`` rows, maybe a subset) as fields named with
    ``prefix``; speedups are over the baselines in ``everyone`` (all its ``ok`` rows)."""
    keys = ("strategy", "median", "iqr", "ci_half", "peak_bytes", "mem_ratio", "error", "approximate",
            "tied_with") + tuple(f"vs {b}" for b in BASELINES)
    if g.empty:
        return {prefix + k: None for k in keys}
    g = g.sort_values("median")
    best = g.iloc[0]
    rec = {k: best.get(k) for k in keys[:8]}
    # NOTE: [Recommendation rules]: a runner-up inside the confidence intervals is a tie
    reach = best["median"] + (best.get("ci_half") or 0)
    rivals = g.iloc[1:]
    tied = rivals[rivals["median"] - rivals["ci_half"].fillna(0) <= reach]["strategy"]
    rec["tied_with"] = ", ".join(tied)
    for base in BASELINES:
        b = everyone[everyone["strategy"] == base]["median"]
        rec[f"vs {base}"] = b.iloc[0] / best["median"] if len(b) else None
    return {prefix + k: v for k, v in rec.items()}


def best_per_problem(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (machine, torch, device, dtype, family, problem) with a correct timed pair:
    the fastest strategy (``strategy``, ``median``, ``vs functional``, ...) and the fastest
    exact one (the same fields prefixed ``exact_``). See NOTE: [Recommendation rules].
    Within a context, families keep their order and problems go by size n*m, then n."""
    group = CONTEXT + ["family", "problem"]
    ok = timed(frame)
    out = []
    for key, g in ok.groupby(group, sort=False, dropna=False):
        rec = dict(zip(group, key))
        rec.update(n=g["n"].iloc[0], m=g["m"].iloc[0], candidates=len(g))
        rec.update(_pick(g, g, ""))
        rec.update(_pick(g[~g["approximate"]], g, "exact_"))
        out.append(rec)
    best = pd.DataFrame(out)
    if best.empty:
        return best
    order = {f: i for i, f in enumerate(dict.fromkeys(best["family"]))}
    keys = pd.DataFrame({"family": best["family"].map(order), "size": best["n"] * best["m"], "n": best["n"]})
    return best.loc[keys.sort_values(["family", "size", "n"], kind="stable").index].reset_index(drop=True)


def family_picks(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (context, family): the strategy to use, exact and overall, with its typical
    (geometric-mean) slowdown relative to each problem's fastest, its worst slowdown, its wins
    and its speedups over the baselines. See NOTE: [Recommendation rules]."""
    ok = timed(frame)
    out = []
    for key, fam in frame.groupby(CONTEXT + ["family"], sort=False, dropna=False):
        rec = dict(zip(CONTEXT + ["family"], key))
        rows = ok[ok.index.isin(fam.index)]
        rec["problems"] = fam["problem"].nunique()
        rec["solved"] = rows["problem"].nunique()
        ever_wrong = set(fam.loc[fam["status"] == "wrong", "strategy"])
        for prefix, subset in (("", rows), ("exact_", rows[~rows["approximate"]])):
            rec.update(_family_pick(subset, rows, ever_wrong, prefix))
        out.append(rec)
    return pd.DataFrame(out)


def _family_pick(subset: pd.DataFrame, rows: pd.DataFrame, ever_wrong: set, prefix: str) -> dict:
    keys = ("strategy", "covered", "of", "geo_slowdown", "worst_slowdown", "wins", "max_error",
            "mem_ratio", "approximate") + tuple(f"vs {b}" for b in BASELINES)
    empty = {prefix + k: None for k in keys}
    subset = subset[~subset["strategy"].isin(ever_wrong)]
    if subset.empty:
        return empty
    fastest = subset.loc[subset.groupby("problem")["median"].idxmin()]
    wins = fastest["strategy"].value_counts()
    of = subset["problem"].nunique()
    stats = []
    for name, g in subset.groupby("strategy", sort=False):
        stats.append((-g["problem"].nunique(), geomean(g["slowdown"]), name, g))
    stats.sort(key=lambda s: (s[0], s[1]))
    covered, geo, name, g = stats[0]
    rec = {"strategy": name, "covered": -covered, "of": of, "geo_slowdown": geo,
           "worst_slowdown": g["slowdown"].max(), "wins": int(wins.get(name, 0)),
           "max_error": g["error"].max(), "mem_ratio": geomean(g["mem_ratio"]),
           "approximate": bool(g["approximate"].iloc[0])}
    mine = g.set_index("problem")["median"]
    for base in BASELINES:
        b = rows[rows["strategy"] == base].set_index("problem")["median"]
        both = mine.index.intersection(b.index)
        rec[f"vs {base}"] = geomean(b[both] / mine[both]) if len(both) else None
    return {prefix + k: v for k, v in rec.items()}


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row that is not ``ok``, ordered by strategy, status and problem."""
    bad = frame[frame["status"] != "ok"].copy()
    rank = {s: i for i, s in enumerate(STATUS_ORDER)}
    bad["_status_rank"] = bad["status"].map(rank)
    return bad.sort_values(["strategy", "_status_rank", "family", "problem"]).drop(columns="_status_rank")


def noisy(frame: pd.DataFrame) -> pd.DataFrame:
    """Timed rows whose IQR/median exceeded the warning level (``stats.NOISE_WARNING``), whose
    samples spread as a stall's do (``stats.STALL_SPREAD``), or more than
    ``stats.DISTURBED_SHARE`` of whose rounds were disturbed (NOTE: [Disturbance])."""
    if "rel_iqr" not in frame:
        return frame.iloc[0:0]
    number = lambda col: pd.to_numeric(frame.get(col, pd.Series(index=frame.index, dtype=float)), errors="coerce")
    loud = (number("rel_iqr") > NOISE_WARNING) | (number("stall") > STALL_SPREAD) | (
        number("disturbed") > DISTURBED_SHARE)
    return frame[loud].sort_values("rel_iqr", ascending=False)


# --- the terminal's version ----------------------------------------------------------------

def _environment_line(g: pd.DataFrame) -> str:
    first = g.iloc[0]
    bits = []
    if not missing(first.get("device_name")):
        bits.append(str(first["device_name"]))
    if not missing(first.get("threads")):
        bits.append(f"{int(first['threads'])} threads")
    if not missing(first.get("profile")):
        bits.append(f"profile {first['profile']}")
    if not missing(first.get("commit")):
        bits.append(f"commit {str(first['commit'])[:10]}")
    return ", ".join(bits)


def _family_table(picks: pd.DataFrame) -> str:
    table = pd.DataFrame({
        "family": picks["family"],
        "solved": [f"{s}/{p}" for s, p in zip(picks["solved"], picks["problems"])],
        "use (exact)": picks["exact_strategy"].fillna("no exact one"),
        "slowdown geo/worst": [f"{fmt_ratio(a)}/{fmt_ratio(b)}" for a, b in
                               zip(picks["exact_geo_slowdown"], picks["exact_worst_slowdown"])],
        "wins": [f"{int(w)}/{int(o)}" if not missing(o) else "-"
                 for w, o in zip(picks["exact_wins"], picks["exact_of"])],
        **{f"x vs {b}": picks[f"exact_vs {b}"].map(fmt_ratio) for b in BASELINES},
        "max error": picks["exact_max_error"].map(fmt_error),
        "fastest overall": [s if isinstance(s, str) else "-" for s in picks["strategy"]],
        "its error": picks["max_error"].map(fmt_error),
    })
    return table.to_string(index=False)


def _fd_note(strategy, approx, median, exact_median) -> str:
    if not approx:
        return "="
    if missing(exact_median):
        return f"{strategy} (no exact one is correct)"
    return f"{strategy} {fmt_ratio(exact_median / median)}"


def _problem_table(best: pd.DataFrame) -> str:
    def tie(name, tied):
        return f"{name} (~{tied.split(', ')[0]})" if tied else name

    table = pd.DataFrame({
        "problem": best["problem"],
        "n:m": [f"{n}:{m}" for n, m in zip(best["n"], best["m"])],
        "best strategy": [tie(s, t) if isinstance(s, str) else "no exact one" for s, t in
                          zip(best["exact_strategy"], best["exact_tied_with"].fillna(""))],
        "median": best["exact_median"].map(fmt_time),
        "IQR": best["exact_iqr"].map(fmt_time),
        "peak mem": best["exact_peak_bytes"].map(fmt_bytes),
        "error": best["exact_error"].map(fmt_error),
        **{f"x vs {b}": best[f"exact_vs {b}"].map(fmt_ratio) for b in BASELINES},
        "fastest incl. FD": [_fd_note(s, a, t, e) for s, a, t, e in
                             zip(best["strategy"], best["approximate"], best["median"], best["exact_median"])],
    })
    return table.to_string(index=False)


def render(frame: pd.DataFrame) -> str:
    """The plain-text summary: per context, the pick per family, the best exact strategy per
    problem with its speedups, and what failed or was noisy."""
    lines = []
    counts = frame["status"].value_counts()
    lines.append(f"{len(frame)} pairs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if frame.empty:
        return lines[0]
    for key, g in contexts(frame):
        lines.append(f"\n== {context_label(key)} ({_environment_line(g)})")
        best = best_per_problem(g)
        if best.empty:
            lines.append("no correct timed pair")
        else:
            lines.append("\nPer family: the exact strategy to use (slowdown vs each problem's fastest, "
                         "geometric mean / worst), and the fastest with finite differences:")
            lines.append(_family_table(family_picks(g)))
            lines.append("\nPer problem: the best strategy among exact ones (~ a tie within noise); "
                         "'fastest incl. FD' is how much faster finite differences were, '=' if not:")
            lines.append(_problem_table(best))
        bad = g[~g["status"].isin(["ok", "unsupported"])]
        if len(bad):
            lines.append("\nnot ok, by strategy (the report's failure table has every reason):")
            tally = bad.groupby("strategy", sort=False)["status"].value_counts()
            for strategy, statuses in tally.groupby(level=0, sort=False):
                lines.append(f"  {strategy}: " + ", ".join(f"{s} {n}" for (_, s), n in statuses.items()))
        unsupported = g[g["status"] == "unsupported"]
        if len(unsupported):
            lines.append(f"\n{len(unsupported)} pairs unsupported (a strategy that does not handle a problem's "
                         f"kind), by {unsupported['strategy'].nunique()} strategies")
        loud = noisy(g)
        if len(loud):
            lines.append(f"\n{len(loud)} timed pairs had IQR/median above {NOISE_WARNING:.0%}, samples spread more "
                         f"than {STALL_SPREAD:g}x or most rounds disturbed (noisy), e.g. "
                         + ", ".join(f"{p} {s} {fmt_pct(r)}" for p, s, r in
                                     loud[["problem", "strategy", "rel_iqr"]].head(3).itertuples(index=False)))
        disturbed = pd.to_numeric(g.get("disturbed", pd.Series(dtype=float)), errors="coerce") > DISTURBED_SHARE
        if disturbed.any():
            lines.append(f"{int(disturbed.sum())} of {len(timed(g))} timed pairs were disturbed in more than "
                         f"{DISTURBED_SHARE:.0%} of their rounds (the process was switched out or short of CPU: "
                         "a busy machine); their times are doubtful")
    return "\n".join(lines)

"""What a results frame says: the best strategy per problem and per family, with its margin and
its speedups over the baselines. The terminal's summary (``bench.render.summary``) and the HTML
report (``bench.render.report``) show these numbers. No torch.

NOTE: [Recommendation rules]
    A recommendation is made within one platform (machine, torch, device, dtype) and only
    from rows whose status is ``ok``: a ``wrong`` pair is never timed, so it can never be
    the fastest. Two picks are made, because finite differences are often the fastest on a
    CPU but carry an error near sqrt(eps):

    - the fastest strategy overall, finite differences included;
    - the fastest *exact* strategy (reverse or forward mode: see ``approximate``).

    "Faster" needs evidence. The pick's margin over each rival is their ratio with its 95%
    interval (``stats.between``: paired over the cycles they were timed in together, else of
    their medians, bootstrapped over their rounds); a rival whose interval holds 1 is tied
    with the fastest. A tie goes to the strategy that
    is exact, then to the one with the smaller peak memory, and the pick says so
    (``tie_break``). Rows whose timing stayed disturbed are not ``ok``: they are never
    picked and never a baseline. Speedups over the baselines are ratios of medians of the
    same problem on the same platform, with the same interval. A family's pick is
    the strategy with the smallest geometric-mean slowdown relative to the fastest strategy
    of each problem, among strategies that are ``ok`` on every problem of the family that
    any of them solves and that are never ``wrong`` in it; when none covers every problem,
    the widest coverage wins. Its speedups are geometric means over the problems, with an
    interval carried from each median's own interval (NOTE: [Median precision]), and a pick
    resting on one problem says so.

NOTE: [Fastest]
    A problem's *fastest* is its fastest exact strategy: the smallest median among the exact
    strategies ``ok`` on it. Every slowdown (``timed``) is relative to it, a family pick's wins
    are the problems where the pick is it, and so the two never disagree; an approximate
    strategy can be faster still, with a slowdown below 1. A problem that no exact strategy
    solved is measured against its fastest strategy of any kind.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from bench.analysis import visits
from bench.analysis.formats import fmt_bytes, missing
from bench.analysis.schema import status_rank
from bench.analysis.stats import DISTURBED_SHARE, NOISE_WARNING, STALL_SPREAD, Z95, Ratio, between, is_paired

BASELINES = ("functional", "manual-backward")
PLATFORM = ["machine", "torch", "device", "dtype"]
TIE_REACH = 3.0  # a rival slower than this many times the fastest is not tested for a tie


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


def platforms(frame: pd.DataFrame):
    """``(key, rows)`` for each platform (machine, torch, device, dtype), in file order."""
    for key, g in frame.groupby(PLATFORM, sort=False, dropna=False):
        yield dict(zip(PLATFORM, key)), g


def timed(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``ok`` rows that have a median, with ``approximate`` and ``slowdown``: the median over
    the fastest exact ``ok`` median of the same problem on the same platform (NOTE: [Fastest])."""
    ok = frame[(frame["status"] == "ok") & frame["median"].notna()].copy()
    ok["approximate"] = approximate(ok)
    problem = ok.assign(_exact=ok["median"].where(~ok["approximate"])).groupby(PLATFORM + ["problem"], dropna=False)
    ok["slowdown"] = ok["median"] / problem["_exact"].transform("min").fillna(problem["median"].transform("min"))
    return ok


def winners(rows: pd.DataFrame) -> pd.DataFrame:
    """Each problem's fastest of ``rows`` (the timed rows of one platform): for the exact rows,
    the fastest of NOTE: [Fastest]."""
    return rows.loc[rows.groupby("problem")["median"].idxmin()] if len(rows) else rows


def geomean(values) -> float:
    """The geometric mean of the positive values (NaN if there are none)."""
    v = np.asarray([x for x in values if not missing(x) and x > 0], dtype=float)
    return float(np.exp(np.log(v).mean())) if len(v) else math.nan


def row_ratio(a, b) -> Ratio:
    """b's time over a's of two rows, with its 95% interval (``stats.between``: paired
    over the cycles they were timed in together, else over their rounds, then widened by
    the run's drift between visits: NOTE: [Visits]); for rows without raw samples, carried
    from their medians' intervals."""
    sa, sb = a.get("samples"), b.get("samples")
    if not (isinstance(sa, list) and isinstance(sb, list) and sa and sb):
        return _geomean_ratio(pd.DataFrame([a]), pd.DataFrame([b]))
    drift = a.get("drift")
    k = [len(x["visits"]) if isinstance(x.get("visits"), list) else 1 for x in (a, b)]
    cycles = [x.get("cycles") if isinstance(x.get("cycles"), list) else () for x in (a, b)]
    if is_paired(sa, sb, *cycles):  # the drift between visits slowed both rounds of a cycle alike
        return between(sa, sb, *cycles)
    return visits.widened(between(sa, sb, *cycles), None if missing(drift) else drift, *k)


def _pick(g: list[dict], everyone: list[dict], prefix: str, ratio_of=row_ratio) -> dict:
    """The pick among ``g`` (a problem's ``ok`` rows as dicts, maybe a subset, by median) as
    fields named with ``prefix``: its margin over the runner-up and its speedups over the
    baselines in ``everyone`` (all its ``ok`` rows), each with a 95% interval (NOTE:
    [Recommendation rules]). ``ratio_of`` is :func:`row_ratio`, or a memo of it over the
    problem's rows."""
    keys = ("strategy", "median", "iqr", "ci_half", "peak_bytes", "mem_ratio", "error", "approximate",
            "tied_with", "runner_up", "tie_break") + tuple(
        f"{r}{end}" for r in ("margin", *(f"vs {b}" for b in BASELINES)) for end in ("", "_low", "_high"))
    if not g:
        return {prefix + k: None for k in keys}
    fastest, tied = g[0], []
    for rival in g[1:]:
        if rival["median"] > TIE_REACH * fastest["median"]:
            break
        if ratio_of(fastest, rival).tie:
            tied.append(rival)
    # a tie goes to the exact strategy, then to the one needing less memory
    pool = [fastest, *tied]
    best = min(pool, key=lambda r: (bool(r.get("approximate")), _or_inf(r.get("peak_bytes")), r["median"]))
    rec = {k: best.get(k) for k in keys[:8]}
    rec["tied_with"] = ", ".join(r["strategy"] for r in pool if r["strategy"] != best["strategy"])
    rec["tie_break"] = "" if best["strategy"] == fastest["strategy"] else (
        f"tied with {fastest['strategy']} within the noise; {best['strategy']} " +
        ("is exact" if fastest.get("approximate") and not best.get("approximate") else
         f"needs less memory ({fmt_bytes(best.get('peak_bytes'))} against {fmt_bytes(fastest.get('peak_bytes'))})"))
    runner = next((r for r in g if r["strategy"] != best["strategy"]), None)
    rec["runner_up"] = runner["strategy"] if runner is not None else None
    _put(rec, "margin", ratio_of(best, runner) if runner is not None else None)
    for base in BASELINES:
        b = next((r for r in everyone if r["strategy"] == base), None)
        _put(rec, f"vs {base}", ratio_of(best, b) if b is not None and best["strategy"] != base else None)
    return {prefix + k: v for k, v in rec.items()}


def _put(rec: dict, name: str, r: Ratio | None) -> None:
    """A ratio as three fields: ``name``, ``name_low`` and ``name_high`` (its 95% interval)."""
    rec[name], rec[f"{name}_low"], rec[f"{name}_high"] = (r.value, r.low, r.high) if r else (None, None, None)


def _or_inf(v) -> float:
    return math.inf if missing(v) else float(v)


# the columns a pick reads from its rows (``_pick``, ``row_ratio``)
_PICKED = ["n", "m", "strategy", "median", "iqr", "ci_half", "peak_bytes", "mem_ratio", "error", "samples", "cycles",
           "drift", "visits"]


def best_per_problem(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (machine, torch, device, dtype, family, problem) with a correct timed pair:
    the fastest strategy (``strategy``, ``median``, ``vs functional``, ...) and the fastest
    exact one (the same fields prefixed ``exact_``). See NOTE: [Recommendation rules].
    On a platform, families keep their order and problems go by size n*m, then n."""
    group = PLATFORM + ["family", "problem"]
    ok = timed(frame[[c for c in group + _PICKED + ["status", "mode"] if c in frame]])  # only what a pick reads
    out, records = [], ok.to_dict("records")  # dicts: a pick reads many fields of few rows
    for key, at in ok.groupby(group, sort=False, dropna=False).indices.items():
        rows = sorted((records[i] for i in at), key=lambda r: r["median"])
        rec = dict(zip(group, key))
        rec.update(n=rows[0]["n"], m=rows[0]["m"], candidates=len(rows))
        memo = {}  # both picks often compare the same rows: each ratio is taken once

        def ratio_of(a, b):
            key = (a["strategy"], b["strategy"])
            if key not in memo:
                memo[key] = row_ratio(a, b)
            return memo[key]

        rec.update(_pick(rows, rows, "", ratio_of))
        rec.update(_pick([r for r in rows if not r["approximate"]], rows, "exact_", ratio_of))
        out.append(rec)
    best = pd.DataFrame(out)
    if best.empty:  # no correct timed pair anywhere: no pick, but the columns a reader looks up
        return pd.DataFrame(columns=[*group, "n", "m", "candidates", *_pick([], [], ""), *_pick([], [], "exact_")])
    order = {f: i for i, f in enumerate(dict.fromkeys(best["family"]))}
    keys = pd.DataFrame({"family": best["family"].map(order), "size": best["n"] * best["m"], "n": best["n"]})
    return best.loc[keys.sort_values(["family", "size", "n"], kind="stable").index].reset_index(drop=True)


def family_picks(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (platform, family): the strategy to use, exact and overall, with its typical
    (geometric-mean) slowdown relative to each problem's fastest (NOTE: [Fastest]), its worst
    slowdown, its wins (the problems where it is the fastest of its kind: exact for the exact
    pick, any for the overall one) and its speedups over the baselines. See NOTE:
    [Recommendation rules]."""
    keep = PLATFORM + ["family", "problem", "strategy", "status", "median", "ci_half", "error", "mem_ratio"]
    frame = frame[[c for c in keep if c in frame]]  # a subset copies every column: only what a pick reads
    ok = timed(frame)
    out = []
    for key, fam in frame.groupby(PLATFORM + ["family"], sort=False, dropna=False):
        rec = dict(zip(PLATFORM + ["family"], key))
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
            "mem_ratio", "approximate") + tuple(f"vs {b}{end}" for b in BASELINES for end in ("", "_low", "_high"))
    empty = {prefix + k: None for k in keys}
    wins = winners(subset)["strategy"].value_counts()  # a strategy wrong elsewhere can still be the fastest
    subset = subset[~subset["strategy"].isin(ever_wrong)]
    if subset.empty:
        return empty
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
    mine = g.set_index("problem")
    for base in BASELINES:
        b = rows[rows["strategy"] == base].set_index("problem")
        both = mine.index.intersection(b.index)
        _put(rec, f"vs {base}", _geomean_ratio(mine.loc[both], b.loc[both]) if len(both) and name != base else None)
    return {prefix + k: v for k, v in rec.items()}


def _geomean_ratio(mine: pd.DataFrame, base: pd.DataFrame) -> Ratio:
    """The geometric mean over problems of base's median / mine, with a 95% interval from the
    medians' own intervals (NOTE: [Median precision]) carried through the logarithm."""
    logs = np.log(base["median"].astype(float).to_numpy() / mine["median"].astype(float).to_numpy())
    rel = lambda d: (d["ci_half"].astype(float).fillna(0).to_numpy() / Z95 / d["median"].astype(float).to_numpy()) ** 2
    sd = float(np.sqrt((rel(mine) + rel(base)).sum())) / len(logs)
    centre = float(logs.mean())
    return Ratio(math.exp(centre), math.exp(centre - Z95 * sd), math.exp(centre + Z95 * sd))


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row that is not ``ok``, ordered by strategy, status and problem."""
    bad = frame[frame["status"] != "ok"].copy()
    bad["_status_rank"] = bad["status"].map(status_rank)
    return bad.sort_values(["strategy", "_status_rank", "family", "problem"]).drop(columns="_status_rank")


def noisy(frame: pd.DataFrame) -> pd.DataFrame:
    """Timed rows whose IQR/median exceeded the warning level (``stats.NOISE_WARNING``), whose
    samples spread as a stall's do (``stats.STALL_SPREAD``), or more than
    ``stats.DISTURBED_SHARE`` of whose rounds were disturbed (NOTE: [Disturbance])."""
    if "rel_iqr" not in frame:
        return frame.iloc[0:0]
    number = lambda col: pd.to_numeric(frame.get(col, pd.Series(index=frame.index, dtype=float)), errors="coerce")
    loud = (number("rel_iqr") > NOISE_WARNING) | (number("stall") > STALL_SPREAD) | (
        number("disturbed") > DISTURBED_SHARE) | (frame["status"] == "disturbed")
    return frame[loud].sort_values("rel_iqr", ascending=False)

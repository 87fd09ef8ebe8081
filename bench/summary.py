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

    "Faster" needs evidence. The pick's margin over each rival is the ratio of their
    medians with a 95% percentile-bootstrap interval over their rounds (``stats.ratio``); a
    rival whose interval holds 1 is tied with the fastest. A tie goes to the strategy that
    is exact, then to the one with the smaller peak memory, and the pick says so
    (``tie_break``). Rows whose timing stayed disturbed are not ``ok``: they are never
    picked and never a baseline. Speedups over the baselines are ratios of medians of the
    same problem in the same context, with the same bootstrap interval. A family's pick is
    the strategy with the smallest geometric-mean slowdown relative to the fastest strategy
    of each problem, among strategies that are ``ok`` on every problem of the family that
    any of them solves and that are never ``wrong`` in it; when none covers every problem,
    the widest coverage wins. Its speedups are geometric means over the problems, with an
    interval carried from each median's own interval (NOTE: [Median precision]), and a pick
    resting on one problem says so.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from . import load, visits
from .stats import DISTURBED_SHARE, NOISE_WARNING, STALL_SPREAD, Ratio, ratio

BASELINES = ("functional", "manual-backward")
CONTEXT = ["machine", "torch", "device", "dtype"]
TIE_REACH = 3.0  # a rival slower than this many times the fastest is not bootstrapped for a tie
STATUS_ORDER = ("ok", "disturbed", "wrong", "disputed", "error", "oom", "timeout", "unsupported")


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


def fmt_interval(x, low, high) -> str:
    """A ratio with its 95% interval: ``3.2x (2.9-3.5)``."""
    if missing(x):
        return "-"
    if missing(low) or missing(high):
        return fmt_ratio(x)
    return f"{fmt_ratio(x)} ({fmt_ratio(low).rstrip('x')}-{fmt_ratio(high)})"


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


def _ratio(a, b) -> Ratio:
    """median(b) / median(a) of two rows, with its bootstrap interval over their rounds
    (``stats.ratio``) widened by the run's drift between visits (NOTE: [Visits]); for rows
    without raw samples, carried from their medians' intervals."""
    sa, sb = a.get("samples"), b.get("samples")
    if not (isinstance(sa, list) and isinstance(sb, list) and sa and sb):
        return _geomean_ratio(pd.DataFrame([a]), pd.DataFrame([b]))
    drift = a.get("drift")
    k = [len(x["visits"]) if isinstance(x.get("visits"), list) else 1 for x in (a, b)]
    return visits.widened(ratio(sa, sb, resamples=999), None if missing(drift) else drift, *k)


def _pick(g: pd.DataFrame, everyone: pd.DataFrame, prefix: str) -> dict:
    """The pick among ``g`` (a problem's ``ok`` rows, maybe a subset) as fields named with
    ``prefix``: its margin over the runner-up and its speedups over the baselines in
    ``everyone`` (all its ``ok`` rows), each with a 95% interval (NOTE: [Recommendation rules])."""
    keys = ("strategy", "median", "iqr", "ci_half", "peak_bytes", "mem_ratio", "error", "approximate",
            "tied_with", "runner_up", "tie_break") + tuple(
        f"{r}{end}" for r in ("margin", *(f"vs {b}" for b in BASELINES)) for end in ("", "_low", "_high"))
    if g.empty:
        return {prefix + k: None for k in keys}
    g = g.sort_values("median")
    fastest = g.iloc[0]
    tied = []
    for _, rival in g.iloc[1:].iterrows():
        if rival["median"] > TIE_REACH * fastest["median"]:
            break
        if _ratio(fastest, rival).tie:
            tied.append(rival)
    # a tie goes to the exact strategy, then to the one needing less memory
    pool = [fastest, *tied]
    best = min(pool, key=lambda r: (bool(r.get("approximate")), _or_inf(r.get("peak_bytes")), r["median"]))
    rest = g[g["strategy"] != best["strategy"]]
    rec = {k: best.get(k) for k in keys[:8]}
    rec["tied_with"] = ", ".join(r["strategy"] for r in pool if r["strategy"] != best["strategy"])
    rec["tie_break"] = "" if best["strategy"] == fastest["strategy"] else (
        f"tied with {fastest['strategy']} within the noise; {best['strategy']} " +
        ("is exact" if fastest.get("approximate") and not best.get("approximate") else
         f"needs less memory ({fmt_bytes(best.get('peak_bytes'))} against {fmt_bytes(fastest.get('peak_bytes'))})"))
    runner = rest.iloc[0] if len(rest) else None
    rec["runner_up"] = runner["strategy"] if runner is not None else None
    _put(rec, "margin", _ratio(best, runner) if runner is not None else None)
    for base in BASELINES:
        b = everyone[everyone["strategy"] == base]
        _put(rec, f"vs {base}", _ratio(best, b.iloc[0]) if len(b) and best["strategy"] != base else None)
    return {prefix + k: v for k, v in rec.items()}


def _put(rec: dict, name: str, r: Ratio | None) -> None:
    """A ratio as three fields: ``name``, ``name_low`` and ``name_high`` (its 95% interval)."""
    rec[name], rec[f"{name}_low"], rec[f"{name}_high"] = (r.value, r.low, r.high) if r else (None, None, None)


def _or_inf(v) -> float:
    return math.inf if missing(v) else float(v)


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
            "mem_ratio", "approximate") + tuple(f"vs {b}{end}" for b in BASELINES for end in ("", "_low", "_high"))
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
    rel = lambda d: (d["ci_half"].astype(float).fillna(0).to_numpy() / 1.96 / d["median"].astype(float).to_numpy()) ** 2
    sd = float(np.sqrt((rel(mine) + rel(base)).sum())) / len(logs)
    centre = float(logs.mean())
    return Ratio(math.exp(centre), math.exp(centre - 1.96 * sd), math.exp(centre + 1.96 * sd))


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
        number("disturbed") > DISTURBED_SHARE) | (frame["status"] == "disturbed")
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


def drift_text(g: pd.DataFrame) -> str:
    """What the run's drift between visits (NOTE: [Visits]) does to its numbers, or ''."""
    drift = pd.to_numeric(g.get("drift", pd.Series(dtype=float)), errors="coerce").dropna()
    if drift.empty:
        return ""
    d = float(drift.max())
    return (f"Timed in visits: a pair's median moved by {math.exp(d) - 1:.0%} between visits (one standard "
            f"deviation); every interval and margin below includes that, and strategies within it are a tie.")


def _family_table(picks: pd.DataFrame) -> str:
    table = pd.DataFrame({
        "family": picks["family"],
        "solved": [f"{s}/{p}" for s, p in zip(picks["solved"], picks["problems"])],
        "use (exact)": picks["exact_strategy"].fillna("no exact one"),
        "slowdown geo/worst": [f"{fmt_ratio(a)}/{fmt_ratio(b)}" for a, b in
                               zip(picks["exact_geo_slowdown"], picks["exact_worst_slowdown"])],
        "wins": [f"{int(w)}/{int(o)}" + (" (one problem)" if o == 1 else "") if not missing(o) else "-"
                 for w, o in zip(picks["exact_wins"], picks["exact_of"])],
        **{f"x vs {b}": _intervals(picks, f"exact_vs {b}") for b in BASELINES},
        "max error": picks["exact_max_error"].map(fmt_error),
        "fastest overall": [s if isinstance(s, str) else "-" for s in picks["strategy"]],
        "its error": picks["max_error"].map(fmt_error),
    })
    return table.to_string(index=False)


def _intervals(frame: pd.DataFrame, name: str) -> list[str]:
    return [fmt_interval(*v) for v in zip(frame[name], frame[f"{name}_low"], frame[f"{name}_high"])]


def _margin(best) -> str:
    """How much faster the exact pick was than its runner-up, or that it was a tie."""
    if missing(best.get("exact_runner_up")):
        return "-"
    if best["exact_tied_with"]:
        return "tie"
    return f"{fmt_interval(best['exact_margin'], best['exact_margin_low'], best['exact_margin_high'])} vs {best['exact_runner_up']}"


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
        "margin": [_margin(r) for _, r in best.iterrows()],
        "median": best["exact_median"].map(fmt_time),
        "IQR": best["exact_iqr"].map(fmt_time),
        "peak mem": best["exact_peak_bytes"].map(fmt_bytes),
        "error": best["exact_error"].map(fmt_error),
        **{f"x vs {b}": _intervals(best, f"exact_vs {b}") for b in BASELINES},
        "fastest incl. FD": [_fd_note(s, a, t, e) for s, a, t, e in
                             zip(best["strategy"], best["approximate"], best["median"], best["exact_median"])],
    })
    return table.to_string(index=False)


def render(frame: pd.DataFrame, loads: list | None = None) -> str:
    """The plain-text summary: per context, the pick per family, the best exact strategy per
    problem with its speedups, and what failed or was noisy; with ``loads`` (each file's
    load samples), when the machine was busy."""
    lines = []
    counts = frame["status"].value_counts()
    lines.append(f"{len(frame)} pairs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if frame.empty:
        return lines[0]
    for key, g in contexts(frame):
        lines.append(f"\n== {context_label(key)} ({_environment_line(g)})")
        moved = drift_text(g)
        if moved:
            lines.append(moved)
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
        retimed = g["retimed"].map(lambda r: bool(r) if isinstance(r, list) else False) if "retimed" in g else []
        if any(retimed):
            kept = int((g["status"] == "disturbed").sum())
            lines.append(f"{int(sum(retimed))} pairs were timed again because other work disturbed them (more than "
                         f"{DISTURBED_SHARE:.0%} of their rounds waited for a CPU, or other work kept at least "
                         f"{load.BUSY:g} CPU busy); {kept} stayed disturbed, and are shown but never used")
    for samples in loads or []:
        lines.append("\n" + load.describe(samples))
    return "\n".join(lines)

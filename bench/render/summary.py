"""The terminal's summary of a results frame: per platform, the pick per family, the best exact
strategy per problem with its speedups, and what failed or was noisy; for a remote GPU box
where no browser is at hand. The numbers are ``bench.analysis.picks``'s. No torch."""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis import load
from bench.analysis.formats import fmt_error, fmt_interval, fmt_pct, fmt_ratio, fmt_time, missing
from bench.analysis.picks import BASELINES, best_per_problem, family_picks, noisy, platforms
from bench.analysis.stats import DISTURBED_SHARE, NOISE_WARNING, STALL_SPREAD
from bench.render import terminal


def platform_label(key: dict) -> str:
    return f"{key['device']} {key['dtype']}, torch {key['torch']}, {key['machine']}"


def _environment_line(g: pd.DataFrame) -> str:
    first = g.iloc[0]
    bits = []
    if not missing(first.get("device_name")):
        bits.append(str(first["device_name"]))
    if not missing(first.get("threads")):
        n = int(first["threads"])
        bits.append(f"{n} thread{'s' if n != 1 else ''}")
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


def _family_table(picks: pd.DataFrame, columns: int) -> str:
    first = BASELINES[0]
    table = pd.DataFrame({
        "family": picks["family"],
        "solved": [f"{s}/{p}" for s, p in zip(picks["solved"], picks["problems"])],
        "use (exact)": picks["exact_strategy"].fillna("no exact one"),
        "slowdown geo/worst": [f"{fmt_ratio(a)}/{fmt_ratio(b)}" for a, b in
                               zip(picks["exact_geo_slowdown"], picks["exact_worst_slowdown"])],
        "wins": [f"{int(w)}/{int(o)}" + (" (one problem)" if o == 1 else "") if not missing(o) else "-"
                 for w, o in zip(picks["exact_wins"], picks["exact_of"])],
        f"x vs {first}": _intervals(picks, f"exact_vs {first}"),
        "max error": picks["exact_max_error"].map(fmt_error),
    })
    return terminal.table(table, columns, keep=("family", "use (exact)"))


def _approximate_text(picks: pd.DataFrame) -> str:
    """The families whose fastest strategy, finite differences counted, is not the exact pick."""
    other = [f"{f}: {s} ({'' if isinstance(x, str) else 'no exact one is correct; '}error {fmt_error(e)})"
             for f, s, e, x in zip(picks["family"], picks["strategy"], picks["max_error"], picks["exact_strategy"])
             if isinstance(s, str) and s != x]
    return ("Fastest when finite differences count, with their error: " + "; ".join(other) + ".") if other else ""


def _intervals(frame: pd.DataFrame, name: str) -> list[str]:
    return [fmt_interval(*v) for v in zip(frame[name], frame[f"{name}_low"], frame[f"{name}_high"])]


def _margin(best) -> str:
    """How much faster the exact pick was than its runner-up, or whom it tied with."""
    if missing(best.get("exact_runner_up")):
        return "-"
    if best["exact_tied_with"]:
        return f"tie with {best['exact_tied_with'].split(', ')[0]}"
    return f"{fmt_interval(best['exact_margin'], best['exact_margin_low'], best['exact_margin_high'])} vs {best['exact_runner_up']}"


def _problem_table(best: pd.DataFrame, columns: int) -> str:
    table = pd.DataFrame({
        "problem": best["problem"],
        "best (exact)": best["exact_strategy"].fillna("no exact one"),
        "median": best["exact_median"].map(fmt_time),
        "margin over the next": [_margin(r) for _, r in best.iterrows()],
    })
    return terminal.table(table, columns, keep=("problem",))


def render(frame: pd.DataFrame, loads: list | None = None, columns: int = terminal.WIDTH) -> str:
    """The plain-text summary, ``columns`` wide at most: per platform, the pick per family, the
    best exact strategy per problem with its speedups, and what failed or was noisy; with
    ``loads`` (each file's load samples), when the machine was busy."""
    lines = []
    counts = frame["status"].value_counts()
    lines.append(f"{len(frame)} pairs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if frame.empty:
        return lines[0]
    for key, g in platforms(frame):
        lines.append(f"\n== {platform_label(key)} ({_environment_line(g)})")
        moved = drift_text(g)
        if moved:
            lines.append(moved)
        best = best_per_problem(g)
        if best.empty:
            lines.append("no correct timed pair")
        else:
            lines.append("\nPer family: the exact strategy to use (slowdown vs each problem's fastest exact "
                         "strategy, geometric mean / worst):")
            picks = family_picks(g)
            lines.append(_family_table(picks, columns))
            lines.append(_approximate_text(picks))
            lines.append("\nPer problem: the fastest exact strategy and its margin over the next, or the one it "
                         "ties with within the noise; the report adds the spread, memory, error and baselines:")
            lines.append(_problem_table(best, columns))
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
    return terminal.fit("\n".join(lines), columns)

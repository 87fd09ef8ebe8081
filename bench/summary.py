"""A plain-text summary of result files, for a terminal on a remote GPU box. No torch."""

from __future__ import annotations

import pandas as pd

BASELINES = ("functional", "manual-backward")


def fmt_time(seconds) -> str:
    if seconds is None or pd.isna(seconds):
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_bytes(n) -> str:
    if n is None or pd.isna(n):
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def best_per_problem(frame: pd.DataFrame) -> pd.DataFrame:
    """The fastest correct strategy for each (machine, torch, device, dtype, problem), with its
    speedups over the baselines measured in the same file. ``wrong`` rows are never chosen."""
    group = ["machine", "torch", "device", "dtype", "family", "problem"]
    ok = frame[frame["status"] == "ok"]
    out = []
    for key, g in ok.groupby(group, sort=False):
        best = g.loc[g["median"].idxmin()]
        rec = dict(zip(group, key))
        rec.update(strategy=best["strategy"], median=best["median"], peak_bytes=best["peak_bytes"],
                   error=best["error"], iqr=best["iqr"])
        for base in BASELINES:
            b = g[g["strategy"] == base]["median"]
            rec[f"vs {base}"] = b.iloc[0] / best["median"] if len(b) else None
        out.append(rec)
    return pd.DataFrame(out)


def render(frame: pd.DataFrame) -> str:
    lines = []
    counts = frame["status"].value_counts()
    lines.append(f"{len(frame)} pairs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for (machine, torch_v, device, dtype), g in frame.groupby(["machine", "torch", "device", "dtype"], sort=False):
        lines.append(f"\n== {machine}, torch {torch_v}, {device}, {dtype}")
        best = best_per_problem(g)
        if best.empty:
            lines.append("no correct timed pair")
            continue
        table = pd.DataFrame({
            "problem": best["problem"],
            "best strategy": best["strategy"],
            "median": best["median"].map(fmt_time),
            "IQR": best["iqr"].map(fmt_time),
            "peak mem": best["peak_bytes"].map(fmt_bytes),
            "error": best["error"].map(lambda e: f"{e:.1e}" if pd.notna(e) else "-"),
            **{f"x vs {b}": best[f"vs {b}"].map(lambda v: f"{v:.1f}x" if pd.notna(v) else "-") for b in BASELINES},
        })
        lines.append(table.to_string(index=False))
        bad = g[g["status"] != "ok"]
        if len(bad):
            lines.append(f"not ok: " + ", ".join(f"{s} {n}" for s, n in bad["status"].value_counts().items())
                         + " (see the report's failure table)")
    return "\n".join(lines)

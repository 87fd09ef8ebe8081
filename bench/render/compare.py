"""A comparison of runs, as the terminal and an HTML page show it: the verdicts row by row,
heatmaps of the ratios, the pivot across sides, and what differs between the environments.
The numbers are ``bench.analysis.compare``'s. No torch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from bench.analysis import files
from bench.analysis.compare import CHANGED, VERDICTS, Comparison, api_matrix, is_number, pivot, strategy_pivot
from bench.analysis.formats import fmt_bytes, fmt_time
from bench.render import terminal

TERMINAL_ALL_ROWS = 40  # up to this many matched rows the terminal shows them all; beyond, the changes
TERMINAL_MAX_ROWS = 60  # and at most this many changes
# The environment diff of the report, in order.
ENV_FIELDS = ("environment", "torch", "torch_build", "cuda", "cudnn", "python", "pytest_benchmark", "machine",
              "device_kind", "device_name", "cpu", "cpu_count", "threads", "commit", "dirty", "profile",
              "policy", "pair_timeout", "seed", "selection", "shard", "devices", "dtypes", "pairs",
              "started", "wall_s", "files")

def _fmt_ratio(r, lo=float("nan"), hi=float("nan")) -> str:
    if not is_number(r):
        return "-"
    text = f"{r:.3f}x"
    if is_number(lo) and is_number(hi):
        text += f" [{lo:.2f}, {hi:.2f}]"
    return text


def _fmt_p(p) -> str:
    if not is_number(p):
        return "-"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _status_text(row) -> str:
    if row.get("status_change"):
        return row["status_change"]
    return str(row.get("status_new") if isinstance(row.get("status_new"), str) else row.get("status_base"))


def terminal_rows(table: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    cols = {k: table[k] for k in key if not (k in ("device", "dtype") and table[k].nunique() <= 1)}
    return pd.DataFrame({
        **cols,
        "base": table["median_base"].map(fmt_time),
        "new": table["median_new"].map(fmt_time),
        "ratio [95% CI]": [_fmt_ratio(r, lo, hi) for r, lo, hi in zip(table["ratio"], table["ci_lo"], table["ci_hi"])],
        "p10 ratio": table["low_ratio"].map(lambda r: f"{r:.3f}x" if is_number(r) else "-"),
        "p": table["p"].map(_fmt_p),
        "verdict": table["verdict"] + [" (stalled)" if st else " (noisy)" if no else ""
                                       for st, no in zip(table["stalled"], table["noisy"])],
        "status": [_status_text(r) for r in table.to_dict("records")],
        "memory": [f"{m} ({fmt_bytes(a)} → {fmt_bytes(b)})" if m else "" for m, a, b in
                   zip(table["memory"], table["peak_bytes_base"], table["peak_bytes_new"])],
    })


def render_text(comparison: Comparison, *, warnings: bool = True, columns: int = terminal.WIDTH) -> str:
    """The terminal form, ``columns`` wide at most: per non-base side, verdict counts and the
    rows with a change (every row when there are few); with three sides or more, the
    per-strategy pivot."""
    lines = []
    c = comparison
    for i, s in enumerate(c.sides):
        lines.append(f"{'base' if i == 0 else 'new '}: {s.label}  ({', '.join(str(f) for f in s.files)})")
    lines.append(f"match on {', '.join(c.key)}; threshold {c.threshold:.0%}, alpha {c.alpha:g}, "
                 f"memory threshold {c.memory_threshold:.0%}")
    for side in c.sides[1:]:
        t = c.table[c.table["side"] == side.label] if not c.table.empty else c.table
        counts = t["verdict"].value_counts() if len(t) else pd.Series(dtype=int)
        tally = ", ".join(f"{v} {int(counts[v])}" for v in VERDICTS if v in counts)
        extras = []
        if len(t):
            if (t["status_kind"] != "").any():
                extras.append(f"status changes {int((t['status_kind'] != '').sum())}")
            if (t["memory"] != "").any():
                extras.append(f"memory changes {int((t['memory'] != '').sum())}")
        lines.append(f"\n== {side.label} vs {c.base.label}: {len(t)} pairs: {tally}"
                     + (f"; {', '.join(extras)}" if extras else ""))
        if t.empty:
            continue
        shown = t
        if len(t) > TERMINAL_ALL_ROWS:
            changed = t[(~t["verdict"].isin(["no significant change", "untimed"])) | (t["status_kind"] != "")
                        | (t["memory"] != "")]
            # status changes first, then the largest changes either way
            rank = changed["status_kind"].eq("").astype(int) * 1e9 - changed["ratio"].map(
                lambda r: abs(math.log(r)) if is_number(r) and r > 0 else 0)
            shown = changed.loc[rank.sort_values(kind="stable").index].head(TERMINAL_MAX_ROWS)
            lines.append(f"(the {len(shown)} largest of {len(changed)} rows with a change, status changes first; "
                         f"-o OUT.html has every row)" if len(changed) > len(shown) else
                         f"(the {len(shown)} rows with a change; -o OUT.html has every row)")
        if len(shown):
            lines.append(terminal.table(terminal_rows(shown, c.key), columns, keep=("verdict",),
                                        optional=("status", "base", "new", "memory", "p", "p10 ratio")))
    if len(c.sides) > 2 or len(c.table) > TERMINAL_ALL_ROWS:
        # per-row verdicts on a busy machine scatter; the per-strategy aggregate is what reproduces
        sp = strategy_pivot(c)
        if not sp.empty:
            lines.append(f"\n== geometric mean of the ratio to {c.base.label}, per strategy")
            lines.append(terminal.table(sp.map(lambda v: f"{v:.3f}x" if is_number(v) else "-"), columns, index=True))
    for w in c.warnings if warnings else ():
        lines.append(f"warning: {w}")
    for n in c.notes:
        lines.append(f"note: {n}")
    return terminal.fit("\n".join(lines), columns)


# --- HTML -------------------------------------------------------------------------------------

def _heatmaps(comparison: Comparison) -> list[dict]:
    """Per (non-base side, device, dtype): problems x strategies, coloured by the ratio on a log
    scale; significant cells carry a star, status changes a '!'."""
    import matplotlib.colors as mcolors
    import numpy as np
    from matplotlib import colormaps

    from bench.render import figures as figs

    t = comparison.table
    out = []
    if t.empty:
        return out
    device_col = "device" if "device" in comparison.key else "device_new"
    for (side, device, dtype), g in t.groupby(["side", device_col, "dtype"], sort=False, dropna=False):
        g = g[g["verdict"] != "missing"]
        if g.empty or g["ratio"].notna().sum() == 0 and not (g["status_kind"] != "").any():
            continue
        by = [c for c in ("family", "n", "m", "problem") if c in g]
        problems = list(dict.fromkeys(g.sort_values(by, kind="stable", na_position="last")["problem"]))
        strategies = list(dict.fromkeys(comparison.base.frame["strategy"]))
        strategies += [s for s in dict.fromkeys(g["strategy"]) if s not in strategies]
        strategies = [s for s in strategies if s in set(g["strategy"])]
        value = pd.DataFrame(math.nan, index=problems, columns=strategies)
        text = pd.DataFrame("", index=problems, columns=strategies)
        for r in g.to_dict("records"):
            p, s = r["problem"], r["strategy"]
            if is_number(r["ratio"]) and r["ratio"] > 0:
                value.loc[p, s] = r["ratio"]
                text.loc[p, s] = f"{r['ratio']:.2f}" + ("*" if r["verdict"] in CHANGED else "")
            if r["status_kind"]:
                text.loc[p, s] = "!" + str(r["status_new"])[:5]
        logs = np.log2(value.to_numpy(dtype=float))
        limit = min(max(0.5, float(np.nanmax(np.abs(logs)))), 2.0) if np.isfinite(logs).any() else 1.0
        with figs.theme():
            fig, ax = figs.heatmap_figure(value, text, cmap=colormaps["RdBu_r"],
                                          norm=mcolors.LogNorm(vmin=2 ** -limit, vmax=2 ** limit),
                                          label=f"{side} / {comparison.base.label}\n(red: slower)", muted=("!ok",))
            ax.set_title(f"{side} vs {comparison.base.label}: {device}, {dtype}")
        out.append({"side": side, "device": device, "dtype": dtype, "uri": figs.inline(fig)})
    return out


def _pivot_figure(comparison: Comparison) -> str | None:
    """Per strategy, the geometric-mean ratio of every side to the base; and, per side, the
    spread of the row ratios."""
    sp = strategy_pivot(comparison)
    if sp.empty:
        return None
    import numpy as np
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter

    from bench.render import figures as figs

    labels = [" ".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in sp.index]
    sides = list(sp.columns)
    t = comparison.table
    timed = t[t["ratio"].map(is_number) & (t["ratio"] > 0)]
    # log2 of the ratios, so that bars grow left (faster) or right (slower) of 1
    bars = pd.DataFrame({"strategy": np.repeat(labels, len(sides)), "side": sides * len(labels),
                         "log2": np.log2(sp.to_numpy(dtype=float).ravel())})
    rows = pd.DataFrame({"side": timed["side"], "log2": np.log2(timed["ratio"].astype(float))})
    with figs.theme():
        fig, axes = figs.subplots(11, 1.5 + 0.3 * len(labels), 1, 2, width_ratios=[3, 2])
        ax, bx = axes[0]
        sns.barplot(data=bars, x="log2", y="strategy", hue="side", order=labels, hue_order=sides, errorbar=None,
                    orient="h", ax=ax)
        sns.move_legend(ax, "best", title=None)
        sns.boxplot(data=rows, x="log2", y="side", hue="side", order=sides, hue_order=sides, fliersize=2,
                    orient="h", legend=False, ax=bx)
        as_ratio = FuncFormatter(lambda x, _: f"{2 ** x:.3g}\u00d7")
        for a, xlabel in ((ax, f"geometric mean of the time ratio to {comparison.base.label} (right: slower)"),
                          (bx, "every timed row's ratio")):
            a.axvline(0, color="black", lw=0.8)
            a.xaxis.set_major_formatter(as_ratio)
            a.set(xlabel=xlabel, ylabel="")
    return figs.inline(fig)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return str(v)


def env_diff(comparison: Comparison) -> list[dict]:
    rows = []
    for f in ENV_FIELDS:
        values = []
        for s in comparison.sides:
            v = s.env.get(f)
            if f == "files":
                v = ", ".join(Path(x).name for x in v)
            elif f == "commit" and v:
                v = str(v)[:12]
            elif isinstance(v, (list, dict)):
                v = json.dumps(v, sort_keys=True) if isinstance(v, dict) else ", ".join(map(str, v))
            elif f == "wall_s" and is_number(v):
                v = f"{v:.0f} s"
            values.append(_cell(v))
        if f == "environment" and all(v == "-" for v in values):
            continue
        rows.append({"field": f, "values": values, "differs": len(set(values)) > 1})
    return rows


def _row_view(r: dict, key: list[str]) -> dict:
    return {
        **{k: _cell(r.get(k)) for k in key},
        "side": r.get("side", ""),
        "base": fmt_time(r.get("median_base")), "new": fmt_time(r.get("median_new")),
        "base_s": r.get("median_base") if is_number(r.get("median_base")) else "",
        "new_s": r.get("median_new") if is_number(r.get("median_new")) else "",
        "ratio": _fmt_ratio(r.get("ratio")), "ratio_v": r["ratio"] if is_number(r.get("ratio")) else "",
        "ci": (f"{r['ci_lo']:.2f} – {r['ci_hi']:.2f}" if is_number(r.get("ci_lo")) and is_number(r.get("ci_hi")) else "-"),
        "p": _fmt_p(r.get("p")), "p_v": r["p"] if is_number(r.get("p")) else "",
        "low": _fmt_ratio(r.get("low_ratio")), "low_v": r["low_ratio"] if is_number(r.get("low_ratio")) else "",
        "per_f": _fmt_ratio(r.get("ratio_f")), "per_f_v": r["ratio_f"] if is_number(r.get("ratio_f")) else "",
        "rounds": f"{_cell(r.get('rounds_base'))} / {_cell(r.get('rounds_new'))}",
        "verdict": r["verdict"], "confirmed": r.get("confirmed") or "", "noisy": bool(r.get("noisy")), "stalled": bool(r.get("stalled")),
        "status_base": _cell(r.get("status_base")), "status_new": _cell(r.get("status_new")),
        "status_change": r.get("status_change", ""), "status_kind": r.get("status_kind", ""),
        "reason": _cell(r.get("reason_new")) if r.get("status_new") != "ok" else "",
        "memory": r.get("memory", ""),
        "mem": f"{fmt_bytes(r.get('peak_bytes_base'))} → {fmt_bytes(r.get('peak_bytes_new'))}",
        "mem_ratio": _fmt_ratio(r.get("mem_ratio")),
    }


def html(comparison: Comparison) -> str:
    from bench.render.html import render

    c = comparison
    t = c.table
    records = t.to_dict("records") if not t.empty else []
    view = [_row_view(r, c.key) for r in records]
    regressions = [v for v, r in zip(view, records) if r["verdict"] == "slower"]
    improvements = [v for v, r in zip(view, records) if r["verdict"] == "faster"]
    inconclusive = [v for v, r in zip(view, records) if r["verdict"] == "inconclusive"]
    unreproduced = [v for v, r in zip(view, records) if r["verdict"] == "not reproduced"]
    status = [v for v, r in zip(view, records) if r["status_kind"]]
    memory = [v for v, r in zip(view, records) if r["memory"]]
    counts = []
    for s in c.sides[1:]:
        g = t[t["side"] == s.label] if not t.empty else t
        vc = g["verdict"].value_counts() if len(g) else {}
        counts.append({"side": s.label, "total": len(g),
                       "counts": [int(vc.get(v, 0)) if len(g) else 0 for v in VERDICTS],
                       "status": int((g["status_kind"] != "").sum()) if len(g) else 0,
                       "memory": int((g["memory"] != "").sum()) if len(g) else 0})
    wide = pivot(c) if len(c.sides) > 2 else None
    pivot_rows = []
    if wide is not None:
        for idx, row in wide.iterrows():
            idx = idx if isinstance(idx, tuple) else (idx,)
            cells = []
            for s in c.sides:
                med, st = row[s.label], row[f"{s.label} status"]
                cells.append({"text": fmt_time(med) if is_number(med) else _cell(st),
                              "value": med if is_number(med) else "", "status": _cell(st)})
            ratios = [{"text": _fmt_ratio(row[f"{s.label} / {c.base.label}"]),
                       "value": row[f"{s.label} / {c.base.label}"] if is_number(row[f"{s.label} / {c.base.label}"]) else ""}
                      for s in c.sides[1:]]
            pivot_rows.append({"key": [_cell(x) for x in idx], "cells": cells, "ratios": ratios})
    sp = strategy_pivot(c)
    sp_rows = [{"key": " ".join(map(str, k)) if isinstance(k, tuple) else str(k),
                "values": [_fmt_ratio(v) for v in row.values]} for k, row in sp.iterrows()] if not sp.empty else []
    api = api_matrix(c)
    api_rows = [{"strategy": str(k), "cells": [{"text": _cell(v), "lacks": " lacks " in str(v)} for v in row.values]}
                for k, row in api.iterrows()]
    return render(
        "compare.html.j2",
        sides=[{"label": s.label, "files": [str(f) for f in s.files]} for s in c.sides],
        base=c.base.label, key=c.key, threshold=c.threshold, alpha=c.alpha, memory_threshold=c.memory_threshold,
        warnings=c.warnings, notes=c.notes, verdicts=VERDICTS, counts=counts,
        regressions=regressions, improvements=improvements, inconclusive=inconclusive, unreproduced=unreproduced,
        status=status,
        memory=memory, rows=view, heatmaps=_heatmaps(c), pivot_figure=_pivot_figure(c),
        pivot_keys=list(wide.index.names) if wide is not None else [], pivot_rows=pivot_rows,
        strategy_pivot=sp_rows, other_sides=[s.label for s in c.sides[1:]],
        api_sides=list(api.columns), api_rows=api_rows, env=env_diff(c),
    )


def write_html(comparison: Comparison, out: Path) -> Path:
    return files.write_atomic(out, html(comparison))

"""Comparing result files row by row: ratio, significance, status and memory changes.

``jacbench compare BASE.json NEW.json [MORE.json ...]`` groups its files into *sides* (one
environment each: a torch version, a device, a machine, or simply an earlier run), matches
the rows of every side with the base side's, and gives each matched row a ratio, a verdict,
any status change and any memory change. ``bench.render.compare`` prints and draws it. No
torch is imported: a comparison runs where the files are.

NOTE: [Compare verdict]
    ``ratio`` is the new median over the base median (above 1: slower). The bar is the
    threshold, or the row's own noise when that is larger: the relative IQR (IQR over
    median) of the noisier side. A row is *slower* when ``ratio > 1 + bar`` and a two-sided
    Mann-Whitney U test of the two sets of raw samples gives ``p < alpha``; *faster* when
    ``ratio < 1 / (1 + bar)`` (the same factor the other way, as asv does) with
    ``p < alpha``. In both cases the fastest tenth of the calls must move too:
    ``low_ratio``, the ratio of the 10th percentiles, must pass half the bar in the same
    direction. And the ratio's 95% interval, which is never narrower than what a rerun moves
    a ratio (``stats.RERUN_FLOOR``, NOTE: [Paired timing]), must clear the bar too: a median
    moves between two runs of the same code by up to 10% on a quiet machine, so a change of
    10.3% was "slower" in 2 of 152 rows of two quiet runs of the MLP subset. Everything else
    is *no significant change*, with two exceptions, both *inconclusive* rather than a
    reassuring "no change": a change that passes the bar by less than its interval, and one
    whose samples are too few for the test ever to reach ``alpha`` (3 rounds against 3
    cannot go below p = 0.1).

    Why the fastest calls: other processes only ever add time. A burst of them during one
    side's measurement fattens its upper tail and drags its median, while its fastest calls
    stay where they were; a real change in torch moves every call. On a shared 2-core
    machine, a matrix of the same torch twice flagged a pair in about half its runs on the
    median test alone, every time with the two sides' 10th percentiles within 4% of each
    other. The test itself cannot see this: the samples of one run are not independent of
    that run's machine state, so a burst makes a shift "significant". The threshold and the
    low quantile are what make a verdict hold. Why the noise bar: with the low-quantile check
    alone, about one such matrix in four still flagged a pair, always a noisy one (IQR above
    10% of the median) whose whole window of calls had slowed by 10-15%; a shift no larger
    than the spread the machine produced within one side is not evidence. The 95% interval shown next to the ratio is a
    percentile bootstrap of the ratio of medians, for reading only.

Rows present on one side only are *new* or *missing*; rows where either side was not timed
(``wrong``, ``oom``, ...) are *untimed*, and their status change is reported on its own.
"""

from __future__ import annotations

import filecmp
import json
import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from bench.analysis import results, stats
from bench.analysis.stats import NOISE_WARNING, STALL_SPREAD, spread

VERDICTS = ("slower", "faster", "inconclusive", "not reproduced", "no significant change", "untimed", "new",
            "missing")
CHANGED = ("slower", "faster")
FAIL_ON = ("slower", "status", "any")
MATCH = ["problem", "strategy", "device", "dtype"]
MEMORY_FLOOR = 1024  # bytes: a peak that moves by less than this is not a memory change

# Identity of a side: files that agree on all of these may merge into one side (see ``group``).
_IDENTITY = ("environment", "machine", "torch_build", "python", "commit", "profile")
# What tells sides apart in their labels, in order of preference.
_LABEL_FIELDS = ("environment", "torch", "device_kind", "machine", "python", "torch_build", "commit", "profile")



@dataclass
class Side:
    """One environment's results: one file, or the shards of one sweep merged.

    Attributes:
        label: how tables and figures name it ("torch 2.12.1", "cuda-h100", a machine...).
        files: its result files.
        env: its environment (``results.origin``); where its files differ on a field
            (shards run on two machines, say), the values are joined with ``+``.
        frame: its rows, one per pair (``results.merge``: a pair in two files is an error).
    """

    label: str
    files: list[Path]
    env: dict
    frame: pd.DataFrame = field(repr=False)


@dataclass
class Comparison:
    """Every non-base side matched with the base side.

    Attributes:
        sides: base first.
        key: the columns rows are matched on (``MATCH``, without ``device`` when the sides
            are devices).
        table: one row per (side, matched key), ``side`` naming the non-base side.
        warnings: one line each; comparing unlike runs is allowed, but said.
        notes: what a reader should know but need not worry about (noise, ...).
    """

    sides: list[Side]
    key: list[str]
    table: pd.DataFrame
    warnings: list[str]
    notes: list[str]
    threshold: float
    alpha: float
    memory_threshold: float

    @property
    def base(self) -> Side:
        return self.sides[0]


# --- grouping files into sides ---------------------------------------------------------------

def group(paths) -> list[Side]:
    """Result files -> sides, in the order first given (the first file's side is the base).

    A file joins an earlier side when both have the same environment identity (matrix
    environment name, machine, torch build, Python, commit, profile) and the side holds no
    file of the same device, or when both are shards ``i/n`` (different ``i``) of the same
    sweep, whatever machine ran them. Otherwise it starts a side of its own: two runs in one
    environment (before and after a change) stay two sides. When everything falls into one
    side that holds several devices, each device becomes a side, so ``compare cpu.json
    cuda.json`` of one run compares the devices.
    """
    paths = [Path(p) for p in paths]
    docs = [(p, results.read(p)) for p in paths]  # all validated before anything else
    envs = [results.origin(doc, p) for p, doc in docs]
    groups: list[list[int]] = []
    for i, env in enumerate(envs):
        for g in groups:
            if _joins(env, [envs[j] for j in g]):
                g.append(i)
                break
        else:
            groups.append([i])
    if len(groups) == 1 and len({envs[i]["device"] for i in groups[0]}) > 1:
        by_device: dict[str, list[int]] = {}
        for i in groups[0]:
            by_device.setdefault(envs[i]["device"], []).append(i)
        groups = list(by_device.values())
    sides = []
    for g in groups:
        files = [paths[i] for i in g]
        sides.append(Side("", files, _merge_env([envs[i] for i in g]), results.merge(files)))
    for side, label in zip(sides, _labels([s.env for s in sides], [s.files for s in sides])):
        side.label = label
        side.frame = side.frame.assign(side=label)
    return sides


def _sweep(env: dict) -> tuple:
    """What the shards of one sweep share (the machine may differ: shards spread over machines)."""
    return (env["torch_build"], env["device"], env["profile"], json.dumps(env["selection"], sort_keys=True),
            json.dumps(env["policy"], sort_keys=True), str(env["shard"]).split("/")[-1])


def _joins(env: dict, members: list[dict]) -> bool:
    if env["shard"]:
        return all(m["shard"] and m["shard"] != env["shard"] and _sweep(m) == _sweep(env) for m in members)
    if any(m["shard"] for m in members):
        return False
    same = all(all(m[k] == env[k] for k in _IDENTITY) for m in members)
    return same and env["device"] not in {m["device"] for m in members}


def _merge_env(envs: list[dict]) -> dict:
    out = {}
    for k in envs[0]:
        if k == "file":
            continue
        values = []
        for e in envs:
            v = e[k]
            if isinstance(v, list):
                v = ",".join(map(str, v))
            elif isinstance(v, dict):
                v = json.dumps(v, sort_keys=True)
            if v not in values:
                values.append(v)
        if k in ("devices", "dtypes"):
            out[k] = sorted({x for e in envs for x in e[k]})
        elif k == "pairs":
            out[k] = sum(e[k] for e in envs)
        elif k == "wall_s":
            known = [e[k] for e in envs if e[k] is not None]
            out[k] = sum(known) if known else None
        else:
            out[k] = envs[0][k] if len(values) == 1 else "+".join(map(str, values))
    out["files"] = [e["file"] for e in envs]
    out["shards"] = sorted(e["shard"] for e in envs if e["shard"])
    return out


def _label_value(field_name: str, value) -> str:
    if field_name == "torch":
        return f"torch {value}"
    if field_name == "python":
        return f"python {value}"
    if field_name == "commit":
        return str(value)[:8] if value else "no commit"
    return str(value)


def _labels(envs: list[dict], files: list[list[Path]]) -> list[str]:
    """Short distinct names: the environment fields that tell the sides apart."""
    if len(envs) == 1:
        return [_label_value("torch", envs[0]["torch"])]
    differing = [f for f in _LABEL_FIELDS if len({str(e.get(f)) for e in envs}) > 1]
    if "environment" in differing and all(e.get("environment") for e in envs):
        differing = ["environment"]  # a matrix names its environments; the name says it
    elif "torch" in differing:
        differing = [f for f in differing if f not in ("torch_build", "environment")]
    labels = [" ".join(_label_value(f, e.get(f)) for f in differing[:2] if e.get(f) is not None) or fs[0].stem
              for e, fs in zip(envs, files)]  # a shard without pairs knows no device, no torch
    if len(set(labels)) < len(labels):  # same environment: runs told apart by when they started
        labels = [f"{lab} {str(e.get('started') or '')[:19].replace('T', ' ')}".strip() or fs[0].stem
                  for lab, e, fs in zip(labels, envs, files)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    return labels


# --- statistics -------------------------------------------------------------------------------

def min_p(n1: int, n2: int) -> float:
    """The smallest two-sided p-value an exact Mann-Whitney U test of n1 vs n2 samples can give."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def mann_whitney_p(a, b) -> float:
    from scipy.stats import mannwhitneyu

    if len(a) == 0 or len(b) == 0:
        return float("nan")
    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p  # all samples equal: no evidence of a difference


def bootstrap_ratio(a, b) -> tuple[float, float]:
    """The 95% interval of median(b) / median(a): the one ratio of every verdict
    (``stats.between``; two runs share no cycle, so it is never paired), no narrower than
    what a rerun moves a ratio (NOTE: [Paired timing])."""
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    r = stats.between(a, b)
    return r.low, r.high


def judge(ratio: float, p: float, n_base: int, n_new: int, threshold: float, alpha: float,
          low_ratio: float | None = None, noise: float = 0.0, interval: tuple[float, float] | None = None) -> str:
    """NOTE: [Compare verdict]. ``low_ratio``: the ratio of the 10th percentiles (None: not
    checked); ``noise``: the larger relative IQR of the two sides, which raises the bar;
    ``interval``: the ratio's 95% interval, no narrower than a rerun moves it (None: not checked)."""
    if math.isnan(ratio):
        return "untimed"
    bar = max(threshold, noise if is_number(noise) else 0.0)
    if 1 / (1 + bar) <= ratio <= 1 + bar:
        return "no significant change"
    if low_ratio is not None and not math.isnan(low_ratio):
        half = 1 + bar / 2
        if not (low_ratio > half if ratio > 1 else low_ratio < 1 / half):
            return "no significant change"  # the fastest calls did not move: interference, not torch
    if interval is not None and not any(map(math.isnan, interval)):
        if interval[0] <= 1 + bar if ratio > 1 else interval[1] >= 1 / (1 + bar):
            return "inconclusive"  # past the bar, but not by more than a rerun moves it
    if p < alpha:
        return "slower" if ratio > 1 else "faster"
    if min_p(n_base, n_new) >= alpha:
        return "inconclusive"
    return "no significant change"


def status_kind(before: str, after: str) -> str:
    """'' (no change), 'regression' (it was ok), 'fixed' (it is ok now), or 'changed' (also
    to or from ``disturbed``: the machine was busy, which says nothing of the strategy)."""
    if before == after or not isinstance(before, str) or not isinstance(after, str):
        return ""
    if "disturbed" in (before, after):
        return "changed"
    if before == "ok":
        return "regression"
    if after == "ok":
        return "fixed"
    return "changed"


# --- matching ---------------------------------------------------------------------------------

def match_key(sides: list[Side]) -> list[str]:
    """``MATCH``, without ``device`` when the sides are devices (one each, all different)."""
    devices = [s.env["devices"] for s in sides]
    if len(sides) > 1 and all(len(d) == 1 for d in devices) and len({d[0] for d in devices}) == len(sides):
        return [k for k in MATCH if k != "device"]
    return list(MATCH)


_CARRY = ("status", "reason", "median", "iqr", "rel_iqr", "rounds", "samples", "peak_bytes", "error", "device",
          "machine", "torch", "f_s")


def compare_frames(base: pd.DataFrame, new: pd.DataFrame, key: list[str], *, threshold: float = 0.10,
                   alpha: float = 0.05, memory_threshold: float = 0.20) -> pd.DataFrame:
    """One row per key found on either side: ratio, interval, p, verdict, status and memory change.

    Columns ending ``_base`` / ``_new`` hold each side's values.
    """
    info = ["family", "kind", "n", "m"]
    keep = key + [c for c in _CARRY if c not in key]
    base = base.drop_duplicates(key, keep="last")
    new = new.drop_duplicates(key, keep="last")
    b = base[keep + [c for c in info if c in base]].copy()
    n = new[keep].copy()
    merged = b.merge(n, on=key, how="outer", suffixes=("_base", "_new"), indicator=True)
    for c in info:
        if c in new and c in merged:  # rows only the new side has still get their family and sizes
            extra = new.set_index(key)[c]
            fill = merged.set_index(key).index.map(lambda k: extra.get(k))
            merged[c] = merged[c].where(merged[c].notna(), pd.Series(fill, index=merged.index))
    records = merged.to_dict("records")
    shift, uneven = moved(records, threshold)
    out = []
    for row in records:
        rec = dict(row)
        both = row["_merge"] == "both"
        a, z = row.get("samples_base"), row.get("samples_new")
        timed = _timed(row)
        ratio = p = lo = hi = low_ratio = float("nan")
        if timed:
            ratio = row["median_new"] / row["median_base"] if row["median_base"] > 0 else float("inf")
            z = [x / shift for x in z]  # NOTE: [Machine moved]: judged after the side's shift
            low_ratio = low(z) / low(a) if low(a) > 0 else float("inf")
            p = mann_whitney_p(a, z)
            lo, hi = bootstrap_ratio(a, z)
        if row["_merge"] == "left_only":
            v = "missing"
        elif row["_merge"] == "right_only":
            v = "new"
        elif not timed:
            v = "untimed"
        else:
            v = judge(ratio / shift, p, len(a), len(z), max(threshold, uneven), alpha, low_ratio,
                      max(row["rel_iqr_base"], row["rel_iqr_new"]), (lo, hi))
        kind = status_kind(row.get("status_base"), row.get("status_new")) if both else ""
        mem_ratio, memory = float("nan"), ""
        pb, pn = row.get("peak_bytes_base"), row.get("peak_bytes_new")
        if both and is_number(pb) and is_number(pn) and pb > 0:
            mem_ratio = pn / pb
            if abs(pn - pb) >= MEMORY_FLOOR:
                if mem_ratio > 1 + memory_threshold:
                    memory = "more"
                elif mem_ratio < 1 / (1 + memory_threshold):
                    memory = "less"
        noisy = timed and (row["rel_iqr_base"] > NOISE_WARNING or row["rel_iqr_new"] > NOISE_WARNING)
        stalled = timed and max(spread(a), spread(z)) > STALL_SPREAD
        fb, fn = row.get("f_s_base"), row.get("f_s_new")  # in units of each run's own t(f): NOTE: [Machine moved]
        ratio_f = ratio * fb / fn if timed and is_number(fb) and is_number(fn) and fb > 0 and fn > 0 else float("nan")
        rec.update(ratio=ratio, ratio_f=ratio_f, shift=shift, uneven=uneven,
                   ci_lo=lo * shift, ci_hi=hi * shift, p=p, low_ratio=low_ratio, verdict=v,
                   stalled=bool(stalled),
                   status_change=f"{row['status_base']}→{row['status_new']}" if kind else "",
                   status_kind=kind, mem_ratio=mem_ratio, memory=memory, noisy=bool(noisy))
        rec["regression"] = v == "slower" or kind == "regression" or memory == "more"
        rec.pop("_merge")
        rec.pop("samples_base", None)
        rec.pop("samples_new", None)
        out.append(rec)
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    order = {v: i for i, v in enumerate(VERDICTS)}
    frame["_order"] = frame["verdict"].map(order)
    frame["_mag"] = -frame["ratio"].map(lambda r: abs(math.log(r)) if is_number(r) and r > 0 else 0)
    return frame.sort_values(["_order", "_mag"] + key).drop(columns=["_order", "_mag"]).reset_index(drop=True)


#: NOTE: [Machine moved]
#:     Two runs of the same code on two machines, or on one machine on two days, differ by
#:     the machine: a standard run made here against the committed reference called 934 of
#:     1,086 rows faster, every one by about 2x. When at least :data:`MOVED_SHARE` of a
#:     side's timed rows (and :data:`MOVED_LEAST` rows at least) moved beyond the threshold the
#:     same way, the side's shift is the geometric median of its rows' ratios, ``compare``
#:     says so first, and each row is judged after that shift (its new samples divided by it):
#:     a row is slower or faster only where it moved against the rest. A machine does not move
#:     every row alike: two back-to-back runs of the MLP subset here, the second 1.38x slower
#:     in CPU time with no other load, saw the vectorized strategies slow by 1.5x and the
#:     loops by 1.3x (its caches or memory shared with other tenants, not its clock), and
#:     five rows 1.4x beyond the shift. So the rows' own spread around the shift (1.4826 times
#:     the median absolute deviation of their log ratios, :data:`~bench.analysis.stats.Z95`
#:     of it either way) raises the threshold: a row is slower or faster only beyond how
#:     unevenly the machine moved, and ``compare`` says how uneven that was. The raw ratio is kept,
#:     and beside it ``ratio_f``: the change in units of each run's own t(f), the plain
#:     evaluation of f timed in the same run (NOTE: [Cost in units of f]), which a faster or
#:     slower machine cancels to first order; the warning gives its median too.
MOVED_SHARE = 0.75
MOVED_LEAST = 4


def _timed(row: dict) -> bool:
    a, z = row.get("samples_base"), row.get("samples_new")
    return (row["_merge"] == "both" and isinstance(a, list) and isinstance(z, list)
            and row["status_base"] == "ok" == row["status_new"])


def moved(records: list[dict], threshold: float) -> tuple[float, float]:
    """The side's shift and how unevenly its rows took it (NOTE: [Machine moved]): the
    geometric median of the timed rows' ratios where most of them moved beyond ``threshold``
    the same way, and the change around it that their spread reaches (0.2: 20%); else 1 and 0."""
    import numpy as np

    ratios = np.array([r["median_new"] / r["median_base"] for r in records if _timed(r) and r["median_base"] > 0])
    if len(ratios) < MOVED_LEAST:
        return 1.0, 0.0
    logs = np.log(ratios)
    shift = float(np.exp(np.median(logs)))
    beyond = ratios > 1 + threshold if shift > 1 else ratios < 1 / (1 + threshold)
    if beyond.mean() < MOVED_SHARE:
        return 1.0, 0.0
    sigma = 1.4826 * float(np.median(np.abs(logs - np.median(logs))))
    return shift, math.expm1(stats.Z95 * sigma)


def low(samples) -> float:
    """The 10th percentile: how fast the fastest calls were (NOTE: [Compare verdict])."""
    import numpy as np

    return float(np.percentile(np.asarray(samples, dtype=float), 10))


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# --- the comparison ---------------------------------------------------------------------------

def compare(paths, *, threshold: float = 0.10, alpha: float = 0.05, memory_threshold: float = 0.20) -> Comparison:
    """Compare result files: the first file's side is the base (see :func:`group`)."""
    for name, value in (("--threshold", threshold), ("--memory-threshold", memory_threshold)):
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a fraction >= 0, e.g. 0.10 for 10%, not {value}")
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha must be between 0 and 1, e.g. 0.05, not {alpha}")
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError("compare needs at least two results files: BASE.json NEW.json [MORE.json ...]")
    sides = group(paths)
    if len(sides) < 2:
        raise ValueError(f"all {len(paths)} files are parts of one run ({sides[0].label}: shards or devices of "
                         f"one sweep); give a second run to compare with")
    key = match_key(sides)
    tables = []
    for side in sides[1:]:
        t = compare_frames(sides[0].frame, side.frame, key, threshold=threshold, alpha=alpha,
                           memory_threshold=memory_threshold)
        if not t.empty:
            t.insert(0, "side", side.label)
            tables.append(t)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["side", *key, "verdict"])
    warnings, notes = _checks(sides, table, threshold)
    return Comparison(sides, key, table, warnings, notes, threshold, alpha, memory_threshold)


def _checks(sides: list[Side], table: pd.DataFrame, threshold: float) -> tuple[list[str], list[str]]:
    warnings, notes = [], []
    base = sides[0]
    for s in sides[1:]:
        same = [f for f in s.files if any(f.resolve() == b.resolve() or filecmp.cmp(f, b, shallow=False)
                                          for b in base.files)]
        if same:
            warnings.append(f"{s.label} and {base.label} are the same file ({same[0]}): every row is compared "
                            f"with itself, so nothing can change")

    def differ(field_name):
        return [s for s in sides[1:] if str(s.env.get(field_name)) != str(base.env.get(field_name))]

    for s in sides[1:]:
        rows = table[(table["side"] == s.label) & table["ratio"].notna()] if "shift" in table else table.iloc[:0]
        if len(rows) and rows["shift"].iloc[0] != 1.0:
            shift = rows["shift"].iloc[0]
            in_f = rows["ratio_f"][rows["ratio_f"].map(is_number) & (rows["ratio_f"] > 0)]
            per_f = (f"; in units of each run's own t(f), by {math.exp(statistics.median(map(math.log, in_f))):.2f}x"
                     if len(in_f) else "")
            warnings.append(f"every row of {s.label} moved by about {shift:.2f}x against {base.label} (the median of "
                            f"{len(rows)} timed rows{per_f}): the machine or its load, not the code? Each row is "
                            f"judged after that shift: slower or faster only against the rest"
                            + (f", beyond the {rows['uneven'].iloc[0]:.0%} by which the rows moved unevenly"
                               if rows["uneven"].iloc[0] > threshold else ""))
    for s in sides:
        if not s.env["pairs"]:
            warnings.append(f"{s.label} holds no pairs ({', '.join(str(f) for f in s.files)}): every row of the "
                            f"other side is {'new' if s is base else 'missing'}")
    for s in differ("dtypes"):
        if not s.env["dtypes"] or not base.env["dtypes"]:
            continue  # said above
        warnings.append(f"dtypes differ: {base.label} has {', '.join(base.env['dtypes'])}, {s.label} has "
                        f"{', '.join(s.env['dtypes'])}; rows of a dtype one side lacks have no match")
    for s in differ("profile"):
        warnings.append(f"profiles differ: {base.label} ran {base.env['profile']}, {s.label} ran "
                        f"{s.env['profile']}; their timing policies differ, so medians and spreads are not "
                        f"like for like")
    if not differ("profile"):
        for s in differ("policy"):
            warnings.append(f"timing policies differ between {base.label} and {s.label}")
    for s in differ("threads"):
        warnings.append(f"thread counts differ: {base.label} used {base.env['threads']}, "
                        f"{s.label} used {s.env['threads']}")
    for s in differ("commit"):
        notes.append(f"commits differ ({_label_value('commit', base.env['commit'])} vs "
                     f"{_label_value('commit', s.env['commit'])}): the benchmark code itself may differ")
    dirty = [s.label for s in sides if s.env.get("dirty") is True]
    if dirty:
        notes.append(f"{'every side' if len(dirty) == len(sides) else ', '.join(dirty)} ran from a working tree "
                     f"with uncommitted changes")
    for s in sides:
        ns = {int(str(x).split("/")[1]) for x in s.env.get("shards", [])}
        if len(ns) == 1:
            n = ns.pop()
            have = {int(str(x).split("/")[0]) for x in s.env["shards"]}
            if have != set(range(1, n + 1)):
                lacking = ", ".join(f"{i}/{n}" for i in sorted(set(range(1, n + 1)) - have))
                warnings.append(f"{s.label} holds shards {', '.join(s.env['shards'])} of {n}: "
                                f"shard {lacking} is missing, so its rows are 'missing'")
    named = [s for s in sides if s.env["device_name"]]  # a shard without pairs ran nothing, on no hardware
    if len({str(s.env["device_name"]) for s in named}) > 1 and "device" in match_key(sides):
        notes.append("the sides ran on different hardware: " + "; ".join(f"{s.label}: {s.env['device_name']}"
                                                                         for s in named))
    if table.empty or table["verdict"].isin(["missing", "new"]).all():
        warnings.append("no row matches between the base and the other files (different problems, "
                        "strategies, devices or dtypes)")
    timed = table[table["ratio"].notna()] if "ratio" in table else table
    if len(timed):
        noisy = int(timed["noisy"].sum())
        if noisy:
            notes.append(f"{noisy} of {len(timed)} timed rows are noisy (IQR above {NOISE_WARNING:.0%} of the "
                         f"median on one side or both): their verdicts rest on a spread the threshold must absorb")
        stalled = int(timed["stalled"].sum())
        if stalled:
            warnings.append(f"{stalled} of {len(timed)} timed rows have samples spread more than {STALL_SPREAD:g}x "
                            f"(90th over 10th percentile): those runs were stalled, not just noisy (a busy machine; "
                            f"with several torch threads, one descheduled thread stalls every parallel op), and "
                            f"their ratios are not to be trusted; re-run on a quieter machine or with fewer threads")
    return warnings, notes


def confirm(comparison: Comparison, repeats: list[Comparison]) -> Comparison:
    """Keep a slower or faster verdict only where every re-measurement of the pair in fresh,
    interleaved runs (``repeats``, made by ``jacbench matrix``) gave the same verdict; the
    others become *not reproduced*. Within one run the samples of a pair share the machine's
    state, so a slow window of a few seconds can pass every test; a change in torch comes back
    each time."""
    t = comparison.table.copy()
    if t.empty or not repeats:
        return comparison
    key = ["side", *comparison.key]
    again = [r.table.set_index(key)["verdict"] for r in repeats if not r.table.empty]
    t["confirmed"] = ""
    flagged = t["verdict"].isin(CHANGED)
    kept = []
    for i in t.index[flagged]:
        k = tuple(t.loc[i, key])
        same = sum(a.get(k) == t.loc[i, "verdict"] for a in again)
        t.loc[i, "confirmed"] = f"{same}/{len(repeats)}"
        if same < len(repeats):
            t.loc[i, "verdict"] = "not reproduced"
            t.loc[i, "regression"] = t.loc[i, "status_kind"] == "regression" or t.loc[i, "memory"] == "more"
        else:
            kept.append(i)
    notes = comparison.notes + [
        f"{int(flagged.sum())} significant changes were re-measured in {len(repeats)} fresh interleaved "
        f"run{'s' if len(repeats) != 1 else ''} of both sides: {len(kept)} reproduced, "
        f"{int(flagged.sum()) - len(kept)} did not and are marked 'not reproduced'"]
    return replace(comparison, table=t, notes=notes)


# --- gate -------------------------------------------------------------------------------------

def failures(comparison: Comparison, fail_on: str) -> pd.DataFrame:
    """Rows that fail ``--fail-on``: slower (significant and past the threshold), status (an ok
    pair that is no longer ok), or any (those, or memory past its threshold)."""
    if fail_on not in FAIL_ON:
        raise ValueError(f"unknown --fail-on {fail_on!r}; choose from {', '.join(FAIL_ON)}")
    t = comparison.table
    if t.empty:
        return t
    slower = t["verdict"] == "slower"
    status = t["status_kind"] == "regression"
    if fail_on == "slower":
        return t[slower]
    if fail_on == "status":
        return t[status]
    return t[slower | status | (t["memory"] == "more")]


# --- pivot across sides -----------------------------------------------------------------------

def pivot(comparison: Comparison) -> pd.DataFrame:
    """One row per matched key, one column per side: its median (or its status when it was
    not timed), then the ratio of each non-base side to the base."""
    key = comparison.key
    parts = []
    for s in comparison.sides:
        f = s.frame.drop_duplicates(key, keep="last").set_index(key)
        parts.append(f["median"].where(f["status"] == "ok").rename(s.label))
        parts.append(f["status"].rename(f"{s.label} status"))
    wide = pd.concat(parts, axis=1)
    base = comparison.base.label
    for s in comparison.sides[1:]:
        wide[f"{s.label} / {base}"] = wide[s.label] / wide[base]
    return wide.sort_index()


def strategy_pivot(comparison: Comparison) -> pd.DataFrame:
    """Per strategy (and device, dtype), the geometric mean over problems of each side's
    ratio to the base, over the rows timed on both sides."""
    t = comparison.table
    if t.empty or "ratio" not in t:
        return pd.DataFrame()
    timed = t[t["ratio"].notna() & (t["ratio"] > 0) & t["ratio"].map(is_number)].copy()
    if timed.empty:
        return pd.DataFrame()
    import numpy as np

    timed["log"] = np.log(timed["ratio"].astype(float))
    rows = [k for k in ("strategy", "device", "dtype") if k in comparison.key]
    if len({x for x in timed.get("device", [])}) <= 1 and "device" in rows:
        rows.remove("device")
    if len(set(timed["dtype"])) <= 1:
        rows.remove("dtype")
    wide = timed.pivot_table(index=rows, columns="side", values="log", aggfunc="mean")
    wide = np.exp(wide)
    return wide[[s.label for s in comparison.sides[1:] if s.label in wide.columns]]


def api_matrix(comparison: Comparison) -> pd.DataFrame:
    """Per strategy and side: 'ok k/n' where the torch version has what it needs, or the
    version reason (``torch 2.0 lacks torch.func``) where it does not."""
    out = {}
    for s in comparison.sides:
        col = {}
        for strategy, g in s.frame.groupby("strategy", sort=False):
            lacking = g[(g["status"] == "unsupported") & g["reason"].fillna("").str.contains(" lacks ")]
            if len(lacking) == len(g):
                col[strategy] = str(lacking["reason"].iloc[0])
            else:
                col[strategy] = f"ok {int((g['status'] == 'ok').sum())}/{len(g)}"
        out[s.label] = col
    return pd.DataFrame(out)

"""Published claims, re-measured: each claim problem's published ratio beside the measured one
(``cases.claims`` registers the problems, each with its ``claim``). No torch.

NOTE: [Claims]
    A claim says that strategy ``fast`` took ``ratio`` times less time than ``slow`` on its
    problem. On each platform (machine, torch, device, dtype) where both were measured and
    ``ok``, the measured ratio is median(slow) / median(fast), with the 95% interval
    of ``picks.row_ratio`` (NOTE: [Recommendation rules]). Two verdicts:

    - the direction: it ``holds`` when the interval lies wholly on the published side of 1,
      is ``tied`` when the interval holds 1, and is ``reversed`` when it lies on the other side;
    - the rough size: it ``holds`` when the interval meets the band from half to twice the
      published ratio (a factor of 2 either way on a log scale); otherwise the measured
      ratio is ``smaller`` or ``larger`` than that band.

    A pair that is not ``ok`` (or has no row) leaves its claim "not measured", with the
    status and reason. ``same_hardware`` says whether the platform's device type is the one
    the claim was published on: a CUDA claim measured on a CPU is shown, never taken as a
    re-measurement of the claim; and while no platform of its device type is in the frame, a
    claim gets one more row that says it awaits a sweep of that device.
"""

from __future__ import annotations

import pandas as pd

from bench.analysis.formats import missing
from bench.analysis.picks import PLATFORM, row_ratio

SIZE_BAND = 2.0  # the rough size holds within this factor of the published ratio (NOTE: [Claims])
CLAIM = ["source", "url", "figure", "hardware"]
COLUMNS = ["problem", *CLAIM, "claimed_device", *PLATFORM, "fast", "slow", "published", "measured",
           "measured_low", "measured_high", "same_hardware", "direction", "size", "verdict"]


def direction(published: float, low: float, high: float) -> str:
    """Whether the measured interval [low, high] lies on the published ratio's side of 1."""
    side = 1 if published > 1 else -1
    if low <= 1 <= high:
        return "tied"
    return "holds" if (low > 1) == (side > 0) else "reversed"


def size(published: float, low: float, high: float) -> str:
    """Whether the measured interval meets [published / SIZE_BAND, published * SIZE_BAND]."""
    if high < published / SIZE_BAND:
        return "smaller"
    if low > published * SIZE_BAND:
        return "larger"
    return "holds"


def _verdict(d: str, s: str) -> str:
    if d != "holds":
        return f"direction {d}"
    return "holds" if s == "holds" else f"direction holds, size {s} than published"


def _unmeasured(name: str, row) -> str | None:
    """Why ``name``'s row (or its absence) gives no time, or None if it is ``ok``."""
    if row is None:
        return f"{name}: no row"
    if row["status"] != "ok" or missing(row.get("median")):
        reason = row.get("reason")
        return f"{name}: {row['status']}" + ("" if missing(reason) or not reason else f" ({reason})")
    return None


def _measured(claim: dict, rows: pd.DataFrame) -> dict:
    """The measured ratio and verdicts of one claim on one platform's rows of its problem."""
    by = {r["strategy"]: r for _, r in rows.iterrows()}
    fast, slow = by.get(claim["fast"]), by.get(claim["slow"])
    why = [w for w in (_unmeasured(claim["fast"], fast), _unmeasured(claim["slow"], slow)) if w]
    if why:
        return {"verdict": "not measured: " + "; ".join(why)}
    r = row_ratio(fast, slow)
    d, s = direction(claim["ratio"], r.low, r.high), size(claim["ratio"], r.low, r.high)
    return {"measured": r.value, "measured_low": r.low, "measured_high": r.high, "direction": d, "size": s,
            "verdict": _verdict(d, s)}


def _device_type(device) -> str:
    return str(device).split(":")[0]


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per claim problem and platform in ``frame`` (see NOTE: [Claims]), plus one per
    claim whose device type no platform of the frame has, saying it awaits that sweep."""
    out = []
    claimed = frame.loc[frame["claim"].map(lambda c: isinstance(c, dict)).astype(bool)] if "claim" in frame \
        else frame.iloc[:0]
    for problem, rows in claimed.groupby("problem", sort=False):
        claim = rows["claim"].iloc[0]
        base = {"problem": problem, **{k: claim.get(k) for k in CLAIM}, "claimed_device": claim["device"],
                "fast": claim["fast"], "slow": claim["slow"], "published": float(claim["ratio"])}
        for key, g in rows.groupby(PLATFORM, sort=False, dropna=False):
            platform = dict(zip(PLATFORM, key))
            out.append({**base, **platform, "same_hardware": _device_type(platform["device"]) == claim["device"],
                        **_measured(claim, g)})
        if claim["device"] not in set(rows["device"].map(_device_type)):
            out.append({**base, "device": claim["device"], "same_hardware": None,
                        "verdict": f"awaits a {claim['device'].upper()} sweep"})
    return pd.DataFrame(out, columns=COLUMNS).astype({"published": float, "measured": float,
                                                      "measured_low": float, "measured_high": float})


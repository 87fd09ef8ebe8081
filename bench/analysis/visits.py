"""A pair timed in visits: at several moments of a run, each in a fresh process, and timed
again where other work disturbed it. Pure Python: the runner uses it without torch.

NOTE: [Visits]
    On a shared or virtual machine the speed of the same call drifts with what the rest of
    the host does. Timed in 0.2 s blocks for 20 s in one process on an idle 2-core virtual
    machine, one call's block medians ranged from 1.53 to 3.68 ms, in runs of similar values
    lasting about a second. A pair timed in one stretch of 0.4 s samples one such state: its
    interval from its own rounds says about 3%, and a rerun's median lands anywhere in that
    range. So a profile times each pair in ``Policy.visits`` visits, each with the time cap
    divided among them, the first in the main pass and each further one in a later pass
    over the plan, in a fresh process, minutes apart. The rounds of all visits are one
    sample (the calls per round are fixed by the first visit). How far a visit's median
    moves from its pair's is pooled over every pair of the run (:func:`drift`: the machine's
    drift, measured), and each median's interval is widened to what that drift leaves in a
    mean of the pair's visits (:func:`interval`): it states what a rerun may see, not one
    moment's precision.

    A visit is disturbed when more than :data:`stats.DISTURBED_SHARE` of its rounds waited
    for a CPU (NOTE: [Disturbance]), or when other work used at least :data:`load.BUSY` of a
    CPU on average while it ran, beyond what it used all along (NOTE: [Load across the run];
    a steady load slows every timing alike, and timing again would not escape it). The second catches what the
    first cannot see: with one torch thread and two CPU-burning processes on a 2-core
    virtual machine, the pairs whose first visit fell in the burn ran 1.19x slower (median,
    against an undisturbed run's; 1.04x outside the burn) while their rounds' run-queue
    delay stayed near zero: the burners slowed the CPU the thread kept (a shared core), not
    its turn on it. A disturbed visit is dropped and taken again in a later pass, at most
    ``Policy.retimes`` times per pair; its evidence stays in the row (``retimed``). A
    pair whose visits are still disturbed after that becomes ``disturbed``: shown, never
    used. Calls slower than a visit's time cap are visited once: they cost the most, and a
    drift of a fraction of a second matters least to them.
"""

from __future__ import annotations

import math

from bench.analysis.load import BUSY, baseline, during
from bench.analysis.schema import Status
from bench.analysis.stats import Z95, Ratio, is_disturbed, summarize

FIELDS = ("median", "rounds", "disturbed", "started", "seconds")


def visit(row) -> dict:
    """The summary of one visit: the row just measured."""
    return {"median": summarize(row.samples).median, "rounds": len(row.samples), "disturbed": row.disturbed,
            "started": row.started, "seconds": row.seconds}


def record_of(row) -> dict:
    """A measured row as the record :func:`merge` joins a later visit to."""
    return {"stats": {"data": list(row.samples), "iterations": row.iterations}, "extra_info": row.info()}


def wanted(record: dict, policy: dict) -> bool:
    """Whether an ``ok`` pair needs another visit: it has fewer than the policy's, or one of
    them was disturbed and it has been retimed fewer than the policy's ``retimes`` times."""
    info = record["extra_info"]
    if info["status"] != "ok" or "stats" not in record or info.get("revisit_failed"):
        return False
    if disturbed(record):
        return len(info.get("retimed") or []) < policy["retimes"]
    visits = info.get("visits") or [{"median": record["stats"]["median"]}]
    slow = visits[0]["median"] > policy["max_time"] / policy.get("visits", 1)
    return len(visits) < policy.get("visits", 1) and not slow


def bad(visit: dict) -> bool:
    """Whether a visit was disturbed: its rounds waited for a CPU, or the machine was busy."""
    return is_disturbed(visit.get("disturbed")) or (visit.get("busy") or 0) >= BUSY


def disturbed(record: dict) -> bool:
    """Whether one of the visits a pair's record holds was disturbed."""
    info = record["extra_info"]
    return any(bad(v) for v in info.get("visits") or [info])


def annotated(record: dict, samples) -> dict | None:
    """The record with its visits marked by the load sampled while they ran (``busy``: the
    CPUs other work used beyond the run's :func:`load.baseline`), where that makes one of
    them disturbed; None otherwise."""
    info = record["extra_info"]
    visits = info.get("visits") or []
    usual = baseline(samples)

    def busy(v):
        seen = during(samples, v["started"], v["started"] + (v.get("seconds") or 0))
        return None if seen is None else max(0.0, seen - usual)

    marked = [v if "busy" in v or not v.get("started") else {**v, "busy": busy(v)} for v in visits]
    if not any(bad(v) and not bad(old) for v, old in zip(marked, visits)):
        return None
    return {**record, "extra_info": {**info, "visits": marked}}


def merge(row, before: dict) -> None:
    """Join a row measured in a later visit with the pair's record so far (``before``):
    its undisturbed visits' rounds and this one's become one sample; disturbed visits are
    dropped into ``retimed``. A later visit that failed (the gate, a crash) stands alone."""
    info = before["extra_info"]
    for phase, seconds in (info.get("spent") or {}).items():  # the time of every visit
        row.spent[phase] = row.spent.get(phase, 0.0) + seconds
    if row.status != Status.OK:
        row.retimed = info.get("retimed") or []
        return
    earlier = info.get("visits") or [{**{k: info.get(k) for k in FIELDS}, "rounds": len(before["stats"]["data"])}]
    data = {"samples": before["stats"]["data"], **{k: info.get(k) or [] for k in ("cpu", "switches", "delay")}}
    for k in ("cycles", "wall"):  # kept where every visit has them (timed together; on the CPU clock)
        if getattr(row, k) and len(info.get(k) or []) == len(data["samples"]):
            data[k] = info[k]
    kept: dict[str, list] = {k: [] for k in data}
    start, visits, dropped = 0, [], list(info.get("retimed") or [])
    for v in earlier:
        end = start + v["rounds"]
        if bad(v):
            dropped.append(v)
        else:
            visits.append(v)
            for k in kept:
                kept[k].extend(data[k][start:end])
        start = end
    visits.append(row.visits[-1] if row.visits else visit(row))  # its own, where it was given one
    row.samples = kept["samples"] + row.samples
    for k in ("cpu", "switches", "delay", "cycles", "wall"):
        setattr(row, k, kept[k] + getattr(row, k) if k in kept else [])
    row.visits, row.retimed = visits, dropped
    row.disturbed = sum((v["disturbed"] or 0) * v["rounds"] for v in visits) / max(1, sum(v["rounds"] for v in visits))
    for k in ("first_call_s", "peak_bytes", "jac_bytes", "work", "fallback", "fallback_ops", "f_s", "f_iqr"):
        if info.get(k) is not None:  # what only the first visit measures
            setattr(row, k, info.get(k))
    row.notes = {**(info.get("notes") or {}), **row.notes}


def settled(record: dict) -> dict | None:
    """The final record of a pair whose visits stayed disturbed after every retime: status
    ``disturbed``, its times kept to be shown; None for any other pair."""
    info = record["extra_info"]
    if info["status"] != "ok" or not disturbed(record):
        return None
    tries = [*(info.get("retimed") or []), *(info.get("visits") or [info])]
    said = ", ".join(f"{v.get('disturbed') or 0:.0%} of rounds waiting" + (
        f" beside {v['busy']:.1f} busy CPUs" if (v.get("busy") or 0) >= BUSY else "") for v in tries if bad(v))
    reason = f"other work disturbed its timing in {len(tries)} tries ({said}): its time is shown, never used"
    if info.get("reason"):  # what the gate noted stays (a Jacobian zero almost everywhere, say)
        reason = f"{reason}; {info['reason']}"
    return {**record, "extra_info": {**info, "status": Status.DISTURBED, "reason": reason}}


def drift(records) -> float | None:
    """How far one pair's median moves between visits on this machine during this run: the
    standard deviation of a visit's log median around its pair's mean, pooled over every
    pair timed in two visits or more (None when none was)."""
    squares, dof = 0.0, 0
    for info in records:
        medians = [v["median"] for v in info.get("visits") or [] if v.get("median")]
        if len(medians) < 2:
            continue
        logs = [math.log(m) for m in medians]
        mean = sum(logs) / len(logs)
        squares += sum((x - mean) ** 2 for x in logs)
        dof += len(logs) - 1
    return math.sqrt(squares / dof) if dof else None


def interval(median: float, half: float, visits, drift: float | None) -> float:
    """The half-width of a pooled median's 95% interval: the larger of ``half`` (from its
    rounds: NOTE: [Median precision]) and what the run's ``drift`` between visits leaves in a
    mean of this pair's visits, so that it states how far a rerun's median may land."""
    if drift is None:
        return half
    k = max(1, len(visits or []))
    return max(half, median * (math.exp(Z95 * drift / math.sqrt(k)) - 1))


def widened(r: Ratio, drift: float | None, visits_a: int, visits_b: int) -> Ratio:
    """A ratio of two medians (``r``, its interval from their rounds) widened by the run's
    ``drift``: each median is a mean of its visits, each of which moves by the drift, so
    that movement is added to the interval in quadrature, in logarithms."""
    if drift is None or r.value <= 0 or r.low <= 0:
        return r
    moved = Z95 * drift * math.sqrt(1 / max(1, visits_a) + 1 / max(1, visits_b))
    half = math.hypot(max(math.log(r.high / r.value), math.log(r.value / r.low)), moved)
    return Ratio(r.value, r.value * math.exp(-half), r.value * math.exp(half))

"""Picking rules scored by their regret, and the predictor fitted on measured results. No torch.

NOTE: [Regret]
    A rule picks one exact strategy for a problem from what is known before its strategies
    are timed. Its regret there is the time of its pick over the time of the problem's
    fastest exact strategy on the same platform (NOTE: [Fastest]): 1 is the best pick, 2
    took twice the time it had to. The times are those of the later visits (NOTE: [Visits])
    where a pair has them, and the pooled median where it has one visit: the advisor picks
    from the first visit, so that it is scored on a measurement it did not pick from. A
    pick that is not ``ok`` on the problem (it does not handle the kind, is ``wrong``, fails,
    or was not run) is a failure of the rule: listed with its status, and left out of the
    geometric mean and the worst case, which are over the problems its pick solved. A
    problem is not scored for a rule that names no strategy for its kind (``n/a``), whose
    pick was not in the run, or whose pick's timing stayed ``disturbed``. The rules:

    - advisor: what ``advise`` does, the fastest exact strategy by one brief measurement of
      its own (the sweep's first visit); scored only where a second visit exists;
    - always jacrev (``vmap-jacrev`` for per-sample problems) and always functional
      (``torch.autograd.functional.jacobian``; it has no per-sample form);
    - size ratio (pytorch#94395): forward mode (``jacfwd``) when the input is no larger than
      the output, n <= m, else reverse mode (``jacrev``);
    - lineax: forward mode when n < 100 or n <= 1.5 m, else reverse mode;
    - predictor: the pick of measured problems like it, with no measurement of its own
      (NOTE: [Predictor]).

NOTE: [Predictor]
    The predictor picks with no measurement of any strategy: it finds the :data:`K` measured
    problems of the same kind on the same device type nearest to the new one, by the
    logarithms of n, m and t(f) (NOTE: [Cost in units of f]) scaled by their spread, and
    picks, among the exact strategies ``ok`` on as many of them as any (all, as a rule),
    the one with the smallest geometric-mean slowdown over them (each problem's median over
    its fastest exact one). A strategy that some problem of the kind refused
    (``unsupported``: colouring without a sparse pattern, structured products without an
    ``nn.Sequential``) needs more than f, and is no candidate for that kind. A kind with no
    measured problem borrows from the others that run the same strategies (:data:`PLAIN`).
    FLOPs are not a feature: a third of the problems have no count, and t(f) measures f's
    cost on every one. The predictor is scored on each family with that family held out of
    its fitting (``held_out``): its regret is what a user's new kind of function can
    expect, not how well it remembers the ones it has seen.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bench.analysis.formats import missing
from bench.analysis.picks import PLATFORM, approximate, geomean, platforms, timed

K = 5
PLAIN = ("vector", "multi", "params")  # kinds the same strategies run: a kind not measured borrows from the others
FEATURES = ("n", "m", "t_f")
#: The predictor fitted on the committed reference sweep (``jacbench rules --fit``), shipped with the package.
SHIPPED = Path(__file__).with_name("predictor.json")


def _mode(p, forward: bool) -> str:
    if p["kind"] == "batched":
        return "vmap-jacfwd" if forward else "vmap-jacrev"
    return "jacfwd" if forward else "jacrev"


#: The rules that need no measurement of the problem itself: problem -> strategy (None: no pick)
RULES = {
    "always jacrev": lambda p: _mode(p, False),
    "always functional": lambda p: None if p["kind"] == "batched" else "functional",
    "size ratio": lambda p: _mode(p, p["n"] <= p["m"]),
    "lineax": lambda p: _mode(p, p["n"] < 100 or p["n"] <= 1.5 * p["m"]),
}
ADVISOR, PREDICTOR = "advisor (measures)", "predictor (held out)"


def _later(visits, pooled) -> float:
    if isinstance(visits, list) and len(visits) > 1:
        return float(np.median([v["median"] for v in visits[1:]]))
    return pooled


def _first(visits) -> float:
    return visits[0]["median"] if isinstance(visits, list) and len(visits) > 1 else math.nan


# --- the predictor -------------------------------------------------------------------------


@dataclass
class Predictor:
    """Measured problems as points: kind, device type, features and each exact strategy's slowdown."""

    points: list[dict] = field(default_factory=list)

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> "Predictor":
        return cls.fitted_apart(frame)(None)

    @classmethod
    def fitted_apart(cls, frame: pd.DataFrame) -> Callable[[str | None], "Predictor"]:
        """``fit(family)``: the predictor fitted on ``frame`` less ``family`` (None: all of it),
        each from one pass over the frame. A strategy is no candidate for a kind where a problem
        of that kind (in a family fitted on) refused it."""
        refusals = frame[frame["status"] == "unsupported"].groupby(["kind", "strategy"])["family"].agg(set)
        ok = timed(frame)
        ok = ok[~ok["approximate"]].assign(device=ok["device"].astype(str).str.split(":").str[0])
        slowdowns: dict[tuple, dict] = {}  # (device, problem) -> strategy -> median slowdown
        medians = ok.groupby(["device", "problem", "strategy"])["slowdown"].median()
        for (device, problem, strategy), v in medians.items():
            slowdowns.setdefault((device, problem), {})[strategy] = float(v)
        points = []
        for first in ok.drop_duplicates(["device", "problem"]).sort_values(["device", "problem"]).to_dict("records"):
            if not missing(first["t_f"]):
                points.append({"problem": first["problem"], "family": first["family"], "kind": first["kind"],
                               "device": first["device"], "x": [math.log10(float(first[k])) for k in FEATURES],
                               "slowdown": slowdowns[first["device"], first["problem"]]})

        def fit(family: str | None) -> Predictor:
            refused = {(kind, s) for (kind, s), families in refusals.items() if families - {family}}
            kept = [{**p, "slowdown": {s: v for s, v in p["slowdown"].items() if (p["kind"], s) not in refused}}
                    for p in points if p["family"] != family]
            return cls([p for p in kept if p["slowdown"]])

        return fit

    def pick(self, kind: str, device: str, n: float, m: float, t_f: float) -> tuple[str | None, list[str]]:
        """The strategy for a problem of these features, and the problems it was picked from;
        ``(None, [])`` where no measured problem is of this kind (or its group) and device type."""
        device = device.split(":")[0]
        near = [i for i, p in enumerate(self.points) if p["device"] == device and p["kind"] == kind] or [
            i for i, p in enumerate(self.points) if p["device"] == device and p["kind"] in PLAIN and kind in PLAIN]
        if not near:
            return None, []
        xs = self._features
        scale = np.where(xs.std(0) > 0, xs.std(0), 1.0)
        distance = (((xs[near] - np.log10([n, m, t_f])) / scale) ** 2).sum(axis=1)
        near = [self.points[near[i]] for i in np.argsort(distance, kind="stable")[:K]]
        solved = {s: [p["slowdown"][s] for p in near if s in p["slowdown"]] for p in near for s in p["slowdown"]}
        widest = max(len(v) for v in solved.values())
        return min((s for s, v in solved.items() if len(v) == widest), key=lambda s: (geomean(solved[s]), s)), [
            p["problem"] for p in near]

    @functools.cached_property
    def _features(self) -> np.ndarray:
        """The points' features as one array, made once."""
        return np.array([p["x"] for p in self.points], dtype=float)

    def save(self, path: Path) -> Path:
        points = ",\n".join(json.dumps(p) for p in self.points)
        Path(path).write_text(f'{{"k": {K}, "features": {json.dumps(FEATURES)}, "points": [\n{points}\n]}}\n')
        return Path(path)

    @classmethod
    def load(cls, path: Path | None = None) -> "Predictor":
        path = SHIPPED if path is None else path
        try:
            return cls(json.loads(Path(path).read_text())["points"])
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a predictor file ({type(exc).__name__}: {exc})") from None


def held_out(frame: pd.DataFrame) -> dict[tuple, str | None]:
    """The predictor's pick per platform (machine, torch, device, dtype) and problem, each
    family's from a predictor fitted without that family."""
    picks = {}
    fit = Predictor.fitted_apart(frame)
    for family, g in frame.groupby("family"):
        model = fit(family)
        for key, p in g.groupby([*PLATFORM, "problem"]):
            p = p.iloc[0]
            if not missing(p["t_f"]):
                picks[key] = model.pick(p["kind"], p["device"], p["n"], p["m"], p["t_f"])[0]
    return picks


# --- regret --------------------------------------------------------------------------------


def regrets(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per platform, problem and rule: the pick, its status and its regret (NOTE: [Regret])."""
    rows = []
    keep = [*PLATFORM, "problem", "family", "kind", "strategy", "mode", "status", "median", "visits", *FEATURES]
    frame = frame[[c for c in keep if c in frame]]  # a subset copies every column: only what a rule reads
    exact = ~approximate(frame)
    predicted = held_out(frame[exact])
    for key, g in platforms(frame[exact]):
        for problem, p in g.groupby("problem", sort=False):
            status = dict(zip(p["strategy"], p["status"]))
            ok = p[(p["status"] == "ok") & p["median"].notna()]
            if ok.empty:
                continue
            later = dict(zip(ok["strategy"], [_later(v, m) for v, m in zip(ok["visits"], ok["median"])]))
            first = {s: _first(v) for s, v in zip(ok["strategy"], ok["visits"])}
            best = min(later.values())
            info = p.iloc[0]
            picks = {name: rule(info) for name, rule in RULES.items()}
            if not any(math.isnan(v) for v in first.values()):
                picks[ADVISOR] = min(first, key=first.get)
            picks[PREDICTOR] = predicted.get((*key.values(), problem))
            for rule, pick in picks.items():
                state = "n/a" if pick is None else status.get(pick, "not run")
                rows.append({**key, "problem": problem, "family": info["family"], "kind": info["kind"],
                             "rule": rule, "pick": pick, "status": state,
                             "regret": later[pick] / best if pick in later else math.nan})
    return pd.DataFrame(rows, columns=[*PLATFORM, "problem", "family", "kind", "rule", "pick", "status", "regret"])


#: A pick's states that score nothing, for or against the rule.
UNSCORED = ("n/a", "not run", "disturbed")


def failed(scores: pd.DataFrame) -> pd.Series:
    """Rows whose pick failed the problem: it was run, and is not ``ok`` (NOTE: [Regret])."""
    return scores["regret"].isna() & ~scores["status"].isin(UNSCORED)


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per platform and rule: problems scored, the geometric-mean and worst regret (and where),
    the share of problems within 10% of the best, and where its pick failed."""
    out = []
    for key, g in scores.groupby([*PLATFORM, "rule"], sort=False, dropna=False):
        solved = g[g["regret"].notna()]
        lost = g[failed(g)]
        worst = solved.loc[solved["regret"].idxmax()] if len(solved) else None
        out.append({**dict(zip([*PLATFORM, "rule"], key)), "problems": len(g), "solved": len(solved),
                    "geomean": geomean(solved["regret"]), "worst": None if worst is None else worst["regret"],
                    "worst_at": None if worst is None else f"{worst['problem']} ({worst['pick']})",
                    "within_10pct": (solved["regret"] <= 1.1).mean() if len(solved) else math.nan,
                    "failed": len(lost), "unscored": int(g["status"].isin(UNSCORED).sum()),
                    "failures": "; ".join(f"{s} {n}x" for s, n in lost["status"].value_counts().items()),
                    "failed_at": ", ".join(f"{r.problem} ({r.pick}: {r.status})" for r in lost.head(3).itertuples())})
    return pd.DataFrame(out)

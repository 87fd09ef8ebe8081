"""A Jacobian's cost in units of f: its time divided by the time of one plain evaluation. No torch.

NOTE: [Cost in units of f]
    ADBench and GradBench report a Jacobian's time divided by the time of one evaluation of
    f, ``t(f)``, timed by the same harness. The sweep times f once per problem, device and
    dtype (the first visit of each problem in each process: ``f_s`` in every row of it) with
    the strategies' own timing policy, under ``torch.no_grad``: for a batched problem f is
    the whole batch, for a penalty problem the model's forward pass. A problem's ``t_f`` is
    the median of its rows' ``f_s`` on its platform.

    Theory bounds a product's cost: one VJP (reverse mode) or JVP (forward mode) costs a
    small constant times f, about 2 to 4 (:data:`BAND`), so a reverse Jacobian of m outputs
    costs about ``m x (2-4) x t(f)``. ``per_f`` is a row's median over ``t_f``;
    ``per_product`` divides that by the products it counted (VJPs in reverse mode, JVPs in
    forward mode: ``bench.measure.counting``), where they are in units of f (not for the
    kinds of :data:`UNCOUNTED`). Above the band, time goes to what is not f's work (Python
    loops, dispatch, copies): overhead a user could win back. Below it, the products were
    batched (``vmap``), so that each costs less than a separate pass.

    A row's share of time *outside f's work* is what is left of its median once its
    products are paid at the band's top: ``1 - BAND[1] x products x t_f / median``, that is
    ``1 - BAND[1] / per_product``, and 0 for a row within or below the band. A strategy's
    share (:func:`table`, :func:`overhead`) is the median of its rows'. It is generous to
    the strategy: every product is granted the theory's most, the forward pass included.
"""

from __future__ import annotations

import pandas as pd

from bench.analysis.picks import PLATFORM, timed

#: the theory's cost of one VJP or JVP, in evaluations of f
BAND = (2.0, 4.0)
PRODUCT = {"reverse": "VJP", "forward": "JVP"}  # what a mode's products are called
#: kinds whose counted products are not in units of their f: a penalty's are counted on the model's
#: head, while f is the whole model; a batched problem's are of one sample (``batch-loop``,
#: ``vmap-jacrev``) or of the whole batch (``batch-full-diagonal``), B times more, at the same count
UNCOUNTED = ("penalty", "batched")


def add_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``t_f``, ``products``, ``per_f`` and ``per_product`` (NOTE: [Cost in units of f])."""
    f_s = pd.to_numeric(frame["f_s"], errors="coerce")
    frame["t_f"] = f_s.groupby([frame[k] for k in ["problem", *PLATFORM]], dropna=False).transform("median")
    vjps, jvps = (pd.to_numeric(frame[k], errors="coerce") for k in ("vjps", "jvps"))
    frame["products"] = vjps.where(frame["mode"] == "reverse", jvps.where(frame["mode"] == "forward"))
    frame.loc[frame["kind"].isin(UNCOUNTED), "products"] = None
    frame["per_f"] = pd.to_numeric(frame["median"], errors="coerce") / frame["t_f"]
    frame["per_product"] = frame["per_f"] / frame["products"].where(frame["products"] > 0)
    return frame


def outside(per_product: pd.Series) -> pd.Series:
    """Each row's share of time outside f's work (NOTE: [Cost in units of f]); NaN without products."""
    return (1 - BAND[1] / per_product.astype(float)).clip(lower=0)


TABLE = [*PLATFORM, "family", "strategy", "mode", "problems", "per_f", "per_product", "above", "outside"]


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per platform, family and strategy, over its ``ok`` rows with a ``t_f``: how many problems,
    the median ``per_f`` and ``per_product``, the share of rows above the theory's band and the
    median share of time outside f's work (NOTE: [Cost in units of f]). Families keep their
    order; within one, strategies go by median ``per_f``, cheapest first."""
    ok = timed(frame).dropna(subset=["per_f"])
    if ok.empty:
        return pd.DataFrame(columns=TABLE)
    per = ok["per_product"].astype(float)
    ok = ok.assign(per_product=per, _above=(per > BAND[1]).astype(float).where(per.notna()), _outside=outside(per))
    out = ok.groupby([*PLATFORM, "family", "strategy"], sort=False, dropna=False).agg(
        mode=("mode", "first"), problems=("problem", "nunique"), per_f=("per_f", "median"),
        per_product=("per_product", "median"), above=("_above", "mean"), outside=("_outside", "median"))
    out = out.reset_index()
    out["_family"] = out["family"].map({f: i for i, f in enumerate(dict.fromkeys(out["family"]))})
    return out.sort_values(["_family", "per_f"], kind="stable")[TABLE].reset_index(drop=True)


OVERHEAD = [*PLATFORM, "strategy", "mode", "product", "problems", "per_product", "outside", "finding"]


def overhead(frame: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Per platform, at most ``k`` exact strategies (reverse or forward mode, with counted
    products) that spend time outside f's work, the most first: over their problems, the
    median share of it and the median time per product, with a ``finding`` to print."""
    ok = timed(frame)
    ok = ok[ok["mode"].isin(list(PRODUCT)) & ~ok["approximate"]].dropna(subset=["per_product"])
    if ok.empty:
        return pd.DataFrame(columns=OVERHEAD)
    ok = ok.assign(per_product=ok["per_product"].astype(float), _outside=outside(ok["per_product"]))
    out = ok.groupby([*PLATFORM, "strategy"], sort=False, dropna=False).agg(
        mode=("mode", "first"), problems=("problem", "nunique"), per_product=("per_product", "median"),
        outside=("_outside", "median")).reset_index()
    out = out[out["outside"] > 0].sort_values("outside", ascending=False, kind="stable")
    out = out.groupby(PLATFORM, sort=False, dropna=False).head(k)
    out["product"] = out["mode"].map(PRODUCT)
    out["finding"] = [
        f"{r.strategy} spends {r.outside:.0%} of its time outside f's work: {r.per_product:.3g} evaluations of f "
        f"per {r.product}, against the theory's {BAND[0]:g} to {BAND[1]:g} (median over {r.problems} "
        f"problem{'s' if r.problems != 1 else ''})" for r in out.itertuples()]
    return out[OVERHEAD].reset_index(drop=True)

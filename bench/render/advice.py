"""The advisor's page: its recommendation, the ranked table and the times of the correct
strategies, as one self-contained HTML file. No torch."""

from __future__ import annotations

from bench.render import html


def render(advice, rows: list[dict], timed: list[tuple[str, list[float]]], *, torch_version: str, threads: int) -> str:
    """The page of ``advice`` (a ``bench.advisor.Advice``): ``rows`` are its table's cells,
    ``timed`` each correct strategy's name and raw samples, fastest first."""
    shapes = "[" + ", ".join("x".join(map(str, s)) for s in advice.shapes) + "]"
    return html.render("advice.html.j2", a=advice, rows=rows, shapes=shapes, figure=_figure(timed),
                       torch_version=torch_version, threads=threads)


def _figure(timed: list[tuple[str, list[float]]]) -> str | None:
    """Median time per call of each correct strategy, fastest at the top, with its IQR."""
    if not timed:
        return None
    import pandas as pd
    import seaborn as sns

    from bench.render import figures as figs

    samples = pd.DataFrame([(name, t) for name, ts in timed for t in ts], columns=["strategy", "seconds"])
    with figs.theme():
        fig, axes = figs.subplots(7, 0.35 * len(timed) + 1.2)
        ax = axes[0][0]
        # the median and quartiles of the raw samples, taken on a linear axis: on a log one seaborn
        # would take them of the samples' logarithms
        sns.barplot(data=samples, x="seconds", y="strategy", order=[name for name, _ in timed], estimator="median",
                    errorbar=("pi", 50), err_kws={"linewidth": 1.2}, capsize=0.3, ax=ax)
        ax.set_xscale("log")
        figs.log_axis(ax, "x", figs.times)
        ax.set(xlabel="median time per call (log scale)", ylabel="")
    return figs.png(fig)

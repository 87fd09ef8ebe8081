"""The figures of every page, drawn with seaborn in one theme from results frames. No torch.

The report's figures take the timed rows of one context (``picks.timed``) and return a
:class:`Figure` (an inline SVG, alt text and a caption saying what to read from it), or None
when the data cannot show the thing (say, a family whose sizes do not vary). A kind of figure
drawn once per family says how to read it once, in its section's caption (``SCALING_CAPTION``,
``HEATMAP_CAPTION``, ...); each figure's own caption says only what is particular to it.
Figures never invent data: every mark is a row of a results file.

Every figure of jacbench, the compare and advise pages' too, is made inside :func:`theme` on a
canvas from :func:`subplots`; every heatmap is :func:`heatmap_figure`. Styles are shared, so one
strategy looks the same in every figure: see :class:`Styles`.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd

from bench.analysis import rules
from bench.analysis.formats import fmt_ratio, fmt_time
from bench.analysis.picks import BASELINES, geomean
from bench.analysis.stats import NOISE_WARNING
from bench.analysis.visits import bad
from bench.render.html import figure_uri

DPI = 100            # figures are drawn at the size they are shown (the page is ~1120 px wide)
MAX_WIDTH = 11.2     # inches
LINES_PER_PANEL = 6  # more strategies than this in a family go to further rows of panels
MAX_LINES = 18       # beyond this many strategies, the slowest are left to the heatmap
MAX_FACETS = 4
ERROR_FLOOR = 1e-17  # errors of exactly 0 are drawn here on log axes
FAILED, MUTED = "#b42318", "#6b7280"  # marks of what went wrong, and of what merely was not done


@functools.cache
def _rc() -> dict:
    import matplotlib
    import seaborn as sns

    return {
        **sns.axes_style("whitegrid"),
        **sns.plotting_context("notebook", font_scale=0.875),  # 10.5 pt text on figures shown at their size
        "axes.prop_cycle": matplotlib.cycler(color=sns.color_palette("colorblind")),
        "font.family": "DejaVu Sans",  # matplotlib's own: the same on every machine, and _label_points knows it
        "figure.dpi": DPI, "figure.labelsize": "medium", "legend.frameon": False,
        "text.parse_math": False,  # names from result files are text: a "$" in one is not TeX
    }


def theme():
    """The one look of every figure: seaborn's "whitegrid" style, its colour-blind palette.

    A context rather than ``sns.set_theme``: the advisor draws inside its user's program, whose
    own matplotlib settings are left alone. Ticks are made while drawing, so a figure must be
    made and turned into an image inside it."""
    import matplotlib

    return matplotlib.rc_context(_rc())


@dataclass(frozen=True)
class Figure:
    uri: str
    alt: str
    caption: str  # what to read from it, beyond its section's caption; may be empty
    title: str = ""


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str


class Styles:
    """One colour, marker and line style per strategy, fixed for the whole report.

    The baselines (``functional``, ``manual-backward``) are dark grey and dashed; finite
    differences are dotted; everything else takes colours in the order strategies first
    appear in the results, from seaborn's colour-blind palette, then its dark one.
    """

    BASELINE_COLORS = {"functional": "#222222", "manual-backward": "#8c8c8c"}
    MARKERS = "osD^vP<>Xhp*d"  # all filled: seaborn draws filled and line-art markers apart
    DASHES = {"-": "", "--": (3.7, 1.6), ":": (1.0, 1.65)}  # the line styles as seaborn takes them

    def __init__(self, strategies, approximate: set[str]):
        import seaborn as sns

        # the colour-blind palette's strong hues (its tan is near its orange, its pink and yellow too
        # light for a thin line, its grey the baselines'), then the dark palette's but its grey
        blind, dark = sns.color_palette("colorblind").as_hex(), sns.color_palette("dark").as_hex()
        colors = [blind[i] for i in (0, 1, 2, 3, 4, 9)] + [c for i, c in enumerate(dark) if i != 7]
        self._styles: dict[str, Style] = {}
        i = 0
        for name in strategies:
            if name in self._styles:
                continue
            if name in self.BASELINE_COLORS:
                self._styles[name] = Style(self.BASELINE_COLORS[name], "s" if name == "functional" else "o", "--")
                continue
            self._styles[name] = Style(colors[i % len(colors)], self.MARKERS[i % len(self.MARKERS)],
                                       ":" if name in approximate else "-")
            i += 1

    def __getitem__(self, name: str) -> Style:
        if name not in self._styles:  # a strategy not seen at construction: still one fixed style
            self._styles[name] = Style("#555555", "X", "-")
        return self._styles[name]

    def line(self, name: str) -> dict:
        s = self[name]
        return dict(color=s.color, marker=s.marker, linestyle=s.linestyle, label=name)

    def palette(self, names) -> dict:
        return {n: self[n].color for n in names}

    def markers(self, names) -> dict:
        return {n: self[n].marker for n in names}

    def dashes(self, names) -> dict:
        return {n: self.DASHES[self[n].linestyle] for n in names}


def subplots(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw):
    """A figure (at most the page's width) and its grid of axes, laid out by constrained layout.
    Not pyplot's: nothing to close, and nothing draws it before :func:`inline` (seaborn's heatmap
    would draw a figure on a real canvas once more, only to see whether tick labels overlap)."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(min(width, MAX_WIDTH), height), dpi=DPI, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def inline(fig) -> str:
    """The figure as an inline image (``html.figure_uri``), drawn in the theme."""
    with theme():
        return figure_uri(fig)


def _done(fig, alt: str, caption: str, title: str = "") -> Figure:
    return Figure(inline(fig), alt, caption, title)


def si(v: float) -> str:
    """1500 -> 1.5k, 2e6 -> 2M: sizes on axes."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def times(v: float) -> str:
    return fmt_time(v)


def ratio(v: float) -> str:
    return (f"{v:,.0f}" if v >= 100 else f"{v:.3g}") + "\u00d7"


def log_axis(ax, axis: str = "y", fmt=None, inches: float | None = None):
    """Log scale with readable labels: 1-2-5 ticks where the range is short, whole decades where
    it is long, no minor ticks; ``fmt`` turns a tick value into its label. ``inches`` is the
    axis' drawn length where the caller knows it better than the layout does before drawing."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    a = getattr(ax, f"{axis}axis")
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 10.0
    # about one label per 0.45 inch of axis, so labels never run into each other
    if inches is None:  # before the layout engine runs, axes look bigger than they will be
        bbox = ax.get_position().transformed(ax.figure.transFigure - ax.figure.dpi_scale_trans)
        inches = 0.75 * (bbox.width if axis == "x" else bbox.height)
    per_decade = max(inches, 0.5) / 0.45 / max(decades, 0.1)
    subs = ((1.0,) if per_decade < 2 else (1.0, 3.0) if per_decade < 3 else (1.0, 2.0, 5.0) if per_decade < 6
            else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0))
    a.set_major_locator(LogLocator(base=10, subs=subs))
    if fmt is not None:
        a.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    a.set_minor_locator(NullLocator())  # no minor ticks: cheaper to lay out, and the grid is on majors


def log_scale(ax, *axes: str) -> None:
    """Log scales on ``axes`` ("x", "y") without minor ticks, as :func:`log_axis` leaves them, but
    from the start: seaborn makes an axis' ticks while it plots, and minor ones over many decades
    cost more to make than the rest of a figure."""
    from matplotlib.ticker import NullLocator

    for axis in axes:
        getattr(ax, f"set_{axis}scale")("log")
        getattr(ax, f"{axis}axis").set_minor_locator(NullLocator())


def strategy_order(ok: pd.DataFrame) -> list[str]:
    """Strategies by geometric-mean slowdown relative to each problem's fastest, best first."""
    geo = ok.groupby("strategy", sort=False)["slowdown"].apply(geomean)
    return list(geo.sort_values(kind="stable").index)


# --- scaling -------------------------------------------------------------------------------

def size_axis(rows: pd.DataFrame) -> tuple[pd.Series, str]:
    """The problem size to plot time against: FLOPs of one evaluation of f where every row
    knows it, else the Jacobian's entries n*m."""
    flops = pd.to_numeric(rows.get("problem_flops"), errors="coerce") if "problem_flops" in rows else None
    if flops is not None and flops.notna().all() and (flops > 0).all():
        return flops.astype(float), "FLOPs of one evaluation of f"
    return (rows["n"].astype(float) * rows["m"].astype(float)), "Jacobian entries n\u00b7m"


def _pick_facets(ratios: list[Fraction], most: int) -> list[Fraction]:
    """At most ``most`` shape ratios: both extremes, the one nearest square, then spread out."""
    ratios = sorted(ratios)
    if len(ratios) <= most:
        return ratios
    logs = {r: math.log(r) for r in ratios}
    chosen = [ratios[0], ratios[-1], min(ratios, key=lambda r: abs(logs[r]))]
    chosen = list(dict.fromkeys(chosen))
    while len(chosen) < most:
        rest = [r for r in ratios if r not in chosen]
        chosen.append(max(rest, key=lambda r: min(abs(logs[r] - logs[c]) for c in chosen)))
    return sorted(chosen)


def _lines(ax, rows: pd.DataFrame, x: str, names: list[str], styles: Styles) -> None:
    """One line per strategy of ``names``: its median times against ``x``, in its style, in a band
    of its interquartile range. Each row enters seaborn as its q1, median and q3: the median of
    the three is the row's median and their range its band, so seaborn draws the stored values."""
    import seaborn as sns

    d = rows[rows["strategy"].isin(names)]
    if d.empty:
        return
    drawn = set(d["strategy"])
    names = [n for n in names if n in drawn]
    spread = pd.concat([d.assign(time=d[q].fillna(d["median"])) for q in ("q1", "median", "q3")])
    sns.lineplot(data=spread, x=x, y="time", hue="strategy", style="strategy", hue_order=names, style_order=names,
                 palette=styles.palette(names), markers=styles.markers(names), dashes=styles.dashes(names),
                 estimator="median", errorbar=("pi", 100), err_kws={"alpha": 0.18, "linewidth": 0},
                 markersize=4.5, linewidth=1.6, legend=False, ax=ax)


def _handles(names, styles: Styles, **kw) -> list:
    """Legend entries of strategies, each in its style."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], **{"markersize": 4.5, "linewidth": 1.6, **styles.line(n), **kw}) for n in names]


def scaling(ok: pd.DataFrame, family: str, styles: Styles) -> Figure | None:
    """Time against problem size for one family, log-log, one line per strategy with its IQR
    band, one panel per shape n:m (size sweeps at a fixed shape), strategies in rows of at
    most ``LINES_PER_PANEL`` ordered fastest first."""
    fam = ok[ok["family"] == family].copy()
    if fam.empty:
        return None
    fam["size"], xlabel = size_axis(fam)
    fam["ratio"] = [Fraction(int(n), int(m)) for n, m in zip(fam["n"], fam["m"])]
    # a facet is a size sweep: problems whose names differ only in numbers, one per size, at
    # two sizes or more spanning at least a factor 1.5
    fam["template"] = fam["problem"].astype(str).str.replace(r"\d+", "#", regex=True)
    by = fam.groupby("ratio")
    sizes, problems, names = by["size"].nunique(), by["problem"].nunique(), by["template"].nunique()
    span = by["size"].max() / by["size"].min()
    facets = list(sizes[(sizes >= 2) & (problems == sizes) & (names == 1) & (span >= 1.5)].index)
    if not facets:
        return None
    shown = _pick_facets(facets, MAX_FACETS)
    fam = fam[fam["ratio"].isin(shown)]
    order = strategy_order(fam)
    drawn = order[:MAX_LINES]
    for base in BASELINES:  # the baselines are always drawn, in place of the slowest others
        if base in order and base not in drawn:
            drawn = [s for s in drawn if s not in BASELINES][:MAX_LINES - 2] + [b for b in BASELINES if b in order]
            drawn.sort(key=order.index)
            break
    omitted = [s for s in order if s not in drawn]
    order = drawn
    chunks = [order[i:i + LINES_PER_PANEL] for i in range(0, len(order), LINES_PER_PANEL)]
    ncols = len(shown)
    with theme():
        fig, axes = subplots(2.55 * ncols + 2.3, 2.55 * len(chunks) + 0.4, len(chunks), ncols, sharex="col",
                             sharey=True)
        for c, ratio in enumerate(shown):
            facet = fam[fam["ratio"] == ratio]
            pairs = facet[["n", "m"]].drop_duplicates()
            title = (f"n={pairs['n'].iloc[0]}, m={pairs['m'].iloc[0]}" if len(pairs) == 1
                     else f"n:m = {ratio.numerator}:{ratio.denominator}")
            for r, chunk in enumerate(chunks):
                ax = axes[r][c]
                log_scale(ax, "x", "y")
                _lines(ax, facet, "size", chunk, styles)
                ax.set(xlabel="", ylabel="median time per Jacobian" if c == 0 else "")
                if r == 0:
                    ax.set_title(title)
        fig.supxlabel(xlabel)  # once: one per panel ran into the next
        for row in axes:
            for ax in row:
                log_axis(ax, "x", si, inches=1.6)
                log_axis(ax, "y", times, inches=2.0)
        for r, chunk in enumerate(chunks):
            axes[r][-1].legend(handles=_handles(chunk, styles), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                               title="fastest first" if r == 0 else None)
    left_out = [f"{r.numerator}:{r.denominator}" for r in facets if r not in shown]
    caption = ""
    if left_out:
        caption += f"Shapes not drawn here (see the heatmap): {', '.join(left_out)}. "
    if omitted:
        caption += f"Slower strategies not drawn (see the heatmap): {', '.join(omitted)}."
    alt = f"Scaling of time with problem size for family {family}"
    return _done(fig, alt, caption.strip(), f"{family}")


SCALING_CAPTION = (
    "Median time per Jacobian against problem size on log-log axes, one figure per family run at two "
    "sizes or more: the size is the FLOPs of one evaluation of f where every problem of the family knows "
    "them, else the Jacobian's entries n\u00b7m (the x axis says which). Shaded bands are the interquartile "
    "range of the raw samples. Each panel holds the shape n:m fixed, so a line's slope is how that "
    "strategy's cost grows with the size of f; lines that cross mark where the best choice changes. "
    "Strategies are ordered by their typical slowdown on the family, fastest in the top row; the y axes "
    "are shared, so rows compare directly. Dashed grey: the baselines; dotted: finite differences.")


# --- forward/reverse crossover ---------------------------------------------------------------

FORWARD, REVERSE = "jacfwd", "jacrev"


def sweep_key(problem: str, n: int, m: int) -> str:
    """A problem's name with its n and m replaced by ``#``: problems that differ only in n and
    m (a shape sweep, like ``mlp-in#-out#-w256-d2``) share it."""
    parts = re.split(r"(\d+)", problem)
    for value in (str(n), str(m)):
        for i in range(1, len(parts), 2):
            if parts[i] == value:
                parts[i] = "#"
                break
    return "".join(parts)


def shape_sweeps(ok: pd.DataFrame, forward: str = FORWARD, reverse: str = REVERSE) -> pd.DataFrame:
    """Rows of ``forward`` and ``reverse`` grouped into shape sweeps (column ``sweep``): problems
    whose names differ only in n and m (``sweep_key``), one per shape n:m, at three shapes or
    more that both strategies solved. Where one name covers several problems of the same shape
    (``shape-in16-out16`` and ``shape-in256-out256``), it is split by Jacobian size n*m, so a
    sweep at constant n*m (``shape-in1-out4096`` ... ``shape-in4096-out1``) is found too."""
    both = ok[ok["strategy"].isin([forward, reverse])].copy()
    if both.empty:
        return both.assign(sweep=[], log_ratio=[])
    solved = both.groupby("problem")["strategy"].nunique()
    both = both[both["problem"].isin(solved[solved == 2].index)]
    both["log_ratio"] = np.log2(both["n"].astype(float) / both["m"].astype(float))
    both["sweep"] = [sweep_key(p, n, m) for p, n, m in zip(both["problem"], both["n"], both["m"])]

    def valid(d: pd.DataFrame) -> bool:
        shapes = d["log_ratio"].nunique()
        return shapes >= 3 and shapes == d["problem"].nunique()

    parts = []
    for name, d in both.groupby("sweep", sort=False):
        if valid(d):
            parts.append(d)
            continue
        for nm, sub in d.groupby(d["n"] * d["m"], sort=False):
            if valid(sub):
                parts.append(sub.assign(sweep=f"{name} (n\u00b7m={nm})"))
    return pd.concat(parts) if parts else both.iloc[0:0]


def crossover_points(sweep: pd.DataFrame, forward: str = FORWARD, reverse: str = REVERSE) -> list[float]:
    """log2(n/m) where forward's time crosses reverse's, interpolated in log time."""
    t = sweep.pivot_table(index="log_ratio", columns="strategy", values="median").sort_index()
    d = np.log(t[forward]) - np.log(t[reverse])
    xs, out = list(d.index), []
    for (x0, d0), (x1, d1) in zip(zip(xs, d), zip(xs[1:], d.iloc[1:])):
        if d0 == 0:
            out.append(x0)
        elif d0 * d1 < 0:
            out.append(x0 + (x1 - x0) * d0 / (d0 - d1))
    return out


def _ratio_tick(v: float) -> str:
    """log2(n/m) -> ``16:1`` or ``1:4.2``."""
    r = 2 ** abs(v)
    text = f"{round(r)}" if abs(r - round(r)) < 0.01 * r else f"{r:.2g}"
    return f"{text}:1" if v >= 0 else f"1:{text}"


def _spread(ticks: list[float], parts: int = 8) -> list[float]:
    """Those of the sorted ``ticks`` that are at least 1/``parts`` of their range apart, the
    first and the last among them, so that their labels do not run into each other."""
    gap = (ticks[-1] - ticks[0]) / parts
    kept = [ticks[0]]
    for t in ticks[1:]:
        if t - kept[-1] >= gap:
            kept.append(t)
    kept[-1] = ticks[-1]  # the last kept is at least a gap past the one before it, and so is the last
    return kept


def crossover(ok: pd.DataFrame, styles: Styles, forward: str = FORWARD,
              reverse: str = REVERSE) -> tuple[Figure, list[str]] | None:
    """Where forward mode overtakes reverse mode as the shape n:m changes: the times of both on
    one shape sweep, and their ratio on every shape sweep. Returns the figure and one finding
    per sweep (a sentence), or None without a shape sweep."""
    sw = shape_sweeps(ok, forward, reverse)
    if sw.empty:
        return None
    stats = sw.groupby("sweep").agg(shapes=("log_ratio", "nunique"), size=("median", "median"))
    names = list(stats.sort_values(["shapes", "size"], ascending=False).index)[:10]
    main = names[0]
    findings = []
    for name in names:
        s = sw[sw["sweep"] == name]
        pts = crossover_points(s, forward, reverse)
        fam = s["family"].iloc[0]
        shapes = s.drop_duplicates("problem").sort_values("log_ratio")
        lo, hi = shapes.iloc[0], shapes.iloc[-1]
        span = f"n:m from {lo['n']}:{lo['m']} to {hi['n']}:{hi['m']}"
        if pts:
            where = " and ".join(f"n:m \u2248 {_ratio_tick(p)}" for p in pts)
            findings.append(f"{name} ({fam}, {span}): {forward} and {reverse} swap places at {where}.")
        else:
            t = s.pivot_table(index="problem", columns="strategy", values="median")
            winner = forward if (t[forward] < t[reverse]).all() else reverse
            findings.append(f"{name} ({fam}, {span}): no crossover; {winner} is faster on every shape.")
    ratios = []
    for name in names:
        t = sw[sw["sweep"] == name].pivot_table(index="log_ratio", columns="strategy", values="median")
        ratios.append((t[forward] / t[reverse]).rename("ratio").reset_index().assign(sweep=name))
    with theme():
        import seaborn as sns
        from matplotlib.lines import Line2D

        fig, axes = subplots(11.0, 3.9, 1, 2)
        ax = axes[0][0]
        s = sw[sw["sweep"] == main]
        log_scale(ax, "y")
        _lines(ax, s, "log_ratio", [reverse, forward], styles)
        marks = [ax.axvline(p, color="#444444", linewidth=1, linestyle="--",
                            label=f"crossover {_ratio_tick(p)}" if k == 0 else f"and {_ratio_tick(p)}")
                 for k, p in enumerate(crossover_points(s, forward, reverse))]
        log_axis(ax, "y", times)
        ax.set_title(main)
        ax.set_ylabel("median time per Jacobian")
        ax.legend(handles=_handles([reverse, forward], styles) + marks, loc="best", frameon=True)
        ax2 = axes[0][1]
        log_scale(ax2, "y")
        colors = sns.color_palette("viridis", len(names))  # one per sweep: sequential, as sweeps are not strategies
        sns.lineplot(data=pd.concat(ratios), x="log_ratio", y="ratio", hue="sweep", hue_order=names, palette=colors,
                     estimator=None, marker="o", markersize=3.5, markeredgewidth=0, linewidth=1.4, legend=False,
                     ax=ax2)
        ax2.axhline(1, color="#444444", linewidth=1)
        lo, hi = ax2.get_ylim()
        ax2.set_ylim(min(lo, 0.5), max(hi, 2))
        ax2.axhspan(ax2.get_ylim()[0], 1, color="#2ca02c", alpha=0.07, linewidth=0)
        log_axis(ax2, "y", ratio)
        ax2.text(0.02, 0.03, f"{forward} faster", transform=ax2.transAxes, fontsize=9, color="#1a6e1a")
        ax2.text(0.02, 0.97, f"{reverse} faster", transform=ax2.transAxes, fontsize=9, color="#8a1a1a", va="top")
        ax2.set_ylabel(f"time {forward} / time {reverse}")
        ax2.set_title(f"every shape sweep ({len(names)})" if len(names) > 1 else "the ratio")
        ax2.legend(handles=[Line2D([], [], color=c, marker="o", markersize=3.5, linewidth=1.4, label=n)
                            for c, n in zip(colors, names)],
                   loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8.5)
        for a, shown in ((ax, s), (ax2, sw)):
            ticks = _spread(sorted(shown["log_ratio"].unique()))
            a.set_xticks(ticks)
            a.set_xticklabels([_ratio_tick(v) for v in ticks], rotation=0)
            a.set_xlabel("shape n:m (inputs : outputs)")
    alt = f"{forward} versus {reverse} across shapes n:m"
    return _done(fig, alt, "", "crossover"), findings


CROSSOVER_CAPTION = (
    f"Forward against reverse mode as the shape of the Jacobian changes from few inputs and many outputs "
    f"(left of each axis) to many inputs and few outputs (right). Left: median times of {REVERSE} (m "
    f"vector-Jacobian products) and {FORWARD} (n Jacobian-vector products) on the sweep of the most shapes, "
    f"with interquartile bands; the dashed line marks the crossover. Right: their ratio on every shape sweep "
    f"found (one colour per sweep, not per strategy), below 1 where {FORWARD} wins (shaded). Reverse mode "
    f"costs grow with the outputs m, forward mode costs with the inputs n, so the crossover sits near n = m "
    f"unless one mode has more overhead.")


# --- heatmap -------------------------------------------------------------------------------

STATUS_SHORT = {"disturbed": "dist", "wrong": "wrong", "disputed": "disp", "error": "error", "oom": "oom", "timeout": "t/o", "unsupported": "n/a"}


WRITTEN_CELLS = 1200  # a heatmap of more cells is coloured without a number in each (:func:`heatmap_figure`)


def heatmap_figure(value: pd.DataFrame, text: pd.DataFrame, *, cmap, norm, label: str, muted=()):
    """The heatmap of every page: ``value`` (rows x columns) as coloured cells on the log colour
    scale ``norm`` (``label`` on its bar), ``text`` (the same shape) written in the cells. Cells
    without a value are grey, their text (a status, say) red, or grey where it is in ``muted``.
    The figure is as tall as its rows and as wide as the page allows; above
    :data:`WRITTEN_CELLS` cells, or where cells are too narrow, the colours alone say it (each
    number costs about 1.5 ms to draw, and thousands of them in 5-point type are a table, not
    a picture). Call inside :func:`theme`; returns the figure and its axes."""
    import seaborn as sns

    rows, cols = [str(r) for r in value.index], [str(c) for c in value.columns]
    nr, nc = value.shape
    label_w = max(map(len, rows)) * 0.068 + 0.5
    cell_w = min(0.62, (MAX_WIDTH - label_w - 1.4) / nc)
    fig, axes = subplots(label_w + cell_w * nc + 1.4, max(1.8, 0.245 * nr + 0.05 * max(map(len, cols)) + 0.45))
    ax = axes[0][0]
    v = value.to_numpy(dtype=float)
    coloured = bool(np.isfinite(v).any())
    annotate = nr * nc <= WRITTEN_CELLS and cell_w >= 0.24
    font = 7.5 if cell_w >= 0.45 else 6.5 if cell_w >= 0.32 else 5.5
    # arrays, not frames: seaborn would name the axes after the frame's index and columns; the tick
    # labels are set below, so seaborn need not measure them for overlaps; vmin and vmax keep it from
    # taking the range of values that may all be missing
    sns.heatmap(v, ax=ax, cmap=cmap.with_extremes(bad="#eceff2"), norm=norm, vmin=norm.vmin, vmax=norm.vmax,
                annot=text.to_numpy(dtype=object) if annotate else False, fmt="", annot_kws={"fontsize": font},
                linewidths=1.2, linecolor="white", xticklabels=False, yticklabels=False, cbar=coloured,
                cbar_kws=dict(label=label, shrink=min(1.0, 4.0 / max(0.245 * nr, 1.0)), pad=0.02,
                              aspect=max(8, min(25, 0.245 * nr / 0.16))))
    if annotate:
        for i, j in zip(*np.nonzero(np.isnan(v))):  # seaborn writes only in coloured cells
            if note := text.iat[i, j]:
                ax.text(j + 0.5, i + 0.5, note, ha="center", va="center", fontsize=font - 0.5,
                        color=MUTED if note in muted else FAILED)
        for t in ax.texts:
            t.set_in_layout(False)  # inside their cells: measuring them for the layout changes nothing
    ax.set_xticks(np.arange(nc) + 0.5, cols, rotation=40, ha="left", rotation_mode="anchor")
    ax.set_yticks(np.arange(nr) + 0.5, rows, rotation=0, fontsize=8.5 if nr > 30 else 9.5)
    ax.xaxis.set_ticks_position("top")
    ax.tick_params(length=0)
    if coloured:
        log_axis(ax.collections[0].colorbar.ax, "y", ratio)
    return fig, ax


def heatmap_columns(rows: pd.DataFrame, ok: pd.DataFrame, family: str, columns: list[str]) -> list[str]:
    """The strategies a family's heatmap shows, in order: those timed on the family by their typical
    slowdown on it, fastest first, then those that ran there without a timed correct result, in
    the order of ``columns``. Strategies unsupported on every problem of the family are left out."""
    fam = rows[rows["family"] == family]
    tried = set(fam.loc[fam["status"] != "unsupported", "strategy"])
    timed = strategy_order(ok[ok["family"] == family])
    return [c for c in timed + [c for c in columns if c not in timed] if c in tried]


def heatmap_scale(ok: pd.DataFrame) -> tuple[float, float]:
    """The range of slowdowns one context's heatmaps share: from 1 (the fastest exact strategy) or
    below, where an approximate one was faster still, to the largest (at most 1000)."""
    if ok.empty:
        return 1.0, 2.0
    s = ok["slowdown"].astype(float).clip(1e-3, 1000)
    return min(1.0, float(s.min())), max(2.0, float(s.max()))


def heatmap(rows: pd.DataFrame, ok: pd.DataFrame, family: str, columns: list[str],
            scale: tuple[float, float]) -> Figure | None:
    """Problems (rows) x strategies (columns, :func:`heatmap_columns`) of one family, coloured by
    slowdown relative to the problem's fastest exact strategy (NOTE: [Fastest] in ``picks``) on
    the log scale ``scale`` (:func:`heatmap_scale`); cells that are not ``ok`` show their status."""
    import matplotlib.colors as mcolors
    from matplotlib import colormaps

    fam_all = rows[rows["family"] == family]
    if fam_all.empty:
        return None
    fam_ok = ok[ok["family"] == family]
    cols = heatmap_columns(rows, ok, family, columns)
    unsupported = [c for c in columns if c in set(fam_all["strategy"]) and c not in cols]
    if not cols:
        return None
    probs = fam_all.drop_duplicates("problem").copy()
    probs["size"], _ = size_axis(probs)
    probs["log_ratio"] = np.log2(probs["n"].astype(float) / probs["m"].astype(float))
    probs = probs.sort_values(["log_ratio", "size", "problem"])
    order = list(probs["problem"])
    value = fam_ok.pivot_table(index="problem", columns="strategy", values="slowdown")
    value = value.reindex(index=order, columns=cols)
    status = fam_all.pivot_table(index="problem", columns="strategy", values="status", aggfunc="first")
    status = status.reindex(index=order, columns=cols)

    def cell(v, st) -> str:
        if not math.isnan(v):
            return "1" if abs(v - 1) < 0.005 else fmt_ratio(v).rstrip("x") if v < 1000 else f"{v / 1000:.2g}k"
        return STATUS_SHORT.get(st, st) if isinstance(st, str) else ""

    text = pd.DataFrame([[cell(v, st) for v, st in zip(vs, sts)] for vs, sts in
                         zip(value.to_numpy(dtype=float), status.to_numpy(dtype=object))])
    # magma, not its darkest end: the cells' text stays legible
    cmap = mcolors.ListedColormap(colormaps["magma_r"](np.linspace(0.0, 0.85, 256)))
    with theme():
        fig, ax = heatmap_figure(value, text, cmap=cmap, norm=mcolors.LogNorm(*scale),
                                 label="slowdown", muted=(STATUS_SHORT["unsupported"], STATUS_SHORT["disturbed"]))
        fastest = np.abs(value.to_numpy(dtype=float) - 1) < 0.005
        for t in ax.texts:
            x, y = t.get_position()  # the middle of cell (row y, column x)
            if fastest[int(y), int(x)]:
                t.set_fontweight("bold")
    if value.isna().all().all():  # nothing correct to colour: the statuses say it all
        return _done(fig, f"Heatmap of statuses for family {family}",
                     f"No strategy gave a correct Jacobian on any {family} problem; each cell shows why.", family)
    caption = f"Not drawn, unsupported on every {family} problem: {', '.join(unsupported)}." if unsupported else ""
    if not ax.texts:
        caption += (f" {len(order)} problems by {len(cols)} strategies are too many cells to write in: the colours "
                    "give the slowdowns, and the table of all rows gives them in numbers.")
    return _done(fig, f"Heatmap of slowdowns for family {family}", caption.strip(), family)


HEATMAP_CAPTION = (
    "Slowdown of each strategy (columns) on each problem (rows) of a family relative to the problem's "
    "fastest exact strategy: 1 (bold) is that fastest, 10 means ten times slower, and below 1 an approximate "
    "strategy was faster still. The colour scale is logarithmic and the same in every heatmap of a context. "
    "Grey cells were not timed: 'wrong' failed the accuracy gate, 'error', 'oom' and 't/o' (timeout) failed "
    "to run, 'dist' was timed only while other work held the CPU (its time is not used), 'n/a' is "
    "unsupported. Rows are ordered by shape n:m, then size; columns by typical slowdown on the family, "
    "fastest on the left, then the strategies that ran without a timed correct result. Read across a row "
    "to see your options for one problem; read down a column to see where a strategy stops being "
    "competitive.")


# --- trade-offs ----------------------------------------------------------------------------

def pareto(points: pd.DataFrame, x: str, y: str) -> pd.Series:
    """True for points no other point beats on both ``x`` and ``y`` (smaller is better)."""
    px, py = points[x].to_numpy(dtype=float), points[y].to_numpy(dtype=float)
    ax, ay, bx, by = px[:, None], py[:, None], px[None, :], py[None, :]  # row: the point; column: a rival
    dominated = ((bx <= ax) & (by <= ay) & ((bx < ax) | (by < ay))).any(axis=1)
    return pd.Series(~dominated, index=points.index)


def tradeoff_points(ok: pd.DataFrame, family: str) -> pd.DataFrame:
    """One point per strategy of a family: over the problems it solved, the geometric means of
    its slowdown and of its peak memory / Jacobian size, and its largest error (floored at
    ``ERROR_FLOOR`` for log axes)."""
    fam = ok[ok["family"] == family]
    total = fam["problem"].nunique()
    out = []
    for name, g in fam.groupby("strategy", sort=False):
        out.append({"strategy": name, "slowdown": geomean(g["slowdown"]),
                    "error": max(float(g["error"].max()), ERROR_FLOOR) if g["error"].notna().any() else math.nan,
                    "mem_ratio": geomean(g["mem_ratio"]), "solved": g["problem"].nunique(), "of": total})
    return pd.DataFrame(out, columns=["strategy", "slowdown", "error", "mem_ratio", "solved", "of"])


def _label_clusters(ax, xs, ys, names, near: float = 0.05):
    """Points closer than ``near`` (in axes fractions, log axes) share one label, so labels of
    strategies that sit on top of each other do not overprint. Each comes with the point's
    place in the axes (0 to 1 across and up)."""
    lx0, lx1 = (math.log10(v) for v in ax.get_xlim())
    ly0, ly1 = (math.log10(v) for v in ax.get_ylim())
    clusters: list[list] = []
    for x, y, name in sorted(zip(xs, ys, names)):
        fx, fy = (math.log10(x) - lx0) / (lx1 - lx0), (math.log10(y) - ly0) / (ly1 - ly0)
        for c in clusters:
            if abs(c[0] - fx) < near and abs(c[1] - fy) < near:
                c[3].append(name)
                break
        else:
            clusters.append([fx, fy, (x, y), [name]])
    return [(c[2], c[0], c[1], c[3]) for c in clusters]


def _label_points(ax, xs, ys, names, fontsize: float = 8.5, avoid=()) -> None:
    """Label points on log axes without overprinting: points on top of each other share one
    label; a label that would cover one already placed, or a marker at one of the points
    ``avoid`` ``[(x, y), ...]``, moves up, joined to its point by a thin line; near the right
    edge a label goes to the left of its point, inside the axes."""
    fig, box = ax.get_figure(), ax.get_position()
    width_pt, height_pt = box.width * fig.get_figwidth() * 72, box.height * fig.get_figheight() * 72
    lx0, lx1 = (math.log10(v) for v in ax.get_xlim())
    ly0, ly1 = (math.log10(v) for v in ax.get_ylim())
    placed: list[tuple[float, float, float, float]] = []  # x0, x1, y0, y1 in points in the axes
    for x, y in avoid:  # a marker is about 8 points across: a label 4 points above its own clears it
        cx = (math.log10(x) - lx0) / (lx1 - lx0) * width_pt
        cy = (math.log10(y) - ly0) / (ly1 - ly0) * height_pt
        placed.append((cx - 4, cx + 4, cy - 4, cy + 4))
    for (px, py), across, up, group in _label_clusters(ax, xs, ys, names):
        w, h = 0.58 * fontsize * max(map(len, group)), 1.2 * fontsize * len(group)  # DejaVu Sans, roughly
        right = across <= 0.7
        x0, y0 = across * width_pt + (6 if right else -6 - w), up * height_pt + 4
        start = y0
        while hit := next((b for b in placed if x0 < b[1] and b[0] < x0 + w and y0 < b[3] and b[2] < y0 + h), None):
            y0 = hit[3] + 1
        placed.append((x0, x0 + w, y0, y0 + h))
        ax.annotate("\n".join(group), (px, py), xytext=(6 if right else -6, 4 + y0 - start),
                    textcoords="offset points", fontsize=fontsize, color="#1d232a", va="bottom",
                    ha="left" if right else "right",
                    arrowprops=dict(arrowstyle="-", color="#8a8f98", linewidth=0.6) if y0 > start else None)


TRADEOFF_AXES = (("error", "largest error vs float64 reference"),
                 ("mem_ratio", "peak memory / Jacobian size (geo. mean)"))


def tradeoff_panels(pts: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """The panels of a family's trade-offs, ``(column, axis label, points)`` for each of
    ``TRADEOFF_AXES``, where at least two strategies have both numbers: a panel of one point
    shows no trade-off."""
    panels = [(y, label, pts.dropna(subset=["slowdown", y])) for y, label in TRADEOFF_AXES]
    return [panel for panel in panels if panel[2]["strategy"].nunique() >= 2]


def tradeoffs(ok: pd.DataFrame, family: str, styles: Styles) -> Figure | None:
    """Accuracy against time and memory against time for one family, Pareto fronts marked;
    None where no panel has two strategies (:func:`tradeoff_panels`)."""
    pts = tradeoff_points(ok, family)
    panels = tradeoff_panels(pts)
    if not panels:
        return None
    shown = pd.concat([p for _, _, p in panels]).drop_duplicates("strategy")
    with theme():
        import seaborn as sns

        ncol = 1 if len(shown) <= 14 else 2
        fig, axes = subplots(5.5 * len(panels) + 1.6 * ncol, max(3.8, 0.19 * math.ceil(len(shown) / ncol) + 0.6),
                             1, len(panels))
        fronts = []
        for ax, (y, ylabel, p) in zip(axes[0], panels):
            on = pareto(p, "slowdown", y).to_numpy()
            log_scale(ax, "x", "y")
            ax.set_xlabel("slowdown vs the fastest exact (geo. mean)")
            ax.set_ylabel(ylabel)
            names = list(p["strategy"])
            sns.scatterplot(data=p, x="slowdown", y=y, hue="strategy", style="strategy", hue_order=names,
                            style_order=names, palette=styles.palette(names), markers=styles.markers(names),
                            legend=False, zorder=3, ax=ax)
            # the front stands out: larger, opaque; hollow markers solved only some of the problems
            dots = ax.collections[-1]
            rgba = dots.get_facecolors()
            rgba[:, 3] = np.where(on, 1.0, 0.75)
            dots.set_edgecolors(rgba.copy())
            rgba[(p["solved"] < p["of"]).to_numpy(), 3] = 0.0
            dots.set_facecolors(rgba)
            dots.set_sizes(np.where(on, 70, 38))
            dots.set_linewidths(np.where(on, 1.6, 1.0))
            f = p[on].sort_values("slowdown")
            if len(f) > 1:  # a front of one point has no steps (one line: matplotlib's, as seaborn would draw it)
                ax.plot(f["slowdown"], f[y], drawstyle="steps-post", color="#1d232a", linewidth=1.1, alpha=0.7,
                        zorder=2)
            # limits from the data, with room on the right for the labels; not matplotlib's, which
            # has no range to make of points all at one height
            ax.set_autoscale_on(False)
            x0, x1 = p["slowdown"].min(), p["slowdown"].max()
            ax.set_xlim(min(0.9, x0 / 1.15), max(x1 * 2.2, 2.5))
            y0, y1 = p[y].min(), p[y].max()
            pad = max((y1 / y0) ** 0.12, 1.6)
            ax.set_ylim(y0 / pad, y1 * pad)
            fronts.append((ax, f["slowdown"], f[y], f["strategy"], list(zip(p["slowdown"], p[y]))))
            log_axis(ax, "x", ratio)
            log_axis(ax, "y", ratio if y == "mem_ratio" else (lambda v: f"{v:.0e}"))
        axes[0][-1].legend(handles=_handles(shown["strategy"], styles, linestyle="none", markersize=7),
                           loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=ncol)
        fig.get_layout_engine().execute(fig)  # the labels are placed on the axes as they will be drawn
        for ax, xs, ys, names, marks in fronts:
            _label_points(ax, xs, ys, names, avoid=marks)
        fig.set_layout_engine("none")  # laid out for the labels: drawing need not do it again
    notes = []
    partial = shown[shown["solved"] < shown["of"]]
    if len(partial):
        notes.append(f"Hollow markers solved only some problems: {', '.join(partial['strategy'])}.")
    if (shown["error"] <= ERROR_FLOOR).any() and any(y == "error" for y, _, _ in panels):
        notes.append(f"A largest error of exactly 0 is drawn at {ERROR_FLOOR:.0e}.")
    left_out = [label for y, label in TRADEOFF_AXES if y not in {p[0] for p in panels}]
    if left_out:
        notes.append(f"Not drawn, as fewer than two strategies have it: {left_out[0]}.")
    return _done(fig, f"Trade-offs against time for family {family}", " ".join(notes), family)


TRADEOFF_CAPTION = (
    "One point per strategy of a family: its typical slowdown (geometric mean over the problems it solved, "
    "relative to each problem's fastest exact strategy) against its largest error (left) and its typical "
    "peak memory as a multiple of the Jacobian's size (right). Lower-left is better; the black steps join "
    "the Pareto front, the strategies no other beats on both axes, and are labelled: any other strategy is "
    "beaten by one of them on both counts. Hollow markers solved only some of the family's problems, so "
    "their means cover fewer, maybe easier, problems. A panel is drawn only where two strategies or more "
    "have both of its numbers. A strategy ten times slower than the fastest on a problem has no memory "
    "measured there (it left the race before its rounds), so its memory point covers the other problems. "
    "Look for finite differences buying speed with error, and batched (vmap) "
    "strategies buying it with memory.")


# --- noise ---------------------------------------------------------------------------------

def noise(ok: pd.DataFrame, styles: Styles, columns: list[str]) -> Figure | None:
    """IQR/median of every timed row, by strategy, against the warning level."""
    rel = ok.dropna(subset=["rel_iqr"])
    rel = rel[np.isfinite(rel["rel_iqr"].astype(float))]
    if rel.empty:
        return None
    cols = [c for c in columns if c in set(rel["strategy"])]
    rng = np.random.default_rng(0)  # jitter, the same on every render (seaborn's stripplot draws it anew)
    parts = []
    for j, name in enumerate(cols):
        d = rel[rel["strategy"] == name]
        parts.append(d.assign(at=j + rng.uniform(-0.28, 0.28, len(d))))
    dots = pd.concat(parts)
    dots["rel_iqr"] = dots["rel_iqr"].astype(float).clip(lower=1e-4)
    loud = dots["rel_iqr"] > NOISE_WARNING
    with theme():
        import seaborn as sns

        fig, axes = subplots(0.62 * len(cols) + 2.6, 3.6)
        ax = axes[0][0]
        log_scale(ax, "y")
        common = dict(x="at", y="rel_iqr", hue="strategy", palette=styles.palette(cols), legend=False, ax=ax)
        if (~loud).any():  # seaborn warns of an empty layer's palette
            sns.scatterplot(data=dots[~loud], s=12, alpha=0.55, linewidth=0, **common)
        if loud.any():
            sns.scatterplot(data=dots[loud], s=20, edgecolor=FAILED, linewidth=0.9, **common)
        ax.axhline(NOISE_WARNING, color=FAILED, linestyle="--", linewidth=1)
        ax.text(len(cols) - 0.5, NOISE_WARNING, f" warning level {NOISE_WARNING:.0%}", va="bottom", ha="right",
                fontsize=9, color=FAILED)
        log_axis(ax, "y", lambda v: f"{100 * v:,.0f}%" if v >= 0.01 else f"{100 * v:.2g}%")
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(cols, rotation=35, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(cols) - 0.4)
        ax.set(xlabel="", ylabel="IQR / median of the samples")
        ax.grid(axis="x", visible=False)
    n_loud = int((rel["rel_iqr"] > NOISE_WARNING).sum())
    caption = (f"Spread of the raw timing samples of every timed pair (one dot each), as interquartile range "
               f"over median, by strategy. Dots above the dashed line ({n_loud} of {len(rel)}) exceeded the "
               f"warning level: their medians are less certain, and speedups between them and their rivals "
               f"should be read with care (the table below lists them). Many noisy pairs at once usually "
               f"mean the machine was busy with something else during the run.")
    return _done(fig, "Timing noise by strategy", caption, "noise")


# --- picking rules -------------------------------------------------------------------------

def regret(scores: pd.DataFrame) -> Figure | None:
    """Each picking rule's regret over the problems its pick solved, as the share of problems
    within each regret: a rule whose curve rises first picks best (NOTE: [Regret])."""
    tried = scores[~scores["status"].isin(rules.UNSCORED)]  # NOTE: [Regret]: failures count, unscored ones do not
    solved = tried[tried["regret"].notna()].copy()
    if solved.empty:
        return None
    solved["share"] = 1 / solved["rule"].map(tried.groupby("rule").size())  # a failed pick counts, at infinity
    order = solved.groupby("rule")["regret"].apply(lambda r: np.exp(np.log(r).mean())).sort_values().index.tolist()
    with theme():
        import seaborn as sns

        fig, axes = subplots(7.4, 3.8)
        ax = axes[0][0]
        log_scale(ax, "x")
        sns.ecdfplot(data=solved, x="regret", hue="rule", hue_order=order, weights="share", stat="count", ax=ax,
                     linewidth=1.8,
                     palette=sns.color_palette("colorblind", len(order)))
        ax.axvline(1.1, color="0.5", linestyle=":", linewidth=1)
        log_axis(ax, "x", ratio)
        ax.set(xlabel="regret: time of the pick / time of the fastest exact strategy",
               ylabel="share of problems", ylim=(0, 1.02))
        legend = ax.get_legend()
        if legend is not None:
            legend.set_title("rule (best first)")
            sns.move_legend(ax, "center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    failed = scores[rules.failed(scores)].groupby("rule").size()
    missing_note = "; ".join(f"{rule} {n}" for rule, n in failed.items())
    caption = ("For each rule, the share of problems (up the side) on which its pick took at most the regret along "
               "the bottom: the higher and further left a curve, the better the rule (the dotted line is 1.1x). A "
               "curve that ends below 1 missed the problems where its pick failed"
               f"{' (' + missing_note + ')' if missing_note else ''}; problems of a kind the rule names no strategy "
               "for, or whose pick was not run or stayed disturbed, are left out. Rules in order of their "
               "geometric-mean regret over the problems their picks solved.")
    return _done(fig, "Regret of each picking rule", caption, "regret")


# --- the load across the run ---------------------------------------------------------------

def _timings(row) -> list[dict]:
    """Every timing of a row: each visit, kept or dropped as disturbed (NOTE: [Visits])."""
    visits = row.get("visits") if isinstance(row.get("visits"), list) else []
    return [*(row.get("retimed") or []), *visits] or [{"started": row["started"], "seconds": row["seconds"],
                                                       "disturbed": row.get("disturbed")}]


def _disturbed_times(row) -> list[float]:
    """When a row's disturbed timings started (NOTE: [Visits] in ``visits``)."""
    return [t["started"] for t in _timings(row) if t.get("started") and bad(t)]


def load_timeline(samples: list, rows: pd.DataFrame) -> Figure | None:
    """The CPUs other work used across one run (NOTE: [Load across the run] in ``load``),
    above a strip showing when each family ran and ticks where a pair was timed while
    disturbed (whether it was then timed again or kept as ``disturbed``)."""
    import seaborn as sns

    from bench.analysis.load import BUSY

    if len(samples) < 2:
        return None
    t0 = samples[0][0]
    load = pd.DataFrame(samples, columns=["t", "other", "pressure"][: len(samples[0])])
    load["minutes"] = (load["t"] - t0) / 60
    ran = rows.dropna(subset=["started", "seconds"]) if "started" in rows else rows.iloc[0:0]
    ran = ran[[c for c in ("family", "started", "seconds", "disturbed", "visits", "retimed") if c in ran]]
    families = list(dict.fromkeys(ran["family"]))
    ran = ran.to_dict("records")  # dicts: a big run has 100k rows to read a few fields of
    with theme():
        fig, axes = subplots(MAX_WIDTH, 3.4, 2, 1, sharex=True, height_ratios=[4, max(1, 0.35 * len(families))])
        ax, strip = axes[0][0], axes[1][0]
        sns.lineplot(data=load, x="minutes", y="other", ax=ax, color="#1f77b4", linewidth=1.2, label="other work")
        ax.fill_between(load["minutes"], 0, load["other"], where=load["other"] >= BUSY, color=FAILED, alpha=0.25,
                        linewidth=0, label=f"busy (at least {BUSY:g} CPU)")
        ax.axhline(BUSY, color=FAILED, linestyle="--", linewidth=0.8)
        ax.set_ylim(0, max(1.0, float(load["other"].max()) * 1.1))
        ax.set_ylabel("CPUs used by\nother work")
        ax.legend(loc="upper right")
        palette = sns.color_palette("muted", max(1, len(families)))
        for i, fam in enumerate(families):
            tries = [t for r in ran if r["family"] == fam for t in _timings(r)]
            spans = [((t["started"] - t0) / 60, (t["seconds"] or 0) / 60) for t in tries if t.get("started")]
            strip.broken_barh(spans, (i - 0.4, 0.8), color=palette[i % len(palette)])
        hit = [t for r in ran for t in _disturbed_times(r)]
        if hit:
            ax.plot([(t - t0) / 60 for t in hit], [ax.get_ylim()[1] * 0.97] * len(hit), "|", color=FAILED,
                    markersize=8, label="a disturbed timing")
            ax.legend(loc="upper right")
        strip.set_yticks(range(len(families)))
        strip.set_yticklabels(families)
        strip.set_ylim(max(len(families), 1) - 0.5, -0.5)
        strip.set_xlabel("minutes since the run started")
        strip.grid(axis="y", visible=False)
    caption = (f"How many CPUs work other than the sweep used while it ran, sampled every second, with the "
               f"stretches above {BUSY:g} CPU shaded: timings taken then may be slowed by waiting for a CPU. "
               f"Below, when each family's pairs ran. Red ticks mark pairs whose rounds were disturbed: they were "
               f"timed again later, and kept out of every pick if they stayed disturbed.")
    return _done(fig, "Load of the machine across the run", caption, "load")



# --- cost in units of f ----------------------------------------------------------------------

BAND_COLOR = "#2ca02c"


def cost_in_f(ok: pd.DataFrame, styles: Styles) -> Figure | None:
    """Time per VJP or JVP in evaluations of f (NOTE: [Cost in units of f] in ``bench.analysis.cost``):
    one line per exact strategy with counted products, cheapest at the top, a dot per problem
    coloured by its t(f) over their range, middle half and median (in the strategy's colour),
    against the theory's band. None where no row has products and a t(f)."""
    import matplotlib.colors as mcolors
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable

    from bench.analysis.cost import BAND, PRODUCT, outside

    if "per_product" not in ok:
        return None
    d = ok[ok["mode"].isin(list(PRODUCT)) & ~ok["approximate"].astype(bool)].dropna(subset=["per_product", "t_f"])
    if d.empty:
        return None
    d = d.assign(per_product=d["per_product"].astype(float), t_f=d["t_f"].astype(float))
    by = d.groupby("strategy")["per_product"]
    medians = by.median().sort_values(kind="stable")
    spread = by.quantile([0.0, 0.25, 0.75, 1.0]).unstack()
    spent = outside(d["per_product"]).groupby(d["strategy"]).median()
    order = list(medians.index)
    at = {name: i for i, name in enumerate(order)}
    rng = np.random.default_rng(0)  # jitter, the same on every render
    d = d.assign(at=d["strategy"].map(at) + rng.uniform(-0.22, 0.22, len(d)))
    t0, t1 = float(d["t_f"].min()), float(d["t_f"].max())
    norm = mcolors.LogNorm(t0 / 1.5, t1 * 1.5) if t1 > t0 else mcolors.LogNorm(t0 / 2, t0 * 2)
    cmap = mcolors.ListedColormap(colormaps["viridis_r"](np.linspace(0.08, 0.92, 256)))  # no pale yellow
    lo = min(float(d["per_product"].min()), BAND[0]) / 1.6
    hi = max(float(d["per_product"].max()), BAND[1]) * 1.6
    with theme():
        import seaborn as sns
        from matplotlib.transforms import blended_transform_factory

        fig, axes = subplots(MAX_WIDTH, 0.4 * len(order) + 1.6)
        ax = axes[0][0]
        log_scale(ax, "x")
        ax.axvspan(*BAND, color=BAND_COLOR, alpha=0.16, linewidth=0, zorder=0)
        for name in order:  # the dots' range, their middle half thicker, the median a tick across
            y, (least, q1, q3, most), color = at[name], spread.loc[name], styles[name].color
            ax.hlines(y, least, most, color=color, linewidth=1.0, alpha=0.7, zorder=2)
            ax.hlines(y, q1, q3, color=color, linewidth=7.0, alpha=0.3, zorder=2)
            ax.vlines(medians[name], y - 0.32, y + 0.32, color=color, linewidth=2.4, zorder=4)
        sns.scatterplot(data=d, x="per_product", y="at", hue="t_f", hue_norm=norm, palette=cmap, s=30,
                        edgecolor="white", linewidth=0.5, legend=False, zorder=3, ax=ax)
        ax.set_xlim(lo, hi)
        ax.set_yticks(range(len(order)), order)
        ax.set_ylim(len(order) - 0.5, -0.5)
        log_axis(ax, "x", lambda v: f"{v:.3g} f", inches=7.0)
        top = blended_transform_factory(ax.transData, ax.transAxes)
        ax.text(math.sqrt(BAND[0] * BAND[1]), 1.01, f"theory: {BAND[0]:g}\u2013{BAND[1]:g} f", transform=top,
                ha="center", va="bottom", fontsize=9, color="#1a6e1a")
        ax.text(0.0, 1.01, "\u2190 batched (vmap)", transform=ax.transAxes, ha="left", va="bottom", fontsize=9,
                color=MUTED)
        ax.text(1.0, 1.01, "time outside f's work \u2192", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=9, color=FAILED)
        product = d.groupby("strategy")["mode"].first().map(PRODUCT)
        notes = [f"{medians[n]:.2g} f/{product[n]}" + (f", {spent[n]:.0%} outside" if spent[n] > 0 else "")
                 for n in order]
        side = ax.secondary_yaxis("right")  # a second set of labels, laid out with the figure
        side.set_yticks(range(len(order)), notes, fontsize=8.5)
        side.tick_params(length=0)
        side.spines["right"].set_visible(False)
        ax.set(xlabel="time per product: median / (VJPs or JVPs \u00d7 t(f)), in evaluations of f", ylabel="")
        ax.grid(axis="y", visible=False)
        bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, pad=0.02, aspect=30)
        bar.set_label("t(f): one evaluation of f")
        log_axis(bar.ax, "y", times, inches=0.4 * len(order) + 0.6)
    above = int((d["per_product"] > BAND[1]).sum())
    caption = (f"Each dot is one problem: a strategy's median time divided by the products it counted (VJPs in "
               f"reverse mode, JVPs in forward mode) and by t(f), the time of one plain evaluation of f on the same "
               f"problem, timed by the same harness. The shaded band is the theory's {BAND[0]:g} to {BAND[1]:g} "
               f"evaluations of f per product. Left of it the products were batched (vmap), so each cost less "
               f"than a pass of its own; right of it ({above} of {len(d)} dots) time went to what is not f's work, "
               f"as Python loops and dispatch, which a user could win back. A dot's colour is its t(f): where f "
               f"takes microseconds, the fixed cost of each call weighs most. On the right, each strategy's median "
               f"and its share of time outside f's work, granting every product {BAND[1]:g} f.")
    alt = f"Time per VJP or JVP in evaluations of f, by strategy: {', '.join(order)}"
    return _done(fig, alt, caption, "cost in units of f")

"""HOW Jacobians are computed and measured: strategies, the sweep, results, reports.

Importing ``bench`` imports no torch: loading results, comparing and reporting work on a
machine without it. The modules that need torch import it themselves.

Three functions for a user's own code are reached lazily, so that they import torch only when
used:

- ``bench.advise(fn, *inputs)``: measure every strategy on ``fn`` and rank them
  (:func:`bench.advisor.advise`);
- ``bench.jacobian(fn, *inputs, strategy="auto")``: the Jacobian by the advisor's measured
  choice, cached per input signature, or with ``strategy="predict"`` by the predictor's pick,
  which measures no strategy (:func:`bench.advisor.jacobian`);
- ``bench.choice(fn, *inputs)``: that choice, and how sure it is (:func:`bench.advisor.choice`).
"""

_LAZY = ("advise", "jacobian", "choice")


def __getattr__(name):
    if name in _LAZY:
        from bench import advisor  # imports torch

        return getattr(advisor, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

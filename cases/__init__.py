"""WHAT is differentiated: the problem registry.

Each family module registers frozen :class:`Problem` specs at import time; this package
imports them all, so ``import cases`` gives the whole registry. Nothing here knows about
strategies, timing or pytest.
"""

from .problem import KINDS, PROFILES, Built, Problem, Setup
from .registry import families, get, known_tags, problems, register, select, split_patterns
# Registration side effects, in report order.
from . import seeds, mlp, shapes, nets, decoder, hidden, lsq, sparse, ops  # noqa: E402,F401
from . import batched, params, penalty  # noqa: E402,F401

__all__ = [
    "KINDS", "PROFILES", "Built", "Problem", "Setup",
    "families", "get", "known_tags", "problems", "register", "select", "split_patterns",
]

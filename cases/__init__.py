"""WHAT is differentiated: the problem registry.

Each family module registers frozen :class:`Problem` specs at import time; this package
imports them all, so ``import cases`` gives the whole registry. Nothing here knows about
strategies, timing or pytest.
"""

from .problem import KINDS, PROFILES, Built, Problem, Setup
from .registry import families, get, known_tags, problems, register, select, split_patterns
from . import seeds, mlp  # noqa: E402,F401  (registration side effects, in report order)

__all__ = [
    "KINDS", "PROFILES", "Built", "Problem", "Setup",
    "families", "get", "known_tags", "problems", "register", "select", "split_patterns",
]

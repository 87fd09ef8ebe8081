"""WHAT is differentiated: the problem registry.

Each family module registers frozen :class:`Problem` specs at import time; this package
imports them all, so ``import cases`` gives the whole registry: the built-in families in
report order, then any other module of the package, so a new family is one new file. Nothing
here knows about strategies, timing or pytest.
"""

import importlib
import pkgutil

from .problem import PROFILES, Built, Kind, Problem, Setup
from .registry import families, get, known_kinds, known_tags, problems, register, select, split_patterns

_FAMILIES = ("seeds", "mlp", "shapes", "nets", "decoder", "hidden", "lsq", "sparse", "ops", "batched", "params",
             "penalty")
for _name in _FAMILIES + tuple(sorted({m.name for m in pkgutil.iter_modules(__path__)} - set(_FAMILIES)
                                      - {"problem", "registry"})):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = [
    "PROFILES", "Built", "Kind", "Problem", "Setup",
    "families", "get", "known_kinds", "known_tags", "problems", "register", "select", "split_patterns",
]

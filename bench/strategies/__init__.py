"""HOW a Jacobian is computed: the strategy registry and the strategies, one module per group.

The registry (:mod:`bench.strategies.registry`) imports no strategy. Each group module
registers its strategies at import time; this package imports them all, as ``cases`` does its
families, so ``from bench import strategies`` gives the whole registry: the built-in groups in
report order, then any other module of the package, so a new group is one new file.
"""

import importlib
import pkgutil

from bench.strategies.registry import (FEATURES, STRATEGIES, VECTOR_KINDS, Blocks, Context, Strategy, Unsupported,
                                       context, get, note, prime, probe, probing, register, using)

_GROUPS = ("textbook", "differences", "compiled", "chunked", "graphs", "coloring", "ntk", "persample", "structured", "penalty")
for _name in _GROUPS + tuple(sorted({m.name for m in pkgutil.iter_modules(__path__)} - set(_GROUPS)
                                    - {"registry", "memo"})):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = [
    "FEATURES", "STRATEGIES", "VECTOR_KINDS", "Blocks", "Context", "Strategy", "Unsupported",
    "context", "get", "note", "prime", "probe", "probing", "register", "using",
]

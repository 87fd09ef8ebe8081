"""The problem kinds, one object per calling convention (``cases.Problem.kind``).

A kind owns how a problem of that kind is run, its float64 reference and audit, its gate,
its Jacobian's size and where the work probe sits (:class:`Kind`). Measuring a pair, the
advisor and the CLI dispatch through :func:`get`. A new kind is one module here that
registers a :class:`Kind`: this package imports every module it holds.
"""

import importlib
import pkgutil

from bench.kinds.registry import KINDS, Kind, get, reference, register, unsupported

_KINDS = ("vector", "batched", "penalty")
for _name in _KINDS + tuple(sorted({m.name for m in pkgutil.iter_modules(__path__)} - set(_KINDS) - {"registry"})):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["KINDS", "Kind", "get", "reference", "register", "unsupported"]

"""A cache that lives on the function: compiled code, captured graphs and colourings are kept
per function and input signature, and die with the function."""

from __future__ import annotations

import inspect
from collections import OrderedDict

_MEMO_ATTR = "_jacbench_memo"
_FALLBACK: "OrderedDict[int, tuple[object, dict]]" = OrderedDict()
_FALLBACK_SIZE = 8


class _Memo(dict):
    """A per-function cache stored as an attribute of the function. Copies of the function
    (``copy.deepcopy`` of a module, pickling) start with an empty one: compiled code and
    captured graphs are never copied."""

    def __deepcopy__(self, memo):
        return type(self)()

    def __copy__(self):
        return type(self)()

    def __reduce__(self):
        return (type(self), ())


def memo(fn, namespace: str) -> dict:
    """A dict private to ``namespace`` that lives as long as ``fn`` does.

    Stored on ``fn`` itself, so cycles through it (a compiled function that calls ``fn``)
    are collected with ``fn``. A bound method stores it on its object, per method. Objects
    that take no attributes fall back to a small table of the most recent ones, which
    keeps them alive until they drop out of it.
    """
    holder, sub = fn, namespace
    if inspect.ismethod(fn):
        holder, sub = fn.__self__, (namespace, fn.__func__)
    try:
        store = holder.__dict__.get(_MEMO_ATTR)
        if store is None:
            store = _Memo()
            setattr(holder, _MEMO_ATTR, store)
        return store.setdefault(sub, {})
    except (AttributeError, TypeError):
        key = id(holder)
        entry = _FALLBACK.get(key)
        if entry is None or entry[0] is not holder:
            entry = _FALLBACK[key] = (holder, {})
            while len(_FALLBACK) > _FALLBACK_SIZE:
                _FALLBACK.popitem(last=False)
        _FALLBACK.move_to_end(key)
        return entry[1].setdefault(sub, {})


def signature(inputs) -> tuple:
    """What a compiled or captured function is specialised on."""
    return tuple((tuple(x.shape), x.dtype, x.device, x.requires_grad) for x in inputs)

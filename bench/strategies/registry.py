"""The strategy registry: what a strategy is, how it is registered, and what it may know.

A strategy is one small function ``compute(fn, inputs, create_graph=False)``, registered
under a stable kebab-case name. Its docstring's first paragraph states its cost model.

NOTE: [Jacobian layout]
    ``fn(*inputs)`` returns one tensor ``out``. Every strategy returns a tuple with one block
    per input; block ``k`` has shape ``out.shape + inputs[k].shape`` and holds
    ``d out[i] / d inputs[k][j]``. This is the layout of ``torch.autograd.functional.jacobian``
    and ``torch.func.jacrev(argnums=...)`` for tuple inputs, so those strategies return their
    library's answer untouched; the loops and finite differences assemble the same layout.
    The correctness gate flattens the blocks to one ``(m, N)`` matrix (``bench.gate.accuracy.flatten``).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

Blocks = tuple[torch.Tensor, ...]


class Unsupported(Exception):
    """Raised by a strategy that finds, at call time, that it cannot handle this function
    (no ``nn.Sequential`` to exploit, no sparsity pattern, ...). The message is the reason;
    the pair is recorded as ``unsupported``, not as an error."""

# --- what a strategy may know beyond (fn, inputs) ----------------------------------------


@dataclass(frozen=True)
class Context:
    """What the caller knows about ``fn`` besides being callable: the ``nn.Module`` behind it
    and the Jacobian's sparsity pattern, for strategies that exploit structure. Strategies
    read it with :func:`context`; the sweep and the advisor set it with :func:`using`."""

    module: torch.nn.Module | None = None
    sparsity: torch.Tensor | None = None


_CONTEXT: contextvars.ContextVar[Context] = contextvars.ContextVar("jacbench_context", default=Context())
_NOTES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("jacbench_notes", default=None)


def context() -> Context:
    return _CONTEXT.get()


@contextlib.contextmanager
def using(module=None, sparsity=None, notes: dict | None = None):
    """Run strategies with this context; ``notes`` collects what they :func:`note`."""
    tokens = _CONTEXT.set(Context(module, sparsity)), _NOTES.set(notes)
    try:
        yield
    finally:
        _CONTEXT.reset(tokens[0])
        _NOTES.reset(tokens[1])


_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("jacbench_probing", default=False)


def probing() -> bool:
    """True while the work probe counts a call (``bench.measure.counting``): ``fn`` is then wrapped in
    the probe, so nothing may be compiled, captured or cached for it."""
    return _PROBING.get()


@contextlib.contextmanager
def probe():
    """Mark the calls inside as counted by the work probe (see :func:`probing`)."""
    token = _PROBING.set(True)
    try:
        yield
    finally:
        _PROBING.reset(token)


def note(**facts) -> None:
    """Record facts about this call (e.g. the number of colours) in the row's ``notes``."""
    notes = _NOTES.get()
    if notes is not None:
        notes.update(facts)


# --- torch features a strategy may need, for running across torch versions -------------


def _has_param(fn_path: str, param: str) -> Callable[[], bool]:
    def check() -> bool:
        obj = torch
        for part in fn_path.split(".")[1:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return False
        try:
            return param in inspect.signature(obj).parameters
        except (TypeError, ValueError):
            return False

    return check


FEATURES: dict[str, Callable[[], bool]] = {
    "torch.func": lambda: hasattr(torch, "func") and hasattr(torch.func, "jacrev"),
    "is_grads_batched": _has_param("torch.autograd.grad", "is_grads_batched"),
    "vectorize=": _has_param("torch.autograd.functional.jacobian", "vectorize"),
    "strategy=": _has_param("torch.autograd.functional.jacobian", "strategy"),
    "chunk_size": _has_param("torch.func.jacrev", "chunk_size"),
    "torch.compile": lambda: hasattr(torch, "compile"),
}


@dataclass(frozen=True)
class Strategy:
    """A registered way of computing a Jacobian.

    Attributes:
        name: stable kebab-case id; a DataFrame value, pytest id, CLI filter and label.
        compute: ``compute(fn, inputs, create_graph=False) -> Blocks``.
        mode: ``reverse``, ``forward`` or ``fd``: what kind of products it performs;
            ``structured`` (no autograd) or ``estimate`` (a random estimate of what the
            problem needs, e.g. a penalty's ||J||_F^2, not the Jacobian itself).
        kinds: problem kinds it accepts; others are ``unsupported`` with a reason.
        fd_order: 0 for exact strategies, 1 for forward and 2 for central differences.
        needs: torch features it calls (keys of :data:`FEATURES`).
        create_graph: whether its result can be differentiated again.
        tier: index into ``cases.PROFILES`` of the smallest profile that runs it (costly
            strategies, such as compiled ones, stay out of the small profiles).
        devices: device types it runs on.
        prepares: its first call does one-time work for the function (compiles it, captures
            a graph, detects a sparsity pattern), so that call says nothing of the later
            ones; any other strategy's first call stands for a warm one (NOTE: [Racing]).
    """

    name: str
    compute: Callable[..., Blocks] = field(compare=False, repr=False)
    mode: str
    kinds: frozenset[str]
    fd_order: int = 0
    needs: tuple[str, ...] = ()
    create_graph: bool = False
    tier: int = 0
    devices: tuple[str, ...] = ("cpu", "cuda")
    prepares: bool = False

    @property
    def exact(self) -> bool:
        return self.fd_order == 0 and self.mode != "estimate"

    def _paragraphs(self) -> list[str]:
        return [" ".join(p.split()) for p in inspect.cleandoc(self.compute.__doc__ or "").split("\n\n")]

    @property
    def summary(self) -> str:
        """What it calls: the docstring's first paragraph, on one line."""
        return self._paragraphs()[0]

    @property
    def cost(self) -> str:
        """Its cost model: the docstring's paragraph that starts with ``Cost:``."""
        return next((p for p in self._paragraphs() if p.startswith("Cost:")), "")

    def unavailable(self, device: str | None = None) -> str | None:
        """Why this strategy cannot run here (on this device, with this torch), or None.
        Whether it can run a problem of some kind is the kind's to say (``bench.kinds``)."""
        if device is not None and device.split(":")[0] not in self.devices:
            return f"{self.name} runs on {' and '.join(self.devices)} only"
        for feature in self.needs:
            if not FEATURES[feature]():
                return f"torch {torch.__version__} lacks {feature}"
        return None

    def __call__(self, fn, inputs, create_graph: bool = False) -> Blocks:
        # tuple(): functional.jacobian's forward mode returns a list where its reverse mode
        # returns a tuple.
        return tuple(self.compute(fn, tuple(inputs), create_graph=create_graph))


STRATEGIES: dict[str, Strategy] = {}
VECTOR_KINDS = frozenset({"vector", "multi", "params"})


def register(name: str, mode: str, kinds=VECTOR_KINDS, **kw):
    """Decorator: register ``compute`` as strategy ``name``."""

    def wrap(compute):
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is registered twice")
        STRATEGIES[name] = Strategy(name, compute, mode, frozenset(kinds), **kw)
        return compute

    return wrap


_PRIMED: dict[str, bool] = {}


def prime(device: torch.device | str = "cpu") -> bool:
    """Pay, once per process and device, what torch's transforms cost on their first use
    anywhere: the first ``torch.func.jacrev`` of a process imports and sets up about 1.8 s
    of machinery on a 2-core CPU, the first forward-mode call 0.2 s more, a device its
    libraries' handles. Done on a tiny function, so that no strategy's first call carries
    it: a first call then stands for a warm one (NOTE: [Racing] in ``bench.analysis.racing``),
    and a row's ``first_call_s`` is its own. False where a transform failed on the tiny
    function: then a first call may still carry its cost, and stands for nothing."""
    device = torch.device(device)
    if str(device) not in _PRIMED:
        x = torch.linspace(0.1, 1.0, 3, device=device)

        def f(v):
            return torch.tanh(v * v).cumsum(0) @ torch.ones(3, 2, device=device)

        calls = [lambda: torch.autograd.functional.jacobian(f, x)]
        if FEATURES["vectorize="]():
            calls.append(lambda: torch.autograd.functional.jacobian(f, x, vectorize=True))
        if FEATURES["strategy="]():
            calls.append(lambda: torch.autograd.functional.jacobian(f, x, vectorize=True, strategy="forward-mode"))
        if FEATURES["torch.func"]():
            calls += [lambda: torch.func.jacrev(f)(x), lambda: torch.func.jacfwd(f)(x)]
        try:
            for call in calls:
                call()
            _PRIMED[str(device)] = True
        except Exception:  # noqa: BLE001 - a strategy that needs the transform will say why it fails
            _PRIMED[str(device)] = False
    return _PRIMED[str(device)]


def get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}") from None

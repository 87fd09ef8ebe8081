"""Checking the reference itself: float64 finite differences of f, which share no autograd.

NOTE: [Reference audit]
    A float64 autograd reference shares every failure of autograd: a graph cut by ``.item()``
    or a ``no_grad`` region, a custom ``autograd.Function`` whose backward does not match its
    forward, a point where f has no derivative. Against such a reference every autograd
    strategy agrees and the correct finite differences look wrong. So before anything is
    gated, the reference Jacobian J is checked along :data:`DIRECTIONS` random directions v
    against finite differences of f itself, which use no autograd at all:

    * f must leave its inputs alone: a function that changes them in place moves the point it
      is differentiated at, and is disputed with the input it changes and by how much. Every
      other call of f here is on copies, so that is not mistaken for randomness;
    * f is called :data:`CALLS` times at the same point; if any output differs from the
      first, f is random (dropout in training mode, sampling) and has no Jacobian to check.
      Two calls were not enough: dropout of 6 outputs draws the same mask twice in a row
      once in 64 audits, and f was then diagnosed with a kink instead;
    * central differences with steps h and h/2, ``D(h) = (f(x + h v) - f(x - h v)) / 2h``,
      are combined by Richardson extrapolation, ``(4 D(h/2) - D(h)) / 3``, with
      ``|D(h) - D(h/2)|`` plus the rounding ``eps * max|f| / h`` as its error estimate;
      ``h = eps^(1/5)`` times the input's scale balances the two for the extrapolation;
    * J v must match the extrapolation within :data:`TRUST` times that estimate (and a floor
      of ``1000 eps``, at least ``1e-6``, of the slope's scale). Otherwise the reference is
      *disputed*, and no strategy on that problem can be called right or wrong.

    * one-sided slopes ``(f(x + t v) - f(x)) / t`` and ``(f(x) - f(x - t v)) / t`` at
      ``t = h/16`` and ``h/256``: where f is smooth their gap shrinks with t; where it stays,
      f has a kink at x itself (relu or abs at 0) and no derivative, so the reference is
      disputed even where autograd's choice of subgradient matches the central differences.

    A run of f under :class:`Watch` explains a dispute: it names the calls that cut the
    graph and the global state f leaves changed, and the autograd graph names the custom
    Functions it passes through, each with the file and line in the user's code. The cost
    is ``8 * DIRECTIONS + CALLS + 1`` evaluations of f.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

from bench.gate import state

DIRECTIONS = 3
CALLS = 4  # calls of f at the same point, to tell a random f (one in 64^3 for that dropout)
TRUST = 10.0
_SKIP_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))  # torch, bench
_CUTS = {"item": ".item()", "tolist": ".tolist()", "numpy": ".numpy()", "detach": ".detach()",
         "detach_": ".detach_()", "__float__": "float()", "__int__": "int()", "__index__": "int()",
         "__bool__": "bool()", "__array__": "numpy.asarray()"}
_FACTORIES = {"tensor": "torch.tensor([...])", "as_tensor": "torch.as_tensor([...])",
              "asarray": "torch.asarray([...])"}
_FLAT = {"round", "floor", "ceil", "trunc", "sign", "sgn", "long", "int", "short", "bool", "char", "byte"}


@dataclass(frozen=True)
class Finding:
    """A call seen while f ran: one that cuts the graph (``cut``), or one whose derivative is
    zero almost everywhere (``flat``)."""

    what: str
    where: str
    kind: str = "cut"

    def __str__(self) -> str:
        return f"{self.what} at {self.where}" if self.where else self.what


@dataclass(frozen=True)
class Audit:
    """The verdict on a reference: ``disputed`` is the reason nothing can be gated, or None;
    ``note`` is what a user should know although the reference holds; ``error`` is the largest
    relative disagreement with finite differences that was seen."""

    disputed: str | None = None
    note: str = ""
    error: float | None = None


def user_frame() -> str:
    """``file:line`` of the innermost caller outside torch and jacbench's own ``bench``."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_SKIP_DIRS) and not name.startswith("<frozen"):
            return f"{os.path.basename(name)}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


def _needs_grad(values) -> bool:
    for v in values:
        if isinstance(v, torch.Tensor) and v.requires_grad:
            return True
        if isinstance(v, (list, tuple)) and _needs_grad(v):
            return True
    return False


class Watch(TorchFunctionMode):
    """Records calls on tensors that require grad which cut the graph or are flat."""

    def __init__(self):
        super().__init__()
        self.findings: list[Finding] = []

    def _add(self, what: str, kind: str = "cut") -> None:
        finding = Finding(what, user_frame(), kind)
        if finding not in self.findings:
            self.findings.append(finding)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        owner = getattr(getattr(func, "__self__", None), "__name__", "")
        if _needs_grad(args) or _needs_grad(kwargs.values()):
            if name == "__get__" and owner == "data":
                self._add(".data")
            elif name in _CUTS:
                self._add(_CUTS[name])
            elif name in _FACTORIES:
                self._add(_FACTORIES[name])
            elif not torch.is_grad_enabled() and name != "__get__" and not _in_function_forward():
                self._add(f"{name} with grad disabled (torch.no_grad or set_grad_enabled(False))")
            elif name in _FLAT or (name == "to" and _to_integer(args, kwargs)):
                self._add(f"{name}", "flat")
        return func(*args, **kwargs)


_FUNCTION_PY = os.path.join("torch", "autograd", "function.py")


def _in_function_forward() -> bool:
    """Whether a custom ``autograd.Function``'s forward is running (it runs with grad off)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "apply" and frame.f_code.co_filename.endswith(_FUNCTION_PY):
            return True
        frame = frame.f_back
    return False


def _to_integer(args, kwargs) -> bool:
    dtype = kwargs.get("dtype") or next((a for a in args if isinstance(a, torch.dtype)), None)
    return dtype is not None and not (dtype.is_floating_point or dtype.is_complex)


def custom_functions(out: torch.Tensor, limit: int = 10_000) -> list[str]:
    """The custom ``autograd.Function`` classes on ``out``'s graph, each with where its
    forward is defined."""
    seen, found, stack = set(), [], [out.grad_fn]
    while stack and len(seen) < limit:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if cls is not None:
            try:
                where = f"{os.path.basename(inspect.getsourcefile(cls))}:{inspect.getsourcelines(cls)[1]}"
            except (OSError, TypeError):
                where = ""
            text = f"{cls.__name__} ({where})" if where else cls.__name__
            if text not in found:
                found.append(text)
        stack.extend(fn for fn, _ in getattr(node, "next_functions", ()))
    return found


def watch(fn, inputs) -> tuple[list[Finding], list[str]]:
    """Run ``fn`` once on inputs that require grad: what cut or flattened its graph, what
    global state it left changed, and the custom Functions it went through. Never raises: a
    call that fails finds nothing."""
    xs = tuple(x.detach().requires_grad_(True) for x in inputs)
    spy = Watch()
    try:
        with state.kept(), torch.enable_grad(), spy, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # .item() on a tensor that requires grad warns: it is reported
            before = state.snapshot()
            out = fn(*xs)
            left = state.changes(before, state.snapshot())
    except Exception:  # noqa: BLE001 - the caller reports the function's own failure
        return spy.findings, []
    spy.findings += [Finding(f"f returns with {change}", "", "state") for change in left]
    custom = custom_functions(out) if isinstance(out, torch.Tensor) and out.grad_fn is not None else []
    return spy.findings, custom


def cuts_text(findings: list[Finding]) -> str:
    """The calls that cut the graph, and the global state f leaves changed, as one phrase."""
    cuts = [str(f) for f in findings if f.kind == "cut"]
    text = "; ".join(cuts[:3]) + (f" and {len(cuts) - 3} more" if len(cuts) > 3 else "")
    left = [f.what for f in findings if f.kind == "state"]
    return "; ".join(filter(None, [text, ", ".join(left)]))


def refused(inputs, out=None) -> str | None:
    """One line why there is no Jacobian to give for these inputs (and f's output ``out``),
    naming the way out, or None. Complex numbers are refused rather than given a convention:
    autograd's conjugate Wirtinger gradients and forward mode's tangents would make the
    strategies disagree by convention, not by error, and a real matrix for a complex f (what
    a strategy that drops the imaginary part returns) is wrong. Empty tensors are refused
    rather than answered with an empty matrix nobody asked for; a 0-dimensional tensor is
    one element and has its Jacobian."""
    for k, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            return f"input {k} is a {type(x).__name__}, not a tensor"
        if x.is_complex():
            return (f"input {k} is {_name(x.dtype)}: complex inputs have no Jacobian convention here; "
                    "pass torch.view_as_real(x) and view it back inside f")
        if not x.is_floating_point():
            return f"input {k} is {_name(x.dtype)}; a Jacobian needs floating-point inputs"
        if x.numel() == 0:
            return f"input {k} is empty (shape {tuple(x.shape)}): its Jacobian has no entries; leave it out"
    if out is None:
        return None
    if not isinstance(out, torch.Tensor):
        return None  # the caller says what a non-tensor output needs
    if out.is_complex():
        return (f"the function returns {_name(out.dtype)}: complex outputs have no Jacobian convention here; "
                "return torch.view_as_real(out) (real and imaginary parts as a last dimension of 2)")
    if not out.is_floating_point():
        return f"the function returned a {_name(out.dtype)} tensor, which has no Jacobian"
    if out.numel() == 0:
        return f"the function's output is empty (shape {tuple(out.shape)}): its Jacobian has no entries"
    return None


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def own(inputs) -> tuple:
    """Copies of the caller's inputs for jacbench to call f on, so that nothing done to them,
    by f or a strategy, reaches the caller's tensors. A copy of an input that requires grad
    stays on its graph (``create_graph`` differentiates through it)."""
    return tuple((x.clone() if x.requires_grad else x.detach().clone()) if isinstance(x, torch.Tensor) else x
                 for x in inputs)


def changes_inputs(fn, inputs) -> str | None:
    """One line naming the input that ``fn`` changes in place, and by how much, or None.
    ``fn`` runs once on copies; the inputs themselves are left alone."""
    copies = tuple(x.detach().clone() for x in inputs)
    try:
        with torch.no_grad(), state.kept():
            fn(*copies)
    except Exception:  # noqa: BLE001 - the caller reports the function's own failure
        return None
    for k, (x, c) in enumerate(zip(inputs, copies)):
        if c.shape != x.shape or c.dtype != x.dtype:
            return f"f changes input {k} in place, to shape {tuple(c.shape)} {_name(c.dtype)}"
        moved = (c.double() - x.detach().double()).abs().nan_to_num(math.inf)
        if moved.numel() and moved.max().item() > 0:
            scale = x.detach().abs().max().item()
            return (f"f changes input {k} in place, by up to {moved.max().item():.2g} ({int((moved > 0).sum())} of "
                    f"{x.numel()} entries; its largest is {scale:.2g}), so the point keeps moving and there is no "
                    "Jacobian to check: work on a copy inside f (x = x.clone())")
    return None


def _flat(values) -> torch.Tensor:
    return values.detach().to("cpu", torch.float64).reshape(-1)


def audit(fn: Callable, inputs: tuple[torch.Tensor, ...], jacobian: torch.Tensor, *,
          source: str = "autograd", seed: int = 0, precision: torch.dtype | None = None,
          floor: float | None = None) -> Audit:
    """Check ``jacobian``, f's ``(m, N)`` Jacobian at ``inputs`` as float64, against finite
    differences of ``fn`` (NOTE: [Reference audit]).

    Args:
        precision: the dtype f really computes in, where it is not its inputs' (a float32
            function behind float64 inputs); it sizes the steps and the rounding.
        floor: the relative disagreement always allowed: the tolerance of ``jacobian``'s own
            dtype where it is not float64 (default ``max(1000 eps, 1e-6)``).
    """
    eps = torch.finfo(precision or inputs[0].dtype).eps
    changed = changes_inputs(fn, inputs)
    if changed:
        return Audit(changed)
    with torch.no_grad():
        f0, *again = (_flat(fn(*own(inputs))) for _ in range(CALLS))
    scale_f = f0.abs().max().item() if f0.numel() else 0.0
    moved = max((f0 - a).abs().max().item() for a in again) if f0.numel() else 0.0
    if not math.isfinite(moved) or moved > 100 * eps * max(scale_f, 1e-300):
        return Audit(f"f is random: calls at the same inputs differ by {moved / max(scale_f, 1e-300):.2g} "
                     "(relative), as dropout in training mode or sampling inside f do, so it has no Jacobian "
                     "to check a strategy against")
    gen = torch.Generator().manual_seed(seed + 7919)
    worst, kink, flat_slope, jv_scale = 0.0, 0.0, True, 0.0
    for _ in range(DIRECTIONS):
        vs = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for x in inputs]
        norm = max(v.abs().max().item() for v in vs) or 1.0
        vs = [v / norm for v in vs]
        size = max(max(x.detach().abs().max().item() for x in inputs), 1.0)
        h = eps ** 0.2 * size

        def at(t):
            with torch.no_grad():
                return _flat(fn(*(x + (t * v).to(x.device, x.dtype) for x, v in zip(inputs, vs))))

        fp1, fm1, fp2, fm2 = at(h), at(-h), at(h / 2), at(-h / 2)
        d1, d2 = (fp1 - fm1) / (2 * h), (fp2 - fm2) / h
        richardson = (4 * d2 - d1) / 3
        jv = jacobian @ torch.cat([v.reshape(-1) for v in vs])
        scale = max(jv.abs().max().item(), richardson.abs().max().item(), 1e-300)
        # rounding of f's values, and of the steps as the inputs' dtype stores them
        rounding = eps * (max(scale_f, fp1.abs().max().item(), fm1.abs().max().item()) + size * scale) / (h / 2)
        estimate = (d1 - d2).abs().max().item() + rounding
        gap = (jv - richardson).abs().max().item()
        if not math.isfinite(gap):
            gap = math.inf
        allowed = (floor if floor is not None else max(1000 * eps, 1e-6)) * scale
        if gap > TRUST * estimate + allowed:
            worst = max(worst, gap / scale)
            jv_scale = max(jv_scale, jv.abs().max().item())
            flat_slope &= richardson.abs().max().item() <= 1e-3 * jv.abs().max().item()
        # one-sided slopes at steps far apart: their gap shrinks with the step where f is
        # smooth, and stays where f has a kink at x itself
        gaps = [((at(t) - f0) / t - (f0 - at(-t)) / t).abs().max().item() for t in (h / 16, h / 256)]
        noise = 4 * eps * (scale_f + size * scale) / (h / 256)
        if gaps[1] > 0.5 * gaps[0] and gaps[1] > 1e-3 * max(scale, gaps[0]) + noise:
            kink = max(kink, gaps[1] / max(scale, gaps[0]))
    if kink:
        return Audit(f"f is not differentiable at these inputs: along a direction its one-sided slopes differ "
                     f"by {kink:.2g} (relative) however small the step, a kink such as relu or abs have at 0, "
                     "so any Jacobian here is one choice of subgradient, not a derivative", "", worst or kink)
    if worst == 0.0:
        findings, _ = watch(fn, inputs)
        flat = [str(f) for f in findings if f.kind == "flat"]
        note = (f"{', '.join(flat[:3])} is piecewise constant: its derivative is zero almost everywhere, "
                "and autograd and finite differences agree on it here") if flat else ""
        return Audit(None, note, 0.0)
    return Audit(_why(fn, inputs, worst, source, flat_slope and jv_scale > 0), "", worst)


def _why(fn, inputs, error: float, source: str, flat_slope: bool) -> str:
    dtype = str(inputs[0].dtype).replace("torch.", "")
    head = f"{source} and {dtype} finite differences of f disagree by {error:.2g} (relative)"
    findings, custom = watch(fn, inputs)
    cuts = cuts_text(findings)
    if custom and flat_slope:
        return (f"{head}: finite differences see a zero slope where the custom autograd.Function "
                f"{custom[0]} passes a gradient: a surrogate gradient such as a straight-through "
                "estimator, deliberate, but not the derivative of f")
    if cuts:
        return f"{head}: part of f is cut from the autograd graph by {cuts}"
    if custom:
        return (f"{head}: the backward of the custom autograd.Function {', '.join(custom[:2])} "
                "does not match the derivative of its forward")
    if source.endswith("'s Jacobian"):  # a strategy's answer, not autograd's: f held for the others
        return f"{head}: the strategy's answer is not the derivative of f at these inputs"
    return f"{head}: part of f is cut from the graph, or f is not differentiable here"

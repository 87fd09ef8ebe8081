"""Torch's process-wide state, kept across a pair: what a function changes is put back and said.

A user's function (or a strategy) can change state that outlives its call: grad mode, the
default dtype, the thread count, deterministic algorithms, anomaly detection. Left alone,
one such pair would change every later pair of the process (a leaked
``torch.set_grad_enabled(False)`` makes every later Jacobian fail). :func:`kept` snapshots
that state, and on exit restores it, together with the random-number generators, and lists
what had changed so that the pair's row can say so.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class State:
    grad_enabled: bool
    inference_mode: bool
    default_dtype: torch.dtype
    deterministic: bool
    deterministic_warn_only: bool
    threads: int
    anomaly: bool


def snapshot() -> State:
    return State(torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.get_default_dtype(),
                 torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads(),
                 torch.is_anomaly_enabled())


_PHRASES = {
    "grad_enabled": lambda v: "grad mode " + ("enabled" if v else "disabled"),
    "inference_mode": lambda v: "inference mode " + ("on" if v else "off"),
    "default_dtype": lambda v: f"the default dtype {str(v).replace('torch.', '')}",
    "deterministic": lambda v: "deterministic algorithms " + ("on" if v else "off"),
    "deterministic_warn_only": lambda v: "deterministic warn-only " + ("on" if v else "off"),
    "threads": lambda v: f"{v} threads",
    "anomaly": lambda v: "anomaly detection " + ("on" if v else "off"),
}
_GUARDS: list = []  # inference-mode guards that undo a leaked one; they must outlive this call


def restore(state: State) -> None:
    """Set what differs from ``state`` back (only that: some setters are slow, e.g. the
    deterministic one imports the compiler's configuration)."""
    now = snapshot()
    if now.grad_enabled != state.grad_enabled:
        torch.set_grad_enabled(state.grad_enabled)
    if now.inference_mode != state.inference_mode:
        _GUARDS.append(torch._C._InferenceMode(state.inference_mode))
    if now.default_dtype != state.default_dtype:
        torch.set_default_dtype(state.default_dtype)
    if (now.deterministic, now.deterministic_warn_only) != (state.deterministic, state.deterministic_warn_only):
        torch.use_deterministic_algorithms(state.deterministic, warn_only=state.deterministic_warn_only)
    if now.threads != state.threads:
        torch.set_num_threads(state.threads)
    if now.anomaly != state.anomaly:
        torch.set_anomaly_enabled(state.anomaly)


def changes(before: State, after: State) -> list[str]:
    """One phrase per changed field, e.g. ``"grad mode disabled"``."""
    return [_PHRASES[f.name](getattr(after, f.name)) for f in fields(State)
            if getattr(before, f.name) != getattr(after, f.name)]


@contextlib.contextmanager
def kept(changed: list[str] | None = None):
    """Restore torch's global state and random generators on exit; append to ``changed``
    a phrase for each piece of state the body had left changed."""
    before = snapshot()
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        after = snapshot()
        if changed is not None:
            changed.extend(changes(before, after))
        restore(before)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def left_changed(changed: list[str]) -> str:
    """The sentence a row's reason carries, or ``""``."""
    return f"the call left {', '.join(changed)} (restored before the next pair)" if changed else ""

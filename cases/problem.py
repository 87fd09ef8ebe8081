"""The problem spec: what is differentiated, at which sizes, with which known answer.

A :class:`Problem` is a frozen, hashable description. It builds a :class:`Built` (the
function and its inputs) for a device, dtype and seed. Every random tensor is drawn in
float64 on the CPU from a seeded generator and only then cast, so the float32 and float64
builds of a problem are the same function up to the rounding of its constants; the float64
build is what the correctness gate uses as its reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

#: A problem's calling convention. The built-in ones: vector: one input tensor -> one output
#: tensor; multi: several input tensors, one block each; params: the inputs are a network's
#: parameters (a multi-input Jacobian built with torch.func.functional_call); batched: x of
#: shape [B, ...] -> per-sample Jacobians [B, m, n]; penalty: a training step whose loss holds
#: a Jacobian penalty. How each is run and checked is ``bench.kinds``'s, where a new one is
#: added; here a kind is a name.
Kind = str

#: Profiles, smallest first. A problem belongs to its tier's profile and every larger one.
PROFILES: tuple[str, ...] = ("quick", "standard", "full")


@dataclass(frozen=True)
class Setup:
    """Where and how a problem is built."""

    device: torch.device
    dtype: torch.dtype
    seed: int = 0

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def randn(self, *shape: int, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
        """A normal tensor drawn in float64 on the CPU, then cast (see the module note)."""
        return self.cast(torch.randn(*shape, generator=gen, dtype=torch.float64) * scale)

    def uniform(self, *shape: int, gen: torch.Generator, low: float = -1.0, high: float = 1.0):
        t = torch.rand(*shape, generator=gen, dtype=torch.float64) * (high - low) + low
        return self.cast(t)

    def cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(device=self.device, dtype=self.dtype)

    def tensor(self, values) -> torch.Tensor:
        return torch.tensor(values, dtype=self.dtype, device=self.device)


@dataclass
class Built:
    """A problem made concrete.

    Attributes:
        fn: the function; ``fn(*inputs)`` returns one tensor.
        inputs: the point at which the Jacobian is taken.
        jacobian: the analytic Jacobian at ``inputs``, if the problem has one: a callable
            returning one block per input, block ``k`` shaped ``out.shape + inputs[k].shape``.
        module: the ``nn.Module`` behind ``fn``, for strategies that exploit its structure.
        sparsity: the Jacobian's known sparsity pattern, a bool ``(m, N)`` tensor on the CPU
            (N all input elements), for strategies that exploit sparsity.
    """

    fn: Callable[..., torch.Tensor]
    inputs: tuple[torch.Tensor, ...]
    jacobian: Callable[[], tuple[torch.Tensor, ...]] | None = None
    module: torch.nn.Module | None = None
    sparsity: torch.Tensor | None = None


@dataclass(frozen=True)
class Problem:
    """One registered problem: a function family at one size.

    Attributes:
        name: stable kebab-case id, e.g. ``mlp-in32-out512-w256-d3``.
        family: the group it is reported under, e.g. ``mlp``.
        kind: the calling convention (see :data:`Kind`).
        n: number of input elements the Jacobian is taken with respect to (per sample, for
            a batched problem).
        m: number of output elements (per sample, for a batched problem).
        builder: makes the function and inputs for a :class:`Setup`.
        sizes: the size parameters, as ordered ``(name, value)`` pairs.
        tags: free labels for selection (``seed``, ``sparse``, ``graph-break``, ...).
        tier: index into :data:`PROFILES` of the smallest profile that runs it.
        description: one line a user can read in ``jacbench list``.
        flops: floating-point operations of one evaluation of ``fn``, where known.
        analytic: whether the built problem carries an analytic Jacobian.
        batch: samples per call; n and m count one sample's elements. For ``batched``
            problems the Jacobian is the ``(batch, m, n)`` stack of per-sample Jacobians;
            for ``penalty`` problems it is the size of the training batch.
        claim: a published speed figure this problem re-measures (``cases.claims``): the
            strategy claimed ``fast``, the one it is compared with (``slow``), the published
            ``ratio`` of their times (slow / fast), the ``figure`` as published, its ``source``
            and ``url``, the ``hardware`` and the ``device`` type it was measured on.
    """

    name: str
    family: str
    kind: Kind
    n: int
    m: int
    builder: Callable[[Setup], Built] = field(compare=False, repr=False)
    sizes: tuple[tuple[str, int], ...] = ()
    tags: frozenset[str] = frozenset()
    tier: int = 0
    description: str = ""
    flops: int | None = None
    analytic: bool = False
    batch: int = 1
    claim: dict | None = field(default=None, compare=False)

    def __post_init__(self):
        for size in ("n", "m", "batch"):
            if not isinstance(getattr(self, size), int) or getattr(self, size) < 1:
                raise ValueError(f"problem {self.name!r} has {size}={getattr(self, size)!r}; a Jacobian needs at least "
                                 "one input and one output element")

    def build(self, device="cpu", dtype=torch.float32, seed: int = 0) -> Built:
        built = self.builder(Setup(torch.device(device), dtype, seed))
        if self.analytic and built.jacobian is None:
            raise RuntimeError(f"problem {self.name} promises an analytic Jacobian but built none")
        return built

    @property
    def profile(self) -> str:
        return PROFILES[self.tier]

    def in_profile(self, profile: str) -> bool:
        return self.tier <= PROFILES.index(profile)

"""Plain Jacobians of ``fn(*inputs)``: one input (``vector``), several (``multi``), or a
network's parameters (``params``, built with ``torch.func.functional_call``). They differ in
what the inputs are, not in how a Jacobian of them is computed, run or checked."""

from bench.kinds.registry import Kind, register

VECTOR = register(Kind("vector"))
MULTI = register(Kind("multi"))
PARAMS = register(Kind("params"))

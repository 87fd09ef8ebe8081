"""The functions of the three seed documents (a tutorial, an API article, a forum thread).

Each is registered twice where the seed wrote it with ``torch.tensor([...])``: once written
with ``torch.stack`` (family ``seed``), and once as the seed wrote it (family
``graph-break``). ``torch.tensor`` copies Python numbers out of the tensors, which silently
cuts the autograd graph: reverse mode then sees no path from input to output. Those
problems exist so the correctness gate can show users exactly that.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .problem import Built, Problem, Setup
from .registry import register


def _problem(name, fn, jacobian, point, *, description, family="seed", tags=(), m=None):
    """A vector problem at a point, with its analytic Jacobian."""

    def builder(s: Setup) -> Built:
        x = point(s)
        return Built(fn, (x,), jacobian=lambda: (jacobian(x),))

    n = int(math.prod(_shape_of(point)))
    return Problem(
        name, family, "vector", n=n, m=m if m is not None else n, builder=builder,
        sizes=(("n", n), ("m", m if m is not None else n)),
        tags=frozenset({family, *tags}), tier=0, description=description, analytic=True,
    )


def _shape_of(point) -> torch.Size:
    return point(Setup(torch.device("cpu"), torch.float64)).shape


def _fixed(values):
    return lambda s: s.tensor(values)


def _random(n):
    return lambda s: s.randn(n, gen=s.generator())


# --- the tutorial -----------------------------------------------------------------------

def powers(x):
    return torch.stack([x[0] ** 2, x[1] ** 3, x[2] ** 4])


def powers_graph_break(x):
    return torch.tensor([x[0] ** 2, x[1] ** 3, x[2] ** 4])


def powers_jacobian(x):
    return torch.diag(torch.stack([2 * x[0], 3 * x[1] ** 2, 4 * x[2] ** 3]))


def trig(x):
    return torch.stack([torch.sin(x[0]), torch.cos(x[1]), torch.exp(x[2])])


def trig_graph_break(x):
    return torch.tensor([torch.sin(x[0]), torch.cos(x[1]), torch.exp(x[2])])


def trig_jacobian(x):
    return torch.diag(torch.stack([torch.cos(x[0]), -torch.sin(x[1]), torch.exp(x[2])]))


ARM2 = (1.0, 0.8)
ARM3 = (1.0, 0.8, 0.6)


def arm(lengths):
    """Planar forward kinematics: joint angles -> end-effector (x, y)."""

    def forward(theta):
        phi = torch.cumsum(theta, 0)
        ls = torch.tensor(lengths, dtype=theta.dtype, device=theta.device)
        return torch.stack([(ls * torch.cos(phi)).sum(), (ls * torch.sin(phi)).sum()])

    return forward


def arm2_graph_break(joint_angles):
    l1, l2 = ARM2
    theta1, theta2 = joint_angles
    x1, y1 = l1 * torch.cos(theta1), l1 * torch.sin(theta1)
    return torch.tensor([x1 + l2 * torch.cos(theta1 + theta2), y1 + l2 * torch.sin(theta1 + theta2)])


def arm_jacobian(lengths):
    def jacobian(theta):
        phi = torch.cumsum(theta, 0)
        ls = torch.tensor(lengths, dtype=theta.dtype, device=theta.device)
        # d(end)/d(theta_j) sums over the links at or beyond joint j.
        dx = -(ls * torch.sin(phi)).flip(0).cumsum(0).flip(0)
        dy = (ls * torch.cos(phi)).flip(0).cumsum(0).flip(0)
        return torch.stack([dx, dy])

    return jacobian


def newton(x):
    return torch.stack([(x[0] - 2) ** 2 + (x[1] - 3) ** 2, (x[0] - 1) ** 2 + (x[1] - 1) ** 2])


def newton_graph_break(x):
    return torch.tensor([(x[0] - 2) ** 2 + (x[1] - 3) ** 2, (x[0] - 1) ** 2 + (x[1] - 1) ** 2])


def newton_jacobian(x):
    return torch.stack([torch.stack([2 * (x[0] - 2), 2 * (x[1] - 3)]),
                        torch.stack([2 * (x[0] - 1), 2 * (x[1] - 1)])])


class SimpleNN(nn.Module):
    """The tutorial's 2 -> 3 -> 2 ReLU network, with seeded weights."""

    def __init__(self, s: Setup):
        super().__init__()
        g = s.generator()
        self.linear1, self.activation, self.linear2 = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)
        with torch.no_grad():
            for layer in (self.linear1, self.linear2):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=torch.float64))
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=g, dtype=torch.float64))
        self.to(device=s.device, dtype=s.dtype).requires_grad_(False)  # see cases.mlp.mlp

    def forward(self, x):
        return self.linear2(self.activation(self.linear1(x)))


def _simple_nn_builder(s: Setup) -> Built:
    net = SimpleNN(s)
    x = s.tensor([1.0, 2.0])

    def jacobian():
        with torch.no_grad():
            active = torch.diag((net.linear1(x) > 0).to(x.dtype))
            return (net.linear2.weight @ active @ net.linear1.weight,)

    return Built(net, (x,), jacobian=jacobian, module=net)


# --- the API article: f(x1, x2, x3) = (x1 + x2, x1 * x3, x2^3) at (3, 4, 5) --------------

def article(x):
    return torch.stack([x[0] + x[1], x[0] * x[2], x[1] ** 3])


def article_jacobian(x):
    z = torch.zeros((), dtype=x.dtype, device=x.device)
    one = torch.ones_like(z)
    return torch.stack([torch.stack([one, one, z]), torch.stack([x[2], z, x[0]]),
                        torch.stack([z, 3 * x[1] ** 2, z])])


def article_multi(x1, x2, x3):
    return torch.stack([x1 + x2, x1 * x3, x2 ** 3])


def _article_multi_builder(s: Setup) -> Built:
    xs = tuple(s.tensor(v) for v in (3.0, 4.0, 5.0))
    return Built(article_multi, xs, jacobian=lambda: tuple(article_jacobian(torch.stack(xs)).unbind(1)))


# --- the forum thread: y = w1 @ x, whose Jacobian is w1 ---------------------------------

def _linear_builder(s: Setup) -> Built:
    w1 = s.randn(2, 2, gen=s.generator())
    x = s.tensor([[1.0], [2.0]])
    return Built(lambda x: w1 @ x, (x,), jacobian=lambda: (w1[:, None, :, None].clone(),))


register(
    _problem("seed-powers", powers, powers_jacobian, _random(3),
             description="tutorial: [x0^2, x1^3, x2^4] with torch.stack, x ~ N(0, 1)"),
    _problem("seed-trig", trig, trig_jacobian, _random(3),
             description="tutorial: [sin x0, cos x1, exp x2] with torch.stack"),
    _problem("seed-article", article, article_jacobian, _fixed([3.0, 4.0, 5.0]),
             description="article: (x1+x2, x1*x3, x2^3) at (3,4,5); J = [[1,1,0],[5,0,3],[0,48,0]]"),
    Problem("seed-article-multi", "seed", "multi", n=3, m=3, builder=_article_multi_builder,
            sizes=(("inputs", 3), ("m", 3)), tags=frozenset({"seed", "multi-input"}), tier=0,
            description="article as f(x1, x2, x3) of three scalar tensors: one block per input",
            analytic=True),
    Problem("seed-linear", "seed", "vector", n=2, m=2, builder=_linear_builder,
            sizes=(("n", 2), ("m", 2)), tags=frozenset({"seed"}), tier=0, analytic=True,
            description="forum: y = w1 @ x for a 2x2 w1 and a 2x1 column x; J = w1"),
    Problem("seed-simplenn", "seed", "vector", n=2, m=2, builder=_simple_nn_builder,
            sizes=(("n", 2), ("hidden", 3), ("m", 2)), tags=frozenset({"seed", "network"}), tier=0,
            description="tutorial: SimpleNN 2 -> 3 -> 2 with ReLU at x = (1, 2)", analytic=True),
    _problem("seed-arm2", arm(ARM2), arm_jacobian(ARM2), _fixed([0.5, 0.5]),
             description="tutorial: 2-joint arm forward kinematics, lengths 1.0 and 0.8"),
    _problem("seed-arm3", arm(ARM3), arm_jacobian(ARM3), _fixed([0.5, 0.5, 0.5]), m=2,
             description="tutorial exercise: 3-joint arm, lengths 1.0, 0.8 and 0.6"),
    _problem("seed-newton", newton, newton_jacobian, _fixed([0.0, 0.0]),
             description="tutorial: Newton's method residuals at the initial guess (0, 0)"),
)

register(*(
    _problem(f"graph-break-{name}", fn, jac, point, family="graph-break", tags=("seed",), description=(
        f"{what}, written as the seed wrote it: torch.tensor([...]) cuts the autograd graph"))
    for name, fn, jac, point, what in [
        ("powers", powers_graph_break, powers_jacobian, _random(3), "tutorial [x0^2, x1^3, x2^4]"),
        ("trig", trig_graph_break, trig_jacobian, _random(3), "tutorial [sin x0, cos x1, exp x2]"),
        ("arm2", arm2_graph_break, arm_jacobian(ARM2), _fixed([0.5, 0.5]), "tutorial 2-joint arm"),
        ("newton", newton_graph_break, newton_jacobian, _fixed([0.0, 0.0]), "tutorial Newton residuals"),
    ]
))

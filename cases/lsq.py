"""Least squares: the residual Jacobian of a Levenberg-Marquardt fit, N parameters << M residuals.

``lsq-blobs-k{K}-grid{G}`` refines K two-dimensional Gaussian spots on a G x G image, as a
spot-fitting or PSF-photometry code does after detection: each spot has an amplitude, a
sub-pixel offset from the integer pixel it was detected at, and a log width. The input is
the flat parameter vector ``p = (a_k, du_k, dv_k, s_k)`` for k = 1..K (N = 4K) and the output
is the flat residual ``r = model(p) - data`` over the pixels (M = G^2), with

    model(u, v) = sum_k a_k exp(-((u - cx_k)^2 + (v - cy_k)^2) / (2 sigma_k^2)),
    cx_k = anchor_u_k + du_k,  cy_k = anchor_v_k + dv_k,  sigma_k = e^{s_k},

coordinates in pixels. The data are the model at true parameters plus noise, and the
Jacobian is taken at a perturbed iterate, as in the middle of a fit. The canonical size, 21
spots on a 24 x 24 cutout, is the 84-parameter, 576-residual problem users ask about.

Every parameter is O(1) and the model varies on a scale of a pixel or more (widths are a
quarter to a half of the mean spot spacing), as a well-scaled fit is set up; so finite
differences with their unit-scale step (NOTE: [Finite-difference step] in
``bench.strategies``) are judged on a fair problem. (With positions in units of the image
side and widths of 0.05, central differences miss the gate's tolerance: the step rule
assumes the function varies on a scale of one.)

NOTE: [Blob residual Jacobian]
    With ``e_kg = exp(-d_kg^2 / (2 sigma_k^2))`` and ``d_kg^2`` the squared distance of pixel
    g to centre k:
        dr_g/da_k  = e_kg
        dr_g/du_k  = a_k e_kg (u_g - cx_k) / sigma_k^2     (and likewise for v)
        dr_g/ds_k  = a_k e_kg d_kg^2 / sigma_k^2
    (d/ds of -d^2 e^{-2s} / 2 is d^2 e^{-2s}). Every residual depends on every parameter: a
    dense, tall M x N Jacobian.
"""

from __future__ import annotations

import torch

from .problem import Built, Problem, Setup
from .registry import register

SIZES = (  # (K blobs, G grid side, tier)
    (8, 16, 0),
    (21, 24, 1),
    (4, 12, 2),
    (64, 48, 2),
    (21, 96, 2),
    (64, 96, 2),
)
FLOPS_PER_TERM = 13  # two offsets, two differences, two squares, add, scale, exp, product, sum, ...


def _pixels(s: Setup, g: int):
    t = torch.arange(g, dtype=torch.float64)
    u, v = torch.meshgrid(t, t, indexing="ij")
    return s.cast(u.reshape(-1)), s.cast(v.reshape(-1))


def blobs(u, v, anchors, p):
    """The model image (flat, one value per pixel) and the pieces its Jacobian reuses."""
    a, du, dv, logs = p.reshape(-1, 4).unbind(1)
    inv_var = torch.exp(-2 * logs)  # 1 / sigma^2
    eu, ev = u[:, None] - (anchors[:, 0] + du), v[:, None] - (anchors[:, 1] + dv)  # (G^2, K)
    d2 = eu * eu + ev * ev
    e = torch.exp(-0.5 * d2 * inv_var)
    return (e * a).sum(1), (a, inv_var, eu, ev, d2, e)


def _problem(k: int, g: int, tier: int) -> Problem:
    def builder(s: Setup) -> Built:
        gen = s.generator()
        u, v = _pixels(s, g)
        anchors = torch.randint(1, g - 1, (k, 2), generator=gen).to(device=s.device, dtype=s.dtype)
        spacing = g / k ** 0.5
        true = torch.stack([
            s.uniform(k, gen=gen, low=0.5, high=1.5),                                     # amplitude
            s.uniform(k, gen=gen, low=-0.5, high=0.5),                                    # offset u
            s.uniform(k, gen=gen, low=-0.5, high=0.5),                                    # offset v
            torch.log(s.uniform(k, gen=gen, low=0.25 * spacing, high=0.5 * spacing)),     # log width
        ], dim=1).reshape(-1)
        data = blobs(u, v, anchors, true)[0] + s.randn(g * g, gen=gen, scale=0.01)
        # The iterate: a few per cent off in amplitude and width, a fifth of a pixel off centre.
        step = s.cast(torch.tensor([0.05, 0.2, 0.2, 0.05], dtype=torch.float64)).repeat(k)
        p = true + step * s.randn(4 * k, gen=gen)

        def residual(p):
            return blobs(u, v, anchors, p)[0] - data

        def jacobian():  # NOTE: [Blob residual Jacobian]
            _, (a, inv_var, eu, ev, d2, e) = blobs(u, v, anchors, p)
            ae = a * e * inv_var
            return (torch.stack([e, ae * eu, ae * ev, ae * d2], dim=2).reshape(g * g, 4 * k),)

        return Built(residual, (p,), jacobian=jacobian)

    return Problem(
        f"lsq-blobs-k{k}-grid{g}", "lsq", "vector", n=4 * k, m=g * g, builder=builder,
        sizes=(("blobs", k), ("grid", g), ("n", 4 * k), ("m", g * g)),
        tags=frozenset({"lsq"}), tier=tier, flops=FLOPS_PER_TERM * k * g * g + g * g, analytic=True,
        description=(f"Levenberg-Marquardt residuals: {k} Gaussian spots (amplitude, offset, width) "
                     f"fit to a {g}x{g} image, {4 * k} params -> {g * g} residuals"),
    )


register(*(_problem(*spec) for spec in SIZES))

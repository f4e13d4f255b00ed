"""The exponential integrators' shared kernels: DDIM's step, DPM-Solver's stages, the order of the final steps.

The exponential integrators (DDIM, DPM-Solver, DPM-Solver++, UniPC) integrate the probability-flow
ODE exactly in its linear part and approximate the model's output by a polynomial in the half
log-SNR lambda = log(alpha / sigma); for every linear SDE the same formulas hold, written through
alpha(t), sigma(t) and lambda(t).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from sdeflow.samplers.coefficients import GridCoefficients, weighted_sum


def ddim_step(x: torch.Tensor, x0: torch.Tensor, sched: GridCoefficients, i: int) -> torch.Tensor:
    """First-order data-prediction step from grid point i to i + 1: sigma_t/sigma_s x + alpha_t (1 - e^-h) x0."""
    num = sched.num
    return weighted_sum((num.sigma[i + 1] / num.sigma[i], x), (-num.alpha[i + 1] * math.expm1(-num.h[i]), x0))


class Stages(NamedTuple):
    """The coefficients of a DPM-Solver step from time s to t (lambda_t = lambda_s + h), for `dpm_solver_stages`.

    Either 0-d tensors (a step chosen on the fly) or, for a fixed grid, Python numbers with the
    stage times as tensors (`stage_table`): the same formulas then make no tensor operation for them.
    `coef` holds the (alpha, sigma) of s, s1 and s2 for the score function, or Nones.
    """

    s: torch.Tensor
    s1: torch.Tensor | None
    s2: torch.Tensor | None
    h: float
    a_s: float
    a_t: float
    s_t: float
    a_s1: float
    s_s1: float
    a_s2: float
    s_s2: float
    phi: float  # expm1(h)
    e1: float  # expm1(r1 h)
    e2: float  # expm1(r2 h)
    coef: tuple = (None, None, None)


# The intermediate points of DPM-Solver-2 and -3 as fractions of the step in lambda (Lu et al. 2022).
R1 = {1: 0.5, 2: 0.5, 3: 1 / 3}
R2 = 2 / 3


def stages(sde, s, t, lam_s, h, order: int, like: torch.Tensor) -> Stages:
    """The coefficients of a step from s to t as tensors; with 1-D s, t, lam_s and h, those of every step at once."""
    s1 = time_at_lambda(sde, lam_s + R1[order] * h, like)
    s2 = time_at_lambda(sde, lam_s + R2 * h, like) if order == 3 else s1
    return Stages(
        s,
        s1,
        s2,
        h,
        sde.alpha(s),
        sde.alpha(t),
        sde.sigma(t),
        sde.alpha(s1),
        sde.sigma(s1),
        sde.alpha(s2),
        sde.sigma(s2),
        torch.expm1(h),
        torch.expm1(R1[order] * h),
        torch.expm1(R2 * h),
    )


def stage_table(sde, sched: GridCoefficients, order: int) -> list[Stages]:
    """Every step's `Stages` on a fixed grid, as Python numbers (the stage times as tensors), computed once in
    float64."""
    t64, lam = sched.t.to(torch.float64), torch.tensor(sched.num.lam, dtype=torch.float64, device=sched.t.device)
    table = stages(sde, t64[:-1], t64[1:], lam[:-1], lam[1:] - lam[:-1], order, t64)
    dtype = sched.t.dtype
    s1, s2 = table.s1.to(dtype), table.s2.to(dtype)
    coef1 = zip(table.a_s1.to(dtype).unbind(), table.s_s1.to(dtype).unbind())
    coef2 = zip(table.a_s2.to(dtype).unbind(), table.s_s2.to(dtype).unbind())
    numbers = zip(*(v.tolist() for v in table[3:14]))
    return [
        Stages(sched.t[i], s1[i], s2[i], *nums, coef=(sched.coef[i], c1, c2))
        for i, (nums, c1, c2) in enumerate(zip(numbers, coef1, coef2))
    ]


def dpm_solver_stages(score, x, c: Stages, order: int) -> list[torch.Tensor]:
    """The solutions of DPM-Solver-1 to -`order` from x at time c.s across the step `c`, sharing evaluations.

    Lu et al. 2022, Algorithms 1 and 2: intermediate points at r1 = 1/2 (order 2) or r1 = 1/3,
    r2 = 2/3 (order 3). The last entry is the order-`order` solution; the one before it is the
    embedded lower-order solution that the adaptive solver compares it with. The scalars are grouped
    so that, as numbers, they cost no tensor operation.
    """
    phi, h = c.phi, c.h
    eps_s = score.eps(x, c.s, c.coef[0])
    out = [(c.a_t / c.a_s) * x - (c.s_t * phi) * eps_s]
    if order == 1:
        return out
    r1 = R1[order]
    u1 = (c.a_s1 / c.a_s) * x - (c.s_s1 * c.e1) * eps_s
    d1 = score.eps(u1, c.s1, c.coef[1]) - eps_s
    out.append(out[0] - (c.s_t / (2 * r1) * phi) * d1)
    if order == 2:
        return out
    u2 = (c.a_s2 / c.a_s) * x - (c.s_s2 * c.e2) * eps_s - (c.s_s2 * (R2 / r1) * (c.e2 / (R2 * h) - 1)) * d1
    d2 = score.eps(u2, c.s2, c.coef[2]) - eps_s
    out.append(out[0] - ((c.s_t / R2) * (phi / h - 1)) * d2)
    return out


def third_order_weights(a_t: float, H: float, r0: float, r1: float, reference: bool = False) -> tuple:
    """(c0, c1, c2) with a_t (phi_2 D1 - phi_3 D2) = c0 m0 + c1 m1 + c2 m2: the second- and third-order terms of a
    DPM-Solver++(3M) step, from the x0 predictions m0, m1, m2 at the last three grid points (newest first).

    The step is h in lambda, the two before it r0 h and r1 h; phi_k are taken at H, the step's exponent
    ((1 + eta) h for the SDE solver of noise scale eta, h on the ODE). With `reference`, D2 is the one of Lu et
    al.'s code, diffusers and k-diffusion: half the Taylor term's, which leaves the step second order.
    """
    # The step integrates x0(lambda_s + u) = m0 + u x0' + u^2 x0'' / 2 + O(u^3) against the kernel
    # a_t (1 + eta) e^{-(1 + eta)(h - u)}, u in [0, h]. Beyond m0's term, with phi_2 = expm1(-H) / H + 1 and
    # phi_3 = phi_2 / H - 1 / 2, that is
    #   x0':  a_t (H + expm1(-H)) / (1 + eta)           = a_t phi_2 h,
    #   x0'': a_t (H^2 / 2 - H - expm1(-H)) / (1 + eta)^2 = -a_t phi_3 h^2.
    # The one-sided differences d0 = (m0 - m1) / r0 = h x0' - r0 h^2 x0'' / 2 + O(h^3) and
    # d1 = (m1 - m2) / r1 = h x0' - (2 r0 + r1) h^2 x0'' / 2 + O(h^3) give
    #   D1 = d0 + r0 / (r0 + r1) (d0 - d1) = h x0' + O(h^3),
    #   D2 = 2 (d0 - d1) / (r0 + r1)        = h^2 x0'' + O(h^3).
    # The references take D2 = (d0 - d1) / (r0 + r1) = h^2 x0'' / 2: a local error O(h^3), so a global O(h^2).
    # D1 and D2 are combinations of m0, m1 and m2; their weights are folded here.
    phi_2 = math.expm1(-H) / H + 1
    k1, k2 = a_t * phi_2, -a_t * (phi_2 / H - 0.5)
    c = (1.0 if reference else 2.0) / (r0 + r1)
    w0 = k1 * (1 + r0 / (r0 + r1)) + k2 * c  # the weight of d0 in k1 D1 + k2 D2
    w1 = -k1 * r0 / (r0 + r1) - k2 * c  # the weight of d1
    return w0 / r0, -w0 / r0 + w1 / r1, -w1 / r1


def lower_order_final(order: int, i: int, n: int, second_until: int = 0) -> int:
    """The order of step i of n on a short grid (under 15 steps), whose long final lambda-steps make high orders
    unsteady.

    At most the number of steps left (UniPC's rule); with `second_until` = k, also at most second
    order over the last k steps (DPM-Solver++'s: ..., 3, 2, 2, 1 for 3M). Grids of 15 steps or more
    keep `order`.
    """
    if n >= 15:
        return order
    order = min(order, n - i)
    return min(order, 2) if n - i <= second_until else order


def time_at_lambda(sde, lam: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The SDE time with log-SNR `lam`, in `like`'s dtype (for intermediate stages)."""
    return sde.t_from_lambda(lam.to(torch.float64)).to(like.dtype)

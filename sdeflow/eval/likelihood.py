"""Log-likelihoods through the probability-flow ODE with the Hutchinson-Skilling trace estimator
(Song et al. 2021, App. D.2).

log p_eps(x) = log p_T(x_T) + integral from eps to T of div f~(x_t, t) dt, where f~ is the
probability-flow drift and (x_t, the integral) solve one augmented ODE with torchdiffeq, batched,
with no host round-trip per step beyond the solver's own step-size control.
"""

from __future__ import annotations

import math

import torch

from sdeflow.samplers.base import SolverError
from sdeflow.samplers.solvers.ode import pinned_options
from sdeflow.score.function import ScoreFunction


def log_likelihood(
    score,
    sde,
    x: torch.Tensor,
    probes: int = 1,
    noise: str = "rademacher",
    eps: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    generator: torch.Generator | None = None,
    return_code: bool = False,
):
    """(log p_eps(x) per sample, NFE) by integrating the probability-flow ODE from eps to T.

    Args:
        score: a `sdeflow.ScoreFunction` or a callable score(x, t).
        probes: Hutchinson probe vectors per sample, fixed along the path (averaged).
        noise: "rademacher" or "gaussian" probes.
        eps: start time (default sde.eps; must be > 0 where sigma(0) = 0).
        return_code: also return z, the ODE's solution at T (the code `sdeflow.encode` computes).
    """
    import torchdiffeq  # imported where it is used: it brings scipy.integrate with it

    if noise not in ("rademacher", "gaussian"):
        raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {noise!r}")
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    score = score if isinstance(score, ScoreFunction) else ScoreFunction(score, sde)
    eps = sde.eps if eps is None else float(eps)
    if not 0 <= eps < sde.T or float(sde.sigma(torch.tensor(eps, dtype=torch.float64))) <= 0:
        raise ValueError(f"eps must lie in [0, T) with sigma(eps) > 0, got {eps}")
    n = len(x)
    shape = (probes, *x.shape)
    v = torch.randn(shape, generator=generator, dtype=x.dtype).to(x.device)
    if noise == "rademacher":
        v = v.sign()
    rsde = sde.reverse(score, probability_flow=True)
    nfe0 = score.nfe

    def dynamics(t, state):
        y = state[: x.numel()].reshape(x.shape)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            drift = rsde.sde(y, t)[0]
            div = torch.zeros(n, dtype=x.dtype, device=x.device)
            for p in range(probes):
                (grad,) = torch.autograd.grad(drift, y, v[p], retain_graph=p < probes - 1)
                div = div + (grad * v[p]).flatten(1).sum(1)
        return torch.cat([drift.detach().flatten(), div / probes])

    state0 = torch.cat([x.flatten(), torch.zeros(n, dtype=x.dtype, device=x.device)])
    times = torch.tensor([eps, sde.T], dtype=x.dtype, device=x.device)
    try:
        out = torchdiffeq.odeint(
            dynamics, state0, times, rtol=rtol, atol=atol, method=method, options=pinned_options(method, times[-1])
        )[-1]
    except AssertionError as e:
        raise SolverError(f"the likelihood ODE failed in torchdiffeq's {method} ({e}); try looser rtol/atol") from e
    z = out[: x.numel()].reshape(x.shape)
    delta = out[x.numel() :]
    logp, nfe = sde.prior_logp(z) + delta, score.nfe - nfe0
    return (logp, nfe, z) if return_code else (logp, nfe)


def bits_per_dim(logp: torch.Tensor, dim: int, bits: int = 8, centered: bool = True) -> torch.Tensor:
    """Bits per dimension of dequantised `bits`-bit data from log-densities of the scaled data.

    With K = 2^bits levels, data scaled by y = 2 v / K - 1 (centered) or y = v / K from v in [0, K):
    bpd = -log p(y) / (d ln 2) + bits - log2(scale), scale = 2 or 1.
    """
    scale = 2.0 if centered else 1.0
    return -logp / (dim * math.log(2)) + bits - math.log2(scale)

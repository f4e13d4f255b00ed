"""The forward SDE: what every linear noising process shares.

Every SDE here is linear, dx = f(t) x dt + g(t) dW, so its marginal is Gaussian,
x_t = alpha(t) x_0 + sigma(t) z. Subclasses give the four scalar functions f, g^2,
log alpha, sigma (and the inverse of the log-SNR); everything else is derived here once,
so no sampler needs to know which SDE it runs on.
"""

from __future__ import annotations

import abc
import math

import torch

from sdeflow.core.checks import integer
from sdeflow.core.tensors import append_dims, batch_times


class SDE(abc.ABC):
    """A linear forward SDE on [0, T], with the vocabulary of Song et al. (2021)'s score_sde.

    Args:
        T: end time of the forward process.
        eps: smallest time the reverse process is integrated to; scores are never evaluated below it.
        N: number of discretisation steps of the reference discretisation (`discretize`'s default step 1/N).
    """

    def __init__(self, T: float = 1.0, eps: float = 1e-3, N: int = 1000):
        if not T > 0:
            raise ValueError(f"T must be positive, got {T}")
        if not 0 <= eps < T:
            raise ValueError(f"eps must lie in [0, T) = [0, {T}), got {eps}")
        integer("N", N)
        self.T = float(T)
        self.eps = float(eps)
        self.N = int(N)

    # --- The four scalar functions that define a linear SDE -------------------------------
    @abc.abstractmethod
    def f(self, t: torch.Tensor) -> torch.Tensor:
        """Drift coefficient: the drift is f(t) x."""

    @abc.abstractmethod
    def g2(self, t: torch.Tensor) -> torch.Tensor:
        """Squared diffusion coefficient g(t)^2."""

    @abc.abstractmethod
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Log of the marginal scale alpha(t) = E[x_t | x_0] / x_0."""

    @abc.abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Marginal standard deviation sigma(t) of x_t given x_0."""

    @abc.abstractmethod
    def t_from_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        """Inverse of the log-SNR: the time t with lambda(t) = lam."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, prior_std^2 I) that sampling starts from."""

    # --- Derived quantities ------------------------------------------------------------------
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Marginal scale alpha(t)."""
        return torch.exp(self.log_alpha(t))

    def lambda_(self, t: torch.Tensor) -> torch.Tensor:
        """Half log-SNR, lambda(t) = log(alpha(t) / sigma(t)), decreasing in t (DPM-Solver's lambda)."""
        return self.log_alpha(t) - torch.log(self.sigma(t))

    def nsr(self, t: torch.Tensor) -> torch.Tensor:
        """Noise-to-signal ratio sigma(t) / alpha(t) = exp(-lambda(t)): EDM's sigma, in which x / alpha solves
        dx~/dsigma~ = eps."""
        return self.sigma(t) / self.alpha(t)

    def t_from_nsr(self, ratio: torch.Tensor) -> torch.Tensor:
        """Inverse of `nsr`: the time t with sigma(t) / alpha(t) = ratio."""
        return self.t_from_lambda(-torch.log(ratio))

    def __eq__(self, other) -> bool:
        # Two SDEs are the same process when they are of one class with equal parameters.
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def sde(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(t) x and diffusion g(t) of the forward SDE; the diffusion is per sample."""
        t = batch_times(t, x)
        return append_dims(self.f(t), x.ndim) * x, torch.sqrt(self.g2(t))

    def marginal_prob(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean alpha(t) x_0 and per-sample std sigma(t) of p_{0t}(x_t | x_0)."""
        t = batch_times(t, x)
        return append_dims(self.alpha(t), x.ndim) * x, self.sigma(t)

    def prior_sampling(self, shape, generator=None, dtype=torch.float32, device=None) -> torch.Tensor:
        """Draw from the prior p_T; `generator` is a torch.Generator or a `sdeflow.PerSampleNoise`."""
        from sdeflow.noise.generators import as_noise

        return as_noise(generator).randn(tuple(shape), dtype=dtype, device=device) * self.prior_std

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """Log density of the prior at z, one value per sample."""
        d = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - z.flatten(1).pow(2).sum(1) / (2 * s2)

    def discretize(self, x: torch.Tensor, t, dt=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step x_{t+dt} = x_t + f + G z of the forward process; Euler-Maruyama unless overridden.

        `dt` is the real (positive) step length; it defaults to the reference's 1/N of T.
        """
        dt = self.T / self.N if dt is None else dt
        drift, diffusion = self.sde(x, t)
        dt = batch_times(dt, x)
        return drift * append_dims(dt, x.ndim), diffusion * torch.sqrt(dt)

    def reverse(self, score_fn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (or its probability-flow ODE) driven by `score_fn(x, t)`."""
        return ReverseSDE(self, score_fn, probability_flow)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class ReverseSDE:
    """dx = [f x - c g^2 score] dt + g' dW run backwards in time; c = 1, g' = g, or c = 1/2, g' = 0
    (probability flow)."""

    def __init__(self, sde: SDE, score_fn, probability_flow: bool = False):
        self.forward = sde
        self.score_fn = score_fn
        self.probability_flow = bool(probability_flow)
        self.T, self.eps, self.N = sde.T, sde.eps, sde.N
        self._c = 0.5 if self.probability_flow else 1.0

    def sde(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and diffusion of the reverse process at time t (to be integrated with dt < 0)."""
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        drift = drift - append_dims(diffusion**2, x.ndim) * score * self._c
        return drift, diffusion * (0.0 if self.probability_flow else 1.0)

    def discretize(self, x: torch.Tensor, t, dt=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reverse step x_{t-dt} = x_t - rev_f + rev_G z built from the forward discretisation."""
        f, G = self.forward.discretize(x, t, dt)
        rev_f = f - append_dims(G**2, x.ndim) * self.score_fn(x, t) * self._c
        return rev_f, G * (0.0 if self.probability_flow else 1.0)

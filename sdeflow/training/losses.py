"""Denoising score matching in continuous time (Song et al. 2021, eq. 7) and its discrete forms.

The per-sample loss is w(t) || s_theta(x_t, t) + z / sigma(t) ||^2 with x_t = alpha x_0 + sigma z,
for a model read through any parameterisation; w = sigma^2 (default) gives || sigma s + z ||^2,
the noise-prediction loss of DDPM when the model predicts eps.
"""

from __future__ import annotations

import torch

from sdeflow.core.checks import integer
from sdeflow.core.tensors import append_dims, to_device
from sdeflow.noise.generators import as_noise
from sdeflow.score.function import ScoreFunction


class SigmaSquared:
    """w(t) = sigma(t)^2: the reference's default weighting."""

    def weight(self, sde, t):
        return sde.sigma(t) ** 2


class LikelihoodWeighting:
    """w(t) = g(t)^2: the weighting that bounds the negative log-likelihood (Song et al. 2021b)."""

    def weight(self, sde, t):
        return sde.g2(t)


class DSMLoss:
    """Continuous-time denoising score matching.

    Args:
        sde: the forward SDE.
        prediction: the model's parameterisation (a `sdeflow.Prediction`; default: the score).
        weighting: `SigmaSquared()` (default) or `LikelihoodWeighting()`.
        importance_sampling: draw t from q(t) proportional to g^2 / sigma^2 and reweight, which
            lowers the variance of the likelihood-weighted loss (Song et al. 2021b, Sec. 5).
        reduce_mean: average over data dimensions (else sum).
        t_min: smallest training time (default: the SDE's eps, or 1e-5 if that is 0).
        discrete_steps: draw t from the N-point grid T i / N, i = 1..N (the discrete DDPM / SMLD losses).
        label_dropout: for class-conditional models, the share of labels replaced by the null class -1
            (EDM's label_dropout), drawn from the loss's own noise source; it trains the unconditional
            branch that classifier-free guidance needs.
    """

    def __init__(
        self,
        sde,
        prediction=None,
        weighting=None,
        importance_sampling: bool = False,
        reduce_mean: bool = True,
        t_min: float | None = None,
        discrete_steps: int | None = None,
        label_dropout: float = 0.0,
    ):
        if not 0 <= label_dropout < 1:
            raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout}")
        self.label_dropout = float(label_dropout)
        self.sde = sde
        self.prediction = prediction
        self.weighting = weighting if weighting is not None else SigmaSquared()
        self.t_min = float(t_min) if t_min is not None else (sde.eps if sde.eps > 0 else 1e-5)
        if not 0 < self.t_min < sde.T:
            raise ValueError(f"t_min must lie in (0, T), got {self.t_min}")
        if discrete_steps is not None:
            integer("discrete_steps", discrete_steps)
        if importance_sampling and discrete_steps is not None:
            raise ValueError("importance sampling and discrete steps do not combine")
        self.importance_sampling, self.reduce_mean, self.discrete_steps = (
            bool(importance_sampling),
            bool(reduce_mean),
            discrete_steps,
        )
        if self.importance_sampling:
            # Inverse-CDF table of q(t) ~ g^2 / sigma^2 on a fine grid.
            grid = torch.linspace(self.t_min, sde.T, 10_001, dtype=torch.float64)
            density = sde.g2(grid) / sde.sigma(grid) ** 2
            cdf = torch.cat(
                [
                    torch.zeros(1, dtype=torch.float64),
                    torch.cumsum((density[1:] + density[:-1]) / 2 * torch.diff(grid), 0),
                ]
            )
            self._grid, self._cdf, self._Z = grid, cdf / cdf[-1], float(cdf[-1])

    def sample_t(self, n: int, generator=None, device=None) -> torch.Tensor:
        """n training times; `generator` is a torch.Generator or a noise source (e.g. `PerSampleNoise`)."""
        noise = as_noise(generator)
        u = noise.rand((n,), dtype=torch.float64)
        if self.discrete_steps is not None:
            i = noise.randint(1, self.discrete_steps + 1, (n,))
            t = (self.sde.T * i.double() / self.discrete_steps).clamp_min(self.t_min)
        elif self.importance_sampling:
            k = torch.searchsorted(self._cdf, u).clamp(1, len(self._cdf) - 1)
            c0, c1 = self._cdf[k - 1], self._cdf[k]
            t = self._grid[k - 1] + (u - c0) / (c1 - c0).clamp_min(1e-300) * (self._grid[k] - self._grid[k - 1])
        else:
            t = self.t_min + u * (self.sde.T - self.t_min)
        return to_device(t, device)

    def __call__(self, model, x0: torch.Tensor, generator=None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The mean loss over the batch; the noise and times come from `generator` (a torch.Generator or noise source).

        `labels`: the samples' classes, for a class-conditional model (passed to it as `y`, after label dropout).
        """
        noise = as_noise(generator)
        t = self.sample_t(len(x0), noise, x0.device).to(x0.dtype)
        z = noise.randn(x0.shape, dtype=x0.dtype, device=x0.device)
        mean, std = self.sde.marginal_prob(x0, t)
        x_t = mean + append_dims(std, x0.ndim) * z
        cond = {}
        if labels is not None:
            labels = labels.to(x0.device)
            if self.label_dropout > 0:
                drop = noise.rand((len(x0),), dtype=torch.float64).to(x0.device) < self.label_dropout
                labels = torch.where(drop, torch.full_like(labels, -1), labels)
            cond["y"] = labels
        score = ScoreFunction(model, self.sde, self.prediction, **cond).score(x_t, t)
        sq = (score + z / append_dims(std, x0.ndim)).flatten(1).pow(2)
        per_sample = sq.mean(1) if self.reduce_mean else sq.sum(1)
        if self.importance_sampling:
            # E_q[(g^2 / q) ||.||^2] with q = (g^2 / sigma^2) / Z equals Z E_q[sigma^2 ||.||^2].
            weight = self._Z * std**2
        else:
            weight = self.weighting.weight(self.sde, t)
        return (weight * per_sample).mean()

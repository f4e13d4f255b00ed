"""Exact answers for conditional generation on Gaussian mixtures: class labels, guidance, and posteriors.

- `LabelledMixture`: a mixture whose components carry class labels. p_t(y | x), the conditional
  score grad log p_t(x | y), and the classifier-free guided score (1 + w) s(x | y) - w s(x) are all
  closed-form, at every time and under every linear SDE.
- `observed_posterior`: the posterior given noisy observations of some coordinates, y = x_S + n. For
  diagonal components it is again a diagonal mixture, with re-weighted components.
- `linear_posterior`: the posterior given y = A x + n for any matrix A: a mixture of Gaussians with
  full covariances (the test bed's extension), which `FullMixture` samples exactly.
"""

from __future__ import annotations

import math

import torch

from sdeflow.core.tensors import batch_times
from sdeflow.problems.gmm import GaussianMixture, _Identity


class LabelledMixture:
    """p(x, y) = sum over the components k of class y of w_k N(x; mu_k, diag(s_k^2)).

    Args:
        mixture: the joint's marginal p(x), a `GaussianMixture`.
        labels: (K,) the class of each component (0 .. classes - 1; every class has a component).
    """

    def __init__(self, mixture: GaussianMixture, labels):
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != mixture.weights.shape:
            raise ValueError(f"need one label per component ({len(mixture.weights)}), got shape {tuple(labels.shape)}")
        self.classes = int(labels.max()) + 1
        if labels.min() < 0 or len(torch.unique(labels)) != self.classes:
            raise ValueError(f"labels must cover 0 .. {self.classes - 1} with no gap, got {labels.tolist()}")
        self.mixture, self.labels, self.dim = mixture, labels, mixture.dim

    @property
    def class_prior(self) -> torch.Tensor:
        """p(y), (classes,)."""
        return torch.zeros(self.classes, dtype=torch.float64).index_add_(0, self.labels, self.mixture.weights)

    def class_mixture(self, y: int) -> GaussianMixture:
        """p(x | y) as a mixture of the class's components."""
        keep = self.labels == int(y)
        m = self.mixture
        return GaussianMixture(m.weights[keep], m.means[keep], m.stds[keep])

    def _logits(self, x, t, sde):
        return self.mixture._component_logp(sde or _Identity(), x, t)

    def log_p_y(self, x: torch.Tensor, t, sde) -> torch.Tensor:
        """log p_t(y | x) for every class, (B, classes), float64; differentiable in x (a noise-aware classifier)."""
        logp, _ = self._logits(x, t, sde)
        onehot = torch.nn.functional.one_hot(self.labels, self.classes).to(logp)
        # logsumexp over each class's components, less log p_t(x).
        per_class = torch.logsumexp(logp[:, :, None] + torch.log(onehot)[None], dim=1)
        return per_class - torch.logsumexp(logp, dim=1, keepdim=True)

    def score(self, x: torch.Tensor, t, sde, y=None) -> torch.Tensor:
        """grad_x log p_t(x | y) per sample (y: (B,) labels; None or -1: the unconditional score), in x's dtype."""
        logp, score_given = self._logits(x, t, sde)
        if y is not None:
            y = torch.as_tensor(y, device=x.device).reshape(-1).expand(len(x))
            keep = (self.labels.to(x.device)[None, :] == y[:, None]) | (y[:, None] < 0)
            logp = logp.masked_fill(~keep, -math.inf)
        return score_given(torch.softmax(logp, dim=1)).reshape(x.shape).to(x.dtype)

    def guided_score(self, x: torch.Tensor, t, sde, y, w: float) -> torch.Tensor:
        """Classifier-free guidance's score (1 + w) grad log p_t(x | y) - w grad log p_t(x), exactly."""
        return (1 + w) * self.score(x, t, sde, y) - w * self.score(x, t, sde)

    def model(self, sde) -> "_LabelledScore":
        """`model(x, t, y=None)`: the exact conditional score; label -1 (or None) is the unconditional one,
        as a network trained with label dropout reads its null label."""
        return _LabelledScore(self, sde)

    def classifier(self, sde) -> "_Classifier":
        """`classifier(x, t) -> log p_t(y | x)`, (B, classes): the exact noise-aware classifier."""
        return _Classifier(self, sde)

    def sample(self, n: int, y: int, generator: torch.Generator | None = None, t=0.0, sde=None) -> torch.Tensor:
        """n exact samples of p_t(x | y)."""
        return self.class_mixture(y).sample(n, generator, t=t, sde=sde)

    def guided_ode_reference(
        self, sde, x_T: torch.Tensor, y, w: float, t_end=None, rtol: float = 1e-10, atol: float = 1e-10
    ):
        """The guided probability-flow ODE's solution from x_T (dopri8, float64): the truth guided solvers are scored
        on."""
        from sdeflow.samplers.solvers.ode import ProbabilityFlowODE
        from sdeflow.score.function import ScoreFunction

        t_end = sde.eps if t_end is None else t_end
        guided = ScoreFunction(lambda x, t: self.guided_score(x, t, sde, y, w), sde)
        grid = torch.tensor([sde.T, t_end], dtype=torch.float64)
        return (
            ProbabilityFlowODE("dopri8", rtol=rtol, atol=atol).sample(guided, sde, x_T.to(torch.float64), grid).samples
        )

    def __repr__(self) -> str:
        return f"LabelledMixture({self.mixture!r}, classes={self.classes})"


class _LabelledScore:
    def __init__(self, problem: LabelledMixture, sde):
        self.problem, self.sde = problem, sde

    def __call__(self, x, t, y=None):
        return self.problem.score(x, t, self.sde, y)


class _Classifier:
    def __init__(self, problem: LabelledMixture, sde):
        self.problem, self.sde = problem, sde

    def __call__(self, x, t):
        return self.problem.log_p_y(x, batch_times(t, x), self.sde)


def observed_posterior(mixture: GaussianMixture, index, y: torch.Tensor, noise_std: float) -> GaussianMixture:
    """p(x | y) for y = x[index] + N(0, noise_std^2), one observation y: a diagonal mixture over all d coordinates.

    Per component, the observed coordinates combine prior and observation by precision, the others keep
    their prior, and the weights become w_k N(y; mu_k[index], s_k[index]^2 + noise_std^2).
    """
    if not noise_std > 0:
        raise ValueError(f"noise_std must be positive (a noiseless observation has no density), got {noise_std}")
    index = torch.as_tensor(index, dtype=torch.int64)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    mu, var = mixture.means[:, index], mixture.stds[:, index] ** 2
    n2 = noise_std**2
    logw = torch.log(mixture.weights) - 0.5 * (((y - mu) ** 2) / (var + n2) + torch.log(2 * math.pi * (var + n2))).sum(
        1
    )
    means, stds = mixture.means.clone(), mixture.stds.clone()
    post_var = 1 / (1 / var + 1 / n2)
    means[:, index] = post_var * (mu / var + y / n2)
    stds[:, index] = post_var.sqrt()
    return GaussianMixture(torch.softmax(logw, 0), means, stds)


class FullMixture:
    """sum_k w_k N(mu_k, C_k) with full covariances: exact samples and moments."""

    def __init__(self, weights, means, covs):
        self.weights, self.means, self.covs = (torch.as_tensor(v, dtype=torch.float64) for v in (weights, means, covs))
        self.dim = self.means.shape[1]
        self._chol = torch.linalg.cholesky(self.covs)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + (self._chol[k] @ z[:, :, None])[:, :, 0]

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)


def linear_posterior(mixture: GaussianMixture, A: torch.Tensor, y: torch.Tensor, noise_std: float) -> FullMixture:
    """p(x | y) for y = A x + N(0, noise_std^2 I), one observation y, any (m, d) matrix A.

    Per component, Gaussian conditioning: C = (D^-1 + A^T A / s^2)^-1, mu = C (D^-1 mu_k + A^T y / s^2),
    weight w_k N(y; A mu_k, A D A^T + s^2 I), with D = diag(s_k^2).
    """
    if not noise_std > 0:
        raise ValueError(f"noise_std must be positive, got {noise_std}")
    A, y = torch.as_tensor(A, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    n2 = noise_std**2
    weights, means, covs = [], [], []
    for w, mu, s in zip(mixture.weights, mixture.means, mixture.stds):
        D = torch.diag(s**2)
        S = A @ D @ A.T + n2 * torch.eye(len(y), dtype=torch.float64)
        r = y - A @ mu
        weights.append(torch.log(w) - 0.5 * (r @ torch.linalg.solve(S, r) + torch.logdet(2 * math.pi * S)))
        C = torch.linalg.inv(torch.diag(1 / s**2) + A.T @ A / n2)
        means.append(C @ (mu / s**2 + A.T @ y / n2))
        covs.append(0.5 * (C + C.T))
    return FullMixture(torch.softmax(torch.stack(weights), 0), torch.stack(means), torch.stack(covs))

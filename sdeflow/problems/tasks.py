"""Conditional benchmark problems: the exact guided ODE and exact posteriors, behind `sdeflow-bench`'s interface.

A benchmark problem gives `dim`, `score_fn(sde)`, `ode_reference(sde, x_T, ...)` (the exact
probability-flow solution, or None where there is none to score trajectories against) and
`sample(n, generator, t, sde)` (exact samples of what the samplers should produce, or None). An
inverse problem also gives the `operator`, the `observation(n)` and its `noise_std`, which the
`inverse` method of the run binds to.
"""

from __future__ import annotations

import torch

from sdeflow.conditioning.inverse.operators import Inpainting
from sdeflow.problems.conditional import LabelledMixture, observed_posterior
from sdeflow.problems.gmm import GaussianMixture


class GuidedProblem:
    """Classifier-free guidance at weight w on a labelled mixture; sample i has class i mod classes.

    Trajectories are scored against the exact guided probability-flow ODE. Exact samples exist only at
    w = 0 (each class's mixture): the law of the guided SDE at w != 0 has no closed form, so
    stochastic solvers are scored at w = 0 only.
    """

    def __init__(self, problem: LabelledMixture, w: float):
        self.problem, self.w, self.dim = problem, float(w), problem.dim

    @classmethod
    def random(
        cls, w: float, dim: int = 16, components: int = 8, classes: int = 4, std_range=(0.05, 0.2), seed: int = 0
    ) -> "GuidedProblem":
        """`GaussianMixture.random`'s components dealt to `classes` classes in turn (component k: class k % classes)."""
        if not 1 <= classes <= components:
            raise ValueError(f"need 1 <= classes <= components, got classes={classes}, components={components}")
        mixture = GaussianMixture.random(dim, components, std_range, seed)
        return cls(LabelledMixture(mixture, torch.arange(components) % classes), w)

    def labels(self, n: int) -> torch.Tensor:
        return torch.arange(n) % self.problem.classes

    def score_fn(self, sde):
        def guided(x, t):
            return self.problem.guided_score(x, t, sde, self.labels(len(x)).to(x.device), self.w)

        return guided

    def ode_reference(
        self, sde, x_T: torch.Tensor, t_end=None, rtol: float = 1e-10, atol: float = 1e-10, method: str = "dopri8"
    ):
        if method != "dopri8":
            raise ValueError(f"the guided reference is solved with dopri8, got method={method!r}")
        return self.problem.guided_ode_reference(sde, x_T, self.labels(len(x_T)), self.w, t_end, rtol, atol)

    def sample(self, n: int, generator=None, t=0.0, sde=None):
        if self.w != 0:
            return None
        labels = self.labels(n)
        out = torch.empty(n, self.dim, dtype=torch.float64)
        for c in range(self.problem.classes):
            where = labels == c
            out[where] = self.problem.sample(int(where.sum()), c, generator, t=t, sde=sde)
        return out

    def __repr__(self) -> str:
        return f"GuidedProblem(w={self.w:g}, {self.problem!r})"


class InpaintingProblem:
    """A mixture observed on some coordinates, y = x[observed] + N(0, noise_std^2); truth: `observed_posterior`.

    The samplers get the prior's exact score and the run's inverse method; every row is scored by its
    distance to exact posterior samples (there is no posterior ODE to follow: the methods' dynamics
    are their own).
    """

    def __init__(self, mixture: GaussianMixture, observed, y, noise_std: float):
        self.mixture, self.dim, self.noise_std = mixture, mixture.dim, float(noise_std)
        self.observed = torch.as_tensor(observed, dtype=torch.int64)
        self.y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if len(self.y) != len(self.observed):
            raise ValueError(f"{len(self.observed)} observed coordinates but {len(self.y)} observed values")
        self.posterior = observed_posterior(mixture, self.observed, self.y, noise_std)
        mask = torch.zeros(self.dim, dtype=torch.float64)
        mask[self.observed] = 1
        self.operator = Inpainting(mask)

    @classmethod
    def bimodal(
        cls,
        dim: int = 16,
        components: int = 4,
        std: float = 0.15,
        noise_std: float = 0.1,
        shift: float = 0.05,
        seed: int = 0,
    ) -> "InpaintingProblem":
        """Components with means in [-1, 1]^dim, the first two equal on the two observed coordinates, which are
        observed near them (`shift` away): the posterior is bimodal in the unobserved coordinates."""
        if components < 2 or dim < 3:
            raise ValueError(f"need components >= 2 and dim >= 3, got {components}, {dim}")
        g = torch.Generator().manual_seed(seed)
        means = torch.rand(components, dim, generator=g, dtype=torch.float64) * 2 - 1
        means[1, :2] = means[0, :2]
        mixture = GaussianMixture(torch.ones(components), means, torch.full((components,), std, dtype=torch.float64))
        return cls(mixture, [0, 1], means[0, :2] + shift, noise_std)

    def observation(self, n: int) -> torch.Tensor:
        """y for n samples, in the operator's layout (zeros off the observed coordinates)."""
        y = torch.zeros(n, self.dim, dtype=torch.float64)
        y[:, self.observed] = self.y
        return y

    def score_fn(self, sde):
        return self.mixture.score_fn(sde)

    def ode_reference(self, sde, x_T, **reference):
        return None

    def sample(self, n: int, generator=None, t=0.0, sde=None):
        return self.posterior.sample(n, generator, t=t, sde=sde)

    def __repr__(self) -> str:
        return f"InpaintingProblem(observed={self.observed.tolist()}, noise_std={self.noise_std:g}, {self.mixture!r})"

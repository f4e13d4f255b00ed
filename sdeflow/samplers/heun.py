"""EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1), for any linear SDE."""

from __future__ import annotations

from sdeflow.samplers.base import Sampler


def scaled(sde, t):
    """EDM's variables: sigma~ = sigma / alpha and the scale alpha; x~ = x / alpha solves dx~/dsigma~ = eps."""
    return sde.sigma(t) / sde.alpha(t), sde.alpha(t)


class EDMHeun(Sampler):
    """Heun's method on dx~/dsigma~ = eps(x, t) in EDM's scaled variables x~ = x / alpha, sigma~ = sigma / alpha.

    Probability-flow ODE, order 2, 2 score evaluations per step. EDM's last step is Euler because it
    ends at sigma = 0; here every grid ends at eps > 0, so every step is a full Heun step.
    """

    order = 2
    nfe_per_step = 2
    stochastic = False

    def heun(self, score, sde, x, t, t_next):
        """One Heun step in scaled variables from t to t_next; x is in the SDE's own variables."""
        sig, a = scaled(sde, t)
        sig_n, a_n = scaled(sde, t_next)
        d = score.eps(x, t)
        y_euler = x / a + (sig_n - sig) * d
        d_next = score.eps(a_n * y_euler, t_next)
        return a_n * (x / a + (sig_n - sig) * 0.5 * (d + d_next))

    def solve(self, score, sde, x, timesteps, noise, record):
        for i in range(len(timesteps) - 1):
            x = self.heun(score, sde, x, timesteps[i], timesteps[i + 1])
            record(x)
        return x

"""EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1), for any linear SDE."""

from __future__ import annotations

from sdeflow.samplers.base import Sampler


class EDMHeun(Sampler):
    """Heun's method on dx~/dsigma~ = eps(x, t) in EDM's scaled variables x~ = x / alpha, sigma~ = sigma / alpha.

    Probability-flow ODE, order 2, 2 score evaluations per step. EDM's last step is Euler because it
    ends at sigma = 0; here every grid ends at eps > 0, so every step is a full Heun step.
    """

    order = 2
    nfe_per_step = 2
    stochastic = False

    def heun(self, score, sde, x, t, t_next):
        """One Heun step in scaled variables from t to t_next (either may lie off the grid); x is in the SDE's own variables."""
        sig, a = sde.nsr(t), sde.alpha(t)
        sig_n, a_n = sde.nsr(t_next), sde.alpha(t_next)
        d = score.eps(x, t)
        y_euler = x / a + (sig_n - sig) * d
        d_next = score.eps(a_n * y_euler, t_next)
        return a_n * (x / a + (sig_n - sig) * 0.5 * (d + d_next))

    def step(self, score, sde, x, i, state, noise):
        return self.heun(score, sde, x, state.sched.t[i], state.sched.t[i + 1]), state

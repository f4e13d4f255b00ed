"""EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1), for any linear SDE."""

from __future__ import annotations

from sdeflow.samplers.base import Sampler

__all__ = ["EDMHeun"]


class EDMHeun(Sampler):
    """Heun's method on dx~/dsigma~ = eps(x, t) in EDM's scaled variables x~ = x / alpha, sigma~ = sigma / alpha.

    Probability-flow ODE, order 2, 2 score evaluations per step. EDM's last step is Euler because it
    ends at sigma = 0; here every grid ends at eps > 0, so every step is a full Heun step.
    """

    order = 2
    nfe_per_step = 2
    stochastic = False

    def heun(self, score, sde, x, t, t_next, at=None, at_next=None):
        """One Heun step in scaled variables from t to t_next; x is in the SDE's own variables.

        Either time may lie off the grid. `at`, `at_next`: (sigma~, alpha, coef) of t and t_next when
        they are known as numbers (a grid point: `grid_point`), which saves computing them with tensor
        operations; `coef` is the (alpha, sigma) pair for the score function, or None.
        """
        sig, a, coef = at if at is not None else (sde.nsr(t), sde.alpha(t), None)
        sig_n, a_n, coef_n = at_next if at_next is not None else (sde.nsr(t_next), sde.alpha(t_next), None)
        # The scalars are grouped so that, as numbers, they cost no tensor operation.
        step = sig_n - sig
        d = score.eps(x, t, coef)
        d_next = score.eps(a_n * (x / a + step * d), t_next, coef_n)
        return (a_n / a) * x + (0.5 * a_n * step) * (d + d_next)

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        return self.heun(
            score, sde, x, sched.t[i], sched.t[i + 1], grid_point(sched, i), grid_point(sched, i + 1)
        ), state


def grid_point(sched, i: int) -> tuple:
    """(sigma~, alpha, coef) of grid point i as the schedule holds them: the `at` of `EDMHeun.heun`."""
    return sched.num.nsr[i], sched.num.alpha[i], sched.coef[i]

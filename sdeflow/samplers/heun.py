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

    def heun(self, score, sde, x, t, t_next, sched=None, i: int | None = None):
        """One Heun step in scaled variables from t to t_next; x is in the SDE's own variables.

        Either time may lie off the grid. When they are grid points i and i + 1 of `sched`, give both:
        their coefficients are then read from the schedule as numbers, not computed with tensor operations.
        """
        if sched is None:
            (sig, a), (sig_n, a_n), coef = (sde.nsr(t), sde.alpha(t)), (sde.nsr(t_next), sde.alpha(t_next)), (None, None)
        else:
            num = sched.num
            (sig, a), (sig_n, a_n), coef = (num.nsr[i], num.alpha[i]), (num.nsr[i + 1], num.alpha[i + 1]), sched.coef[i : i + 2]
        # The scalars are grouped so that, as numbers, they cost no tensor operation.
        step = sig_n - sig
        d = score.eps(x, t, coef[0])
        d_next = score.eps(a_n * (x / a + step * d), t_next, coef[1])
        return (a_n / a) * x + (0.5 * a_n * step) * (d + d_next)

    def step(self, score, sde, x, i, state, noise):
        return self.heun(score, sde, x, state.sched.t[i], state.sched.t[i + 1], state.sched, i), state

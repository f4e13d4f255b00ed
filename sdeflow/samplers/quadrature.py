"""Integrals of Lagrange bases against a kernel, for solvers whose weights have no closed form on every SDE.

DEIS integrates a polynomial in t against d(sigma / alpha), SA-Solver a polynomial in lambda against
an exponential, ER-SDE its noise scaler: each step's weights are a few such integrals, computed
once per grid by Gauss-Legendre quadrature in float64 (16 nodes integrate these smooth integrands
to rounding on the steps any grid takes).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def _gauss(points: int):
    return np.polynomial.legendre.leggauss(points)


def gauss_nodes(a: float, b: float, points: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [a, b] (signed: b < a integrates backwards)."""
    g, w = _gauss(points)
    return 0.5 * (b - a) * g + 0.5 * (a + b), 0.5 * (b - a) * w


def lagrange_basis(nodes, x: np.ndarray) -> list[np.ndarray]:
    """The Lagrange basis polynomials on `nodes`, evaluated at x: L_j(x_m) = 1 if j == m else 0."""
    out = []
    for j, xj in enumerate(nodes):
        basis = np.ones_like(x)
        for m, xm in enumerate(nodes):
            if m != j:
                basis = basis * (x - xm) / (xj - xm)
        out.append(basis)
    return out


def lagrange_integrals(nodes, a: float, b: float, kernel, at=None, points: int = 16) -> tuple[float, ...]:
    """Integral over u from a to b of kernel(u) L_j(at(u)), for each basis polynomial L_j on `nodes`.

    `at` maps the integration variable to the variable the polynomial is written in (identity by
    default): DEIS integrates in lambda a polynomial in t.
    """
    u, w = gauss_nodes(a, b, points)
    x = u if at is None else at(u)
    f = kernel(u) * w
    return tuple(float((f * basis).sum()) for basis in lagrange_basis(nodes, x))

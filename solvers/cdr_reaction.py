"""Reaction kernels of the CDR problem (SPEC 1) and its parameter distribution (numpy only).

The reaction term is ``rbar(x) s(u)`` with ``s(u) = sum_k y_k r_k(u)``, one logistic
``r_ij(u) = 1 / (1 + c_ij exp(-a_d u))`` per pair of species levels i < j (55 for SPEC 1);
see the docstring of :mod:`solvers.cdr` for the overflow-safe form used here. This module
evaluates s and s' directly (:func:`reaction_sum`) or through a per-sample cubic Hermite
table (:class:`ReactionTable`), and draws parameter vectors y from the SPEC 1 distribution.
"""

from __future__ import annotations

import math

import numpy as np

#: One reaction per entry: ``(i, j, a, c)`` with ``r_ij(u) = 1 / (1 + c exp(-a u))``.
Levels = list[tuple[int, int, float, float]]


def reaction_levels(logistic_c: float = 1e-3, level_start: float = 5.0,
                    level_spacing: float = 6.0, n_levels: int = 11) -> Levels:
    """The reactions (i, j), 1 <= i < j <= n_levels, of SPEC 1 in lexicographic order.

    With u_i = level_start + level_spacing (i - 1) (SPEC: 5 + 6 (i - 1), 11 levels, 55
    reactions), returns a list of ``(i, j, a, c)`` such that ``r_ij(u) = 1 / (1 + c exp(-a u))``.

    Parameters
    ----------
    logistic_c : float
        The 1e-3 of C = 1e-3 / (1 - 1e-3) (dimensionless).
    level_start, level_spacing : float
        First species level u_1 and the gap between levels (units of u).
    n_levels : int
        Number of levels; n_levels (n_levels - 1) / 2 reactions.

    Returns
    -------
    list of (int, int, float, float), length n_levels (n_levels - 1) / 2
        ``a`` in 1 / (units of u), ``c`` dimensionless. Raises OverflowError or
        ZeroDivisionError for constants beyond float64.
    """
    C = logistic_c / (1.0 - logistic_c)
    L = math.log(C ** -2)
    out = []
    for i in range(1, n_levels + 1):
        for j in range(i + 1, n_levels + 1):
            ui = level_start + level_spacing * (i - 1)
            uj = level_start + level_spacing * (j - 1)
            a = L / (uj - ui)
            out.append((i, j, a, math.exp(a * ui) / C))
    return out


def reaction_functions(u: np.ndarray, levels: Levels | None = None) -> np.ndarray:
    """Evaluate the logistic reactions r_(i,j)(u) of SPEC 1, overflow-safe.

    Parameters
    ----------
    u : array, any shape
        Concentration values.
    levels : list, optional
        From :func:`reaction_levels` (default: SPEC 1, 55 reactions).

    Returns
    -------
    array, shape (n_reactions, *u.shape)
    """
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.stack([1.0 / (1.0 + c * np.exp(-a * u)) for _, _, a, c in
                         (levels or reaction_levels())])


def reaction_sum(u: np.ndarray, y: np.ndarray, levels: Levels | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """s(u) = sum_k y_k r_k(u) and s'(u), evaluated directly (one exponential per level gap).

    Parameters
    ----------
    u : ndarray, shape (m,)
    y : ndarray, shape (n_reactions,)
    levels : list, optional
        From :func:`reaction_levels` (default: SPEC 1).

    Returns
    -------
    s, ds : ndarray, shape (m,) each
    """
    u = np.asarray(u, dtype=np.float64)
    s = np.zeros_like(u)
    ds = np.zeros_like(u)
    exps: dict[float, np.ndarray] = {}
    with np.errstate(over="ignore"):
        for k, (_, _, a, c) in enumerate(levels or reaction_levels()):
            if y[k] == 0.0:
                continue
            if a not in exps:
                exps[a] = np.exp(-a * u)
            r = 1.0 / (1.0 + c * exps[a])
            s += y[k] * r
            ds += (y[k] * a) * r * (1.0 - r)
    return s, ds


class ReactionTable:
    """Cubic Hermite table of s(u) = sum_k y_k r_k(u) for one parameter vector y.

    Parameters
    ----------
    y : ndarray, shape (n_reactions,)
    step : float
        Grid spacing in u; the interpolation error is about step^4 max|s''''| / 384.
    u_range : (float, float)
        Tabulated interval; points outside it are evaluated directly.
    levels : list, optional
        From :func:`reaction_levels` (default: SPEC 1).
    """

    def __init__(self, y: np.ndarray, step: float, u_range: tuple[float, float],
                 levels: Levels | None = None):
        self.y, self.levels = y, levels
        self.lo, hi = float(u_range[0]), float(u_range[1])
        self.n = int(math.ceil((hi - self.lo) / step))
        self.h = (hi - self.lo) / self.n
        grid = self.lo + self.h * np.arange(self.n + 1)
        sv, dv = reaction_sum(grid, y, levels)
        # Per interval, the Hermite cubic in t = (u - u_i) / h in monomial form.
        s0, s1, d0, d1 = sv[:-1], sv[1:], dv[:-1] * self.h, dv[1:] * self.h
        self.coef = (s0, d0, 3.0 * (s1 - s0) - 2.0 * d0 - d1, 2.0 * (s0 - s1) + d0 + d1)

    def __call__(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated s(u) and its derivative for u of shape (m,); shape (m,) each."""
        t = (u - self.lo) * (1.0 / self.h)
        i = t.astype(np.intp)  # truncation; negative t is caught by `inside`
        inside = (t >= 0) & (i < self.n)
        np.copyto(i, 0, where=~inside)
        t -= i
        c0, c1, c2, c3 = (c[i] for c in self.coef)
        s = c0 + t * (c1 + t * (c2 + t * c3))
        ds = (c1 + t * (2.0 * c2 + 3.0 * t * c3)) * (1.0 / self.h)
        if not inside.all():
            out = ~inside
            s[out], ds[out] = reaction_sum(u[out], self.y, self.levels)
        return s, ds


def default_parameters() -> np.ndarray:
    """A reproducible SPEC-1 parameter vector (seed 0) for demos: y ~ U(0,1)^55 / sum.

    Returns
    -------
    ndarray, shape (55,)
        Non-negative reaction coefficients summing to 1.
    """
    y = np.random.default_rng(0).random(len(reaction_levels()))
    return y / y.sum()


def sample_simplex(rng: np.random.Generator, n: int) -> np.ndarray:
    """SPEC 1 sampling: y_k ~ U(0, 1) independently, then y <- y / sum(y).

    Parameters
    ----------
    rng : numpy.random.Generator
        Consumed by exactly one ``rng.random(n)`` call.
    n : int
        Number of reactions.

    Returns
    -------
    ndarray, shape (n,)
    """
    y = rng.random(n)
    return y / y.sum()


__all__ = ["Levels", "ReactionTable", "default_parameters", "reaction_functions",
           "reaction_levels", "reaction_sum", "sample_simplex"]

"""Pareto-smoothed importance sampling LOO for many observations at once.

The same computation as :func:`arviz_stats.base.array_stats.loo` (Vehtari, Gelman & Gabry 2017;
Vehtari et al. 2024: the tail of the importance ratios smoothed by a generalized Pareto fit with
a weakly informative prior on its shape), step for step, but vectorised over the observations:
arviz_stats loops over them in Python, about 2 ms each, which made LOO of a model with 10^4
distinct observations take 20 s. Here it takes a fraction of a second, and the values agree
with arviz_stats' to rounding (``tests/test_loo.py`` checks both, and against brute force).
"""

from __future__ import annotations

import numpy as np

#: Prior of the generalized Pareto fit (arviz_stats' ``_gpdfit``): the scale of the grid of
#: ``b`` values, and the weight of the Gaussian prior on the shape centred at 0.5.
_PRIOR_BS, _PRIOR_K = 3, 10


def tail_length(n_draws: int, r_eff: float) -> int:
    """Draws in the smoothed tail: ``3 sqrt(S / r_eff)``, or ``S / 5`` for few draws."""
    if n_draws * r_eff > 225:
        return int(np.floor(3 * (n_draws / r_eff) ** 0.5))
    return int(np.floor(n_draws / 5))


def loo(ll: np.ndarray, r_eff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSIS-LOO of each observation.

    Parameters
    ----------
    ll : np.ndarray
        Log-likelihood draws, shape (observations, draws), draws in chain-major order.
    r_eff : float
        Relative efficiency of the draws.

    Returns
    -------
    elpd_i, pareto_k, p_loo_i : np.ndarray
        One value per observation.

    Raises
    ------
    ValueError
        If an observation's largest importance ratios are all equal (as arviz_stats).
    """
    m, n_draws = ll.shape
    tail = tail_length(n_draws, r_eff)
    if tail < 5:
        raise ValueError(f"PSIS needs at least 5 tail draws; {n_draws} draws give {tail}.")
    x = -ll
    x = x - x.max(axis=1, keepdims=True)
    rows = np.arange(m)[:, None]
    # the tail and the largest value below it: the top tail + 1 draws, sorted
    top = np.argpartition(x, n_draws - tail - 1, axis=1)[:, n_draws - tail - 1 :]
    top = np.take_along_axis(top, np.argsort(x[rows, top], axis=1), axis=1)
    tail_idx = top[:, 1:]
    draws_tail = x[rows, tail_idx]
    cutoff = x[np.arange(m), top[:, 0]]
    max_tail = draws_tail.max(axis=1)
    if (np.abs(max_tail - draws_tail.min(axis=1)) < np.finfo(float).tiny).any():
        raise ValueError("All tail values are the same")
    k, sigma = _gpdfit(np.exp(draws_tail) - np.exp(cutoff)[:, None])
    smooth = np.isfinite(k)
    if smooth.any():
        p = np.arange(0.5, tail) / tail
        s = _gpinv(p, k[smooth], sigma[smooth], np.exp(cutoff[smooth]))
        s = np.log(s)
        s = np.where(s > max_tail[smooth, None], max_tail[smooth, None], s)
        x[rows[smooth], tail_idx[smooth]] = s
    x = x - _logsumexp(x)[:, None]
    elpd = _logsumexp(x + ll)
    lppd = _logsumexp(ll) - np.log(n_draws)
    return elpd, k, lppd - elpd


def _logsumexp(a: np.ndarray) -> np.ndarray:
    """``log(sum(exp(a)))`` of each row, computed around its maximum (finite rows)."""
    top = a.max(axis=1)
    return np.log(np.exp(a - top[:, None]).sum(axis=1)) + top


def _gpdfit(ary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical Bayes shape and scale of a generalized Pareto fit to each row (sorted
    exceedances), as arviz_stats' ``_gpdfit``: (nan, nan) when a row's first quartile is its
    minimum, (inf, nan) when the fit fails."""
    from scipy.special import logsumexp  # infinite rows handled as arviz_stats does

    m, n = ary.shape
    m_est = 30 + int(n**0.5)
    xstar = ary[:, int((n / 4 + 0.5) - 1)]
    b_ary = 1 - np.sqrt(m_est / (np.arange(1, m_est + 1, dtype=float) - 0.5))
    # rows far from a generalized Pareto (see below) give infinities here: ignored
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        b_ary = b_ary[None, :] / (_PRIOR_BS * xstar[:, None]) + 1 / ary[:, -1:]
        k_ary = np.mean(np.log1p(-b_ary[:, :, None] * ary[:, None, :]), axis=2)
        len_scale = n * (np.log(-b_ary / k_ary) - k_ary - 1)
        w_theta = np.exp(len_scale - logsumexp(len_scale, axis=1, keepdims=True))
        w_theta = np.where(w_theta >= 10 * np.finfo(float).eps, w_theta, 0.0)
        w_theta = w_theta / w_theta.sum(axis=1, keepdims=True)
        b_post = np.sum(np.where(w_theta > 0, b_ary * w_theta, 0.0), axis=1)
        kappa = np.mean(np.log1p(-b_post[:, None] * ary), axis=1)
        sigma = -kappa / b_post
    kappa = (n * kappa + _PRIOR_K * 0.5) / (n + _PRIOR_K)
    failed = np.isnan(kappa)
    kappa = np.where(failed, np.inf, kappa)
    sigma = np.where(failed, np.nan, sigma)
    far = xstar <= ary[:, 0]  # far from a generalized Pareto distribution
    return np.where(far, np.nan, kappa), np.where(far, np.nan, sigma)


def _gpinv(p: np.ndarray, k: np.ndarray, sigma: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Generalized Pareto quantiles ``p`` (one row per (k, sigma, mu))."""
    k, sigma, mu = k[:, None], sigma[:, None], mu[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        general = mu + sigma * np.expm1(-k * np.log1p(-p)) / k
    q = np.where(k == 0, mu - sigma * np.log1p(-p), general)
    return np.where(sigma <= 0, np.nan, q)

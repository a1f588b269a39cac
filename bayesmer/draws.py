"""Reading posterior draws back as plain arrays, and the small statistics computed on them.

Every summary and marginal estimate in bayesmer goes through these functions, so they only
depend on the reported posterior variables (``b``, ``sd_g``, ``u_g``, ``cor_g``; see
:mod:`bayesmer.pymc_model`) and the :class:`~bayesmer.spec.ModelSpec`.
:func:`linear_predictor` is the one place the linear predictor is computed from draws, for
any rows (fitted cells, a reference grid, new data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .spec import GroupSpec, ModelSpec

if TYPE_CHECKING:
    import xarray as xr


def _posterior(trace: xr.DataTree | xr.Dataset) -> xr.Dataset:
    import xarray as xr

    if isinstance(trace, xr.DataTree):
        return trace["posterior"].to_dataset()
    return trace


def stacked(trace: xr.DataTree | xr.Dataset, name: str) -> np.ndarray:
    """Draws of one variable with chains stacked first: shape (chains * draws, ...)."""
    da = _posterior(trace)[name]
    other = [d for d in da.dims if d not in ("chain", "draw")]
    values = da.transpose("chain", "draw", *other).values
    return values.reshape(-1, *values.shape[2:])


def fixed(trace: xr.DataTree | xr.Dataset) -> np.ndarray:
    """Fixed coefficients, shape (S, p), columns in the order of ``spec.terms``."""
    return stacked(trace, "b")


def dispersion(trace: xr.DataTree | xr.Dataset, spec: ModelSpec) -> np.ndarray | None:
    """Draws of the family's dispersion parameter (``sigma``, ``size``, ``phi``), shape (S,);
    None for binomial and Poisson models."""
    key = spec.family.dispersion
    return stacked(trace, key) if key else None


def group_sd(trace: xr.DataTree | xr.Dataset, group: GroupSpec) -> np.ndarray:
    """Draws of a grouping factor's sd, shape (S,); (S, terms) for a factor with slopes."""
    return stacked(trace, group.sd_name)


def group_effects(trace: xr.DataTree | xr.Dataset, group: GroupSpec) -> np.ndarray:
    """Draws of the group deviations, shape (S, levels); (S, levels, terms) with slopes."""
    return stacked(trace, group.effect_name)


def group_cor(trace: xr.DataTree | xr.Dataset, group: GroupSpec) -> np.ndarray:
    """Draws of a factor's correlation matrix, shape (S, terms, terms); the identity for
    uncorrelated effects."""
    q = len(group.terms)
    n = stacked(trace, group.sd_name).shape[0]
    out = np.broadcast_to(np.eye(q), (n, q, q)).copy()
    if group.cor_pairs:
        cor = stacked(trace, group.cor_name)
        for k, (i, j) in enumerate(group.cor_pairs):
            out[:, i, j] = out[:, j, i] = cor[:, k]
    return out


#: A grouping factor's part of some rows: each row's level, and its random design
#: (rows x terms; None for a random intercept).
GroupRows = tuple[np.ndarray, np.ndarray | None]


def linear_predictor(
    b: np.ndarray, X: np.ndarray, u: dict[str, np.ndarray], groups: dict[str, GroupRows]
) -> np.ndarray:
    """Fixed part plus group effects per draw, shape (S, rows), without offset.

    The one place the linear predictor is computed from draws, for any rows (fitted cells,
    a reference grid, new data).

    Parameters
    ----------
    b : np.ndarray
        Fixed coefficients (S, p).
    X : np.ndarray
        Fixed design of the rows (rows x p).
    u : dict
        Group effects per factor: (S, levels) for a random intercept, (S, levels, terms)
        with slopes.
    groups : dict
        Per factor to include, its :data:`GroupRows` for the rows.
    """
    eta = b @ X.T
    for name, (index, Z) in groups.items():
        eta += group_part(u[name], index, Z)
    return eta


def group_part(u: np.ndarray, index: np.ndarray, Z: np.ndarray | None) -> np.ndarray:
    """One factor's contribution to the linear predictor, (S, rows): ``u[index] . z``.

    ``np.take`` gathers the levels' columns three times faster than fancy indexing; the
    gather is fastest when ``index`` is sorted (nearby columns: see
    :func:`bayesmer.rows.cell_blocks`).
    """
    if Z is None:
        return np.take(u, index, axis=1)
    return np.einsum("srq,rq->sr", np.take(u, index, axis=1), Z)


def random_variance(sd: np.ndarray, cor: np.ndarray | None, Z: np.ndarray | None) -> np.ndarray:
    """Variance of one factor's contribution for a new level: ``z' Sigma z`` per draw and row.

    ``sd`` is (S,) for a random intercept (variance ``sd^2``, shape (S, 1)) or (S, terms)
    with ``cor`` (S, terms, terms) and ``Z`` (rows x terms): shape (S, rows).
    """
    if Z is None:
        return (sd**2)[:, None]
    zs = Z[None, :, :] * sd[:, None, :]
    return np.einsum("srq,sqk,srk->sr", zs, cor, zs)


def new_effects(
    sd: np.ndarray, cor: np.ndarray | None, n_levels: int, rng: np.random.Generator
) -> np.ndarray:
    """Effects of ``n_levels`` new levels per draw, drawn from the fitted distribution.

    (S, levels) ``sd * z`` for a random intercept; (S, levels, terms) ``z @ L.T * sd`` with
    ``L`` the Cholesky factor of each draw's correlation matrix.
    """
    if cor is None:
        return sd[:, None] * rng.standard_normal((len(sd), n_levels))
    z = rng.standard_normal((len(sd), n_levels, sd.shape[1]))
    chol = np.linalg.cholesky(cor)
    return np.einsum("slk,sqk->slq", z, chol) * sd[:, None, :]


def hdi(values: np.ndarray, prob: float) -> np.ndarray:
    """Highest-density interval over the first axis: shape (..., 2).

    The narrowest interval between two draws holding ``floor(prob * n)`` draws past its lower
    end: arviz_stats' ``hdi`` (method ``"nearest"``), vectorised over the other axes (the same
    intervals, ``tests/test_draws.py``; importing arviz_stats costs over a second).
    """
    if not 0 < prob <= 1:
        raise ValueError(f"The probability of an interval must be in (0, 1], got {prob}.")
    ordered = np.sort(np.asarray(values), axis=0)
    n = ordered.shape[0]
    if n < 2:
        raise ValueError("An interval needs at least 2 draws.")
    k = min(int(np.floor(prob * n)), n - 1)
    widths = np.subtract(ordered[k:], ordered[: n - k], dtype=np.float64)
    low = np.argmin(widths, axis=0)[None]
    bounds = [np.take_along_axis(ordered, i, axis=0)[0] for i in (low, low + k)]
    return np.stack(bounds, axis=-1)


def prob_direction(values: np.ndarray, null: float = 0.0) -> np.ndarray:
    """Probability of direction: the posterior mass on the side of ``null`` the median is on."""
    above = np.mean(values > null, axis=0)
    below = np.mean(values < null, axis=0)
    return np.maximum(above, below)

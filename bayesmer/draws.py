"""Reading posterior draws back as plain arrays, and the small statistics computed on them.

Every summary and marginal estimate in bayesmer goes through these functions, so they only
depend on the reported posterior variables (``b``, ``sd_g``, ``u_g``; see
:mod:`bayesmer.pymc_model`) and the :class:`~bayesmer.spec.ModelSpec`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from arviz_stats.base import array_stats

from .spec import GroupSpec


def _posterior(trace: xr.DataTree | xr.Dataset) -> xr.Dataset:
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


def group_sd(trace: xr.DataTree | xr.Dataset, group: GroupSpec) -> np.ndarray:
    """Draws of a grouping factor's sd, shape (S,)."""
    return stacked(trace, group.sd_name)


def group_effects(trace: xr.DataTree | xr.Dataset, group: GroupSpec) -> np.ndarray:
    """Draws of the group deviations, shape (S, levels)."""
    return stacked(trace, group.effect_name)


def hdi(values: np.ndarray, prob: float) -> np.ndarray:
    """Highest-density interval over the first axis: shape (..., 2)."""
    return np.asarray(array_stats.hdi(np.moveaxis(values, 0, -1), prob, axis=-1))


def prob_direction(values: np.ndarray, null: float = 0.0) -> np.ndarray:
    """Probability of direction: the posterior mass on the side of ``null`` the median is on."""
    above = np.mean(values > null, axis=0)
    below = np.mean(values < null, axis=0)
    return np.maximum(above, below)

"""Synthetic data shared by the tests, and a helper for ppc tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import xarray as xr

FIT = {"draws": 500, "tune": 500, "chains": 2, "progressbar": False}
LEVEL_LOG_RATE = {"a": 0.2, "b": 0.8, "c": 1.2, "d": 0.5}


def counts_data(overdispersed: bool, seed: int) -> pl.DataFrame:
    """300 rows: factor f (4 levels), exposure t in {1, 2}, counts y with mean t * exp(mu_f).

    Overdispersed counts are negative binomial with size 1 (variance mean + mean^2).
    """
    rng = np.random.default_rng(seed)
    f = np.repeat(list(LEVEL_LOG_RATE), 75)
    t = rng.choice([1.0, 2.0], size=f.size)
    mean = t * np.exp(np.array([LEVEL_LOG_RATE[v] for v in f]))
    if overdispersed:
        y = rng.negative_binomial(1.0, 1.0 / (1.0 + mean))
    else:
        y = rng.poisson(mean)
    return pl.DataFrame({"y": y, "f": f, "t": t})


def crossed_data(subjects: int, items: int, seed: int = 0) -> pl.DataFrame:
    """Every subject answers every item: Bernoulli ``y`` with a subject-level covariate
    ``age``, subject sd 1 and item sd 0.7 (the shape of issue 13's crossed benchmark)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(size=subjects)
    u, v = rng.normal(0, 1.0, subjects), rng.normal(0, 0.7, items)
    s, i = np.repeat(np.arange(subjects), items), np.tile(np.arange(items), subjects)
    eta = -0.3 + 0.5 * age[s] + u[s] + v[i]
    y = (rng.random(s.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return pl.DataFrame(
        {
            "y": y,
            "age": age[s],
            "subject": [f"s{k:03d}" for k in s],
            "item": [f"i{k:02d}" for k in i],
        }
    )


def by_stat(table: pl.DataFrame) -> dict[str, dict]:
    return {r["statistic"]: r for r in table.iter_rows(named=True)}


def attach(model, b, sds, us, dispersion=None):
    """Attach given draws (S, p), {group: (S,)}, {group: (S, levels)} and the family's
    dispersion parameter (S,) as one chain."""
    spec = model.spec
    data = {"b": (("chain", "draw", "term"), b[None])}
    coords = {"term": spec.terms}
    for g in spec.groups:
        data[g.sd_name] = (("chain", "draw"), sds[g.name][None])
        data[g.effect_name] = (("chain", "draw", g.dim), us[g.name][None])
        coords[g.dim] = g.levels
    if dispersion is not None:
        data[spec.family.dispersion] = (("chain", "draw"), dispersion[None])
    model.posterior = xr.DataTree.from_dict({"posterior": xr.Dataset(data, coords=coords)})
    return model

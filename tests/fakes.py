"""Synthetic posterior draws for tests of pure arithmetic (no sampling)."""

from __future__ import annotations

import numpy as np
import xarray as xr


def fake_posterior(model, n_draws=400, seed=0, sd_scale=1.0):
    """Attach synthetic draws (b, sd_g, u_g) to an unfitted model; returns the model."""
    spec = model.spec
    rng = np.random.default_rng(seed)
    data = {
        "b": (("chain", "draw", "term"), rng.normal(0.0, 0.7, (2, n_draws // 2, len(spec.terms))))
    }
    coords = {"term": spec.terms}
    for g in spec.groups:
        sd = sd_scale * np.abs(rng.normal(1.0, 0.3, (2, n_draws // 2)))
        u = rng.normal(0.0, 1.0, (2, n_draws // 2, len(g.levels))) * sd[..., None]
        data[g.sd_name] = (("chain", "draw"), sd)
        data[g.effect_name] = (("chain", "draw", g.dim), u)
        coords[g.dim] = g.levels
    model.posterior = xr.DataTree.from_dict({"posterior": xr.Dataset(data, coords=coords)})
    return model

"""The vectorised convergence diagnostics equal arviz_stats' on the same draws."""

import arviz_stats as azs
import numpy as np
import pytest

from bayesmer.diagnostics import _split_chains, ess, ess_tail_quantiles, rank_diagnostics


def _ar1(rng, k, chains, draws, phi):
    x = np.zeros((k, chains, draws))
    eps = rng.normal(size=(k, chains, draws))
    for t in range(1, draws):
        x[:, :, t] = phi[:, None] * x[:, :, t - 1] + eps[:, :, t]
    return x


@pytest.mark.parametrize(("chains", "draws"), [(4, 1000), (2, 101), (1, 50), (3, 7)])
def test_equal_to_arviz_stats(chains, draws):
    rng = np.random.default_rng(chains * 1000 + draws)
    phi = np.array([0.0, 0.3, 0.7, 0.95, 0.99, -0.5])
    x = _ar1(rng, len(phi), chains, draws, phi)
    x[1, 0] += 3.0  # one chain off target: large R-hat
    x = np.concatenate([x, np.ones((1, chains, draws))])  # a constant parameter
    x = np.concatenate([x, np.round(x[:1], 0)])  # many ties
    kw = {"chain_axis": -2, "draw_axis": -1}
    rhat, ess_bulk = rank_diagnostics(x)
    np.testing.assert_allclose(ess_bulk, azs.ess(x, method="bulk", **kw), rtol=1e-10)
    np.testing.assert_allclose(
        ess_tail_quantiles(x, 0.05), azs.ess(x, method="tail", prob=0.05, **kw), rtol=1e-10
    )
    np.testing.assert_allclose(ess(_split_chains(x)), azs.ess(x, method="mean", **kw), rtol=1e-10)
    if chains >= 2:
        with np.errstate(invalid="ignore"):  # arviz_stats divides 0/0 for the constant one
            expected = azs.rhat(x, **kw)
        np.testing.assert_allclose(rhat, expected, rtol=1e-10)
    else:
        assert np.isnan(rhat).all()

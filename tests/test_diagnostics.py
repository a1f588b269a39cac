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


def test_average_ranks_equal_scipys_rankdata():
    from scipy import stats

    from bayesmer.diagnostics import average_ranks

    rng = np.random.default_rng(0)
    for shape in [(3, 1000), (1, 7), (5, 4000)]:
        x = rng.normal(size=shape)
        x[:, ::3] = np.round(x[:, ::3], 1)  # ties
        np.testing.assert_array_equal(average_ranks(x), stats.rankdata(x, axis=1))
    x = rng.integers(0, 3, size=(4, 50)).astype(float)
    x[2, 5] = np.nan  # its row is all NaN, as scipy's
    np.testing.assert_array_equal(average_ranks(x), stats.rankdata(x, axis=1))


def test_heterogeneity_uses_scipys_chi_square():
    from scipy import stats

    from bayesmer.spec import heterogeneity

    rng = np.random.default_rng(1)
    for levels in (2, 3, 6, 40):
        estimates, variances = rng.normal(0, 2, levels), rng.uniform(0.05, 0.5, levels)
        tau2, low, p = heterogeneity(estimates, variances)
        w = 1 / variances
        q = np.sum(w * (estimates - np.sum(w * estimates) / w.sum()) ** 2)
        assert p == stats.chi2.sf(q, levels - 1)
        assert tau2 == 0 or low == tau2 * stats.chi2.ppf(0.1, levels - 1) / (levels - 1)

"""The vectorised convergence diagnostics equal arviz_stats' on the same draws."""

import arviz_stats as azs
import numpy as np
import polars as pl
import pytest
from scipy import special, stats

import bayesmer.parallel
from bayesmer.diagnostics import (
    _flatten,
    _folded_sort,
    _median,
    _parameter_diagnostics,
    _sort_rows,
    _split_chains,
    _z_scale,
    average_ranks,
    diagnose,
    ess,
    ess_tail_quantiles,
    rank_diagnostics,
)


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


def _rows_with_ties(rng):
    """Rows of draws: continuous, rounded (many ties), constant, two-valued, with a NaN."""
    x = rng.normal(size=(6, 2000))
    x[1] = np.round(x[1], 1)
    x[2] = 0.5
    x[3] = rng.integers(0, 2, 2000)
    x[4, 17] = np.nan
    x[5, :1000] = x[5, 1000:]  # every value twice
    return x


@pytest.mark.parametrize("n", [1, 2, 3, 7, 2000])
def test_average_ranks_equal_rankdata(n):
    rng = np.random.default_rng(n)
    x = _rows_with_ties(rng)[:, :n]
    expected = stats.rankdata(x, method="average", axis=1)
    np.testing.assert_array_equal(average_ranks(x), expected)


def test_z_scale_equals_the_normal_quantile_of_each_rank():
    """Looked up from a table of the half-integer ranks: the same numbers as the old route."""
    x = _rows_with_ties(np.random.default_rng(1))
    n = x.shape[1]
    c = 3.0 / 8.0
    old = special.ndtri((stats.rankdata(x, method="average", axis=1) - c) / (n - 2 * c + 1))
    np.testing.assert_array_equal(_z_scale(*_sort_rows(x)), old)


@pytest.mark.parametrize("n", [1, 2, 5, 2000])
def test_median_and_folded_sort_from_the_sorted_draws(n):
    x = _rows_with_ties(np.random.default_rng(2))[:, :n]
    order, ordered = _sort_rows(x)
    np.testing.assert_array_equal(_median(ordered), np.median(x, axis=1))
    folded = np.abs(x - np.median(x, axis=1)[:, None])
    positions, values = _folded_sort(order, ordered)
    np.testing.assert_array_equal(values, np.sort(folded, axis=1))
    np.testing.assert_array_equal(np.take_along_axis(folded, positions, axis=1), values)
    np.testing.assert_array_equal(_z_scale(positions, values), _z_scale(*_sort_rows(folded)))


def test_tail_ess_from_sorted_draws_is_the_same():
    rng = np.random.default_rng(3)
    x = _ar1(rng, 4, 4, 200, np.array([0.0, 0.5, 0.9, 0.3]))
    x[3] = np.round(x[3])
    split = _split_chains(x)
    ordered = np.sort(split.reshape(4, -1), axis=1)
    np.testing.assert_array_equal(ess_tail_quantiles(x, 0.05, ordered), ess_tail_quantiles(x, 0.05))


def _posterior(rng, chains=4, draws=100):
    """A posterior like a fit's: scalars, a vector with Arrow-backed level labels, and a
    (level, term) matrix."""
    import pandas as pd
    import xarray as xr

    levels = pd.Index(pd.array([f"s{i}" for i in range(300)], dtype="string[pyarrow]"))
    return xr.Dataset(
        {
            "b": (("chain", "draw", "term"), rng.normal(size=(chains, draws, 2))),
            "sd_g": (("chain", "draw"), np.abs(rng.normal(size=(chains, draws)))),
            "u_g": (("chain", "draw", "g"), rng.normal(size=(chains, draws, 300))),
            "v": (("chain", "draw", "g", "slope"), rng.normal(size=(chains, draws, 300, 2))),
        },
        coords={"term": ["Intercept", "x"], "g": levels, "slope": ["1", "x"]},
    )


def test_flatten_labels_each_scalar_in_c_order():
    ds = _posterior(np.random.default_rng(4))
    labels, cols = _flatten(ds, ["b", "sd_g", "u_g", "v"])
    expected = ["b[Intercept]", "b[x]", "sd_g"]
    expected += [f"u_g[s{i}]" for i in range(300)]
    expected += [f"v[s{i}, {t}]" for i in range(300) for t in ("1", "x")]
    assert labels == expected
    assert [c.shape[2] for c in cols] == [2, 1, 300, 600]
    np.testing.assert_array_equal(cols[3][:, :, 3], ds["v"].values[:, :, 1, 1])


def test_diagnose_in_threads_equals_one_thread(monkeypatch):
    """Blocks computed in threads give the same table as computed one after the other."""
    import xarray as xr

    rng = np.random.default_rng(5)
    ds = _posterior(rng)
    stats_ = xr.Dataset(
        {
            "diverging": (("chain", "draw"), np.zeros((4, 100), dtype=bool)),
            "energy": (("chain", "draw"), rng.normal(size=(4, 100))),
        }
    )
    names = ["b", "sd_g", "u_g", "v"]
    monkeypatch.setattr("bayesmer.diagnostics.DIAGNOSE_BLOCK", 64)
    monkeypatch.setattr("bayesmer.parallel.MIN_THREADED_VALUES", 0)
    monkeypatch.setattr(bayesmer.parallel, "n_threads", lambda: 3)
    threaded = diagnose(ds, stats_, names).table
    monkeypatch.setattr(bayesmer.parallel, "n_threads", lambda: 1)
    serial = diagnose(ds, stats_, names).table
    assert threaded.equals(serial)
    assert threaded.height == 2 + 1 + 300 + 600
    # and each parameter as arviz_stats computes it
    kw = {"chain_axis": 0, "draw_axis": 1}
    v = ds["v"].values[:, :, 7, 1]
    row = threaded.filter(pl.col("term") == "v[s7, x]").row(0, named=True)
    assert row["rhat"] == pytest.approx(float(azs.rhat(v, **kw)), rel=1e-10)
    assert row["ess_bulk"] == pytest.approx(float(azs.ess(v, method="bulk", **kw)), rel=1e-10)


@pytest.mark.parametrize("draws", [1, 2, 3])
def test_too_few_draws_give_nan(draws):
    """As before: chains of 1-3 draws (split into halves of 0-1) have no R-hat or ESS."""
    x = np.random.default_rng(draws).normal(size=(3, 4, draws))
    with np.errstate(invalid="ignore", divide="ignore"):
        for values in _parameter_diagnostics(x):
            assert np.isnan(values).all()

"""PSIS-LOO per original observation and compare.

LOO is checked against a brute-force PSIS-LOO on the uncollapsed rows (the log-likelihood of
every data row computed independently of bayesmer's collapsing, handed to ``arviz_stats``): the
numbers must be the same. Fits of small synthetic data with a known truth come from conftest.py.
"""

from __future__ import annotations

import arviz_stats
import numpy as np
import polars as pl
import pytest
import xarray as xr
from scipy import special, stats
from synthetic import FIT, by_stat

import bayesmer
from bayesmer import glm
from bayesmer.draws import fixed, group_effects
from bayesmer.loo import LooResult, compare, loo
from bayesmer.ppc import ppc, simulate
from bayesmer.predict import predict

# ---------------------------------------------------------------------------------------------
# Fits used only here


@pytest.fixture(scope="module")
def outlier_fit():
    """80 ordinary Poisson rows and one row alone in its level with a large count (row 80)."""
    rng = np.random.default_rng(3)
    data = pl.DataFrame(
        {"y": [*rng.poisson(3.0, 80).tolist(), 25], "f": ["a"] * 40 + ["b"] * 40 + ["c"]}
    )
    model = glm("y ~ f", data=data, family="poisson")
    model.fit(random_seed=8, **FIT)
    return model


@pytest.fixture(scope="module")
def embarked_fit(titanic):
    """Titanic model that drops the 2 rows with a missing port of embarkation."""
    model = glm("survived ~ sex + embarked", data=titanic, family="binomial")
    with pytest.warns(UserWarning, match="Dropped 2 of 891 rows"):
        model.fit(random_seed=2, **FIT)
    return model


# ---------------------------------------------------------------------------------------------
# Brute force: per-row log-likelihood, computed without bayesmer's collapsing


def _titanic_rows_loglik(model, titanic: pl.DataFrame) -> np.ndarray:
    """(rows, draws) Bernoulli log-likelihood of survived ~ sex + (1|pclass), row by row."""
    spec = model.spec
    b = fixed(model.posterior)
    u = group_effects(model.posterior, spec.groups[0])
    levels = spec.groups[0].levels
    male = (titanic["sex"] == "male").to_numpy().astype(float)
    pclass = np.array([levels.index(str(v)) for v in titanic["pclass"].to_list()])
    eta = b[:, [spec.terms.index("(Intercept)")]] + b[:, [spec.terms.index("sexmale")]] * male
    eta = eta + u[:, pclass]
    y = titanic["survived"].to_numpy()
    return stats.bernoulli.logpmf(y, special.expit(eta)).T


def _counts_rows_loglik(model, data: pl.DataFrame) -> np.ndarray:
    """(rows, draws) Poisson log-likelihood of y ~ f + offset(log(t)) or y ~ offset(log(t))."""
    spec = model.spec
    b = fixed(model.posterior)
    eta = np.repeat(b[:, [spec.terms.index("(Intercept)")]], len(data), axis=1)
    for j, term in enumerate(spec.terms):
        if term.startswith("f"):
            eta = eta + b[:, [j]] * (data["f"] == term[1:]).to_numpy()
    mu = np.exp(eta) * data["t"].to_numpy()
    return stats.poisson.logpmf(data["y"].to_numpy(), mu).T


def _brute_loo(model, loglik_rows: np.ndarray):
    """arviz_stats.loo on the per-row log-likelihood of every data row."""
    posterior = model.posterior["posterior"].to_dataset()
    chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
    ll = loglik_rows.reshape(-1, chains, draws).transpose(1, 2, 0)
    tree = xr.DataTree.from_dict(
        {
            "posterior": posterior,
            "log_likelihood": xr.Dataset({"y": (("chain", "draw", "obs"), ll)}),
        }
    )
    return arviz_stats.loo(tree, pointwise=True), tree


def _assert_same_loo(res: LooResult, brute) -> None:
    assert res.elpd == pytest.approx(float(brute.elpd), rel=1e-10)
    assert res.se == pytest.approx(float(brute.se), rel=1e-10)
    assert res.p_loo == pytest.approx(float(brute.p), rel=1e-8)
    np.testing.assert_allclose(
        res.pointwise["elpd_loo"].to_numpy(), brute.elpd_i.values, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(
        res.pointwise["pareto_k"].to_numpy(), brute.pareto_k.values, rtol=1e-8, atol=1e-10
    )


# ---------------------------------------------------------------------------------------------
# loo


def test_loo_equals_brute_force_per_row_loo_binomial(titanic_glmer, titanic):
    res = loo(titanic_glmer)
    assert titanic_glmer.spec.collapsed and len(titanic_glmer.spec.cells) == 6
    brute, _ = _brute_loo(titanic_glmer, _titanic_rows_loglik(titanic_glmer, titanic))
    _assert_same_loo(res, brute)
    assert res.n_obs == 891 and res.pointwise.height == 891
    assert res.pointwise["row"].to_list() == list(range(891))
    assert res.pointwise["survived"].to_list() == titanic["survived"].to_list()


def test_loo_equals_brute_force_poisson_with_exposure(pois_fit, counts):
    # cells hold summed exposure; each row's likelihood must use its own exposure
    assert len(pois_fit.spec.cells) == 4
    res = loo(pois_fit)
    brute, _ = _brute_loo(pois_fit, _counts_rows_loglik(pois_fit, counts))
    _assert_same_loo(res, brute)
    assert res.pointwise["exposure"].to_list() == counts["t"].to_list()


def test_loo_equals_brute_force_uncollapsed_probit_trials(trials_fit, trials_data):
    assert not trials_fit.spec.collapsed
    b = fixed(trials_fit.posterior)
    p = special.ndtr(b[:, [0]] + b[:, [1]] * trials_data["x"].to_numpy())
    ll = stats.binom.logpmf(trials_data["y"].to_numpy(), trials_data["n"].to_numpy(), p).T
    res = loo(trials_fit)
    brute, _ = _brute_loo(trials_fit, ll)
    _assert_same_loo(res, brute)
    assert res.pointwise["trials"].to_list() == trials_data["n"].to_list()
    fitted = predict(trials_fit, type_predict="link", output="table")
    np.testing.assert_allclose(
        fitted["estimate"], np.median(b[:, [0]] + b[:, [1]] * trials_data["x"].to_numpy(), axis=0)
    )
    sims = simulate(trials_fit, nsim=50, random_seed=2)
    assert (sims.to_numpy() <= trials_data["n"].to_numpy()[:, None]).all()
    table = by_stat(ppc(trials_fit, random_seed=2))
    assert list(table) == ["mean"]
    observed = trials_data["y"].sum() / trials_data["n"].sum()
    assert table["mean"]["observed"] == pytest.approx(observed)


def test_loo_result_table_and_text(titanic_glm):
    res = titanic_glm.loo()
    assert isinstance(res, LooResult)
    k = res.pareto_k_counts
    assert k["label"].to_list() == ["good", "bad", "very bad"]
    assert k["count"].sum() == res.n_obs == 891
    assert k["count"][0] == 891  # a 2-parameter glm has no influential rows
    assert res.pointwise["elpd_loo"].sum() == pytest.approx(res.elpd, rel=1e-12)
    assert res.pointwise["p_loo"].sum() == pytest.approx(res.p_loo, rel=1e-10)
    assert res.elpd < 0 and 1.0 < res.p_loo < 3.5
    text = str(res)
    assert "elpd_loo" in text and f"{res.elpd:.1f}" in text and "very bad" in text
    assert f"ELPD-LOO: {res.elpd:.1f} (SE {res.se:.1f})" in str(titanic_glm.summary())


def test_loo_row_numbers_skip_rows_dropped_for_missing_values(embarked_fit, titanic):
    res = loo(embarked_fit)
    dropped = titanic.with_row_index("i").filter(pl.col("embarked").is_null())["i"].to_list()
    assert res.n_obs == 889 and res.pointwise.height == 889
    assert not set(dropped) & set(res.pointwise["row"].to_list())
    assert res.pointwise["row"].max() == 890


def test_loo_warns_naming_the_influential_observation(outlier_fit):
    with pytest.warns(UserWarning, match=r"Pareto k > 0\.7 for 1 of 81 .*f=c, y=25 .*: 80\)"):
        res = loo(outlier_fit)
    assert res.pareto_k_counts.filter(pl.col("label") != "good")["count"].sum() == 1
    worst = res.pointwise.sort("pareto_k").row(-1, named=True)
    assert worst["row"] == 80 and worst["pareto_k"] > 0.7


def test_loo_maps_text_and_boolean_outcomes_to_rows(titanic):
    data = titanic.with_columns((pl.col("survived") == 1).alias("saved"))
    fits = {}
    for outcome in ("alive", "saved"):
        model = glm(f"{outcome} ~ sex", data=data, family="binomial")
        model.fit(random_seed=4, **FIT)
        fits[outcome] = model
    text, boolean = loo(fits["alive"]), loo(fits["saved"])
    assert text.pointwise["alive"].to_list() == titanic["survived"].to_list()
    assert boolean.pointwise["saved"].to_list() == titanic["survived"].to_list()
    # the same likelihood and seed give the same draws, hence the same LOO
    assert text.elpd == pytest.approx(boolean.elpd, rel=1e-12)
    assert fits["alive"].ppc(random_seed=1).equals(fits["saved"].ppc(random_seed=1))


@pytest.mark.slow
def test_loo_and_ppc_on_grouse(grouse_glmer):
    # chicks with extreme counts, alone in their brood x height cell, are influential
    with pytest.warns(UserWarning, match=r"Pareto k > 0\.7 for \d+ of 403 observations") as w:
        res = loo(grouse_glmer)
    assert res.n_obs == 403 and res.pointwise.height == 403
    counts = dict(res.pareto_k_counts.select("label", "count").iter_rows())
    assert sum(counts.values()) == 403 and counts["good"] < 403
    worst = res.pointwise.sort("pareto_k").row(-1, named=True)
    assert f"TICKS={worst['TICKS']} (k={worst['pareto_k']:.2f}; 1 row(s): {worst['row']})" in str(
        w[0].message
    )
    table = ppc(grouse_glmer, random_seed=1)
    names = table["statistic"].to_list()
    assert sum(n.startswith("mean[BROOD=") for n in names) == 118
    assert {"mean", "mean[YEAR=95]", "mean[YEAR=96]", "mean[YEAR=97]", "zeros", "var"} <= set(names)
    observed = dict(zip(names, table["observed"], strict=True))
    ticks = grouse_glmer.data["TICKS"]
    assert observed["var"] == pytest.approx(ticks.var())
    assert observed["zeros"] == pytest.approx((ticks == 0).mean())


# ---------------------------------------------------------------------------------------------
# compare


def test_compare_ranks_the_true_predictor_first(pois_fit, pois_null, counts):
    table = compare(pois_null, pois_fit)
    assert table.columns == ["model", "elpd_loo", "se", "elpd_diff", "se_diff", "p_loo", "n_bad_k"]
    assert table["model"].to_list() == [
        "glm(y ~ f + offset(log(t)))",
        "glm(y ~ offset(log(t)))",
    ]
    best, other = table.row(0, named=True), table.row(1, named=True)
    assert best["elpd_diff"] == 0.0 and best["se_diff"] == 0.0
    assert other["elpd_diff"] < -4 * other["se_diff"] < 0
    assert other["elpd_diff"] == pytest.approx(other["elpd_loo"] - best["elpd_loo"], rel=1e-12)
    # the same numbers as arviz_stats.compare on the brute-force per-row log-likelihoods
    _, tree_fit = _brute_loo(pois_fit, _counts_rows_loglik(pois_fit, counts))
    _, tree_null = _brute_loo(pois_null, _counts_rows_loglik(pois_null, counts))
    ref = arviz_stats.compare({"fit": tree_fit, "null": tree_null}, round_to="none")
    assert other["elpd_diff"] == pytest.approx(ref.loc["null", "elpd_diff"], rel=1e-9)
    # arviz_stats uses var(ddof=0) here; bayesmer (like R's loo_compare) the sample variance
    n = counts.height
    assert other["se_diff"] == pytest.approx(ref.loc["null", "dse"] * np.sqrt(n / (n - 1)))


def test_compare_refuses_other_exposures_in_tiny_units(counts):
    """Exposures of 1e-9 and 2e-9 are different data (an absolute 1e-8 tolerance took them
    for the same)."""
    models = []
    for unit in (1e-9, 2e-9):
        model = glm(
            "y ~ offset(log(t))", data=counts.with_columns(pl.col("t") * unit), family="poisson"
        )
        model.fit(random_seed=6, **FIT)
        models.append(model)
    with pytest.raises(ValueError, match="same observations"):
        compare(*models)


def test_compare_is_exported():
    assert bayesmer.compare is compare


def test_compare_labels_and_bad_input(titanic_glm, embarked_fit, pois_fit):
    table = compare([titanic_glm, titanic_glm], names=["one", "two"])
    assert table["model"].to_list() == ["one", "two"]
    assert table["elpd_diff"].to_list() == [0.0, 0.0]
    with pytest.raises(ValueError, match="at least two models"):
        compare(titanic_glm)
    with pytest.raises(ValueError, match="one distinct label per model"):
        compare(titanic_glm, titanic_glm, names=["same", "same"])
    with pytest.raises(ValueError, match="same observations.*891 rows.*889"):
        compare(titanic_glm, embarked_fit)
    with pytest.raises(ValueError, match="same observations"):
        compare(titanic_glm, pois_fit)


def test_loo_is_computed_once_per_fit(titanic_glmer):
    first = titanic_glmer.loo()
    assert titanic_glmer.loo() is first
    assert bayesmer.compare(titanic_glmer, titanic_glmer, names=["a", "b"])["elpd_loo"][0] == (
        pytest.approx(first.elpd)
    )


# ---------------------------------------------------------------------------------------------
# Memory bounded by the distinct observations


def test_loo_and_summary_work_per_distinct_observation(titanic_glmer, monkeypatch):
    """loo() and summary() read no data rows: the per-row table is built only when asked."""
    calls = []
    row_table = bayesmer.loo.row_table

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return row_table(*args, **kwargs)

    monkeypatch.setattr(bayesmer.loo, "row_table", spy)
    monkeypatch.setattr(titanic_glmer, "_loo_cache", None)
    str(titanic_glmer.summary())
    res = loo(titanic_glmer)
    assert calls == []
    obs = res.observations
    spec = titanic_glmer.spec
    assert obs.columns == ["sex", "pclass", "survived", "trials", "rows", *obs.columns[5:]]
    assert len(obs) == len(spec.obs) <= 2 * len(spec.cells)
    assert obs["rows"].sum() == res.n_obs == 891
    assert (obs["elpd_loo"] * obs["rows"]).sum() == pytest.approx(res.elpd, rel=1e-12)
    assert (obs["p_loo"] * obs["rows"]).sum() == pytest.approx(res.p_loo, rel=1e-12)

    pointwise = res.pointwise  # now the rows, once
    assert len(calls) == 1 and res.pointwise is pointwise
    keys = ["sex", "pclass", "survived", "trials"]
    joined = pointwise.join(obs, on=keys, how="left", suffix="_obs")
    np.testing.assert_array_equal(joined["elpd_loo"], joined["elpd_loo_obs"])
    np.testing.assert_array_equal(joined["pareto_k"], joined["pareto_k_obs"])


def test_rows_of_some_observations_are_read_alone(titanic_glmer):
    from bayesmer.rows import OBS_INDEX, row_table

    every = row_table(titanic_glmer)
    some = row_table(titanic_glmer, observations=[0, 3])
    assert some.equals(every.filter(pl.col(OBS_INDEX).is_in([0, 3])))
    assert len(some) == titanic_glmer.spec.obs["_weight"].gather([0, 3]).sum()


def test_relative_eff_equals_arviz_stats(monkeypatch):
    """The mean-ESS of every posterior scalar, vectorised in blocks over threads, averaged:
    what arviz_stats' accessor gives, looping over the parameters."""
    from bayesmer.loo import _relative_eff

    rng = np.random.default_rng(3)
    draws = np.cumsum(rng.normal(size=(4, 300, 700)), axis=1) * 0.05 + rng.normal(
        size=(4, 300, 700)
    )
    posterior = xr.Dataset(
        {
            "b": (("chain", "draw", "term"), draws[:, :, :3]),
            "sd_g": (("chain", "draw"), np.abs(draws[:, :, 3])),
            "u_g": (("chain", "draw", "g"), draws[:, :, 4:]),
        }
    )
    trace = xr.DataTree.from_dict({"posterior": posterior})
    monkeypatch.setattr("bayesmer.diagnostics.DIAGNOSE_BLOCK", 100)
    monkeypatch.setattr("bayesmer.parallel.MIN_THREADED_VALUES", 0)
    ess = posterior.azstats.ess(method="mean")
    expected = np.mean(np.hstack([ess[v].values.ravel() for v in ess.data_vars])) / 1200
    assert _relative_eff(trace, 1200) == pytest.approx(expected, rel=1e-12)

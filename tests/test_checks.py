"""Model checking: PSIS-LOO per original observation, compare, ppc, simulate and predict.

LOO is checked against a brute-force PSIS-LOO on the uncollapsed rows (the log-likelihood of
every data row computed independently of bayesmer's collapsing, handed to ``arviz_stats``): the
numbers must be the same. Predictive checks use small synthetic data with a known truth.
"""

from __future__ import annotations

import types

import arviz_stats
import numpy as np
import polars as pl
import pytest
import xarray as xr
from scipy import special, stats

import bayesmer
from bayesmer import glm
from bayesmer.checks import (
    LooResult,
    _log_likelihood,
    compare,
    loo,
    ppc,
    predict,
    simulate,
)
from bayesmer.draws import fixed, group_effects, group_sd
from bayesmer.families import get_family

FIT = {"draws": 500, "tune": 500, "chains": 2, "progressbar": False}
LEVEL_LOG_RATE = {"a": 0.2, "b": 0.8, "c": 1.2, "d": 0.5}


# ---------------------------------------------------------------------------------------------
# Synthetic data and shared fits


def _counts(overdispersed: bool, seed: int) -> pl.DataFrame:
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


@pytest.fixture(scope="module")
def counts():
    return _counts(overdispersed=False, seed=11)


@pytest.fixture(scope="module")
def pois_fit(counts):
    """The true model of the Poisson counts (collapsed: 8 cells of f x t)."""
    model = glm("y ~ f + offset(log(t))", data=counts, family="poisson")
    model.fit(random_seed=5, **FIT)
    return model


@pytest.fixture(scope="module")
def pois_null(counts):
    """The same counts without the predictor f."""
    model = glm("y ~ offset(log(t))", data=counts, family="poisson")
    model.fit(random_seed=6, **FIT)
    return model


@pytest.fixture(scope="module")
def overdispersed_fit():
    model = glm("y ~ f + offset(log(t))", data=_counts(True, seed=12), family="poisson")
    model.fit(random_seed=7, **FIT)
    return model


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
    model = glm("survived ~ sex + embarked", data=titanic)
    with pytest.warns(UserWarning, match="Dropped 2 of 891 rows"):
        model.fit(random_seed=2, **FIT)
    return model


@pytest.fixture(scope="module")
def trials_data():
    """200 rows with a continuous predictor (so nothing collapses) and 1 to 5 trials each."""
    rng = np.random.default_rng(21)
    x = rng.normal(size=200)
    n = rng.integers(1, 6, size=200)
    y = rng.binomial(n, special.ndtr(-0.3 + 0.8 * x))
    return pl.DataFrame({"y": y, "n": n, "x": x})


@pytest.fixture(scope="module")
def trials_fit(trials_data):
    model = glm("cbind(y, n - y) ~ x", data=trials_data, family="binomial", link="probit")
    model.fit(random_seed=9, **FIT)
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
    table = _by_stat(ppc(trials_fit, random_seed=2))
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
        model = glm(f"{outcome} ~ sex", data=data)
        model.fit(random_seed=4, **FIT)
        fits[outcome] = model
    text, boolean = loo(fits["alive"]), loo(fits["saved"])
    assert text.pointwise["alive"].to_list() == titanic["survived"].to_list()
    assert boolean.pointwise["saved"].to_list() == titanic["survived"].to_list()
    # the same likelihood and seed give the same draws, hence the same LOO
    assert text.elpd == pytest.approx(boolean.elpd, rel=1e-12)
    assert fits["alive"].ppc(random_seed=1).equals(fits["saved"].ppc(random_seed=1))


def test_log_likelihood_matches_scipy_for_every_link():
    rng = np.random.default_rng(0)
    eta = rng.normal(size=(5, 4))
    y = np.array([0, 3, 7, 2])
    n = np.array([4, 3, 9, 5])
    for link, p in (
        ("logit", special.expit(eta)),
        ("probit", special.ndtr(eta)),
        ("cloglog", -np.expm1(-np.exp(eta))),
    ):
        spec = types.SimpleNamespace(family=get_family("binomial", link))
        np.testing.assert_allclose(
            _log_likelihood(spec, eta, y, n), stats.binom.logpmf(y, n, p), rtol=1e-10
        )
    spec = types.SimpleNamespace(family=get_family("poisson"))
    e = np.array([1.0, 2.0, 0.5, 3.0])
    np.testing.assert_allclose(
        _log_likelihood(spec, eta, y, e), stats.poisson.logpmf(y, np.exp(eta) * e), rtol=1e-10
    )


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


# ---------------------------------------------------------------------------------------------
# ppc


PPC_COLUMNS = [
    "statistic",
    "observed",
    "replicated_mean",
    "replicated_low",
    "replicated_high",
    "ppp",
]


def _by_stat(table: pl.DataFrame) -> dict[str, dict]:
    return {r["statistic"]: r for r in table.iter_rows(named=True)}


def test_ppc_flags_overdispersion(overdispersed_fit):
    table = _by_stat(ppc(overdispersed_fit, random_seed=1))
    var = table["var"]
    assert var["ppp"] < 0.01
    assert var["observed"] > var["replicated_high"]
    assert table["zeros"]["ppp"] < 0.01  # many more zeros than a Poisson gives


def test_ppc_does_not_flag_poisson_counts(pois_fit, counts):
    table = ppc(pois_fit, random_seed=1)
    assert table.columns == PPC_COLUMNS
    rows = _by_stat(table)
    assert list(rows) == [
        "mean",
        "mean[f=a]",
        "mean[f=b]",
        "mean[f=c]",
        "mean[f=d]",
        "zeros",
        "var",
    ]
    assert 0.05 < rows["var"]["ppp"] < 0.95
    assert 0.05 < rows["zeros"]["ppp"] < 0.95
    for name, row in rows.items():
        assert row["replicated_low"] <= row["observed"] <= row["replicated_high"], name
    # observed statistics are those of the data rows
    y = counts["y"]
    assert rows["var"]["observed"] == pytest.approx(y.var())
    assert rows["mean[f=c]"]["observed"] == pytest.approx(y.filter(counts["f"] == "c").mean())
    # per-row replication: replicated count variance is that of Poisson rows, whose mean
    # depends on f and t (much less than the variance of a cell total)
    assert rows["var"]["replicated_mean"] == pytest.approx(y.var(), rel=0.2)


def test_ppc_binomial_defaults(titanic_glmer, titanic):
    table = ppc(titanic_glmer, random_seed=2)
    assert titanic_glmer.ppc(random_seed=2).equals(table)
    rows = _by_stat(table)
    assert list(rows) == [
        "mean",
        "mean[sex=female]",
        "mean[sex=male]",
        "mean[pclass=1]",
        "mean[pclass=2]",
        "mean[pclass=3]",
    ]
    by_class = titanic.group_by("pclass").agg(pl.col("survived").mean())
    for pclass, share in by_class.iter_rows():
        assert rows[f"mean[pclass={pclass}]"]["observed"] == pytest.approx(share)
    assert rows["mean"]["observed"] == pytest.approx(titanic["survived"].mean())
    for row in rows.values():
        assert 0.1 < row["ppp"] < 0.9
        assert 0 <= row["replicated_low"] < row["replicated_high"] <= 1


def test_ppc_custom_statistics_and_seed(pois_fit, counts):
    def top(y, data):
        return y.max(axis=1)

    table = ppc(pois_fit, stat=["max", top, "f"], random_seed=3, ci=0.5)
    names = table["statistic"].to_list()
    assert names == ["max", "top", "mean[f=a]", "mean[f=b]", "mean[f=c]", "mean[f=d]"]
    rows = _by_stat(table)
    assert rows["max"]["observed"] == rows["top"]["observed"] == counts["y"].max()
    assert rows["max"]["replicated_mean"] == rows["top"]["replicated_mean"]
    wide = ppc(pois_fit, stat="max", random_seed=3, ci=0.95).row(0, named=True)
    assert wide["replicated_high"] - wide["replicated_low"] > (
        rows["max"]["replicated_high"] - rows["max"]["replicated_low"]
    )
    named = ppc(
        pois_fit,
        stat={
            "share of 1s": lambda y, d: (y == 1).mean(axis=1),
            "rate": lambda y, d: y.sum(axis=1) / d["exposure"].sum(),
            "spread": "sd",
        },
    )
    assert named["statistic"].to_list() == ["share of 1s", "rate", "spread"]
    observed = named["observed"].to_list()
    assert observed[0] == pytest.approx((counts["y"] == 1).mean())
    assert observed[1] == pytest.approx(counts["y"].sum() / counts["t"].sum())
    assert observed[2] == pytest.approx(counts["y"].std())
    assert ppc(pois_fit, random_seed=9).equals(ppc(pois_fit, random_seed=9))
    assert not ppc(pois_fit, random_seed=9).equals(ppc(pois_fit, random_seed=10))


def test_ppc_bad_input(pois_fit):
    with pytest.raises(ValueError, match="Unknown statistic 'kurtosis'"):
        ppc(pois_fit, stat="kurtosis")
    with pytest.raises(ValueError, match="one value per replicated data set"):
        ppc(pois_fit, stat={"rows": lambda y, d: y})
    with pytest.raises(ValueError, match="ci must be between 0 and 1"):
        ppc(pois_fit, ci=1.5)
    with pytest.raises(TypeError, match="stat must be"):
        ppc(pois_fit, stat=3)


# ---------------------------------------------------------------------------------------------
# simulate


def test_simulate_layout_and_distribution(pois_fit, counts):
    sims = simulate(pois_fit, nsim=400, random_seed=1, with_data=True)
    assert sims.columns[:5] == ["row", "f", "y", "exposure", "sim_1"]
    assert sims.columns[-1] == "sim_400"
    assert sims.height == counts.height
    assert sims["y"].to_list() == counts["y"].to_list()
    values = sims.select(pl.selectors.starts_with("sim_")).to_numpy()
    assert values.min() >= 0 and values.dtype.kind == "i"
    # each row's mean over data sets is its expected count
    expected = predict(pois_fit)
    np.testing.assert_allclose(values.mean(axis=1)[:8], expected[:8], rtol=0.25)
    by_level = sims.group_by("f", "exposure").agg(pl.col("sim_1", "sim_2").mean()).sort("f")
    assert by_level.height == 8
    assert simulate(pois_fit, 2, random_seed=4).equals(simulate(pois_fit, 2, random_seed=4))


def test_simulate_binomial_rows_are_zero_or_one(titanic_glm):
    sims = simulate(titanic_glm, nsim=3, random_seed=1, with_data=True)
    assert titanic_glm.simulate(3, random_seed=1).equals(sims.select("sim_1", "sim_2", "sim_3"))
    assert sims.height == 891
    assert sims.columns == ["row", "sex", "survived", "trials", "sim_1", "sim_2", "sim_3"]
    assert set(np.unique(sims.select("sim_1", "sim_2", "sim_3").to_numpy())) <= {0, 1}
    with pytest.raises(ValueError, match="nsim must be a positive integer"):
        simulate(titanic_glm, nsim=0)


# ---------------------------------------------------------------------------------------------
# predict


def test_predict_fitted_rows_zero_and_groups(titanic_glmer, titanic):
    spec = titanic_glmer.spec
    b = fixed(titanic_glmer.posterior)
    u = group_effects(titanic_glmer.posterior, spec.groups[0])
    male = (titanic["sex"] == "male").to_numpy().astype(float)
    eta = b[:, [0]] + b[:, [spec.terms.index("sexmale")]] * male
    zero = predict(titanic_glmer, re="zero", output="table")
    assert titanic_glmer.predict(re="zero", output="table").equals(zero)
    assert zero.height == 891 and zero["row"].to_list() == list(range(891))
    np.testing.assert_allclose(zero["estimate"], np.median(special.expit(eta), axis=0))
    pclass = np.array([spec.groups[0].levels.index(str(v)) for v in titanic["pclass"]])
    include = predict(titanic_glmer, output="table", ci=0.9)
    np.testing.assert_allclose(
        include["estimate"], np.median(special.expit(eta + u[:, pclass]), axis=0)
    )
    np.testing.assert_allclose(
        predict(titanic_glmer), np.mean(special.expit(eta + u[:, pclass]), axis=0)
    )
    link = predict(titanic_glmer, re="groups", type_predict="link", output="table")
    np.testing.assert_allclose(link["estimate"], np.median(eta + u[:, pclass], axis=0))
    assert (include["conf_low"] < include["estimate"]).all()
    assert (include["estimate"] < include["conf_high"]).all()


def test_predict_marginal_averages_over_group_effects(titanic_glmer):
    new = pl.DataFrame({"sex": ["female", "male"]})
    long = predict(titanic_glmer, data=new, re="marginal", output="draws")
    assert long.columns == ["row", ".draw", "prediction"]
    spec = titanic_glmer.spec
    b = fixed(titanic_glmer.posterior)
    sd = group_sd(titanic_glmer.posterior, spec.groups[0])
    assert long.height == 2 * b.shape[0]
    z = np.random.default_rng(0).standard_normal(20_000)
    for row, male in ((0, 0.0), (1, 1.0)):
        draws = long.filter(pl.col("row") == row).sort(".draw")["prediction"].to_numpy()
        sel = np.arange(0, b.shape[0], 200)
        eta = b[sel, 0] + b[sel, spec.terms.index("sexmale")] * male
        monte_carlo = special.expit(eta[:, None] + sd[sel, None] * z).mean(axis=1)
        np.testing.assert_allclose(draws[sel], monte_carlo, atol=4e-3)
    summary = predict(titanic_glmer, data=new, re="marginal", output="table")
    medians = long.group_by("row").agg(pl.col("prediction").median()).sort("row")
    np.testing.assert_allclose(summary["estimate"], medians["prediction"])
    # marginal probabilities are pulled towards 1/2 relative to the typical group
    zero = predict(titanic_glmer, data=new, re="zero", output="table")
    assert abs(summary["estimate"][1] - 0.5) < abs(zero["estimate"][1] - 0.5)


def test_predict_intercept_only_model(pois_null, counts):
    out = predict(pois_null, data=pl.DataFrame({"t": [1.0, 3.0]}), output="table")
    assert out.columns == ["row", "t", "estimate", "sd", "conf_low", "conf_high"]
    assert out["estimate"][1] == pytest.approx(3 * out["estimate"][0])
    overall = counts["y"].sum() / counts["t"].sum()
    assert out["conf_low"][0] < overall < out["conf_high"][0]


def test_predict_poisson_exposure_and_link(pois_fit):
    new = pl.DataFrame({"f": ["a", "a", "c"], "t": [1.0, 2.0, 1.0]})
    resp = predict(pois_fit, data=new, output="draws")
    per_draw = resp.pivot(on="row", index=".draw", values="prediction").drop(".draw").to_numpy()
    np.testing.assert_allclose(per_draw[:, 1], 2 * per_draw[:, 0])
    link = predict(pois_fit, data=new, type_predict="link", output="table")
    np.testing.assert_allclose(link["estimate"][1] - link["estimate"][0], np.log(2.0))
    assert link.columns == ["row", "f", "t", "estimate", "sd", "conf_low", "conf_high"]
    b = fixed(pois_fit.posterior)
    c = pois_fit.spec.terms.index("fc")
    assert link["estimate"][2] == pytest.approx(np.median(b[:, 0] + b[:, c]))
    true = np.exp(LEVEL_LOG_RATE["c"])
    row = predict(pois_fit, data=new, output="table").row(2, named=True)
    assert row["conf_low"] < true < row["conf_high"]
    pandas = predict(pois_fit, data=new.to_pandas(), type_predict="link", output="table")
    np.testing.assert_allclose(pandas["estimate"], link["estimate"])
    # a glm has no group effects: every re gives the same
    np.testing.assert_array_equal(
        predict(pois_fit, data=new, re="marginal"), predict(pois_fit, data=new)
    )


def test_predict_bad_input(titanic_glmer, pois_fit, trials_fit):
    new = pl.DataFrame({"sex": ["male"], "pclass": [4]})
    with pytest.raises(ValueError, match=r"re='groups'.*'pclass'.*not in the fit: 4"):
        predict(titanic_glmer, data=new)
    assert predict(titanic_glmer, data=new, re="marginal").shape == (1,)
    with pytest.raises(ValueError, match=r"level\(s\) \['other'\] of 'sex'"):
        predict(titanic_glmer, data=pl.DataFrame({"sex": ["other"]}), re="zero")
    with pytest.raises(ValueError, match=r"needs the column\(s\) \['sex'\]"):
        predict(titanic_glmer, data=pl.DataFrame({"age": [3.0]}), re="zero")
    with pytest.raises(ValueError, match=r"\['sex', 'pclass'\].*re='groups', the default"):
        predict(titanic_glmer, data=pl.DataFrame({"age": [3.0]}))
    with pytest.raises(ValueError, match=r"needs the column\(s\) \['t'\]"):
        predict(pois_fit, data=pl.DataFrame({"f": ["a"]}))
    with pytest.raises(ValueError, match=r"column\(s\) \['x'\] must be numeric"):
        predict(trials_fit, data=pl.DataFrame({"x": ["1.5"]}))
    with pytest.raises(ValueError, match="missing values"):
        predict(pois_fit, data=pl.DataFrame({"f": ["a", None], "t": [1.0, 1.0]}), output="draws")
    with pytest.raises(ValueError, match="type_predict must be one of"):
        predict(pois_fit, type_predict="probability")
    with pytest.raises(ValueError, match="re must be one of"):
        predict(pois_fit, re="random")
    with pytest.raises(ValueError, match="ci must be between 0 and 1"):
        predict(pois_fit, ci=0)


def test_loo_is_computed_once_per_fit(titanic_glmer):
    first = titanic_glmer.loo()
    assert titanic_glmer.loo() is first
    assert bayesmer.compare(titanic_glmer, titanic_glmer, names=["a", "b"])["elpd_loo"][0] == (
        pytest.approx(first.elpd)
    )

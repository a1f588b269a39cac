"""pymer4 code runs as written: the same calls do the same thing (with Bayesian numbers) or fail
with a message naming the bayesmer way.

Where pymer4's own glm/glmer tests check something with a Bayesian meaning (shapes, scales,
``predict(data) == data['fitted']``, probit differs from logit, binomial simulations are 0/1),
the same check is made here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import special

import bayesmer
from bayesmer import glm, glmer, lmer, load_dataset, load_model
from bayesmer.draws import fixed, group_effects

SMALL = {"draws": 300, "tune": 300, "chains": 2, "progressbar": False}


@pytest.fixture(scope="module")
def sex_pclass(titanic):
    model = glm("survived ~ sex + pclass", data=titanic, family="binomial")
    model.set_factors(["sex", "pclass"])
    model.fit(random_seed=3, **SMALL)
    return model


@pytest.fixture(scope="module")
def age_glm(titanic):
    """``survived ~ age``: 177 rows dropped for a missing age."""
    model = glm("survived ~ age", data=titanic, family="binomial")
    with pytest.warns(UserWarning, match="Dropped 177 of 891 rows"):
        model.fit(random_seed=4, **SMALL)
    return model


def _pclass_index(model, data: pl.DataFrame) -> np.ndarray:
    levels = model.spec.groups[0].levels
    return np.array([levels.index(str(v)) for v in data["pclass"]])


# ---------------------------------------------------------------------------------------------
# predict, type_predict and the fitted column


def test_predict_returns_posterior_means_equal_to_fitted(titanic_glm):
    data = titanic_glm.data
    assert {"fitted", "residuals"} <= set(data.columns)
    pred = titanic_glm.predict(data)
    assert isinstance(pred, np.ndarray) and pred.shape == (891,)
    np.testing.assert_allclose(pred, data["fitted"].to_numpy(), rtol=1e-12)
    assert ((pred > 0) & (pred < 1)).all()
    b = fixed(titanic_glm.posterior)
    male = (data["sex"] == "male").to_numpy()
    eta = b[:, [0]] + b[:, [1]] * male
    np.testing.assert_allclose(pred, special.expit(eta).mean(axis=0), rtol=1e-12)
    link = titanic_glm.predict(data, type_predict="link")
    np.testing.assert_allclose(link, eta.mean(axis=0), rtol=1e-12)
    assert (link[male] < 0).all() and (link[~male] > 0).all()
    residuals = data["survived"].to_numpy() - pred
    np.testing.assert_allclose(data["residuals"].to_numpy(), residuals, rtol=1e-12)


def test_predict_table_and_draws_on_request(titanic_glm):
    table = titanic_glm.predict(pl.DataFrame({"sex": ["female", "male"]}), output="table")
    assert table.columns == ["row", "sex", "estimate", "sd", "conf_low", "conf_high"]
    draws = titanic_glm.predict(pl.DataFrame({"sex": ["male"]}), output="draws")
    assert draws.columns == ["row", ".draw", "prediction"] and draws.height == 4000
    with pytest.raises(ValueError, match="output must be one of"):
        titanic_glm.predict(output="summary")
    with pytest.raises(TypeError, match="'type'.*type_predict="):
        titanic_glm.predict(type="link")


def test_fit_type_predict_sets_the_scale_of_fitted(titanic):
    model = glm("survived ~ sex", data=titanic, family="binomial")
    model.fit(random_seed=2, type_predict="link", **SMALL)
    fitted = model.data["fitted"].to_numpy()
    np.testing.assert_allclose(fitted, model.predict(model.data, type_predict="link"))
    assert fitted.min() < 0 < fitted.max()
    # residuals stay on the response scale
    np.testing.assert_allclose(
        model.data["residuals"].to_numpy(),
        model.data["survived"].to_numpy() - model.predict(model.data),
    )
    with pytest.raises(ValueError, match="type_predict must be 'response' or 'link'"):
        model.fit(type_predict="probability", **SMALL)


def test_fitted_is_null_for_dropped_rows_and_refit_is_unchanged(age_glm, titanic):
    data = age_glm.data
    missing = titanic["age"].is_null().to_numpy()
    assert missing.sum() == 177
    assert data["fitted"].is_null().to_numpy().tolist() == missing.tolist()
    assert data["residuals"].null_count() == 177
    # as R's predict: NaN for a row missing a predictor, so predict(data) == data['fitted']
    pred = age_glm.predict(data)
    assert np.isnan(pred).tolist() == missing.tolist()
    np.testing.assert_allclose(pred, data["fitted"].to_numpy(), rtol=1e-12)
    table = age_glm.predict(data, output="table")
    assert table.height == 891 and table["estimate"].null_count() == 177
    with pytest.raises(ValueError, match=r"missing values in the column\(s\) \['age'\]"):
        age_glm.predict(data, output="draws")
    # the added columns do not change the model: a refit with the same seed gives the same
    before = age_glm.params
    n_cells = len(age_glm.spec.cells)
    age_glm.unset_factors()  # rebuild the specification from the data, fitted columns included
    with pytest.warns(UserWarning, match="Dropped 177 of 891 rows"):
        age_glm.fit(random_seed=4, **SMALL)
    assert len(age_glm.spec.cells) == n_cells
    assert age_glm.params.equals(before)


def test_fitted_poisson_rows_with_exposure():
    rng = np.random.default_rng(11)
    f = np.repeat(["a", "b", "c"], 40)
    t = rng.uniform(0.5, 3.0, f.size)
    rate = np.select([f == "a", f == "b"], [1.0, 2.5], 0.6)
    data = pl.DataFrame({"f": f, "t": t, "y": rng.poisson(rate * t)})
    model = glm("y ~ f + offset(log(t))", data=data, family="poisson")
    model.fit(random_seed=6, progressbar=False)
    assert len(model.spec.cells) == 3  # rows collapsed; fitted is spread back to them
    fitted = model.data["fitted"].to_numpy()
    np.testing.assert_allclose(model.predict(model.data), fitted, rtol=1e-10)
    np.testing.assert_allclose(model.data["residuals"].to_numpy(), data["y"].to_numpy() - fitted)
    link = model.predict(model.data, type_predict="link")
    same_level = f == "a"
    np.testing.assert_allclose(np.diff(link[same_level]), np.diff(np.log(t[same_level])))


def test_fitted_added_to_pandas_data(titanic):
    frame = titanic.select("survived", "sex").to_pandas()
    model = glm("survived ~ sex", data=frame, family="binomial")
    model.fit(random_seed=5, **SMALL)
    assert isinstance(model.data, pd.DataFrame)
    assert list(frame.columns) == ["survived", "sex"]  # the user's frame is not changed
    np.testing.assert_allclose(model.predict(model.data), model.data["fitted"].to_numpy())
    # a LazyFrame is never materialised for the columns
    lazy = glm("survived ~ sex", data=titanic.lazy(), family="binomial")
    lazy.fit(random_seed=5, **SMALL)
    assert isinstance(lazy.data, pl.LazyFrame)
    assert "fitted" not in lazy.data.collect_schema().names()


# ---------------------------------------------------------------------------------------------
# glmer: groups by default, use_rfx, one re vocabulary


def test_glmer_predict_includes_group_effects_by_default(titanic_glmer):
    data = titanic_glmer.data
    spec = titanic_glmer.spec
    b = fixed(titanic_glmer.posterior)
    u = group_effects(titanic_glmer.posterior, spec.groups[0])
    male = (data["sex"] == "male").to_numpy().astype(float)
    eta = b[:, [0]] + b[:, [spec.terms.index("sexmale")]] * male
    with_groups = special.expit(eta + u[:, _pclass_index(titanic_glmer, data)]).mean(axis=0)
    pred = titanic_glmer.predict(data)
    np.testing.assert_allclose(pred, with_groups, rtol=1e-12)
    np.testing.assert_allclose(pred, data["fitted"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(titanic_glmer.predict(data, True), pred)
    zero = titanic_glmer.predict(data, use_rfx=False)
    np.testing.assert_allclose(zero, special.expit(eta).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(titanic_glmer.predict(data, re="zero"), zero)
    assert not np.allclose(zero, pred)


def test_glmer_predict_new_groups_need_a_choice(titanic_glmer):
    new = pl.DataFrame({"sex": ["male", "female"], "pclass": [4, 1]})
    with pytest.raises(ValueError, match=r"'pclass'.*not in the fit: 4.*re='marginal'.*re='zero'"):
        titanic_glmer.predict(new)
    assert titanic_glmer.predict(new, re="zero").shape == (2,)
    assert titanic_glmer.predict(new, re="marginal").shape == (2,)
    with pytest.raises(TypeError, match="allow_new_levels.*re='zero'.*re='marginal'"):
        titanic_glmer.predict(new, allow_new_levels=True)
    with pytest.raises(TypeError, match="either re= or pymer4's use_rfx="):
        titanic_glmer.predict(new, use_rfx=False, re="zero")
    with pytest.raises(ValueError, match="re='include' is now re='groups'"):
        titanic_glmer.predict(new, re="include")


def test_predict_emmeans_and_empredict_speak_the_same_re(titanic_glmer):
    rows = titanic_glmer.data.head(3)
    for re in ("groups", "zero", "marginal"):
        assert titanic_glmer.predict(rows, re=re).shape == (3,)
        assert titanic_glmer.emmeans("sex", re=re).height == 2
        assert titanic_glmer.empredict({"sex": "male"}, re=re).height == 1
    with pytest.raises(ValueError, match="re must be one of"):
        titanic_glmer.emmeans("sex", re="include")


# ---------------------------------------------------------------------------------------------
# simulate


def test_simulate_shape_seed_and_zero_one(titanic_glmer):
    sims = titanic_glmer.simulate(3, random_seed=1)
    assert sims.shape == (891, 3) and sims.columns == ["sim_1", "sim_2", "sim_3"]
    assert set(np.unique(sims.to_numpy())) <= {0, 1}
    assert sims.equals(titanic_glmer.simulate(nsim=3, random_seed=1))
    assert sims.equals(titanic_glmer.simulate(3, seed=1))  # pymer4's name for the seed
    assert not sims.equals(titanic_glmer.simulate(3, random_seed=2))
    with pytest.raises(TypeError, match="either random_seed= or pymer4's seed="):
        titanic_glmer.simulate(3, seed=1, random_seed=1)
    with pytest.raises(TypeError, match="'n'.*nsim="):
        titanic_glmer.simulate(n=3)
    with pytest.raises(TypeError, match="either re= or pymer4's use_rfx="):
        titanic_glmer.simulate(3, use_rfx=True, re="groups")
    with pytest.raises(ValueError, match="re must be one of"):
        titanic_glmer.simulate(2, re="include_new")


def test_simulate_use_rfx_false_draws_new_group_effects(titanic_glmer):
    observed = titanic_glmer.data["survived"].to_numpy()
    n = 400
    cond = titanic_glmer.simulate(n, use_rfx=True, random_seed=3).to_numpy()
    new = titanic_glmer.simulate(n, use_rfx=False, random_seed=3).to_numpy()
    assert titanic_glmer.simulate(n, re="new", random_seed=3).to_numpy().tolist() == new.tolist()
    # each data set's mean per class: fixed with the fitted effects, spread with new ones
    pclass = titanic_glmer.data["pclass"].to_numpy()
    third = pclass == 3
    spread_cond = cond[third].mean(axis=0).std()
    spread_new = new[third].mean(axis=0).std()
    assert spread_new > 2 * spread_cond
    # pymer4's check: new group effects track the data less closely
    corr_cond = np.corrcoef(cond.mean(axis=1), observed)[0, 1]
    corr_new = np.corrcoef(new.mean(axis=1), observed)[0, 1]
    assert corr_new < corr_cond
    zero = titanic_glmer.simulate(n, re="zero", random_seed=3).to_numpy()
    assert abs(zero[third].mean() - cond[third].mean()) > 0.05


def test_simulate_with_data_keeps_the_rows(titanic_glm):
    sims = titanic_glm.simulate(2, random_seed=1, with_data=True)
    assert sims.columns == ["row", "sex", "survived", "trials", "sim_1", "sim_2"]


# ---------------------------------------------------------------------------------------------
# fit(): pymer4's positional order, rejected arguments, nutpie settings


def test_fit_positional_order_is_pymer4s(titanic):
    model = glm("survived ~ sex", data=titanic, family="binomial")
    summary = model.fit(True, True, random_seed=1, **SMALL)
    assert model.exponentiate is True
    assert "exp() of the link scale" in str(summary)
    with pytest.raises(TypeError, match="positional"):
        model.fit(False, False, 500)
    # nutpie settings it knows pass the check
    model.fit(random_seed=1, maxdepth=8, adaptation="low_rank", mass_matrix_gamma=1e-5, **SMALL)
    assert model.sampler_kwargs["maxdepth"] == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conf_method": "boot"}, "'conf_method'.*credible intervals.*ci="),
        ({"nboot": 100}, "'nboot'.*draws="),
        ({"save_boots": False}, "'save_boots'.*model.posterior"),
        ({"parallel": "multicore", "ncpus": 4}, "'parallel'.*chains="),
        ({"conf_type": "perc"}, "'conf_type'.*ci="),
        ({"bootMer_kwargs": {}}, "'bootMer_kwargs'"),
        ({"verbose": False}, "'verbose'.*progressbar=False"),
        ({"conf_level": 0.9}, "'conf_level'.*ci="),
        ({"foo": 1}, "Unknown sampler setting 'foo'"),
        ({"target_accept": "high"}, "target_accept='high'"),
        ({"mass_matrix_gamma": 1e-5}, "mass_matrix_gamma"),
        ({"seed": 3}, "'seed' is set by bayesmer: use random_seed="),
        ({"cores": 2}, "'cores' is set by bayesmer"),
        ({"adaptation": "full"}, "adaptation must be one of"),
    ],
)
def test_fit_rejects_before_compiling(titanic, kwargs, message):
    model = glm("survived ~ sex", data=titanic, family="binomial")
    with pytest.raises(TypeError, match=message):
        model.fit(**kwargs)
    assert model._sampler is None and model.posterior is None


# ---------------------------------------------------------------------------------------------
# emmeans


def test_emmeans_list_gives_the_grid_first_factor_fastest(sex_pclass):
    table = sex_pclass.emmeans(["sex", "pclass"])
    assert table.columns[:3] == ["sex", "pclass", "prob"]
    rows = [(str(s), str(p)) for s, p in table.select("sex", "pclass").iter_rows()]
    assert rows == [(s, p) for p in ("1", "2", "3") for s in ("female", "male")]
    b = fixed(sex_pclass.posterior)
    terms = sex_pclass.spec.terms
    eta = b[:, 0] + b[:, terms.index("sexmale")] + b[:, terms.index("pclass3")]
    assert table["prob"][5] == pytest.approx(np.median(special.expit(eta)), rel=1e-9)
    contrasts = sex_pclass.emmeans(["sex", "pclass"], contrasts="pairwise")
    assert contrasts.height == 15
    assert str(contrasts["contrast"][0]) == "female 1 / male 1"
    weights = {"male3_minus_female1": [-1, 0, 0, 0, 0, 1]}
    link = sex_pclass.emmeans(["sex", "pclass"], contrasts=weights, type="link")
    diff = b[:, terms.index("sexmale")] + b[:, terms.index("pclass3")]
    assert link["estimate"][0] == pytest.approx(np.median(diff), rel=1e-9)
    with pytest.raises(ValueError, match="has 2 weights but 'sex, pclass' has 6 levels"):
        sex_pclass.emmeans(["sex", "pclass"], contrasts={"x": [1, -1]})


def test_emmeans_trend_is_link_scale_unless_regrid(age_glm):
    b = fixed(age_glm.posterior)
    default = age_glm.emmeans("age")
    assert default.columns[0] == "age_trend"
    assert default["age_trend"][0] == pytest.approx(np.median(b[:, 1]), rel=1e-6)
    assert age_glm.emmeans("age", type="link")["age_trend"][0] == default["age_trend"][0]
    response = age_glm.emmeans("age", regrid="response", draws=True)
    mean_age = float(np.average(age_glm.spec.cells["age"], weights=age_glm.spec.rows))
    p = special.expit(b[:, 0] + b[:, 1] * mean_age)
    np.testing.assert_allclose(response["age_trend"], p * (1 - p) * b[:, 1], rtol=1e-5)
    with pytest.raises(ValueError, match="regrid must be None or 'response'"):
        age_glm.emmeans("age", regrid="link")


def test_regrid_needs_a_numeric_variable(sex_pclass):
    with pytest.raises(ValueError, match="regrid='response' applies to slopes"):
        sex_pclass.emmeans("sex", regrid="response")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p_adjust": "sidak"}, "'p_adjust'.*no multiplicity adjustment"),
        ({"normalize": True}, "'normalize'.*divide them by their norm"),
        ({"apply_transforms": False}, "'apply_transforms'.*at= values"),
        ({"level": 0.9}, "'level'.*ci="),
    ],
)
def test_emmeans_rejects_pymer4_only_arguments(titanic_glm, kwargs, message):
    with pytest.raises(TypeError, match=message):
        titanic_glm.emmeans("sex", **kwargs)
    with pytest.raises(TypeError, match=message):
        titanic_glm.empredict({"sex": "male"}, **kwargs)


# ---------------------------------------------------------------------------------------------
# factors, summary, attributes, io, links


def test_unset_factors_by_column(titanic):
    model = glm("survived ~ sex + pclass", data=titanic, family="binomial")
    model.set_factors(["sex", "pclass"])
    model.unset_factors("pclass")
    assert model.factors == {"sex": None}
    assert "pclass" in model.spec.numeric
    model.set_factors({"pclass": ["3", "2", "1"]})
    model.unset_factors(["sex"])
    assert model.factors == {"pclass": ["3", "2", "1"]}
    model.unset_factors()
    assert model.factors == {}
    with pytest.raises(ValueError, match=r"\['age'\] not set as factor"):
        model.unset_factors("age")


def test_summary_decimals(titanic_glm):
    row = titanic_glm.result_fit.row(1, named=True)
    assert f"{row['estimate']:.1f}" in str(titanic_glm.summary(decimals=1)).split("sexmale")[1]
    text = str(titanic_glm.summary(decimals=5))
    assert f"{row['estimate']:.5f}" in text
    html = titanic_glm.summary(decimals=2)._repr_html_()
    assert f"{round(row['estimate'], 2)}" in html
    with pytest.raises(ValueError, match="decimals must be a non-negative integer"):
        titanic_glm.summary(decimals=-1)


def test_family_link_and_repr(titanic):
    model = glm("survived ~ sex", data=titanic, family="binomial")
    assert (model.family, model.link) == ("binomial", "logit")
    assert repr(model) == (
        "bayesmer.glm(fitted=False, formula=survived ~ sex, family=binomial, link=logit)"
    )
    probit = glmer("survived ~ sex + (1|pclass)", data=titanic, link="probit", family="binomial")
    assert probit.link == "probit"


@pytest.mark.parametrize(
    ("family", "link", "message"),
    [
        ("poisson", "identity", "link='identity' for the poisson family is not supported.*'log'"),
        ("poisson", "sqrt", "link='sqrt' for the poisson family is not supported.*two mirror"),
        ("binomial", "log", "link='log' for the binomial family is not supported.*exceed 1"),
        ("binomial", "cauchit", "link='cauchit'.*'logit', 'probit' or 'cloglog'"),
        ("poisson", "inverse", r"Unknown link 'inverse'.*binomial: logit, probit, cloglog"),
    ],
)
def test_links_pymer4_accepts_have_an_answer(titanic, family, link, message):
    with pytest.raises(ValueError, match=message):
        glm("survived ~ sex", data=titanic, family=family, link=link)


def test_probit_predictions_differ_from_logit(titanic, titanic_glm):
    probit = glm("survived ~ sex", data=titanic, family="binomial", link="probit")
    probit.fit(random_seed=1, progressbar=False)
    new = pl.DataFrame({"sex": ["female", "male"]})
    logit_link = titanic_glm.predict(new, type_predict="link")
    probit_link = probit.predict(new, type_predict="link")
    assert not np.allclose(logit_link, probit_link, atol=0.1)
    # both fit the same proportions
    np.testing.assert_allclose(probit.predict(new), titanic_glm.predict(new), atol=0.02)


def test_save_and_load_at_top_level_any_extension(titanic_glm, tmp_path):
    from bayesmer import save_model

    assert bayesmer.io.save_model is save_model
    path = tmp_path / "model.joblib"
    save_model(titanic_glm, path)
    loaded = load_model(path)
    assert loaded.params.equals(titanic_glm.params)
    assert loaded.data["fitted"].equals(titanic_glm.data["fitted"])
    np.testing.assert_allclose(loaded.predict(loaded.data), loaded.data["fitted"].to_numpy())


# ---------------------------------------------------------------------------------------------
# lmer and the gaussian default: pymer4's most common model, run as written


@pytest.fixture(scope="module")
def sleep():
    return load_dataset("sleepstudy")


@pytest.mark.slow
def test_lmer_random_slopes_as_pymer4_writes_it(sleep):
    """``lmer('Reaction ~ Days + (Days|Subject)', data=sleep)``: ranef_var holds lme4's
    VarCorr rows, the subject sds and their correlation, then the residual sd (4 rows);
    fixef (lme4's coef) and ranef are one row per subject. Slow: the correlation needs
    2 chains x 1000 draws for the convergence gate's bulk ESS (about 0.2 per draw)."""
    model = lmer("Reaction ~ Days + (Days|Subject)", data=sleep)
    assert (model.family, model.link) == ("gaussian", "identity")
    model.fit(random_seed=2, chains=4, draws=1000, tune=1000, progressbar=False)
    var = model.ranef_var
    assert var.columns == ["group", "term", "estimate", "conf_low", "conf_high"]
    assert var["group"].to_list() == ["Subject", "Subject", "Subject", "Residual"]
    assert var["term"].to_list() == [
        "sd__(Intercept)",
        "sd__Days",
        "cor__(Intercept).Days",
        "sd__Observation",
    ]
    assert var.filter(pl.col("term").str.starts_with("sd__"))["estimate"].min() > 1.0
    assert model.fixef.columns == ["level", "(Intercept)", "Days"] and model.fixef.height == 18
    assert model.ranef.columns == ["level", "(Intercept)", "Days"] and model.ranef.height == 18
    assert model.result_fit["term"].to_list() == ["(Intercept)", "Days", "sigma"]
    np.testing.assert_allclose(model.predict(model.data), model.data["fitted"].to_numpy())
    residuals = model.data["Reaction"] - model.data["fitted"]
    np.testing.assert_allclose(model.data["residuals"].to_numpy(), residuals.to_numpy())


def test_glmer_without_family_fits_the_gaussian_lmer(sleep):
    """pymer4's default family is gaussian: ``glmer`` without one is ``lmer``, and ``(1|S)``
    gives two ranef_var rows."""
    model = glmer("Reaction ~ Days + (1|Subject)", data=sleep)
    assert model.family == "gaussian"
    model.fit(random_seed=3, chains=2, draws=1000, tune=1000, progressbar=False)
    assert model.ranef_var["group"].to_list() == ["Subject", "Residual"]
    assert model.ranef_var["term"][1] == "sd__Observation"
    assert model.result_fit["term"].to_list() == ["(Intercept)", "Days", "sigma"]
    # the residual sd in ms, not a probability or rate: lme4 gives 31.0
    assert 25.0 < model.result_fit["estimate"][2] < 40.0

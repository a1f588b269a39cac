"""prior_summary and sample_prior: every prior in force, in words, and draws from it."""

from __future__ import annotations

import bambi
import numpy as np
import polars as pl
import pytest

from bayesmer import glm, glmer
from bayesmer.priors import prior_summary, sample_prior


def _male_sd(titanic) -> float:
    p = float((titanic["sex"] == "male").mean())
    return float(np.sqrt(p * (1 - p)))


def test_prior_summary_titanic_glmer_lists_every_default(titanic_glmer, titanic):
    table = titanic_glmer.prior_summary()
    assert table.columns == ["parameter", "kind", "prior", "source", "note"]
    assert table["parameter"].to_list() == ["(Intercept)", "sexmale", "1|pclass"]
    assert table["kind"].to_list() == ["intercept", "coefficient", "group sd"]
    assert table["source"].to_list() == ["default"] * 3
    rows = {r["parameter"]: r for r in table.iter_rows(named=True)}
    assert rows["(Intercept)"]["prior"] == "Normal(mu=0, sigma=2.5)"
    assert "centred" in rows["(Intercept)"]["note"]
    sigma = round(2.5 / _male_sd(titanic), 4)
    assert rows["sexmale"]["prior"] == f"Normal(mu=0, sigma={sigma:.4g})"
    assert "autoscaled" in rows["sexmale"]["note"]
    assert rows["1|pclass"]["prior"] == "HalfNormal(sigma=2.5)"
    assert "pclass" in rows["1|pclass"]["note"]


def test_prior_summary_user_priors_tuple_and_bambi(titanic):
    model = glmer(
        "survived ~ sex + age + (1|pclass)",
        data=titanic.drop_nulls("age"),
        priors={
            "sexmale": ("normal", 0, 1),
            "age": bambi.Prior("StudentT", nu=3, mu=0, sigma=0.1),
            "1|pclass": ("exponential", 2),
        },
        family="binomial",
    )
    table = prior_summary(model.spec)
    rows = {r["parameter"]: r for r in table.iter_rows(named=True)}
    assert [rows[k]["source"] for k in ("(Intercept)", "sexmale", "age", "1|pclass")] == [
        "default",
        "user",
        "user",
        "user",
    ]
    assert rows["sexmale"]["prior"] == "Normal(mu=0, sigma=1)"
    assert rows["age"]["prior"] == "StudentT(nu=3, mu=0, sigma=0.1)"
    assert rows["1|pclass"]["prior"] == "Exponential(lam=2)"
    assert "not autoscaled" in rows["age"]["note"]
    assert model.prior_summary().equals(table)


def test_prior_summary_glm_without_intercept(titanic):
    model = glm("survived ~ 0 + sex", data=titanic, family="binomial")
    table = model.prior_summary()
    assert table["parameter"].to_list() == ["sexfemale", "sexmale"]
    assert table["kind"].to_list() == ["coefficient", "coefficient"]


@pytest.mark.parametrize(
    ("priors", "match"),
    [
        ({"sexfemale": ("normal", 0, 1)}, "does not have"),
        ({"1|pclass": ("normal", 0, 1)}, "positive distribution"),
        ({"sexmale": ("normal", 0)}, "takes 2 parameter"),
        ({"sexmale": ("wide", 0, 1)}, "must name a distribution"),
    ],
)
def test_bad_priors_are_refused(titanic, priors, match):
    model = glmer("survived ~ sex + (1|pclass)", data=titanic, priors=priors, family="binomial")
    with pytest.raises(ValueError, match=match):
        model.prior_summary()


def test_sample_prior_draws_the_reported_variables(titanic_glmer, titanic):
    spec = titanic_glmer.spec
    tree = sample_prior(spec, draws=400, random_seed=3)
    assert list(tree.children) == ["prior"]
    prior = tree["prior"].to_dataset()
    assert set(prior.data_vars) == {"b", "sd_pclass", "u_pclass"}
    assert prior["b"].shape == (1, 400, 2)
    assert list(prior["b"]["term"].values) == ["(Intercept)", "sexmale"]
    assert prior["u_pclass"].shape == (1, 400, 3)
    assert float(prior["sd_pclass"].min()) > 0
    # sexmale ~ Normal(0, 2.5 / sd(male)): its spread is the autoscaled sigma.
    sigma = 2.5 / _male_sd(titanic)
    assert np.std(prior["b"].sel(term="sexmale").values) == pytest.approx(sigma, rel=0.15)
    # sd_pclass ~ HalfNormal(2.5): mean 2.5 * sqrt(2 / pi).
    assert float(prior["sd_pclass"].mean()) == pytest.approx(2.5 * np.sqrt(2 / np.pi), rel=0.15)
    again = sample_prior(spec, draws=400, random_seed=3)["prior"].to_dataset()
    np.testing.assert_array_equal(again["b"].values, prior["b"].values)


def test_model_sample_prior_stores_the_draws(titanic):
    model = glm(
        "survived ~ sex",
        data=titanic,
        priors={"sexmale": bambi.Prior("Normal", mu=1, sigma=0.5)},
        family="binomial",
    )
    tree = model.sample_prior(draws=500, random_seed=1)
    assert model.prior is tree
    b = tree["prior"]["b"].sel(term="sexmale").values
    assert np.mean(b) == pytest.approx(1.0, abs=0.1)
    assert np.std(b) == pytest.approx(0.5, rel=0.15)


@pytest.mark.parametrize("draws", [0, -5, 2.5, True])
def test_sample_prior_bad_draws(titanic_glmer, draws):
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        sample_prior(titanic_glmer.spec, draws=draws)


@pytest.mark.slow
@pytest.mark.parametrize(
    "tight", [("normal", 0, 0.05), bambi.Prior("Normal", mu=0, sigma=0.05)], ids=["tuple", "bambi"]
)
def test_tight_user_prior_pulls_the_posterior(titanic, titanic_glm, tight):
    default = titanic_glm.params.filter(term="sexmale")["estimate"].item()
    assert default < -2.0
    model = glm("survived ~ sex", data=titanic, priors={"sexmale": tight}, family="binomial")
    model.fit(random_seed=1, progressbar=False, draws=500, tune=500)
    row = model.prior_summary().filter(parameter="sexmale").row(0, named=True)
    assert row["source"] == "user"
    assert row["prior"] == "Normal(mu=0, sigma=0.05)"
    pulled = model.params.filter(term="sexmale")["estimate"].item()
    assert -0.5 < pulled < 0


def test_changes_to_factors_or_priors_forget_stale_state(titanic):
    """Prior draws and specs built for other factors or priors are never reused (item 8)."""
    model = glm("survived ~ sex", data=titanic, family="binomial")
    model.sample_prior(draws=200, random_seed=1)
    assert model.spec.terms == ["(Intercept)", "sexmale"]
    # Releveling renames the terms: old prior draws would be paired with the wrong term.
    model.set_factors({"sex": ["male", "female"]})
    assert model.prior is None
    assert model.spec.terms == ["(Intercept)", "sexfemale"]
    model.sample_prior(draws=200, random_seed=1)
    assert list(model.prior["prior"]["b"].coords["term"].values) == ["(Intercept)", "sexfemale"]
    model.unset_factors()
    assert model.prior is None
    assert model.spec.terms == ["(Intercept)", "sexmale"]
    # New priors: a new spec and no prior draws from the old ones.
    model.sample_prior(draws=200, random_seed=1)
    model.priors = {"sexmale": ("normal", 3, 0.1)}
    assert model.prior is None
    assert model.spec.priors["sexmale"].describe() == "Normal(mu=3, sigma=0.1)"
    b = model.sample_prior(draws=400, random_seed=1)["prior"]["b"].sel(term="sexmale").values
    assert np.mean(b) == pytest.approx(3.0, abs=0.05)
    with pytest.raises(TypeError, match="does not support item assignment"):
        model.priors["sexmale"] = ("normal", 0, 1)
    # Factors assigned directly (not through set_factors) are seen as well.
    model.priors = {}
    model.factors = {"sex": ["male", "female"]}
    assert model.spec.terms == ["(Intercept)", "sexfemale"]


@pytest.mark.parametrize("units", [1e-12, 1e6])
def test_autoscaled_prior_in_any_units(titanic, units):
    """sigma = 2.5 / sd(x) to 3 significant digits or better whatever the units of x (it was
    rounded to 4 decimals: Normal(0, 0) for a predictor in millions)."""
    data = titanic.with_columns(pl.col("fare") * units)
    model = glm("survived ~ fare", data, family="binomial")
    fare = data["fare"].drop_nulls().to_numpy()
    sigma = model.spec.priors["fare"].params["sigma"]
    assert sigma == pytest.approx(2.5 / fare.std(), rel=5e-3)
    row = prior_summary(model.spec).filter(pl.col("parameter") == "fare").row(0, named=True)
    assert row["prior"] == f"Normal(mu=0, sigma={sigma:.4g})"


def test_autoscaled_prior_keeps_four_decimals_in_usual_units(titanic):
    """Predictors with sd up to 250 keep the 4-decimal sigma they always had."""
    for column in ("fare", "sibsp"):
        x = titanic[column].drop_nulls().to_numpy()
        sigma = (
            glm(f"survived ~ {column}", titanic, family="binomial")
            .spec.priors[column]
            .params["sigma"]
        )
        assert sigma == round(2.5 / x.std(), 4)

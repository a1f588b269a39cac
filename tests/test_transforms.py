"""Calls in the fixed part (log, I(x^2), scale, C...) and grouping syntax (a/b, a:b).

Checked against hand-computed design columns and R's term names, on the model's own
reference grid (emmeans evaluates I(age^2) at the mean age, as R's emmeans does), and by the
equality of the nested-syntax model with the two-term model bayesmer already fitted.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from fakes import fake_posterior
from scipy import special

from bayesmer import glm, glmer, load_dataset
from bayesmer.draws import fixed
from bayesmer.emmeans import emmeans
from bayesmer.pymc_model import build_model


@pytest.fixture(scope="module")
def contraception():
    return load_dataset("contraception")


def test_contraception_terms_are_named_as_lme4(contraception):
    spec = glmer(
        "use01 ~ age + I(age^2) + urban + livch + (1|district)", contraception, family="binomial"
    ).spec
    assert spec.terms == [
        "(Intercept)",
        "age",
        "I(age^2)",
        "urbanY",
        "livch1",
        "livch2",
        "livch3+",
    ]
    age = spec.cells["age"].to_numpy()
    np.testing.assert_allclose(spec.X[:, 2], age**2, rtol=1e-12)
    assert spec.numeric == ["age"]


def test_elementwise_calls_and_interactions(contraception):
    spec = glm(
        "use01 ~ log(age + 20) + sqrt(age + 20):urban + exp(age / 10)",
        contraception,
        family="binomial",
    ).spec
    assert spec.terms == [
        "(Intercept)",
        "log(age + 20)",
        "sqrt(age + 20):urbanN",
        "sqrt(age + 20):urbanY",
        "exp(age/10)",
    ]
    age = spec.cells["age"].to_numpy()
    urban = spec.cells["urban"].to_numpy()
    np.testing.assert_allclose(spec.X[:, 1], np.log(age + 20), rtol=1e-12)
    np.testing.assert_allclose(spec.X[:, 3], np.sqrt(age + 20) * (urban == "Y"), rtol=1e-12)
    np.testing.assert_allclose(spec.X[:, 4], np.exp(age / 10), rtol=1e-12)


def test_scale_uses_the_data_rows_not_the_cells():
    # x = 0 on 90 rows and 10 on 10 rows: 2 cells, but the mean over rows is 1.
    data = pl.DataFrame({"y": [0, 1] * 50, "x": [0.0] * 90 + [10.0] * 10})
    spec = glm("y ~ scale(x)", data, family="binomial").spec
    assert spec.collapsed and len(spec.cells) == 2
    assert spec.terms == ["(Intercept)", "scale(x)"]
    x = data["x"].to_numpy()
    assert spec.scaling == {"x": (pytest.approx(x.mean()), pytest.approx(x.std(ddof=1)))}
    cells_x = spec.cells["x"].to_numpy()
    np.testing.assert_allclose(spec.X[:, 1], (cells_x - x.mean()) / x.std(ddof=1), rtol=1e-12)
    centred = glm("y ~ center(x)", data, family="binomial").spec
    np.testing.assert_allclose(centred.X[:, 1], centred.cells["x"].to_numpy() - 1.0, rtol=1e-12)
    # New data keep the training mean and sd (R's makepredictcall).
    new = spec.design_matrix(pl.DataFrame({"x": [5.0]}))
    np.testing.assert_allclose(new[0, 1], (5.0 - x.mean()) / x.std(ddof=1), rtol=1e-12)


def test_emmeans_holds_age_at_its_mean_inside_i(contraception):
    """emmeans('urban'): I(age^2) at (mean age)^2, not at the mean of age^2 (R's emmeans)."""
    model = glm("use01 ~ age + I(age^2) + urban", contraception, family="binomial")
    b = fixed(fake_posterior(model).posterior)
    mean_age = contraception["age"].mean()
    res = emmeans(model, "urban", type="link", draws=True)
    for k, level in enumerate(["N", "Y"]):
        expected = b[:, 0] + b[:, 1] * mean_age + b[:, 2] * mean_age**2 + b[:, 3] * k
        got = res.filter(pl.col("urban") == level)["emmean"].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10)
    # The age slope at age 10 is the derivative b1 + 2 b2 age (link scale).
    trend = emmeans(model, "age", at={"age": 10.0}, type="link", draws=True)
    np.testing.assert_allclose(trend["age_trend"].to_numpy(), b[:, 1] + 20 * b[:, 2], rtol=1e-6)
    # Predictions on new data go through the same transforms.
    pred = model.predict(pl.DataFrame({"age": [2.0], "urban": ["Y"]}), output="draws")
    eta = b[:, 0] + 2 * b[:, 1] + 4 * b[:, 2] + b[:, 3]
    np.testing.assert_allclose(pred["prediction"].to_numpy(), special.expit(eta), rtol=1e-10)


def test_c_makes_a_numeric_column_a_factor(titanic):
    spec = glm("survived ~ C(pclass) + sex", titanic, family="binomial").spec
    assert spec.terms == ["(Intercept)", "C(pclass)2", "C(pclass)3", "sexmale"]
    assert spec.factors["pclass"] == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("formula", "match"),
    [
        ("survived ~ log(fare)", r"\['log\(fare\)'\] .* are not finite"),
        ("survived ~ log(sex)", r"log\(sex\) .* needs numeric columns, but \['sex'\] is a factor"),
        ("survived ~ scale(one)", r"scale\(one\): the column 'one' is constant"),
    ],
)
def test_bad_transforms_are_named(titanic, formula, match):
    data = titanic.with_columns(one=pl.lit(1.0))
    with pytest.raises(ValueError, match=match):
        _ = glm(formula, data, family="binomial").spec


def test_nested_syntax_is_the_two_term_model(grouseticks):
    """(1|LOCATION/BROOD) = (1|LOCATION) + (1|LOCATION:BROOD): same structure and likelihood
    as (1|LOCATION) + (1|BROOD) (brood labels are unique across locations), levels renamed."""
    formula = "TICKS ~ YEAR + cHEIGHT + (1|LOCATION/BROOD)"
    nested = glmer(formula, grouseticks, family="poisson").spec
    plain = glmer(
        "TICKS ~ YEAR + cHEIGHT + (1|LOCATION) + (1|BROOD)", grouseticks, family="poisson"
    ).spec
    assert [g.name for g in nested.groups] == ["LOCATION", "LOCATION:BROOD"]
    loc, inner = nested.groups
    assert inner.parent == "LOCATION" and loc.parent is None
    brood = next(g for g in plain.groups if g.name == "BROOD")
    # the combined labels are 'location:brood', one per brood
    pairs = grouseticks.select("LOCATION", "BROOD").unique()
    assert sorted(inner.levels) == sorted(f"{a}:{b}" for a, b in pairs.iter_rows())
    to_brood = {lv: lv.split(":")[1] for lv in inner.levels}
    perm = np.array(
        [inner.levels.index(next(k for k, v in to_brood.items() if v == b)) for b in brood.levels]
    )
    np.testing.assert_array_equal(inner.centred[perm], brood.centred)
    assert len(nested.cells) == len(plain.cells)
    np.testing.assert_array_equal(nested.X, plain.X)
    # Same log density at corresponding points (level order differs).
    m_nested, m_plain = build_model(nested), build_model(plain)
    point = m_plain.initial_point()
    rng = np.random.default_rng(1)
    point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in point.items()}
    # centred (m_) and non-centred (z_) levels are stored in level order within each subset
    subsets = {
        "m_": (np.flatnonzero(brood.centred), np.flatnonzero(inner.centred)),
        "z_": (np.flatnonzero(~brood.centred), np.flatnonzero(~inner.centred)),
    }
    mapped = {}
    for name, value in point.items():
        if "BROOD" not in name:
            mapped[name] = value
            continue
        if name[:2] in subsets:
            plain_levels, nested_levels = subsets[name[:2]]
            position = {lv: i for i, lv in enumerate(nested_levels)}
            out = np.empty_like(value)
            out[[position[perm[lv]] for lv in plain_levels]] = value
            value = out
        mapped[name.replace("BROOD", "LOCATION:BROOD")] = value
    assert set(mapped) == set(m_nested.initial_point())
    lp_plain = m_plain.compile_logp()(point)
    lp_nested = m_nested.compile_logp()(mapped)
    assert lp_nested == pytest.approx(lp_plain, rel=1e-12)


def test_combined_grouping_factor(titanic):
    model = glmer(
        "survived ~ sex + (1|pclass:embarked)", titanic.drop_nulls("embarked"), family="binomial"
    )
    spec = model.spec
    (g,) = spec.groups
    assert g.name == "pclass:embarked"
    observed = titanic.drop_nulls("embarked").select("pclass", "embarked").unique()
    assert sorted(g.levels) == sorted(f"{a}:{b}" for a, b in observed.iter_rows())
    # predict with the fitted group effects builds the same combined labels from new data
    fake_posterior(model)
    rows = pl.DataFrame({"sex": ["male"], "pclass": [1], "embarked": ["S"]})
    pred = model.predict(rows, re="groups", type_predict="link", output="draws")
    b = model.posterior["posterior"]["b"].values.reshape(-1, 2)
    u = model.posterior["posterior"][g.effect_name].sel({g.dim: "1:S"}).values.ravel()
    np.testing.assert_allclose(pred["prediction"].to_numpy(), b[:, 0] + b[:, 1] + u, rtol=1e-10)

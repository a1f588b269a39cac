"""Bad input gets a clear error naming the culprit, before any compilation or sampling."""

import numpy as np
import pandas as pd
import polars as pl
import pytest

from bayesmer import NotFittedError, glm, glmer
from bayesmer.collapse import Y


@pytest.fixture
def small():
    rng = np.random.default_rng(0)
    n = 60
    return pl.DataFrame(
        {
            "y": rng.integers(0, 2, n),
            "count": rng.poisson(3, n),
            "x": rng.normal(size=n),
            "sex": rng.choice(["female", "male"], n),
            "g": rng.choice(["a", "b", "c"], n),
            "one": ["only"] * n,
            "s": rng.integers(0, 5, n),
            "f": rng.integers(0, 5, n),
        }
    )


def test_unknown_column_is_named_at_construction(small):
    with pytest.raises(ValueError, match=r"\['age'\] in the formula .* not in the data"):
        glm("y ~ age", small, family="binomial")


def test_unknown_family_and_link(small):
    with pytest.raises(ValueError, match="Unknown family 'gamma'"):
        glm("y ~ x", small, family="gamma")
    with pytest.raises(ValueError, match="Unknown link 'logit' for the gaussian family"):
        glm("x ~ y", small, link="logit")
    with pytest.raises(ValueError, match="Unknown link 'identity' for the binomial family"):
        glm("y ~ x", small, link="identity", family="binomial")
    with pytest.raises(ValueError, match="Unknown link 'logit' for the poisson family"):
        glm("count ~ x", small, family="poisson", link="logit")


def test_random_effects_in_glm_and_none_in_glmer(small):
    with pytest.raises(ValueError, match="glm does not take random effects.*use glmer"):
        glm("y ~ x + (1|g)", small, family="binomial")
    with pytest.raises(ValueError, match="glmer needs at least one random intercept"):
        glmer("y ~ x", small, family="binomial")


def test_calls_inside_random_terms_are_not_supported_yet(small):
    with pytest.raises(ValueError, match=r"no calls such as log\(x\) inside random terms"):
        glmer("y ~ x + (log(x)|g)", small, family="binomial")


def test_binomial_outcome_must_be_binary(small):
    with pytest.raises(ValueError, match=r"Binomial outcome 'count' must be 0/1.*cbind"):
        glm("count ~ x", small, family="binomial").fit()
    with pytest.raises(ValueError, match="Binomial outcome 'g' must have exactly two levels"):
        glm("g ~ x", small, family="binomial").fit()


def test_two_level_string_outcome_is_accepted(small):
    spec = glm("sex ~ x", small, family="binomial").spec
    assert spec.response_levels == ("female", "male")
    assert spec.y.sum() == (small["sex"] == "male").sum()


def test_cbind_counts_are_checked(small):
    neg = small.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(-1).otherwise("f").alias("f")
    )
    with pytest.raises(ValueError, match=r"cbind\(\) column 'f' has negative counts"):
        glm("cbind(s, f) ~ x", neg, family="binomial").fit()
    with pytest.raises(ValueError, match=r"Successes 's' exceed trials 'f' in \d+ row"):
        glm("cbind(s, f - s) ~ x", small, family="binomial").fit()


def test_poisson_outcome_checked(small):
    neg = small.with_columns((pl.col("count") - 5).alias("count"))
    with pytest.raises(ValueError, match="Poisson outcome 'count' has negative values"):
        glm("count ~ x", neg, family="poisson").fit()
    frac = small.with_columns((pl.col("count") + 0.5).alias("count"))
    with pytest.raises(ValueError, match="Poisson outcome 'count' has values that are not whole"):
        glm("count ~ x", frac, family="poisson").fit()
    with pytest.raises(ValueError, match="Poisson outcome 'sex' must hold non-negative whole"):
        glm("sex ~ x", small, family="poisson").fit()


def test_single_level_grouping_column(small):
    with pytest.raises(ValueError, match=r"Grouping column 'one' has a single level"):
        glmer("y ~ x + (1|one)", small, family="binomial").fit()


def test_missing_values_dropped_with_a_warning(small):
    holes = small.with_columns(
        pl.when(pl.int_range(pl.len()) < 5).then(None).otherwise(pl.col("x")).alias("x")
    )
    model = glm("y ~ x", holes, family="binomial")
    with pytest.warns(UserWarning, match="Dropped 5 of 60 rows with missing values"):
        spec = model.spec
    assert spec.n_obs == 55 and spec.n_dropped == 5


def test_all_rows_missing_raises(small):
    empty = small.with_columns(pl.lit(None, dtype=pl.Float64).alias("x"))
    with pytest.raises(ValueError, match="Every row has a missing value"):
        glm("y ~ x", empty, family="binomial").fit()


def test_nan_in_pandas_counts_as_missing(small):
    pdf = small.to_pandas()
    pdf.loc[[0, 1], "x"] = np.nan
    with pytest.warns(UserWarning, match="Dropped 2 of 60 rows"):
        assert glm("y ~ x", pdf, family="binomial").spec.n_obs == 58


def test_results_before_fit(small):
    model = glmer("y ~ x + (1|g)", small, family="binomial")
    for attr in ("params", "result_fit", "ranef", "fixef", "ranef_var", "diagnostics"):
        with pytest.raises(NotFittedError, match=f"call fit\\(\\) before {attr}"):
            getattr(model, attr)
    with pytest.raises(ValueError, match="call fit\\(\\) before summary"):
        model.summary()


def test_set_factors_errors(small):
    model = glm("y ~ sex", small, family="binomial")
    with pytest.raises(TypeError, match="set_factors takes a column name"):
        model.set_factors(3)
    model.set_factors({"sex": ["male", "female", "other"]})
    with pytest.raises(ValueError, match=r"levels \['other'\] for 'sex' that do not occur"):
        model.fit()
    model.unset_factors()
    model.set_factors({"sex": ["male"]})
    with pytest.raises(ValueError, match=r"levels \['female'\] that the level order"):
        model.fit()
    model.unset_factors()
    model.set_factors("nonexistent")
    with pytest.raises(ValueError, match=r"set_factors names column\(s\) \['nonexistent'\]"):
        model.fit()


def test_set_factors_reorders_reference_level(small):
    model = glm("y ~ sex", small, family="binomial")
    assert model.spec.terms == ["(Intercept)", "sexmale"]
    model.set_factors({"sex": ["male", "female"]})
    assert model.spec.terms == ["(Intercept)", "sexfemale"]


def test_pandas_categorical_order_is_respected(small):
    pdf = small.to_pandas()
    pdf["sex"] = pd.Categorical(pdf["sex"], categories=["male", "female"])
    assert glm("y ~ sex", pdf, family="binomial").spec.terms == ["(Intercept)", "sexfemale"]


def test_bad_fit_arguments(small):
    model = glm("y ~ x", small, family="binomial")
    with pytest.raises(ValueError, match="ci must be between 0 and 1"):
        model.fit(ci=95)
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        model.fit(draws=0)
    # refused before sampling: nutpie's adaptation panicked ("early_end < num_tune")
    with pytest.raises(ValueError, match="tune must be a positive integer, got 0"):
        model.fit(tune=0)
    with pytest.raises(ValueError, match="exponentiate=True needs a logit or log link"):
        glm("y ~ x", small, link="probit", family="binomial").fit(exponentiate=True)


def test_bad_data_and_priors_types(small):
    with pytest.raises(TypeError, match="data must be a polars DataFrame"):
        glm("y ~ x", {"y": [0, 1]}, family="binomial")
    with pytest.raises(TypeError, match="priors must be a dict"):
        glm("y ~ x", small, priors=[("normal", 0, 1)], family="binomial")
    with pytest.raises(ValueError, match=r"priors given for \['age'\]"):
        glm("y ~ x", small, priors={"age": ("normal", 0, 1)}, family="binomial").fit()
    with pytest.raises(ValueError, match="needs a positive distribution"):
        glmer("y ~ x + (1|g)", small, priors={"1|g": ("normal", 0, 1)}, family="binomial").fit()
    with pytest.raises(ValueError, match="takes 2 parameter"):
        glm("y ~ x", small, priors={"x": ("normal", 0)}, family="binomial").fit()


def test_unidentifiable_design(small):
    dup = small.with_columns(pl.col("x").alias("x2"))
    with pytest.raises(ValueError, match="rank deficient"):
        glm("y ~ x + x2", dup, family="binomial").fit()


def test_boolean_predictor_is_a_factor(titanic):
    spec = glm("survived ~ adult_male", titanic, family="binomial").spec
    assert spec.factors == {"adult_male": ["false", "true"]}
    assert spec.terms == ["(Intercept)", "adult_maletrue"]
    grid = pl.DataFrame({"adult_male": ["false", "true"]})
    np.testing.assert_array_equal(spec.design_matrix(grid), [[1.0, 0.0], [1.0, 1.0]])


def test_unused_categorical_levels_are_dropped(titanic):
    """A filtered Categorical/Enum keeps its unused categories; the model drops them, in order."""
    kept = titanic.filter(pl.col("pclass") != 3)
    enum = pl.Enum(["3", "2", "1"])
    data = kept.with_columns(pl.col("pclass").cast(pl.String).cast(enum))
    pdf = data.to_pandas()
    pdf["sex"] = pd.Categorical(pdf["sex"], categories=["other", "male", "female"])
    pdf["pclass"] = pd.Categorical(pdf["pclass"].astype(str), categories=["3", "2", "1"])
    for frame in (data, pdf):
        spec = glm("survived ~ pclass", frame, family="binomial").spec
        assert spec.factors["pclass"] == ["2", "1"]
        assert spec.terms == ["(Intercept)", "pclass1"]
    spec = glmer("survived ~ sex + (1|pclass)", pdf, family="binomial").spec
    assert spec.factors["sex"] == ["male", "female"]
    assert spec.groups[0].levels == ["2", "1"]
    # A two-level outcome stored as a categorical with an unused third category.
    pdf["alive"] = pd.Categorical(
        np.where(pdf["survived"] == 1, "yes", "no"), categories=["maybe", "no", "yes"]
    )
    alive = glm("alive ~ sex", pdf, family="binomial").spec
    assert alive.terms == ["(Intercept)", "sexfemale"]
    assert alive.cells[Y].sum() == int(pdf["survived"].sum())  # 'yes' is the success
    # Levels named by set_factors still have to occur.
    model = glm("survived ~ pclass", data, family="binomial")
    model.set_factors({"pclass": ["3", "2", "1"]})
    with pytest.raises(ValueError, match=r"levels \['3'\] for 'pclass' that do not occur"):
        _ = model.spec

"""Main-effects designs coded by bayesmer (bayesmer.design) equal formulae's."""

import numpy as np
import pytest

import bayesmer.spec
from bayesmer import glm, glmer
from bayesmer.design import main_effect_columns

FORMULAS = [
    ("survived ~ sex", {}),
    ("survived ~ 1 + sex + age", {}),
    ("survived ~ age + sex + pclass", {}),
    ("survived ~ pclass + sex + (1|embarked)", {"pclass": ["3", "1", "2"]}),
    ("survived ~ alone + fare + sex", {}),
    ("survived ~ 1 + (1|pclass)", {}),
    ("survived ~ sex + fare + (sex|pclass)", {}),  # the random slopes' design is formulae's
]


def _model(formula, factors, data):
    make = glmer if "|" in formula else glm
    model = make(formula, data, family="binomial")
    if factors:
        model.set_factors(factors)
    return model


@pytest.mark.parametrize(("formula", "factors"), FORMULAS)
def test_main_effects_design_equals_formulaes(titanic, formula, factors, monkeypatch):
    data = titanic.drop_nulls(["age", "embarked"])
    ours = _model(formula, factors, data).spec
    assert ours._design is None or type(ours._design).__module__ == "bayesmer.design"
    monkeypatch.setattr(bayesmer.spec, "main_effect_columns", lambda fixed: None)
    theirs = _model(formula, factors, data).spec
    assert type(theirs._design).__module__.startswith("formulae")
    assert ours.terms == theirs.terms
    np.testing.assert_array_equal(ours.X, theirs.X)
    grid = ours.cells.head(7)
    np.testing.assert_array_equal(ours.design_matrix(grid), theirs.design_matrix(grid))


@pytest.mark.parametrize(
    ("fixed", "columns"),
    [
        ("sex", ["sex"]),
        ("1 + sex + age", ["sex", "age"]),
        ("1", []),
        ("0 + sex", None),
        ("sex - 1", None),
        ("sex:age", None),
        ("sex * age", None),
        ("sex + sex", None),
        ("C(pclass)", None),
        ("a.b", None),
    ],
)
def test_only_main_effects_of_plain_columns_are_coded_by_bayesmer(fixed, columns):
    assert main_effect_columns(fixed) == columns


def test_a_missing_level_is_refused_as_formulae_does(titanic):
    import pandas as pd

    spec = glm("survived ~ sex + age", titanic.drop_nulls("age"), family="binomial").spec
    rows = pd.DataFrame(
        {"sex": pd.Categorical([None, "male"], categories=["female", "male"]), "age": [1.0, 2.0]}
    )
    with pytest.raises(ValueError, match=r"The levels \(nan\) in 'sex' are not present"):
        spec._design.evaluate_new_data(rows)

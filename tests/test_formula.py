"""Formula parsing: the pieces, and a clear error for everything bayesmer does not support."""

import pytest

from bayesmer.formula import parse_formula


def test_parts_of_a_mixed_formula():
    f = parse_formula("survived ~ sex + (1 | pclass)")
    assert f.response.kind == "column" and f.response.column == "survived"
    assert f.fixed == "sex"
    assert f.groups == ("pclass",)
    assert f.columns == ["survived", "sex", "pclass"]


def test_two_grouping_factors_interactions_and_no_intercept():
    f = parse_formula("y ~ 0 + a * b + c:d + (1|g) + (1|h)")
    assert f.groups == ("g", "h")
    assert f.fixed == "0 + a * b + c:d"
    assert f.fixed_variables == ["a", "b", "c", "d"]


def test_random_only_formula_keeps_intercept():
    assert parse_formula("y ~ (1|g)").fixed == "1"


def test_cbind_forms():
    f = parse_formula("cbind(s, f) ~ x")
    assert (f.response.kind, f.response.columns) == ("cbind_failures", ["s", "f"])
    g = parse_formula("cbind(s, n - s) ~ x")
    assert (g.response.kind, g.response.columns) == ("cbind_trials", ["s", "n"])
    assert str(g.response) == "cbind(s, n - s)"


def test_offsets():
    f = parse_formula("y ~ x + offset(log(days))")
    assert f.exposure == "days" and f.offset is None and f.fixed == "x"
    g = parse_formula("y ~ offset(logdays) + x")
    assert g.offset == "logdays" and g.exposure is None and g.fixed == "x"


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("y ~ x + (x | g)", "random slopes are not supported yet"),
        ("y ~ x + (1 + x | g)", "random slopes are not supported yet"),
        ("y ~ x + (1 | g/h)", r"For nested groups write one term per level, e.g. \(1\|site\)"),
        ("y ~ x + (1 || g)", "'\\|\\|' is not supported"),
        ("y ~ x + (1|g) + (1|g)", "appears twice"),
        ("y ~ log(x)", "Function calls"),
        ("y x", "exactly one '~'"),
        ("y ~ x ~ z", "exactly one '~'"),
        (" ~ x", "no response"),
        ("log(y) ~ x", "plain column name"),
        ("cbind(s, n - t) ~ x", "trials minus successes"),
        ("y ~ x + offset(log(a)) + offset(log(b))", "more than one offset"),
        ("y ~ x + x$2", "Unexpected characters"),
    ],
)
def test_unsupported_formulas_are_named(formula, message):
    with pytest.raises(ValueError, match=message):
        parse_formula(formula)


def test_formula_must_be_a_string():
    with pytest.raises(TypeError, match="formula must be a string"):
        parse_formula(["y ~ x"])

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
        ("y ~ x + (log(x) | g)", r"no calls such as log\(x\) inside random terms"),
        ("y ~ x + (x * z | g)", r"could not read 'x \* z'"),
        ("y ~ x + (0 | g)", "neither an intercept nor a slope"),
        ("y ~ x + (x + x | g)", "names a column twice"),
        ("y ~ x + (1|g) + (x|g)", r"cannot combine: write one term per factor"),
        ("y ~ x + (0 + x + z|g) + (1|g)", r"\(1 \| g\) \+ \(0 \+ x \| g\) are read as"),
        ("y ~ x + (1 | g/h:k)", r"nested columns \(1\|site/plot\), or a combination"),
        ("y ~ x + (1 | g/g)", "names a column twice"),
        ("y ~ x + (1|g) + (1|g/h)", r"'g' appears twice"),
        ("y ~ x + (1|g/h) + (1|g:h)", r"already means \(1\|a\) \+ \(1\|a:b\)"),
        ("y ~ poly(x, 2)", r"poly\(\) in the term 'poly\(x, 2\)' is not supported"),
        ("y ~ I(x > 2)", "Could not read the term 'I\\(x > 2\\)'"),
        ("y ~ I(gamma(x))", r"gamma\(\) inside 'I\(gamma\(x\)\)' is not supported"),
        ("y ~ scale(x + z)", r"scale\(\) takes one column"),
        ("y ~ log(2)", "reads no column"),
        ("y ~ log(x", "Unbalanced parentheses"),
        ("y ~ x + (1|g) + (1|g)", "appears twice"),
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


def test_nested_and_combined_grouping_factors():
    f = parse_formula("y ~ x + (1 | site/plot/tree) + (1|a:b)")
    assert f.groups == ("site", "site:plot", "site:plot:tree", "a:b")
    assert f.group_sources("site:plot") == ["site", "plot"]
    assert f.columns == ["y", "x", "site", "plot", "tree", "a", "b"]


def test_calls_in_the_fixed_part():
    f = parse_formula("use ~ age + I(age ^ 2) + urban + log(dose*2) + scale(x) + C(k) + (1|g)")
    assert f.fixed_variables == ["age", "urban", "dose", "x", "k"]
    assert [c.label for c in f.calls] == ["I(age^2)", "log(dose * 2)", "scale(x)", "C(k)"]
    assert [c.variables for c in f.calls] == [("age",), ("dose",), ("x",), ("k",)]
    assert f.fixed_for_formulae == (
        "age + bayesmer_call0_ + urban + bayesmer_call1_ + bayesmer_call2_ + bayesmer_call3_"
    )
    assert parse_formula("y ~ I(x**2)").calls[0].label == "I(x^2)"
    assert parse_formula("y ~ I(log(x)/2)").calls[0].variables == ("x",)


def test_random_slopes():
    f = parse_formula("y ~ x + (x | g) + (0 + x + z | h) + (-1 + z || k)")
    assert f.groups == ("g", "h", "k")
    g, h, k = (f.random_part(name) for name in f.groups)
    assert (g.intercept, g.variables, g.correlated, g.rhs) == (True, ("x",), True, "1 + x")
    assert (h.intercept, h.variables, h.rhs) == (False, ("x", "z"), "0 + x + z")
    assert (k.intercept, k.variables, k.correlated) == (False, ("z",), False)
    assert f.random_variables == ["x", "z"]
    assert f.columns == ["y", "x", "z", "g", "h", "k"]


def test_one_column_terms_on_one_factor_are_uncorrelated():
    f = parse_formula("y ~ x + (1 | g) + (0 + x | g)")
    part = f.random_part("g")
    assert f.groups == ("g",)
    assert (part.intercept, part.variables, part.correlated) == (True, ("x",), False)
    assert parse_formula("y ~ (x || g)").random_part("g") == part


def test_slopes_on_nested_factors_and_intercepts_stay_intercepts():
    f = parse_formula("y ~ x + (x | a/b) + (1 | c)")
    assert f.groups == ("a", "a:b", "c")
    assert f.random_part("a:b").variables == ("x",)
    assert not f.random_part("c").slopes

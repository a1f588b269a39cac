"""Marginal means, contrasts, slopes and predictions from posterior draws (issue 3).

Values are checked three ways: against the reference numbers (R lme4 + emmeans, rstanarm) in
shared/reference, against hand computation from the same draws, and between equivalent paths.
Tests of pure arithmetic (weights, links, several grouping factors) use synthetic draws
attached to an unfitted model, so they need no sampling.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from fakes import fake_posterior
from scipy import integrate, special

from bayesmer import glm, glmer
from bayesmer.draws import fixed, group_effects, group_sd, hdi
from bayesmer.emmeans import HERMITE_MAX_SD, emmeans, empredict, marginal_link
from bayesmer.families import get_family

# ---------------------------------------------------------------------------------------------
# Helpers


def column(frame, name):
    return frame[name].to_numpy()


def counts(data, cols):
    """Rows per combination of cols, as a dict keyed by tuples of strings."""
    table = data.group_by(cols).agg(pl.len().alias("n"))
    return {tuple(str(v) for v in row[:-1]): row[-1] for row in table.iter_rows()}


# ---------------------------------------------------------------------------------------------
# Titanic glm: survived ~ sex


def test_glm_means_match_reference_and_draws(titanic_glm):
    res = titanic_glm.emmeans("sex")
    assert res.columns == ["sex", "prob", "SD", "lower_HPD", "upper_HPD"]
    assert res["sex"].dtype == pl.Enum(["female", "male"])
    assert res["sex"].cast(pl.String).to_list() == ["female", "male"]
    prob = column(res, "prob")
    assert abs(prob[0] - 0.742038) < 0.015
    assert abs(prob[1] - 0.188908) < 0.015
    # The model keeps the last result.
    assert titanic_glm.result_emmeans is res

    b = fixed(titanic_glm.posterior)
    eta = np.column_stack([b[:, 0], b[:, 0] + b[:, 1]])
    p = special.expit(eta)
    np.testing.assert_allclose(prob, np.median(p, axis=0), rtol=1e-12)
    np.testing.assert_allclose(column(res, "SD"), p.std(axis=0, ddof=1), rtol=1e-10)
    # The HPD of the probabilities themselves, not the link-scale HPD mapped through expit.
    bounds = hdi(p, 0.95)
    assert np.abs(bounds - special.expit(hdi(eta, 0.95))).max() > 1e-4
    np.testing.assert_allclose(column(res, "lower_HPD"), bounds[:, 0], rtol=1e-10)
    np.testing.assert_allclose(column(res, "upper_HPD"), bounds[:, 1], rtol=1e-10)
    # The reference 95% interval for females is 0.691-0.787 (no Sidak adjustment).
    assert abs(res["lower_HPD"][0] - 0.691) < 0.02
    assert abs(res["upper_HPD"][0] - 0.787) < 0.02


def test_glm_link_means_are_the_coefficients(titanic_glm):
    res = emmeans(titanic_glm, "sex", type="link")
    assert res.columns == ["sex", "emmean", "SD", "lower_HPD", "upper_HPD"]
    b = fixed(titanic_glm.posterior)
    np.testing.assert_allclose(
        column(res, "emmean"),
        [np.median(b[:, 0]), np.median(b[:, 0] + b[:, 1])],
        rtol=1e-12,
    )
    assert abs(res["emmean"][0] - 1.056589) < 0.05
    assert abs(res["emmean"][1] - -1.45712) < 0.05


def test_glm_contrast_is_the_odds_ratio(titanic_glm):
    res = titanic_glm.emmeans("sex", contrasts={"female_minus_male": [-1, 1]})
    assert res.columns == [
        "contrast",
        "odds_ratio",
        "SD",
        "lower_HPD",
        "upper_HPD",
        "pd",
        "prob_gt_null",
    ]
    assert res["contrast"].cast(pl.String).to_list() == ["female_minus_male"]
    assert abs(res["odds_ratio"][0] - 0.080967) < 0.01
    assert res["pd"][0] == 1.0
    assert res["prob_gt_null"][0] == 0.0
    sexmale = fixed(titanic_glm.posterior)[:, 1]
    np.testing.assert_allclose(res["odds_ratio"][0], np.median(np.exp(sexmale)), rtol=1e-9)
    np.testing.assert_allclose(res["SD"][0], np.exp(sexmale).std(ddof=1), rtol=1e-9)
    # Reference Wald interval 0.058-0.112.
    assert abs(res["lower_HPD"][0] - 0.058) < 0.01
    assert abs(res["upper_HPD"][0] - 0.112) < 0.01


def test_glm_link_contrast_draws_are_the_sexmale_draws(titanic_glm):
    long = emmeans(
        titanic_glm, "sex", contrasts={"female_minus_male": [-1, 1]}, type="link", draws=True
    )
    assert long.columns == ["contrast", ".draw", "estimate"]
    sexmale = fixed(titanic_glm.posterior)[:, 1]
    assert long.height == len(sexmale)
    np.testing.assert_array_equal(column(long, ".draw"), np.arange(len(sexmale)))
    np.testing.assert_allclose(column(long, "estimate"), sexmale, rtol=0, atol=1e-12)
    table = emmeans(titanic_glm, "sex", contrasts={"female_minus_male": [-1, 1]}, type="link")
    assert abs(table["estimate"][0] - -2.51371) < 0.05
    assert table["prob_gt_null"][0] == 0.0


def test_glm_named_contrasts(titanic_glm):
    pair = emmeans(titanic_glm, "sex", contrasts="pairwise")
    rev = emmeans(titanic_glm, "sex", contrasts="revpairwise")
    ctrl = emmeans(titanic_glm, "sex", contrasts="trt.vs.ctrl", type="link")
    assert pair["contrast"].cast(pl.String).to_list() == ["female / male"]
    assert rev["contrast"].cast(pl.String).to_list() == ["male / female"]
    assert ctrl["contrast"].cast(pl.String).to_list() == ["male - female"]
    pair_draws = emmeans(titanic_glm, "sex", contrasts="pairwise", draws=True)
    rev_draws = emmeans(titanic_glm, "sex", contrasts="revpairwise", draws=True)
    np.testing.assert_allclose(
        column(pair_draws, "odds_ratio") * column(rev_draws, "odds_ratio"), 1.0, rtol=1e-12
    )
    assert pair["prob_gt_null"][0] == 1.0
    sexmale = fixed(titanic_glm.posterior)[:, 1]
    np.testing.assert_allclose(ctrl["estimate"][0], np.median(sexmale), atol=1e-12)


def test_glm_draws_long_form_summarises_to_the_table(titanic_glm):
    long = emmeans(titanic_glm, "sex", draws=True)
    table = emmeans(titanic_glm, "sex")
    n_draws = fixed(titanic_glm.posterior).shape[0]
    assert long.columns == ["sex", ".draw", "prob"]
    assert long.height == 2 * n_draws
    medians = long.group_by("sex").agg(pl.col("prob").median()).sort("sex")
    np.testing.assert_allclose(column(medians, "prob"), column(table, "prob"), rtol=1e-12)


def test_glm_ci_argument_and_default(titanic_glm):
    narrow = emmeans(titanic_glm, "sex", ci=0.5)
    wide = emmeans(titanic_glm, "sex")
    assert np.all(column(narrow, "upper_HPD") - column(narrow, "lower_HPD") > 0)
    assert np.all(
        column(narrow, "upper_HPD") - column(narrow, "lower_HPD")
        < column(wide, "upper_HPD") - column(wide, "lower_HPD")
    )


def test_glm_empredict_matches_emmeans(titanic_glm):
    pred = titanic_glm.empredict({"sex": ["male", "female"]})
    means = emmeans(titanic_glm, "sex")
    assert pred.columns == ["sex", "prob", "SD", "lower_HPD", "upper_HPD"]
    # Sorted in level order whatever order the values were given in.
    assert pred["sex"].cast(pl.String).to_list() == ["female", "male"]
    np.testing.assert_allclose(column(pred, "prob"), column(means, "prob"), rtol=1e-12)
    one = empredict(titanic_glm, {"sex": "male"}, type="link")
    assert one.height == 1 and one.columns[1] == "emmean"
    np.testing.assert_allclose(
        one["emmean"][0], np.median(fixed(titanic_glm.posterior).sum(axis=1)), rtol=1e-12
    )
    data = empredict(titanic_glm, "data")
    np.testing.assert_allclose(column(data, "prob"), column(means, "prob"), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"marginal_var": "age"}, "unknown variable 'age'"),
        ({"marginal_var": "sex", "by": "fare"}, "unknown variable 'fare'"),
        ({"marginal_var": "sex", "by": "sex"}, "cannot also be in by"),
        ({"marginal_var": "sex", "at": {"sex": ["female", "child"]}}, r"\['child'\]"),
        ({"marginal_var": "sex", "at": {"deck": "A"}}, "unknown variable 'deck'"),
        ({"marginal_var": "sex", "contrasts": {"c": [1, -1, 0]}}, "'c' has 3 weights"),
        ({"marginal_var": "sex", "contrasts": {"c": ["a", "b"]}}, "list of numbers"),
        ({"marginal_var": "sex", "contrasts": "sequential"}, "'sequential'"),
        ({"marginal_var": "sex", "type": "odds"}, "type must be one of"),
        ({"marginal_var": "sex", "re": "random"}, "re must be one of"),
        ({"marginal_var": "sex", "weights": "flat"}, "weights must be one of"),
        ({"marginal_var": "sex", "ci": 1.5}, "ci must be between"),
        ({"marginal_var": "sex", "re": "marginal"}, "this model has none"),
    ],
)
def test_bad_input_glm(titanic_glm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        emmeans(titanic_glm, **kwargs)


def test_bad_input_empredict(titanic_glm, titanic_glmer):
    with pytest.raises(ValueError, match="unknown variable 'age'"):
        empredict(titanic_glm, {"age": 30})
    with pytest.raises(ValueError, match=r"level\(s\) \['4'\] of 'pclass'"):
        empredict(titanic_glmer, {"pclass": 4})
    with pytest.raises(ValueError, match="at must be a dict or 'data'"):
        empredict(titanic_glm, "everything")
    with pytest.raises(ValueError, match="re must be one of"):
        empredict(titanic_glmer, {"sex": "male"}, re="population")


def test_bad_input_glmer_and_numeric(titanic_glmer, grouse_glmer):
    with pytest.raises(ValueError, match="'pclass' is a grouping factor"):
        emmeans(titanic_glmer, "pclass")
    with pytest.raises(ValueError, match="'cHEIGHT' is numeric"):
        emmeans(grouse_glmer, "cHEIGHT", contrasts={"c": [1]})
    with pytest.raises(ValueError, match="non-number 'tall'"):
        emmeans(grouse_glmer, "YEAR", at={"cHEIGHT": "tall"})


def test_string_column_not_declared_is_a_factor(titanic_glmer):
    # The fixture declares only pclass; sex is a string column and must still be a factor.
    assert "sex" in titanic_glmer.spec.factors
    res = emmeans(titanic_glmer, "sex")
    assert res["sex"].dtype == pl.Enum(["female", "male"])
    assert res.height == 2


# ---------------------------------------------------------------------------------------------
# Titanic glmer: survived ~ sex + (1|pclass)


def test_glmer_re_zero_matches_lme4(titanic_glmer):
    res = emmeans(titanic_glmer, "sex")
    assert abs(res["prob"][0] - 0.798) < 0.05
    assert abs(res["prob"][1] - 0.220) < 0.05
    b = fixed(titanic_glmer.posterior)
    np.testing.assert_allclose(
        column(res, "prob"),
        np.median(special.expit(np.column_stack([b[:, 0], b[:, 0] + b[:, 1]])), axis=0),
        rtol=1e-12,
    )


def test_glmer_re_marginal_pulls_toward_half_and_matches_monte_carlo(titanic_glmer):
    zero = emmeans(titanic_glmer, "sex")
    marg = emmeans(titanic_glmer, "sex", re="marginal")
    assert 0.5 < marg["prob"][0] < zero["prob"][0]
    assert zero["prob"][1] < marg["prob"][1] < 0.5
    # Brute force: a fresh N(0, sd) sample of group effects per draw, same draws.
    b = fixed(titanic_glmer.posterior)
    sd = group_sd(titanic_glmer.posterior, titanic_glmer.spec.groups[0])
    rng = np.random.default_rng(7)
    n_mc = 10_000
    mc, se = np.empty((len(sd), 2)), np.empty((len(sd), 2))
    for start in range(0, len(sd), 500):
        part = slice(start, start + 500)
        u = rng.standard_normal((sd[part].size, n_mc)) * sd[part, None]
        for j, eta in enumerate([b[part, 0], b[part, 0] + b[part, 1]]):
            p = special.expit(eta[:, None] + u)
            mc[part, j] = p.mean(axis=1)
            se[part, j] = p.std(axis=1) / np.sqrt(n_mc)
    long = emmeans(titanic_glmer, "sex", re="marginal", draws=True)
    per_draw = column(long, "prob").reshape(2, -1).T
    assert np.all(np.abs(per_draw - mc) < 5 * se + 1e-9)
    # To 3 decimals: the posterior median (noisier under Monte Carlo) and the posterior mean
    # (Monte Carlo standard error about 5e-5 here).
    np.testing.assert_allclose(column(marg, "prob"), np.median(mc, axis=0), atol=1e-3)
    np.testing.assert_allclose(per_draw.mean(axis=0), mc.mean(axis=0), atol=3e-4)


def test_glmer_re_groups_reproduces_observed_proportions(titanic, titanic_glmer):
    cells = emmeans(titanic_glmer, "sex", re="groups", weights="cells")
    observed = titanic.group_by("sex").agg(pl.col("survived").mean()).sort("sex")
    np.testing.assert_allclose(
        column(cells, "prob"), column(observed, "survived"), atol=0.01
    )  # 0.742 / 0.189
    prop = emmeans(titanic_glmer, "sex", re="groups", weights="proportional")
    assert abs(prop["prob"][0] - 0.716) < 0.02
    assert abs(prop["prob"][1] - 0.202) < 0.02

    # Hand computation: per draw, weighted mean of expit over the three classes.
    post = titanic_glmer.posterior
    b = fixed(post)
    u = group_effects(post, titanic_glmer.spec.groups[0])  # classes '1', '2', '3'
    n = counts(titanic, ["sex", "pclass"])
    for frame, weight in [
        (cells, lambda s: np.array([n[(s, c)] for c in "123"], dtype=float)),
        (prop, lambda s: np.array([n[("female", c)] + n[("male", c)] for c in "123"], float)),
        (emmeans(titanic_glmer, "sex", re="groups"), lambda s: np.ones(3)),
    ]:
        for row, sex in enumerate(["female", "male"]):
            w = weight(sex)
            p = special.expit(b[:, [0]] + row * b[:, [1]] + u) @ (w / w.sum())
            np.testing.assert_allclose(frame["prob"][row], np.median(p), rtol=1e-10)


def test_glmer_empredict_given_groups(titanic_glmer):
    pred = empredict(titanic_glmer, {"sex": ["female", "male"], "pclass": [1, 2, 3]})
    assert pred.columns == ["sex", "pclass", "prob", "SD", "lower_HPD", "upper_HPD"]
    assert pred["pclass"].dtype == pl.Enum(["1", "2", "3"])
    post = titanic_glmer.posterior
    b = fixed(post)
    u = group_effects(post, titanic_glmer.spec.groups[0])
    expected = [
        np.median(special.expit(b[:, 0] + s * b[:, 1] + u[:, k])) for s in (0, 1) for k in range(3)
    ]
    np.testing.assert_allclose(column(pred, "prob"), expected, rtol=1e-10)
    # With the group given, re= has nothing left to act on.
    same = empredict(titanic_glmer, {"sex": "male", "pclass": 3}, re="marginal")
    np.testing.assert_allclose(same["prob"][0], expected[5], rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Grouseticks: TICKS ~ YEAR + cHEIGHT + (1|BROOD), poisson


def test_grouse_rates_and_ratio_match_rstanarm(grouse_glmer):
    rates = emmeans(grouse_glmer, "YEAR")
    assert rates.columns == ["YEAR", "rate", "SD", "lower_HPD", "upper_HPD"]
    assert rates["YEAR"].cast(pl.String).to_list() == ["95", "96", "97"]
    # rstanarm posterior medians 1.63 / 5.26 / 0.60; lme4 + emmeans 1.664 / 5.181 / 0.611.
    for row, (stan, lme4) in enumerate([(1.63, 1.664), (5.26, 5.181), (0.60, 0.611)]):
        assert abs(rates["rate"][row] / stan - 1) < 0.1
        assert (
            rates["lower_HPD"][row] < min(stan, lme4) <= max(stan, lme4) < rates["upper_HPD"][row]
        )
    ratio = emmeans(grouse_glmer, "YEAR", contrasts={"YEAR95 / YEAR96": [1, -1, 0]})
    assert ratio.columns[1] == "ratio"
    # rstanarm: median 0.311, 95% HPD 0.179-0.479.
    assert 0.179 < ratio["ratio"][0] < 0.479
    assert abs(ratio["ratio"][0] - 0.311) < 0.05
    assert abs(ratio["lower_HPD"][0] - 0.179) < 0.05
    assert abs(ratio["upper_HPD"][0] - 0.479) < 0.07
    assert ratio["pd"][0] == 1.0

    # Hand computation: cHEIGHT at its mean, brood effects at zero.
    b = fixed(grouse_glmer.posterior)
    mean_height = (
        grouse_glmer.spec.cells["cHEIGHT"].to_numpy()
        @ grouse_glmer.spec.rows
        / (grouse_glmer.spec.rows.sum())
    )
    base = b[:, 0] + b[:, 3] * mean_height
    eta = np.column_stack([base, base + b[:, 1], base + b[:, 2]])
    np.testing.assert_allclose(column(rates, "rate"), np.median(np.exp(eta), axis=0), rtol=1e-9)
    np.testing.assert_allclose(ratio["ratio"][0], np.median(np.exp(-b[:, 1])), rtol=1e-9)


def test_grouse_slope_is_the_coefficient(grouse_glmer):
    b = fixed(grouse_glmer.posterior)
    link = emmeans(grouse_glmer, "cHEIGHT", type="link", draws=True)
    assert link.columns == [".draw", "cHEIGHT_trend"]
    np.testing.assert_allclose(column(link, "cHEIGHT_trend"), b[:, 3], rtol=1e-7, atol=1e-10)
    assert abs(np.median(b[:, 3]) - -0.0239) < 0.003
    # The default type='response' still gives the link-scale slope, as emtrends/pymer4 do.
    default = emmeans(grouse_glmer, "cHEIGHT", draws=True)
    np.testing.assert_allclose(column(default, "cHEIGHT_trend"), b[:, 3], rtol=1e-7, atol=1e-10)
    # regrid='response': d rate / d cHEIGHT = rate * slope, per draw, at each requested height.
    resp = emmeans(
        grouse_glmer,
        "cHEIGHT",
        by="YEAR",
        at={"cHEIGHT": [0, 10]},
        regrid="response",
        draws=True,
    )
    assert resp.columns == ["cHEIGHT", "YEAR", ".draw", "cHEIGHT_trend"]
    year96_at_10 = resp.filter((pl.col("YEAR") == "96") & (pl.col("cHEIGHT") == 10.0))
    rate = np.exp(b[:, 0] + b[:, 1] + 10 * b[:, 3])
    np.testing.assert_allclose(column(year96_at_10, "cHEIGHT_trend"), rate * b[:, 3], rtol=1e-6)
    table = emmeans(grouse_glmer, "cHEIGHT", by="YEAR")
    assert table.columns == ["YEAR", "cHEIGHT_trend", "SD", "lower_HPD", "upper_HPD"]


def test_grouse_re_marginal_and_groups(grouse_glmer):
    post = grouse_glmer.posterior
    group = grouse_glmer.spec.groups[0]
    sd = group_sd(post, group)
    u = group_effects(post, group)
    zero = emmeans(grouse_glmer, "YEAR", type="link", draws=True)
    eta95 = column(zero.filter(pl.col("YEAR") == "95"), "emmean")
    # Log link: E[exp(eta + sd Z)] by quadrature in the test, against the library's answer.
    z, w = np.polynomial.hermite_e.hermegauss(60)
    expected = np.log(np.exp(eta95[:, None] + sd[:, None] * z) @ (w / w.sum()))
    marg = emmeans(grouse_glmer, "YEAR", type="link", re="marginal", draws=True)
    np.testing.assert_allclose(
        column(marg.filter(pl.col("YEAR") == "95"), "emmean"), expected, rtol=1e-9
    )
    # Observed broods with equal weights: log of the mean rate over the 118 broods.
    groups = emmeans(grouse_glmer, "YEAR", type="link", re="groups", draws=True)
    expected = np.log(np.exp(eta95[:, None] + u).mean(axis=1))
    np.testing.assert_allclose(
        column(groups.filter(pl.col("YEAR") == "95"), "emmean"), expected, rtol=1e-9
    )


def test_grouse_empredict_at_observed_values(grouseticks, grouse_glmer):
    heights = grouseticks["cHEIGHT"].unique().sort().to_numpy()
    pred = empredict(grouse_glmer, {"YEAR": "data", "cHEIGHT": "data"}, type="link")
    assert pred.columns == ["YEAR", "cHEIGHT", "emmean", "SD", "lower_HPD", "upper_HPD"]
    assert pred.height == 3 * len(heights)
    np.testing.assert_allclose(column(pred.filter(pl.col("YEAR") == "97"), "cHEIGHT"), heights)
    b = fixed(grouse_glmer.posterior)
    row = pred.row(pred.height - 1, named=True)  # YEAR 97 at the greatest height
    expected = np.median(b[:, 0] + b[:, 2] + heights[-1] * b[:, 3])
    np.testing.assert_allclose(row["emmean"], expected, rtol=1e-9)
    # at='data': the distinct observed (YEAR, cHEIGHT) combinations only.
    observed = grouseticks.select("YEAR", "cHEIGHT").unique()
    data = empredict(grouse_glmer, "data")
    assert data.height == observed.height
    assert data.columns[:2] == ["YEAR", "cHEIGHT"]
    assert data["YEAR"].dtype == pl.Enum(["95", "96", "97"])


# ---------------------------------------------------------------------------------------------
# Synthetic draws: averaging weights, other links, several grouping factors


@pytest.fixture(scope="module")
def sex_class(titanic):
    model = glm("survived ~ sex * pclass", data=titanic, family="binomial")
    model.set_factors("pclass")
    return fake_posterior(model)


def _cell_eta(model, sex, pclass):
    """Link value of one (sex, pclass) cell per draw, from the coefficients by name."""
    b = fixed(model.posterior)
    terms = model.spec.terms
    eta = b[:, terms.index("(Intercept)")].copy()
    if sex == "male":
        eta += b[:, terms.index("sexmale")]
    if pclass != "1":
        eta += b[:, terms.index(f"pclass{pclass}")]
        if sex == "male":
            eta += b[:, terms.index(f"sexmale:pclass{pclass}")]
    return eta


@pytest.mark.parametrize("weights", ["equal", "proportional", "cells"])
def test_weights_average_other_factors_on_link_scale(titanic, sex_class, weights):
    n = counts(titanic, ["sex", "pclass"])
    res = emmeans(sex_class, "sex", type="link", weights=weights, draws=True)
    for sex in ["female", "male"]:
        if weights == "equal":
            w = np.ones(3)
        elif weights == "proportional":
            w = np.array([n[("female", c)] + n[("male", c)] for c in "123"], dtype=float)
        else:
            w = np.array([n[(sex, c)] for c in "123"], dtype=float)
        etas = np.column_stack([_cell_eta(sex_class, sex, c) for c in "123"])
        got = column(res.filter(pl.col("sex") == sex), "emmean")
        np.testing.assert_allclose(got, etas @ (w / w.sum()), rtol=1e-10, atol=1e-12)
    # Response scale: the back-transform of the link-scale average, not a mean of probabilities.
    resp = emmeans(sex_class, "sex", weights=weights, draws=True)
    np.testing.assert_allclose(
        column(resp, "prob"), special.expit(column(res, "emmean")), rtol=1e-12
    )


def test_by_and_at_with_interaction(sex_class):
    res = emmeans(
        sex_class, "sex", by="pclass", contrasts={"m_f": [-1, 1]}, type="link", draws=True
    )
    assert res.columns == ["contrast", "pclass", ".draw", "estimate"]
    for c in "123":
        got = column(res.filter(pl.col("pclass") == c), "estimate")
        expected = _cell_eta(sex_class, "male", c) - _cell_eta(sex_class, "female", c)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    means = emmeans(sex_class, "sex", by="pclass")
    assert means.columns[:2] == ["sex", "pclass"]
    assert means["pclass"].cast(pl.String).to_list() == ["1", "1", "2", "2", "3", "3"]
    assert means["sex"].cast(pl.String).to_list() == ["female", "male"] * 3
    # at restricts the levels averaged over: only class 3 left.
    only3 = emmeans(sex_class, "sex", type="link", at={"pclass": 3}, draws=True)
    np.testing.assert_allclose(
        column(only3.filter(pl.col("sex") == "male"), "emmean"),
        _cell_eta(sex_class, "male", "3"),
        rtol=1e-10,
    )
    # Contrasts over a restricted marginal factor use its restricted levels.
    pair = emmeans(sex_class, "pclass", at={"pclass": [1, 3]}, contrasts="pairwise")
    assert pair["contrast"].cast(pl.String).to_list() == ["1 / 3"]
    with pytest.raises(ValueError, match="has 3 weights but 'pclass' has 2 levels"):
        emmeans(sex_class, "pclass", at={"pclass": [1, 3]}, contrasts={"c": [1, 0, -1]})
    # Weights that do not sum to zero average levels: that is a mean, not a contrast.
    with pytest.raises(ValueError, match=r"sum to 1, not 0\. A contrast compares levels"):
        emmeans(sex_class, "pclass", contrasts={"avg": [0.5, 0.5, 0]})
    with pytest.raises(ValueError, match="'lopsided' has weights"):
        emmeans(sex_class, "sex", contrasts={"ok": [-1, 1], "lopsided": [1, 0]})
    thirds = emmeans(sex_class, "pclass", contrasts={"c": [1 / 3, 1 / 3, -2 / 3]})
    assert thirds.height == 1
    per_class = emmeans(sex_class, "sex", by="pclass", contrasts="pairwise")
    assert per_class.height == 3
    assert per_class["contrast"].cast(pl.String).to_list() == ["female / male"] * 3


def test_probit_and_cloglog_contrasts(titanic):
    probit = fake_posterior(glm("survived ~ sex", data=titanic, link="probit", family="binomial"))
    res = emmeans(probit, "sex", contrasts={"m_f": [-1, 1]}, draws=True)
    assert res.columns == ["contrast", ".draw", "estimate"]
    b = fixed(probit.posterior)
    np.testing.assert_allclose(
        column(res, "estimate"), special.ndtr(b.sum(axis=1)) - special.ndtr(b[:, 0]), rtol=1e-12
    )
    table = emmeans(probit, "sex", contrasts={"m_f": [-1, 1]})
    diff = special.ndtr(b.sum(axis=1)) - special.ndtr(b[:, 0])
    np.testing.assert_allclose(table["prob_gt_null"][0], np.mean(diff > 0))
    cloglog = fake_posterior(glm("survived ~ sex", data=titanic, link="cloglog", family="binomial"))
    res = emmeans(cloglog, "sex", contrasts="pairwise")
    assert res.columns[1] == "ratio"
    b = fixed(cloglog.posterior)
    np.testing.assert_allclose(res["ratio"][0], np.median(np.exp(-b[:, 1])), rtol=1e-12)


@pytest.mark.parametrize("link", ["logit", "cloglog"])
@pytest.mark.parametrize("offset", [-3.0, -0.5, 0.0, 0.5, 1.0, 8.0])
def test_marginal_quadrature_against_adaptive_integration(link, offset):
    # sds on both sides of the switch between the two quadrature rules
    sd = max(0.3, HERMITE_MAX_SD[link] + offset)
    family = get_family("binomial", link)
    eta = np.array([[-3.0, 0.4, 2.5]])
    got = family.inverse_link(marginal_link(family, eta, np.array([sd])))[0]
    for j, e in enumerate(eta[0]):
        expected = integrate.quad(
            lambda z, e=e: family.inverse_link(e + sd * z) * np.exp(-z * z / 2),
            -14,
            14,
            points=[-e / sd],
            limit=400,
            epsabs=1e-13,
        )[0] / np.sqrt(2 * np.pi)
        assert abs(got[j] - expected) < 5e-6


def test_probit_marginal_is_exact():
    family = get_family("binomial", "probit")
    eta, sd = np.array([[0.7, -1.2]]), np.array([1.5])
    z = np.linspace(-12, 12, 200_001)
    dens = np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    got = family.inverse_link(marginal_link(family, eta, sd))[0]
    for j, e in enumerate(eta[0]):
        expected = np.trapezoid(special.ndtr(e + sd[0] * z) * dens, z)
        assert abs(got[j] - expected) < 1e-8


def test_two_grouping_factors(grouseticks):
    model = fake_posterior(
        glmer("TICKS ~ YEAR + (1|BROOD) + (1|LOCATION)", data=grouseticks, family="poisson"),
        sd_scale=0.5,
    )
    post = model.posterior
    brood, location = model.spec.groups
    b = fixed(post)
    marg = emmeans(model, "YEAR", type="link", re="marginal", draws=True)
    variance = group_sd(post, brood) ** 2 + group_sd(post, location) ** 2
    np.testing.assert_allclose(
        column(marg.filter(pl.col("YEAR") == "96"), "emmean"),
        b[:, 0] + b[:, 1] + variance / 2,
        rtol=1e-12,
    )
    # re='groups': the observed (brood, location) combinations, each brood in one location.
    pairs = grouseticks.select("BROOD", "LOCATION").unique()
    bi = [brood.levels.index(v) for v in pairs["BROOD"]]
    li = [location.levels.index(v) for v in pairs["LOCATION"]]
    effects = group_effects(post, brood)[:, bi] + group_effects(post, location)[:, li]
    groups = emmeans(model, "YEAR", re="groups", draws=True)
    expected = np.exp(b[:, [0]] + effects).mean(axis=1)
    np.testing.assert_allclose(
        column(groups.filter(pl.col("YEAR") == "95"), "rate"), expected, rtol=1e-10
    )
    # Conditioning on a location leaves only the broods to average over.
    pred = empredict(model, {"YEAR": "95", "LOCATION": pairs["LOCATION"][0]}, re="marginal")
    loc = location.levels.index(pairs["LOCATION"][0])
    expected = np.median(
        np.exp(b[:, 0] + group_effects(post, location)[:, loc] + group_sd(post, brood) ** 2 / 2)
    )
    np.testing.assert_allclose(pred["rate"][0], expected, rtol=1e-10)


def test_weights_cells_with_an_empty_cell(titanic):
    data = titanic.filter(~((pl.col("sex") == "female") & (pl.col("pclass") == 2)))
    model = glm("survived ~ sex + pclass", data=data, family="binomial")
    model.set_factors("pclass")
    fake_posterior(model)
    res = emmeans(model, "sex", by="pclass", weights="cells", at={"pclass": [1, 3]})
    assert res.height == 4
    with pytest.raises(ValueError, match="no rows for pclass=2, sex=female"):
        emmeans(model, "sex", by="pclass", weights="cells")


def test_empredict_nested_group_carries_its_parent(grouseticks):
    """A brood's prediction adds the effect of the location it lies in (issue 10, item 1)."""
    model = fake_posterior(
        glmer("TICKS ~ YEAR + (1|BROOD) + (1|LOCATION)", data=grouseticks, family="poisson"),
        sd_scale=0.5,
    )
    post = model.posterior
    brood, location = model.spec.groups
    b = fixed(post)
    pairs = grouseticks.select(pl.col("BROOD").cast(pl.String), "LOCATION").unique()
    where = dict(zip(pairs["BROOD"].to_list(), pairs["LOCATION"].to_list(), strict=True))
    chosen = brood.levels[:3]
    for re in ("zero", "groups", "marginal"):
        pred = empredict(model, {"YEAR": "95", "BROOD": chosen}, re=re, type="link").sort("BROOD")
        assert pred.columns[:3] == ["YEAR", "BROOD", "LOCATION"]
        assert pred["LOCATION"].cast(pl.String).to_list() == [where[c] for c in chosen]
        for i, lv in enumerate(chosen):
            bi, li = brood.levels.index(lv), location.levels.index(where[lv])
            expected = (
                b[:, 0] + group_effects(post, brood)[:, bi] + group_effects(post, location)[:, li]
            )
            np.testing.assert_allclose(pred["emmean"][i], np.median(expected), rtol=1e-10)
    # Naming both columns keeps the pairs that exist; a pair that does not exist is an error.
    locs = [where[c] for c in chosen]
    both = empredict(model, {"BROOD": chosen, "LOCATION": locs, "YEAR": "95"}, re="zero")
    assert both.height == len(chosen)
    other = next(loc for loc in location.levels if loc != where[chosen[0]])
    with pytest.raises(ValueError, match="no combination of the given group levels occurs"):
        empredict(model, {"BROOD": chosen[0], "LOCATION": other})
    # A named location averages re='groups' over its own broods only.
    loc = where[chosen[0]]
    inside = [bv for bv, lv in where.items() if lv == loc]
    pred = empredict(model, {"YEAR": "95", "LOCATION": loc}, re="groups", type="link")
    li = location.levels.index(loc)
    bis = [brood.levels.index(bv) for bv in inside]
    rate = np.exp(
        b[:, [0]] + group_effects(post, location)[:, [li]] + group_effects(post, brood)[:, bis]
    ).mean(axis=1)
    np.testing.assert_allclose(pred["emmean"][0], np.median(np.log(rate)), rtol=1e-10)

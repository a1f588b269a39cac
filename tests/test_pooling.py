"""Shrinkage table and plot, latent ICC and median odds/rate ratio (issue 16).

Every value is checked against a hand computation from synthetic draws attached to an unfitted
model, so no sampling is needed.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from fakes import fake_posterior
from matplotlib.figure import Figure
from scipy import special

from bayesmer import glm, glmer
from bayesmer.draws import fixed, group_effects, group_sd, hdi


@pytest.fixture
def broods():
    """Bernoulli rows: 3 broods of 1, 2 and 4 chicks, a numeric covariate, crossed nests."""
    return pl.DataFrame(
        {
            "y": [1, 0, 1, 1, 0, 0, 0],
            "x": [0.5, -1.0, 2.0, 0.0, 1.0, 1.0, -0.5],
            "brood": ["a", "b", "b", "c", "c", "c", "c"],
            "nest": ["n1", "n1", "n2", "n2", "n1", "n2", "n1"],
        }
    )


def test_shrinkage_table_matches_hand_computation(broods):
    model = fake_posterior(glmer("y ~ x + (1|brood) + (1|nest)", broods, family="binomial"))
    table = model.shrinkage("brood")
    assert table.columns == [
        "level",
        "n",
        "trials",
        "observed",
        "no_pooling",
        "partial_pooling",
        "complete_pooling",
    ]
    assert table["level"].to_list() == ["a", "b", "c"]
    assert table["n"].to_list() == [1, 2, 4]
    np.testing.assert_allclose(table["observed"].to_numpy(), [1.0, 0.5, 0.25])
    # Continuity correction: logit((y + 0.5) / (n + 1)).
    expected = special.logit(np.array([1.5 / 2, 1.5 / 3, 1.5 / 5]))
    np.testing.assert_allclose(table["no_pooling"].to_numpy(), expected, rtol=1e-12)

    spec = model.spec
    b = fixed(model.posterior)
    u_brood = group_effects(model.posterior, spec.groups[0])
    u_nest = group_effects(model.posterior, spec.groups[1])
    x = broods["x"].to_numpy()
    brood = {"a": 0, "b": 1, "c": 2}
    nest = {"n1": 0, "n2": 1}
    for j, level in enumerate(["a", "b", "c"]):
        rows = [i for i, v in enumerate(broods["brood"]) if v == level]
        fixed_part = np.mean([b[:, 0] + b[:, 1] * x[i] for i in rows], axis=0)
        own = np.mean(
            [
                b[:, 0]
                + b[:, 1] * x[i]
                + u_brood[:, brood[level]]
                + u_nest[:, nest[broods["nest"][i]]]
                for i in rows
            ],
            axis=0,
        )
        assert table["complete_pooling"][j] == pytest.approx(np.median(fixed_part), rel=1e-12)
        assert table["partial_pooling"][j] == pytest.approx(np.median(own), rel=1e-12)


def test_shrinkage_of_cbind_and_poisson_rows():
    data = pl.DataFrame(
        {"s": [3, 0, 5], "f": [1, 4, 5], "g": ["p", "q", "p"], "e": [2.0, 1.0, 3.0]}
    )
    model = fake_posterior(glmer("cbind(s, f) ~ 1 + (1|g)", data, link="probit", family="binomial"))
    table = model.shrinkage()
    assert table["trials"].to_list() == [14, 4]
    np.testing.assert_allclose(table["observed"].to_numpy(), [8 / 14, 0.0])
    np.testing.assert_allclose(
        table["no_pooling"].to_numpy(), special.ndtri(np.array([8.5 / 15, 0.5 / 5])), rtol=1e-12
    )
    counts = data.rename({"s": "count"})
    model = fake_posterior(glmer("count ~ 1 + offset(log(e)) + (1|g)", counts, family="poisson"))
    table = model.shrinkage()
    np.testing.assert_allclose(table["exposure"].to_numpy(), [5.0, 1.0])
    np.testing.assert_allclose(table["observed"].to_numpy(), [8 / 5, 0.0])
    np.testing.assert_allclose(table["no_pooling"].to_numpy(), np.log([8.5 / 5, 0.5 / 1.0]))
    b = fixed(model.posterior)[:, 0]
    u = group_effects(model.posterior, model.spec.groups[0])
    np.testing.assert_allclose(table["partial_pooling"].to_numpy(), np.median(b[:, None] + u, 0))


def test_shrinkage_needs_a_named_group_when_there_are_several(broods):
    model = fake_posterior(glmer("y ~ x + (1|brood) + (1|nest)", broods, family="binomial"))
    with pytest.raises(ValueError, match=r"several grouping factors \['brood', 'nest'\]"):
        model.shrinkage()
    with pytest.raises(ValueError, match="group must be one of the grouping factors"):
        model.shrinkage("x")


def test_plot_shrinkage_draws_the_table(broods):
    model = fake_posterior(glmer("y ~ x + (1|brood)", broods, family="binomial"))
    fig = model.plot_shrinkage(type="link")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    table = model.shrinkage().sort(["n", "no_pooling"])
    # Two scatter layers: no pooling (open) then partial pooling (filled).
    offsets = [c.get_offsets() for c in ax.collections if c.get_offsets().shape[0] == 3]
    np.testing.assert_allclose(offsets[-2][:, 1], table["no_pooling"].to_numpy())
    np.testing.assert_allclose(offsets[-1][:, 1], table["partial_pooling"].to_numpy())
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["n=1", "n=2", "n=4"]
    with pytest.raises(ValueError, match="type must be 'response' or 'link'"):
        model.plot_shrinkage(type="odds")


def test_icc_and_median_odds_ratio_from_the_draws(broods):
    model = fake_posterior(glmer("y ~ x + (1|brood) + (1|nest)", broods, family="binomial"))
    table = model.icc()
    assert table.columns == ["group", "statistic", "estimate", "conf_low", "conf_high"]
    sd_b = group_sd(model.posterior, model.spec.groups[0])
    sd_n = group_sd(model.posterior, model.spec.groups[1])
    icc_b = sd_b**2 / (sd_b**2 + sd_n**2 + np.pi**2 / 3)
    mor_b = np.exp(np.sqrt(2) * sd_b * 0.6744897501960817)
    rows = {(r["group"], r["statistic"]): r for r in table.iter_rows(named=True)}
    assert set(rows) == {
        (g, s) for g in ("brood", "nest") for s in ("sd", "icc", "median_odds_ratio")
    }
    for stat, draws in (("sd", sd_b), ("icc", icc_b), ("median_odds_ratio", mor_b)):
        row = rows[("brood", stat)]
        assert row["estimate"] == np.median(draws)
        lo, hi = hdi(draws[:, None], model.ci)[0]
        assert (row["conf_low"], row["conf_high"]) == (lo, hi)
    # One factor and the probit link: residual variance 1, and no ratio.
    model = fake_posterior(glmer("y ~ x + (1|brood)", broods, link="probit", family="binomial"))
    table = model.icc()
    sd = group_sd(model.posterior, model.spec.groups[0])
    assert table["statistic"].to_list() == ["sd", "icc"]
    assert table["estimate"][1] == np.median(sd**2 / (sd**2 + 1.0))


def test_icc_of_a_poisson_model_uses_the_mean_count():
    data = pl.DataFrame(
        {"count": [3, 0, 5, 2], "g": ["p", "q", "p", "q"], "x": [0.0, 1.0, 2.0, 1.0]}
    )
    model = fake_posterior(glmer("count ~ x + (1|g)", data, family="poisson"))
    table = model.icc()
    b = fixed(model.posterior)
    sd = group_sd(model.posterior, model.spec.groups[0])
    x = data["x"].to_numpy()
    lam = np.mean(np.exp(b[:, [0]] + b[:, [1]] * x + sd[:, None] ** 2 / 2), axis=1)
    icc = sd**2 / (sd**2 + np.log(1 + 1 / lam))
    assert table["statistic"].to_list() == ["sd", "icc", "median_rate_ratio"]
    assert table["estimate"][1] == pytest.approx(np.median(icc), rel=1e-12)
    assert table["estimate"][2] == pytest.approx(np.median(np.exp(0.9538725524 * sd)), rel=1e-9)


def test_summary_reports_icc_and_median_odds_ratio(titanic_glmer):
    text = str(titanic_glmer.summary())
    table = titanic_glmer.icc()
    icc = table.filter(statistic="icc")["estimate"][0]
    assert "icc" in text and "median_odds_ratio" in text
    assert f"{icc:.3f}" in text
    assert "icc: latent-scale intraclass correlation, sd^2 / (sum of group variances + pi^2/3)" in (
        text
    )


def test_icc_and_shrinkage_need_groups_and_a_valid_ci(broods):
    model = fake_posterior(glm("y ~ x", broods, family="binomial"))
    with pytest.raises(ValueError, match=r"icc needs random effects"):
        model.icc()
    with pytest.raises(ValueError, match=r"shrinkage needs random effects"):
        model.shrinkage()
    model = fake_posterior(glmer("y ~ x + (1|brood)", broods, family="binomial"))
    with pytest.raises(ValueError, match="ci must be between 0 and 1, got 1.5"):
        model.icc(ci=1.5)
    assert model.icc(ci=0.5)["conf_high"][0] < model.icc(ci=0.9)["conf_high"][0]


def test_plot_shrinkage_on_given_axes_and_the_response_scale(broods):
    model = fake_posterior(glmer("y ~ x + (1|brood)", broods, family="binomial"))
    fig = Figure()
    ax = fig.subplots()
    assert model.plot_shrinkage(type="response", ax=ax) is fig
    table = model.shrinkage().sort(["n", "no_pooling"])
    offsets = [c.get_offsets() for c in ax.collections if c.get_offsets().shape[0] == 3]
    np.testing.assert_allclose(offsets[-2][:, 1], table["observed"].to_numpy())
    np.testing.assert_allclose(
        offsets[-1][:, 1], special.expit(table["partial_pooling"].to_numpy()), rtol=1e-12
    )

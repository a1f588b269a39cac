"""Gaussian, negative binomial and beta-binomial fits against published figures (issue 12).

References from ``shared/reference/README.md``: lme4 (REML) and rstanarm on sleepstudy, glmmTMB
(nbinom2) on salamanders; grouseticks compares the negative binomial with the Poisson fit; the
beta-binomial is checked on simulated trials. Every fit uses bayesmer's default settings (4
chains x 1000 draws after 1000 tuning draws) and a pinned seed, so these runs also check that
the defaults converge on these data: pytest turns a ConvergenceWarning into an error.
"""

import numpy as np
import polars as pl
import pytest
from scipy import special

import bayesmer
from bayesmer import glmer, lmer, load_dataset

pytestmark = pytest.mark.slow

DEFAULT = {"progressbar": False}


def _estimates(table: pl.DataFrame) -> dict[str, dict]:
    return {row["term"]: row for row in table.iter_rows(named=True)}


def _checked_parameters(model) -> pl.DataFrame:
    """Diagnostics of everything but the group deviations: fixed effects, group sds and
    correlations, and the dispersion parameter."""
    return model.diagnostics.filter(~pl.col("term").str.starts_with("u_"))


def _assert_converged(model, min_ess: float) -> None:
    assert model.chain_diagnostics["divergences"].sum() == 0
    checked = _checked_parameters(model)
    assert checked["rhat"].max() <= 1.01
    assert checked["ess_bulk"].min() >= min_ess


# ---------------------------------------------------------------------------------------------
# sleepstudy: Reaction ~ Days + (Days | Subject), Gaussian (lme4 REML, rstanarm)

LME4_SLEEP = {"(Intercept)": 251.405, "Days": 10.467}
LME4_SLEEP_VARCORR = {"sd__(Intercept)": 24.741, "sd__Days": 5.922, "cor__(Intercept).Days": 0.066}
RSTANARM_SIGMA_95 = (23.08, 29.20)
LME4_SLEEP_EMMEANS = {0.0: 251.41, 9.0: 345.61}


@pytest.fixture(scope="module")
def sleep_fit():
    model = lmer("Reaction ~ Days + (Days | Subject)", data=load_dataset("sleepstudy"))
    model.fit(random_seed=1, **DEFAULT)
    return model


def test_sleepstudy_converges_with_the_defaults(sleep_fit):
    """0 divergences, R-hat <= 1.01 and bulk ESS >= 400 for both fixed effects, both subject
    sds, their correlation and sigma (the subjects centred, target_accept 0.99; measured on
    seeds 1-24: no divergences, R-hat <= 1.0056, bulk ESS >= 750; seeds 1-3: bulk ESS
    1,157-2,191)."""
    checked = _checked_parameters(sleep_fit)["term"].to_list()
    assert checked == [
        "b[(Intercept)]",
        "b[Days]",
        "sd_Subject[(Intercept)]",
        "sd_Subject[Days]",
        "cor_Subject[(Intercept).Days]",
        "sigma",
    ]
    _assert_converged(sleep_fit, min_ess=400)


def test_sleepstudy_fixed_effects_within_one_sd_of_lme4(sleep_fit):
    fit = _estimates(sleep_fit.result_fit)
    for term, reference in LME4_SLEEP.items():
        assert abs(fit[term]["estimate"] - reference) < fit[term]["sd"], term


def test_sleepstudy_subject_sds_and_correlation_cover_lme4(sleep_fit):
    var = sleep_fit.ranef_var
    assert var["group"].to_list() == ["Subject"] * 3 + ["Residual"]
    rows = _estimates(var)
    for term, reference in LME4_SLEEP_VARCORR.items():
        assert rows[term]["conf_low"] < reference < rows[term]["conf_high"], term


def test_sleepstudy_sigma_inside_rstanarms_interval(sleep_fit):
    sigma = _estimates(sleep_fit.result_fit)["sigma"]["estimate"]  # posterior median
    low, high = RSTANARM_SIGMA_95
    assert low < sigma < high
    residual = _estimates(sleep_fit.ranef_var)["sd__Observation"]
    assert residual["estimate"] == pytest.approx(sigma, rel=1e-12)


def test_sleepstudy_predictions_at_day_0_and_9_match_emmeans(sleep_fit):
    """Within half a posterior sd of lme4's emmeans (the fixed effects' sds: 7 and 16 ms)."""
    table = sleep_fit.empredict({"Days": [0, 9]})
    assert table["Days"].to_list() == [0.0, 9.0]
    for row in table.iter_rows(named=True):
        assert abs(row["emmean"] - LME4_SLEEP_EMMEANS[row["Days"]]) < 0.5 * row["SD"]


# ---------------------------------------------------------------------------------------------
# salamanders: count ~ spp + mined + (1 | site), negative binomial (glmmTMB nbinom2)

SALAMANDER_LEVELS = {
    "spp": ["GP", "PR", "DM", "EC-A", "EC-L", "DES-L", "DF"],
    "mined": ["yes", "no"],
}
GLMMTMB_SALAMANDERS = {
    "(Intercept)": -1.6832,
    "sppPR": -1.3197,
    "sppDM": 0.3686,
    "sppEC-A": -0.7098,
    "sppEC-L": 0.5714,
    "sppDES-L": 0.7929,
    "sppDF": 0.3120,
    "minedno": 2.2633,
    "size": 0.9424,
}
GLMMTMB_SITE_SD = 0.5426


def _salamanders(family: str):
    model = glmer(
        "count ~ spp + mined + (1 | site)", data=load_dataset("salamanders"), family=family
    )
    model.set_factors(SALAMANDER_LEVELS)  # glmmTMB's reference levels: GP, mined yes
    model.fit(random_seed=1, **DEFAULT)
    return model


@pytest.fixture(scope="module")
def salamanders_nb():
    return _salamanders("negativebinomial")


@pytest.fixture(scope="module")
def salamanders_poisson():
    return _salamanders("poisson")


def test_salamanders_nb_matches_glmmtmb(salamanders_nb):
    """Fixed effects and size within 2 posterior sds of glmmTMB's, the site sd inside the 95%
    interval. Before the centring information counted the overdispersion, this default fit
    had 1-2 divergences on 2 of 12 seeds (this one among them)."""
    _assert_converged(salamanders_nb, min_ess=400)
    fit = _estimates(salamanders_nb.result_fit)
    assert list(fit) == list(GLMMTMB_SALAMANDERS)
    for term, reference in GLMMTMB_SALAMANDERS.items():
        assert abs(fit[term]["estimate"] - reference) < 2 * fit[term]["sd"], term
    site = salamanders_nb.ranef_var.row(0, named=True)
    assert site["conf_low"] < GLMMTMB_SITE_SD < site["conf_high"]


def _variance_ppp(model) -> float:
    table = model.ppc("var", random_seed=1)
    return table.filter(pl.col("statistic") == "var")["ppp"].item()


def test_salamanders_variance_check_passes_nb_and_fails_poisson(
    salamanders_nb, salamanders_poisson
):
    assert 0.05 < _variance_ppp(salamanders_nb) < 0.95
    assert _variance_ppp(salamanders_poisson) < 0.01


def test_salamanders_compare_ranks_nb_first(salamanders_nb, salamanders_poisson):
    with pytest.warns(UserWarning, match="Pareto k > 0.7"):  # the Poisson fit's outliers
        table = bayesmer.compare(
            salamanders_poisson, salamanders_nb, names=["poisson", "negativebinomial"]
        )
    assert table["model"].to_list() == ["negativebinomial", "poisson"]
    poisson = table.row(1, named=True)
    assert poisson["elpd_diff"] < -2 * poisson["se_diff"]


# ---------------------------------------------------------------------------------------------
# grouseticks: TICKS ~ YEAR + cHEIGHT + (1|BROOD), negative binomial vs Poisson


@pytest.fixture(scope="module")
def grouse_nb(grouseticks):
    model = glmer("TICKS ~ YEAR + cHEIGHT + (1|BROOD)", data=grouseticks, family="negativebinomial")
    model.fit(random_seed=1, **DEFAULT)
    return model


def test_grouseticks_nb_converges_and_is_ranked_above_poisson(grouse_nb, grouse_glmer):
    _assert_converged(grouse_nb, min_ess=400)
    assert 0.05 < _variance_ppp(grouse_nb) < 0.95
    # one brood per 3.4 chicks: high Pareto k for both fits (the warning says why)
    with pytest.warns(UserWarning, match="Pareto k > 0.7"):
        table = bayesmer.compare(grouse_glmer, grouse_nb, names=["poisson", "negativebinomial"])
    assert table["model"].to_list() == ["negativebinomial", "poisson"]
    poisson = table.row(1, named=True)
    assert poisson["elpd_diff"] < -2 * poisson["se_diff"]


# ---------------------------------------------------------------------------------------------
# Beta-binomial: simulated trials

BB_TRUTH = {"(Intercept)": -0.5, "x": 0.7, "phi": 8.0}
BB_GROUP_SD = 0.5


def _trials(seed: int, phi: float | None) -> pl.DataFrame:
    """30 groups x 10 rows with 10-30 trials each; each row's probability drawn from
    Beta(p phi, (1 - p) phi) around the model's p, or p itself when ``phi`` is None."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(30), 10)
    x = rng.normal(size=g.size)
    n = rng.integers(10, 31, size=g.size)
    eta = BB_TRUTH["(Intercept)"] + BB_TRUTH["x"] * x + rng.normal(0, BB_GROUP_SD, 30)[g]
    p = special.expit(eta)
    if phi is not None:
        p = rng.beta(p * phi, (1 - p) * phi)
    y = rng.binomial(n, p)
    return pl.DataFrame({"y": y, "n": n, "x": x, "g": [f"g{i:02d}" for i in g]})


def _trials_fit(data: pl.DataFrame, family: str, seed: int):
    model = glmer("cbind(y, n - y) ~ x + (1|g)", data=data, family=family)
    model.fit(random_seed=seed, ci=0.9, **DEFAULT)
    return model


def test_betabinomial_recovers_phi_and_fixed_effects():
    """Three simulated data sets (phi 8): each fixed effect and phi lies within 3 posterior
    sds of the truth in every data set (a calibrated posterior fails one of these nine checks
    with probability about 0.025; a biased estimate, a few sds off, fails them all), and phi's
    90% interval is informative (within a factor 2 of the truth). The group sd's 90% interval
    holds the truth in at least 2 of the 3 (probability 0.028 of failing when calibrated).

    A 90%-coverage rule for the fixed effects as well was too brittle: on data sets 2 and 3
    the slope's interval ends 0.024 above and 0.003 below the truth (z = 2.0 and 1.7), so the
    rule's outcome turned on Monte Carlo error in the interval's edges."""
    sd_inside = []
    for seed in (1, 2, 3):
        model = _trials_fit(_trials(seed, phi=BB_TRUTH["phi"]), "betabinomial", seed)
        _assert_converged(model, min_ess=400)
        fit = _estimates(model.result_fit)
        for term, truth in BB_TRUTH.items():
            z = (fit[term]["estimate"] - truth) / fit[term]["sd"]
            assert abs(z) < 3, (seed, term, z)
        phi = fit["phi"]
        assert BB_TRUTH["phi"] / 2 < phi["conf_low"] and phi["conf_high"] < 2 * BB_TRUTH["phi"]
        sd = model.ranef_var.row(0, named=True)
        sd_inside.append(sd["conf_low"] < BB_GROUP_SD < sd["conf_high"])
    assert sum(sd_inside) >= 2, sd_inside


def test_betabinomial_without_overdispersion_agrees_with_binomial():
    """On binomial data the beta-binomial fit finds a large phi (90% interval above 30: a
    variance inflation below 2 for 30 trials) and the binomial fit's fixed effects and group
    sd, to within a quarter of a posterior sd (the Monte Carlo error of each median is about
    1/50 of one)."""
    data = _trials(1, phi=None)
    bb = _trials_fit(data, "betabinomial", seed=1)
    binomial = _trials_fit(data, "binomial", seed=1)
    _assert_converged(bb, min_ess=400)
    bb_fit, binomial_fit = _estimates(bb.result_fit), _estimates(binomial.result_fit)
    assert bb_fit["phi"]["conf_low"] > 30
    for term in ("(Intercept)", "x"):
        tolerance = 0.25 * binomial_fit[term]["sd"]
        assert abs(bb_fit[term]["estimate"] - binomial_fit[term]["estimate"]) < tolerance
    bb_sd, binomial_sd = bb.ranef_var.row(0, named=True), binomial.ranef_var.row(0, named=True)
    sd_of_sd = (binomial_sd["conf_high"] - binomial_sd["conf_low"]) / (2 * 1.645)
    assert abs(bb_sd["estimate"] - binomial_sd["estimate"]) < 0.25 * sd_of_sd

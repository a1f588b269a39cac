"""The PyMC model: its likelihood equals the exact one up to a constant, and the
parametrization (centring, nesting, within-group predictors) reports the usual quantities."""

import warnings

import numpy as np
import polars as pl
import pytensor
import pytest
from scipy import optimize, special, stats
from synthetic import crossed_data

from bayesmer import ConvergenceWarning, glm, glmer
from bayesmer.priors import sample_prior
from bayesmer.pymc_model import OBSERVED, build_model, carrier, nesting
from bayesmer.sampling import default_draws, default_sampler_kwargs, single_nested
from bayesmer.spec import heterogeneity, parent_levels


def _potential_and_eta(model, spec, point):
    names = ["b"] + [g.effect_name for g in spec.groups]
    reported = model.replace_rvs_by_values([model[n] for n in names])
    fn = model.compile_fn(
        [model.potentiallogp, *reported], inputs=model.value_vars, on_unused_input="ignore"
    )
    out = fn(point)
    b, effects = out[1], out[2:]
    eta = spec.X @ b
    for g, u in zip(spec.groups, effects, strict=True):
        eta = eta + u[g.index]
    return float(out[0]), eta


def _random_points(model, seed, n=2):
    rng = np.random.default_rng(seed)
    base = model.initial_point()
    return [{k: v + rng.normal(0, 0.1, np.shape(v)) for k, v in base.items()} for _ in range(n)]


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_binomial_potential_is_exact_loglik_up_to_a_constant(titanic, link):
    spec = glmer("survived ~ sex + (1|pclass)", titanic, link=link, family="binomial").spec
    model = build_model(spec)
    assert OBSERVED in [p.name for p in model.potentials]
    values = []
    for point in _random_points(model, seed=1):
        pot, eta = _potential_and_eta(model, spec, point)
        p = spec.family.inverse_link(eta)
        exact = stats.binom.logpmf(spec.y, spec.size.astype(int), p).sum()
        values.append((pot, exact))
    (pot1, ex1), (pot2, ex2) = values
    assert pot1 - pot2 == pytest.approx(ex1 - ex2, rel=1e-9, abs=1e-7)


def _scipy_binomial_loglik(link, eta, s, n):
    """Exact binomial log-likelihood from scipy's log(p) and log(1 - p), constants included."""
    if link == "logit":
        log_p, log_q = special.log_expit(eta), special.log_expit(-eta)
    elif link == "probit":
        log_p, log_q = special.log_ndtr(eta), special.log_ndtr(-eta)
    else:  # cloglog: p is the cdf of the Gumbel distribution of the minimum
        log_p, log_q = stats.gumbel_l.logcdf(eta), stats.gumbel_l.logsf(eta)
    const = special.gammaln(n + 1) - special.gammaln(s + 1) - special.gammaln(n - s + 1)
    return float(np.sum(const + s * log_p + (n - s) * log_q))


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_binomial_potential_and_gradient_exact_far_in_the_tails(link):
    """Cells with eta from -12 to 12, successes and failures in each: the likelihood the
    sampler sees is the exact one there too (it used to be clipped at p = 1 - 1e-12, past
    eta 3.3 for cloglog and 7 for probit, with a constant, zero-gradient failures term)."""
    x = np.linspace(-3.0, 3.0, 13)
    s = np.arange(13) + 3
    n = np.full(13, 20)
    data = pl.DataFrame({"x": x, "s": s, "f": n - s})
    spec = glm("cbind(s, f) ~ x", data, link=link, family="binomial").spec
    model = build_model(spec)
    (z,) = [v for v in model.value_vars if v.name == "b_z"]
    grad = model.compile_fn(
        pytensor.grad(model.potentiallogp, z), inputs=model.value_vars, on_unused_input="ignore"
    )
    points = [{"Intercept_c": np.array(c), "b_z": np.array([k])} for c, k in ((0.5, 3.0), (-1, 2))]
    values = []
    for point in points:
        pot, eta = _potential_and_eta(model, spec, point)
        assert eta.min() < -5.0 and eta.max() > 5.0
        values.append((pot, _scipy_binomial_loglik(link, eta, s, n)))
        # d/dz of the exact log-likelihood, by central differences
        h = 1e-6
        up = _potential_and_eta(model, spec, {**point, "b_z": point["b_z"] + h})[1]
        down = _potential_and_eta(model, spec, {**point, "b_z": point["b_z"] - h})[1]
        numeric = (
            _scipy_binomial_loglik(link, up, s, n) - _scipy_binomial_loglik(link, down, s, n)
        ) / (2 * h)
        assert float(grad(point)[0]) == pytest.approx(numeric, rel=1e-6)
    (pot1, ex1), (pot2, ex2) = values
    assert pot1 - pot2 == pytest.approx(ex1 - ex2, rel=1e-9, abs=1e-7)


def test_cloglog_fit_heeds_failures_far_in_the_tail():
    """A cloglog fit matches the exact maximum likelihood when one cell, far out on x, has a
    few failures: the exact likelihood bends the slope to them (each costs exp(eta)); a
    likelihood clipped past eta 3.3 ignored them and put the slope 28 sd away."""
    x = np.append(np.linspace(-1.0, 1.0, 11), 2.0)
    s = np.array([40, 68, 88, 117, 157, 188, 198, 200, 200, 200, 200, 197])
    n = np.full(12, 200)
    data = pl.DataFrame({"x": x, "s": s, "f": n - s})

    def negative_loglik(b):
        return -_scipy_binomial_loglik("cloglog", b[0] + b[1] * x, s, n)

    mle = optimize.minimize(negative_loglik, [0.5, 1.0], method="BFGS").x
    assert mle == pytest.approx([0.5275, 1.2869], abs=1e-3)
    model = glm("cbind(s, f) ~ x", data, link="cloglog", family="binomial")
    model.fit(draws=500, chains=2, random_seed=1, progressbar=False)
    fit = model.result_fit
    # posterior median vs MLE: Monte Carlo error (sd / sqrt(ESS) ~ 0.04 sd) plus the O(1/n)
    # gap between a posterior median and the mode
    assert np.abs(fit["estimate"].to_numpy() - mle).max() < 0.25 * fit["sd"].min()


def test_poisson_potential_is_exact_loglik_up_to_a_constant(grouseticks):
    spec = glmer("TICKS ~ YEAR + cHEIGHT + (1|BROOD)", grouseticks, family="poisson").spec
    model = build_model(spec)
    values = []
    for point in _random_points(model, seed=2):
        pot, eta = _potential_and_eta(model, spec, point)
        exact = stats.poisson.logpmf(spec.y, np.exp(eta) * spec.size).sum()
        values.append((pot, exact))
    (pot1, ex1), (pot2, ex2) = values
    assert pot1 - pot2 == pytest.approx(ex1 - ex2, rel=1e-9, abs=1e-7)


def test_nesting_of_grouping_factors(grouseticks, titanic):
    """Observations within broods within locations form one chain; crossed factors do not."""
    spec = glmer(
        "TICKS ~ YEAR + cHEIGHT + (1|LOCATION) + (1|INDEX) + (1|BROOD)",
        grouseticks,
        family="poisson",
    ).spec
    layout = {n.group.name: n for n in nesting(spec)}
    assert [n.group.name for n in nesting(spec)] == ["LOCATION", "BROOD", "INDEX"]
    assert layout["LOCATION"].group.parent is None
    assert layout["BROOD"].group.parent == "LOCATION"
    assert layout["INDEX"].group.parent == "BROOD"
    assert [n.innermost for n in layout.values()] == [False, False, True]
    assert all(n.carries for n in layout.values())
    assert carrier(spec).name == "LOCATION"
    # the outermost factor is non-centred, but for the locations split from their broods
    # (one brood, or a centred one); nested (not crossed) factors keep nutpie's diagonal
    # mass matrix
    location = layout["LOCATION"].group
    assert location.parametrization == "noncentered (48 of 63 split from their nested levels)"
    assert layout["BROOD"].group.centred.any()
    assert "adaptation" not in default_sampler_kwargs(spec)
    # each brood's location, as in the data
    brood, location = layout["BROOD"].group, layout["LOCATION"].group
    pairs = grouseticks.select("BROOD", "LOCATION").unique()
    want = dict(zip(pairs["BROOD"].cast(str), pairs["LOCATION"].cast(str), strict=True))
    got = parent_levels(brood.index, location.index, len(brood.levels))
    assert {brood.levels[i]: location.levels[j] for i, j in enumerate(got)} == want
    assert parent_levels(location.index, brood.index, len(location.levels)) is None

    spec = glmer("survived ~ sex + (1|pclass) + (1|who)", titanic, family="binomial").spec
    layout = nesting(spec)
    assert all(n.group.parent is None and n.innermost for n in layout)
    assert sum(n.carries for n in layout) == 1


def test_crossed_factors_the_one_of_fewest_levels_carries_the_intercept():
    """Of crossed factors the one with the fewest levels carries the intercept (its mean's
    ridge with the intercept is the widest); the low-rank mass matrix only while a factor
    that does not carry it has few levels (issue 13's crossed case took 136 s with it)."""
    formula = "y ~ age + (1|subject) + (1|item)"
    spec = glmer(formula, crossed_data(312, 24), family="binomial").spec
    # the subjects have more centred levels (the rule before chose them)
    subject, item = spec.groups
    assert subject.centred.sum() > item.centred.sum() == 24
    assert carrier(spec).name == "item"
    assert "adaptation" not in default_sampler_kwargs(spec)
    # 30 x 30: a tie in levels goes to the most centred levels, the other factor's 30
    # levels leave a wide ridge for the low-rank mass matrix
    spec = glmer(formula, crossed_data(30, 30), family="binomial").spec
    assert carrier(spec).name == "subject"
    assert default_sampler_kwargs(spec)["adaptation"] == "low_rank"


def test_low_rank_settings_pass_where_bayesmer_chose_the_low_rank_mass_matrix():
    """A setting of nutpie's low-rank mass matrix is checked against the adaptation the fit
    will use: bayesmer's choice for crossed factors counts, not nutpie's default (the check
    used to reject ``mass_matrix_gamma`` there as a diagonal-only fit's setting)."""
    model = glmer("y ~ age + (1|subject) + (1|item)", crossed_data(30, 30), family="binomial")
    with warnings.catch_warnings():  # a short fit: only the settings matter here
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(
            draws=100, tune=100, chains=2, random_seed=1, progressbar=False, mass_matrix_gamma=1e-4
        )
    assert model.sampler_kwargs["adaptation"] == "low_rank"
    assert model.sampler_kwargs["mass_matrix_gamma"] == 1e-4
    text = str(model.summary())
    assert "Groups: subject 30 (mixed (26 of 30 centred); carries the intercept)" in text
    assert "Groups: item 30 (mixed (24 of 30 centred))\n" in text
    assert "low-rank mass matrix by default: the mean of the 30 item effects trades off" in text
    one = glmer("y ~ age + (1|subject)", crossed_data(30, 30), family="binomial")
    with pytest.raises(TypeError, match="mass_matrix_gamma=0.0001.*not available for diag"):
        one.fit(mass_matrix_gamma=1e-4)
    assert one.posterior is None


@pytest.mark.slow
def test_crossed_factors_converge_with_the_diagonal_mass_matrix():
    """312 subjects x 24 items at the defaults: every fixed effect and sd well sampled in a
    few seconds (with the subjects carrying the intercept and the diagonal mass matrix, the
    intercept's bulk ESS was 18-26 per chain of 1,000 draws)."""
    model = glmer("y ~ age + (1|subject) + (1|item)", crossed_data(312, 24), family="binomial")
    model.fit(random_seed=1, progressbar=False)
    assert model.convergence_problems == []
    main = model.diagnostics.filter(~pl.col("term").str.starts_with("u_"))
    assert main["ess_bulk"].min() >= 1000
    assert main["rhat"].max() <= 1.01
    assert model.sampler_kwargs.get("adaptation") is None
    text = str(model.summary())
    assert "Groups: item 24 (centered; carries the intercept)" in text
    assert "low-rank" not in text


def test_nested_within_centred_model_is_the_usual_glmm(grouseticks):
    """Whatever the nesting and centring, the likelihood sees X @ b + sum of u[group]."""
    spec = glmer(
        "TICKS ~ YEAR * cHEIGHT + (1|LOCATION) + (1|BROOD) + (1|INDEX)",
        grouseticks,
        family="poisson",
    ).spec
    model = build_model(spec)
    values = []
    for point in _random_points(model, seed=3):
        pot, eta = _potential_and_eta(model, spec, point)
        y = spec.y.astype(float)
        values.append((pot, float(np.sum(y * eta - np.exp(eta)))))
    for pot, exact in values:
        assert pot == pytest.approx(exact, rel=1e-10)


def test_no_intercept_model_is_not_centred():
    """``0 + x``: centring x would silently add an intercept's worth of freedom."""
    rng = np.random.default_rng(0)
    x = rng.choice([1.0, 2.0, 3.0], 500)
    y = rng.binomial(1, 1 / (1 + np.exp(-(0.5 * x - 1.0))))
    spec = glm("y ~ 0 + x", pl.DataFrame({"y": y, "x": x}), family="binomial").spec
    model = build_model(spec)
    point = _random_points(model, seed=1)[0]
    pot, eta = _potential_and_eta(model, spec, point)  # eta = X @ b, b as reported
    n = spec.size.astype(float)
    exact = float(np.sum(spec.y * eta - n * np.logaddexp(0.0, eta)))
    assert pot == pytest.approx(exact, rel=1e-10)


def test_centring_follows_information_per_level():
    rng = np.random.default_rng(4)
    # 20 groups with 200 rows each and 20 with 2 rows each
    sizes = [200] * 20 + [2] * 20
    g = np.repeat(np.arange(40), sizes)
    effects = rng.normal(0.0, 1.0, 40)  # real spread between groups
    y = rng.binomial(1, 1 / (1 + np.exp(-(-0.4 + effects[g]))))
    spec = glmer("y ~ (1|g)", pl.DataFrame({"y": y, "g": g}), family="binomial").spec
    grp = spec.groups[0]
    big = np.array(sizes) == 200
    assert grp.centred[big].all() and not grp.centred[~big].any()
    assert grp.parametrization == "mixed (20 of 40 centred)"
    assert carrier(spec) is grp


def test_glm_has_no_carrier_and_reports_b(titanic):
    spec = glm("survived ~ sex", titanic, family="binomial").spec
    assert carrier(spec) is None
    model = build_model(spec)
    assert model.named_vars_to_dims["b"] == ("term",)
    assert list(model.coords["term"]) == ["(Intercept)", "sexmale"]


def test_prior_only_model_has_no_likelihood(titanic):
    spec = glmer("survived ~ sex + (1|pclass)", titanic, family="binomial").spec
    assert build_model(spec, prior_only=True).potentials == []


def test_draws_by_default_double_where_levels_hold_a_single_nested_level(grouseticks):
    """35 of 63 locations hold one brood: their two sds trade off, 2000 draws by default;
    broods alone, locations whose every level holds several broods, or chicks in broods (18
    of 118 broods hold one chick) keep 1000."""
    nested = glmer("TICKS ~ YEAR + cHEIGHT + (1|LOCATION/BROOD)", grouseticks, family="poisson")
    assert single_nested(nested.spec) == [("LOCATION", "LOCATION:BROOD", 35, 63)]
    assert default_draws(nested.spec) == 2000
    brood = glmer("TICKS ~ YEAR + cHEIGHT + (1|BROOD)", grouseticks, family="poisson")
    assert default_draws(brood.spec) == 1000
    several = grouseticks.filter(pl.col("LOCATION").is_in(["11", "14", "19", "28"]))
    two = glmer("TICKS ~ YEAR + (1|LOCATION/BROOD)", several, family="poisson")
    assert np.bincount(two.spec.groups[1].parent_level).min() >= 2
    assert single_nested(two.spec) == [] and default_draws(two.spec) == 1000
    chicks = glmer("TICKS ~ YEAR + (1|BROOD) + (1|INDEX)", grouseticks, family="poisson")
    assert single_nested(chicks.spec) == [("BROOD", "INDEX", 18, 118)]
    assert default_draws(chicks.spec) == 1000


def test_sampler_defaults_and_overrides(titanic):
    """Few groups raise target_accept; crossed factors get the low-rank mass matrix; the
    user's keywords win."""
    assert default_sampler_kwargs(glm("survived ~ sex", titanic, family="binomial").spec) == {
        "target_accept": 0.8
    }
    few = glmer("survived ~ sex + (1|pclass)", titanic, family="binomial")
    assert default_sampler_kwargs(few.spec) == {"target_accept": 0.95}
    crossed = glmer("survived ~ sex + (1|pclass) + (1|embarked)", titanic, family="binomial")
    with pytest.warns(UserWarning, match="Dropped 2 of 891 rows") as record:
        assert default_sampler_kwargs(crossed.spec)["adaptation"] == "low_rank"
    assert record[0].filename == __file__  # the warning points at the user's line
    with pytest.warns(ConvergenceWarning, match="Only one chain: R-hat needs at least two"):
        few.fit(
            draws=100,
            tune=100,
            chains=1,
            random_seed=1,
            progressbar=False,
            target_accept=0.99,
            maxdepth=6,
        )
    assert few.sampler_kwargs == {"target_accept": 0.99, "maxdepth": 6}
    assert few.posterior["sample_stats"]["depth"].max() <= 6


def test_no_between_group_spread_means_non_centred():
    """Groups that differ no more than their noise get the non-centred form (a centred one
    funnels as the group sd goes to zero: 33-46 divergences per 4,000 draws on these data)."""
    rng = np.random.default_rng(11)
    sizes = [10, 25, 40, 75, 100, 150]
    g = np.repeat(np.arange(6), sizes)
    y = rng.binomial(1, 0.45, len(g))
    spec = glmer("y ~ (1|g)", pl.DataFrame({"y": y, "g": g}), family="binomial").spec
    assert spec.groups[0].parametrization == "noncentered"
    assert carrier(spec) is None


def test_heterogeneity_by_hand():
    # w = 10 each, weighted mean 1, Q = 10 * (1 + 0 + 1) = 20 on df = 2,
    # sum(w) - sum(w^2) / sum(w) = 30 - 10 = 20, so tau2 = (20 - 2) / 20 = 0.9;
    # on 2 df the chi-square sf is exp(-q / 2) and its 10% point is -2 log(0.9).
    tau2, tau2_low, p = heterogeneity(np.array([0.0, 1.0, 2.0]), np.full(3, 0.1))
    assert tau2 == pytest.approx(0.9, rel=1e-12)
    assert tau2_low == pytest.approx(0.9 * -2 * np.log(0.9) / 2, rel=1e-9)
    assert p == pytest.approx(np.exp(-10.0), rel=1e-9)
    # levels that agree within their noise: no between-group variance
    tau2, tau2_low, p = heterogeneity(np.array([0.0, 0.1, -0.1]), np.full(3, 0.1))
    assert (tau2, tau2_low) == (0.0, 0.0) and p > 0.5
    assert heterogeneity(np.array([0.3]), np.array([0.1])) == (0.0, 0.0, 1.0)
    # nested: levels against their parent's mean (parents' means 1 and 6): Q = 10 * 4 = 40 on
    # df = 4 levels - 2 parents, sum(w) - sum over parents of sum(w^2) / sum(w) = 40 - 20
    tau2, _, p = heterogeneity(
        np.array([0.0, 2.0, 5.0, 7.0]), np.full(4, 0.1), within=np.array([0, 0, 1, 1])
    )
    assert tau2 == pytest.approx((40 - 2) / 20, rel=1e-12)
    assert p == pytest.approx(np.exp(-20.0), rel=1e-9)


def _six_unequal_groups(seed: int, sd: float) -> pl.DataFrame:
    """400 Bernoulli rows, two factors and a numeric column, 6 groups of unequal size."""
    rng = np.random.default_rng(seed)
    n = 400
    a = rng.choice(["lo", "hi"], n)
    b = rng.choice(["x", "y", "z"], n)
    x = rng.choice([0.0, 0.5, 2.0, 3.0], n)
    g = rng.choice(6, n, p=[0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    u = rng.normal(0.0, sd, 6) if sd else np.zeros(6)
    eta = -0.3 + 0.8 * (a == "hi") - 0.5 * (b == "z") + 0.4 * x + u[g]
    y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    return pl.DataFrame({"y": y, "a": a, "b": b, "x": x, "g": [f"g{i}" for i in g]})


def test_groups_that_do_not_clearly_differ_are_non_centred_with_smaller_steps():
    """A real but uncertain spread (group sd 0.5, Q-test p = 0.006): every level non-centred,
    although the big ones carry enough information to be centred on the point estimate of
    the spread, and target_accept 0.99 for the funnel the informative levels then make at
    large sd."""
    spec = glmer("y ~ a + b + x + (1|g)", _six_unequal_groups(1, 0.5), family="binomial").spec
    grp = spec.groups[0]
    assert grp.parametrization == "noncentered"
    assert (grp.information >= 5).sum() >= 4
    assert default_sampler_kwargs(spec) == {"target_accept": 0.99}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_weak_group_spread_fits_without_divergences(seed):
    """No group variance at all (Q-test p = 0.24), 6 unequal groups: centring the biggest
    level gave 143 divergences in these three fits of 4,000 draws (59 at target_accept 0.98);
    the default non-centred form none."""
    model = glmer("y ~ a + b + x + (1|g)", _six_unequal_groups(1, 0.0), family="binomial")
    model.fit(random_seed=seed, progressbar=False)
    assert model.chain_diagnostics["divergences"].sum() == 0
    assert model.diagnostics["rhat"].max() <= 1.01


# -- predictors in any units -------------------------------------------------------------------


def _grouped_data(seed: int = 7) -> pl.DataFrame:
    """Bernoulli rows in 12 informative groups (all centred), x varying within groups."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(12), 80)
    x = rng.normal(size=g.size) + 0.5 * rng.normal(size=12)[g]
    eta = -0.3 + 0.8 * x + rng.normal(0.0, 1.0, 12)[g]
    y = (rng.random(g.size) < special.expit(eta)).astype(int)
    return pl.DataFrame({"y": y, "x": x, "g": g.astype(str)})


def _same_model(datasets, sigmas, rel=1e-12):
    """Build glmer('y ~ x + (1|g)') on each data set with the given slope prior sd, and check
    the log density and its gradient agree at a few points (to ``rel``)."""
    specs = [
        glmer("y ~ x + (1|g)", d, priors={"x": ("normal", 0, sigma)}, family="binomial").spec
        for d, sigma in zip(datasets, sigmas, strict=True)
    ]
    assert all(carrier(spec).name == "g" for spec in specs)
    models = [build_model(spec) for spec in specs]
    logp = [m.compile_logp() for m in models]
    dlogp = [m.compile_dlogp() for m in models]
    for point in _random_points(models[0], seed=3, n=3):
        point = {k: v + 0.4 for k, v in point.items()}
        assert logp[1](point) == pytest.approx(logp[0](point), rel=rel)
        np.testing.assert_allclose(dlogp[1](point), dlogp[0](point), rtol=1e3 * rel, atol=1e-9)


def test_predictor_in_tiny_units_gives_the_same_model():
    """x in units of 1e-12 builds the same model as x (up to rounding): its within-group term is
    kept (a fixed 1e-9 cutoff used to take it for a constant within groups and drop it)."""
    data = _grouped_data()
    _same_model([data, data.with_columns(pl.col("x") * 1e-12)], [2.5, 2.5e12])


def test_predictor_far_from_zero_keeps_its_within_group_term():
    """A predictor that varies little compared to its magnitude (like timestamps in seconds) is
    judged on its spread, not its magnitude: the same model as the predictor shifted to 0."""
    far = _grouped_data().with_columns(pl.col("x") * 1e-6 + 1e6)
    near = far.with_columns(pl.col("x") - 1e6)  # exact: the same rounded values, shifted
    # up to the rounding of the mean of x (1e-10 of 1e6), which the centring subtracts
    _same_model([far, near], [2.5e6, 2.5e6], rel=1e-6)


def test_predictor_in_tiny_units_same_posterior_rescaled():
    """The posterior of a slope in units of 1e-12 is the original one times 1e12 (within Monte
    Carlo error: the same seed does not give the same draws, rounding sends NUTS elsewhere)."""
    data = _grouped_data()
    fits = []
    for d in (data, data.with_columns(pl.col("x") * 1e-12)):
        model = glmer("y ~ x + (1|g)", d, family="binomial")
        model.fit(draws=1000, chains=2, random_seed=3, progressbar=False)
        fits.append(model.result_fit.filter(pl.col("term") == "x").row(0, named=True))
    orig, tiny = fits
    assert tiny["sd"] * 1e-12 == pytest.approx(orig["sd"], rel=0.15)
    # two independent medians, each with MC error about 1.25 sd / sqrt(ESS >= 1000)
    assert abs(tiny["estimate"] * 1e-12 - orig["estimate"]) < 0.2 * orig["sd"]


@pytest.mark.parametrize("scale, shift", [(1e-12, 0.0), (1e-3, 1e9)], ids=["tiny", "far"])
def test_predictor_in_any_units_is_identifiable(scale, shift):
    """6,000 distinct values of x in units of 1e-12, or varying by 1e-3 around 1e9 (timestamps):
    numpy's rank cutoff, relative to the largest singular value, took the column for zero or for
    a copy of the intercept and refused the design. A column that is a copy still is refused."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=6000) * scale + shift
    data = pl.DataFrame({"x": x, "y": (rng.random(6000) < 0.5).astype(int)})
    assert glm("y ~ x", data, family="binomial").spec.terms == ["(Intercept)", "x"]
    with pytest.raises(ValueError, match="rank deficient"):
        glm("y ~ x + x2", data.with_columns(x2=pl.col("x") * 2.0), family="binomial").fit()
    with pytest.raises(ValueError, match="rank deficient"):
        glm("y ~ x + c", data.with_columns(c=pl.lit(shift + 3.0)), family="binomial").fit()


def _latent_density_check(spec, seed):
    """The density the model puts on its latent group variables equals, by the change of
    variables to the reported deviations u, independent Normal(0, sd_g) deviations per factor
    (the usual chain of centring) times |det du/d(latent)|, at random points.

    Given the other parameters, u is affine in the latent variables, so each column of the
    Jacobian is the change of u when one latent variable grows by 1 (checked: two steps)."""
    import pytensor.tensor as pt

    model = build_model(spec, prior_only=True)
    latent = [v.name for v in model.free_RVs if v.name.startswith(("m_", "z_", "split_"))]
    effects = model.replace_rvs_by_values([model[g.effect_name] for g in spec.groups])
    sds = model.replace_rvs_by_values([model[g.sd_name] for g in spec.groups])
    flat = pt.concatenate([u.ravel() for u in effects])
    fn = model.compile_fn(
        [model.logp(vars=[model[v] for v in latent]), flat, *sds], mode="FAST_COMPILE"
    )
    sizes = np.cumsum([0] + [len(g.levels) for g in spec.groups])
    rng = np.random.default_rng(seed)
    for _ in range(2):
        point = {k: rng.normal(0, 0.7, np.shape(v)) for k, v in model.initial_point().items()}
        logp, u, *sd = fn(point)
        columns = []
        for name in latent:
            for i in range(point[name].size):
                for step in (1.0, 2.0):
                    moved = dict(point)
                    moved[name] = point[name].copy()
                    moved[name].flat[i] += step
                    columns.append((fn(moved)[1] - u) / step)
                np.testing.assert_allclose(columns[-1], columns[-2], atol=1e-9)
                columns.pop()
        jac = np.stack(columns, axis=1)
        assert jac.shape == (len(u), len(u))  # as many latent variables as deviations
        expected = sum(
            stats.norm.logpdf(u[a:b], 0.0, s).sum()
            for a, b, s in zip(sizes[:-1], sizes[1:], sd, strict=True)
        )
        expected += np.linalg.slogdet(jac)[1]
        assert logp == pytest.approx(expected, rel=1e-9, abs=1e-8)


def test_split_levels_keep_the_posterior_of_the_chain_of_centring(grouseticks):
    """Levels split from their nested levels (a location with one brood, or with centred
    broods) are a change of variables: the prior of the deviations, and so the posterior,
    is the usual one. Checked on grouse locations and broods as fitted, and on a chain of
    three factors with split and centred levels at random (runs of single nested levels
    across two factors, split levels holding centred and non-centred levels)."""
    import dataclasses

    spec = glmer("TICKS ~ YEAR + cHEIGHT + (1|LOCATION/BROOD)", grouseticks, family="poisson").spec
    loc, brood = spec.groups
    held = np.bincount(brood.parent_level)
    assert loc.split[held == 1].all() and (loc.split & (held > 1)).any()
    assert loc.parametrization == "noncentered (53 of 63 split from their nested levels)"
    _latent_density_check(spec, seed=1)
    # forward draws (sample_prior) follow the same prior: u / sd standard Normal, independent
    prior = sample_prior(spec, draws=1000, random_seed=1)["prior"]
    scaled = [
        prior[g.effect_name].values.reshape(-1, len(g.levels))
        / prior[g.sd_name].values.reshape(-1, 1)
        for g in (loc, brood)
    ]
    # means of 63,000 and 118,000 chi-square(1) values: standard errors 0.006 and 0.004
    assert np.mean(scaled[0][:, loc.split] ** 2) == pytest.approx(1.0, abs=0.04)
    assert np.mean(scaled[1] ** 2) == pytest.approx(1.0, abs=0.03)
    assert np.mean(scaled[0][:, brood.parent_level] * scaled[1]) == pytest.approx(0.0, abs=0.03)

    rng = np.random.default_rng(5)
    sizes = [1, 1, 2, 3, 1, 4, 2, 1, 5]  # plots per site
    rows = []
    for site, n_plots in enumerate(sizes):
        for plot in range(n_plots):
            for obs in range(int(rng.integers(1, 4))):
                rows.append((f"s{site}", f"s{site}p{plot}", f"s{site}p{plot}o{obs}"))
    site, plot, obs = map(list, zip(*rows, strict=True))
    data = pl.DataFrame(
        {"y": rng.poisson(5.0, len(rows)), "x": rng.normal(size=len(rows)), "site": site}
    ).with_columns(plot=pl.Series(plot), obs=pl.Series(obs))
    spec = glmer("y ~ x + (1|site/plot/obs)", data, family="poisson").spec
    assert [g.parent for g in spec.groups] == [None, "site", "site:plot"]
    for seed in range(3):
        flags = np.random.default_rng(seed)
        groups = []
        for k, g in enumerate(spec.groups):
            split = flags.random(len(g.levels)) < 0.6 if k < 2 else np.zeros(len(g.levels), bool)
            centred = (flags.random(len(g.levels)) < 0.5) & ~split
            groups.append(dataclasses.replace(g, split=split, centred=centred))
        _latent_density_check(dataclasses.replace(spec, groups=groups), seed=seed)

"""Gaussian (lm, lmer), negative binomial and beta-binomial models: exact collapsing, input
checks, defaults as pymer4's, and the dispersion parameter in every table.

Fits against published figures (sleepstudy, salamanders) and simulation recovery are in
``tests/test_new_families_reference.py`` (slow).
"""

import numpy as np
import polars as pl
import pytest

import bayesmer
from bayesmer import collapse, glm, glmer, lm, lmer
from bayesmer.pymc_model import build_model


def _overdispersed(seed: int = 0, n: int = 400) -> pl.DataFrame:
    """Counts, trials and a continuous outcome on few distinct predictor values (so rows
    collapse), with groups."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 8, n)
    a = rng.integers(0, 2, n)
    u = rng.normal(0, 0.4, 8)
    mu = np.exp(0.5 + 0.4 * a + u[g])
    counts = rng.negative_binomial(2.0, 2.0 / (2.0 + mu))
    trials = rng.integers(1, 6, n)
    p = 1 / (1 + np.exp(-(-0.3 + 0.6 * a + u[g])))
    successes = rng.binomial(trials, rng.beta(p * 4, (1 - p) * 4))
    value = np.round(10 + 2 * a + 3 * u[g] + rng.normal(0, 1, n), 1)
    return pl.DataFrame(
        {
            "count": counts,
            "s": successes,
            "n": trials,
            "value": value,
            "a": a.astype(str),
            "g": [f"g{i}" for i in g],
        }
    )


CASES = [
    ("value ~ a + (1|g)", "gaussian"),
    ("count ~ a + (1|g)", "negativebinomial"),
    ("cbind(s, n - s) ~ a + (1|g)", "betabinomial"),
]


@pytest.mark.parametrize(("formula", "family"), CASES)
def test_collapsed_log_density_equals_row_by_row(formula, family, monkeypatch):
    data = _overdispersed()
    collapsed = glmer(formula, data, family=family)
    assert collapsed.spec.collapsed
    assert len(collapsed.spec.cells) < 40 < len(data)
    monkeypatch.setattr(collapse, "COLLAPSE_MAX_SHARE", 0.0)  # every row its own cell
    rows = glmer(formula, data, family=family)
    assert not rows.spec.collapsed and len(rows.spec.cells) == len(data)
    m_cells, m_rows = build_model(collapsed.spec), build_model(rows.spec)
    logp_cells, logp_rows = m_cells.compile_logp(), m_rows.compile_logp()
    rng = np.random.default_rng(1)
    start = m_cells.initial_point()
    assert start.keys() == m_rows.initial_point().keys()
    for _ in range(5):
        point = {k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in start.items()}
        assert logp_cells(point) == pytest.approx(logp_rows(point), rel=1e-12, abs=1e-10)


def test_default_family_is_gaussian_as_pymer4():
    data = _overdispersed()
    assert glm("value ~ a", data).family == "gaussian"
    assert glmer("value ~ a + (1|g)", data).link == "identity"
    assert lm("value ~ a", data).family == "gaussian"
    assert lmer("value ~ a + (1|g)", data).family == "gaussian"
    assert repr(lm("value ~ a", data)).startswith("bayesmer.lm(")


def test_lm_and_lmer_check_their_random_effects():
    data = _overdispersed()
    with pytest.raises(ValueError, match=r"lm does not take random effects .* use lmer"):
        lm("value ~ a + (1|g)", data)
    with pytest.raises(ValueError, match=r"lmer needs at least one random intercept.*use lm"):
        lmer("value ~ a", data)
    with pytest.raises(TypeError, match="family"):
        lm("value ~ a", data, family="binomial")


def test_bad_outcomes_for_the_new_families_are_named_before_compiling():
    data = _overdispersed().with_columns(
        pl.col("a").alias("label"),
        (pl.col("count") - 3).alias("negative"),
        (pl.col("count") + 0.5).alias("half"),
        pl.lit(1).alias("one"),
        (pl.col("s") > 0).cast(pl.Int64).alias("binary"),
    )
    with pytest.raises(ValueError, match="Gaussian outcome 'label' must be numeric"):
        _ = glm("label ~ a", data).spec
    with pytest.raises(ValueError, match="Negative binomial outcome 'negative' has negative"):
        _ = glm("negative ~ a", data, family="negativebinomial").spec
    with pytest.raises(ValueError, match="Negative binomial outcome 'half' has values that are"):
        _ = glm("half ~ a", data, family="negativebinomial").spec
    with pytest.raises(ValueError, match="beta-binomial family needs successes out of trials"):
        _ = glm("binary ~ a", data, family="betabinomial").spec
    with pytest.raises(ValueError, match="at most one trial.*Use family='binomial'"):
        _ = glm("cbind(binary, one - binary) ~ a", data, family="betabinomial").spec
    with pytest.raises(ValueError, match="offset.*Poisson and negative binomial families only"):
        _ = glm("value ~ a + offset(log(n))", data).spec
    with pytest.raises(ValueError, match="cbind.*the gaussian family takes one numeric"):
        _ = glm("cbind(s, n - s) ~ a", data).spec


def test_priors_of_the_dispersion_and_the_outcome_scale():
    data = _overdispersed()
    model = lmer("value ~ a + (1|g)", data)
    table = model.prior_summary()
    sigma = table.filter(pl.col("parameter") == "sigma")
    assert sigma["kind"].item() == "dispersion"
    sd_y = float(data["value"].std())
    assert sigma["prior"].item() == f"Exponential(lam={1 / sd_y:.4g})"
    intercept = model.spec.priors["(Intercept)"].params
    assert intercept["mu"] == pytest.approx(float(data["value"].mean()), rel=1e-3)
    assert intercept["sigma"] == pytest.approx(2.5 * sd_y, rel=1e-3)
    assert model.spec.priors["1|g"].params["sigma"] == pytest.approx(2.5 * sd_y, rel=1e-3)
    nb = glmer("count ~ a + (1|g)", data, family="negativebinomial")
    assert nb.spec.priors["size"].describe() == "Gamma(alpha=0.01, beta=0.01)"
    assert nb.spec.priors["(Intercept)"].params == {"mu": 0.0, "sigma": 2.5}
    user = glmer(
        "count ~ a + (1|g)", data, family="negativebinomial", priors={"size": ("exponential", 1)}
    )
    assert user.spec.priors["size"].source == "user"
    with pytest.raises(ValueError, match="'size' is a standard deviation|positive distribution"):
        _ = glmer(
            "count ~ a + (1|g)", data, family="negativebinomial", priors={"size": ("normal", 0, 1)}
        ).spec
    with pytest.raises(ValueError, match=r"priors given for \['phi'\]"):
        _ = glmer(
            "count ~ a + (1|g)", data, family="negativebinomial", priors={"phi": ("gamma", 1, 1)}
        ).spec


@pytest.fixture(scope="module")
def small_lmer():
    model = lmer("value ~ a + (1|g)", _overdispersed())
    model.fit(chains=2, draws=400, tune=400, random_seed=3)
    return model


def test_gaussian_tables_show_sigma_and_the_residual_row(small_lmer):
    model = small_lmer
    fit = model.result_fit
    assert fit["term"].to_list() == ["(Intercept)", "a1", "sigma"]
    sigma = fit.filter(pl.col("term") == "sigma")
    # simulated residual sd 1, rounded values: well inside 0.85-1.15 with 400 rows
    assert 0.85 < sigma["estimate"].item() < 1.15
    assert sigma["rhat"].item() < 1.02
    var = model.ranef_var
    assert var["group"].to_list() == ["g", "Residual"]
    assert var["term"].to_list()[-1] == "sd__Observation"
    assert var["estimate"][-1] == pytest.approx(sigma["estimate"].item())
    text = str(model.summary())
    assert "sigma is the residual sd" in text
    assert "icc" in text  # the classic icc: sd^2 / (sd^2 + sigma^2)
    icc = model.icc().filter(pl.col("statistic") == "icc")["estimate"].item()
    post = model.posterior["posterior"]
    sd_g = np.asarray(post["sd_g"]).ravel()
    sigma = np.asarray(post["sigma"]).ravel()
    assert icc == pytest.approx(np.median(sd_g**2 / (sd_g**2 + sigma**2)), rel=1e-12)


def test_gaussian_emmeans_are_means_and_contrasts_are_differences(small_lmer):
    means = small_lmer.emmeans("a")
    assert "emmean" in means.columns
    diff = small_lmer.emmeans("a", contrasts={"a1 - a0": [-1, 1]})
    assert "estimate" in diff.columns
    # the difference of the means, per draw, so the medians agree to Monte Carlo error
    assert diff["estimate"].item() == pytest.approx(
        means["emmean"][1] - means["emmean"][0], abs=0.05
    )
    # the fixed effect a1 is the same difference (no other predictor to average over)
    a1 = small_lmer.result_fit.filter(pl.col("term") == "a1")["estimate"].item()
    assert diff["estimate"].item() == pytest.approx(a1, abs=0.02)
    marginal = small_lmer.emmeans("a", re="marginal")
    np.testing.assert_allclose(marginal["emmean"], small_lmer.emmeans("a", re="zero")["emmean"])


def test_gaussian_ppc_loo_simulate_predict_and_save(small_lmer, tmp_path):
    model = small_lmer
    table = model.ppc(random_seed=1)
    assert {"mean", "var"} <= set(table["statistic"].to_list())
    var = table.filter(pl.col("statistic") == "var")
    assert 0.05 < var["ppp"].item() < 0.95
    sims = model.simulate(3, seed=2)
    assert sims.shape == (400, 3) and sims.dtypes[0] == pl.Float64
    assert model.loo().pareto_k_counts is not None
    pred = model.predict(model.data)
    assert pred.shape == (400,)
    assert np.corrcoef(pred, model.data["value"].to_numpy())[0, 1] > 0.5
    path = tmp_path / "m.bayesmer"
    model.save(str(path))
    loaded = bayesmer.load_model(str(path))
    assert type(loaded).__name__ == "lmer"
    assert loaded.result_fit.equals(model.result_fit)


@pytest.mark.parametrize(
    ("formula", "family", "label", "key"),
    [
        ("count ~ a + (1|g)", "negativebinomial", "rate", "size"),
        ("cbind(s, n - s) ~ a + (1|g)", "betabinomial", "prob", "phi"),
    ],
)
def test_overdispersed_families_through_every_verb(formula, family, label, key, tmp_path):
    data = _overdispersed()
    model = glmer(formula, data, family=family)
    model.fit(chains=4, draws=1000, tune=1000, random_seed=5)
    fit = model.result_fit
    assert fit["term"].to_list()[-1] == key
    # simulated with size 2 / phi 4: the posterior median is within a factor 2 of it
    truth = {"size": 2.0, "phi": 4.0}[key]
    assert truth / 2 < fit["estimate"][-1] < truth * 2
    assert key in model.diagnostics["term"].to_list()  # the convergence gate reads it
    text = str(model.summary())
    assert f"{key} is the" in text and "distinct observations in" in text
    assert label in model.emmeans("a").columns
    sims = model.simulate(2, seed=1)
    assert sims.dtypes[0] == pl.Int64 and sims.shape == (len(data), 2)
    table = model.ppc(random_seed=1)
    assert 0.02 < table.filter(pl.col("statistic") == "var")["ppp"].item() < 0.98
    assert np.isfinite(model.loo().elpd)
    assert model.prior_summary().filter(pl.col("parameter") == key)["kind"].item() == "dispersion"
    path = tmp_path / "m.bayesmer"
    model.save(str(path))
    assert bayesmer.load_model(str(path)).result_fit.equals(fit)


def test_kfold_refits_an_lmer_as_an_lmer(small_lmer):
    # lmer takes no family argument: the refits are built through Model._build
    result = small_lmer.kfold("g", k=2, random_seed=1)
    assert np.isfinite(result.elpd) and result.n_obs == 400


def test_compare_refuses_a_gaussian_model_against_a_discrete_one(small_lmer):
    data = small_lmer.data.with_columns((pl.col("value") > 10).cast(pl.Int64).alias("high"))
    gaussian = lmer("high ~ a + (1|g)", data)
    binomial = glmer("high ~ a + (1|g)", data, family="binomial")
    # refused before any LOO is computed (so before the fits are even needed)
    with pytest.raises(ValueError, match="cannot rank a gaussian model against a binomial"):
        bayesmer.compare(gaussian, binomial)


# ---------------------------------------------------------------------------------------------
# Centring: a level's information counts its overdispersion


def _level_data(family: str, dispersion: float | None, seed: int = 3):
    """20 groups x 10 rows with large means (50 per row, 50 trials): the truth per row and
    the data. ``dispersion`` is the NB size or the beta-binomial phi; None for none."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(20), 10)
    eta = rng.normal(0.0, 0.3, 20)[g]
    if family == "negativebinomial":
        mu = 50.0 * np.exp(eta)
        y = rng.poisson(rng.gamma(dispersion, mu / dispersion) if dispersion else mu)
        per_row = mu * dispersion / (mu + dispersion) if dispersion else mu
        data = pl.DataFrame({"y": y, "g": [f"g{i:02d}" for i in g]})
        return glmer("y ~ 1 + (1|g)", data, family=family), g, per_row
    p = 1 / (1 + np.exp(-eta))
    n = np.full(g.size, 50)
    p_row = rng.beta(p * dispersion, (1 - p) * dispersion) if dispersion else p
    y = rng.binomial(n, p_row)
    inflation = 1 + (n - 1) / (dispersion + 1) if dispersion else 1.0
    per_row = n * p * (1 - p) / inflation
    data = pl.DataFrame({"y": y, "n": n, "g": [f"g{i:02d}" for i in g]})
    return glmer("cbind(y, n - y) ~ 1 + (1|g)", data, family=family), g, per_row


@pytest.mark.parametrize(
    ("family", "dispersion"),
    [("negativebinomial", 0.5), ("negativebinomial", None), ("betabinomial", 2.0)],
)
def test_level_information_is_shrunk_by_overdispersion(family, dispersion):
    """The information that decides centring is the NB or beta-binomial Fisher information
    (``mu size / (mu + size)``, ``n p q / (1 + (n - 1) / (phi + 1))`` per row), not the Poisson
    or binomial one: with size 0.5 and 50 counts per row a level of 10 rows knows its mean
    about as well as 5 Poisson counts would, not 500, and such levels are non-centred."""
    model, g, per_row = _level_data(family, dispersion)
    group = model.spec.groups[0]
    truth = np.bincount(g, weights=per_row)
    ratio = group.information / truth
    assert 0.6 < ratio.min() and ratio.max() < 1.6
    if dispersion is not None:  # 10 and 100 times less than the Poisson/binomial values
        assert group.information.max() < 10.0
        assert not group.centred.any()
    else:  # counts without overdispersion keep (nearly) their Poisson information
        poisson = np.bincount(g, weights=model.data["y"].to_numpy()) + 0.5
        assert (group.information / poisson).min() > 0.9 and group.centred.all()


def test_overdispersed_cell_weights_sum_to_the_level_information():
    """The working weights of random slopes are shrunk by the same factor."""
    from bayesmer.spec import _level_information

    model, _, _ = _level_data("negativebinomial", 0.5)
    spec, group = model.spec, model.spec.groups[0]
    n = len(group.levels)
    _, info, (w, _) = _level_information(spec.family, spec.cells, group.index, n, spec.obs)
    np.testing.assert_allclose(np.bincount(group.index, weights=w, minlength=n), info, rtol=0.02)


def test_gaussian_slopes_information_leaves_out_each_levels_own_slope():
    """Sleepstudy, ``(Days | Subject)``: each subject's information is its 10 rows over the
    residual variance around its own regression line (655 ms^2, lme4's sigma^2), not around
    its mean (1,850: the trend of its 10 days counted as noise, which left the subjects
    non-centred and seed 1 of the defaults with 9 divergences). With it all 18 are centred,
    and the centred correlated factor of fewer than 30 levels gets target_accept 0.99."""
    from bayesmer.sampling import default_sampler_kwargs

    data = bayesmer.load_dataset("sleepstudy")
    model = lmer("Reaction ~ Days + (Days | Subject)", data)
    group = model.spec.groups[0]
    y, days = data["Reaction"].to_numpy(), data["Days"].to_numpy().astype(float)
    subject = data["Subject"].cast(pl.String).to_numpy()
    rss = 0.0
    for s in np.unique(subject):
        at = subject == s
        slope, intercept = np.polyfit(days[at], y[at], 1)
        rss += float(np.sum((y[at] - intercept - slope * days[at]) ** 2))
    resid_var = rss / (len(y) - 2 * 18)
    assert resid_var == pytest.approx(654.9, rel=0.01)
    np.testing.assert_allclose(group.information, 10 * np.var(y, ddof=1) / resid_var, rtol=1e-10)
    assert group.parametrization == "centered"
    assert default_sampler_kwargs(model.spec)["target_accept"] == 0.99


@pytest.mark.parametrize(
    ("formula", "family", "shown"),
    [
        ("count ~ a + (1|g)", "negativebinomial", "a=1, g=g0, count=3 (k=0.90"),
        ("value ~ a + (1|g)", "gaussian", "a=1, g=g0, value=3 (k=0.90"),
        ("cbind(s, n - s) ~ a + (1|g)", "betabinomial", "a=1, g=g0, s=3, trials=5 (k=0.90"),
    ],
)
def test_high_pareto_k_message_leaves_out_trivial_sizes(formula, family, shown):
    """Like Poisson counts without an offset, a negative binomial count has exposure 1 and a
    gaussian row n = 1: the warning names the values that matter (trials do matter)."""
    from bayesmer.loo import _high_k_message
    from bayesmer.rows import public_names

    model = glmer(formula, _overdispersed(), family=family)
    _, y, size = public_names(model.spec)
    observations = pl.DataFrame(
        {"a": ["1"], "g": ["g0"], y: [3], size: [5 if "trials" in shown else 1], "rows": [1]}
    ).with_columns(pl.lit(0.9).alias("pareto_k"))
    message = _high_k_message(model, observations)
    assert f"{shown}; 1 row(s): " in message

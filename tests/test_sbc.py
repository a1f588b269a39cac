"""The simulation-based calibration script (benchmarks/sbc.py): ranks, uniformity test, priors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bayesmer import glmer

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sbc.py"


@pytest.fixture(scope="module")
def sbc():
    spec = importlib.util.spec_from_file_location("sbc_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sbc_script"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    yield module
    del sys.modules["sbc_script"]


def test_rank_counts_draws_below_the_truth(sbc):
    draws = np.array([0.3, -1.2, 2.5, 0.9, -0.1])
    assert sbc.rank(-5.0, draws) == 0
    assert sbc.rank(0.0, draws) == 2  # -1.2, -0.1
    assert sbc.rank(1.0, draws) == 4  # all but 2.5
    assert sbc.rank(3.0, draws) == 5


def test_thin_keeps_evenly_spaced_draws(sbc):
    draws = np.arange(4000)
    kept = sbc.thin(draws, 99)
    assert len(kept) == 99
    assert np.array_equal(kept, np.arange(0, 3960, 40))
    with pytest.raises(ValueError, match="cannot thin 50 draws to 99"):
        sbc.thin(np.arange(50), 99)


def test_bin_counts_equal_width_bins(sbc):
    counts = sbc.bin_counts(np.array([0, 4, 5, 99, 97, 50]), 99, 20)
    expected = np.zeros(20, dtype=int)
    expected[[0, 1, 10, 19]] = [2, 1, 1, 2]  # 0 and 4 in bin 0, 5 in bin 1, 97 and 99 in bin 19
    assert np.array_equal(counts, expected)
    with pytest.raises(ValueError, match="101 possible ranks"):
        sbc.bin_counts(np.array([0, 1]), 100, 20)
    with pytest.raises(ValueError, match=r"ranks must lie in 0\.\.99"):
        sbc.bin_counts(np.array([0, 100]), 99, 20)


def test_uniformity_pvalue_high_on_uniform_tiny_on_skewed(sbc):
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 100, size=2000)
    assert sbc.uniformity_pvalue(uniform, 99, 20) > 0.01
    # An overconfident posterior: truths fall in the tails of the draws.
    skewed = np.concatenate([rng.integers(0, 10, 120), rng.integers(90, 100, 80)])
    assert sbc.uniformity_pvalue(skewed, 99, 20) < 1e-6
    # A biased one: ranks piled up high.
    biased = np.minimum(99, rng.integers(30, 130, size=200))
    assert sbc.uniformity_pvalue(biased, 99, 20) < 1e-6


def test_band_is_the_binomial_interval(sbc):
    low, high = sbc.band(200, 20)
    assert (low, high) == (stats.binom.ppf(0.005, 200, 0.05), stats.binom.ppf(0.995, 200, 0.05))
    assert low < 10 < high


def test_truth_generator_draws_from_the_stated_priors(sbc):
    model = sbc.MODELS["binomial_few"]
    rng = np.random.default_rng(3)
    design = model.design(rng)
    draws = [sbc.draw_truth(model, design, rng) for _ in range(4000)]
    n = len(draws)
    for key, prior in model.priors.items():
        name = "Intercept_c" if key == "(Intercept)" else key
        values = np.array([d[name] for d in draws])
        if prior[0] == "normal":
            mean, sd = prior[1], prior[2]
        else:  # halfnormal
            mean, sd = prior[1] * np.sqrt(2 / np.pi), prior[1] * np.sqrt(1 - 2 / np.pi)
        assert abs(values.mean() - mean) < 4 * sd / np.sqrt(n), key
        assert abs(values.std() / sd - 1) < 4 / np.sqrt(2 * n), key
    # level deviations are Normal(0, sd): standardised they are N(0, 1)
    z = np.concatenate([np.array(d["u|g"]) / d["1|g"] for d in draws])
    assert abs(z.mean()) < 4 / np.sqrt(z.size)
    assert abs(z.std() - 1) < 4 / np.sqrt(2 * z.size)


def test_reported_intercept_uses_bayesmers_centring(sbc):
    """(Intercept) = Intercept_c - xbar @ b with the means bayesmer centres at."""
    model = sbc.MODELS["binomial_few"]
    rng = np.random.default_rng(4)
    design = model.design(rng)
    truth = sbc.draw_truth(model, design, rng)
    data = sbc.simulate(model, design, truth, rng)
    spec = glmer(model.formula, data=data, family=model.family, priors=model.priors).spec
    assert list(spec.terms) == ["(Intercept)", *model.slopes]
    xbar = np.average(spec.X[:, 1:], axis=0, weights=spec.rows)
    beta = np.array([truth[t] for t in model.slopes])
    assert truth["(Intercept)"] == pytest.approx(truth["Intercept_c"] - xbar @ beta, abs=1e-12)
    assert spec.priors["(Intercept)"].params == {"mu": 0.0, "sigma": 1.0}
    assert spec.priors["x"].params == {"mu": 0.0, "sigma": 0.75}


def test_nested_model_is_detected_as_nested(sbc):
    model = sbc.MODELS["poisson_nested"]
    rng = np.random.default_rng(5)
    design = model.design(rng)
    data = sbc.simulate(model, design, sbc.draw_truth(model, design, rng), rng)
    spec = glmer(model.formula, data=data, family=model.family, priors=model.priors).spec
    parents = {g.name: g.parent for g in spec.groups}
    assert parents == {"site": None, "plot": "site"}


def test_seeds_are_deterministic_and_distinct(sbc):
    model = sbc.MODELS["poisson_few"]
    assert sbc.seeds(1, model, 7) == sbc.seeds(1, model, 7)
    assert sbc.seeds(1, model, 7) != sbc.seeds(1, model, 8)
    assert sbc.seeds(1, model, 7) != sbc.seeds(2, model, 7)
    assert sbc.seeds(1, model, 7) != sbc.seeds(1, sbc.MODELS["binomial_few"], 7)


def test_one_dataset_end_to_end(sbc, tmp_path):
    argv = ["--models", "poisson_few", "--datasets", "1", "--workers", "1", "--out", str(tmp_path)]
    argv += ["--chains", "2", "--draws", "100", "--tune", "200", "--thin-to", "19"]
    assert sbc.main(argv) == 0  # one data set: one rank in one of 20 bins, p = 0.46
    (rec,) = sbc.read_results(tmp_path, "poisson_few")
    assert rec["model"] == "poisson_few" and rec["dataset"] == 0
    assert set(rec["ranks"]) == {"(Intercept)", "x", "1|g"}
    assert all(0 <= r <= 19 for r in rec["ranks"].values())
    assert rec["divergences"] >= 0 and isinstance(rec["warnings"], list)
    assert rec["parametrization"]["g"].split(" ")[0] in {"centered", "noncentered", "mixed"}
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert summary[0] == "model,parameter,datasets,chi2,p_value,min_bin,max_bin"
    assert len(summary) == 4 and (tmp_path / "sbc_ranks.png").stat().st_size > 0
    # the same data set and fit seed give the same ranks; --resume fits nothing more
    again = sbc.fit_one(sbc.MODELS["poisson_few"], 0, 1, 19, chains=2, draws=100, tune=200)
    assert again["ranks"] == rec["ranks"] and again["truth"] == rec["truth"]
    assert sbc.main([*argv, "--resume"]) == 0
    assert len(sbc.read_results(tmp_path, "poisson_few")) == 1


def test_thin_to_must_split_into_equal_bins(sbc, capsys):
    with pytest.raises(SystemExit):
        sbc._parse(["--thin-to", "100", "--bins", "20"])
    assert "101 possible ranks, which do not split into --bins 20" in capsys.readouterr().err
    args = sbc._parse(["--thin-to", "99", "--bins", "20", "--models", "poisson_few"])
    assert args.models == ["poisson_few"]


def test_slopes_generator_draws_the_correlation_from_the_lkj_prior(sbc):
    """2 x 2 LKJ(eta): (r + 1) / 2 ~ Beta(eta, eta), so mean 0 and sd 1 / sqrt(2 eta + 1)."""
    model = sbc.MODELS["poisson_slopes"]
    eta = model.priors["cor|g"][1]
    rng = np.random.default_rng(6)
    design = model.design(rng)
    draws = [sbc.draw_truth(model, design, rng) for _ in range(4000)]
    n = len(draws)
    r = np.array([d["cor|g"] for d in draws])
    sd = 1 / np.sqrt(2 * eta + 1)
    assert abs(r.mean()) < 4 * sd / np.sqrt(n)
    assert abs(r.std() / sd - 1) < 4 / np.sqrt(2 * n)
    assert stats.kstest((r + 1) / 2, stats.beta(eta, eta).cdf).pvalue > 0.001
    for key in ["1|g", "x|g"]:
        values, sigma = np.array([d[key] for d in draws]), model.priors[key][1]
        assert abs(values.mean() - sigma * np.sqrt(2 / np.pi)) < 4 * sigma / np.sqrt(n), key
    # each level's (u_0, u_x), standardised by the sds, has correlation r
    z = np.array([np.array(d["u|g"]) / [d["1|g"], d["x|g"]] for d in draws])  # draws x levels x 2
    assert abs(z.std() - 1) < 4 / np.sqrt(2 * z[..., 0].size)
    products = (z[..., 0] * z[..., 1]).mean(axis=1)  # estimates r per draw
    assert abs((products - r).mean()) < 4 * (products - r).std() / np.sqrt(n)


def test_slopes_generator_agrees_with_bayesmers_prior(sbc):
    """The truths and bayesmer's own prior draws (sample_prior) have the same distributions."""
    model = sbc.MODELS["poisson_slopes"]
    rng = np.random.default_rng(7)
    design = model.design(rng)
    truth = sbc.draw_truth(model, design, rng)
    data = sbc.simulate(model, design, truth, rng)
    fitted = glmer(model.formula, data=data, family=model.family, priors=model.priors)
    (g,) = fitted.spec.groups
    assert g.terms == ("(Intercept)", "x") and g.cor_labels == ["(Intercept).x"]
    prior = fitted.sample_prior(draws=4000, random_seed=8)["prior"].to_dataset()
    ours = [sbc.draw_truth(model, design, rng) for _ in range(4000)]
    pairs = {
        "(Intercept)": prior["b"].sel(term="(Intercept)"),
        "x": prior["b"].sel(term="x"),
        "1|g": prior["sd_g"].sel(g_term="(Intercept)"),
        "x|g": prior["sd_g"].sel(g_term="x"),
        "cor|g": prior["cor_g"].sel(g_cor="(Intercept).x"),
    }
    for key, theirs in pairs.items():
        mine = np.array([d[key] for d in ours])
        assert stats.ks_2samp(mine, theirs.values.ravel()).pvalue > 0.001, key
    # one level's slope deviation (a scale mixture, heavy-tailed): same distribution too
    u_x = np.array([d["u|g"][0][1] for d in ours])
    theirs = prior["u_g"].isel(g_level=0).sel(g_term="x").values.ravel()
    assert stats.ks_2samp(u_x, theirs).pvalue > 0.001


def test_slopes_linear_predictor_adds_each_levels_intercept_and_slope(sbc):
    model = sbc.MODELS["poisson_slopes"]
    rng = np.random.default_rng(9)
    design = model.design(rng)
    truth = sbc.draw_truth(model, design, rng)
    eta = sbc.linear_predictor(model, design, truth)
    u = dict(zip(sorted(design["g"].unique()), truth["u|g"], strict=True))
    for i in [0, design.height // 2, design.height - 1]:
        g, x = design["g"][i], design["x"][i]
        expected = truth["(Intercept)"] + truth["x"] * x + u[g][0] + u[g][1] * x
        assert eta[i] == pytest.approx(expected, abs=1e-12)

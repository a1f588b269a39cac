"""K-fold cross-validation by group (issue 16): the integrated group likelihood and the folds."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import integrate, stats

from bayesmer import glmer
from bayesmer.families import get_family
from bayesmer.kfold import group_log_likelihood


class _Spec:
    """The part of a ModelSpec the likelihood reads: the family."""

    def __init__(self, family, link="default"):
        self.family = get_family(family, link)


def brute_force(spec, eta, y, size, sd):
    """log integral of prod_i p(y_i | eta_i + u) N(u; 0, sd) du, by scipy quad, per draw."""
    out = []
    for e, s in zip(eta, sd, strict=True):

        def log_f(u, e=e, s=s):
            if spec.family.name == "binomial":
                p = spec.family.inverse_link(e + u)
                ll = stats.binom.logpmf(y, size, p).sum()
            else:
                ll = stats.poisson.logpmf(y, size * np.exp(e + u)).sum()
            return ll + stats.norm.logpdf(u, 0.0, s)

        grid = np.linspace(-12 * s, 12 * s, 241)
        peak = max(log_f(u) for u in grid)
        mode = grid[np.argmax([log_f(u) for u in grid])]
        value, _ = integrate.quad(
            lambda u, peak=peak: np.exp(log_f(u) - peak),
            -15 * s,
            15 * s,
            points=[mode],
            limit=500,
            epsabs=0.0,
            epsrel=1e-13,
        )
        out.append(np.log(value) + peak)
    return np.array(out)


@pytest.mark.parametrize(
    ("family", "link", "y", "size"),
    [
        ("binomial", "logit", [1, 0, 1], [1, 1, 1]),
        ("binomial", "probit", [3, 0, 7, 2], [5, 2, 9, 2]),
        ("binomial", "cloglog", [0, 0, 1], [1, 1, 1]),
        ("poisson", "log", [0, 4, 11, 2], [1.0, 2.0, 3.5, 0.5]),
    ],
)
def test_integrated_group_likelihood_matches_numerical_integration(family, link, y, size):
    spec = _Spec(family, link)
    rng = np.random.default_rng(4)
    y, size = np.array(y), np.array(size)
    eta = rng.normal(0.0, 0.8, (4, len(y)))
    sd = np.array([0.05, 0.7, 1.5, 3.0])
    ours = group_log_likelihood(spec, eta, y, size, sd)
    np.testing.assert_allclose(ours, brute_force(spec, eta, y, size, sd), rtol=0, atol=1e-8)


def test_zero_sd_gives_the_plain_log_likelihood():
    spec = _Spec("poisson")
    eta = np.array([[0.2, -0.4], [1.0, 0.0]])
    y, size = np.array([1, 3]), np.array([1.0, 2.0])
    plain = stats.poisson.logpmf(y, size * np.exp(eta)).sum(axis=1)
    ours = group_log_likelihood(spec, eta, y, size, np.zeros(2))
    np.testing.assert_allclose(ours, plain, atol=1e-10)


def test_kfold_checks_its_arguments():
    data = pl.DataFrame({"y": [0, 1, 1, 0], "g": ["a", "a", "b", "b"]})
    model = glmer("y ~ 1 + (1|g)", data)
    model.posterior = object()  # looks fitted: the arguments are checked before any refit
    with pytest.raises(ValueError, match=r"group must be one of the grouping factors \['g'\]"):
        model.kfold("y")
    with pytest.raises(ValueError, match="k must be an integer from 2 to the number of levels"):
        model.kfold("g", k=3)


def test_kfold_holds_every_group_out_once():
    rng = np.random.default_rng(1)
    levels = [f"b{i}" for i in range(9)]
    effect = dict(zip(levels, rng.normal(0.0, 1.0, 9), strict=True))
    brood = [lv for lv in levels for _ in range(4)]
    x = rng.normal(0.0, 1.0, len(brood))
    p = 1 / (1 + np.exp(-(0.3 + 0.8 * x + np.array([effect[b] for b in brood]))))
    data = pl.DataFrame({"y": rng.binomial(1, p), "x": x, "brood": brood})
    model = glmer("y ~ x + (1|brood)", data)
    model.fit(draws=1000, tune=1000, chains=2, random_seed=3, progressbar=False)
    res = model.kfold("brood", k=3, random_seed=0, progressbar=False)
    table = res.pointwise
    assert table["level"].to_list() == levels
    assert sorted(table["fold"].value_counts()["count"].to_list()) == [3, 3, 3]
    assert res.folds["n"].sum() == len(data) == res.n_obs
    assert table["n"].to_list() == [4] * 9
    assert np.isfinite(table["elpd_kfold"].to_numpy()).all()
    assert res.elpd == pytest.approx(table["elpd_kfold"].sum())
    assert res.elpd == pytest.approx(res.folds["elpd_kfold"].sum())
    assert res.se > 0
    # Each group's log density is below 0 and above that of a coin for its 4 rows, 4*log(0.5)
    # minus a margin: the model is no worse than guessing by far.
    assert (table["elpd_kfold"] < 0).all() and (table["elpd_kfold"] > 4 * np.log(0.5) - 2).all()
    assert "3-fold cross-validation by brood" in str(res)

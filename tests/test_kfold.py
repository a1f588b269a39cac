"""K-fold cross-validation by group (issue 16): the integrated group likelihood and the folds."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import integrate, stats

from bayesmer import glmer
from bayesmer.draws import fixed, group_effects, group_sd
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
    model = glmer("y ~ 1 + (1|g)", data, family="binomial")
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
    model = glmer("y ~ x + (1|brood)", data, family="binomial")
    # 4 chains (the default): with 2, the R-hat of a fold's 6-level sd is noisy enough to pass
    # 1.01 by chance (1.013 on fold 1 after a change of the log density in its last digits)
    model.fit(draws=1000, tune=1000, chains=4, random_seed=3, progressbar=False)
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


def test_loo_warning_explains_high_k_with_many_parameters(grouse_glmer):
    from bayesmer.loo import _compute_loo, _many_parameters_note

    # 118 broods of 1-10 chicks: p_loo is far above n/5, and high k values are expected.
    with pytest.warns(UserWarning, match=r"p_loo \(\d+\) exceeds n/5 \(81\).*kfold\(group\)"):
        res = _compute_loo(grouse_glmer)
    assert res.p_loo > 403 / 5
    assert _many_parameters_note(grouse_glmer.spec, 80.0, np.ones(403)) == ""


def test_held_out_group_uses_seen_levels_and_integrates_unseen_ones():
    import xarray as xr
    from scipy import special

    from bayesmer.kfold import _score_group

    train = pl.DataFrame(
        {
            "y": [0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1],
            "brood": ["b0", "b0", "b1", "b1", "b2", "b2", "b3", "b3", "b4", "b4", "b5", "b5"],
            "loc": ["L0"] * 4 + ["L1"] * 4 + ["L2"] * 4,
        }
    )
    refit = glmer("y ~ 1 + (1|brood) + (1|loc)", train, family="binomial")
    spec = refit.spec
    rng = np.random.default_rng(0)
    S = 50
    data = {"b": (("chain", "draw", "term"), rng.normal(0, 0.5, (1, S, 1)))}
    coords = {"term": spec.terms}
    for g in spec.groups:
        data[g.sd_name] = (("chain", "draw"), rng.uniform(0.3, 1.5, (1, S)))
        data[g.effect_name] = (("chain", "draw", g.dim), rng.normal(0, 1, (1, S, len(g.levels))))
        coords[g.dim] = g.levels
    refit.posterior = xr.DataTree.from_dict({"posterior": xr.Dataset(data, coords=coords)})
    b = fixed(refit.posterior)[:, 0]
    sd_brood, sd_loc = (group_sd(refit.posterior, g) for g in spec.groups)
    u_loc = group_effects(refit.posterior, spec.groups[1])

    def rows(brood, locs, y):
        return pl.DataFrame(
            {"brood": [brood] * len(y), "loc": locs, "_y": y, "_n": [1] * len(y)},
            schema_overrides={"_y": pl.Int64, "_n": pl.Int64},
        )

    def expected(eta, y, sd):
        ll = group_log_likelihood(
            spec, np.repeat(eta[:, None], len(y), 1), np.array(y), np.ones(len(y)), sd
        )
        return special.logsumexp(ll) - np.log(S)

    y = [1, 0, 1]
    # A new brood in a known location: that location's fitted effect.
    seen = _score_group(refit, rows("b9", ["L1"] * 3, y), "brood", 0)
    assert seen == pytest.approx(expected(b + u_loc[:, 1], y, sd_brood), rel=1e-12)
    # A new brood in a new location: both effects integrated, variances added.
    new = _score_group(refit, rows("b8", ["L7"] * 3, y), "brood", 0)
    assert new == pytest.approx(expected(b, y, np.sqrt(sd_brood**2 + sd_loc**2)), rel=1e-12)
    with pytest.raises(ValueError, match="not one level shared by all of them"):
        _score_group(refit, rows("b7", ["L5", "L6", "L6"], y), "brood", 0)
    with pytest.raises(ValueError, match="not one level shared by all of them"):
        _score_group(refit, rows("b7", ["L5", "L1", "L1"], y), "brood", 0)

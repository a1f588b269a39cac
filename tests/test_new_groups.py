"""One new group and a new set of groups: emmeans/empredict re='new', ppc re='new' (issue 16).

Checked against hand computations with the same random stream on synthetic draws attached to
an unfitted model.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import special
from synthetic import attach

from bayesmer import glm, glmer
from bayesmer.draws import fixed, group_effects, group_sd, hdi


def fake(model, n_draws=2000, seed=0, sd=1.0):
    rng = np.random.default_rng(seed)
    spec = model.spec
    b = rng.normal(0.0, 0.3, (n_draws, len(spec.terms)))
    sds = {g.name: np.abs(rng.normal(sd, 0.1, n_draws)) for g in spec.groups}
    us = {
        g.name: rng.normal(0.0, 1.0, (n_draws, len(g.levels))) * sds[g.name][:, None]
        for g in spec.groups
    }
    return attach(model, b, sds, us)


@pytest.fixture
def classes():
    rng = np.random.default_rng(3)
    n = 120
    return pl.DataFrame(
        {
            "y": rng.integers(0, 2, n),
            "sex": rng.choice(["f", "m"], n),
            "school": rng.choice([f"s{i}" for i in range(8)], n),
            "cls": [f"c{i % 20}" for i in range(n)],
        }
    )


def test_emmeans_new_group_matches_hand_computation(classes):
    model = fake(glmer("y ~ sex + (1|cls) + (1|school)", classes, family="binomial"))
    res = model.emmeans("sex", re="new", random_seed=5)
    b = fixed(model.posterior)
    sd_c, sd_s = (group_sd(model.posterior, g) for g in model.spec.groups)
    z = np.random.default_rng(5).standard_normal(b.shape[0])
    u = np.sqrt(sd_c**2 + sd_s**2) * z
    eta = np.column_stack([b[:, 0], b[:, 0] + b[:, 1]]) + u[:, None]
    np.testing.assert_allclose(res["prob"].to_numpy(), np.median(special.expit(eta), 0))
    bounds = special.expit(hdi(eta, 0.95))
    np.testing.assert_allclose(res["lower_HPD"].to_numpy(), bounds[:, 0])
    np.testing.assert_allclose(res["upper_HPD"].to_numpy(), bounds[:, 1])
    # The default seed is fixed: the same call gives the same answer.
    assert model.emmeans("sex", re="new").equals(model.emmeans("sex", re="new", random_seed=0))
    # One new group is wider than the average over new groups, and centred near a typical
    # group (the median of expit(eta + u) is expit of eta's median shifted by u's median 0).
    marginal = model.emmeans("sex", re="marginal")
    zero = model.emmeans("sex", re="zero")
    width = res["upper_HPD"] - res["lower_HPD"]
    assert (width > 2 * (marginal["upper_HPD"] - marginal["lower_HPD"])).all()
    np.testing.assert_allclose(res["prob"].to_numpy(), zero["prob"].to_numpy(), atol=0.03)
    # Contrasts compare the levels within one new group: the effect cancels on the link scale.
    con = model.emmeans("sex", contrasts="pairwise", re="new", type="link")
    ref = model.emmeans("sex", contrasts="pairwise", re="zero", type="link")
    np.testing.assert_allclose(con["estimate"].to_numpy(), ref["estimate"].to_numpy())


def test_empredict_new_group_for_a_named_class(classes):
    model = fake(glmer("y ~ sex + (1|cls) + (1|school)", classes, family="binomial"))
    res = model.empredict({"sex": "f", "cls": "c3"}, re="new", random_seed=1, type="link")
    b = fixed(model.posterior)
    spec = model.spec
    u_cls = group_effects(model.posterior, spec.groups[0])[:, spec.groups[0].levels.index("c3")]
    school = next(g for g in spec.groups if g.name == "school")
    z = np.random.default_rng(1).standard_normal(b.shape[0])
    eta = b[:, 0] + u_cls + group_sd(model.posterior, school) * z
    assert res["emmean"][0] == pytest.approx(np.median(eta), rel=1e-12)


def test_re_new_needs_random_effects(classes):
    model = fake(glm("y ~ sex", classes, family="binomial"))
    with pytest.raises(ValueError, match="this model has none"):
        model.emmeans("sex", re="new")
    with pytest.raises(ValueError, match="this model has none"):
        model.ppc(re="new")
    with pytest.raises(ValueError, match=r"re must be one of \['groups', 'new'\]"):
        model.ppc(re="marginal")


def test_ppc_new_groups_matches_hand_replication(classes):
    model = fake(glmer("y ~ sex + (1|cls)", classes, family="binomial"), n_draws=300)
    spec = model.spec
    g = spec.groups[0]
    b = fixed(model.posterior)
    sd = group_sd(model.posterior, g)

    def new_effects(rng):
        return sd[:, None] * rng.standard_normal((b.shape[0], len(g.levels)))

    # with a callable statistic every row is replicated, a Bernoulli per row
    res = model.ppc(stat={"mean": lambda y, d: y.mean(axis=1)}, re="new", random_seed=11)
    rng = np.random.default_rng(11)
    u = new_effects(rng)
    x = (classes["sex"] == "m").to_numpy().astype(float)
    level = np.array([g.levels.index(c) for c in classes["cls"]])
    p = special.expit(b[:, [0]] + b[:, [1]] * x + u[:, level])
    y_rep = rng.binomial(np.ones(len(x), dtype=np.int64), p)
    assert res["replicated_mean"][0] == pytest.approx(y_rep.mean(), rel=1e-12)
    assert res["ppp"][0] == np.mean(y_rep.mean(axis=1) >= classes["y"].mean())
    # the built-in mean replicates each cell's successes, Binomial(rows, p)
    res = model.ppc(stat="mean", re="new", random_seed=11)
    rng = np.random.default_rng(11)
    u = new_effects(rng)
    x = (spec.cells["sex"] == "m").to_numpy().astype(float)
    p = special.expit(b[:, [0]] + b[:, [1]] * x + u[:, g.index])
    successes = rng.binomial(spec.rows.astype(np.int64), p).sum(axis=1)
    assert res["replicated_mean"][0] == pytest.approx(successes.mean() / len(classes), rel=1e-12)
    assert res["ppp"][0] == np.mean(successes / len(classes) >= classes["y"].mean())


def test_new_groups_replicate_a_wider_spread_of_group_means():
    """Fitted effects of small groups pin each group near its data; new ones do not."""
    rng = np.random.default_rng(0)
    levels = [f"b{i:02d}" for i in range(40)]
    data = pl.DataFrame({"y": rng.integers(0, 2, 120), "brood": levels * 3})
    model = glmer("y ~ 1 + (1|brood)", data, family="binomial")
    n_draws = 1000
    centre = rng.normal(0.0, 1.5, 40)  # posterior of each brood: near its own value
    attach(
        model,
        rng.normal(0.0, 0.1, (n_draws, 1)),
        {"brood": np.full(n_draws, 1.5)},
        {"brood": centre + 0.2 * rng.standard_normal((n_draws, 40))},
    )
    fitted = model.ppc(stat="brood", re="groups", random_seed=2)
    new = model.ppc(stat="brood", re="new", random_seed=2)
    w_fitted = (fitted["replicated_high"] - fitted["replicated_low"]).to_numpy()
    w_new = (new["replicated_high"] - new["replicated_low"]).to_numpy()
    assert w_new.mean() > w_fitted.mean() + 0.1
    # Fitted effects follow each brood; new ones centre every brood on the population mean.
    spread = lambda t: np.std(t["replicated_mean"].to_numpy())  # noqa: E731
    assert spread(fitted) > 2 * spread(new)


def test_ppc_new_groups_checks_the_spread_of_group_means(classes):
    model = fake(glmer("y ~ sex + (1|cls)", classes, family="binomial"), n_draws=300)
    res = model.ppc(re="new", random_seed=11)
    assert res["statistic"].to_list() == ["mean", "mean[sex=f]", "mean[sex=m]", "sd[cls means]"]
    spec = model.spec
    g = spec.groups[0]
    b = fixed(model.posterior)
    rng = np.random.default_rng(11)
    u = group_sd(model.posterior, g)[:, None] * rng.standard_normal((b.shape[0], len(g.levels)))
    # each cell's successes are Binomial(rows, p); a class's mean is its cells' successes
    # over its rows
    x = (spec.cells["sex"] == "m").to_numpy().astype(float)
    p = special.expit(b[:, [0]] + b[:, [1]] * x + u[:, g.index])
    successes = rng.binomial(spec.rows.astype(np.int64), p)
    members = np.zeros((spec.cells.height, len(g.levels)))
    members[np.arange(spec.cells.height), g.index] = 1.0
    class_means = (successes @ members) / (spec.rows @ members)
    row = res.filter(statistic="sd[cls means]").row(0, named=True)
    observed = classes.group_by("cls").agg(pl.col("y").mean())["y"].to_numpy()
    assert row["observed"] == pytest.approx(np.std(observed, ddof=1), rel=1e-12)
    assert row["replicated_mean"] == pytest.approx(
        np.mean(class_means.std(axis=1, ddof=1)), rel=1e-12
    )
    # Fitted-group replication keeps one mean per class.
    assert "mean[cls=c0]" in model.ppc(random_seed=1)["statistic"].to_list()

"""Posterior predictive checks and simulate, on small synthetic data with a known truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from synthetic import FIT, by_stat, counts_data

from bayesmer import glm
from bayesmer.ppc import ppc, simulate
from bayesmer.predict import predict


@pytest.fixture(scope="module")
def overdispersed_fit():
    model = glm("y ~ f + offset(log(t))", data=counts_data(True, seed=12), family="poisson")
    model.fit(random_seed=7, **FIT)
    return model


# ---------------------------------------------------------------------------------------------
# ppc


PPC_COLUMNS = [
    "statistic",
    "observed",
    "replicated_mean",
    "replicated_low",
    "replicated_high",
    "ppp",
]


def test_ppc_flags_overdispersion(overdispersed_fit):
    table = by_stat(ppc(overdispersed_fit, random_seed=1))
    var = table["var"]
    assert var["ppp"] < 0.01
    assert var["observed"] > var["replicated_high"]
    assert table["zeros"]["ppp"] < 0.01  # many more zeros than a Poisson gives


def test_ppc_does_not_flag_poisson_counts(pois_fit, counts):
    table = ppc(pois_fit, random_seed=1)
    assert table.columns == PPC_COLUMNS
    rows = by_stat(table)
    assert list(rows) == [
        "mean",
        "mean[f=a]",
        "mean[f=b]",
        "mean[f=c]",
        "mean[f=d]",
        "zeros",
        "var",
    ]
    assert 0.05 < rows["var"]["ppp"] < 0.95
    assert 0.05 < rows["zeros"]["ppp"] < 0.95
    for name, row in rows.items():
        assert row["replicated_low"] <= row["observed"] <= row["replicated_high"], name
    # observed statistics are those of the data rows
    y = counts["y"]
    assert rows["var"]["observed"] == pytest.approx(y.var())
    assert rows["mean[f=c]"]["observed"] == pytest.approx(y.filter(counts["f"] == "c").mean())
    # per-row replication: replicated count variance is that of Poisson rows, whose mean
    # depends on f and t (much less than the variance of a cell total)
    assert rows["var"]["replicated_mean"] == pytest.approx(y.var(), rel=0.2)


def test_ppc_binomial_defaults(titanic_glmer, titanic):
    table = ppc(titanic_glmer, random_seed=2)
    assert titanic_glmer.ppc(random_seed=2).equals(table)
    rows = by_stat(table)
    assert list(rows) == [
        "mean",
        "mean[sex=female]",
        "mean[sex=male]",
        "mean[pclass=1]",
        "mean[pclass=2]",
        "mean[pclass=3]",
    ]
    by_class = titanic.group_by("pclass").agg(pl.col("survived").mean())
    for pclass, share in by_class.iter_rows():
        assert rows[f"mean[pclass={pclass}]"]["observed"] == pytest.approx(share)
    assert rows["mean"]["observed"] == pytest.approx(titanic["survived"].mean())
    for row in rows.values():
        assert 0.1 < row["ppp"] < 0.9
        assert 0 <= row["replicated_low"] < row["replicated_high"] <= 1


def test_ppc_custom_statistics_and_seed(pois_fit, counts):
    def top(y, data):
        return y.max(axis=1)

    table = ppc(pois_fit, stat=["max", top, "f"], random_seed=3, ci=0.5)
    names = table["statistic"].to_list()
    assert names == ["max", "top", "mean[f=a]", "mean[f=b]", "mean[f=c]", "mean[f=d]"]
    rows = by_stat(table)
    assert rows["max"]["observed"] == rows["top"]["observed"] == counts["y"].max()
    assert rows["max"]["replicated_mean"] == rows["top"]["replicated_mean"]
    wide = ppc(pois_fit, stat="max", random_seed=3, ci=0.95).row(0, named=True)
    assert wide["replicated_high"] - wide["replicated_low"] > (
        rows["max"]["replicated_high"] - rows["max"]["replicated_low"]
    )
    named = ppc(
        pois_fit,
        stat={
            "share of 1s": lambda y, d: (y == 1).mean(axis=1),
            "rate": lambda y, d: y.sum(axis=1) / d["exposure"].sum(),
            "spread": "sd",
        },
    )
    assert named["statistic"].to_list() == ["share of 1s", "rate", "spread"]
    observed = named["observed"].to_list()
    assert observed[0] == pytest.approx((counts["y"] == 1).mean())
    assert observed[1] == pytest.approx(counts["y"].sum() / counts["t"].sum())
    assert observed[2] == pytest.approx(counts["y"].std())
    assert ppc(pois_fit, random_seed=9).equals(ppc(pois_fit, random_seed=9))
    assert not ppc(pois_fit, random_seed=9).equals(ppc(pois_fit, random_seed=10))


def test_ppc_bad_input(pois_fit):
    with pytest.raises(ValueError, match="Unknown statistic 'kurtosis'"):
        ppc(pois_fit, stat="kurtosis")
    with pytest.raises(ValueError, match="one value per replicated data set"):
        ppc(pois_fit, stat={"rows": lambda y, d: y})
    with pytest.raises(ValueError, match="ci must be between 0 and 1"):
        ppc(pois_fit, ci=1.5)
    with pytest.raises(TypeError, match="stat must be"):
        ppc(pois_fit, stat=3)


# ---------------------------------------------------------------------------------------------
# simulate


def test_simulate_layout_and_distribution(pois_fit, counts):
    sims = simulate(pois_fit, nsim=400, random_seed=1, with_data=True)
    assert sims.columns[:5] == ["row", "f", "y", "exposure", "sim_1"]
    assert sims.columns[-1] == "sim_400"
    assert sims.height == counts.height
    assert sims["y"].to_list() == counts["y"].to_list()
    values = sims.select(pl.selectors.starts_with("sim_")).to_numpy()
    assert values.min() >= 0 and values.dtype.kind == "i"
    # each row's mean over data sets is its expected count
    expected = predict(pois_fit)
    np.testing.assert_allclose(values.mean(axis=1)[:8], expected[:8], rtol=0.25)
    by_level = sims.group_by("f", "exposure").agg(pl.col("sim_1", "sim_2").mean()).sort("f")
    assert by_level.height == 8
    assert simulate(pois_fit, 2, random_seed=4).equals(simulate(pois_fit, 2, random_seed=4))


def test_simulate_binomial_rows_are_zero_or_one(titanic_glm):
    sims = simulate(titanic_glm, nsim=3, random_seed=1, with_data=True)
    assert titanic_glm.simulate(3, random_seed=1).equals(sims.select("sim_1", "sim_2", "sim_3"))
    assert sims.height == 891
    assert sims.columns == ["row", "sex", "survived", "trials", "sim_1", "sim_2", "sim_3"]
    assert set(np.unique(sims.select("sim_1", "sim_2", "sim_3").to_numpy())) <= {0, 1}
    with pytest.raises(ValueError, match="nsim must be a positive integer"):
        simulate(titanic_glm, nsim=0)

"""predict: fitted and new rows, every choice of ``re``, and its argument errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import special
from synthetic import LEVEL_LOG_RATE

from bayesmer.draws import fixed, group_effects, group_sd
from bayesmer.predict import predict


def test_predict_fitted_rows_zero_and_groups(titanic_glmer, titanic):
    spec = titanic_glmer.spec
    b = fixed(titanic_glmer.posterior)
    u = group_effects(titanic_glmer.posterior, spec.groups[0])
    male = (titanic["sex"] == "male").to_numpy().astype(float)
    eta = b[:, [0]] + b[:, [spec.terms.index("sexmale")]] * male
    zero = predict(titanic_glmer, re="zero", output="table")
    assert titanic_glmer.predict(re="zero", output="table").equals(zero)
    assert zero.height == 891 and zero["row"].to_list() == list(range(891))
    np.testing.assert_allclose(zero["estimate"], np.median(special.expit(eta), axis=0))
    pclass = np.array([spec.groups[0].levels.index(str(v)) for v in titanic["pclass"]])
    include = predict(titanic_glmer, output="table", ci=0.9)
    np.testing.assert_allclose(
        include["estimate"], np.median(special.expit(eta + u[:, pclass]), axis=0)
    )
    np.testing.assert_allclose(
        predict(titanic_glmer), np.mean(special.expit(eta + u[:, pclass]), axis=0)
    )
    link = predict(titanic_glmer, re="groups", type_predict="link", output="table")
    np.testing.assert_allclose(link["estimate"], np.median(eta + u[:, pclass], axis=0))
    assert (include["conf_low"] < include["estimate"]).all()
    assert (include["estimate"] < include["conf_high"]).all()


def test_predict_marginal_averages_over_group_effects(titanic_glmer):
    new = pl.DataFrame({"sex": ["female", "male"]})
    long = predict(titanic_glmer, data=new, re="marginal", output="draws")
    assert long.columns == ["row", ".draw", "prediction"]
    spec = titanic_glmer.spec
    b = fixed(titanic_glmer.posterior)
    sd = group_sd(titanic_glmer.posterior, spec.groups[0])
    assert long.height == 2 * b.shape[0]
    z = np.random.default_rng(0).standard_normal(20_000)
    for row, male in ((0, 0.0), (1, 1.0)):
        draws = long.filter(pl.col("row") == row).sort(".draw")["prediction"].to_numpy()
        sel = np.arange(0, b.shape[0], 200)
        eta = b[sel, 0] + b[sel, spec.terms.index("sexmale")] * male
        monte_carlo = special.expit(eta[:, None] + sd[sel, None] * z).mean(axis=1)
        np.testing.assert_allclose(draws[sel], monte_carlo, atol=4e-3)
    summary = predict(titanic_glmer, data=new, re="marginal", output="table")
    medians = long.group_by("row").agg(pl.col("prediction").median()).sort("row")
    np.testing.assert_allclose(summary["estimate"], medians["prediction"])
    # marginal probabilities are pulled towards 1/2 relative to the typical group
    zero = predict(titanic_glmer, data=new, re="zero", output="table")
    assert abs(summary["estimate"][1] - 0.5) < abs(zero["estimate"][1] - 0.5)


def test_predict_intercept_only_model(pois_null, counts):
    out = predict(pois_null, data=pl.DataFrame({"t": [1.0, 3.0]}), output="table")
    assert out.columns == ["row", "t", "estimate", "sd", "conf_low", "conf_high"]
    assert out["estimate"][1] == pytest.approx(3 * out["estimate"][0])
    overall = counts["y"].sum() / counts["t"].sum()
    assert out["conf_low"][0] < overall < out["conf_high"][0]


def test_predict_poisson_exposure_and_link(pois_fit):
    new = pl.DataFrame({"f": ["a", "a", "c"], "t": [1.0, 2.0, 1.0]})
    resp = predict(pois_fit, data=new, output="draws")
    per_draw = resp.pivot(on="row", index=".draw", values="prediction").drop(".draw").to_numpy()
    np.testing.assert_allclose(per_draw[:, 1], 2 * per_draw[:, 0])
    link = predict(pois_fit, data=new, type_predict="link", output="table")
    np.testing.assert_allclose(link["estimate"][1] - link["estimate"][0], np.log(2.0))
    assert link.columns == ["row", "f", "t", "estimate", "sd", "conf_low", "conf_high"]
    b = fixed(pois_fit.posterior)
    c = pois_fit.spec.terms.index("fc")
    assert link["estimate"][2] == pytest.approx(np.median(b[:, 0] + b[:, c]))
    true = np.exp(LEVEL_LOG_RATE["c"])
    row = predict(pois_fit, data=new, output="table").row(2, named=True)
    assert row["conf_low"] < true < row["conf_high"]
    pandas = predict(pois_fit, data=new.to_pandas(), type_predict="link", output="table")
    np.testing.assert_allclose(pandas["estimate"], link["estimate"])
    # a glm has no group effects: every re gives the same
    np.testing.assert_array_equal(
        predict(pois_fit, data=new, re="marginal"), predict(pois_fit, data=new)
    )


def test_predict_bad_input(titanic_glmer, pois_fit, trials_fit):
    new = pl.DataFrame({"sex": ["male"], "pclass": [4]})
    with pytest.raises(ValueError, match=r"re='groups'.*'pclass'.*not in the fit: 4"):
        predict(titanic_glmer, data=new)
    assert predict(titanic_glmer, data=new, re="marginal").shape == (1,)
    with pytest.raises(ValueError, match=r"level\(s\) \['other'\] of 'sex'"):
        predict(titanic_glmer, data=pl.DataFrame({"sex": ["other"]}), re="zero")
    with pytest.raises(ValueError, match=r"needs the column\(s\) \['sex'\]"):
        predict(titanic_glmer, data=pl.DataFrame({"age": [3.0]}), re="zero")
    with pytest.raises(ValueError, match=r"\['sex', 'pclass'\].*re='groups', the default"):
        predict(titanic_glmer, data=pl.DataFrame({"age": [3.0]}))
    with pytest.raises(ValueError, match=r"needs the column\(s\) \['t'\]"):
        predict(pois_fit, data=pl.DataFrame({"f": ["a"]}))
    with pytest.raises(ValueError, match=r"column\(s\) \['x'\] must be numeric"):
        predict(trials_fit, data=pl.DataFrame({"x": ["1.5"]}))
    with pytest.raises(ValueError, match="missing values"):
        predict(pois_fit, data=pl.DataFrame({"f": ["a", None], "t": [1.0, 1.0]}), output="draws")
    with pytest.raises(ValueError, match="type_predict must be one of"):
        predict(pois_fit, type_predict="probability")
    with pytest.raises(ValueError, match="re must be one of"):
        predict(pois_fit, re="random")
    with pytest.raises(ValueError, match="ci must be between 0 and 1"):
        predict(pois_fit, ci=0)


@pytest.mark.parametrize("type_predict", ["response", "link"])
def test_fitted_rows_are_predicted_per_cell_as_new_rows_are(pois_fit, counts, type_predict):
    """The fitted rows' predictions, computed once per cell and spread to the rows (scaled or
    shifted by each row's exposure), equal those of the same rows given as new data."""
    fitted = predict(pois_fit, type_predict=type_predict, output="table")
    new = predict(pois_fit, data=counts, type_predict=type_predict, output="table")
    assert fitted.height == new.height == counts.height
    for col in ("estimate", "sd", "conf_low", "conf_high"):
        np.testing.assert_allclose(fitted[col], new[col], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        predict(pois_fit, type_predict=type_predict),
        predict(pois_fit, data=counts, type_predict=type_predict),
        rtol=1e-12,
    )


def test_fitted_rows_marginal_per_cell(titanic_glmer, titanic):
    for re in ("marginal", "zero"):
        fitted = predict(titanic_glmer, re=re, output="table")
        new = predict(titanic_glmer, data=titanic, re=re, output="table")
        for col in ("estimate", "sd", "conf_low", "conf_high"):
            np.testing.assert_allclose(fitted[col], new[col], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# fitted_values in blocks of cells ordered by level, over threads: the same as the plain route


def _many_levels(n_rows=3000, seed=0):
    """Non-collapsing binomial rows with a 400-level and a crossed 9-level factor."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "y": rng.integers(0, 2, n_rows),
            "x": rng.normal(size=n_rows),
            "a": rng.choice(["p", "q"], n_rows),
            "g": rng.integers(0, 400, n_rows).astype(str),
            "h": rng.integers(0, 9, n_rows).astype(str),
        }
    )


def test_cell_blocks_cover_every_cell_once_by_level(monkeypatch):
    from bayesmer import glmer
    from bayesmer.rows import cell_blocks

    monkeypatch.setattr("bayesmer.rows.CELL_BLOCK_VALUES", 400 * 70)
    spec = glmer("y ~ x + a + (1|g) + (1|h)", data=_many_levels(), family="binomial").spec
    chunks = cell_blocks(spec, 400)
    assert max(len(c) for c in chunks) == 8 * 70  # OUTER_BLOCKS of cell_eta's blocks
    cells = np.concatenate(chunks)
    np.testing.assert_array_equal(np.sort(cells), np.arange(spec.X.shape[0]))
    g = next(grp for grp in spec.groups if grp.name == "g")
    assert (np.diff(g.index[cells]) >= 0).all()  # the 400-level factor's levels in order


def test_cell_eta_equals_the_draws_linear_predictor(monkeypatch):
    """From a compact copy of a block's levels, the same numbers, block by block."""
    from fakes import fake_posterior

    from bayesmer import glmer
    from bayesmer.rows import Draws, cell_blocks, cell_eta

    model = fake_posterior(
        glmer("y ~ x + a + (1|g) + (1|h)", data=_many_levels(), family="binomial")
    )
    monkeypatch.setattr("bayesmer.rows.CELL_BLOCK_VALUES", 400 * 30)
    spec = model.spec
    draws = Draws.read(spec, model.posterior)
    n_parts = 0
    for cells in cell_blocks(spec, draws.n):
        for part, eta in cell_eta(spec, draws, cells):
            c = cells[part]
            np.testing.assert_array_equal(eta, draws.eta(spec.X[c], spec.group_rows(c)))
            n_parts += 1
    assert n_parts > 8


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("type_predict", ["response", "link"])
def test_fitted_values_equal_the_plain_computation(monkeypatch, threads, type_predict):
    from fakes import fake_posterior

    from bayesmer import glmer
    from bayesmer.predict import fitted_values

    data = _many_levels()
    model = fake_posterior(glmer("y ~ x + a + (1|g) + (1|h)", data=data, family="binomial"))
    monkeypatch.setattr("bayesmer.rows.CELL_BLOCK_VALUES", 400 * 70)
    monkeypatch.setattr("bayesmer.parallel.n_threads", lambda: threads)
    monkeypatch.setattr("bayesmer.parallel.MIN_THREADED_VALUES", 0)
    fitted, residuals = fitted_values(model, type_predict)
    # the plain route, per row: b x + u_g[g] + u_h[h], expit, posterior mean
    spec = model.spec
    post = model.posterior
    eta = fixed(post) @ spec.design_matrix(data.select("x", "a")).T
    for grp in spec.groups:
        lookup = {level: i for i, level in enumerate(grp.levels)}
        eta = eta + group_effects(post, grp)[:, [lookup[v] for v in data[grp.name]]]
    response = special.expit(eta).mean(axis=0)
    expected = response if type_predict == "response" else eta.mean(axis=0)
    np.testing.assert_allclose(fitted, expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(residuals, data["y"].to_numpy() - response, rtol=1e-12, atol=1e-14)


INVERSE_LINKS = {
    "logit": special.expit,
    "probit": special.ndtr,
    "cloglog": lambda e: -np.expm1(-np.exp(e)),
}


@pytest.mark.parametrize("link", list(INVERSE_LINKS))
def test_inverse_link_in_place_equals_scipy(link):
    from bayesmer.families import get_family

    eta = np.random.default_rng(1).normal(0.0, 4.0, (30, 50))
    if link == "logit":
        eta[0, :2] = [-800.0, 800.0]  # exp(-eta) overflows: probability 0, and no warning
    family = get_family("binomial", link)
    np.testing.assert_allclose(family.inverse_link(eta), INVERSE_LINKS[link](eta), rtol=4e-16)
    buffer = eta.copy()
    assert family.inverse_link(buffer, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, family.inverse_link(eta))
    scalar = family.inverse_link(0.5)
    assert isinstance(scalar, float)
    assert scalar == pytest.approx(INVERSE_LINKS[link](0.5), rel=4e-16)

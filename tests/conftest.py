"""Shared fitted models: compiling costs seconds, so each standard model is fitted once per run.

Every fixture pins its seed; tests that need other settings fit their own model.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import polars as pl
import pytest
from scipy import special
from synthetic import FIT, counts_data

from bayesmer import glm, glmer, load_dataset

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def titanic():
    return load_dataset("titanic")


@pytest.fixture(scope="session")
def grouseticks():
    return load_dataset("grouseticks")


@pytest.fixture(scope="session")
def titanic_glm(titanic):
    """glm('survived ~ sex'), 4 chains x 1000 draws, seed 1."""
    model = glm("survived ~ sex", data=titanic, family="binomial")
    model.set_factors("sex")
    model.fit(random_seed=1, progressbar=False)
    return model


@pytest.fixture(scope="session")
def titanic_glmer(titanic):
    """glmer('survived ~ sex + (1|pclass)'), 4 chains x 1000 draws, seed 1."""
    model = glmer("survived ~ sex + (1|pclass)", data=titanic, family="binomial")
    model.set_factors("pclass")
    model.fit(random_seed=1, progressbar=False)
    return model


@pytest.fixture(scope="session")
def grouse_glmer(grouseticks):
    """glmer('TICKS ~ YEAR + cHEIGHT + (1|BROOD)', poisson), 4 chains x 1000 draws, seed 1."""
    model = glmer("TICKS ~ YEAR + cHEIGHT + (1|BROOD)", data=grouseticks, family="poisson")
    model.fit(random_seed=1, progressbar=False)
    return model


# ---------------------------------------------------------------------------------------------
# Synthetic counts and trials, fitted once for the loo, ppc and predict tests


@pytest.fixture(scope="session")
def counts():
    return counts_data(overdispersed=False, seed=11)


@pytest.fixture(scope="session")
def pois_fit(counts):
    """The true model of the Poisson counts (collapsed: 8 cells of f x t)."""
    model = glm("y ~ f + offset(log(t))", data=counts, family="poisson")
    model.fit(random_seed=5, **FIT)
    return model


@pytest.fixture(scope="session")
def pois_null(counts):
    """The same counts without the predictor f."""
    model = glm("y ~ offset(log(t))", data=counts, family="poisson")
    model.fit(random_seed=6, **FIT)
    return model


@pytest.fixture(scope="session")
def trials_data():
    """200 rows with a continuous predictor (so nothing collapses) and 1 to 5 trials each."""
    rng = np.random.default_rng(21)
    x = rng.normal(size=200)
    n = rng.integers(1, 6, size=200)
    y = rng.binomial(n, special.ndtr(-0.3 + 0.8 * x))
    return pl.DataFrame({"y": y, "n": n, "x": x})


@pytest.fixture(scope="session")
def trials_fit(trials_data):
    model = glm("cbind(y, n - y) ~ x", data=trials_data, family="binomial", link="probit")
    model.fit(random_seed=9, **FIT)
    return model

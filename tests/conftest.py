"""Shared fitted models: compiling costs seconds, so each standard model is fitted once per run.

Every fixture pins its seed; tests that need other settings fit their own model.
"""

from __future__ import annotations

import matplotlib
import pytest

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

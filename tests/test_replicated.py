"""ppc's built-in statistics per cell (bayesmer.replicated) against per-row replication.

Exact per-cell forms and streamed rows must give each statistic the distribution that
replicating every row gives (the per-row path, which a callable statistic still takes), to
Monte Carlo error; and a ppc of a million rows must not build a row-sized array.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import polars as pl
import pytest
from synthetic import attach

from bayesmer import glmer
from bayesmer import rows as rows_module
from bayesmer.ppc import _per_cell, _per_row, _statistics
from bayesmer.replicated import EXACT, NEEDS, Builtin, exact_kind
from bayesmer.rows import Draws

N_DRAWS = 4000

#: formula, family, intercept, dispersion (sigma, size or phi)
MODELS = {
    "bernoulli": ("y01 ~ f + (1|g)", "binomial", -0.3, None),
    "binomial": ("cbind(s, n - s) ~ f + (1|g)", "binomial", 0.2, None),
    "poisson": ("cnt ~ f + (1|g) + offset(log(t))", "poisson", 0.3, None),
    "negativebinomial": ("cnt ~ f + (1|g) + offset(log(t))", "negativebinomial", 0.3, 2.0),
    "gaussian": ("z ~ f + (1|g)", "gaussian", 2.0, 1.5),
    "betabinomial": ("cbind(s, n - s) ~ f + (1|g)", "betabinomial", 0.2, 5.0),
}


@pytest.fixture(scope="module")
def data() -> pl.DataFrame:
    """240 rows: factor f (3 levels), group g (6), exposure t in {1, 2} (not a cell key, so
    a cell mixes exposures), 1-4 trials."""
    rng = np.random.default_rng(5)
    n = 240
    trials = rng.integers(1, 5, n)
    return pl.DataFrame(
        {
            "f": rng.choice(["a", "b", "c"], n),
            "g": rng.choice([f"g{i}" for i in range(6)], n),
            "t": rng.choice([1.0, 2.0], n),
            "n": trials,
            "s": rng.binomial(trials, 0.5),
            "y01": rng.integers(0, 2, n),
            "cnt": rng.poisson(2.0, n),
            "z": rng.normal(2.0, 1.5, n),
        }
    )


def draws_of(spec, intercept: float, dispersion: float | None, fixed_point: bool) -> Draws:
    """One point repeated (the spread of a statistic is then replication alone) or draws
    that vary around it."""
    rng = np.random.default_rng(8)
    b = rng.normal(0.0, 0.3, len(spec.terms))
    b[0] = intercept
    u = rng.normal(0.0, 0.5, len(spec.groups[0].levels))
    spread = 0.0 if fixed_point else 0.15
    b = b + spread * rng.standard_normal((N_DRAWS, len(b)))
    u = u + spread * rng.standard_normal((N_DRAWS, len(u)))
    disp = None
    if dispersion is not None:
        disp = dispersion * np.exp(spread * rng.standard_normal(N_DRAWS))
    return Draws(b, {"g": u}, {"g": np.full(N_DRAWS, 0.5)}, 1, {}, disp)


def assert_same_distribution(name: str, a: np.ndarray, b: np.ndarray) -> None:
    """Same mean and variance to 5 Monte Carlo standard errors."""
    se_mean = np.sqrt((a.var() + b.var()) / len(a))
    assert abs(a.mean() - b.mean()) <= 5 * se_mean + 1e-12, name

    def se_var(x):
        d = x - x.mean()
        return np.sqrt(max(np.mean(d**4) - np.mean(d**2) ** 2, 0.0) / len(x))

    se = np.sqrt(se_var(a) ** 2 + se_var(b) ** 2)
    assert abs(a.var() - b.var()) <= 5 * se + 1e-12, name


@pytest.mark.parametrize("fixed_point", [True, False], ids=["fixed", "posterior"])
@pytest.mark.parametrize("case", list(MODELS))
def test_per_cell_statistics_match_per_row_replication(data, case, fixed_point):
    formula, family, intercept, dispersion = MODELS[case]
    model = glmer(formula, data, family=family)
    spec = model.spec
    stats, layout = _statistics(["mean", "var", "sd", "zeros", "max", "min", "f", "g"], spec)
    stats["sd[g means]"] = Builtin("spread", "g")
    draws = draws_of(spec, intercept, dispersion, fixed_point)
    seen, per_row = _per_row(model, stats, draws, np.random.default_rng(1))
    observed, streamed = _per_cell(spec, stats, layout, draws, np.random.default_rng(2), False)
    for name in stats:
        # the observed statistics from the distinct observations are those of the rows
        assert observed[name] == pytest.approx(seen[name], rel=1e-9, abs=1e-12), name
        assert_same_distribution(name, streamed[name], per_row[name])
    kind = exact_kind(spec)
    assert kind == {"negativebinomial": None, "betabinomial": None}.get(case, case)
    if kind is None:
        return
    exact = {k: s for k, s in stats.items() if NEEDS[s.kind] in EXACT[kind]}
    _, per_cell = _per_cell(spec, exact, layout, draws, np.random.default_rng(3))
    for name in exact:
        assert_same_distribution(name, per_cell[name], per_row[name])


def test_exact_forms_are_taken_only_when_they_cover_every_statistic(data, monkeypatch):
    """Poisson var has no per-cell form: with it the check streams every statistic, so that
    the zeros and the variance of a data set come from the same rows."""
    model = glmer("cnt ~ f + (1|g) + offset(log(t))", data, family="poisson")
    spec = model.spec
    draws = draws_of(spec, 0.3, None, True)
    calls = []
    from bayesmer import replicated

    for path in ("_per_cell", "_streamed"):
        original = getattr(replicated, path)
        monkeypatch.setattr(
            replicated,
            path,
            lambda *a, path=path, original=original: (calls.append(path), original(*a))[1],
        )
    for stat, path in ((["mean", "zeros", "f"], "_per_cell"), (["mean", "var"], "_streamed")):
        stats, layout = _statistics(stat, spec)
        _per_cell(spec, stats, layout, draws, np.random.default_rng(1))
        assert calls.pop() == path


def _million_rows(counts: bool) -> pl.LazyFrame:
    rng = np.random.default_rng(3)
    n = 1_000_000
    frame = pl.DataFrame(
        {
            "a": rng.integers(0, 2, n),
            "g": rng.integers(0, 50, n),
            "y": rng.poisson(1.0, n) if counts else rng.integers(0, 2, n),
        }
    )
    return frame.lazy()


@pytest.mark.parametrize(
    ("family", "n_draws"), [("binomial", 100), ("poisson", 20)], ids=["exact", "streamed"]
)
def test_ppc_of_a_million_rows_builds_no_row_sized_array(monkeypatch, family, n_draws):
    """Bernoulli rows are replicated per cell; Poisson counts (var among the default
    statistics) are streamed in blocks of BLOCK_VALUES (here 20,000 values, 160 kB). Either
    way the peak of traced allocations stays far below one float per row (8 MB), let alone
    rows x draws."""
    monkeypatch.setattr(rows_module, "BLOCK_VALUES", 20_000)
    model = glmer("y ~ a + (1|g)", _million_rows(family == "poisson"), family=family)
    spec = model.spec
    assert spec.n_obs == 1_000_000 and spec.cells.height == 100
    rng = np.random.default_rng(0)
    attach(
        model,
        rng.normal(0.0, 0.1, (n_draws, len(spec.terms))),
        {"g": np.full(n_draws, 0.3)},
        {"g": rng.normal(0.0, 0.3, (n_draws, 50))},
    )
    model.ppc(stat="mean", random_seed=0)  # the libraries it imports on first use
    tracemalloc.start()
    try:
        table = model.ppc(random_seed=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000 * 8 / 4
    mean = table.filter(statistic="mean").row(0, named=True)
    assert mean["replicated_low"] < mean["replicated_high"]

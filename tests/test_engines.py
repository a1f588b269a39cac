"""Data in DuckDB, Dask, Spark, pyarrow and Ibis: the same cells, draws and errors as polars.

Each engine is started for real, once for this module: DuckDB in process, Dask on a
``distributed.LocalCluster`` with two workers, PySpark in ``local[2]`` mode (it needs a Java
runtime; ``make install`` puts one in). Validation and collapsing run as queries in the engine,
and the cells that come back must equal the ones polars makes from the same rows: exactly for
counts, trials and exposures (sums of whole numbers and of multiples of 1/8), to rounding for
sums of gaussian outcomes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import duckdb
import ibis
import numpy as np
import polars as pl
import pytest
from distributed import Client, LocalCluster
from pyspark.sql import SparkSession

from bayesmer import glm, glmer, load_model
from bayesmer.collapse import CELL, ROWS, SS, TRIALS, WEIGHT, Y
from bayesmer.engines import ACCEPTED, columns, lazy_frame
from bayesmer.families import get_family
from bayesmer.formula import parse_formula
from bayesmer.spec import ModelSpec, build_spec

# The defaults (4 chains x 1000 draws): with 2 chains x 500 draws one group effect's R-hat was
# 1.014 on one machine and below 1.01 on another (the same seed, last-digit differences).
FIT = {"progressbar": False, "random_seed": 11}


def _rows(n: int = 1500, seed: int = 5) -> pl.DataFrame:
    """Bernoulli, count, trials and gaussian outcomes; string, integer, float and boolean
    predictors; exposures that are multiples of 1/8 (so every sum of them is exact)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 12, n)  # integers: levels in numeric order, '2' before '10'
    u = rng.normal(0.0, 0.7, 12)[g]
    a = rng.choice(["lo", "hi", "mid"], n)
    x = rng.choice([0.0, 0.5, 2.0], n)
    eta = -0.2 + 0.6 * (a == "hi") + 0.3 * x + u
    expo = rng.integers(1, 64, n) / 8.0
    trials = rng.integers(1, 9, n)
    return pl.DataFrame(
        {
            "y": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(np.int64),
            "outcome": rng.choice(["no", "yes"], n),
            "count": rng.poisson(expo * np.exp(0.3 * x + u)),
            "expo": expo,
            "s": rng.binomial(trials, 0.4),
            "trials": trials,
            "score": np.round(rng.normal(eta, 1.0), 3),
            "a": a,
            "x": x,
            "level": rng.choice([1.0, 2.5, 10.0], n),
            "flag": rng.choice([True, False], n),
            "g": g,
            "site": rng.choice(["p", "q", "r"], n),
        }
    )


ROWS_DATA = _rows()


# ---------------------------------------------------------------------------------------------
# Engines, started once for the module


@pytest.fixture(scope="module")
def duck() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    yield con
    con.close()


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    session = (
        SparkSession.builder.master("local[2]")
        .appName("bayesmer-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _in_engine(engine: str, frame: pl.DataFrame, request: pytest.FixtureRequest) -> Any:
    """``frame`` as a frame of ``engine`` (its rows split into partitions where it has any)."""
    if engine == "duckdb":
        return request.getfixturevalue("duck").from_arrow(frame.to_arrow())
    if engine == "dask":
        request.getfixturevalue("dask_client")
        return dd.from_pandas(frame.to_pandas(), npartitions=3)
    if engine == "ibis":
        return ibis.memtable(frame.to_arrow())
    if engine == "pyarrow":
        return frame.to_arrow()
    raise AssertionError(engine)


def _spec(formula: str, data: Any, family: str, factors: dict | None = None) -> ModelSpec:
    return build_spec(parse_formula(formula), data, get_family(family), factors or {}, None)


def _assert_same_spec(got: ModelSpec, ref: ModelSpec) -> None:
    assert got.cells.equals(ref.cells), (got.cells, ref.cells)
    assert got.cells.schema == ref.cells.schema
    assert got.obs.equals(ref.obs)
    np.testing.assert_array_equal(got.X, ref.X)
    assert got.terms == ref.terms and got.factors == ref.factors
    assert [g.levels for g in got.groups] == [g.levels for g in ref.groups]
    assert (got.n_obs, got.n_dropped, got.collapsed) == (ref.n_obs, ref.n_dropped, ref.collapsed)


# ---------------------------------------------------------------------------------------------
# Cells

#: Models whose cells are sums of whole numbers (or of multiples of 1/8): exact in any engine.
EXACT = [
    ("y ~ a + x + flag + (1|g)", "binomial", None),
    ("outcome ~ a + C(level) + (1|g:site)", "binomial", None),
    ("count ~ a + offset(log(expo)) + (1|g)", "poisson", None),
    ("cbind(s, trials - s) ~ a + x + (x|site)", "binomial", None),
    ("count ~ a + (1|site)", "negativebinomial", None),
    ("cbind(s, trials) ~ a + (1|g)", "betabinomial", {"a": ["mid", "lo", "hi"]}),
]


@pytest.mark.parametrize("engine", ["duckdb", "ibis", "pyarrow", "dask"])
def test_cells_equal_polars_exactly(engine: str, request: pytest.FixtureRequest) -> None:
    # Dask runs a scheduler round trip per query: two models are enough there
    models = EXACT[1:3] if engine == "dask" else EXACT
    for formula, family, factors in models:
        ref = _spec(formula, ROWS_DATA, family, factors)
        got = _spec(formula, _in_engine(engine, ROWS_DATA, request), family, factors)
        _assert_same_spec(got, ref)
    # integer groups keep their numeric order whatever engine returned them
    assert ref.groups[0].levels[:3] == ["0", "1", "2"]


@pytest.mark.slow
def test_spark_cells_draws_and_errors_equal_polars(spark: SparkSession, polars_fit: Any) -> None:
    """One test for Spark, whose session takes 20-40 s to start and every query a second or
    two (slow: ``make test`` and CI run it)."""
    data = spark.createDataFrame(ROWS_DATA.to_arrow())
    formula, family, factors = EXACT[1]
    _assert_same_spec(_spec(formula, data, family, factors), _spec(formula, ROWS_DATA, family))
    expected = _message(lambda: _spec("count ~ a + (1|g)", ROWS_DATA, "binomial"))
    assert _message(lambda: _spec("count ~ a + (1|g)", data, "binomial")) == expected
    model = glmer("y ~ a + x + (1|g)", data, family="binomial")
    model.fit(**FIT)
    np.testing.assert_array_equal(_draws(model), _draws(polars_fit))


@pytest.mark.parametrize("engine", ["duckdb", "dask"])
def test_gaussian_cells_match_polars_to_rounding(
    engine: str, request: pytest.FixtureRequest
) -> None:
    formula = "score ~ a + scale(x) + (1|g)"
    ref = _spec(formula, ROWS_DATA, "gaussian")
    got = _spec(formula, _in_engine(engine, ROWS_DATA, request), "gaussian")
    keys = ["a", "x", "g", TRIALS, ROWS, CELL]
    assert got.cells.select(keys).equals(ref.cells.select(keys))
    for col in (Y, SS):
        np.testing.assert_allclose(got.cells[col], ref.cells[col], rtol=1e-12, atol=1e-12)
    assert got.obs.select(CELL, WEIGHT).equals(ref.obs.select(CELL, WEIGHT))
    np.testing.assert_allclose(got.X, ref.X, rtol=1e-12, atol=1e-12)


def test_missing_values_are_dropped_in_the_engine(duck: duckdb.DuckDBPyConnection) -> None:
    frame = ROWS_DATA.with_columns(
        pl.when(pl.int_range(pl.len()) % 40 == 3).then(None).otherwise(pl.col("x")).alias("x"),
        pl.when(pl.int_range(pl.len()) % 55 == 1)
        .then(np.nan)
        .otherwise(pl.col("level"))
        .alias("x2"),
    )
    formula = "y ~ a + x + x2 + (1|g)"
    with pytest.warns(UserWarning, match=r"Dropped 66 of 1500 rows .* \['y', 'a'") as ref_warning:
        ref = _spec(formula, frame, "binomial")
    with pytest.warns(UserWarning, match="Dropped 66 of 1500 rows") as got_warning:
        got = _spec(formula, duck.from_arrow(frame.to_arrow()), "binomial")
    assert str(got_warning[0].message) == str(ref_warning[0].message)
    _assert_same_spec(got, ref)


# ---------------------------------------------------------------------------------------------
# Errors: the same as from polars, before sampling


def _message(make: Callable[[], Any]) -> str:
    with pytest.raises(ValueError) as err:
        make()
    return str(err.value)


BAD = [
    ("y ~ a + age + (1|g)", "binomial", r"\['age'\] in the formula .* not in the data"),
    ("count ~ a + (1|g)", "binomial", r"Binomial outcome 'count' must be 0/1.*values \[0, 1, 2"),
    ("score ~ a + (1|g)", "poisson", "Poisson outcome 'score' has negative values"),
    ("cbind(trials, s - trials) ~ a + (1|g)", "binomial", r"Successes 'trials' exceed trials"),
    ("y ~ a + (1|a2)", "binomial", r"Grouping column 'a2' has a single level \(\['one'\]\)"),
]


@pytest.mark.parametrize("engine", ["duckdb", "dask"])
def test_bad_input_gets_the_polars_error(engine: str, request: pytest.FixtureRequest) -> None:
    frame = ROWS_DATA.with_columns(pl.lit("one").alias("a2"))
    data = _in_engine(engine, frame, request)
    for formula, family, pattern in BAD:
        expected = _message(lambda f=formula, fam=family: _spec(f, frame, fam))
        got = _message(lambda f=formula, fam=family: _spec(f, data, fam))
        assert got == expected
        with pytest.raises(ValueError, match=pattern):
            _spec(formula, data, family)
    all_missing = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("x"))
    with pytest.raises(ValueError, match="Every row has a missing value"):
        glmer("y ~ x + (1|g)", _in_engine(engine, all_missing, request), family="binomial").fit()


def test_unsupported_data_names_what_is_accepted() -> None:
    with pytest.raises(TypeError, match="data must be a polars DataFrame/LazyFrame, .* DuckDB"):
        glmer("y ~ x + (1|g)", {"y": [1, 0]}, family="binomial")
    assert ACCEPTED.startswith("a polars DataFrame/LazyFrame")


def test_columns_and_categorical_orders_are_read_without_a_query(
    duck: duckdb.DuckDBPyConnection,
) -> None:
    frame = ROWS_DATA.with_columns(pl.col("a").cast(pl.Enum(["mid", "lo", "hi"])))
    assert columns(duck.from_arrow(frame.to_arrow())) == frame.columns
    _, orders = lazy_frame(frame.to_pandas())
    assert orders == {"a": ["mid", "lo", "hi"]}
    spec = _spec("y ~ a + (1|g)", frame.to_pandas(), "binomial")
    assert spec.factors == {"a": ["mid", "lo", "hi"]}


# ---------------------------------------------------------------------------------------------
# Fits: the same seeded draws, and every verb works on the model


def _draws(model: Any) -> np.ndarray:
    return model.posterior["posterior"]["b"].values


@pytest.fixture(scope="module")
def polars_fit() -> Any:
    model = glmer("y ~ a + x + (1|g)", ROWS_DATA, family="binomial")
    model.fit(**FIT)
    return model


@pytest.mark.parametrize("engine", ["duckdb", "dask"])
def test_same_seeded_draws_as_polars(
    engine: str, polars_fit: Any, request: pytest.FixtureRequest
) -> None:
    model = glmer("y ~ a + x + (1|g)", _in_engine(engine, ROWS_DATA, request), family="binomial")
    model.fit(**FIT)
    np.testing.assert_array_equal(_draws(model), _draws(polars_fit))
    # per-observation answers come from the cells: no rows are needed for them
    assert model.loo().elpd == pytest.approx(polars_fit.loo().elpd, rel=1e-12)


def test_verbs_on_a_duckdb_model(
    duck: duckdb.DuckDBPyConnection, polars_fit: Any, tmp_path: Path
) -> None:
    model = glmer("y ~ a + x + (1|g)", duck.from_arrow(ROWS_DATA.to_arrow()), family="binomial")
    model.fit(**FIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = str(model.summary())
    assert "ELPD-LOO" in summary
    np.testing.assert_allclose(model.predict(), polars_fit.predict(), rtol=1e-12)
    table = model.ppc(random_seed=3)
    assert table.equals(polars_fit.ppc(random_seed=3))
    assert model.loo().pointwise.equals(polars_fit.loo().pointwise)
    # saved as its distinct observations, loaded without DuckDB
    model.save(tmp_path / "duck.bayesmer")
    loaded = load_model(tmp_path / "duck.bayesmer")
    assert loaded.spec.cells.equals(model.spec.cells)
    assert loaded.params.equals(model.params)


def test_high_k_warning_from_duckdb_counts_rows(duck: duckdb.DuckDBPyConnection) -> None:
    """A frame of another engine has no row order: the warning counts the rows instead."""
    rng = np.random.default_rng(3)
    data = pl.DataFrame(
        {"y": [*rng.poisson(3.0, 80).tolist(), 25], "f": ["a"] * 40 + ["b"] * 40 + ["c"]}
    )
    model = glm("y ~ f", duck.from_arrow(data.to_arrow()), family="poisson")
    model.fit(**FIT)
    with pytest.warns(UserWarning, match=r"Pareto k > 0\.7 for 1 of 81 .*f=c, y=25 \(k=.*; 1 row"):
        result = model.loo()
    assert result.observations.filter(pl.col("pareto_k") > 0.7)["rows"].to_list() == [1]

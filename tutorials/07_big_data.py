# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # From a billion rows to a posterior
#
# A model such as `y ~ a + b + (1|g)` has one probability per combination of its predictors:
# two levels of `a`, three of `b` and 1,000 groups make 6,000 **cells**, whether the data hold
# ten thousand rows or a billion. Rows that share a cell share their probability, so their
# Bernoulli likelihoods multiply to one binomial term in (successes, trials): the posterior from
# the cells is *exactly* the posterior from the rows (see `bayesmer.collapse`). Collapsing is a
# group-by with sums, the one thing every database and dataframe engine does well.
#
# bayesmer therefore leaves the data where they are. Give it a polars `LazyFrame`, a DuckDB
# relation, a Dask or PySpark DataFrame, an Ibis table (anything narwhals reads) and the checks
# of the data (missing values, a 0/1 outcome, the levels of each factor) and the collapse run as
# queries **in that engine**; only the cells come back. Reading Parquet, CSV or a warehouse
# table is the engine's job, done the engine's way.
#
# This notebook writes two million rows as Parquet files, reads them with polars, DuckDB and
# Dask, checks that all three hand back the same cells, fits the model once, and shows which
# answers stay the size of the cells and which are as long as the data.

# %%
import shutil
import tempfile
import time
from pathlib import Path

import dask.dataframe as dd
import duckdb
import numpy as np
import polars as pl

from bayesmer import glmer

pl.Config.set_tbl_cols(-1)
pl.Config.set_tbl_width_chars(120)
pl.Config.set_float_precision(3)

SEED = 2026

# %% [markdown]
# ## The data: Parquet files on disk
#
# Bernoulli outcomes `y`, a 2-level `a`, a 3-level `b` and 300 groups `g` with a group sd of
# 0.5 on the log-odds scale (1,800 cells); all integer columns, written in four files of half a
# million rows. (The benchmark in `benchmarks/big_data.py` does the same with 1,000 groups and
# 10^7 or 10^8 rows.)

# %%
ROWS, GROUPS = 2_000_000, 300
folder = Path(tempfile.mkdtemp(prefix="bayesmer-tutorial-"))
rng = np.random.default_rng(SEED)
u = rng.normal(0.0, 0.5, GROUPS)
for k in range(4):
    n = ROWS // 4
    a = rng.integers(0, 2, n, dtype=np.int8)
    b = rng.integers(0, 3, n, dtype=np.int8)
    g = rng.integers(0, GROUPS, n, dtype=np.int32)
    eta = -0.5 + 0.7 * a + np.array([0.0, -0.4, 0.6])[b] + u[g]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(np.int8)
    pl.DataFrame({"y": y, "a": a, "b": b, "g": g}).write_parquet(folder / f"part{k}.parquet")
print(sorted(p.name for p in folder.iterdir()))

# %% [markdown]
# ## Three engines, one model
#
# Each engine reads the files lazily: nothing is loaded yet.
#
# - polars: `pl.scan_parquet("data/*.parquet")`
# - DuckDB: `duckdb.sql("select * from read_parquet('data/*.parquet')")`, or any query over a
#   database table
# - Dask: `dd.read_parquet("data/")` (here on Dask's threads; on a cluster, start a
#   `distributed.Client` first and the group-by runs on its workers). narwhals, through which
#   bayesmer reads every engine, warns that its Dask support will move to a separate package.
#
# PySpark and Ibis work the same way (not run here, as a Spark session takes half a minute to
# start):
#
# ```python
# spark = SparkSession.builder.master("local[4]").getOrCreate()
# model = glmer("y ~ a + b + (1|g)", spark.read.parquet("data/"), family="binomial")
# model = glmer("y ~ a + b + (1|g)", ibis.read_parquet("data/*.parquet"), family="binomial")
# ```
#
# `model.spec` runs the checks and the collapse (`fit()` would do it on its way).

# %%
pattern = str(folder / "*.parquet")
sources = {
    "polars": pl.scan_parquet(pattern),
    "duckdb": duckdb.sql(f"select * from read_parquet('{pattern}')"),
    "dask": dd.read_parquet(str(folder)),
}
models = {}
for engine, data in sources.items():
    model = glmer("y ~ a + b + (1|g)", data, family="binomial")
    model.set_factors(["a", "b"])
    start = time.perf_counter()
    spec = model.spec
    seconds = time.perf_counter() - start
    models[engine] = model
    print(
        f"{engine:7s} {spec.n_obs:,} rows -> {len(spec.cells):,} cells in {seconds:.1f} s "
        f"({spec.n_obs / seconds:,.0f} rows/s)"
    )

# %% [markdown]
# The engines return their groups in any order; bayesmer labels and sorts them, so the cells are
# the same table from every engine, to the last count:

# %%
cells = {engine: m.spec.cells for engine, m in models.items()}
print(cells["polars"].head())
print("DuckDB cells equal polars':", cells["duckdb"].equals(cells["polars"]))
print("Dask cells equal polars':", cells["dask"].equals(cells["polars"]))

# %% [markdown]
# Bad data get the same errors wherever they live, before anything is compiled. Here `g` is
# used as an outcome by mistake:

# %%
try:
    glmer("g ~ a + (1|b)", sources["duckdb"], family="binomial").fit()
except ValueError as err:
    print(err)

# %% [markdown]
# ## One fit
#
# Identical cells make an identical model: with the same seed, the draws from DuckDB's cells
# are those from polars' cells. We fit the DuckDB model. Sampling sees 1,800 binomial cells,
# not two million rows.

# %%
model = models["duckdb"]
model.fit(random_seed=SEED, progressbar=False)
model.summary()

# %% [markdown]
# The group effects, one per group, come from the cells too:

# %%
model.plot_ranef()

# %% [markdown]
# ## Which answers are cell-sized, and which are row-sized
#
# `summary()` reports PSIS-LOO. A row's leave-one-out value depends only on its cell and its
# outcome, so LOO is computed once per **distinct observation** (at most two per cell for a 0/1
# outcome) and counted as often as it occurs: exactly the per-row LOO, at the cost of the cells.
# `loo().observations` lists them, with `rows`, how many data rows each one stands for:

# %%
res = model.loo()
print(res)
print(res.observations.head())
print(f"{len(res.observations):,} distinct observations stand for {res.n_obs:,} rows")

# %% [markdown]
# Everything the model estimates (fixed effects, group effects, `emmeans`, `predict` on new
# data) is about cells, so it stays small. So is `ppc()` with its built-in statistics: the
# mean, the variance, the share of zeros, the mean of each level are sums over the rows, and
# the replicated sums are drawn per cell (a cell of 0/1 rows replicates its successes as one
# Binomial(rows, p)), without reading the rows again. A few answers are per row by their
# nature: `loo().pointwise` (one LOO value per data row), `predict()` and `simulate()` for the
# fitted rows, `ppc()` with a statistic of your own (a function of every replicated row). They
# pull the used columns out of the engine when you ask for them, so ask only when you need
# rows: `res.observations` carries the same LOO values as `res.pointwise`, once per distinct
# observation. The posterior predictive check of the mean, the variance and the level means of
# `a` and `b` (the default would add one mean per group) reads nothing from DuckDB:

# %%
model.ppc(stat=["mean", "var", "a", "b"], random_seed=SEED)

# %% [markdown]
# How far does this go? `benchmarks/README.md` times the same model on 10^7 and 10^8 Parquet
# rows through polars, DuckDB and Dask: the collapse runs at tens of millions of rows per
# second, sampling costs the same for 10^8 rows as for 10^6 (the cells do not grow), and the
# memory stays bounded by the cells, not by the rows.

# %%
shutil.rmtree(folder)  # the Parquet files written above

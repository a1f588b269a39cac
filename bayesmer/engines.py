"""Data where it lives: every dataframe that narwhals supports, read as a lazy query.

bayesmer reads its data through `narwhals <https://narwhals-dev.github.io/narwhals/>`_, so
``data`` can be a polars DataFrame or LazyFrame, a pandas DataFrame, a pyarrow Table, a DuckDB
relation, a Dask DataFrame, a PySpark DataFrame or an Ibis table (and anything else narwhals
reads). Frames already in memory (pandas, pyarrow, eager polars) are handed to polars, which
reads them without a copy where it can; the others stay in their engine, which runs the
validation queries and the exact collapse (:mod:`bayesmer.collapse`) as lazy queries, so only
cell-sized results (thousands of rows, not billions) come back, always as polars DataFrames.

Reading Parquet, CSV or a database table is the engine's job: ``pl.scan_parquet(...)``,
``duckdb.sql("select * from 'data/*.parquet'")``, ``dd.read_parquet(...)``,
``spark.read.parquet(...)`` or ``ibis.read_parquet(...)`` give a frame bayesmer takes as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import narwhals as nw
import polars as pl
from narwhals.dependencies import is_pandas_dataframe

#: What ``data`` may be, for error messages.
ACCEPTED = (
    "a polars DataFrame/LazyFrame, a pandas DataFrame, a pyarrow Table, a DuckDB relation, a "
    "Dask DataFrame, a PySpark DataFrame, an Ibis table, or another frame narwhals supports"
)


def lazy_frame(data: Any) -> tuple[nw.LazyFrame, dict[str, list[str]]]:
    """``data`` as a narwhals LazyFrame, and the level order of its categorical columns.

    pandas frames are converted to polars (categorical orders kept, the index dropped), other
    in-memory frames (pyarrow, eager polars) read by polars; lazy frames of any engine are
    left where they are.

    Raises
    ------
    TypeError
        If narwhals does not support ``data``.
    """
    if is_pandas_dataframe(data):
        import pandas as pd  # loaded already: data is a pandas frame

        orders = {
            str(col): [str(c) for c in data[col].cat.categories]
            for col in data.columns
            if isinstance(data[col].dtype, pd.CategoricalDtype)
        }
        frame = pl.from_pandas(data.reset_index(drop=True))
        return nw.from_native(frame.lazy()), orders
    if isinstance(data, pl.DataFrame | pl.LazyFrame):
        lf = nw.from_native(data.lazy())
    else:
        native = _from_native(data)
        if isinstance(native, nw.DataFrame):  # pyarrow, modin, cudf...: polars reads it
            lf = nw.from_native(native.to_polars().lazy())
        else:
            lf = native
    orders = {
        col: [str(c) for c in dtype.categories]
        for col, dtype in schema_of(lf).items()
        if isinstance(dtype, pl.Enum)
    }
    return lf, orders


def _from_native(data: Any) -> nw.DataFrame | nw.LazyFrame:
    try:
        return nw.from_native(data)
    except TypeError:
        raise TypeError(f"data must be {ACCEPTED}; got {type(data).__name__}.") from None


def runs_in_polars(data: Any) -> bool:
    """Whether bayesmer reads ``data`` with polars (polars, pandas, pyarrow and other frames in
    memory), rather than querying its own engine (DuckDB, Dask, Spark, Ibis...)."""
    if is_pandas_dataframe(data) or isinstance(data, pl.DataFrame | pl.LazyFrame):
        return True
    return isinstance(_from_native(data), nw.DataFrame)


def is_polars(lf: nw.LazyFrame) -> bool:
    """Whether the query runs in polars (data given as polars, pandas or another in-memory
    frame)."""
    return lf.implementation is nw.Implementation.POLARS


def schema_of(lf: nw.LazyFrame) -> dict[str, pl.DataType]:
    """Column names and their types, as polars types (an engine's own types mapped by
    narwhals: DuckDB's DECIMAL to polars Decimal, Spark's LongType to Int64...)."""
    return dict(lf.collect_schema().to_polars())


def columns(data: Any) -> list[str]:
    """Column names of any accepted ``data`` (no query is run).

    Raises
    ------
    TypeError
        If narwhals does not support ``data``.
    """
    if is_pandas_dataframe(data) or isinstance(data, pl.DataFrame):
        return [str(c) for c in data.columns]
    if isinstance(data, pl.LazyFrame):
        return list(data.collect_schema())
    return list(_from_native(data).collect_schema())


def collect(lf: nw.LazyFrame, streaming: bool = False) -> pl.DataFrame:
    """Run a query whose result is small (statistics, cells) and return it as polars.

    polars runs it with its streaming engine when ``streaming`` (group-bys over data that
    need not fit in memory); other engines run it their own way. Decimal results (DuckDB sums
    integers into DECIMAL(38, 0)) become Int64 (whole numbers) or Float64.
    """
    if is_polars(lf):
        return lf.collect(engine="streaming").to_native() if streaming else lf.collect().to_native()
    out = lf.collect().to_polars()
    decimals = {c: d for c, d in out.schema.items() if isinstance(d, pl.Decimal)}
    return out.with_columns(
        pl.col(c).cast(pl.Int64 if d.scale == 0 else pl.Float64) for c, d in decimals.items()
    )


def polars_lazy(
    data: Any, needed: Sequence[str] | None = None
) -> tuple[pl.LazyFrame, dict[str, list[str]]]:
    """``data`` as a polars LazyFrame, for answers that are per row by nature, and the level
    order of its categorical columns.

    polars and in-memory frames are read lazily as they are; a frame of another engine has
    the ``needed`` columns that it holds (all when None) pulled into memory, in the order the
    engine returns the rows.
    """
    lf, orders = lazy_frame(data)
    if is_polars(lf):
        return lf.to_native(), orders
    if needed is not None:
        present = set(lf.collect_schema())
        lf = lf.select([c for c in dict.fromkeys(needed) if c in present])
    return collect(lf).lazy(), orders

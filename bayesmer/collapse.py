"""Exact data collapsing: rows with identical predictors become one cell.

The likelihood of a Bernoulli model is a product over rows; rows that share every predictor
value (fixed-effect columns and group ids) share the same probability, so their product is a
binomial likelihood in (successes, trials) up to a constant. Poisson counts with the same rate
per unit exposure sum to a Poisson count with the summed exposure. Gaussian rows sharing a mean
contribute through their number, their sum and their sum of squares around the cell's mean
(``_ss``). The posterior is therefore exactly the same while the likelihood has one term per
distinct predictor combination. The negative binomial and the beta-binomial have no such sums:
their likelihood runs over the distinct observations (``obs``), each with its multiplicity.

The group-bys run lazily where the data live: polars streams a ``LazyFrame`` (for example from
``pl.scan_parquet``) into the small collapsed tables without loading it whole, and DuckDB,
Dask, Spark or Ibis run them as queries of their own (see :mod:`bayesmer.engines`); only the
cells and the distinct observations come back, as polars DataFrames, in a canonical order (sorted
by the keys) whatever order the engine returns them in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import narwhals as nw
import polars as pl

from .engines import collect, is_polars

#: Columns bayesmer adds to the working frame before collapsing.
Y, TRIALS, EXPOSURE = "_y", "_n", "_e"
#: Within-cell sum of squares of a gaussian outcome around the cell's mean.
SS = "_ss"
CELL, ROWS, WEIGHT = "_cell", "_rows", "_weight"

#: Collapse only when it shrinks the data to at most this share of the rows (polars; other
#: engines always collapse, as their rows have no order to keep).
COLLAPSE_MAX_SHARE = 0.9

#: Type of ``pl.len()``: the row counts of the cells.
_LEN = pl.select(pl.len()).schema["len"]


@dataclass(frozen=True)
class Labels:
    """How the raw key columns of the data become the keys of the cells.

    Attributes
    ----------
    keys : list of str
        The cells' key columns.
    apply : callable
        Takes a polars DataFrame or LazyFrame holding the raw key columns and returns it with
        the ``keys`` added or replaced (factor levels as their labels, numeric columns as
        floats...). polars applies it to the rows before grouping; other engines group by the
        raw columns and it is applied, in polars, to the groups they return.
    """

    keys: list[str]
    apply: Callable[[Any], Any]


@dataclass(frozen=True)
class Collapsed:
    """The result of collapsing.

    Attributes
    ----------
    cells : pl.DataFrame
        One row per cell: the key columns, ``_y`` (summed successes, counts or values), ``_n``
        (summed trials; for a gaussian outcome the number of rows) or ``_e`` (summed exposure),
        ``_ss`` (gaussian only: the sum of squares of ``_y`` around the cell's mean), ``_rows``
        (original rows in the cell), ``_cell`` (0-based cell index). Sorted by the key
        columns.
    obs : pl.DataFrame
        Distinct original observations: ``_cell``, ``_y`` and ``_n`` or ``_e`` as in one row of
        the data, and ``_weight``, how many data rows are exactly that observation. Pointwise
        log-likelihoods (LOO) are computed per original row from this table.
    n_rows : int
        Rows in the (cleaned) data.
    collapsed : bool
        False when collapsing would not have helped (almost every row distinct); then each row
        is its own cell.
    """

    cells: pl.DataFrame
    obs: pl.DataFrame
    n_rows: int
    collapsed: bool


def collapse(
    lf: pl.LazyFrame | nw.LazyFrame,
    keys: list[str],
    size_col: str,
    spread: bool = False,
    labels: Labels | None = None,
) -> Collapsed:
    """Collapse rows with identical ``keys`` into cells.

    Parameters
    ----------
    lf : pl.LazyFrame or narwhals LazyFrame
        Clean data holding ``keys``, ``_y`` and ``size_col``, in polars or in any engine
        narwhals supports.
    keys : list of str
        Predictor and grouping columns; rows equal on all of them share a cell.
    size_col : {'_n', '_e'}
        Trials (binomial) or exposure (Poisson); summed within a cell.
    spread : bool, default False
        Also compute each cell's sum of squares around its mean (``_ss``, gaussian).
    labels : Labels, optional
        Turns ``keys`` into the cells' keys (see :class:`Labels`); the cells are keyed by
        ``keys`` themselves when None.

    Returns
    -------
    Collapsed
    """
    if size_col not in (TRIALS, EXPOSURE):
        raise ValueError(f"size_col must be {TRIALS!r} or {EXPOSURE!r}, got {size_col!r}")
    frame = lf if isinstance(lf, nw.LazyFrame) else nw.from_native(lf)
    labels = labels or Labels(list(keys), lambda f: f)
    if not keys:  # intercept-only model: one cell
        frame = frame.with_columns(nw.lit(0, dtype=nw.Int32).alias("_all"))
        inner = Labels([*labels.keys, "_all"], labels.apply)
        out = collapse(frame, ["_all"], size_col, spread, inner)
        return Collapsed(out.cells.drop("_all"), out.obs, out.n_rows, out.collapsed)
    if not is_polars(frame):
        return _collapse_engine(frame, keys, size_col, spread, labels)
    native = frame.to_native()
    schema = native.collect_schema()
    if _whole(schema[Y], schema[size_col]):
        # whole numbers: grouping the raw columns and labelling the groups gives exactly the
        # cells of labelling the rows first (sums of integers are exact), much faster
        out = _collapse_engine(frame, keys, size_col, spread, labels)
        if len(out.cells) <= COLLAPSE_MAX_SHARE * out.n_rows:
            return out
    native = labels.apply(native).select([*labels.keys, Y, size_col])
    return _collapse_polars(native, labels.keys, size_col, spread)


def _collapse_polars(lf: pl.LazyFrame, keys: list[str], size_col: str, spread: bool) -> Collapsed:
    """:func:`collapse` in polars (streaming), rows kept as they are when almost all differ."""
    sums = [pl.col(Y).sum(), pl.col(size_col).sum(), pl.len().alias(ROWS)]
    if spread:
        sums.append((pl.col(Y) - pl.col(Y).mean()).pow(2).sum().alias(SS))
    cells = lf.group_by(keys).agg(sums).sort(keys).collect(engine="streaming")
    extra = [SS] if spread else []
    n_rows = int(cells[ROWS].sum())
    if len(cells) > COLLAPSE_MAX_SHARE * n_rows:
        rows = lf.select([*keys, Y, size_col]).collect(engine="streaming")
        rows = rows.with_columns(pl.lit(1, dtype=pl.UInt32).alias(ROWS)).with_row_index(CELL)
        if spread:
            rows = rows.with_columns(pl.lit(0.0).alias(SS))
        obs = rows.select(CELL, Y, size_col, pl.lit(1, dtype=pl.UInt32).alias(WEIGHT))
        kept = [*keys, Y, size_col, *extra, ROWS, CELL]
        return Collapsed(rows.select(kept), obs, n_rows, False)

    cells = cells.with_row_index(CELL)
    obs_keys = [*keys, Y, size_col]
    obs = lf.group_by(obs_keys).agg(pl.len().alias(WEIGHT)).collect(engine="streaming")
    obs = obs.join(cells.select([*keys, CELL]), on=keys, how="left", nulls_equal=True)
    obs = obs.select(CELL, Y, size_col, WEIGHT).sort(CELL, Y, size_col)
    return Collapsed(cells.select([*keys, Y, size_col, *extra, ROWS, CELL]), obs, n_rows, True)


def _collapse_engine(
    lf: nw.LazyFrame, keys: list[str], size_col: str, spread: bool, labels: Labels
) -> Collapsed:
    """:func:`collapse` as queries in the data's own engine, grouping by the raw ``keys``;
    the groups are labelled in polars, merged where two raw keys get one label, and sorted.

    The within-cell sum of squares is the engine's population variance times the rows (its
    own accurate one-pass algorithm), so it may differ from polars' in the last bits.
    """
    schema = lf.collect_schema().to_polars()
    y_type = schema[Y]
    size_type = pl.Int64 if size_col == TRIALS else pl.Float64
    weights = None
    if _whole(y_type, schema[size_col]):  # one query: the cells are sums over the weights
        query = lf.group_by([*keys, Y, size_col]).agg(nw.len().alias(WEIGHT))
        weights = collect(query, streaming=True).with_columns(
            pl.col(Y).cast(y_type), pl.col(size_col).cast(size_type), pl.col(WEIGHT).cast(_LEN)
        )
        pre = _cells_from_weights(weights, keys, size_col)
    else:
        sums = [nw.col(Y).sum(), nw.col(size_col).sum(), nw.len().alias(ROWS)]
        if spread:
            sums.append(nw.col(Y).var(ddof=0).alias(SS))
        pre = collect(lf.group_by(keys).agg(sums), streaming=True)
        pre = pre.with_columns(
            pl.col(Y).cast(y_type), pl.col(size_col).cast(size_type), pl.col(ROWS).cast(_LEN)
        )
    if spread:
        pre = pre.with_columns(pl.col(SS).cast(pl.Float64).fill_null(0.0) * pl.col(ROWS))
    out_keys = labels.keys
    pre = labels.apply(pre)
    if pre.select(out_keys).is_duplicated().any():  # two raw keys, one label
        pre = _merge_cells(pre, out_keys, size_col, spread)
    extra = [SS] if spread else []
    cells = pre.select([*out_keys, Y, size_col, *extra, ROWS]).sort(out_keys)
    cells = cells.with_row_index(CELL)
    n_rows = int(cells[ROWS].sum())

    if weights is None:
        query = lf.group_by([*keys, Y, size_col]).agg(nw.len().alias(WEIGHT))
        weights = collect(query, streaming=True).with_columns(
            pl.col(Y).cast(y_type), pl.col(size_col).cast(size_type), pl.col(WEIGHT).cast(_LEN)
        )
    weights = labels.apply(weights)
    obs = weights.join(cells.select([*out_keys, CELL]), on=out_keys, how="left", nulls_equal=True)
    obs = obs.group_by(CELL, Y, size_col).agg(pl.col(WEIGHT).sum()).sort(CELL, Y, size_col)
    return Collapsed(cells.select([*out_keys, Y, size_col, *extra, ROWS, CELL]), obs, n_rows, True)


def _whole(y_type: pl.DataType, size_type: pl.DataType) -> bool:
    """Whether outcomes and sizes are whole numbers, whose sums are exact in any order."""
    return y_type.is_integer() and size_type.is_integer()


def _cells_from_weights(weights: pl.DataFrame, keys: list[str], size_col: str) -> pl.DataFrame:
    """Cells summed from the distinct observations and their weights (whole numbers only:
    the sums are exact, so they equal the sums over the rows)."""
    w = pl.col(WEIGHT)
    return weights.group_by(keys).agg(
        (pl.col(Y) * w).sum().alias(Y),
        (pl.col(size_col) * w).sum().alias(size_col),
        w.sum().cast(_LEN).alias(ROWS),
    )


def _merge_cells(pre: pl.DataFrame, keys: list[str], size_col: str, spread: bool) -> pl.DataFrame:
    """Merge groups that share their keys: sums added, sums of squares pooled around the
    merged cell's mean (``ss + n (mean - merged mean)^2``)."""
    sums = [pl.col(Y).sum(), pl.col(size_col).sum(), pl.col(ROWS).sum()]
    if spread:
        merged_mean = pl.col(Y).sum().over(keys) / pl.col(ROWS).sum().over(keys)
        pooled = pl.col(SS) + pl.col(ROWS) * (pl.col(Y) / pl.col(ROWS) - merged_mean).pow(2)
        pre = pre.with_columns(pooled.alias(SS))
        sums.append(pl.col(SS).sum())
    return pre.group_by(keys).agg(sums)

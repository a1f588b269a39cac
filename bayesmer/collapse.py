"""Exact data collapsing: rows with identical predictors become one cell.

The likelihood of a Bernoulli model is a product over rows; rows that share every predictor
value (fixed-effect columns and group ids) share the same probability, so their product is a
binomial likelihood in (successes, trials) up to a constant. Poisson counts with the same rate
per unit exposure sum to a Poisson count with the summed exposure. Gaussian rows sharing a mean
contribute through their number, their sum and their sum of squares around the cell's mean
(``_ss``). The posterior is therefore exactly the same while the likelihood has one term per
distinct predictor combination. The negative binomial and the beta-binomial have no such sums:
their likelihood runs over the distinct observations (``obs``), each with its multiplicity.

Everything here runs in polars, lazily, so a ``LazyFrame`` (for example from
``pl.scan_parquet``) is streamed into the small collapsed tables without being loaded whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

#: Columns bayesmer adds to the working frame before collapsing.
Y, TRIALS, EXPOSURE = "_y", "_n", "_e"
#: Within-cell sum of squares of a gaussian outcome around the cell's mean.
SS = "_ss"
CELL, ROWS, WEIGHT = "_cell", "_rows", "_weight"

#: Collapse only when it shrinks the data to at most this share of the rows.
COLLAPSE_MAX_SHARE = 0.9


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


def collapse(lf: pl.LazyFrame, keys: list[str], size_col: str, spread: bool = False) -> Collapsed:
    """Collapse rows with identical ``keys`` into cells.

    Parameters
    ----------
    lf : pl.LazyFrame
        Clean data holding ``keys``, ``_y`` and ``size_col``.
    keys : list of str
        Predictor and grouping columns; rows equal on all of them share a cell.
    size_col : {'_n', '_e'}
        Trials (binomial) or exposure (Poisson); summed within a cell.
    spread : bool, default False
        Also compute each cell's sum of squares around its mean (``_ss``, gaussian).

    Returns
    -------
    Collapsed
    """
    if size_col not in (TRIALS, EXPOSURE):
        raise ValueError(f"size_col must be {TRIALS!r} or {EXPOSURE!r}, got {size_col!r}")
    if not keys:  # intercept-only model: one cell
        lf = lf.with_columns(pl.lit(0, dtype=pl.UInt8).alias("_all"))
        out = collapse(lf, ["_all"], size_col, spread)
        return Collapsed(out.cells.drop("_all"), out.obs, out.n_rows, out.collapsed)
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

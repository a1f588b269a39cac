"""The data's rows mapped to the fitted cells, and the posterior draws read once for them.

The fit runs on collapsed cells (see :mod:`bayesmer.collapse`), but cross-validation and
predictive checks are about the *original* observations, so :func:`row_table` maps every row
of the data back to its cell and to its distinct observation; :mod:`bayesmer.loo`,
:mod:`bayesmer.ppc`, :mod:`bayesmer.predict` and :mod:`bayesmer.kfold` work per row from it.
:class:`Draws` reads the draws the linear predictor needs once, and :func:`blocks` splits the
rows (or draws) so that a (draws x rows) block stays under :data:`BLOCK_VALUES` floats.

Rows are numbered from 0 in the data given to the model (``row``), counting the rows dropped for
missing values, so ``row`` indexes the user's own data frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from .collapse import CELL, ROWS, WEIGHT, Y
from .draws import (
    GroupRows,
    dispersion,
    fixed,
    group_cor,
    group_effects,
    group_sd,
    linear_predictor,
    new_effects,
    random_variance,
)
from .spec import ModelSpec, level_expr, outcome_exprs, to_lazy, with_group_columns

if TYPE_CHECKING:
    import xarray as xr

    from .models import Model

#: Largest number of floats held at once in a (draws x observations) block.
BLOCK_VALUES = 2_000_000

#: Values per block of :func:`cell_eta` (1 MB of floats): a block and its temporaries stay
#: in a core's cache and are reused from the heap; blocks of 16 MB took twice as long (cache
#: misses, and fresh pages faulted in for every temporary).
CELL_BLOCK_VALUES = 2**17

#: Blocks of :func:`cell_eta` per block of :func:`cell_blocks` (one copy of their levels'
#: effects serves them all).
OUTER_BLOCKS = 8

#: Columns :func:`row_table` adds: the 0-based row number in the data and the index into
#: ``spec.obs`` of the row's distinct observation.
ROW_NUMBER, OBS_INDEX = "_row", "_obs"


# ---------------------------------------------------------------------------------------------
# Rows of the data, mapped to the fitted cells


def _size_name(spec: ModelSpec) -> str:
    return {"trials": "trials", "exposure": "exposure", "rows": "n"}[spec.family.size_kind]


def _outcome_exprs(spec: ModelSpec, schema: dict[str, pl.DataType]) -> list[pl.Expr]:
    """Expressions giving each row's outcome (``_y``) and trials or exposure, as the fit did."""
    return outcome_exprs(spec.formula, spec.family, schema, spec.response_levels)


def predictor_exprs(
    spec: ModelSpec, schema: dict[str, pl.DataType], columns: Sequence[str]
) -> list[pl.Expr]:
    """Factor and group columns as their level labels, numeric predictors as Float64."""
    level_cols = {*spec.factors, *(g.name for g in spec.groups)}
    exprs = []
    for c in columns:
        if c in level_cols:
            exprs.append(level_expr(c, schema[c]))
        else:
            exprs.append(pl.col(c).cast(pl.Float64))
    return exprs


def cell_keys(spec: ModelSpec) -> list[str]:
    """Columns that define a cell (as in :func:`bayesmer.spec.build_spec`)."""
    parsed = spec.formula
    return list(dict.fromkeys([*parsed.fixed_variables, *parsed.random_variables, *parsed.groups]))


def not_missing(columns: Sequence[str], schema: dict[str, pl.DataType]) -> pl.Expr:
    conds = [pl.col(c).is_not_null() for c in columns]
    conds += [pl.col(c).is_not_nan() for c in columns if schema[c].is_float()]
    return pl.all_horizontal(conds)


def row_table(model: Model, observations: Sequence[int] | None = None) -> pl.DataFrame:
    """Every row used by the fit, in data order, with its cell and distinct observation.

    Parameters
    ----------
    model : Model
    observations : sequence of int, optional
        Only the rows that are these distinct observations (indices into ``spec.obs``): a
        streamed query that holds no more than those rows, however big the data.

    Returns
    -------
    pl.DataFrame
        ``_row`` (0-based row number in ``model.data``; for a frame of another engine, in the
        order it returns the rows), the cell key columns (factor levels as strings), ``_y``,
        ``_n`` or ``_e``, ``_cell`` (index into ``spec.cells``) and ``_obs`` (index into
        ``spec.obs``).

    Raises
    ------
    RuntimeError
        If the data no longer match the fitted cells (the data frame was changed after the
        model was built).
    """
    spec = model.spec
    lf, _ = to_lazy(model.data, spec.formula.columns)
    schema = dict(lf.collect_schema())
    cols = spec.formula.columns
    keys = cell_keys(spec)
    size_col = spec.size_col
    used, schema = with_group_columns(
        lf.with_row_index(ROW_NUMBER).select(ROW_NUMBER, *cols).filter(not_missing(cols, schema)),
        spec.formula,
        schema,
    )
    rows = used.select(
        pl.col(ROW_NUMBER).cast(pl.Int64),
        *predictor_exprs(spec, schema, keys),
        *_outcome_exprs(spec, schema),
    )
    cell_dtype = spec.cells.schema[CELL]
    if not spec.collapsed:
        rows = rows.with_columns(pl.int_range(pl.len(), dtype=cell_dtype).alias(CELL))
    elif keys:
        cells = spec.cells.lazy().select(*keys, CELL)
        rows = rows.join(cells, on=keys, how="left", maintain_order="left")
    else:
        rows = rows.with_columns(pl.lit(0, dtype=cell_dtype).alias(CELL))
    obs = spec.obs.with_row_index(OBS_INDEX).select(OBS_INDEX, CELL, Y, size_col)
    rows = rows.join(obs.lazy(), on=[CELL, Y, size_col], how="left", maintain_order="left")
    if observations is not None:
        wanted = pl.lit(pl.Series(list(observations), dtype=obs.schema[OBS_INDEX])).implode()
        rows = rows.filter(pl.col(OBS_INDEX).is_in(wanted)).collect(engine="streaming")
        counts = rows.group_by(OBS_INDEX).len().sort(OBS_INDEX)
        expected = spec.obs[WEIGHT].gather(counts[OBS_INDEX]).to_numpy()
        if len(counts) != len(set(observations)) or (counts["len"].to_numpy() != expected).any():
            raise _changed()
        return rows.sort(ROW_NUMBER)
    rows = rows.collect(engine="streaming")
    check = rows.group_by(CELL).agg(pl.len().alias(ROWS), pl.col(Y).sum()).sort(CELL)
    expected = spec.cells.select(CELL, ROWS, Y).sort(CELL)
    if (
        rows[OBS_INDEX].null_count()
        or len(check) != len(expected)
        or not (check[ROWS].to_numpy() == expected[ROWS].to_numpy()).all()
        or not _same_sums(check[Y].to_numpy(), expected[Y].to_numpy())
    ):
        raise _changed()
    return rows


def _changed() -> RuntimeError:
    return RuntimeError(
        "The model's data no longer match the cells it was fitted to (was the data frame "
        "changed after the model was built?); refit the model."
    )


def _same_sums(rows: np.ndarray, cells: np.ndarray) -> bool:
    """Whether the outcomes summed per cell from the rows are the cells' sums: exactly for
    counts, to rounding for gaussian outcomes (summed in another order, or by another engine)."""
    if rows.dtype.kind == "f":
        return bool(np.allclose(rows, cells, rtol=1e-9, atol=1e-9))
    return bool((rows == cells).all())


def public_names(spec: ModelSpec) -> tuple[str, str, str]:
    """User-facing names of the row number, outcome and trials/exposure columns.

    ``row``, the response column and ``trials``/``exposure``, dot-prefixed in the unlikely
    case that a predictor already has that name.
    """
    taken = set(cell_keys(spec))
    row_name = free_name("row", taken)
    y_name = free_name(spec.formula.response.column, taken)
    return row_name, y_name, free_name(_size_name(spec), taken)


def public_rows(spec: ModelSpec, rows: pl.DataFrame) -> pl.DataFrame:
    """Rename the internal columns of :func:`row_table` for users and drop the indices."""
    row_name, y_name, size_name = public_names(spec)
    return rows.select(
        pl.col(ROW_NUMBER).alias(row_name),
        *cell_keys(spec),
        pl.col(Y).alias(y_name),
        pl.col(spec.size_col).alias(size_name),
    )


def free_name(name: str, taken: set[str]) -> str:
    while name in taken:
        name = "." + name
    taken.add(name)
    return name


# ---------------------------------------------------------------------------------------------
# Posterior draws, read once


@dataclass(frozen=True)
class Draws:
    """The draws needed for the linear predictor, read once: (S, p) and (S, levels) arrays
    ((S, levels, terms) for a factor with slopes; ``cor`` holds its (S, terms, terms)
    correlation matrices)."""

    b: np.ndarray
    u: dict[str, np.ndarray]
    sd: dict[str, np.ndarray]
    n_chains: int
    cor: dict[str, np.ndarray] = field(default_factory=dict)
    #: Draws of the dispersion parameter (sigma, size, phi), (S,); None if the family has none.
    dispersion: np.ndarray | None = None

    @classmethod
    def read(cls, spec: ModelSpec, trace: xr.DataTree) -> Draws:
        n_chains = trace["posterior"].sizes["chain"]
        u = {g.name: group_effects(trace, g) for g in spec.groups}
        sd = {g.name: group_sd(trace, g) for g in spec.groups}
        cor = {g.name: group_cor(trace, g) for g in spec.groups if g.slopes}
        return cls(fixed(trace), u, sd, n_chains, cor, dispersion(trace, spec))

    @property
    def n(self) -> int:
        return self.b.shape[0]

    def eta(
        self,
        X: np.ndarray,
        groups: dict[str, GroupRows] | None = None,
        draws: slice | np.ndarray = slice(None),
    ) -> np.ndarray:
        """Linear predictor (without offset), shape (draws, rows)."""
        u = {name: self.u[name][draws] for name in groups or {}}
        return linear_predictor(self.b[draws], X, u, groups or {})

    def random_sd(
        self, spec: ModelSpec, Z: dict[str, np.ndarray | None], draws: slice | np.ndarray
    ) -> np.ndarray:
        """sd of the summed effects of new levels of every factor: (draws, 1) or (draws, rows).

        ``Z`` holds each factor's random design of the rows (None for a random intercept).
        """
        variance = sum(
            random_variance(
                self.sd[g.name][draws],
                self.cor[g.name][draws] if g.slopes else None,
                Z[g.name],
            )
            for g in spec.groups
        )
        return np.sqrt(variance)

    def new_levels(
        self, spec: ModelSpec, rng: np.random.Generator, draws: slice | np.ndarray = slice(None)
    ) -> dict[str, np.ndarray]:
        """Fresh effects for every level of every factor, drawn in the order of
        ``spec.groups`` (see :func:`bayesmer.draws.new_effects`)."""
        return {
            g.name: new_effects(
                self.sd[g.name][draws],
                self.cor[g.name][draws] if g.slopes else None,
                len(g.levels),
                rng,
            )
            for g in spec.groups
        }


def blocks(n: int, width: int, limit: int | None = None) -> Iterator[slice]:
    """Slices of ``range(n)`` such that a block times ``width`` stays under ``limit`` values
    (default :data:`BLOCK_VALUES`)."""
    step = max(1, (BLOCK_VALUES if limit is None else limit) // max(1, width))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def cell_blocks(spec: ModelSpec, width: int, cells: np.ndarray | None = None) -> list[np.ndarray]:
    """Items in blocks of ``OUTER_BLOCKS * CELL_BLOCK_VALUES`` values, each block an array
    of item indices, ordered by the level of their cell in the grouping factor with the most
    levels.

    A block's group effects then lie in a few nearby columns of the (draws, levels) draws:
    :func:`cell_eta` copies those columns once and reads them from the cache. Results
    written back at the blocks' indices come out in the items' own order.

    Parameters
    ----------
    spec : ModelSpec
    width : int
        Values per item (draws), as for :func:`blocks`.
    cells : np.ndarray, optional
        The fitted cell of each item (e.g. of each distinct observation); by default the
        items are the fitted cells themselves.
    """
    if cells is None:
        cells = np.arange(spec.X.shape[0])
    n = len(cells)
    limit = OUTER_BLOCKS * CELL_BLOCK_VALUES
    if not spec.groups:
        return [np.arange(n)[block] for block in blocks(n, width, limit)]
    largest = max(spec.groups, key=lambda g: len(g.levels))
    order = np.argsort(largest.index[cells], kind="stable")
    return [order[block] for block in blocks(n, width, limit)]


def cell_eta(
    spec: ModelSpec, draws: Draws, cells: np.ndarray
) -> Iterator[tuple[slice, np.ndarray]]:
    """Linear predictor of some fitted cells (a block of :func:`cell_blocks`), in blocks of
    :data:`CELL_BLOCK_VALUES` values: ``(slice of cells, eta of shape (draws, block))``.

    A factor whose levels in ``cells`` span under half of its levels has those levels'
    effects copied once, contiguous, and the blocks gather from that copy (the full draws'
    rows are far apart: gathering a few columns from each costs a cache miss per draw).
    The numbers are those of :meth:`Draws.eta` (:func:`bayesmer.draws.linear_predictor`).
    """
    groups = spec.group_rows(cells)
    u = {}
    for name, (index, Z) in groups.items():
        effects = draws.u[name]
        lo, hi = (int(index.min()), int(index.max()) + 1) if len(index) else (0, 0)
        if hi - lo < effects.shape[1] // 2:
            effects = np.ascontiguousarray(effects[:, lo:hi])
            groups[name] = (index - lo, Z)
        u[name] = effects
    for block in blocks(len(cells), draws.n, CELL_BLOCK_VALUES):
        rows = {
            name: (index[block], None if Z is None else Z[block])
            for name, (index, Z) in groups.items()
        }
        yield block, linear_predictor(draws.b, spec.X[cells[block]], u, rows)

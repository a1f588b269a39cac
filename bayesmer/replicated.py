"""The built-in statistics of :func:`bayesmer.ppc.ppc`, replicated per cell: memory bounded
by the cells, not the rows.

Every built-in statistic (``mean``, ``var``, ``sd``, ``zeros``, ``max``, ``min``, the mean
of each level of a factor or grouping column, the sd of those level means) is a function of a
few sums over the rows: the outcome summed per cell, the summed squares, the number of zeros,
the largest and the smallest outcome. None depends on the rows' order, and rows that share
their cell and their trials or exposure have independent replicated outcomes from one
distribution, so the replicated sums are drawn from ``spec.cells`` and ``spec.obs`` (the
distinct observations with their multiplicities) without reading the data again:

- exactly per cell where the family allows it (:data:`EXACT`): Bernoulli rows (binomial, one
  trial each), a cell's successes are Binomial(rows, p) and every statistic of 0/1 rows follows
  from them (the sum of squares is the sum, the zeros are the failures, the maximum is 1 if any
  row succeeds...); gaussian rows, a cell's mean is Normal(mu, sigma / sqrt(rows)) and its sum
  of squares around its mean sigma^2 chi2(rows - 1), independently (mean, ``var``, ``sd``,
  level means); Poisson rows, a cell's total is Poisson(rate x summed exposure), binomial rows
  with trials, Binomial(summed trials, p) (mean, level means); and for both the zeros among a
  cell's rows of equal exposure (trials) are Binomial(rows, P(y = 0)), drawn apart from the
  totals. Each statistic then has exactly the distribution of per-row replication, though
  the zeros and the mean of one replicated data set do not come from the same rows.
- otherwise (the negative binomial, the beta-binomial, and the statistics without an exact
  form, such as the variance of counts or the extremes of a gaussian outcome) streamed: the
  rows are generated in blocks of at most :data:`bayesmer.rows.BLOCK_VALUES` outcomes (draws x
  rows) from the distinct (cell, trials or exposure) pairs and their row counts, replicated as
  single observations, and every sum is accumulated per draw from the same replicated rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from . import rows as rows_module
from .collapse import CELL, ROWS, TRIALS, WEIGHT, Y
from .draws import linear_predictor
from .emmeans import marginal_link
from .rows import Draws, blocks
from .spec import ModelSpec

#: What each built-in statistic is computed from: the summed outcome (per cell), the summed
#: squares, the zeros, the maximum or the minimum.
NEEDS = {
    "mean": "sum",
    "level": "sum",
    "spread": "sum",
    "var": "squares",
    "sd": "squares",
    "zeros": "zeros",
    "max": "max",
    "min": "min",
}

#: The sums drawn exactly per cell, by kind of outcome (see :func:`exact_kind`).
EXACT = {
    "bernoulli": {"sum", "squares", "zeros", "max", "min"},
    "gaussian": {"sum", "squares"},
    "poisson": {"sum", "zeros"},
    "binomial": {"sum", "zeros"},
}


@dataclass(frozen=True)
class Builtin:
    """A built-in statistic of :func:`bayesmer.ppc.ppc`.

    Attributes
    ----------
    kind : str
        ``'mean'``, ``'var'``, ``'sd'``, ``'zeros'``, ``'max'``, ``'min'``, ``'level'`` (the
        mean outcome of one level of ``column``) or ``'spread'`` (the sd, ddof=1, of the mean
        outcomes of the levels of ``column``).
    column : str or None
        The factor or grouping column of ``'level'`` and ``'spread'``.
    level : str or None
        The level of ``'level'``.
    """

    kind: str
    column: str | None = None
    level: str | None = None


def exact_kind(spec: ModelSpec) -> str | None:
    """``'bernoulli'``, ``'binomial'`` (with trials), ``'gaussian'`` or ``'poisson'``: the
    outcomes with exact per-cell forms (:data:`EXACT`); None for the others."""
    name = spec.family.name
    if name == "binomial":
        return "bernoulli" if spec.obs[TRIALS].max() == 1 else "binomial"
    return name if name in ("gaussian", "poisson") else None


def cell_levels(spec: ModelSpec, column: str) -> tuple[list[str], np.ndarray]:
    """The levels of a factor or grouping column, and each cell's level index."""
    for g in spec.groups:
        if g.name == column:
            return list(g.levels), np.asarray(g.index, dtype=np.int64)
    levels = list(spec.factors[column])
    index = spec.cells[column].cast(pl.String).replace_strict(levels, range(len(levels)))
    return levels, index.to_numpy().astype(np.int64)


def level_denominators(spec: ModelSpec, index: np.ndarray, n_levels: int) -> np.ndarray:
    """Per level, what its mean divides by: its trials (binomial, beta-binomial) or rows."""
    kind = TRIALS if spec.family.size_kind == "trials" else ROWS
    weights = spec.cells[kind].to_numpy().astype(float)
    return np.bincount(index, weights, n_levels)


def cell_means(
    spec: ModelSpec,
    draws: Draws,
    cells: np.ndarray,
    sel: slice | np.ndarray,
    re: str = "groups",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Success probability, rate per unit exposure or mean (gaussian) per cell and draw.

    ``re`` says which group effects enter (see :func:`bayesmer.ppc.simulate`); ``'new'``
    draws them afresh from N(0, sd), one set per draw of ``sel``, shared by the cells of a
    level.
    """
    X = spec.X[cells]
    if re == "groups":
        return spec.family.inverse_link(draws.eta(X, spec.group_rows(cells), sel))
    eta = draws.eta(X, {}, sel)
    if re == "marginal" and spec.groups:
        Z = {name: z for name, (_, z) in spec.group_rows(cells).items()}
        sigma = draws.random_sd(spec, Z, sel)
        return spec.family.inverse_link(marginal_link(spec.family, eta, sigma))
    if re == "new":
        u = draws.new_levels(spec, rng, sel)
        eta = linear_predictor(draws.b[sel], X, u, spec.group_rows(cells))
    return spec.family.inverse_link(eta)


class Sums:
    """Sums over the rows of ``n`` data sets (replicated, or the one observed).

    ``dev`` and ``squares`` are the sums of ``y - ref`` and ``(y - ref)^2`` (``ref`` is the
    observed mean outcome per row, so the variance loses no precision to cancellation);
    ``levels`` holds, per column, the outcome summed per level, shape (levels, n).
    """

    def __init__(self, n: int, level_index: dict[str, np.ndarray], n_levels: dict[str, int]):
        self.dev = np.zeros(n)
        self.squares = np.zeros(n)
        self.zeros = np.zeros(n)
        self.max = np.full(n, -np.inf)
        self.min = np.full(n, np.inf)
        self.level_index = level_index
        self.levels = {col: np.zeros((n_levels[col], n)) for col in level_index}

    def add_cells(
        self, sel: slice, cells: np.ndarray, totals: np.ndarray, rows: np.ndarray, ref: float
    ) -> None:
        """Add outcomes summed per cell, ``totals`` (data sets ``sel`` x ``cells``), of
        ``rows`` rows each."""
        self.dev[sel] += totals.sum(axis=1) - ref * rows.sum()
        for col, index in self.level_index.items():
            level = index[cells]
            order = np.argsort(level, kind="stable")
            level = level[order]
            first = np.flatnonzero(np.r_[True, level[1:] != level[:-1]])
            per_level = np.add.reduceat(totals[:, order], first, axis=1)
            self.levels[col][level[first], sel] += per_level.T


@dataclass(frozen=True)
class Layout:
    """What the statistics need from the cells: rows and outcome denominators, the level
    index of each cell per column, the observed mean outcome per row (``ref``)."""

    n_rows: float
    denominator: float
    level_index: dict[str, np.ndarray]
    level_denominators: dict[str, np.ndarray]
    levels: dict[str, list[str]]
    ref: float

    @classmethod
    def of(cls, spec: ModelSpec, columns: list[str]) -> Layout:
        n_rows = float(spec.cells[ROWS].sum())
        trials = spec.family.size_kind == "trials"
        denominator = float(spec.cells[TRIALS].sum()) if trials else n_rows
        index, denoms, levels = {}, {}, {}
        for col in dict.fromkeys(columns):
            levels[col], index[col] = cell_levels(spec, col)
            denoms[col] = level_denominators(spec, index[col], len(levels[col]))
        ref = float(spec.cells[Y].sum()) / n_rows
        return cls(n_rows, denominator, index, denoms, levels, ref)

    def sums(self, n: int) -> Sums:
        return Sums(n, self.level_index, {col: len(v) for col, v in self.levels.items()})

    def value(self, stat: Builtin, sums: Sums) -> np.ndarray:
        """The statistic of each data set in ``sums``."""
        n = self.n_rows
        if stat.kind == "mean":
            return (sums.dev + n * self.ref) / self.denominator
        if stat.kind in ("var", "sd"):
            var = (sums.squares - sums.dev**2 / n) / (n - 1)
            return var if stat.kind == "var" else np.sqrt(np.maximum(var, 0.0))
        if stat.kind == "zeros":
            return sums.zeros / n
        if stat.kind == "max":
            return sums.max
        if stat.kind == "min":
            return sums.min
        denoms = self.level_denominators[stat.column]
        if stat.kind == "level":
            i = self.levels[stat.column].index(stat.level)
            return sums.levels[stat.column][i] / denoms[i]
        present = denoms > 0
        means = sums.levels[stat.column][present] / denoms[present, None]
        return means.std(axis=0, ddof=1)


def observed(spec: ModelSpec, layout: Layout) -> Sums:
    """The sums of the observed data, from the distinct observations and their counts."""
    obs = spec.obs
    y = obs[Y].to_numpy().astype(float)
    w = obs[WEIGHT].to_numpy().astype(float)
    cell = obs[CELL].to_numpy().astype(np.int64)
    n_cells = spec.cells.height
    out = layout.sums(1)
    totals = np.bincount(cell, w * y, n_cells)
    out.add_cells(slice(0, 1), np.arange(n_cells), totals[None], spec.rows, layout.ref)
    out.squares[0] = np.sum(w * (y - layout.ref) ** 2)
    out.zeros[0] = w[y == 0].sum()
    out.max[0], out.min[0] = y.max(), y.min()
    return out


def replicated(
    spec: ModelSpec,
    draws: Draws,
    layout: Layout,
    needs: set[str],
    rng: np.random.Generator,
    exact: bool = True,
) -> Sums:
    """The sums of one replicated data set per draw: per cell when the family has exact
    forms for all of ``needs`` (and ``exact``), else streamed from the rows."""
    kind = exact_kind(spec)
    out = layout.sums(draws.n)
    if exact and kind is not None and needs <= EXACT[kind]:
        _per_cell(spec, draws, layout, needs, kind, rng, out)
    else:
        _streamed(spec, draws, layout, needs, rng, out)
    return out


def _chunk(n: int) -> int:
    """Cells or rows per block: a block of draws x this many stays under BLOCK_VALUES."""
    return max(1, min(n, rows_module.BLOCK_VALUES // 32))


def _per_cell(
    spec: ModelSpec,
    draws: Draws,
    layout: Layout,
    needs: set[str],
    kind: str,
    rng: np.random.Generator,
    out: Sums,
) -> None:
    n_cells = spec.cells.height
    rows = spec.rows.astype(np.int64)
    size = spec.cells[spec.size_col].to_numpy()
    ref = layout.ref
    width = _chunk(n_cells)
    for sel in blocks(draws.n, width):
        for start in range(0, n_cells, width):
            cells = np.arange(start, min(n_cells, start + width))
            mu = cell_means(spec, draws, cells, sel)
            n = rows[cells]
            if kind == "gaussian":
                sigma = draws.dispersion[sel, None]
                m = rng.normal(mu, sigma / np.sqrt(n))
                out.add_cells(sel, cells, n * m, n, ref)
                if "squares" in needs:  # sigma^2 chi2(n - 1), 0 for a cell of one row
                    within = sigma**2 * rng.gamma((n - 1) / 2.0, 2.0, size=m.shape)
                    out.squares[sel] += (within + n * (m - ref) ** 2).sum(axis=1)
                continue
            if kind == "poisson":
                totals = rng.poisson(mu * size[cells])
            else:  # binomial: successes out of the cell's trials (its rows for Bernoulli)
                totals = rng.binomial(size[cells].astype(np.int64), np.clip(mu, 0.0, 1.0))
            out.add_cells(sel, cells, totals, n, ref)
            if kind != "bernoulli":
                continue
            if "squares" in needs:  # y^2 = y for 0/1 rows
                squares = totals * (1.0 - ref) ** 2 + (n - totals) * ref**2
                out.squares[sel] += squares.sum(axis=1)
            if "zeros" in needs:
                out.zeros[sel] += (n - totals).sum(axis=1)
            if "max" in needs:
                out.max[sel] = np.maximum(out.max[sel], (totals > 0).max(axis=1))
            if "min" in needs:
                out.min[sel] = np.minimum(out.min[sel], (totals == n).min(axis=1))
        if "zeros" in needs and kind in ("poisson", "binomial"):
            _zeros(spec, draws, sel, rng, out)


def _size_groups(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (cell, trials or exposure) pairs of the rows, sorted by cell, and how many
    rows each has."""
    size_col = spec.size_col
    groups = (
        spec.obs.group_by(CELL, size_col)
        .agg(pl.col(WEIGHT).sum().cast(pl.Int64))
        .sort(CELL, size_col)
    )
    return (
        groups[CELL].to_numpy().astype(np.int64),
        groups[size_col].to_numpy(),
        groups[WEIGHT].to_numpy(),
    )


def _zeros(spec: ModelSpec, draws: Draws, sel: slice, rng: np.random.Generator, out: Sums) -> None:
    """Zeros of Poisson or binomial rows: Binomial(rows, P(y = 0)) per (cell, exposure or
    trials)."""
    cell, size, count = _size_groups(spec)
    width = _chunk(len(cell))
    for start in range(0, len(cell), width):
        part = slice(start, start + width)
        cells, inverse = np.unique(cell[part], return_inverse=True)
        mu = cell_means(spec, draws, cells, sel)[:, inverse]
        if spec.family.size_kind == "exposure":
            p0 = np.exp(-mu * size[part])
        else:
            p0 = (1.0 - np.clip(mu, 0.0, 1.0)) ** size[part]
        out.zeros[sel] += rng.binomial(count[part], p0).sum(axis=1)


def _streamed(
    spec: ModelSpec,
    draws: Draws,
    layout: Layout,
    needs: set[str],
    rng: np.random.Generator,
    out: Sums,
) -> None:
    """Replicate the rows in blocks (rows of a cell and exposure or trials are
    interchangeable) and accumulate the sums draw by draw."""
    cell, size, count = _size_groups(spec)
    ends = np.cumsum(count)
    n_rows = int(ends[-1])
    ref = layout.ref
    width = _chunk(n_rows)
    for sel in blocks(draws.n, width):
        dispersion = None if draws.dispersion is None else draws.dispersion[sel]
        for start in range(0, n_rows, width):
            group = np.searchsorted(ends, np.arange(start, min(n_rows, start + width)), "right")
            cells, first, inverse = np.unique(cell[group], return_index=True, return_inverse=True)
            mu = cell_means(spec, draws, cells, sel)[:, inverse]
            y = spec.family.replicate(rng, mu, size[group], dispersion)
            totals = np.add.reduceat(y, first, axis=1).astype(float)
            out.add_cells(sel, cells, totals, np.diff(np.append(first, len(group))), ref)
            if "squares" in needs:
                dev = y - ref
                out.squares[sel] += np.square(dev, out=dev).sum(axis=1)
            if "zeros" in needs:
                out.zeros[sel] += (y == 0).sum(axis=1)
            if "max" in needs:
                out.max[sel] = np.maximum(out.max[sel], y.max(axis=1))
            if "min" in needs:
                out.min[sel] = np.minimum(out.min[sel], y.min(axis=1))

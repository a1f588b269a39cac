"""Formula + data -> a model specification.

:class:`ModelSpec` is everything downstream needs: the collapsed cells, the design matrix and
its term names, group indices, the family, the priors. The PyMC model is built from it
(:mod:`bayesmer.pymc_model`) and every summary works on it plus the posterior draws.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import narwhals as nw
import numpy as np
import polars as pl

from .collapse import CELL, EXPOSURE, ROWS, SS, TRIALS, WEIGHT, Collapsed, Labels, Y, collapse
from .design import main_effect_columns, main_effects
from .diagnostics import PACKAGE_DIR
from .engines import collect, lazy_frame, polars_lazy, schema_of
from .families import Family
from .formula import ParsedFormula, RandomPart
from .priors import Prior, resolve_priors
from .transforms import column_name, relabel

if TYPE_CHECKING:
    import pandas as pd

#: Information (approximate Fisher information about a group's mean on the link scale, from the
#: observed data) at or above which a group's effect may be sampled centred. A level is centred
#: when its data are informative both absolutely (this bound) and relative to the spread of
#: the groups (information x a low estimate of the between-group variance >= 1: the data pin the
#: level's mean down better than the population distribution does), and the groups clearly
#: differ (see :data:`CENTRED_MAX_P_VALUE`); otherwise it is non-centred. The outermost factor
#: of a chain of nested ones (locations holding broods holding observations) is non-centred
#: throughout: its levels see the data only through the nested levels, and its sd trades off
#: against theirs, so its posterior reaches down to zero (grouseticks, broods in locations:
#: 10-12 divergences and R-hat 1.02 with the 2 most informative of 63 locations centred, none
#: and 1.014 with none centred; with observations in broods too, R-hat 1.034 when broods were
#: also all non-centred, 1.006 when only locations were).
CENTRED_MIN_INFORMATION = 5.0

#: p-value of Cochran's Q test of equal levels at or above which no level of a factor is
#: centred: the groups must clearly differ. Otherwise the group sd's posterior reaches down to
#: zero, where a centred level's mean (and the intercept it carries) is squeezed against its
#: centre: a funnel. Measured on 400 Bernoulli rows in 6 unequal groups (4 chains x 1000
#: draws): with no group variance one level centred on a Q-test p of 0.22 gave 46
#: divergences, all non-centred none; with group sd 0.5, p = 0.049 gave 27 divergences
#: (all non-centred: 0-1), p = 0.012 and 0.007 gave 4 and 2, p <= 0.0002 none.
CENTRED_MAX_P_VALUE = 0.001


#: For a factor with random slopes, the information x low between-group variance that its
#: intercept and each slope must reach for a level to be centred (1 for random intercepts):
#: a level's effects are centred jointly (MvNormal), and a weakly pinned component brings
#: back the funnel. Measured on (x|g) data, 40 groups x 40 rows, sds 0.8 and 0.5,
#: correlation -0.6, 4 chains x 1000 draws: binomial (intercepts 1.1-3, slopes below 1.5)
#: with 26 of 40 levels centred gave 213 divergences and R-hat 1.10, all non-centred none;
#: Poisson (values 12-42) all non-centred gave bulk ESS 15 for the fixed effects (2 chains x
#: 500), all centred 750-840. Between those, 4 left well-pinned levels non-centred, the
#: inverted funnel (default fits, seeds 1-3, min bulk ESS and max R-hat of the fixed effects,
#: sds and correlation): the same binomial data with 100 rows a group (slopes 2.2-3.2), 368-534
#: and 1.008 non-centred, 1,926-2,284 and 1.0013 with 29 of 40 centred at 2.5, 3,153-4,172
#: and 1.002 with 37 centred at 2; 140 rows (slopes 2.1-3.9), 375-454 and 1.012 against
#: 2,127-2,409 and 1.0015 at 2.5; successes of 30 trials at 4 values of x, 40 groups (slopes
#: 2.7-4), 348-921 and 1.015 against 2,718-3,272 and 1.0014 at 2.5; sleepstudy (slope 2.6,
#: all 18 subjects centred) 660-887 and 1.010, with 9 divergences on seed 1 in the upper tail
#: of the slopes' sd, against 1,958-2,340 and 1.003, none. At 1.5 the 80-row binomial data
#: (slopes 1.0-1.6, 12 of 40 centred) had a divergence on seed 2 of 3.
SLOPES_CENTRED_MIN_SIGNAL = 2.0

#: p-value of the Q test of equal slopes at or above which no level of a factor with random
#: slopes is centred (its intercepts keep :data:`CENTRED_MAX_P_VALUE`): a level centred on a
#: slope whose sd's posterior reaches towards zero sits in the funnel there. Contraception's
#: ``(urban | district)`` (p = 0.0006) with the one district reaching
#: :data:`SLOPES_CENTRED_MIN_SIGNAL` centred had 3 divergences on seed 1 and others on
#: seed 2, none with no district centred; the data sets whose centred levels helped above had
#: p below 1e-11 (sleepstudy 2.5e-12).
SLOPES_CENTRED_MAX_P_VALUE = 1e-6


def size_column(family: Family) -> str:
    """The column of a cell's size: ``_e`` (exposure) for count families, else ``_n``
    (trials, or a gaussian cell's rows)."""
    return EXPOSURE if family.size_kind == "exposure" else TRIALS


@dataclass(frozen=True)
class GroupSpec:
    """One grouping factor: its levels, and its random intercepts and slopes.

    Attributes
    ----------
    name : str
        The grouping column.
    levels : list of str
        Its levels, in sorted order.
    index : np.ndarray
        Level index of each cell.
    information : np.ndarray
        Approximate Fisher information about each level's mean on the link scale, from the
        observed data: s * f / n (successes, failures, trials) for binomial, the summed count
        for Poisson (each with +0.5 continuity corrections), the same shrunk by the estimated
        overdispersion for the negative binomial and the beta-binomial, rows x (sd of the
        outcome / residual sd)^2 for gaussian (the mean in units of the outcome's sd).
    centred : np.ndarray of bool
        Per level, whether its effect is sampled centred (informative level) or non-centred
        (see :data:`CENTRED_MIN_INFORMATION` and :mod:`bayesmer.pymc_model`); False at the
        levels in ``split``.
    parent : str or None
        The grouping factor this one is nested in and centred on (see :func:`_parents`).
    parent_level : np.ndarray or None
        Per level, the index of its ``parent`` level.
    terms : tuple of str
        R-style names of the random effects of each level: ``('(Intercept)',)`` for a random
        intercept, ``('(Intercept)', 'x')`` for ``(x|g)``, ``('(Intercept)', 'sexmale')``
        for ``(sex|g)``.
    Z : np.ndarray or None
        Random-effects design of the cells (cells x terms); None for a random intercept (a
        column of ones).
    correlated : bool
        Whether the effects of a level are correlated (``(x|g)``) or independent
        (``(x||g)``).
    design : object
        The formulae design of the random part, to build ``Z`` for new rows
        (:func:`random_design`); None for a random intercept.
    split : np.ndarray of bool
        Per level, whether its mean is split from its nested levels' (see
        :mod:`bayesmer.pymc_model`): when it holds exactly one level of the factor nested in it
        (a location with a single brood, where the data inform only the sum of the two), or a
        centred one. The nested levels are then drawn first, with this level integrated out,
        and this level's mean given them. Such a level is neither centred nor non-centred
        (``centred`` is False). All False when no factor is nested in this one (the default).
    """

    name: str
    levels: list[str]
    index: np.ndarray
    information: np.ndarray
    centred: np.ndarray
    parent: str | None = None
    parent_level: np.ndarray | None = None
    terms: tuple[str, ...] = ("(Intercept)",)
    Z: np.ndarray | None = field(default=None, repr=False)
    correlated: bool = True
    design: Any = field(default=None, repr=False, compare=False)
    split: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.split is None:
            object.__setattr__(self, "split", np.zeros(len(self.levels), dtype=bool))

    @property
    def slopes(self) -> bool:
        """Whether the factor has more than a random intercept (``u_g`` is levels x terms)."""
        return self.terms != ("(Intercept)",)

    @property
    def term_dim(self) -> str:
        """Dimension name of the random terms (factors with slopes)."""
        return f"{self.name}_term"

    @property
    def cor_name(self) -> str:
        """Posterior variable holding the correlations (correlated factors with slopes)."""
        return f"cor_{self.name}"

    @property
    def cor_dim(self) -> str:
        """Dimension name of the correlations."""
        return f"{self.name}_cor"

    @property
    def cor_pairs(self) -> list[tuple[int, int]]:
        """Index pairs (i < j) of the terms whose correlation is a parameter."""
        if not (self.slopes and self.correlated):
            return []
        q = len(self.terms)
        return [(i, j) for i in range(q) for j in range(i + 1, q)]

    @property
    def cor_labels(self) -> list[str]:
        """``'(Intercept).x'`` per correlation, as lme4 labels them."""
        return [f"{self.terms[i]}.{self.terms[j]}" for i, j in self.cor_pairs]

    @property
    def reported(self) -> list[str]:
        """The posterior variables of this factor that summaries and diagnostics read."""
        names = [self.sd_name, self.effect_name]
        return names + ([self.cor_name] if self.cor_pairs else [])

    def sd_key(self, term: str) -> str:
        """Key of a random term's sd in ``priors=``: ``'1|g'``, ``'x|g'``."""
        return f"{'1' if term == '(Intercept)' else term}|{self.name}"

    @property
    def prior_keys(self) -> list[str]:
        """Keys of this factor's priors: one sd per term, then ``'cor|g'`` if correlated."""
        keys = [self.sd_key(t) for t in self.terms]
        return keys + ([f"cor|{self.name}"] if self.cor_pairs else [])

    @property
    def parametrization(self) -> str:
        """``'centered'``, ``'noncentered'`` or ``'mixed (k of n centred)'``.

        Levels split from their nested levels (:attr:`split`) are counted apart:
        ``'noncentered (53 of 63 split from their nested levels)'``,
        ``'mixed (3 of 63 centred, 53 split from their nested levels)'``, or
        ``'split (all 63 from their nested levels)'``.
        """
        n, k, s = len(self.levels), int(self.centred.sum()), int(self.split.sum())
        if s == n:
            return f"split (all {n} from their nested levels)"
        if s == 0:
            if k == n:
                return "centered"
            return "noncentered" if k == 0 else f"mixed ({k} of {n} centred)"
        note = "split from their nested levels"
        if k == n - s:
            return f"centered ({s} of {n} {note})"
        if k == 0:
            return f"noncentered ({s} of {n} {note})"
        return f"mixed ({k} of {n} centred, {s} {note})"

    @property
    def sd_name(self) -> str:
        """Posterior variable holding the group sd."""
        return f"sd_{self.name}"

    @property
    def effect_name(self) -> str:
        """Posterior variable holding the group deviations (ranef)."""
        return f"u_{self.name}"

    @property
    def dim(self) -> str:
        """Dimension name of the levels."""
        return f"{self.name}_level"


@dataclass
class ModelSpec:
    """A model ready to be turned into PyMC, and read back from draws.

    Attributes
    ----------
    formula : ParsedFormula
    family : Family
    factors : dict
        Level order of each categorical fixed-effect or random-slope column (first =
        reference).
    numeric : list of str
        Numeric fixed-effect and random-slope columns.
    groups : list of GroupSpec
    cells : pl.DataFrame
        One row per collapsed cell: predictor and group columns (factors as strings), ``_y``,
        ``_n`` (trials; gaussian: rows) or ``_e`` (exposure), ``_ss`` (gaussian: the sum of
        squares around the cell's mean), ``_rows``, ``_cell``.
    obs : pl.DataFrame
        Distinct original observations with their multiplicity (see :mod:`bayesmer.collapse`).
    X : np.ndarray
        Fixed-effects design matrix of the cells.
    terms : list of str
        R-style names of the columns of ``X`` (``'(Intercept)'``, ``'sexmale'``...).
    priors : dict of Prior
    n_obs : int
        Rows used (after dropping missing values).
    n_dropped : int
        Rows dropped for missing values.
    collapsed : bool
        Whether rows were collapsed into cells.
    response_levels : tuple or None
        (failure, success) labels when a binomial outcome was a two-level column.
    scaling : dict
        Training (mean, sd) over the data rows of each column in ``scale()``/``center()``.
    """

    formula: ParsedFormula
    family: Family
    factors: dict[str, list[str]]
    numeric: list[str]
    groups: list[GroupSpec]
    cells: pl.DataFrame
    obs: pl.DataFrame
    X: np.ndarray
    terms: list[str]
    priors: dict[str, Prior]
    n_obs: int
    n_dropped: int
    collapsed: bool
    response_levels: tuple[str, str] | None = None
    scaling: dict[str, tuple[float, float]] = field(default_factory=dict)
    _design: Any = field(default=None, repr=False)

    @property
    def has_intercept(self) -> bool:
        return "(Intercept)" in self.terms

    @property
    def size_col(self) -> str:
        """``_e`` (exposure) for count families, else ``_n`` (trials, or gaussian rows)."""
        return size_column(self.family)

    @property
    def y(self) -> np.ndarray:
        """Successes, counts or (gaussian) summed values per cell."""
        return self.cells[Y].to_numpy()

    @property
    def size(self) -> np.ndarray:
        """Trials, exposure or (gaussian) rows per cell."""
        return self.cells[self.size_col].to_numpy().astype(float)

    @property
    def rows(self) -> np.ndarray:
        """Original rows per cell."""
        return self.cells[ROWS].to_numpy()

    @property
    def log_offset(self) -> np.ndarray | None:
        """log(exposure) per cell for Poisson and negative binomial models, else None.

        A collapsed Poisson cell's exposure is the summed exposure of its rows (the row count
        when the formula has no offset), so Poisson cells always carry an offset. (A negative
        binomial's likelihood runs over observations, each with its own exposure: see
        ``obs``.)
        """
        if self.family.size_kind != "exposure":
            return None
        return np.log(self.size)

    @property
    def reported(self) -> list[str]:
        """The posterior variables summaries and diagnostics read: ``b``, each factor's
        (:attr:`GroupSpec.reported`), and the family's dispersion parameter, if any."""
        names = ["b"] + [n for g in self.groups for n in g.reported]
        return names + ([self.family.dispersion] if self.family.dispersion else [])

    @property
    def has_offset(self) -> bool:
        return self.formula.exposure is not None or self.formula.offset is not None

    @property
    def slopes(self) -> bool:
        """Whether some grouping factor has random slopes."""
        return any(g.slopes for g in self.groups)

    def group_rows(self, cells: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Each factor's part of some fitted cells: level index and random design (None for
        a random intercept), for :func:`bayesmer.draws.linear_predictor`."""
        return {g.name: (g.index[cells], None if g.Z is None else g.Z[cells]) for g in self.groups}

    def design_matrix(self, grid: pl.DataFrame) -> np.ndarray:
        """Fixed-effects design matrix for new predictor values (same coding as the fit).

        Parameters
        ----------
        grid : pl.DataFrame
            Holds every fixed-effect column; factor values as strings from ``factors``.
        """
        if not self.formula.fixed_variables:  # intercept only
            return np.ones((max(grid.height, 1), len(self.terms)))
        new = self._design.evaluate_new_data(self.to_pandas(grid))
        return np.asarray(new.design_matrix, dtype=float)

    def to_pandas(self, frame: pl.DataFrame) -> pd.DataFrame:
        """Predictor columns as formulae reads them (see :func:`design_frame`)."""
        return design_frame(self.formula, frame, self.factors, self.scaling)


# ---------------------------------------------------------------------------------------------
# Data preparation


def to_lazy(
    data: Any, needed: list[str] | None = None
) -> tuple[pl.LazyFrame, dict[str, list[str]]]:
    """Any accepted data as a polars LazyFrame, and the level order of categorical columns.

    For answers that are per row by nature (predictions of new data, the rows behind
    pointwise LOO); see :func:`bayesmer.engines.polars_lazy` (a DuckDB, Dask or Spark frame has
    the ``needed`` columns pulled into memory).
    """
    return polars_lazy(data, needed)


def _sorted_levels(labels: pl.Series, dtype: pl.DataType) -> list[str]:
    """The distinct level labels of a column of type ``dtype``: numbers in numeric order
    (``'2'`` before ``'10'``), booleans ``'false'`` before ``'true'``, others sorted as text."""
    uniq = labels.drop_nulls().unique().to_list()
    if dtype.is_numeric():
        return sorted(uniq, key=float)
    return sorted(uniq)


def _level_str(value: Any) -> str:
    """A level's label: whole floats without '.0', booleans as 'false'/'true'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def level_expr(col: str, dtype: pl.DataType) -> pl.Expr:
    """Expression turning a factor column into its string labels (1.0 -> '1')."""
    if dtype.is_float():
        return (
            pl.when(pl.col(col) == pl.col(col).round(0))
            .then(pl.col(col).cast(pl.Int64).cast(pl.String))
            .otherwise(pl.col(col).cast(pl.String))
            .alias(col)
        )
    if dtype == pl.Boolean:
        return pl.col(col).cast(pl.String).str.to_lowercase().alias(col)
    return pl.col(col).cast(pl.String).alias(col)


def _used_levels(order: list[str], present: set[str]) -> list[str]:
    """A categorical dtype's levels that occur in the rows used, in the dtype's order.

    As R's ``drop.unused.levels``: a filtered pandas Categorical or polars Enum keeps the
    categories of the whole column, and those that no row has are not levels of the model.
    """
    return [lv for lv in order if lv in present]


def _check_levels(col: str, given: list[str], present: list[str]) -> list[str]:
    missing_in_data = [lv for lv in given if lv not in present]
    if missing_in_data:
        raise ValueError(
            f"set_factors gives levels {missing_in_data} for {col!r} that do not occur in the "
            f"data; its levels are {present}."
        )
    missing_in_order = [lv for lv in present if lv not in given]
    if missing_in_order:
        raise ValueError(
            f"Column {col!r} has levels {missing_in_order} that the level order given to "
            f"set_factors leaves out; list every level of {present}."
        )
    return list(given)


def _response_expr(
    parsed: ParsedFormula,
    family: Family,
    schema: dict[str, pl.DataType],
    stats: dict[str, Any],
    levels: list[str] | None,
) -> tuple[list[nw.Expr], tuple[str, str] | None]:
    """Validate the response and return (narwhals) expressions building ``_y`` and
    ``_n``/``_e``."""
    resp = parsed.response
    if family.size_kind != "exposure" and (
        parsed.exposure is not None or parsed.offset is not None
    ):
        raise ValueError(
            "offset() is supported for the Poisson and negative binomial families only "
            f"(counts per unit of exposure), not for {family.name}."
        )
    levels_found = None
    if family.size_kind == "exposure":
        _check_counts(parsed, family, schema, stats)
    elif family.name == "gaussian":
        _check_gaussian(resp.column, resp.kind, schema)
    elif resp.kind != "column":
        _check_cbind(parsed, family, schema, stats)
    elif family.name == "betabinomial":
        raise ValueError(
            f"The beta-binomial family needs successes out of trials, cbind(successes, "
            f"failures) or cbind(successes, trials); {resp.column!r} is one 0/1 outcome per "
            "row, and rows with one trial carry no information about overdispersion: use "
            "family='binomial'."
        )
    else:
        levels_found = _binary_levels(resp.column, schema, stats, levels)
    return outcome_exprs(parsed, family, schema, levels_found, nw), levels_found


def outcome_exprs(
    parsed: ParsedFormula,
    family: Family,
    schema: dict[str, pl.DataType],
    response_levels: tuple[str, str] | None,
    ns: Any = pl,
) -> list[Any]:
    """Each row's outcome ``_y`` and its trials ``_n`` (1 per row for gaussian and 0/1
    outcomes) or exposure ``_e``, as the fit reads them (the data already validated).

    ``response_levels`` is the (failure, success) pair of a two-level binomial outcome.
    ``ns`` is the expression namespace: ``polars`` for polars frames, ``narwhals`` for a
    query that runs in the data's own engine (both spell these expressions alike).
    """
    resp = parsed.response
    col = resp.column
    if family.size_kind == "exposure":
        if parsed.exposure is not None:
            size = ns.col(parsed.exposure).cast(ns.Float64)
        elif parsed.offset is not None:
            size = ns.col(parsed.offset).cast(ns.Float64).exp()
        else:
            size = ns.lit(1.0, dtype=ns.Float64)
        return [ns.col(col).cast(ns.Int64).alias(Y), size.alias(EXPOSURE)]
    one = ns.lit(1, dtype=ns.Int64).alias(TRIALS)
    if family.name == "gaussian":
        return [ns.col(col).cast(ns.Float64).alias(Y), one]
    if resp.kind == "cbind_trials":
        return [
            ns.col(col).cast(ns.Int64).alias(Y),
            ns.col(resp.second).cast(ns.Int64).alias(TRIALS),
        ]
    if resp.kind == "cbind_failures":
        trials = (ns.col(col) + ns.col(resp.second)).cast(ns.Int64)
        return [ns.col(col).cast(ns.Int64).alias(Y), trials.alias(TRIALS)]
    dtype = schema[col]
    if dtype == pl.Boolean or dtype.is_numeric():
        return [ns.col(col).cast(ns.Int64).alias(Y), one]
    success = response_levels[1]
    return [(ns.col(col).cast(ns.String) == success).cast(ns.Int64).alias(Y), one]


def _check_counts(
    parsed: ParsedFormula, family: Family, schema: dict[str, pl.DataType], stats: dict[str, Any]
) -> None:
    """Validate the counts and exposure of a Poisson or negative binomial outcome."""
    resp = parsed.response
    col = resp.column
    label = "Poisson" if family.name == "poisson" else "Negative binomial"
    if resp.kind != "column":
        raise ValueError(
            f"cbind() responses are for the binomial and beta-binomial families; {label} "
            "takes counts."
        )
    if not schema[col].is_numeric():
        raise ValueError(
            f"{label} outcome {col!r} must hold non-negative whole-number counts; it has "
            f"type {schema[col]}."
        )
    if stats[f"{col}__min"] < 0:
        raise ValueError(
            f"{label} outcome {col!r} has negative values (min {stats[f'{col}__min']}); "
            "counts must be >= 0."
        )
    if not stats[f"{col}__whole"]:
        raise ValueError(f"{label} outcome {col!r} has values that are not whole numbers.")
    if parsed.exposure is not None and stats[f"{parsed.exposure}__min"] <= 0:
        raise ValueError(
            f"Exposure column {parsed.exposure!r} in offset(log(...)) must be > 0; "
            f"its minimum is {stats[f'{parsed.exposure}__min']}."
        )


def _check_gaussian(col: str, kind: str, schema: dict[str, pl.DataType]) -> None:
    """Validate a gaussian outcome: one numeric column."""
    if kind != "column":
        raise ValueError(
            "cbind() responses are for the binomial and beta-binomial families; the gaussian "
            "family takes one numeric outcome column."
        )
    if not schema[col].is_numeric():
        raise ValueError(
            f"Gaussian outcome {col!r} must be numeric; it has type {schema[col]}. For a "
            "two-level outcome use family='binomial'."
        )


def _check_cbind(
    parsed: ParsedFormula, family: Family, schema: dict[str, pl.DataType], stats: dict[str, Any]
) -> None:
    """Validate the successes and trials of a ``cbind()`` outcome."""
    resp = parsed.response
    col, second = resp.column, resp.second
    for c in resp.columns:
        if not schema[c].is_numeric():
            raise ValueError(f"cbind() column {c!r} must be numeric counts, has {schema[c]}.")
        if stats[f"{c}__min"] < 0:
            raise ValueError(
                f"cbind() column {c!r} has negative counts (min {stats[f'{c}__min']})."
            )
        if not stats[f"{c}__whole"]:
            raise ValueError(f"cbind() column {c!r} has values that are not whole numbers.")
    if resp.kind == "cbind_trials" and stats["__succ_gt_trials"]:
        raise ValueError(
            f"Successes {col!r} exceed trials {second!r} in {stats['__succ_gt_trials']} row(s)."
        )
    if family.name == "betabinomial" and stats["__max_trials"] <= 1:
        raise ValueError(
            f"Every row of {str(resp)!r} has at most one trial: rows with one trial carry no "
            "information about overdispersion, so the beta-binomial model is the binomial "
            "one. Use family='binomial'."
        )


def _binary_levels(
    col: str, schema: dict[str, pl.DataType], stats: dict[str, Any], levels: list[str] | None
) -> tuple[str, str] | None:
    """Validate a 0/1, boolean or two-level binomial outcome; its (failure, success) labels
    (None for 0/1)."""
    dtype = schema[col]
    if dtype == pl.Boolean:
        return ("false", "true")
    if dtype.is_numeric():
        values = stats[f"{col}__values"]
        if not set(values) <= {0, 1}:
            shown = sorted(values)[:6]
            raise ValueError(
                f"Binomial outcome {col!r} must be 0/1 (or a two-level column); it has values "
                f"{shown}. For counts of successes out of trials use "
                "cbind(successes, failures)."
            )
        return None
    present = stats[f"{col}__values"]
    order = levels if levels is not None else sorted(str(v) for v in present)
    if levels is not None:
        order = _check_levels(col, levels, sorted(str(v) for v in present))
    if len(order) != 2:
        raise ValueError(
            f"Binomial outcome {col!r} must have exactly two levels; it has {len(order)}: "
            f"{order[:6]}."
        )
    return (order[0], order[1])


def with_group_columns(
    lf: pl.LazyFrame, parsed: ParsedFormula, schema: dict[str, pl.DataType]
) -> tuple[pl.LazyFrame, dict[str, pl.DataType]]:
    """Add the grouping factors made of several columns (``'site:plot'``) to ``lf``.

    Each is the columns' level labels joined by ``':'`` (null where any of them is null),
    lme4's labels for ``(1|site:plot)``. Returns the frame and its schema.
    """
    combined = [g for g in parsed.groups if len(parsed.group_sources(g)) > 1]
    if not combined:
        return lf, schema
    exprs = [
        pl.concat_str(
            [level_expr(c, schema[c]) for c in parsed.group_sources(g)], separator=":"
        ).alias(g)
        for g in combined
    ]
    return lf.with_columns(exprs), {**schema, **dict.fromkeys(combined, pl.String)}


def check_columns(parsed: ParsedFormula, available: list[str]) -> None:
    """Raise a ValueError naming the formula's columns that are not in ``available``."""
    missing = [c for c in parsed.columns if c not in available]
    if missing:
        raise ValueError(
            f"Column(s) {missing} in the formula {parsed.formula!r} are not in the data; "
            f"available columns: {available}."
        )


def build_spec(
    parsed: ParsedFormula,
    data: Any,
    family: Family,
    factors: dict[str, list[str] | None],
    priors: dict[str, Any] | None,
) -> ModelSpec:
    """Validate the data against the formula, collapse it, and build the design.

    The steps, each its own function: read the columns (:func:`_read`), drop rows with
    missing values (:func:`_drop_missing`), validate the outcome (:func:`_response`), find the
    factor columns (:func:`_factor_columns`), collapse the rows into cells, read the levels of
    the factors off the cells (:func:`_levels`), build the fixed design
    (:func:`_fixed_design`), then the grouping factors and the priors. Everything that reads
    rows runs as a query in the data's engine (see :mod:`bayesmer.engines`).

    Parameters
    ----------
    parsed : ParsedFormula
    data : any frame narwhals supports
        polars, pandas, pyarrow, DuckDB, Dask, PySpark, Ibis... (see :mod:`bayesmer.engines`).
    family : Family
    factors : dict
        Columns declared categorical with set_factors; value None means sorted level order.
    priors : dict or None
        User priors, see :func:`bayesmer.priors.resolve_priors`.

    Returns
    -------
    ModelSpec

    Raises
    ------
    ValueError, TypeError
        For every problem with the data, naming the column at fault.
    """
    lf, schema, orders = _read(parsed, data, factors)
    clean, n_dropped = _drop_missing(lf, parsed.columns, schema)
    resp_exprs, response_levels = _response(parsed, family, clean, schema, factors, orders)
    factor_cols, numeric = _factor_columns(parsed, schema, factors)

    size_col = size_column(family)
    fixed_vars = list(dict.fromkeys([*parsed.fixed_variables, *parsed.random_variables]))
    keys = list(dict.fromkeys([*fixed_vars, *parsed.groups]))
    sources = list(
        dict.fromkeys([*fixed_vars, *(c for g in parsed.groups for c in parsed.group_sources(g))])
    )
    level_cols = list(dict.fromkeys([*factor_cols, *parsed.groups]))
    labels = Labels(keys, _labeller(parsed, schema, level_cols, numeric))
    spread = family.name == "gaussian"
    work = clean.with_columns(resp_exprs).select([*sources, Y, size_col])
    col_data: Collapsed = collapse(work, sources, size_col, spread, labels)
    cells = col_data.cells
    levels = _levels(parsed, cells, level_cols, schema, factors, orders)

    factor_levels = {c: levels[c] for c in factor_cols}
    scaling = _scaling(parsed, clean)
    frame = design_frame(parsed, cells, factor_levels, scaling)
    X, terms, common = _fixed_design(parsed, frame)

    rows = cells[ROWS].to_numpy().astype(float)
    x_sd = {
        term: _weighted_sd(X[:, j], rows) for j, term in enumerate(terms) if term != "(Intercept)"
    }
    designs = {
        part.group: (*_random_design(parsed, part, frame), part.correlated)
        for part in parsed.random
        if part.slopes
    }
    for part in parsed.random:
        if part.slopes:
            terms_g, Z_g = designs[part.group][:2]
            _check_varies_within(parsed, part.group, terms_g, Z_g, cells[part.group])
    groups = _group_specs(parsed.groups, levels, cells, family, designs, col_data.obs)
    random_sd = {
        g.name: {
            t: _weighted_sd(g.Z[:, k], rows) for k, t in enumerate(g.terms) if t != "(Intercept)"
        }
        for g in groups
        if g.slopes
    }
    resolved = resolve_priors(
        terms, x_sd, groups, priors, random_sd, family, outcome_scale(family, cells)
    )
    return ModelSpec(
        formula=parsed,
        family=family,
        factors=factor_levels,
        numeric=numeric,
        groups=groups,
        cells=cells,
        obs=col_data.obs,
        X=X,
        terms=terms,
        priors=resolved,
        n_obs=col_data.n_rows,
        n_dropped=n_dropped,
        collapsed=col_data.collapsed,
        response_levels=response_levels,
        scaling=scaling,
        _design=common,
    )


def _labeller(
    parsed: ParsedFormula,
    schema: dict[str, pl.DataType],
    level_cols: list[str],
    numeric: list[str],
) -> Any:
    """The function turning raw key columns into the cells' keys (run by polars): grouping
    factors of several columns joined (:func:`with_group_columns`), factor and group columns
    as their level labels (:func:`level_expr`), numeric columns as Float64."""

    def label(frame: Any) -> Any:
        frame, _ = with_group_columns(frame, parsed, schema)
        return frame.with_columns([level_expr(c, schema[c]) for c in level_cols]).with_columns(
            [pl.col(c).cast(pl.Float64) for c in numeric]
        )

    return label


def _read(
    parsed: ParsedFormula, data: Any, factors: dict[str, list[str] | None]
) -> tuple[nw.LazyFrame, dict[str, pl.DataType], dict[str, list[str]]]:
    """The formula's columns of ``data`` as a lazy query in its engine, their schema (as
    polars types, grouping factors of several columns added as strings) and the level order
    of categorical columns."""
    lf, orders = lazy_frame(data)
    schema = schema_of(lf)
    check_columns(parsed, list(schema))
    undeclared = [c for c in factors if c not in schema]
    if undeclared:
        raise ValueError(
            f"set_factors names column(s) {undeclared} that are not in the data; "
            f"available columns: {list(schema)}."
        )
    schema = {c: schema[c] for c in parsed.columns}
    combined = {g: pl.String for g in parsed.groups if len(parsed.group_sources(g)) > 1}
    return lf.select(parsed.columns), {**schema, **combined}, orders


def _drop_missing(
    lf: nw.LazyFrame, cols: list[str], schema: dict[str, pl.DataType]
) -> tuple[nw.LazyFrame, int]:
    """Rows with no null (or NaN) in any used column, and how many were dropped (warned)."""
    not_missing = [~nw.col(c).is_null() for c in cols]
    not_missing += [~nw.col(c).is_nan() for c in cols if schema[c].is_float()]
    keep = nw.all_horizontal(not_missing, ignore_nulls=False)
    # one pass; booleans counted as integers (Spark sums no booleans)
    counts = collect(lf.select(nw.len().alias("n_all"), keep.cast(nw.Int64).sum().alias("n")))
    n_all, n = (int(v) for v in counts.row(0))
    n_dropped = n_all - n
    if n_all == 0:
        raise ValueError("The data has no rows.")
    if n == 0:
        raise ValueError(
            f"Every row has a missing value in at least one of the columns {cols}; "
            "nothing is left to fit."
        )
    if n_dropped:
        warnings.warn(
            f"Dropped {n_dropped} of {n_all} rows with missing values in the columns {cols}.",
            UserWarning,
            skip_file_prefixes=(PACKAGE_DIR,),
        )
    return lf.filter(keep), n_dropped


def _response(
    parsed: ParsedFormula,
    family: Family,
    clean: nw.LazyFrame,
    schema: dict[str, pl.DataType],
    factors: dict[str, list[str] | None],
    orders: dict[str, list[str]],
) -> tuple[list[nw.Expr], tuple[str, str] | None]:
    """Validate the outcome (statistics in one pass) and build ``_y`` and ``_n``/``_e``."""
    resp = parsed.response
    stats_exprs = []
    for c in [*resp.columns, parsed.exposure]:
        if c is not None and schema[c].is_numeric():
            stats_exprs += [
                nw.col(c).min().alias(f"{c}__min"),
                (nw.col(c) == nw.col(c).round(0)).all().alias(f"{c}__whole")
                if schema[c].is_float()
                else nw.lit(True).alias(f"{c}__whole"),
            ]
    if resp.kind == "cbind_trials":
        stats_exprs.append(
            (nw.col(resp.column) > nw.col(resp.second))
            .cast(nw.Int64)
            .sum()
            .alias("__succ_gt_trials")
        )
    if resp.kind != "column" and all(schema[c].is_numeric() for c in resp.columns):
        trials = nw.col(resp.second)
        if resp.kind == "cbind_failures":
            trials = nw.col(resp.column) + nw.col(resp.second)
        stats_exprs.append(trials.max().alias("__max_trials"))
    stats = collect(clean.select(stats_exprs)).row(0, named=True) if stats_exprs else {}
    if family.name == "binomial" and resp.kind == "column" and schema[resp.column] != pl.Boolean:
        # the 50 smallest distinct values, picked in the engine (a continuous column has many;
        # a group-by, as DuckDB's DISTINCT through narwhals holds the rows)
        values = clean.group_by(resp.column).agg(nw.len().alias("__rows"))
        values = collect(values.sort(resp.column).head(50))
        stats[f"{resp.column}__values"] = values[resp.column].to_list()
    levels_given = factors.get(resp.column) if resp.kind == "column" else None
    if levels_given is None and resp.column in orders:
        present = {_level_str(v) for v in stats.get(f"{resp.column}__values", [])}
        levels_given = _used_levels(orders[resp.column], present)
    return _response_expr(parsed, family, schema, stats, levels_given)


def _factor_columns(
    parsed: ParsedFormula,
    schema: dict[str, pl.DataType],
    factors: dict[str, list[str] | None],
) -> tuple[list[str], list[str]]:
    """The factor columns and the numeric ones among the fixed effects and random slopes,
    checked against the formula (read off the schema, before any data is grouped)."""
    resp = parsed.response
    fixed_vars = list(dict.fromkeys([*parsed.fixed_variables, *parsed.random_variables]))
    in_c = {v for call in parsed.calls if call.name == "C" for v in call.variables}
    factor_cols = [
        c
        for c in fixed_vars
        if c in factors or c in in_c or not schema[c].is_numeric() or isinstance(schema[c], pl.Enum)
    ]
    for call in parsed.calls:
        not_numeric = [v for v in call.variables if call.numeric and v in factor_cols]
        if not_numeric:
            raise ValueError(
                f"The term {call.text} in {parsed.formula!r} needs numeric columns, but "
                f"{not_numeric} {'is a factor' if len(not_numeric) == 1 else 'are factors'}."
            )
    if resp.column in parsed.groups:
        raise ValueError(f"The outcome {resp.column!r} cannot also be a grouping column.")
    for part in parsed.random:
        factor_slopes = [v for v in part.variables if v in factor_cols]
        if factor_slopes and not part.correlated:
            raise ValueError(
                f"Uncorrelated random effects of {part.group!r} with the factor(s) "
                f"{factor_slopes}: lme4 reads (f || g) and (1 | g) + (0 + f | g) with a factor "
                "f as correlated effects of f's levels, which bayesmer does not split; write "
                f"({' + '.join(part.variables)} | {part.group}) for correlated effects."
            )
    numeric = [c for c in fixed_vars if c not in factor_cols]
    return factor_cols, numeric


def _levels(
    parsed: ParsedFormula,
    cells: pl.DataFrame,
    level_cols: list[str],
    schema: dict[str, pl.DataType],
    factors: dict[str, list[str] | None],
    orders: dict[str, list[str]],
) -> dict[str, list[str]]:
    """Level order of every factor and grouping column, read off the cells (which hold every
    value that the rows used have)."""
    levels: dict[str, list[str]] = {}
    for c in level_cols:
        present = _sorted_levels(cells[c], schema[c])
        if factors.get(c):
            levels[c] = _check_levels(c, [str(v) for v in factors[c]], present)
        elif c in orders:
            levels[c] = _used_levels(orders[c], set(present))
        else:
            levels[c] = present
    for g in parsed.groups:
        if len(levels[g]) < 2:
            raise ValueError(
                f"Grouping column {g!r} has a single level ({levels[g]}); random intercepts "
                "need at least two groups."
            )
    return levels


def _fixed_design(parsed: ParsedFormula, frame: pd.DataFrame) -> tuple[np.ndarray, list[str], Any]:
    """Fixed-effects design matrix of the cells, its R term names, its design.

    An intercept and main effects of columns are coded by bayesmer
    (:func:`bayesmer.design.main_effects`), anything else by formulae.
    """
    simple = None if parsed.calls else main_effect_columns(parsed.fixed)
    if simple is not None:
        common = main_effects(simple, frame)
        X = common.evaluate_new_data(frame).design_matrix
        terms = common.terms
    else:
        import formulae

        frame["bayesmerresponse"] = 0.0  # formulae needs a response; the design ignores it
        dm = formulae.design_matrices(
            f"bayesmerresponse ~ {parsed.fixed_for_formulae}", frame, na_action="pass"
        )
        common = dm.common
        if common is None:
            raise ValueError(
                f"The formula {parsed.formula!r} has no fixed effects and no intercept."
            )
        X = np.asarray(common.design_matrix, dtype=float)
        terms = _r_term_names(common, parsed)
    not_finite = [t for t, ok in zip(terms, np.isfinite(X).all(axis=0), strict=True) if not ok]
    if not_finite:
        raise ValueError(
            f"The term(s) {not_finite} of {parsed.formula!r} are not finite for some rows "
            "(the log or square root of a value <= 0?); transform or filter the data first."
        )
    if _rank(X, "(Intercept)" in terms) < X.shape[1]:
        raise ValueError(
            f"The fixed effects of {parsed.formula!r} are not identifiable from the data (the "
            f"design matrix with columns {terms} is rank deficient): some factor combination "
            "is missing or a column is constant."
        )
    return X, terms, common


def outcome_scale(family: Family, cells: pl.DataFrame) -> tuple[float, float]:
    """Location and scale of the outcome on the link scale, for autoscaled priors.

    ``(0, 1)`` for the discrete families (their link scale is unitless); for a gaussian
    outcome its mean and sd over the rows (identity link) or ``log`` of its mean and 1 (log
    link).
    """
    if family.name != "gaussian":
        return 0.0, 1.0
    n = cells[TRIALS].to_numpy().astype(float)
    total = cells[Y].to_numpy().astype(float)
    mean = float(total.sum() / n.sum())
    between = float(np.sum((total - n * mean) ** 2 / n))
    var = (float(cells[SS].sum()) + between) / max(n.sum() - 1.0, 1.0)
    if family.link == "log":
        return (float(np.log(mean)) if mean > 0 else 0.0), 1.0
    sd = float(np.sqrt(var))
    return mean, (sd if sd > 0 else 1.0)


def design_frame(
    parsed: ParsedFormula,
    frame: pl.DataFrame,
    factor_levels: dict[str, list[str]],
    scaling: dict[str, tuple[float, float]],
) -> pd.DataFrame:
    """The fixed-effect columns (and the random slopes' columns in ``frame``) as formulae
    reads them.

    Factors become pandas categoricals with the model's levels, numeric columns floats, and
    each call of the formula (``log(x)``, ``I(x^2)``, ``scale(x)``, ``C(g)``) a column of its
    values under :func:`bayesmer.transforms.column_name`, computed with the training
    ``scaling``.
    """
    import pandas as pd

    out = {}
    random_only = [c for c in parsed.random_variables if c in frame.columns]
    for col in dict.fromkeys([*parsed.fixed_variables, *random_only]):
        if col in factor_levels:
            values = frame[col].cast(pl.String).to_list()
            out[col] = pd.Categorical(values, categories=factor_levels[col], ordered=True)
        else:
            out[col] = frame[col].cast(pl.Float64).to_numpy()
    for k, call in enumerate(parsed.calls):
        # C(x) is the factor x itself (x is declared a factor); the rest are computed here
        out[column_name(k)] = call.evaluate(out, scaling) if call.numeric else out[call.inner]
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def _scaling(parsed: ParsedFormula, rows: nw.LazyFrame) -> dict[str, tuple[float, float]]:
    """Mean and sd (``ddof=1``, as R's ``scale``) over the data rows of every scaled column."""
    cols = sorted({call.inner for call in parsed.calls if call.stateful})
    if not cols:
        return {}
    values = collect(
        rows.select(
            *[nw.col(c).cast(nw.Float64).mean().alias(f"{c}__mean") for c in cols],
            *[nw.col(c).cast(nw.Float64).std(ddof=1).alias(f"{c}__sd") for c in cols],
        )
    )
    out = {}
    for c in cols:
        mean, sd = values[f"{c}__mean"].item(), values[f"{c}__sd"].item()
        if any(call.name == "scale" and call.inner == c for call in parsed.calls) and not sd:
            raise ValueError(f"scale({c}): the column {c!r} is constant, so it has no sd.")
        out[c] = (float(mean), float(sd or 0.0))
    return out


def _r_term_names(common: Any, parsed: ParsedFormula) -> list[str]:
    """formulae labels ('sex[male]:bayesmer_call0_') -> R labels ('sexmale:I(age^2)')."""
    names: list[str] = []
    for term in common.terms.values():
        for label in term.labels:
            if label == "Intercept":
                names.append("(Intercept)")
            else:
                label = relabel(label, parsed.calls)
                names.append(re.sub(r"\[([^\]]*)\]", r"\1", label))
    return names


def _weighted_sd(x: np.ndarray, weights: np.ndarray) -> float:
    """sd of a design column over the data rows (cells weighted by their rows)."""
    mean = np.average(x, weights=weights)
    return float(np.sqrt(np.average((x - mean) ** 2, weights=weights)))


def _random_design(
    parsed: ParsedFormula, part: RandomPart, frame: pd.DataFrame
) -> tuple[tuple[str, ...], np.ndarray, Any]:
    """Term names, design (cells x terms) and formulae design of a factor's random part.

    The columns are coded as in the fixed part (treatment coding: ``(sex|g)`` gives
    ``(Intercept)`` and ``sexmale``; ``(0 + sex|g)`` one column per level).
    """
    import formulae

    frame["bayesmerresponse"] = 0.0  # formulae needs a response; the design ignores it
    dm = formulae.design_matrices(f"bayesmerresponse ~ {part.rhs}", frame, na_action="pass").common
    Z = np.asarray(dm.design_matrix, dtype=float)
    terms = tuple(_r_term_names(dm, parsed))
    if _rank(Z, "(Intercept)" in terms) < Z.shape[1]:
        raise ValueError(
            f"The random effects of {part.group!r} in {parsed.formula!r} are not identifiable "
            f"from the data (the columns {list(terms)} are collinear or one is constant)."
        )
    return terms, Z, dm


def _check_varies_within(
    parsed: ParsedFormula, group: str, terms: tuple[str, ...], Z: np.ndarray, levels: pl.Series
) -> None:
    """Refuse a random slope next to a random intercept whose column is constant within every
    level of its factor (altitude per location): each level's slope is then confounded with
    its intercept, and the slopes' sd is not identified by the data (lme4 reports a singular
    fit; a sampler diverges)."""
    if "(Intercept)" not in terms:
        return
    index = levels.cast(pl.String).to_numpy()
    _, index = np.unique(index, return_inverse=True)
    n_levels = int(index.max()) + 1
    for k, term in enumerate(terms):
        if term == "(Intercept)":
            continue
        z = Z[:, k]
        low = np.full(n_levels, np.inf)
        high = np.full(n_levels, -np.inf)
        np.minimum.at(low, index, z)
        np.maximum.at(high, index, z)
        scale = float(np.abs(z - z.mean()).max(initial=0.0))
        if np.all(high - low <= 1e-9 * max(scale, 1e-300)):
            raise ValueError(
                f"The random slope of {term!r} in ({' + '.join(terms[1:])} | {group}) of "
                f"{parsed.formula!r} cannot be estimated: {term!r} is constant within every "
                f"level of {group!r}, so each level's slope is its intercept under another "
                f"name (lme4 reports a singular fit). Keep {term!r} as a fixed effect and "
                f"write (1 | {group})."
            )


def random_design(spec: ModelSpec, group: GroupSpec, frame: pl.DataFrame) -> np.ndarray:
    """Random-effects design of a grouping factor for any rows (rows x ``group.terms``).

    Parameters
    ----------
    spec : ModelSpec
    group : GroupSpec
    frame : pl.DataFrame
        Holds the columns of the factor's random slopes (factor values as strings), for
        example the fitted cells, a reference grid or new data.

    Returns
    -------
    np.ndarray
        A column of ones for a random intercept; otherwise the columns coded as in the fit.
    """
    if not group.slopes:
        return np.ones((frame.height, 1))
    new = group.design.evaluate_new_data(spec.to_pandas(frame))
    return np.asarray(new.design_matrix, dtype=float)


def _rank(X: np.ndarray, intercept: bool) -> int:
    """Rank of a design matrix, whatever the units and offsets of its columns.

    numpy's cutoff is relative to the largest singular value: a predictor in tiny units
    (1e-12) would pass for a zero column, and one that varies little compared to its
    magnitude (timestamps in seconds) for a copy of the intercept. With an intercept the
    other columns are centred (the same column space), then every column is scaled to
    magnitude 1.
    """
    design = X.copy()
    if intercept:
        constant = np.all(X == X[:1], axis=0)
        design[:, ~constant] -= X[:, ~constant].mean(axis=0)
    magnitude = np.abs(design).max(axis=0, initial=0.0)
    return int(np.linalg.matrix_rank(design / np.where(magnitude > 0, magnitude, 1.0)))


def heterogeneity(
    estimates: np.ndarray, variances: np.ndarray, within: np.ndarray | None = None
) -> tuple[float, float, float]:
    """How much levels' raw link-scale estimates differ beyond their sampling noise.

    With Cochran's ``Q = sum(w (estimate - weighted mean)^2)``, ``w = 1 / variance`` and
    ``df = levels - 1``:

    - ``tau2``: DerSimonian-Laird between-group variance,
      ``max(0, (Q - df) / (sum(w) - sum(w^2) / sum(w)))``;
    - ``tau2_low``: a low value of it, ``tau2 * chi2.ppf(0.1, df) / df`` (the 10% point of a
      variance estimated on ``df`` degrees of freedom): with few levels the group sd's
      posterior reaches far below its point estimate;
    - ``p_value``: of the Q test of equal levels (Q ~ chi-square on ``df``).

    With ``within`` (each level's parent level, for a nested factor) the levels are compared
    with their parent's weighted mean instead: ``df = levels - parents`` and the sums in the
    denominator are taken per parent. They ignore the fixed effects, so they err on the large
    side when those differ between groups.

    Returns
    -------
    tau2, tau2_low, p_value : float
    """
    parent = np.zeros(len(estimates), dtype=np.int64) if within is None else within
    w = 1.0 / variances
    sum_w = np.bincount(parent, weights=w)
    present = sum_w > 0
    df = len(estimates) - int(present.sum())
    if df < 1:
        return 0.0, 0.0, 1.0
    mean = np.bincount(parent, weights=w * estimates)[present] / sum_w[present]
    mean_of = np.zeros(len(sum_w))
    mean_of[present] = mean
    from scipy import special  # chi2.sf and .ppf of scipy.stats, whose import costs 0.4 s

    q = float(np.sum(w * (estimates - mean_of[parent]) ** 2))
    p_value = float(special.chdtrc(df, q))
    if q <= df:
        return 0.0, 0.0, p_value
    scale = float(np.sum(w) - np.sum(np.bincount(parent, weights=w**2)[present] / sum_w[present]))
    tau2 = (q - df) / scale
    return tau2, tau2 * float(2 * special.gammaincinv(df / 2, 0.1)) / df, p_value


def parent_levels(child: np.ndarray, parent: np.ndarray, n_child: int) -> np.ndarray | None:
    """Per child level, its parent level, if every child level lies within one parent level.

    ``child`` and ``parent`` are the level indices of each cell; None when not nested.
    """
    pairs = np.unique(np.stack([child, parent], axis=1), axis=0)
    if len(pairs) != n_child or len(np.unique(pairs[:, 0])) != n_child:
        return None
    out = np.empty(n_child, dtype=np.int64)
    out[pairs[:, 0]] = pairs[:, 1]
    return out


def _parents(
    index: dict[str, np.ndarray], levels: dict[str, list[str]]
) -> dict[str, tuple[str, np.ndarray] | None]:
    """Each factor's parent: the factor with the most levels among those it is nested in.

    Only factors with fewer levels qualify, and a parent keeps one child (the one with the
    most levels), so the factors form chains (observations in broods in locations).
    """
    out: dict[str, tuple[str, np.ndarray] | None] = {}
    for g in index:
        best: tuple[str, np.ndarray] | None = None
        for h in index:
            if len(levels[h]) >= len(levels[g]):
                continue
            if best is not None and len(levels[h]) <= len(levels[best[0]]):
                continue
            mapping = parent_levels(index[g], index[h], len(levels[g]))
            if mapping is not None:
                best = (h, mapping)
        out[g] = best
    for h in index:
        children = sorted(
            (g for g in index if out[g] is not None and out[g][0] == h),
            key=lambda g: len(levels[g]),
            reverse=True,
        )
        for g in children[1:]:
            out[g] = None
    return out


def _split_levels(
    parents: dict[str, tuple[str, np.ndarray] | None],
    centred: dict[str, np.ndarray],
    n_levels: dict[str, int],
) -> dict[str, np.ndarray]:
    """Per factor, the levels whose means are split from their nested levels' (see
    :attr:`GroupSpec.split`); ``centred`` loses those levels.

    A level is split when it holds exactly one nested level, or holds a centred one. Factors
    are taken innermost first (a nested factor has more levels than its parent), so a nested
    level's own split, which keeps it from being centred, is known before its parent's.
    """
    out = {g: np.zeros(n, dtype=bool) for g, n in n_levels.items()}
    for g in sorted(n_levels, key=n_levels.get, reverse=True):
        if parents[g] is None:
            continue
        h, mapping = parents[g]
        centred[g] = centred[g] & ~out[g]
        counts = np.bincount(mapping, minlength=n_levels[h])
        holds_centred = np.bincount(mapping, weights=centred[g], minlength=n_levels[h]) > 0
        out[h] = (counts == 1) | holds_centred
    for h, split in out.items():
        centred[h] = centred[h] & ~split
    return out


def _slope_information(
    Z: np.ndarray,
    terms: tuple[str, ...],
    index: np.ndarray,
    n_levels: int,
    w: np.ndarray,
    resid: np.ndarray,
    size: np.ndarray,
) -> np.ndarray:
    """Per level, whether its data inform each of its random slopes well enough to centre it.

    As for the intercepts (see :data:`CENTRED_MIN_INFORMATION`), per slope column: the
    approximate Fisher information about the level's slope, ``sum w (z - zbar)^2`` over its
    cells (``w`` and the working residuals ``resid`` from :func:`_working`; ``zbar`` the
    level's weighted mean of the column), must reach
    :data:`CENTRED_MIN_INFORMATION` for the slope per sd of the column, and times a low
    estimate of the slopes' variance (:func:`heterogeneity` of one-step estimates of each
    level's slope, ``sum w (z - zbar) r / info`` with ``r`` the cells' working residuals
    around the level's mean) reach :data:`SLOPES_CENTRED_MIN_SIGNAL`, and the slopes must
    clearly differ (:data:`SLOPES_CENTRED_MAX_P_VALUE`). A level whose rows all share one
    value of ``x`` (a district without urban women) says nothing about its slope, and is
    non-centred.
    """
    total = np.bincount(index, weights=w, minlength=n_levels)
    ok = np.ones(n_levels, dtype=bool)
    for k, term in enumerate(terms):
        if term == "(Intercept)":
            continue
        z = Z[:, k]
        zbar = np.bincount(index, weights=w * z, minlength=n_levels) / np.maximum(total, 1e-300)
        dz = z - zbar[index]
        info = np.bincount(index, weights=w * dz**2, minlength=n_levels)
        spread = float(np.average((z - np.average(z, weights=size)) ** 2, weights=size))
        informed = info / max(spread, 1e-300) >= CENTRED_MIN_INFORMATION
        if informed.sum() < 2:
            return np.zeros(n_levels, dtype=bool)
        slope = np.bincount(index, weights=w * dz * resid, minlength=n_levels)[informed]
        slope = slope / info[informed]
        _, tau2_low, p_value = heterogeneity(slope, 1.0 / info[informed])
        signal = info * tau2_low >= SLOPES_CENTRED_MIN_SIGNAL
        ok &= informed & signal & (p_value < SLOPES_CENTRED_MAX_P_VALUE)
    return ok


def _level_information(
    family: Family,
    cells: pl.DataFrame,
    index: np.ndarray,
    n_levels: int,
    obs: pl.DataFrame | None = None,
    Z: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Each level's raw link-scale estimate and its information, and the cells' working
    weights and residuals around their level's estimate (for :func:`_slope_information`).

    Trials (binomial, beta-binomial): the empirical logit, information ``s f / n``, weights
    ``n p (1 - p)``. Exposure (Poisson, negative binomial): the log rate, information the
    count, weights ``exposure x rate``. The negative binomial and the beta-binomial then
    divide each observation's share by its variance inflation (:func:`_overdispersion`,
    estimated from ``obs``). Gaussian: the mean in units of the outcome's sd (identity link)
    or of its mean (log link), information ``rows / residual variance`` in those units, with
    the residual variance pooled within levels around each level's mean, or with random
    slopes around its own least-squares fit on its random design ``Z`` (cells x terms, see
    :func:`_within_level_ss`). Other variation from the fixed effects counts as residual
    variance or overdispersion, so the information errs on the low side (towards
    non-centring).
    """
    y = cells[Y].to_numpy().astype(float)
    size_col = size_column(family)
    size = cells[size_col].to_numpy().astype(float)
    ys = np.bincount(index, weights=y, minlength=n_levels)
    ns = np.bincount(index, weights=size, minlength=n_levels)
    if family.size_kind == "trials":
        p = (ys + 0.5) / (ns + 1.0)
        w = size * (p * (1.0 - p))[index]
        resid = (y - size * p[index]) / np.maximum(w, 1e-300)
        info = (ys + 0.5) * (ns - ys + 0.5) / (ns + 1.0)
        if family.per_observation and obs is not None:
            info, w = _overdispersion(family, obs, index, n_levels, p, info, w)
        return np.log((ys + 0.5) / (ns - ys + 0.5)), info, (w, resid)
    if family.size_kind == "exposure":
        rate = (ys + 0.5) / ns
        w = size * rate[index]
        resid = (y - w) / np.maximum(w, 1e-300)
        info = ys + 0.5
        if family.per_observation and obs is not None:
            info, w = _overdispersion(family, obs, index, n_levels, rate, info, w)
        return np.log(rate), info, (w, resid)
    mean = ys / ns  # gaussian: size is the number of rows of a cell
    cell_mean = y / size
    if Z is None:
        within, fitted = float(np.sum(size * (cell_mean - mean[index]) ** 2)), n_levels
    else:
        within, fitted = _within_level_ss(cell_mean, size, index, n_levels, Z)
    within += float(cells[SS].sum())
    dof = ns.sum() - fitted
    location, scale = outcome_scale(family, cells)
    unit = scale if family.link == "identity" else max(abs(float(np.exp(location))), 1e-300)
    resid_var = within / dof / unit**2 if dof > 0 and within > 0 else 1.0
    w = size / resid_var
    resid = (cell_mean - mean[index]) / unit
    return mean / unit, ns / resid_var, (w, resid)


def _within_level_ss(
    y: np.ndarray, size: np.ndarray, index: np.ndarray, n_levels: int, Z: np.ndarray
) -> tuple[float, int]:
    """Weighted sum of squares of the cell means ``y`` (weights ``size``) around each level's
    own least-squares fit on its random design ``Z`` (cells x terms), and the number of
    coefficients fitted (the sum of the levels' ranks).

    With random slopes the spread of each level's rows along its slopes is not residual
    variance: counted as such it understated sleepstudy's information about each subject's
    intercept and slope about threefold (``Reaction ~ Days + (Days | Subject)``: residual
    variance 1,850 against lme4's 655), so its subjects were non-centred and seed 1 of the
    defaults had 9 divergences in the upper tail of the slopes' sd (see
    :data:`SLOPES_CENTRED_MIN_SIGNAL`).
    """
    q = Z.shape[1]
    gram = np.empty((n_levels, q, q))
    for i in range(q):
        for j in range(q):
            gram[:, i, j] = np.bincount(index, weights=size * Z[:, i] * Z[:, j], minlength=n_levels)
    moment = np.stack(
        [np.bincount(index, weights=size * y * Z[:, i], minlength=n_levels) for i in range(q)],
        axis=1,
    )
    coef = np.einsum("lij,lj->li", np.linalg.pinv(gram, hermitian=True), moment)
    fit = np.einsum("ci,ci->c", Z, coef[index])
    rank = int(np.linalg.matrix_rank(gram, hermitian=True).sum())
    return float(np.sum(size * (y - fit) ** 2)), rank


def _overdispersion(
    family: Family,
    obs: pl.DataFrame,
    index: np.ndarray,
    n_levels: int,
    level_mean: np.ndarray,
    info: np.ndarray,
    w: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Level information and cell weights of :func:`_level_information` shrunk for
    overdispersion (negative binomial, beta-binomial).

    A moment estimate of the overdispersion around each level's mean (``level_mean``: rate
    or probability), pooled over the distinct observations ``obs`` (each with its
    multiplicity): ``1 / size = sum((y - mu)^2 - mu) / sum(mu^2)`` for the negative binomial
    (variance ``mu + mu^2 / size``), ``rho = 1 / (phi + 1) = sum((y - n p)^2 - n p q) /
    sum(n (n - 1) p q)`` for the beta-binomial (variance ``n p q (1 + (n - 1) rho)``), each
    at least 0. An observation's information about its level's mean is the Poisson or
    binomial one (``mu``, ``n p q``) divided by its variance inflation (``1 + mu / size``,
    ``1 + (n - 1) rho``); each level's ``info`` and each cell's weight ``w`` are scaled by
    the share that survives. Without it, the Poisson information of a level of large counts
    overstates what an overdispersed level's data say, and such levels were centred where
    their data pin them down about as loosely as the group distribution does (salamanders,
    ``count ~ spp + mined + (1 | site)``, default fits on seeds 1-12: 19 of 23 sites centred
    and 3 divergences, on seeds 1 and 2; with the shrunk information 17 centred and none,
    bulk ESS 1,850-2,470; grouseticks: 55 of 118 broods centred instead of 59, both clean).
    """
    cell = obs[CELL].to_numpy().astype(np.int64)
    level = index[cell]
    y = obs[Y].to_numpy().astype(float)
    size = obs[size_column(family)].to_numpy()
    size = size.astype(float)
    weight = obs[WEIGHT].to_numpy().astype(float)
    if family.size_kind == "exposure":
        mu = size * level_mean[level]
        base = mu
        excess = np.sum(weight * ((y - mu) ** 2 - mu))
        inflation = 1.0 + mu * max(excess, 0.0) / max(np.sum(weight * mu**2), 1e-300)
    else:
        p = level_mean[level]
        base = size * p * (1.0 - p)
        excess = np.sum(weight * ((y - size * p) ** 2 - base))
        pairs = np.sum(weight * (size - 1.0) * base)
        rho = min(max(excess, 0.0) / pairs, 1.0) if pairs > 0 else 0.0
        inflation = 1.0 + (size - 1.0) * rho
    kept = weight * base / inflation
    total = weight * base
    share_level = np.bincount(level, weights=kept, minlength=n_levels) / np.maximum(
        np.bincount(level, weights=total, minlength=n_levels), 1e-300
    )
    n_cells = len(index)
    share_cell = np.bincount(cell, weights=kept, minlength=n_cells) / np.maximum(
        np.bincount(cell, weights=total, minlength=n_cells), 1e-300
    )
    return info * share_level, w * share_cell


def _group_specs(
    groups: tuple[str, ...],
    levels: dict[str, list[str]],
    cells: pl.DataFrame,
    family: Family,
    designs: dict[str, tuple[tuple[str, ...], np.ndarray, Any, bool]] | None = None,
    obs: pl.DataFrame | None = None,
) -> list[GroupSpec]:
    """One :class:`GroupSpec` per grouping factor.

    ``designs`` holds the random design of each factor with slopes (see
    :func:`_random_design`); such a factor's levels are centred only where their data pin
    every term down (:func:`_slope_information`), and it takes no part in the nesting chains
    (see :mod:`bayesmer.pymc_model`); its Gaussian information is measured around each
    level's own fit on that design (:func:`_within_level_ss`). ``obs`` (the distinct
    observations, see :class:`bayesmer.collapse.Collapsed`) gives the negative binomial and
    the beta-binomial their overdispersion (:func:`_overdispersion`).
    """
    designs = designs or {}
    size_col = size_column(family)
    size = cells[size_col].to_numpy().astype(float)
    index = {
        g: cells[g].cast(pl.Enum(levels[g])).to_physical().to_numpy().astype(np.int64)
        for g in groups
    }
    parents = _parents({g: i for g, i in index.items() if g not in designs}, levels)
    parents.update(dict.fromkeys(designs))
    info: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    working: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for g in groups:
        Z = designs[g][1] if g in designs else None
        raw[g], info[g], working[g] = _level_information(
            family, cells, index[g], len(levels[g]), obs, Z
        )
    # A nested factor's spread is measured around its parent's levels.
    spread = {
        g: heterogeneity(raw[g], 1.0 / info[g], parents[g][1] if parents[g] else None)
        for g in groups
    }
    # the outermost factor of a chain of nested ones
    outermost = {p[0] for p in parents.values() if p is not None} - {
        g for g in groups if parents[g] is not None
    }
    centred: dict[str, np.ndarray] = {}
    for g in groups:
        _, tau2_low, p_value = spread[g]
        centred[g] = (
            (info[g] >= CENTRED_MIN_INFORMATION)
            & (info[g] * tau2_low >= 1.0)
            & (p_value < CENTRED_MAX_P_VALUE)
            & (g not in outermost)
        )
        if g in designs:
            terms, Z = designs[g][0], designs[g][1]
            centred[g] &= "(Intercept)" in terms
            centred[g] &= info[g] * tau2_low >= SLOPES_CENTRED_MIN_SIGNAL
            w, resid = working[g]
            centred[g] &= _slope_information(Z, terms, index[g], len(levels[g]), w, resid, size)
    split = _split_levels(parents, centred, {g: len(levels[g]) for g in groups})
    out: list[GroupSpec] = []
    for g in groups:
        parent, mapping = parents[g] if parents[g] is not None else (None, None)
        spec = GroupSpec(
            g, levels[g], index[g], info[g], centred[g], parent, mapping, split=split[g]
        )
        if g in designs:
            terms, Z, design, correlated = designs[g]
            spec = GroupSpec(
                g,
                levels[g],
                index[g],
                info[g],
                centred[g],
                terms=terms,
                Z=Z,
                correlated=correlated,
                design=design,
            )
        out.append(spec)
    return out

"""Checking a fitted model: PSIS-LOO, model comparison, posterior predictive checks, simulation
and prediction.

Everything here is computed from the posterior draws and the model specification. The fit runs
on collapsed cells (see :mod:`bayesmer.collapse`), but cross-validation and predictive checks
are about the *original* observations, so this module maps every row of the data back to its
cell and works per row:

- :func:`loo` computes the log-likelihood of each *distinct* original observation (a cell's
  predictors together with one row's outcome and trials or exposure), runs PSIS once per
  distinct observation and counts it as often as it occurs in the data. Identical rows have
  identical leave-one-out values, so this is exactly the per-row PSIS-LOO of the uncollapsed
  model, at the cost of the collapsed one.
- :func:`ppc` and :func:`simulate` draw replicated outcomes per original row (a Bernoulli row
  is replicated as a Bernoulli, not as part of its cell's binomial), so row-level statistics
  such as the share of zeros or the variance of the counts are right.

Rows are numbered from 0 in the data given to the model (``row``), counting the rows dropped for
missing values, so ``row`` indexes the user's own data frame.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import xarray as xr
from arviz_stats.base import array_stats
from scipy import special

from .arguments import resolve_ci
from .collapse import CELL, EXPOSURE, ROWS, TRIALS, WEIGHT, Y
from .compat import PREDICT, SIMULATE, reject, resolve_re
from .diagnostics import PACKAGE_DIR
from .draws import (
    GroupRows,
    fixed,
    group_cor,
    group_effects,
    group_sd,
    hdi,
    linear_predictor,
    new_effects,
    random_variance,
)
from .emmeans import QUADRATURE_NODES, marginal_link
from .spec import ModelSpec, level_expr, random_design, to_lazy, with_group_columns

if TYPE_CHECKING:
    from .models import Model

#: Pareto k above which a PSIS estimate is unreliable ("bad"), and above which it is useless
#: ("very bad"); the bins of :attr:`LooResult.pareto_k_counts`.
GOOD_K = 0.7
BAD_K = 1.0

#: Largest number of floats held at once in a (draws x observations) block.
BLOCK_VALUES = 2_000_000

#: Columns of the table :func:`ppc` returns, in order.
PPC_COLUMNS = (
    "statistic",
    "observed",
    "replicated_mean",
    "replicated_low",
    "replicated_high",
    "ppp",
)

_ROW, _OBS = "_row", "_obs"
_TYPES = ("response", "link")
_RE = ("groups", "zero", "marginal")
_OUTPUTS = ("mean", "table", "draws")
#: Allowed values of ``re`` in :func:`ppc`.
PPC_RE = ("groups", "new")


# ---------------------------------------------------------------------------------------------
# Rows of the data, mapped to the fitted cells


def _size_name(spec: ModelSpec) -> str:
    return "trials" if spec.family.name == "binomial" else "exposure"


def _outcome_exprs(spec: ModelSpec, schema: dict[str, pl.DataType]) -> tuple[pl.Expr, pl.Expr]:
    """Expressions giving each row's outcome (``_y``) and trials or exposure, as the fit did."""
    parsed = spec.formula
    resp = parsed.response
    col = resp.column
    if spec.family.name == "poisson":
        if parsed.exposure is not None:
            size = pl.col(parsed.exposure).cast(pl.Float64)
        elif parsed.offset is not None:
            size = pl.col(parsed.offset).cast(pl.Float64).exp()
        else:
            size = pl.lit(1.0, dtype=pl.Float64)
        return pl.col(col).cast(pl.Int64).alias(Y), size.alias(EXPOSURE)
    if resp.kind == "cbind_trials":
        return pl.col(col).cast(pl.Int64).alias(Y), pl.col(resp.second).cast(pl.Int64).alias(TRIALS)
    if resp.kind == "cbind_failures":
        trials = (pl.col(col) + pl.col(resp.second)).cast(pl.Int64)
        return pl.col(col).cast(pl.Int64).alias(Y), trials.alias(TRIALS)
    one = pl.lit(1, dtype=pl.Int64).alias(TRIALS)
    dtype = schema[col]
    if dtype == pl.Boolean or dtype.is_numeric():
        return pl.col(col).cast(pl.Int64).alias(Y), one
    success = spec.response_levels[1]
    return (pl.col(col).cast(pl.String) == success).cast(pl.Int64).alias(Y), one


def _predictor_exprs(
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


def _keys(spec: ModelSpec) -> list[str]:
    """Columns that define a cell (as in :func:`bayesmer.spec.build_spec`)."""
    parsed = spec.formula
    return list(dict.fromkeys([*parsed.fixed_variables, *parsed.random_variables, *parsed.groups]))


def _not_missing(columns: Sequence[str], schema: dict[str, pl.DataType]) -> pl.Expr:
    conds = [pl.col(c).is_not_null() for c in columns]
    conds += [pl.col(c).is_not_nan() for c in columns if schema[c].is_float()]
    return pl.all_horizontal(conds)


def row_table(model: Model) -> pl.DataFrame:
    """Every row used by the fit, in data order, with its cell and distinct observation.

    Parameters
    ----------
    model : Model

    Returns
    -------
    pl.DataFrame
        ``_row`` (0-based row number in ``model.data``), the cell key columns (factor levels as
        strings), ``_y``, ``_n`` or ``_e``, ``_cell`` (index into ``spec.cells``) and ``_obs``
        (index into ``spec.obs``).

    Raises
    ------
    RuntimeError
        If the data no longer match the fitted cells (the data frame was changed after the
        model was built).
    """
    spec = model.spec
    lf, _ = to_lazy(model.data)
    schema = dict(lf.collect_schema())
    cols = spec.formula.columns
    keys = _keys(spec)
    size_col = spec.size_col
    used, schema = with_group_columns(
        lf.with_row_index(_ROW).select(_ROW, *cols).filter(_not_missing(cols, schema)),
        spec.formula,
        schema,
    )
    rows = used.select(
        pl.col(_ROW).cast(pl.Int64),
        *_predictor_exprs(spec, schema, keys),
        *_outcome_exprs(spec, schema),
    ).collect(engine="streaming")
    cell_dtype = spec.cells.schema[CELL]
    if not spec.collapsed:
        rows = rows.with_columns(pl.int_range(pl.len(), dtype=cell_dtype).alias(CELL))
    elif keys:
        rows = rows.join(spec.cells.select(*keys, CELL), on=keys, how="left", maintain_order="left")
    else:
        rows = rows.with_columns(pl.lit(0, dtype=cell_dtype).alias(CELL))
    obs = spec.obs.with_row_index(_OBS).select(_OBS, CELL, Y, size_col)
    rows = rows.join(obs, on=[CELL, Y, size_col], how="left", maintain_order="left")
    check = rows.group_by(CELL).agg(pl.len().alias(ROWS), pl.col(Y).sum()).sort(CELL)
    expected = spec.cells.select(CELL, ROWS, Y).sort(CELL)
    if (
        rows[_OBS].null_count()
        or len(check) != len(expected)
        or not (check[ROWS].to_numpy() == expected[ROWS].to_numpy()).all()
        or not (check[Y].to_numpy() == expected[Y].to_numpy()).all()
    ):
        raise RuntimeError(
            "The model's data no longer match the cells it was fitted to (was the data frame "
            "changed after the model was built?); refit the model."
        )
    return rows


def _public_names(spec: ModelSpec) -> tuple[str, str, str]:
    """User-facing names of the row number, outcome and trials/exposure columns.

    ``row``, the response column and ``trials``/``exposure``, dot-prefixed in the unlikely
    case that a predictor already has that name.
    """
    taken = set(_keys(spec))
    row_name = _free_name("row", taken)
    y_name = _free_name(spec.formula.response.column, taken)
    return row_name, y_name, _free_name(_size_name(spec), taken)


def _public_rows(spec: ModelSpec, rows: pl.DataFrame) -> pl.DataFrame:
    """Rename the internal columns of :func:`row_table` for users and drop the indices."""
    row_name, y_name, size_name = _public_names(spec)
    return rows.select(
        pl.col(_ROW).alias(row_name),
        *_keys(spec),
        pl.col(Y).alias(y_name),
        pl.col(spec.size_col).alias(size_name),
    )


def _free_name(name: str, taken: set[str]) -> str:
    while name in taken:
        name = "." + name
    taken.add(name)
    return name


# ---------------------------------------------------------------------------------------------
# Draws -> linear predictor and log-likelihood


@dataclass(frozen=True)
class _Draws:
    """The draws needed for the linear predictor, read once: (S, p) and (S, levels) arrays
    ((S, levels, terms) for a factor with slopes; ``cor`` holds its (S, terms, terms)
    correlation matrices)."""

    b: np.ndarray
    u: dict[str, np.ndarray]
    sd: dict[str, np.ndarray]
    n_chains: int
    cor: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def read(cls, spec: ModelSpec, trace: xr.DataTree) -> _Draws:
        n_chains = trace["posterior"].sizes["chain"]
        u = {g.name: group_effects(trace, g) for g in spec.groups}
        sd = {g.name: group_sd(trace, g) for g in spec.groups}
        cor = {g.name: group_cor(trace, g) for g in spec.groups if g.slopes}
        return cls(fixed(trace), u, sd, n_chains, cor)

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


def _blocks(n: int, width: int) -> Iterator[slice]:
    """Slices of ``range(n)`` such that a block times ``width`` stays under BLOCK_VALUES."""
    step = max(1, BLOCK_VALUES // max(1, width))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _log_likelihood(
    spec: ModelSpec, eta: np.ndarray, y: np.ndarray, size: np.ndarray
) -> np.ndarray:
    """Log-likelihood of outcomes ``y`` with trials/exposure ``size`` given ``eta`` (no offset).

    ``eta`` has shape (draws, k); ``y`` and ``size`` shape (k,). Binomial terms include the
    binomial coefficient (zero for 0/1 rows) so the values are proper log probabilities.
    """
    y = y.astype(float)
    if spec.family.name == "binomial":
        n = size.astype(float)
        log_p, log_q = spec.family.log_probs(eta)
        const = special.gammaln(n + 1) - special.gammaln(y + 1) - special.gammaln(n - y + 1)
        succ = np.where(y > 0, y * log_p, 0.0)
        fail = np.where(n - y > 0, (n - y) * log_q, 0.0)
        return const + succ + fail
    log_mu = eta + np.log(size)
    return y * log_mu - np.exp(log_mu) - special.gammaln(y + 1)


def _relative_eff(trace: xr.DataTree, n_samples: int) -> float:
    """Relative efficiency for PSIS, as :func:`arviz_stats.loo` computes it.

    The mean-ESS of every posterior variable, averaged, over the number of draws (1 for a
    single chain).
    """
    posterior = trace["posterior"].to_dataset()
    if posterior.sizes["chain"] == 1:
        return 1.0
    ess = posterior.azstats.ess(method="mean")
    values = np.hstack([ess[v].values.ravel() for v in ess.data_vars])
    return float(np.mean(values) / n_samples)


# ---------------------------------------------------------------------------------------------
# LOO


@dataclass(frozen=True)
class LooResult:
    """PSIS-LOO estimate of a model's expected log predictive density.

    Attributes
    ----------
    elpd : float
        ELPD-LOO summed over the original observations.
    se : float
        Its standard error, ``sqrt(n * var(elpd_i))`` over the original observations.
    p_loo : float
        Effective number of parameters.
    n_obs : int
        Original observations (data rows used by the fit).
    pareto_k_counts : pl.DataFrame
        ``range, label, count, share``: observations per Pareto k bin (good ``k <= 0.7``,
        bad ``0.7 < k <= 1``, very bad ``k > 1``).
    pointwise : pl.DataFrame
        One row per original observation, in data order: ``row`` (0-based row number in the
        model's data), the predictor and group columns, the outcome, ``trials`` or
        ``exposure``, ``elpd_loo``, ``p_loo`` and ``pareto_k``.
    n_draws : int
        Posterior draws used.
    r_eff : float
        Relative efficiency of the draws used by PSIS.
    """

    elpd: float
    se: float
    p_loo: float
    n_obs: int
    pareto_k_counts: pl.DataFrame
    pointwise: pl.DataFrame
    n_draws: int
    r_eff: float

    @property
    def looic(self) -> float:
        """LOO information criterion, ``-2 * elpd``."""
        return -2.0 * self.elpd

    def __str__(self) -> str:
        lines = [
            f"PSIS-LOO over {self.n_obs} observations, {self.n_draws} posterior draws",
            f"  elpd_loo {self.elpd:10.1f}  (SE {self.se:.1f})",
            f"  p_loo    {self.p_loo:10.1f}",
            f"  looic    {self.looic:10.1f}",
            "Pareto k diagnostic:",
        ]
        for rng_, label, count, share in self.pareto_k_counts.iter_rows():
            lines.append(f"  {rng_:<11} {label:<9} {count:6d}  {share:6.1%}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"LooResult(elpd={self.elpd:.2f}, se={self.se:.2f}, p_loo={self.p_loo:.2f}, "
            f"n_obs={self.n_obs})"
        )


def _weighted_summary(
    elpd_i: np.ndarray, p_i: np.ndarray, weight: np.ndarray
) -> tuple[float, float, float]:
    """Sum, SE and p_loo of pointwise values each occurring ``weight`` times."""
    n = weight.sum()
    elpd = float(np.sum(weight * elpd_i))
    mean = elpd / n
    var = float(np.sum(weight * (elpd_i - mean) ** 2) / (n - 1)) if n > 1 else 0.0
    return elpd, float(np.sqrt(n * var)), float(np.sum(weight * p_i))


def _k_counts(k: np.ndarray, weight: np.ndarray) -> pl.DataFrame:
    n = weight.sum()
    bins = [
        ("(-Inf, 0.7]", "good", k <= GOOD_K),
        ("(0.7, 1]", "bad", (k > GOOD_K) & (k <= BAD_K)),
        ("(1, Inf)", "very bad", k > BAD_K),
    ]
    counts = [int(weight[mask].sum()) for _, _, mask in bins]
    return pl.DataFrame(
        {
            "range": [b[0] for b in bins],
            "label": [b[1] for b in bins],
            "count": counts,
            "share": [c / n for c in counts],
        },
        schema={"range": pl.String, "label": pl.String, "count": pl.Int64, "share": pl.Float64},
    )


def loo(model: Model) -> LooResult:
    """PSIS leave-one-out cross-validation per original observation.

    The model is fitted on collapsed cells, but each original data row is left out in turn:
    the pointwise log-likelihood is computed for every *distinct* observation (a cell together
    with one row's outcome and trials or exposure; for a Poisson model with an offset, at the
    row's own exposure), Pareto-smoothed importance sampling (``arviz_stats``) runs once per
    distinct observation, and each result is counted as many times as that observation occurs
    in the data. The sums, the SE (``sqrt(n * var)`` over the n rows) and p_loo are therefore
    exactly those of PSIS-LOO on the uncollapsed data. The relative efficiency used for the
    Pareto smoothing is the one :func:`arviz_stats.loo` computes from the posterior.

    Parameters
    ----------
    model : Model
        A fitted model.

    Returns
    -------
    LooResult

    Warns
    -----
    UserWarning
        When some observations have Pareto k > 0.7, naming them (row numbers and values); their
        LOO values are unreliable.

    Notes
    -----
    Computed once per fit and kept on the model: ``summary()``, ``loo()`` and
    :func:`compare` share the result (and the warning is given once).
    """
    cached = getattr(model, "_loo_cache", None)
    if cached is not None and cached[0] is model.posterior:
        return cached[1]
    result = _compute_loo(model)
    model._loo_cache = (model.posterior, result)
    return result


def _compute_loo(model: Model) -> LooResult:
    """PSIS-LOO of a fitted model (see :func:`loo`; this does the work, uncached)."""
    model._require_fit("loo")
    spec = model.spec
    trace = model.posterior
    draws = _Draws.read(spec, trace)
    S = draws.n
    n_draws_chain = S // draws.n_chains
    r_eff = _relative_eff(trace, S)

    obs = spec.obs
    cells = obs[CELL].to_numpy().astype(np.int64)
    y = obs[Y].to_numpy()
    size = obs[spec.size_col].to_numpy().astype(float)
    weight = obs[WEIGHT].to_numpy().astype(float)
    m = len(obs)
    elpd_i = np.empty(m)
    p_i = np.empty(m)
    k_i = np.empty(m)
    for block in _blocks(m, S):
        c = cells[block]
        ll = _log_likelihood(spec, draws.eta(spec.X[c], spec.group_rows(c)), y[block], size[block])
        ll = ll.T.reshape(-1, draws.n_chains, n_draws_chain)
        e, k, p = array_stats.loo(ll, chain_axis=-2, draw_axis=-1, r_eff=r_eff)
        elpd_i[block], k_i[block], p_i[block] = e, k, p

    elpd, se, p_loo = _weighted_summary(elpd_i, p_i, weight)
    rows = row_table(model)
    idx = rows[_OBS].to_numpy()
    pointwise = _public_rows(spec, rows).with_columns(
        pl.Series("elpd_loo", elpd_i[idx]),
        pl.Series("p_loo", p_i[idx]),
        pl.Series("pareto_k", k_i[idx]),
    )
    result = LooResult(
        elpd=elpd,
        se=se,
        p_loo=p_loo,
        n_obs=int(weight.sum()),
        pareto_k_counts=_k_counts(k_i, weight),
        pointwise=pointwise,
        n_draws=S,
        r_eff=r_eff,
    )
    if (k_i > GOOD_K).any():
        message = _high_k_message(spec, pointwise) + _many_parameters_note(spec, p_loo, weight)
        warnings.warn(message, UserWarning, skip_file_prefixes=(PACKAGE_DIR,))
    return result


def _many_parameters_note(spec: ModelSpec, p_loo: float, weight: np.ndarray) -> str:
    """A note for the high-k warning when p_loo exceeds n / 5 in a model with groups.

    With that many effective parameters per observation (one effect per small group), leaving
    one row out moves its group's effect a lot, and high Pareto k values are expected even
    when the model is right (Vehtari, Gelman & Gabry 2017; loo's ``pareto-k-diagnostic``).
    """
    n = float(weight.sum())
    if not spec.groups or p_loo <= n / 5:
        return ""
    names = ", ".join(repr(g.name) for g in spec.groups)
    return (
        f" Note: p_loo ({p_loo:.0f}) exceeds n/5 ({n / 5:.0f}): the model has many effective "
        "parameters per observation (one effect per small group), and then high k values are "
        "expected even for a correct model, as leaving one row out moves its group's effect. "
        f"To judge predictions for new groups, cross-validate by group: kfold(group) with "
        f"group one of {names}."
    )


def _high_k_message(spec: ModelSpec, pointwise: pl.DataFrame, shown: int = 5) -> str:
    """Name the observations with Pareto k > 0.7: their values and row numbers."""
    row_col, y_name, size_name = _public_names(spec)
    value_cols = [*_keys(spec), y_name, size_name]
    trivial_size = (spec.family.name == "poisson" and not spec.has_offset) or (
        spec.family.name == "binomial" and spec.formula.response.kind == "column"
    )
    shown_cols = value_cols[:-1] if trivial_size else value_cols
    bad = pointwise.filter(pl.col("pareto_k") > GOOD_K)
    groups = (
        bad.group_by(value_cols, maintain_order=True)
        .agg(pl.col(row_col), pl.col("pareto_k").first())
        .sort("pareto_k", descending=True)
    )
    parts = []
    for rec in groups.head(shown).iter_rows(named=True):
        values = ", ".join(f"{c}={_fmt_value(rec[c])}" for c in shown_cols)
        rows = rec[row_col]
        listed = ", ".join(str(r) for r in rows[:8]) + (", ..." if len(rows) > 8 else "")
        parts.append(f"{values} (k={rec['pareto_k']:.2f}; {len(rows)} row(s): {listed})")
    more = f"; and {len(groups) - shown} more" if len(groups) > shown else ""
    return (
        f"PSIS-LOO: Pareto k > {GOOD_K} for {len(bad)} of {len(pointwise)} observations, whose "
        f"leave-one-out estimates are unreliable: {'; '.join(parts)}{more}. Row numbers count "
        "from 0 in the model's data. Influential observations like these often point to a "
        "misspecified model (for counts, overdispersion)."
    )


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# compare


def compare(*models: Model, names: Sequence[str] | None = None) -> pl.DataFrame:
    """Rank models by their PSIS-LOO expected log predictive density, as ``loo_compare`` does.

    Parameters
    ----------
    *models : Model
        Two or more fitted models of the same observations (same data rows and outcomes).
    names : sequence of str, optional
        Labels for the ``model`` column; by default ``glm(formula)`` / ``glmer(formula)``.

    Returns
    -------
    pl.DataFrame
        Best model first: ``model, elpd_loo, se, elpd_diff, se_diff, p_loo, n_bad_k``.
        ``elpd_diff`` is the model's ELPD minus the best model's (0 for the best), ``se_diff``
        the SE of that difference from the paired pointwise differences
        (``sqrt(n * var(elpd_i - elpd_best_i))`` with the sample variance, as R's
        ``loo_compare``; ``arviz_stats.compare`` divides by n instead), ``n_bad_k`` the
        observations with Pareto k > 0.7.

    Raises
    ------
    ValueError
        With fewer than two models, when ``names`` does not match them, or when the models are
        not fitted to the same observations.
    """
    if len(models) == 1 and isinstance(models[0], list | tuple):
        models = tuple(models[0])
    if len(models) < 2:
        raise ValueError(f"compare() needs at least two models, got {len(models)}.")
    if names is None:
        labels = [f"{m._kind}({m.formula})" for m in models]
        labels = [
            lab if labels.count(lab) == 1 else f"{lab} #{labels[: i + 1].count(lab)}"
            for i, lab in enumerate(labels)
        ]
    else:
        labels = [str(n) for n in names]
        if len(labels) != len(models) or len(set(labels)) != len(labels):
            raise ValueError(
                f"names must give one distinct label per model: {len(models)} models, "
                f"names {labels}."
            )
    results = [loo(m) for m in models]
    rows = [_observations(m, r.pointwise) for m, r in zip(models, results, strict=True)]
    for label, res, (row, y, size) in zip(labels[1:], results[1:], rows[1:], strict=True):
        if res.n_obs != results[0].n_obs:
            raise ValueError(
                f"compare() needs models of the same observations: {labels[0]!r} uses "
                f"{results[0].n_obs} rows, {label!r} uses {res.n_obs} (different data or "
                "different rows dropped for missing values)."
            )
        same_rows = (row == rows[0][0]).all()
        same_y = (y == rows[0][1]).all()
        same_size = np.allclose(size, rows[0][2], rtol=1e-9, atol=0.0)  # any units
        if not (same_rows and same_y and same_size):
            raise ValueError(
                f"compare() needs models of the same observations: {labels[0]!r} and "
                f"{label!r} differ in which rows they use or in their outcomes."
            )
    elpd_rows = np.column_stack([r.pointwise["elpd_loo"].to_numpy() for r in results])
    order = np.argsort([-r.elpd for r in results], kind="stable")
    best = order[0]
    n = elpd_rows.shape[0]
    out = []
    for i in order:
        diff = elpd_rows[:, i] - elpd_rows[:, best]
        se_diff = float(np.sqrt(n * np.var(diff, ddof=1))) if n > 1 else 0.0
        out.append(
            {
                "model": labels[i],
                "elpd_loo": results[i].elpd,
                "se": results[i].se,
                "elpd_diff": float(diff.sum()),
                "se_diff": se_diff,
                "p_loo": results[i].p_loo,
                "n_bad_k": int((results[i].pointwise["pareto_k"] > GOOD_K).sum()),
            }
        )
    return pl.DataFrame(out)


def _observations(
    model: Model, pointwise: pl.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row numbers, outcomes and trials/exposure of a LOO pointwise table."""
    names = _public_names(model.spec)
    return tuple(pointwise[c].to_numpy() for c in names)


# ---------------------------------------------------------------------------------------------
# Replicated data


def _row_means(
    spec: ModelSpec,
    draws: _Draws,
    cells: np.ndarray,
    sel: slice | np.ndarray,
    re: str = "groups",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Success probability (binomial) or rate per unit exposure (Poisson) per cell and draw.

    ``re`` says which group effects enter (see :func:`simulate`); ``'new'`` draws them afresh
    from N(0, sd), one set per draw of ``sel``, shared by the cells of a level.
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


def _replicate(
    spec: ModelSpec,
    draws: _Draws,
    rows: pl.DataFrame,
    sel: slice | np.ndarray,
    rng: np.random.Generator,
    re: str = "groups",
) -> np.ndarray:
    """Replicated outcomes of every row for the draws ``sel``: shape (draws, rows)."""
    cells_used, inverse = np.unique(rows[CELL].to_numpy().astype(np.int64), return_inverse=True)
    mean = _row_means(spec, draws, cells_used, sel, re, rng)[:, inverse]
    size = rows[spec.size_col].to_numpy()
    if spec.family.name == "binomial":
        return rng.binomial(size.astype(np.int64), np.clip(mean, 0.0, 1.0))
    return rng.poisson(mean * size)


def _new_group_draws(spec: ModelSpec, draws: _Draws, rng: np.random.Generator) -> _Draws:
    """The draws with fresh group effects for every level (see :meth:`_Draws.new_levels`)."""
    return _Draws(draws.b, draws.new_levels(spec, rng), draws.sd, draws.n_chains, draws.cor)


Statistic = Callable[[np.ndarray, pl.DataFrame], np.ndarray]

#: Statistics ``ppc`` knows by name.
_NAMED = ("mean", "var", "sd", "zeros", "max", "min")


def _named_stat(name: str, spec: ModelSpec, rows: pl.DataFrame) -> Statistic:
    """A statistic of :data:`_NAMED` over all rows; ``mean`` is successes/trials if binomial."""
    if name == "mean":
        if spec.family.name == "binomial":
            trials = float(rows[TRIALS].sum())
            return lambda y, d: y.sum(axis=1) / trials
        return lambda y, d: y.mean(axis=1)
    if name == "var":
        return lambda y, d: y.var(axis=1, ddof=1)
    if name == "sd":
        return lambda y, d: y.std(axis=1, ddof=1)
    if name == "zeros":
        return lambda y, d: (y == 0).mean(axis=1)
    if name == "max":
        return lambda y, d: y.max(axis=1).astype(float)
    return lambda y, d: y.min(axis=1).astype(float)


def _by_level(column: str, spec: ModelSpec, rows: pl.DataFrame) -> dict[str, Statistic]:
    """Mean outcome (proportion of successes, or mean count) per level of ``column``."""
    levels = (
        next(g.levels for g in spec.groups if g.name == column)
        if column in {g.name for g in spec.groups}
        else spec.factors[column]
    )
    values = rows[column].to_numpy()
    denom_col = TRIALS if spec.family.name == "binomial" else None
    out: dict[str, Statistic] = {}
    for level in levels:
        mask = values == level
        if not mask.any():
            continue
        denom = float(rows[denom_col].to_numpy()[mask].sum()) if denom_col else float(mask.sum())
        out[f"mean[{column}={level}]"] = lambda y, d, mask=mask, denom=denom: (
            y[:, mask].sum(axis=1) / denom
        )
    return out


def _spread(column: str, spec: ModelSpec, rows: pl.DataFrame) -> Statistic:
    """The sd (ddof=1) across the levels of a grouping column of their mean outcomes.

    Means as in :func:`_by_level`: the proportion of successes, or the mean count.
    """
    levels, index = np.unique(rows[column].to_numpy(), return_inverse=True)
    if spec.family.name == "binomial":
        denom = np.bincount(index, rows[TRIALS].to_numpy().astype(float), len(levels))
    else:
        denom = np.bincount(index, minlength=len(levels)).astype(float)
    members = np.zeros((len(rows), len(levels)))
    members[np.arange(len(rows)), index] = 1.0 / denom[index]
    return lambda y, d: (y @ members).std(axis=1, ddof=1)


def _statistics(
    stat: Any, spec: ModelSpec, rows: pl.DataFrame, new_groups: bool = False
) -> dict[str, Statistic]:
    """Resolve ``stat`` into named statistics ``f(y (data sets, rows), data) -> (data sets,)``.

    With ``new_groups`` the default statistics summarise each grouping column by the spread
    of its level means (``sd[<col> means]``) instead of one mean per level.
    """
    level_cols = [*spec.factors, *(g.name for g in spec.groups)]
    if stat is None:
        out = {"mean": _named_stat("mean", spec, rows)}
        group_cols = {g.name for g in spec.groups}
        for col in dict.fromkeys(level_cols):
            if new_groups and col in group_cols:
                out[f"sd[{col} means]"] = _spread(col, spec, rows)
            else:
                out.update(_by_level(col, spec, rows))
        if spec.family.name == "poisson":
            out["zeros"] = _named_stat("zeros", spec, rows)
            out["var"] = _named_stat("var", spec, rows)
        return out
    if isinstance(stat, str) or callable(stat):
        stat = [stat]
    if isinstance(stat, dict):
        items = list(stat.items())
    elif isinstance(stat, list | tuple):
        items = [
            (s if isinstance(s, str) else getattr(s, "__name__", f"stat{i}"), s)
            for i, s in enumerate(stat)
        ]
    else:
        raise TypeError(
            "stat must be None, a statistic name, a column name, a callable, or a list or dict "
            f"of these; got {type(stat).__name__}."
        )
    out = {}
    for name, s in items:
        if callable(s):
            out[str(name)] = s
        elif isinstance(s, str) and s in _NAMED:
            out[str(name)] = _named_stat(s, spec, rows)
        elif isinstance(s, str) and s in level_cols:
            out.update(_by_level(s, spec, rows))
        else:
            raise ValueError(
                f"Unknown statistic {s!r}: use one of {sorted(_NAMED)}, a factor or group "
                f"column of the model ({level_cols}), or a callable f(y, data) returning one "
                "value per replicated data set."
            )
    return out


def _evaluate(name: str, f: Statistic, y: np.ndarray, rows: pl.DataFrame) -> np.ndarray:
    """Apply a statistic to data sets ``y`` (data sets x rows), checking its output."""
    values = np.asarray(f(y, rows), dtype=float)
    if values.shape != (y.shape[0],):
        raise ValueError(
            f"Statistic {name!r} must return one value per replicated data set; it returned "
            f"shape {values.shape} for {y.shape[0]} data set(s) of shape {y.shape}."
        )
    return values


def ppc(
    model: Model,
    stat: Any = None,
    ci: float | None = None,
    random_seed: int | None = None,
    re: str = "groups",
) -> pl.DataFrame:
    """Posterior predictive check: observed statistics against replicated data sets.

    One replicated data set is drawn per posterior draw, one outcome per original row
    (binomial rows as Binomial(trials, p), Poisson rows as Poisson(rate * exposure)), and each
    statistic is computed on the observed and on every replicated data set.

    Parameters
    ----------
    model : Model
        A fitted model.
    stat : str, callable, list or dict, optional
        The statistics. By default: ``mean`` (the proportion of successes for binomial
        models, the mean count for Poisson ones), ``mean[col=level]`` for every level of every
        factor and grouping column (with ``re='new'``, ``sd[col means]`` for a grouping
        column instead, see ``re``), and for Poisson models ``zeros`` (share of zero counts) and
        ``var`` (variance of the counts across rows; above its replicated range in
        overdispersed data). Names: ``'mean'``, ``'var'``, ``'sd'``, ``'zeros'``, ``'max'``,
        ``'min'``, or a factor/group column (its per-level means). A callable
        ``f(y, data)`` gets ``y``, an integer array (data sets x rows) of outcomes, rows in data
        order, and ``data``, those rows as :func:`simulate` lists them (``row``, predictors,
        observed outcome, ``trials`` or ``exposure``), and returns one value per data set.
        A dict maps names to any of these.
    ci : float, optional
        Mass of the interval of the replicated statistic (highest density); the model's
        ``ci`` by default.
    random_seed : int, optional
        Seed of the replication.
    re : {'groups', 'new'}, default 'groups'
        The group effects of the replicated data (models with random effects only):

        - ``'groups'``: the fitted effects of the observed groups, draw by draw: new chicks in
          the same broods. This check is lenient about the groups: effects fitted to many
          small groups absorb extra variation, so the per-group statistics are reproduced
          almost whatever the model assumes about how the groups vary.
        - ``'new'``: per posterior draw, fresh effects ``u ~ N(0, sd)`` for every level of
          every grouping factor (one effect per level, shared by its rows): a new set of
          broods of the same sizes and predictors. It checks the population model of the
          groups (is a normal spread of that size enough to produce the observed spread of
          the group means?). Its default statistics therefore replace the per-level means of
          each grouping column by ``sd[<col> means]``, the sd across its levels of their mean
          outcomes (a particular group's mean compared with any new group's says little).

        Neither shows that the model predicts well: ppp values near 0.5 only say that the
        chosen statistics are not at odds with the model, and a statistic that the model
        fits directly (the overall mean, the mean of each level of a fixed factor) is
        reproduced by construction. New-group replication is drawn first, then the
        outcomes, from the same ``random_seed`` stream.

    Returns
    -------
    pl.DataFrame
        ``statistic, observed, replicated_mean, replicated_low, replicated_high, ppp``, where
        ``ppp`` (the posterior predictive p-value) is the share of replicated statistics at or
        above the observed one: values near 0 or 1 flag a feature of the data the model does
        not reproduce. For discrete statistics ties count as "at or above", so a well fitting
        model gives values somewhat above 0.5.

    Raises
    ------
    ValueError
        For an unknown statistic name, a statistic that does not return one value per data
        set, a ``ci`` outside (0, 1), or an unknown ``re``.
    TypeError
        If ``stat`` is none of the accepted kinds.
    """
    model._require_fit("ppc")
    if not isinstance(re, str) or re not in PPC_RE:
        raise ValueError(f"re must be one of {list(PPC_RE)}, got {re!r}.")
    if re == "new" and not model.spec.groups:
        raise ValueError("re='new' draws new group effects, and this model has none.")
    ci = resolve_ci(model, ci)
    spec = model.spec
    rows = row_table(model)
    stats = _statistics(stat, spec, rows, new_groups=re == "new")
    draws = _Draws.read(spec, model.posterior)
    rng = np.random.default_rng(random_seed)
    if re == "new":
        draws = _new_group_draws(spec, draws, rng)
    y_obs = rows[Y].to_numpy()
    data = _public_rows(spec, rows)
    observed = {
        name: float(_evaluate(name, f, y_obs[None, :], data)[0]) for name, f in stats.items()
    }
    replicated = {name: np.empty(draws.n) for name in stats}
    for block in _blocks(draws.n, len(rows)):
        y_rep = _replicate(spec, draws, rows, block, rng)
        for name, f in stats.items():
            replicated[name][block] = _evaluate(name, f, y_rep, data)
    out = []
    for name in stats:
        rep = replicated[name]
        lo, hi = hdi(rep[:, None], ci)[0]
        out.append(
            {
                "statistic": name,
                "observed": observed[name],
                "replicated_mean": float(rep.mean()),
                "replicated_low": float(lo),
                "replicated_high": float(hi),
                "ppp": float(np.mean(rep >= observed[name])),
            }
        )
    return pl.DataFrame(out).select(PPC_COLUMNS)


#: Choices of ``re`` for :func:`simulate`.
SIMULATE_RE = ("groups", "zero", "marginal", "new")


def simulate(
    model: Model,
    nsim: int = 1,
    use_rfx: bool | None = None,
    *,
    re: str | None = None,
    random_seed: int | None = None,
    with_data: bool = False,
    **kwargs: Any,
) -> pl.DataFrame:
    """Replicated data sets drawn from the posterior predictive distribution.

    Each data set uses one posterior draw (picked at random; distinct draws while ``nsim``
    does not exceed the number of draws) and draws one outcome per original row.

    Parameters
    ----------
    model : Model
        A fitted model.
    nsim : int, default 1
        Number of data sets.
    use_rfx : bool, optional
        pymer4's switch: True is ``re='groups'``, False is ``re='new'`` (lme4's
        ``re.form=NA``). Give it or ``re``, not both.
    re : {'groups', 'zero', 'marginal', 'new'}, optional
        Group effects (models with random effects; default ``'groups'``): ``'groups'`` each
        row's fitted group effects (lme4's ``re.form=NULL``); ``'zero'`` a typical group
        (effects 0); ``'marginal'`` the mean averaged over the population of groups;
        ``'new'`` group effects drawn afresh from N(0, sd) for every data set, one per level
        shared by its rows (lme4's ``re.form=NA``).
    random_seed : int, optional
        The same seed gives the same data sets (pymer4's ``seed=`` is taken too).
    with_data : bool, default False
        Put the rows before the simulations: ``row`` (0-based row number in the model's
        data), the predictor and group columns (factor levels as strings), the observed
        outcome (named after the response column; successes for binomial models), and
        ``trials`` or ``exposure``.

    Returns
    -------
    pl.DataFrame
        ``sim_1`` ... ``sim_<nsim>`` (pymer4's layout), one row per original observation in
        data order (rows dropped for missing values left out); the replicated outcomes
        (binomial: successes, 0/1 for a 0/1 response).

    Raises
    ------
    ValueError
        If ``nsim`` is not a positive integer or ``re`` is not a choice.
    TypeError
        For both ``re`` and ``use_rfx``, or an argument simulate does not take.
    """
    seed = kwargs.pop("seed", None)
    reject("simulate", SIMULATE, kwargs)
    if seed is not None:
        if random_seed is not None:
            raise TypeError("give either random_seed= or pymer4's seed=, not both.")
        random_seed = seed
    model._require_fit("simulate")
    if isinstance(nsim, bool) or not isinstance(nsim, int | np.integer) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}.")
    spec = model.spec
    re = resolve_re(re, use_rfx, bool(spec.groups), "groups", "new")
    if re not in SIMULATE_RE:
        raise ValueError(f"re must be one of {list(SIMULATE_RE)}, got {re!r}.")
    rows = row_table(model)
    draws = _Draws.read(spec, model.posterior)
    rng = np.random.default_rng(random_seed)
    picked = rng.choice(draws.n, size=nsim, replace=nsim > draws.n)
    sims = np.empty((nsim, len(rows)), dtype=np.int64)
    for block in _blocks(nsim, len(rows)):
        sims[block] = _replicate(spec, draws, rows, picked[block], rng, re)
    columns = [pl.Series(f"sim_{i + 1}", sims[i]) for i in range(nsim)]
    if with_data:
        return _public_rows(spec, rows).with_columns(columns)
    return pl.DataFrame(columns)


# ---------------------------------------------------------------------------------------------
# predict


@dataclass(frozen=True)
class _Design:
    """Rows to predict: what to show, design matrix, group levels and random designs (see
    :data:`bayesmer.draws.GroupRows`; levels of -1 when the groups are not given) and log
    exposure."""

    frame: pl.DataFrame
    X: np.ndarray
    groups: dict[str, GroupRows]
    log_exposure: np.ndarray
    #: Which rows of ``frame`` are predicted (the others miss a value); None for all.
    complete: np.ndarray | None = None


def _fitted_design(model: Model) -> _Design:
    spec = model.spec
    rows = row_table(model)
    cells = rows[CELL].to_numpy().astype(np.int64)
    log_exposure = np.zeros(len(rows))
    if spec.family.name == "poisson":
        log_exposure = np.log(rows[EXPOSURE].to_numpy())
    return _Design(
        _public_rows(spec, rows),
        spec.X[cells],
        spec.group_rows(cells),
        log_exposure,
    )


def _new_design(model: Model, data: Any, re: str, allow_missing: bool = False) -> _Design:
    """Validate new data against the model and build its design.

    With ``allow_missing``, rows missing a needed value are left out of the design and
    marked in ``complete`` (their predictions are NaN, as R's predict gives NA).
    """
    spec = model.spec
    parsed = spec.formula
    lf, _ = to_lazy(data)
    schema = dict(lf.collect_schema())
    predictors = list(parsed.fixed_variables)
    if re != "zero":  # the random slopes' columns
        predictors = list(dict.fromkeys([*predictors, *parsed.random_variables]))
    sources = [c for g in parsed.groups for c in parsed.group_sources(g)] if re == "groups" else []
    offset_col = parsed.exposure or parsed.offset
    needed = list(dict.fromkeys([*predictors, *sources, *([offset_col] if offset_col else [])]))
    missing = [c for c in needed if c not in schema]
    if missing:
        raise ValueError(
            f"predict() needs the column(s) {missing} in data (used by {parsed.formula!r}"
            + (
                ", with re='groups', the default: each row's fitted group effects; use "
                "re='zero' (a typical group) or re='marginal' (averaged over the groups) "
                "to predict without them"
                if set(missing) & set(sources)
                else ""
            )
            + f"); the data has {list(schema)}."
        )
    raw = lf.select(needed).collect()
    if len(raw) == 0:
        raise ValueError("predict() got data with no rows.")
    has_missing = [
        c
        for c in needed
        if raw[c].null_count() or (schema[c].is_float() and bool(raw[c].is_nan().any()))
    ]
    complete = None
    frame = raw
    if has_missing:
        if not allow_missing:
            raise ValueError(
                f"predict() data has missing values in the column(s) {has_missing}; "
                "output='mean' or 'table' give NaN/null for those rows."
            )
        keep = raw.select(_not_missing(needed, schema)).to_series()
        complete = keep.to_numpy()
        raw = raw.filter(keep)
    not_numeric = [c for c in predictors if c in spec.numeric and not schema[c].is_numeric()]
    if not_numeric:
        raise ValueError(
            f"predict(): column(s) {not_numeric} must be numeric, as in the fit; got "
            f"{[str(schema[c]) for c in not_numeric]}."
        )
    if re == "groups":
        combined, schema = with_group_columns(raw.lazy(), parsed, schema)
        raw = combined.collect()
        predictors = list(dict.fromkeys([*predictors, *parsed.groups]))
    converted = raw.select(_predictor_exprs(spec, schema, predictors))
    for col, levels in spec.factors.items():
        if col not in converted.columns:  # a random slope's column, unused with re='zero'
            continue
        unknown = sorted(set(converted[col].to_list()) - set(levels))
        if unknown:
            raise ValueError(
                f"predict() data has level(s) {unknown} of {col!r} that the model was not "
                f"fitted with; its levels are {levels}."
            )
    group_index = {g.name: np.full(len(raw), -1, dtype=np.int64) for g in spec.groups}
    if re == "groups":
        for g in spec.groups:
            values = converted[g.name].to_list()
            unknown = sorted(set(values) - set(g.levels))
            if unknown:
                shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
                raise ValueError(
                    f"re='groups' uses the fitted group effects, but {g.name!r} has level(s) "
                    f"not in the fit: {shown}. Use re='marginal' (average over the groups) or "
                    "re='zero' (a typical group) for new groups."
                )
            lookup = {lv: i for i, lv in enumerate(g.levels)}
            group_index[g.name] = np.array([lookup[v] for v in values], dtype=np.int64)
    if len(raw) == 0:  # every row misses a value
        X = np.zeros((0, len(spec.terms)))
    elif parsed.fixed_variables:
        X = spec.design_matrix(converted)
    else:
        X = np.ones((len(raw), 1))
    log_exposure = np.zeros(len(raw))
    if parsed.exposure is not None:
        e = raw[parsed.exposure].cast(pl.Float64).to_numpy()
        if (e <= 0).any():
            raise ValueError(f"Exposure column {parsed.exposure!r} must be > 0 in data.")
        log_exposure = np.log(e)
    elif parsed.offset is not None:
        log_exposure = raw[parsed.offset].cast(pl.Float64).to_numpy()
    groups = {
        g.name: (
            group_index[g.name],
            None
            if not g.slopes or re == "zero"
            else random_design(spec, g, converted)
            if len(raw)
            else np.zeros((0, len(g.terms))),
        )
        for g in spec.groups
    }
    row_name = _free_name("row", set(needed))
    frame = frame.with_row_index(row_name).with_columns(pl.col(row_name).cast(pl.Int64))
    return _Design(frame, X, groups, log_exposure, complete)


def predict(
    model: Model,
    data: Any = None,
    type_predict: str = "response",
    use_rfx: bool | None = None,
    *,
    re: str | None = None,
    output: str = "mean",
    ci: float | None = None,
    **kwargs: Any,
) -> np.ndarray | pl.DataFrame:
    """Predictions per row of new data (or of the data the model was fitted to).

    Parameters
    ----------
    model : Model
        A fitted model.
    data : polars or pandas DataFrame, optional
        Rows to predict, holding the predictor columns (and the exposure or offset column of a
        Poisson model with an offset; the grouping columns with ``re='groups'``). By default
        the rows the model was fitted to, in data order (rows dropped for missing values left
        out). A row of ``data`` missing a needed value gets NaN (``output='mean'``) or nulls
        (``output='table'``), as R's predict gives NA; ``output='draws'`` refuses it.
    type_predict : {'response', 'link'}, default 'response'
        ``'response'``: the probability (binomial) or the expected count at the row's exposure
        (Poisson; the rate when the model has no offset). ``'link'``: the linear predictor,
        offset included (pymer4's name and values).
    use_rfx : bool, optional
        pymer4's switch: True is ``re='groups'``, False is ``re='zero'``. Give it or ``re``,
        not both.
    re : {'groups', 'zero', 'marginal'}, optional
        Group effects (models with random effects; default ``'groups'``, as lme4 and pymer4):
        ``'groups'`` adds each row's fitted group effects, so every row's group must be one of
        the fit (lme4's ``re.form=NULL``); ``'zero'`` predicts for a typical group (effects at
        0; lme4's ``re.form=NA``); ``'marginal'`` averages the response over the fitted normal
        distribution of the group effects (Gauss-Hermite quadrature per draw, over the summed
        variance of every grouping factor), a population-averaged prediction; with
        ``type_predict='link'`` it returns the link of that average. Models without groups
        give the same for all three.
    output : {'mean', 'table', 'draws'}, default 'mean'
        ``'mean'``: a NumPy array of the posterior mean per row (pymer4's return type; the
        posterior mean of the probability or rate, or of the linear predictor with
        ``type_predict='link'``). ``'table'``: a polars table with the posterior median, sd
        and highest-density interval per row. ``'draws'``: every draw, long form.
    ci : float, optional
        Mass of the highest-density interval (``output='table'``); the model's ``ci`` by
        default.

    Returns
    -------
    numpy.ndarray or pl.DataFrame
        ``output='mean'``: shape (rows,). ``output='table'``: the rows (``row``, 0-based,
        and the columns used; for the fitted data also the outcome and
        ``trials``/``exposure``) with ``estimate`` (posterior median), ``sd``, ``conf_low``
        and ``conf_high``. ``output='draws'``: ``row, .draw, prediction``, one line per row
        and posterior draw (chains stacked); join on ``row`` for the predictors.

    Raises
    ------
    ValueError
        For an unknown ``type_predict``, ``re`` or ``output``, a ``ci`` outside (0, 1),
        missing columns in ``data`` (or missing values with ``output='draws'``), factor
        levels the model was not fitted with,
        or (``re='groups'``) groups not in the fit.
    TypeError
        For both ``re`` and ``use_rfx``, or pymer4 arguments bayesmer does not take
        (``allow_new_levels``: choose ``re`` instead).
    """
    reject("predict", PREDICT, kwargs)
    model._require_fit("predict")
    if type_predict not in _TYPES:
        raise ValueError(f"type_predict must be one of {_TYPES}, got {type_predict!r}.")
    spec = model.spec
    re = resolve_re(re, use_rfx, bool(spec.groups), "groups", "zero")
    if re not in _RE:
        raise ValueError(f"re must be one of {_RE}, got {re!r}.")
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}.")
    if not spec.groups:
        re = "zero"
    ci = resolve_ci(model, ci)
    if data is None:
        design = _fitted_design(model)
    else:
        design = _new_design(model, data, re, allow_missing=output != "draws")
    draws = _Draws.read(spec, model.posterior)
    groups = design.groups if re == "groups" else {}
    sigma = None
    if re == "marginal":
        sigma = draws.random_sd(
            spec, {name: Z for name, (_, Z) in design.groups.items()}, slice(None)
        )
    n_rows = design.X.shape[0]
    width = draws.n * (QUADRATURE_NODES if sigma is not None else 1)
    values = np.empty((draws.n, n_rows)) if output == "draws" else None
    means = np.empty(n_rows)
    stats = {k: np.empty(n_rows) for k in ("estimate", "sd", "conf_low", "conf_high")}
    for block in _blocks(n_rows, width):
        gi = {
            name: (index[block], None if Z is None else Z[block])
            for name, (index, Z) in groups.items()
        }
        eta = draws.eta(design.X[block], gi)
        offset = design.log_exposure[block]
        if sigma is not None:
            eta = marginal_link(spec.family, eta, sigma if sigma.shape[1] == 1 else sigma[:, block])
        # a Poisson row's exposure shifts the link; the offset is 0 for binomial models
        link = eta + offset
        v = link if type_predict == "link" else spec.family.inverse_link(link)
        if output == "mean":
            means[block] = v.mean(axis=0)
        elif output == "table":
            bounds = hdi(v, ci)
            stats["estimate"][block] = np.median(v, axis=0)
            stats["sd"][block] = v.std(axis=0, ddof=1)
            stats["conf_low"][block] = bounds[:, 0]
            stats["conf_high"][block] = bounds[:, 1]
        else:
            values[:, block] = v
    if output == "mean":
        return _with_missing_rows(means, design.complete)
    if output == "table":
        return design.frame.with_columns(
            [
                pl.Series(k, _with_missing_rows(v, design.complete)).fill_nan(None)
                for k, v in stats.items()
            ]
        )
    row_name = design.frame.columns[0]
    rows = design.frame[row_name].to_numpy()
    return pl.DataFrame(
        {
            row_name: np.tile(rows, draws.n),
            ".draw": np.repeat(np.arange(draws.n, dtype=np.int64), n_rows),
            "prediction": values.ravel(),
        }
    )


def _with_missing_rows(values: np.ndarray, complete: np.ndarray | None) -> np.ndarray:
    """Values of the complete rows, with NaN for the rows that miss a value."""
    if complete is None:
        return values
    out = np.full(len(complete), np.nan)
    out[complete] = values
    return out


def fitted_values(model: Model, type_predict: str = "response") -> tuple[np.ndarray, np.ndarray]:
    """``fitted`` and ``residuals`` for every row of ``model.data`` (NaN for dropped rows).

    ``fitted`` is what :func:`predict` gives for the fitted rows (posterior mean, each row's
    own group effects) on the scale of ``type_predict``; ``residuals`` is the outcome (a
    proportion of trials for binomial models) minus the response-scale posterior mean. The
    means are computed once per fitted cell and spread to its rows (a Poisson row's exposure
    scales its cell's mean rate, or shifts its mean link), so a fit on a million rows in a few
    cells costs the few cells.
    """
    spec = model.spec
    rows = row_table(model)
    draws = _Draws.read(spec, model.posterior)
    n_cells = spec.X.shape[0]
    mean_link = np.empty(n_cells)
    mean_response = np.empty(n_cells)
    for block in _blocks(n_cells, draws.n):
        eta = draws.eta(spec.X[block], spec.group_rows(np.arange(n_cells)[block]))
        mean_link[block] = eta.mean(axis=0)
        mean_response[block] = spec.family.inverse_link(eta).mean(axis=0)
    cells = rows[CELL].to_numpy().astype(np.int64)
    y = rows[Y].to_numpy().astype(float)
    if spec.family.name == "poisson":
        exposure = rows[EXPOSURE].to_numpy()
        response = mean_response[cells] * exposure
        link = mean_link[cells] + np.log(exposure)
    else:
        response = mean_response[cells]
        link = mean_link[cells]
        y = y / rows[TRIALS].to_numpy()
    n_data = model.data.height if isinstance(model.data, pl.DataFrame) else len(model.data)
    index = rows[_ROW].to_numpy()
    fitted = np.full(n_data, np.nan)
    residuals = np.full(n_data, np.nan)
    fitted[index] = response if type_predict == "response" else link
    residuals[index] = y - response
    return fitted, residuals

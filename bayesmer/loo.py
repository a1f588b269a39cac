"""PSIS-LOO per original observation, and model comparison by it.

:func:`loo` computes the log-likelihood of each *distinct* original observation (a cell's
predictors together with one row's outcome and trials or exposure; see
:func:`bayesmer.rows.row_table`), runs PSIS once per distinct observation and counts it as
often as it occurs in the data. Identical rows have identical leave-one-out values, so this is
exactly the per-row PSIS-LOO of the uncollapsed model, at the cost of the collapsed one.
:func:`compare` ranks models of the same observations by it.

Rows are numbered from 0 in the data given to the model (``row``), counting the rows dropped for
missing values, so ``row`` indexes the user's own data frame.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from . import psis
from .collapse import CELL, WEIGHT, Y
from .diagnostics import PACKAGE_DIR, mean_ess
from .engines import runs_in_polars
from .parallel import map_blocks
from .rows import (
    OBS_INDEX,
    ROW_NUMBER,
    Draws,
    cell_blocks,
    cell_eta,
    cell_keys,
    free_name,
    public_names,
    public_rows,
    row_table,
)
from .spec import ModelSpec

if TYPE_CHECKING:
    import xarray as xr

    from .models import Model

#: Pareto k above which a PSIS estimate is unreliable ("bad"), and above which it is useless
#: ("very bad"); the bins of :attr:`LooResult.pareto_k_counts`.
GOOD_K = 0.7
BAD_K = 1.0


# ---------------------------------------------------------------------------------------------
# Pointwise log-likelihood


def _relative_eff(trace: xr.DataTree, n_samples: int) -> float:
    """Relative efficiency for PSIS, as :func:`arviz_stats.loo` computes it.

    The mean-ESS of every posterior variable, averaged, over the number of draws (1 for a
    single chain); the ESS is :func:`bayesmer.diagnostics.mean_ess`, arviz_stats' vectorised
    (arviz_stats loops over the parameters: 28 s for the 20,000 of a 10,000-group model).
    """
    posterior = trace["posterior"].to_dataset()
    if posterior.sizes["chain"] == 1:
        return 1.0
    values = []
    for name in posterior.data_vars:
        da = posterior[name]
        other = [d for d in da.dims if d not in ("chain", "draw")]
        draws = da.transpose("chain", "draw", *other).values
        values.append(mean_ess(draws.reshape(*draws.shape[:2], -1)))
    return float(np.mean(np.concatenate(values)) / n_samples)


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
    observations : pl.DataFrame
        One row per *distinct* observation (a cell's predictors with one row's outcome and
        trials or exposure): the predictor and group columns, the outcome, ``trials`` or
        ``exposure``, ``rows`` (how many data rows are that observation), ``elpd_loo``,
        ``p_loo`` and ``pareto_k``. As many rows as the cells have distinct outcomes, however
        many rows the data have.
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
    observations: pl.DataFrame
    n_draws: int
    r_eff: float
    _rows: Callable[[], pl.DataFrame] = field(repr=False, compare=False)

    @cached_property
    def pointwise(self) -> pl.DataFrame:
        """One row per original observation, in data order: ``row`` (0-based row number in
        the model's data; for a DuckDB, Dask or Spark frame, in the order the engine returns
        the rows), the predictor and group columns, the outcome, ``trials`` or ``exposure``,
        ``elpd_loo``, ``p_loo`` and ``pareto_k``.

        Built from the data's rows on first use, so it is as long as the data: for big data
        read :attr:`observations` (the same values, once per distinct observation).
        """
        return self._rows()

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
    row's own exposure), Pareto-smoothed importance sampling runs once per distinct
    observation (:mod:`bayesmer.psis`: arviz_stats' algorithm, vectorised over the
    observations), and each result is counted as many times as that observation occurs in the
    data. The sums, the SE (``sqrt(n * var)`` over the n rows) and p_loo are therefore
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
    draws = Draws.read(spec, trace)
    S = draws.n
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

    def block_loo(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = np.empty((3, len(block)))
        for part, eta in cell_eta(spec, draws, cells[block]):
            obs = block[part]
            ll = spec.family.log_likelihood(eta, y[obs], size[obs], draws.dispersion)
            out[:, part] = psis.loo(ll.T, r_eff)
        return out[0], out[1], out[2]

    # blocks of observations with nearby levels, over the cores
    chunks = cell_blocks(spec, S, cells)
    for block, (e, k, p) in zip(chunks, map_blocks(block_loo, chunks, values=m * S), strict=True):
        elpd_i[block], k_i[block], p_i[block] = e, k, p

    elpd, se, p_loo = _weighted_summary(elpd_i, p_i, weight)
    values = {"elpd_loo": elpd_i, "p_loo": p_i, "pareto_k": k_i}
    observations = _observation_table(spec).with_columns(
        pl.Series(name, v) for name, v in values.items()
    )

    def pointwise() -> pl.DataFrame:
        rows = row_table(model)
        idx = rows[OBS_INDEX].to_numpy()
        return public_rows(spec, rows).with_columns(
            pl.Series(name, v[idx]) for name, v in values.items()
        )

    result = LooResult(
        elpd=elpd,
        se=se,
        p_loo=p_loo,
        n_obs=int(weight.sum()),
        pareto_k_counts=_k_counts(k_i, weight),
        observations=observations,
        n_draws=S,
        r_eff=r_eff,
        _rows=pointwise,
    )
    if (k_i > GOOD_K).any():
        message = _high_k_message(model, observations) + _many_parameters_note(spec, p_loo, weight)
        warnings.warn(message, UserWarning, skip_file_prefixes=(PACKAGE_DIR,))
    return result


def _observation_table(spec: ModelSpec) -> pl.DataFrame:
    """The distinct observations (``spec.obs``) with their predictors, under the public names
    of :func:`bayesmer.rows.public_names`, and ``rows``, their multiplicity."""
    _, y_name, size_name = public_names(spec)
    keys = cell_keys(spec)
    rows_name = free_name("rows", {*keys, y_name, size_name})
    obs = spec.obs.join(spec.cells.select(CELL, *keys), on=CELL, how="left", maintain_order="left")
    return obs.select(
        *keys,
        pl.col(Y).alias(y_name),
        pl.col(spec.size_col).alias(size_name),
        pl.col(WEIGHT).cast(pl.Int64).alias(rows_name),
    )


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


def _high_k_message(model: Model, observations: pl.DataFrame, shown: int = 5) -> str:
    """Name the observations with Pareto k > 0.7: their values and row numbers.

    The row numbers come from a query for the rows of the worst observations only (streamed
    by polars); a frame of another engine has no row order, so its rows are counted.
    """
    spec = model.spec
    _, y_name, size_name = public_names(spec)
    value_cols = [*cell_keys(spec), y_name, size_name]
    rows_name = observations.columns[len(value_cols)]
    # exposure 1 without an offset, one row per gaussian row, one trial per 0/1 outcome
    trivial_size = (
        (spec.family.size_kind == "exposure" and not spec.has_offset)
        or spec.family.size_kind == "rows"
        or (spec.family.name == "binomial" and spec.formula.response.kind == "column")
    )
    shown_cols = value_cols[:-1] if trivial_size else value_cols
    bad = observations.with_row_index(OBS_INDEX).filter(pl.col("pareto_k") > GOOD_K)
    worst = bad.sort("pareto_k", descending=True, maintain_order=True).head(shown)
    numbers: dict[int, list[int]] = {}
    if runs_in_polars(model.data):
        rows = row_table(model, observations=worst[OBS_INDEX].to_list())
        for (index,), part in rows.group_by(OBS_INDEX):
            numbers[index] = part[ROW_NUMBER].head(8).to_list()
    parts = []
    for rec in worst.iter_rows(named=True):
        values = ", ".join(f"{c}={_fmt_value(rec[c])}" for c in shown_cols)
        count = rec[rows_name]
        where = f"{count} row(s)"
        if rec[OBS_INDEX] in numbers:
            listed = ", ".join(str(r) for r in numbers[rec[OBS_INDEX]])
            where += f": {listed}" + (", ..." if count > 8 else "")
        parts.append(f"{values} (k={rec['pareto_k']:.2f}; {where})")
    more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
    return (
        f"PSIS-LOO: Pareto k > {GOOD_K} for {int(bad[rows_name].sum())} of "
        f"{int(observations[rows_name].sum())} observations, whose leave-one-out estimates are "
        f"unreliable: {'; '.join(parts)}{more}. Row numbers count from 0 in the model's data. "
        "Influential observations like these often point to a misspecified model (for counts, "
        "overdispersion)."
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
        With fewer than two models, when ``names`` does not match them, when the models are
        not fitted to the same observations, or when a gaussian model meets a discrete one.
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
    continuous = [m.spec.family.name == "gaussian" for m in models]
    if any(continuous) and not all(continuous):
        kinds = ", ".join(f"{lab}: {m.family}" for lab, m in zip(labels, models, strict=True))
        raise ValueError(
            "compare() cannot rank a gaussian model against a binomial or count model: the "
            "first's LOO sums log densities of a continuous outcome, the others' log "
            f"probabilities of whole numbers, which are not on one scale ({kinds})."
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
                "n_bad_k": _bad_rows(results[i]),
            }
        )
    return pl.DataFrame(out)


def _bad_rows(result: LooResult) -> int:
    """Data rows whose Pareto k exceeds 0.7."""
    table = result.observations
    rows_name = table.columns[-4]
    return int(table.filter(pl.col("pareto_k") > GOOD_K)[rows_name].sum())


def _observations(
    model: Model, pointwise: pl.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row numbers, outcomes and trials/exposure of a LOO pointwise table."""
    names = public_names(model.spec)
    return tuple(pointwise[c].to_numpy() for c in names)

"""Predictions per row, of new data or of the data the model was fitted to.

:func:`predict` summarises the posterior of the mean or linear predictor per row: of the
fitted rows once per cell, spread to the rows through :func:`bayesmer.rows.row_table`, of new
data (any frame narwhals reads) through a design built for its rows. :func:`fitted_values`
gives the fitted values and residuals of every row of the model's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from .arguments import resolve_ci
from .collapse import CELL, EXPOSURE, TRIALS, Y
from .compat import PREDICT, reject, resolve_re
from .draws import GroupRows, hdi
from .emmeans import QUADRATURE_NODES, marginal_link
from .parallel import map_blocks
from .rows import (
    ROW_NUMBER,
    Draws,
    blocks,
    cell_blocks,
    cell_eta,
    free_name,
    not_missing,
    predictor_exprs,
    public_rows,
    row_table,
)
from .spec import random_design, to_lazy, with_group_columns

if TYPE_CHECKING:
    from .models import Model

_TYPES = ("response", "link")
_RE = ("groups", "zero", "marginal")
_OUTPUTS = ("mean", "table", "draws")


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
    if spec.family.size_kind == "exposure":
        log_exposure = np.log(rows[EXPOSURE].to_numpy())
    return _Design(
        public_rows(spec, rows),
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
        keep = raw.select(not_missing(needed, schema)).to_series()
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
    converted = raw.select(predictor_exprs(spec, schema, predictors))
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
    row_name = free_name("row", set(needed))
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
    data : any dataframe narwhals supports, optional
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
    if data is None and output != "draws":
        return _fitted_rows(model, type_predict, re, output, ci)
    if data is None:
        design = _fitted_design(model)
    else:
        design = _new_design(model, data, re, allow_missing=output != "draws")
    draws = Draws.read(spec, model.posterior)
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
    for block in blocks(n_rows, width):
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
            _summarise(v, ci, stats, block)
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


def _summarise(v: np.ndarray, ci: float, stats: dict[str, np.ndarray], block: slice) -> None:
    """Write the median, sd and highest-density interval of each column of ``v`` (draws x
    rows) into ``stats`` at ``block``."""
    bounds = hdi(v, ci)
    stats["estimate"][block] = np.median(v, axis=0)
    stats["sd"][block] = v.std(axis=0, ddof=1)
    stats["conf_low"][block] = bounds[:, 0]
    stats["conf_high"][block] = bounds[:, 1]


def _fitted_rows(
    model: Model, type_predict: str, re: str, output: str, ci: float
) -> np.ndarray | pl.DataFrame:
    """:func:`predict` of the fitted rows (``output`` 'mean' or 'table'), computed once per
    cell and spread to its rows: the cost is that of the cells, however many rows share them.

    A row's exposure (Poisson, negative binomial) shifts the link by ``log(exposure)`` and
    scales the mean by ``exposure``; every summary (mean, median, sd, highest-density
    interval) shifts or scales with it, so it is computed on the cell's rate.
    """
    spec = model.spec
    rows = row_table(model)
    draws = Draws.read(spec, model.posterior)
    n_cells = spec.X.shape[0]
    every = np.arange(n_cells)
    groups = spec.group_rows(every) if re == "groups" else {}
    sigma = None
    if re == "marginal":
        Z = {name: z for name, (_, z) in spec.group_rows(every).items()}
        sigma = draws.random_sd(spec, Z, slice(None))
    width = draws.n * (QUADRATURE_NODES if sigma is not None else 1)
    stats = {k: np.empty(n_cells) for k in ("mean", "estimate", "sd", "conf_low", "conf_high")}
    for block in blocks(n_cells, width):
        gi = {
            name: (index[block], None if Z is None else Z[block])
            for name, (index, Z) in groups.items()
        }
        eta = draws.eta(spec.X[block], gi)
        if sigma is not None:
            eta = marginal_link(spec.family, eta, sigma if sigma.shape[1] == 1 else sigma[:, block])
        v = eta if type_predict == "link" else spec.family.inverse_link(eta)
        stats["mean"][block] = v.mean(axis=0)
        if output == "table":
            _summarise(v, ci, stats, block)
    cells = rows[CELL].to_numpy().astype(np.int64)
    per_row = {k: v[cells] for k, v in stats.items()}
    if spec.family.size_kind == "exposure":
        exposure = rows[EXPOSURE].to_numpy()
        for k, v in per_row.items():
            if type_predict == "link":
                per_row[k] = v if k == "sd" else v + np.log(exposure)
            else:
                per_row[k] = v * exposure
    if output == "mean":
        return per_row["mean"]
    table = {k: v for k, v in per_row.items() if k != "mean"}
    return public_rows(spec, rows).with_columns(pl.Series(k, v) for k, v in table.items())


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
    draws = Draws.read(spec, model.posterior)
    n_cells = spec.X.shape[0]

    def means(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        link, response = np.empty(len(cells)), np.empty(len(cells))
        for block, eta in cell_eta(spec, draws, cells):
            link[block] = eta.mean(axis=0)
            response[block] = spec.family.inverse_link(eta, out=eta).mean(axis=0)
        return link, response

    mean_link = np.empty(n_cells)
    mean_response = np.empty(n_cells)
    chunks = cell_blocks(spec, draws.n)
    for cells, (link, response) in zip(
        chunks, map_blocks(means, chunks, values=n_cells * draws.n), strict=True
    ):
        mean_link[cells] = link
        mean_response[cells] = response
    cells = rows[CELL].to_numpy().astype(np.int64)
    y = rows[Y].to_numpy().astype(float)
    if spec.family.size_kind == "exposure":
        exposure = rows[EXPOSURE].to_numpy()
        response = mean_response[cells] * exposure
        link = mean_link[cells] + np.log(exposure)
    else:
        response = mean_response[cells]
        link = mean_link[cells]
        y = y / rows[TRIALS].to_numpy()
    n_data = model.data.height if isinstance(model.data, pl.DataFrame) else len(model.data)
    index = rows[ROW_NUMBER].to_numpy()
    fitted = np.full(n_data, np.nan)
    residuals = np.full(n_data, np.nan)
    fitted[index] = response if type_predict == "response" else link
    residuals[index] = y - response
    return fitted, residuals

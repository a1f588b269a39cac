"""Posterior predictive checks and simulated data sets, per original observation.

:func:`ppc` and :func:`simulate` draw replicated outcomes per original row (see
:func:`bayesmer.rows.row_table`; a Bernoulli row is replicated as a Bernoulli, not as part of
its cell's binomial), so row-level statistics such as the share of zeros or the variance of the
counts are right.

Rows are numbered from 0 in the data given to the model (``row``), counting the rows dropped for
missing values, so ``row`` indexes the user's own data frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from .arguments import resolve_ci
from .collapse import CELL, TRIALS, Y
from .compat import SIMULATE, reject, resolve_re
from .draws import hdi, linear_predictor
from .emmeans import marginal_link
from .rows import Draws, blocks, public_rows, row_table
from .spec import ModelSpec

if TYPE_CHECKING:
    from .models import Model

#: Columns of the table :func:`ppc` returns, in order.
PPC_COLUMNS = (
    "statistic",
    "observed",
    "replicated_mean",
    "replicated_low",
    "replicated_high",
    "ppp",
)

#: Allowed values of ``re`` in :func:`ppc`.
PPC_RE = ("groups", "new")


# ---------------------------------------------------------------------------------------------
# Replicated data


def _row_means(
    spec: ModelSpec,
    draws: Draws,
    cells: np.ndarray,
    sel: slice | np.ndarray,
    re: str = "groups",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Success probability, rate per unit exposure or mean (gaussian) per cell and draw.

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
    draws: Draws,
    rows: pl.DataFrame,
    sel: slice | np.ndarray,
    rng: np.random.Generator,
    re: str = "groups",
) -> np.ndarray:
    """Replicated outcomes of every row for the draws ``sel``: shape (draws, rows)."""
    cells_used, inverse = np.unique(rows[CELL].to_numpy().astype(np.int64), return_inverse=True)
    mean = _row_means(spec, draws, cells_used, sel, re, rng)[:, inverse]
    size = rows[spec.size_col].to_numpy()
    dispersion = None if draws.dispersion is None else draws.dispersion[sel]
    return spec.family.replicate(rng, mean, size, dispersion)


def _new_group_draws(spec: ModelSpec, draws: Draws, rng: np.random.Generator) -> Draws:
    """The draws with fresh group effects for every level (see
    :meth:`bayesmer.rows.Draws.new_levels`)."""
    u = draws.new_levels(spec, rng)
    return Draws(draws.b, u, draws.sd, draws.n_chains, draws.cor, draws.dispersion)


Statistic = Callable[[np.ndarray, pl.DataFrame], np.ndarray]

#: Statistics ``ppc`` knows by name.
_NAMED = ("mean", "var", "sd", "zeros", "max", "min")


def _named_stat(name: str, spec: ModelSpec, rows: pl.DataFrame) -> Statistic:
    """A statistic of :data:`_NAMED` over all rows; ``mean`` is successes/trials for binomial
    and beta-binomial outcomes."""
    if name == "mean":
        if spec.family.size_kind == "trials":
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
    """Mean outcome (proportion of successes, mean count or mean value) per level of
    ``column``."""
    levels = (
        next(g.levels for g in spec.groups if g.name == column)
        if column in {g.name for g in spec.groups}
        else spec.factors[column]
    )
    values = rows[column].to_numpy()
    denom_col = TRIALS if spec.family.size_kind == "trials" else None
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

    Means as in :func:`_by_level`: the proportion of successes, the mean count or value.
    """
    levels, index = np.unique(rows[column].to_numpy(), return_inverse=True)
    if spec.family.size_kind == "trials":
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
        if spec.family.size_kind == "exposure":
            out["zeros"] = _named_stat("zeros", spec, rows)
            out["var"] = _named_stat("var", spec, rows)
        elif spec.family.name in ("gaussian", "betabinomial"):
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
    (binomial rows as Binomial(trials, p), Poisson rows as Poisson(rate * exposure), gaussian
    rows as Normal(mean, sigma), negative binomial and beta-binomial rows with their draw's
    dispersion), and each statistic is computed on the observed and on every replicated data
    set.

    Parameters
    ----------
    model : Model
        A fitted model.
    stat : str, callable, list or dict, optional
        The statistics. By default: ``mean`` (the proportion of successes for binomial and
        beta-binomial models, the mean count or value for the others), ``mean[col=level]`` for
        every level of every factor and grouping column (with ``re='new'``, ``sd[col means]``
        for a grouping column instead, see ``re``), for count models (Poisson, negative
        binomial) ``zeros`` (share of zero counts) and ``var`` (variance of the counts across
        rows; above its replicated range in overdispersed data), and for gaussian and
        beta-binomial models ``var``. Names: ``'mean'``, ``'var'``, ``'sd'``, ``'zeros'``,
        ``'max'``, ``'min'``, or a factor/group column (its per-level means). A callable
        ``f(y, data)`` gets ``y``, an array (data sets x rows) of outcomes, rows in data
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
    draws = Draws.read(spec, model.posterior)
    rng = np.random.default_rng(random_seed)
    if re == "new":
        draws = _new_group_draws(spec, draws, rng)
    y_obs = rows[Y].to_numpy()
    data = public_rows(spec, rows)
    observed = {
        name: float(_evaluate(name, f, y_obs[None, :], data)[0]) for name, f in stats.items()
    }
    replicated = {name: np.empty(draws.n) for name in stats}
    for block in blocks(draws.n, len(rows)):
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
        ``trials``, ``exposure`` or (gaussian) ``n``, 1 per row.

    Returns
    -------
    pl.DataFrame
        ``sim_1`` ... ``sim_<nsim>`` (pymer4's layout), one row per original observation in
        data order (rows dropped for missing values left out); the replicated outcomes
        (binomial: successes, 0/1 for a 0/1 response; gaussian: floats).

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
    draws = Draws.read(spec, model.posterior)
    rng = np.random.default_rng(random_seed)
    picked = rng.choice(draws.n, size=nsim, replace=nsim > draws.n)
    # counts and successes are whole numbers; a gaussian outcome is not
    dtype = np.float64 if spec.family.name == "gaussian" else np.int64
    sims = np.empty((nsim, len(rows)), dtype=dtype)
    for block in blocks(nsim, len(rows)):
        sims[block] = _replicate(spec, draws, rows, picked[block], rng, re)
    columns = [pl.Series(f"sim_{i + 1}", sims[i]) for i in range(nsim)]
    if with_data:
        return public_rows(spec, rows).with_columns(columns)
    return pl.DataFrame(columns)

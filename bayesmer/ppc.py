"""Posterior predictive checks and simulated data sets, per original observation.

:func:`ppc` and :func:`simulate` replicate the original rows, not the fitted cells (a
Bernoulli row is replicated as a Bernoulli, not as part of its cell's binomial), so row-level
statistics such as the share of zeros or the variance of the counts are right. The built-in
statistics of :func:`ppc` need only sums over the rows, which :mod:`bayesmer.replicated` draws
per cell (exactly, or streaming the rows in blocks) without reading the data again; callable
statistics and :func:`simulate` need every row's outcome, and replicate the rows of
:func:`bayesmer.rows.row_table`.

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
from .draws import hdi
from .replicated import NEEDS, Builtin, Layout, cell_means
from .replicated import observed as observed_sums
from .replicated import replicated as replicated_sums
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
    mean = cell_means(spec, draws, cells_used, sel, re, rng)[:, inverse]
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


def _by_level(column: str, layout: Layout) -> dict[str, Builtin]:
    """Mean outcome (proportion of successes, mean count or mean value) of every level of
    ``column`` that has rows."""
    denoms = layout.level_denominators[column]
    return {
        f"mean[{column}={level}]": Builtin("level", column, level)
        for level, denom in zip(layout.levels[column], denoms, strict=True)
        if denom > 0
    }


def _statistics(
    stat: Any, spec: ModelSpec, new_groups: bool = False
) -> tuple[dict[str, Builtin | Statistic], Layout]:
    """Resolve ``stat`` into named statistics: built-in ones (:class:`Builtin`) and callables
    ``f(y (data sets, rows), data) -> (data sets,)``; and the cells' layout they need.

    With ``new_groups`` the default statistics summarise each grouping column by the spread
    of its level means (``sd[<col> means]``) instead of one mean per level.
    """
    level_cols = list(dict.fromkeys([*spec.factors, *(g.name for g in spec.groups)]))
    layout = Layout.of(spec, level_cols)
    if stat is None:
        out: dict[str, Builtin | Statistic] = {"mean": Builtin("mean")}
        group_cols = {g.name for g in spec.groups}
        for col in level_cols:
            if new_groups and col in group_cols:
                out[f"sd[{col} means]"] = Builtin("spread", col)
            else:
                out.update(_by_level(col, layout))
        if spec.family.size_kind == "exposure":
            out["zeros"] = Builtin("zeros")
            out["var"] = Builtin("var")
        elif spec.family.name in ("gaussian", "betabinomial"):
            out["var"] = Builtin("var")
        return out, layout
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
            out[str(name)] = Builtin(s)
        elif isinstance(s, str) and s in level_cols:
            out.update(_by_level(s, layout))
        else:
            raise ValueError(
                f"Unknown statistic {s!r}: use one of {sorted(_NAMED)}, a factor or group "
                f"column of the model ({level_cols}), or a callable f(y, data) returning one "
                "value per replicated data set."
            )
    return out, layout


def _row_statistic(stat: Builtin, spec: ModelSpec, rows: pl.DataFrame) -> Statistic:
    """A built-in statistic as a function of the rows' outcomes (data sets x rows), for a
    check that also has callables (they need every row)."""
    trials = spec.family.size_kind == "trials"
    if stat.kind == "mean":
        if trials:
            total = float(rows[TRIALS].sum())
            return lambda y, d: y.sum(axis=1) / total
        return lambda y, d: y.mean(axis=1)
    if stat.kind == "var":
        return lambda y, d: y.var(axis=1, ddof=1)
    if stat.kind == "sd":
        return lambda y, d: y.std(axis=1, ddof=1)
    if stat.kind == "zeros":
        return lambda y, d: (y == 0).mean(axis=1)
    if stat.kind == "max":
        return lambda y, d: y.max(axis=1).astype(float)
    if stat.kind == "min":
        return lambda y, d: y.min(axis=1).astype(float)
    if stat.kind == "level":
        mask = rows[stat.column].to_numpy() == stat.level
        denom = float(rows[TRIALS].to_numpy()[mask].sum()) if trials else float(mask.sum())
        return lambda y, d: y[:, mask].sum(axis=1) / denom
    levels, index = np.unique(rows[stat.column].to_numpy(), return_inverse=True)
    if trials:
        denoms = np.bincount(index, rows[TRIALS].to_numpy().astype(float), len(levels))
    else:
        denoms = np.bincount(index, minlength=len(levels)).astype(float)
    members = np.zeros((len(rows), len(levels)))
    members[np.arange(len(rows)), index] = 1.0 / denoms[index]
    return lambda y, d: (y @ members).std(axis=1, ddof=1)


def _evaluate(name: str, f: Statistic, y: np.ndarray, rows: pl.DataFrame) -> np.ndarray:
    """Apply a statistic to data sets ``y`` (data sets x rows), checking its output."""
    values = np.asarray(f(y, rows), dtype=float)
    if values.shape != (y.shape[0],):
        raise ValueError(
            f"Statistic {name!r} must return one value per replicated data set; it returned "
            f"shape {values.shape} for {y.shape[0]} data set(s) of shape {y.shape}."
        )
    return values


def _per_row(
    model: Model,
    stats: dict[str, Builtin | Statistic],
    draws: Draws,
    rng: np.random.Generator,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Observed and replicated statistics with every row replicated: a callable needs
    the outcomes of all rows (data sets x rows, in blocks of draws)."""
    spec = model.spec
    rows = row_table(model)
    data = public_rows(spec, rows)
    funcs = {
        name: _row_statistic(f, spec, rows) if isinstance(f, Builtin) else f
        for name, f in stats.items()
    }
    y_obs = rows[Y].to_numpy()
    observed = {
        name: float(_evaluate(name, f, y_obs[None, :], data)[0]) for name, f in funcs.items()
    }
    replicated = {name: np.empty(draws.n) for name in funcs}
    for block in blocks(draws.n, len(rows)):
        y_rep = _replicate(spec, draws, rows, block, rng)
        for name, f in funcs.items():
            replicated[name][block] = _evaluate(name, f, y_rep, data)
    return observed, replicated


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

    The built-in statistics (names and columns, below) are computed from sums per cell, so
    memory stays bounded by the cells however many rows the data have, and the data are not
    read again (see :mod:`bayesmer.replicated`): exactly per cell where the family allows it
    (every built-in statistic of 0/1 outcomes; the mean, ``var``, ``sd`` and level means of a
    gaussian outcome; the mean, level means and ``zeros`` of Poisson and binomial counts), and
    otherwise by replicating the rows in blocks and accumulating the sums. Either way each
    statistic has the distribution of per-row replication. A callable statistic needs every
    replicated outcome: a check with one replicates all rows, draws in blocks, and reads the
    data's rows (:func:`simulate`'s table), so it is as long as the data.

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
    stats, layout = _statistics(stat, spec, new_groups=re == "new")
    draws = Draws.read(spec, model.posterior)
    rng = np.random.default_rng(random_seed)
    if re == "new":
        draws = _new_group_draws(spec, draws, rng)
    if all(isinstance(f, Builtin) for f in stats.values()):
        observed, replicated = _per_cell(spec, stats, layout, draws, rng)
    else:
        observed, replicated = _per_row(model, stats, draws, rng)
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


def _per_cell(
    spec: ModelSpec,
    stats: dict[str, Builtin],
    layout: Layout,
    draws: Draws,
    rng: np.random.Generator,
    exact: bool = True,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Observed and replicated built-in statistics from sums per cell (see
    :mod:`bayesmer.replicated`); ``exact=False`` streams the rows even where an exact
    per-cell form exists."""
    needs = {NEEDS[s.kind] for s in stats.values()}
    seen = observed_sums(spec, layout)
    sums = replicated_sums(spec, draws, layout, needs, rng, exact)
    observed = {name: float(layout.value(s, seen)[0]) for name, s in stats.items()}
    return observed, {name: layout.value(s, sums) for name, s in stats.items()}


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
    does not exceed the number of draws) and draws one outcome per original row, so the
    result is as long as the data: the used columns are read back from the model's data
    (from DuckDB, Dask or Spark, in the order the engine returns the rows), and the data sets
    are drawn a block at a time, each block turned into its columns before the next, so
    memory is the returned frame plus the rows' table and one block.

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
    columns = []
    for block in blocks(nsim, len(rows)):
        sims = _replicate(spec, draws, rows, picked[block], rng, re).astype(dtype, copy=False)
        columns += [pl.Series(f"sim_{block.start + i + 1}", v) for i, v in enumerate(sims)]
    if with_data:
        return public_rows(spec, rows).with_columns(columns)
    return pl.DataFrame(columns)

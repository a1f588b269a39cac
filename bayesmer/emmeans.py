"""Estimated marginal means, contrasts, slopes and predictions, computed from every draw.

Everything here works on the posterior draws one draw at a time (vectorised): each draw gives a
value of every marginal mean, contrast or slope, and the tables summarise those values. So every
answer carries the whole posterior uncertainty, with no delta method and no normal
approximation.

The reference grid follows R's emmeans: every level of the factors asked for, the other factors
averaged over, numeric covariates at their mean over the data unless ``at`` says otherwise.
Averaging over the other factors happens on the link scale, per draw, and the average is then
back-transformed (emmeans' convention). Random effects are handled in one of four ways, see
:func:`emmeans`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss
from scipy import special

from .arguments import resolve_ci
from .collapse import ROWS
from .draws import (
    fixed,
    group_cor,
    group_effects,
    group_part,
    group_sd,
    hdi,
    new_effects,
    prob_direction,
    random_variance,
)
from .families import Family
from .spec import GroupSpec, ModelSpec, parent_levels, random_design

if TYPE_CHECKING:
    from .models import Model

#: Allowed values of ``type``, ``re`` and ``weights``.
TYPES = ("response", "link")
RE_CHOICES = ("zero", "marginal", "groups", "new")
WEIGHTS = ("equal", "proportional", "cells")
#: Named contrast families (R emmeans names).
NAMED_CONTRASTS = ("pairwise", "revpairwise", "trt.vs.ctrl")
#: Name of the draw index column in long-form output.
DRAW = ".draw"
#: Quadrature nodes for ``re='marginal'``. Gauss-Hermite is used while the combined group sd is
#: at most ``HERMITE_MAX_SD[link]``, a quantile rule over the link's own distribution above it
#: (see :func:`marginal_link`); the switch points are where the two rules' errors cross
#: (both about 1e-6 there, far smaller on either side).
QUADRATURE_NODES = 100
HERMITE_MAX_SD = {"logit": 4.5, "cloglog": 2.5}
#: Seed of the new-group effects of ``re='new'`` when no ``random_seed`` is given, so that the
#: same call gives the same answer.
NEW_GROUP_SEED = 0
#: Upper bound on draws x grid points x groups held in memory at once for ``re='groups'``.
_CHUNK_ELEMENTS = 4_000_000


# ---------------------------------------------------------------------------------------------
# Public functions


def emmeans(
    model: Model,
    marginal_var: str | list[str],
    by: str | list[str] | None = None,
    contrasts: dict[str, list[float]] | str | None = None,
    type: str = "response",
    ci: float | None = None,
    weights: str = "equal",
    re: str = "zero",
    at: dict[str, Any] | None = None,
    regrid: str | None = None,
    draws: bool = False,
    random_seed: int | None = None,
) -> pl.DataFrame:
    """Estimated marginal means (or slopes, or contrasts) from every posterior draw.

    The reference grid is built as R's emmeans builds it: every level of ``marginal_var`` and
    of the ``by`` factors; the other factors are averaged over (see ``weights``); numeric
    covariates sit at their mean over the data rows unless ``at`` gives values (several values
    of a covariate that is not in ``marginal_var``/``by`` are averaged over with equal weights).
    **Averaging happens on the link scale, per draw, and the average is then back-transformed**
    (emmeans' convention): the probability of a level is ``inverse_link(mean of the link-scale
    values)``, not the mean of probabilities. Poisson rates are per unit of exposure (the
    offset is set to zero).

    Parameters
    ----------
    model : Model
        A fitted :class:`~bayesmer.models.glm` or :class:`~bayesmer.models.glmer`.
    marginal_var : str or list of str
        A factor (one mean per level), a list of factors (one mean per combination of their
        levels, the first factor varying fastest as in R's emmeans; contrasts then weigh
        those combinations in that order, labelled ``'<level1> <level2>'``), or a numeric
        covariate: its slope, ``<var>_trend``, as R's emtrends (and pymer4), the derivative
        of the marginal mean **on the link scale** whatever ``type`` says (log-odds or log
        rate per unit); ``regrid='response'`` gives the slope of the probability or rate
        instead.
    by : str or list of str, optional
        Factors (or numeric covariates given several values in ``at``) to condition on: one
        set of means or contrasts per combination.
    contrasts : dict or str, optional
        A dict of named weight vectors over the levels of ``marginal_var`` in level order,
        e.g. ``{'male_vs_female': [-1, 1]}`` (male minus female on the link scale: with
        levels ``female, male`` the weights follow that order; their sum must be 0), or
        ``'pairwise'`` (each level minus each later one), ``'revpairwise'`` (each later
        level minus each earlier one) or ``'trt.vs.ctrl'`` (each level minus the first). A
        contrast is computed per draw on the link scale. With ``type='response'`` it is
        reported as ``exp()`` of that: an odds ratio (``odds_ratio``, logit link), a rate
        ratio (``ratio``, log link) or a ratio of cumulative hazards (``ratio``, cloglog
        link); a probit contrast on the response scale is the same weighted sum of the
        probabilities (``estimate``), as exp() of a probit difference means nothing.
    type : {'response', 'link'}, default 'response'
        Report probabilities, rates or means (``prob``/``rate``/``response``; a gaussian
        model with the identity link gives ``emmean`` either way) or link-scale values
        (``emmean``).
        Means and contrasts only: slopes are on the link scale either way (see ``regrid``).
    ci : float, optional
        Probability mass of the intervals; defaults to the model's ``ci``.
    weights : {'equal', 'proportional', 'cells'}, default 'equal'
        How the averaged-over factors (and, with ``re='groups'``, the observed groups) are
        weighted, as in R's emmeans: ``'equal'`` gives every combination the same weight;
        ``'proportional'`` weighs each combination by its frequency in the whole data;
        ``'cells'`` by its frequency within each row of the result (so the mix of the data
        within that row is reproduced).
    re : {'zero', 'marginal', 'groups', 'new'}, default 'zero'
        Four answers to four different questions (models with random effects only):

        - ``'zero'``: every group effect at zero, i.e. **a typical group** (the group whose
          effect is the median one). lme4 + emmeans' convention.
        - ``'marginal'``: per draw, the inverse link averaged over the group-effect
          distribution ``N(0, sd)`` (for several grouping factors, the sum of independent
          effects, ``N(0, sqrt(sum of sd^2))``), i.e. **the average over new groups drawn
          from the population** (population-averaged): its interval is the uncertainty about
          that average, not the range in which one new group would fall (see ``'new'``).
          Computed by quadrature, not by sampling: Gauss-Hermite
          (``numpy.polynomial.hermite_e.hermegauss``) while the sd is small, a quantile rule
          over the link's own logistic or Gumbel distribution for larger sds (accurate to
          about 1e-6 throughout); exact formulas for the probit and log links. For logit
          models it pulls probabilities toward 0.5.
        - ``'new'``: **one new group**: per draw, one group effect drawn from
          ``N(0, sqrt(sum of sd^2))`` (the same effect at every grid point, so contrasts
          compare levels within that one group) and added on the link scale. The values are
          the posterior predictive distribution of a single new group's probability or rate;
          their interval adds the between-group spread to the uncertainty about the
          parameters, so it is wider than ``'marginal'``'s, and the median sits near the
          ``'zero'`` value (a typical group), not at the population average. Drawn with
          ``random_seed``.
        - ``'groups'``: per draw, the inverse link averaged over **the observed groups**
          (their effects as estimated), weighted as ``weights`` says; ``weights='cells'``
          reproduces the mix of groups in the data.

        In ``'marginal'`` and ``'groups'`` the group average is an average of probabilities
        or rates (that is the question they answer); it is then mapped back to the link scale
        before the link-scale averaging over other factors.
    at : dict, optional
        Values for grid columns: a numeric covariate's value or list of values, a factor's
        subset of levels, or ``'data'`` for the observed values.
    regrid : {'response'}, optional
        Slopes only (R's ``emtrends(..., regrid='response')``): the derivative of the
        response-scale marginal mean (change in probability or rate per unit), per draw.
    draws : bool, default False
        Return the per-draw values in long form instead: the key columns, ``.draw``, and the
        value column on the scale of ``type``.
    random_seed : int, optional
        Seed of the new-group effects of ``re='new'`` (``NEW_GROUP_SEED``, 0, when None, so
        the same call gives the same answer); unused otherwise.

    Returns
    -------
    polars.DataFrame
        Means: ``<marginal_var>, [by cols], prob | rate | response | emmean, SD, lower_HPD,
        upper_HPD``.
        Slopes: ``[<var>], [by cols], <var>_trend, SD, lower_HPD, upper_HPD`` (the ``<var>``
        column when ``at`` gives the values at which to take the slope), on the link scale
        unless ``regrid='response'``.
        Contrasts: ``contrast, [by cols], odds_ratio | ratio | estimate, SD, lower_HPD,
        upper_HPD, pd, prob_gt_null``.
        The point estimate is the posterior median, ``SD`` the posterior sd. The interval is
        the highest-density interval of the reported draws, on the reported scale (R's
        emmeans instead back-transforms the link-scale HPD, which is then not the HPD of the
        probabilities or ratios shown; both hold the stated posterior mass). ``pd`` is the
        probability of direction and ``prob_gt_null`` the posterior probability that the
        contrast is above its null (1 for ratios, 0 otherwise). Factor columns are
        ``pl.Enum`` in level order; rows are sorted by ``by`` then ``marginal_var`` (the
        first of several marginal variables varying fastest).

    Raises
    ------
    ValueError
        For an unknown variable or level, a contrast of the wrong length or whose weights do
        not sum to zero, contrasts on a numeric variable, a list of marginal variables that
        are not all factors, ``regrid`` for means of factors, and ``type``, ``re``,
        ``weights``, ``regrid`` or ``ci`` out of range.
    """
    spec = model.spec
    family = spec.family
    _check_choice("type", type, TYPES)
    _check_choice("re", re, RE_CHOICES)
    _check_choice("weights", weights, WEIGHTS)
    ci = resolve_ci(model, ci)
    _check_re(spec, re)
    if regrid not in (None, "response"):
        raise ValueError(f"regrid must be None or 'response', got {regrid!r}.")
    marginal_vars = _as_list(marginal_var, "marginal_var")
    if not marginal_vars:
        raise ValueError("marginal_var must name at least one column.")
    for col in marginal_vars:
        _check_fixed_variable(spec, col, "marginal_var")
    if len(marginal_vars) > 1:
        numeric = [c for c in marginal_vars if c in spec.numeric]
        if numeric:
            raise ValueError(
                f"a list of marginal variables must all be factors; {numeric} numeric. For "
                "slopes give one numeric variable, with the factors in by=."
            )
        if len(set(marginal_vars)) != len(marginal_vars):
            raise ValueError(f"marginal_var names a column twice: {marginal_vars}.")
    marginal_var = marginal_vars[0]
    by_cols = _as_list(by, "by")
    for col in by_cols:
        _check_fixed_variable(spec, col, "by")
        if col in marginal_vars:
            raise ValueError(f"{col!r} is a marginal variable; it cannot also be in by.")
    if len(set(by_cols)) != len(by_cols):
        raise ValueError(f"by names a column twice: {by_cols}.")
    at_values = _at_values(spec, at, allow_groups=False)
    axes = _axes(spec, at_values)
    trend = marginal_var in spec.numeric
    if trend and contrasts is not None:
        raise ValueError(
            f"contrasts need a factor; {marginal_var!r} is numeric, and emmeans reports its "
            f"slope ({marginal_var}_trend) instead. Use by= to get slopes per level of a factor."
        )
    if regrid is not None and not trend:
        raise ValueError(
            "regrid='response' applies to slopes of a numeric marginal_var; for means and "
            "contrasts of factors choose the scale with type=."
        )

    if trend:
        kept = [*by_cols, marginal_var] if marginal_var in at_values else list(by_cols)
    else:
        # the first marginal variable varies fastest, as in R's emmeans
        kept = [*by_cols, *reversed(marginal_vars)]
    keys = _product(spec, {c: axes[c] for c in kept})
    averaged = {c: axes[c] for c in axes if c not in kept}
    grid = _build_grid(spec, keys, averaged, weights, re)

    if trend:
        shown = [marginal_var, *by_cols] if marginal_var in kept else list(by_cols)
        slope_scale = "response" if regrid == "response" else "link"
        slopes = _slopes(model, grid, re, slope_scale, marginal_var, random_seed)
        return _finish(grid.keys.select(shown), f"{marginal_var}_trend", slopes, None, ci, draws)

    link = _link_values(model, grid, re, random_seed=random_seed)
    display = grid.keys.select([*marginal_vars, *by_cols])
    if contrasts is None:
        if type == "link":
            return _finish(display, "emmean", link, None, ci, draws)
        return _finish(display, family.response_label, link, family.inverse_link, ci, draws)
    n_levels = int(np.prod([len(axes[c]) for c in marginal_vars]))
    levels = [
        " ".join(str(v) for v in row)
        for row in display.head(n_levels).select(marginal_vars).iter_rows()
    ]
    frame, name, values, transform = _contrasts(
        family, link, display, ", ".join(marginal_vars), levels, by_cols, contrasts, type
    )
    return _finish(frame, name, values, transform, ci, draws, contrast=True)


def empredict(
    model: Model,
    at: dict[str, Any] | str,
    type: str = "response",
    re: str = "zero",
    ci: float | None = None,
    random_seed: int | None = None,
) -> pl.DataFrame:
    """Predictions at given predictor values, from every posterior draw.

    Parameters
    ----------
    model : Model
        A fitted model.
    at : dict or 'data'
        Column -> value, list of values (lists expand to the full grid of combinations) or
        ``'data'`` (the values observed in the data). Fixed-effect columns left out are
        handled as in :func:`emmeans`: numeric covariates at their mean, factors averaged on
        the link scale with equal weights. A grouping column of the random effects may be
        named too: its groups' estimated effects are then added (predictions for those
        groups), together with the effects of the groups it is nested in (found from the
        data: a brood's location), whose column is added to the result; naming both a nested
        factor and its parent keeps only the pairs that occur in the data. ``at='data'``
        predicts at every distinct combination of the fixed-effect predictors observed in the
        data.
    type : {'response', 'link'}, default 'response'
    re : {'zero', 'marginal', 'groups', 'new'}, default 'zero'
        For the grouping factors neither named in ``at`` nor containing a named group: a
        typical group (effect zero), the average over new groups from the population, the
        average of the observed groups (equal weights; within a named group when nested in
        it, e.g. the broods of a named location), or one new group (where a single new group
        would fall); see :func:`emmeans`.
    ci : float, optional
        Interval mass; defaults to the model's ``ci``.
    random_seed : int, optional
        Seed of the new-group effects of ``re='new'``; see :func:`emmeans`.

    Returns
    -------
    polars.DataFrame
        ``<at cols>, [containing group cols], prob | rate | emmean, SD, lower_HPD, upper_HPD``,
        sorted by the ``at`` columns (factors in level order). The point estimate is the
        posterior median; the interval is the HPD of the reported draws.

    Raises
    ------
    ValueError
        For an unknown column or level, or ``type``/``re``/``ci`` out of range.
    """
    spec = model.spec
    family = spec.family
    _check_choice("type", type, TYPES)
    _check_choice("re", re, RE_CHOICES)
    ci = resolve_ci(model, ci)
    _check_re(spec, re)
    if isinstance(at, str):
        if at != "data":
            raise ValueError(f"at must be a dict or 'data', got {at!r}.")
        fixed_cols = list(spec.formula.fixed_variables)
        if not fixed_cols:
            raise ValueError("at='data' needs a model with fixed-effect predictors.")
        keys = _enum_keys(spec, spec.cells.select(fixed_cols).unique())
        averaged: dict[str, list[Any]] = {}
        kept = fixed_cols
    else:
        if not isinstance(at, dict) or not at:
            raise ValueError(f"at must be a non-empty dict or 'data', got {at!r}.")
        values = _at_values(spec, at, allow_groups=True)
        axes = _axes(spec, values)
        keys = _nested_keys(spec, _product(spec, {c: values[c] for c in values}))
        kept = keys.columns
        averaged = {c: axes[c] for c in axes if c not in kept}
    grid = _build_grid(spec, keys, averaged, "equal", re)
    link = _link_values(model, grid, re, random_seed=random_seed)
    display = grid.keys.select(kept)
    if type == "link":
        return _finish(display, "emmean", link, None, ci, draws=False)
    return _finish(display, family.response_label, link, family.inverse_link, ci, draws=False)


# ---------------------------------------------------------------------------------------------
# Argument checks


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}.")


def _check_re(spec: ModelSpec, re: str) -> None:
    if re != "zero" and not spec.groups:
        raise ValueError(
            f"re={re!r} averages over random effects, and this model has none; "
            "use re='zero' (the default)."
        )


def _as_list(value: str | list[str] | tuple[str, ...] | None, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{name} must be a column name or a list of column names, got {value!r}.")


def _available(spec: ModelSpec) -> list[str]:
    return [*spec.factors, *spec.numeric]


def _check_fixed_variable(spec: ModelSpec, col: str, arg: str) -> None:
    if col in spec.factors or col in spec.numeric:
        return
    if col in [g.name for g in spec.groups]:
        raise ValueError(
            f"{arg}: {col!r} is a grouping factor of the random effects (1|{col}), not a fixed "
            f"effect; emmeans handles it through re= ('zero', 'marginal', 'groups' or 'new'). "
            f"For predictions in given groups use empredict(at={{{col!r}: [...]}})."
        )
    raise ValueError(
        f"{arg}: unknown variable {col!r}; the fixed-effect variables of this model are "
        f"{_available(spec)}."
    )


def _label(value: Any) -> str:
    """A data value as the string label the spec uses for factor levels (1.0 -> '1')."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _group_by_name(spec: ModelSpec) -> dict[str, GroupSpec]:
    return {g.name: g for g in spec.groups}


def _at_values(
    spec: ModelSpec, at: dict[str, Any] | None, allow_groups: bool
) -> dict[str, list[Any]]:
    """Validate ``at``: factor and group columns -> levels in model order, numeric -> floats."""
    if at is None:
        return {}
    if not isinstance(at, dict):
        raise ValueError(f"at must be a dict of column -> value(s), got {at!r}.")
    groups = _group_by_name(spec)
    out: dict[str, list[Any]] = {}
    for col, given in at.items():
        if col in spec.factors:
            levels = spec.factors[col]
        elif col in groups and allow_groups:
            levels = groups[col].levels
        elif col in spec.numeric:
            levels = None
        elif col in groups:
            raise ValueError(
                f"at: {col!r} is a grouping factor of the random effects, not a fixed effect; "
                "emmeans handles groups through re=. Use empredict to predict for given groups."
            )
        else:
            extra = [g.name for g in spec.groups] if allow_groups else []
            raise ValueError(
                f"at: unknown variable {col!r}; this model's variables are "
                f"{[*_available(spec), *extra]}."
            )
        is_data = isinstance(given, str) and given == "data"
        if levels is not None:
            if is_data and "data" not in levels:
                out[col] = list(levels)
                continue
            items = _items(col, given)
            labels = [_label(v) for v in items]
            unknown = [lab for lab in labels if lab not in levels]
            if unknown:
                raise ValueError(
                    f"at: level(s) {unknown} of {col!r} do not exist; its levels are {levels}."
                )
            wanted = set(labels)
            out[col] = [lv for lv in levels if lv in wanted]
        else:
            if is_data:
                observed = spec.cells[col].unique().sort().to_list()
                out[col] = [float(v) for v in observed]
                continue
            numbers = []
            for v in _items(col, given):
                if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.number):
                    raise ValueError(f"at: {col!r} is numeric; got the non-number {v!r}.")
                if not np.isfinite(v):
                    raise ValueError(f"at: {col!r} must be finite; got {v!r}.")
                numbers.append(float(v))
            out[col] = sorted(set(numbers))
    return out


def _items(col: str, given: Any) -> list[Any]:
    if isinstance(given, list | tuple | np.ndarray | pl.Series):
        items = list(given)
    else:
        items = [given]
    if not items:
        raise ValueError(f"at: the list of values for {col!r} is empty.")
    return items


# ---------------------------------------------------------------------------------------------
# The reference grid


def _containing(spec: ModelSpec, name: str) -> dict[str, np.ndarray]:
    """The grouping factors that group ``name`` is nested in, each with its level per level.

    Found from the data as :func:`bayesmer.spec.parent_levels` finds nesting: ``h`` contains
    ``name`` when every level of ``name`` occurs within a single level of ``h``.
    """
    groups = _group_by_name(spec)
    g = groups[name]
    out = {}
    for h in spec.groups:
        if h.name == name or len(h.levels) > len(g.levels):
            continue
        mapping = parent_levels(g.index, h.index, len(g.levels))
        if mapping is not None:
            out[h.name] = mapping
    return out


def _nested_keys(spec: ModelSpec, keys: pl.DataFrame) -> pl.DataFrame:
    """Grid keys with every group a named group sits in, and only pairs that exist.

    A brood's prediction carries the effect of the location it lies in: naming ``BROOD`` adds
    its ``LOCATION`` column (its effect is then added whatever ``re`` says), and naming both
    keeps only the (brood, location) pairs of the data.
    """
    groups = _group_by_name(spec)
    named = [c for c in keys.columns if c in groups]
    keep = np.ones(keys.height, dtype=bool)
    added: dict[str, list[str]] = {}
    for name in named:
        child = keys[name].cast(pl.String).cast(pl.Enum(groups[name].levels)).to_physical()
        for outer, mapping in _containing(spec, name).items():
            labels = [groups[outer].levels[i] for i in mapping[child.to_numpy()]]
            if outer in keys.columns:
                keep &= np.array(labels) == keys[outer].cast(pl.String).to_numpy()
            elif outer not in added:
                added[outer] = labels
            else:
                keep &= np.array(labels) == np.array(added[outer])
    if not keep.any():
        raise ValueError(
            "at: no combination of the given group levels occurs in the data (a level of a "
            "nested factor lies within one level of the factor it is nested in): "
            + "; ".join(f"{c} {keys[c].unique().to_list()}" for c in named)
            + "."
        )
    extra = [
        pl.Series(c, labels, dtype=_column_dtype(spec, c, labels)) for c, labels in added.items()
    ]
    return keys.with_columns(extra).filter(pl.Series(keep))


def _numeric_mean(spec: ModelSpec, col: str) -> float:
    """Mean of a numeric covariate over the data rows used in the fit."""
    return float(np.average(spec.cells[col].to_numpy(), weights=spec.rows.astype(float)))


def _axes(spec: ModelSpec, values: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Grid values of every fixed-effect variable (``at`` first, else levels or the mean)."""
    axes: dict[str, list[Any]] = {}
    parsed = spec.formula
    # the random slopes' columns too: the random design of a grid point needs them
    for col in dict.fromkeys([*parsed.fixed_variables, *parsed.random_variables]):
        if col in spec.factors:
            axes[col] = values.get(col, list(spec.factors[col]))
        elif col in spec.numeric:
            axes[col] = values.get(col, [_numeric_mean(spec, col)])
    return axes


def _column_dtype(spec: ModelSpec, col: str, present: list[Any]) -> pl.DataType:
    """Enum over the present levels (model order) for factor and group columns, else Float64."""
    groups = _group_by_name(spec)
    if col in spec.factors or col in groups:
        levels = spec.factors[col] if col in spec.factors else groups[col].levels
        wanted = {str(v) for v in present}
        return pl.Enum([lv for lv in levels if lv in wanted])
    return pl.Float64


def _product(spec: ModelSpec, axes: dict[str, list[Any]]) -> pl.DataFrame:
    """All combinations, the first column varying slowest (so rows come out sorted)."""
    cols = list(axes)
    rows = list(itertools.product(*(axes[c] for c in cols)))
    return pl.DataFrame(
        [
            pl.Series(c, [r[i] for r in rows], dtype=_column_dtype(spec, c, axes[c]))
            for i, c in enumerate(cols)
        ]
    )


def _enum_keys(spec: ModelSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """Factor and group columns of observed rows as Enums in model order, sorted."""
    cast = {
        c: _column_dtype(spec, c, frame[c].unique().to_list())
        for c in frame.columns
        if c in spec.factors or c in _group_by_name(spec)
    }
    out = frame.with_columns([pl.col(c).cast(dt) for c, dt in cast.items()])
    return out.sort(out.columns)


@dataclass
class _Grid:
    """A reference grid and how its points average into the rows of the result.

    Attributes
    ----------
    keys : pl.DataFrame
        One row per result row (the kept columns; may have no columns, then one result row).
    frame : pl.DataFrame
        One row per grid point: every fixed-effect variable, plus grouping columns named in
        ``at`` (empredict). Result row ``r`` owns the points ``r * per_key ... (r+1) * per_key``.
    weights : np.ndarray
        (result rows, grid points): the link-scale averaging weights.
    remaining : list of GroupSpec
        Grouping factors not in the grid, handled by ``re``.
    combos : np.ndarray or None
        (K, len(remaining)) level indices of the observed group combinations (re='groups').
    group_weights : np.ndarray or None
        (grid points, K): weights of the observed group combinations at each grid point.
    """

    keys: pl.DataFrame
    frame: pl.DataFrame
    weights: np.ndarray
    remaining: list[GroupSpec]
    combos: np.ndarray | None
    group_weights: np.ndarray | None


def _counts(spec: ModelSpec, cols: list[str]) -> pl.DataFrame:
    """Data rows per combination of ``cols`` (factor and group columns as strings)."""
    cells = spec.cells
    if not cols:
        return pl.DataFrame({"__n": [float(cells[ROWS].sum())]})
    return cells.group_by(cols).agg(pl.col(ROWS).sum().cast(pl.Float64).alias("__n"))


def _lookup(frame: pl.DataFrame, counts: pl.DataFrame, cols: list[str]) -> np.ndarray:
    """Count of each row of ``frame`` in ``counts`` (0 when absent)."""
    if not cols:
        return np.full(frame.height, float(counts["__n"][0]))
    left = frame.select([pl.col(c).cast(pl.String) for c in cols]).with_row_index("__i")
    right = counts.with_columns([pl.col(c).cast(pl.String) for c in cols])
    joined = left.join(right, on=cols, how="left").sort("__i")
    return joined["__n"].fill_null(0.0).to_numpy()


def _build_grid(
    spec: ModelSpec,
    keys: pl.DataFrame,
    averaged: dict[str, list[Any]],
    weights: str,
    re: str,
) -> _Grid:
    n_keys = keys.height if keys.width else 1
    avg = _product(spec, averaged) if averaged else pl.DataFrame()
    per_key = avg.height if avg.width else 1
    parts = []
    if keys.width:
        parts.append(keys.select(pl.all().gather(np.repeat(np.arange(n_keys), per_key))))
    if avg.width:
        parts.append(avg.select(pl.all().gather(np.tile(np.arange(per_key), n_keys))))
    frame = pl.concat(parts, how="horizontal") if parts else pl.DataFrame()
    n_grid = n_keys * per_key

    factor_cols = [c for c in spec.factors if c in frame.columns]
    averaged_factors = [c for c in factor_cols if c in averaged]
    # Which factor columns the frequencies condition on, per R's emmeans weights.
    count_cols = {"equal": None, "proportional": averaged_factors, "cells": factor_cols}[weights]
    if count_cols is None:
        point_w = np.ones(n_grid)
    else:
        point_w = _lookup(frame, _counts(spec, count_cols), count_cols)
    blocks = point_w.reshape(n_keys, per_key)
    totals = blocks.sum(axis=1)
    if np.any(totals <= 0):
        empty = keys.row(int(np.flatnonzero(totals <= 0)[0]), named=True) if keys.width else {}
        raise ValueError(
            f"weights={weights!r}: the data has no rows for {_describe(empty)}, so its mean "
            "cannot be weighted by the data; use weights='equal'."
        )
    w = np.zeros((n_keys, n_grid))
    rows = np.repeat(np.arange(n_keys), per_key)
    w[rows, np.arange(n_grid)] = (blocks / totals[:, None]).ravel()

    remaining = [g for g in spec.groups if g.name not in frame.columns]
    combos = group_w = None
    if re == "groups" and remaining:
        gcols = [g.name for g in remaining]
        observed = spec.cells.select(gcols).unique().sort(gcols)
        combos = np.column_stack(
            [observed[g.name].cast(pl.Enum(g.levels)).to_physical().to_numpy() for g in remaining]
        ).astype(np.int64)
        # Groups nested in a group of the grid are averaged within it: a location's broods.
        outer = {c for g in remaining for c in _containing(spec, g.name) if c in frame.columns}
        cols = [*(count_cols or []), *sorted(outer)]
        equal = count_cols is None
        group_w = _group_weights(spec, frame, observed, cols if cols else count_cols, gcols, equal)
    return _Grid(keys, frame, w, remaining, combos, group_w)


def _group_weights(
    spec: ModelSpec,
    frame: pl.DataFrame,
    observed: pl.DataFrame,
    cols: list[str] | None,
    gcols: list[str],
    equal: bool = False,
) -> np.ndarray:
    """(grid points, K) weights of the observed group combinations.

    ``cols`` None gives equal weights; otherwise each combination is weighted by its number of
    data rows among the rows sharing the grid point's values of ``cols`` (with ``equal``, the
    combinations that occur there get equal weights).
    """
    n_grid, n_combos = (frame.height if frame.width else 1), observed.height
    if cols is None:
        return np.full((n_grid, n_combos), 1.0 / n_combos)
    combo_index = observed.with_row_index("__k")
    counts = _counts(spec, [*cols, *gcols]).join(combo_index, on=gcols, how="inner")
    if cols:
        counts = counts.with_columns([pl.col(c).cast(pl.String) for c in cols])
        key_rows = counts.select(cols).unique(maintain_order=True).with_row_index("__r")
        counts = counts.join(key_rows, on=cols)
        left = frame.select([pl.col(c).cast(pl.String) for c in cols]).with_row_index("__i")
        # Grid points whose values never occur in the data point at an all-zero extra row.
        point = (
            left.join(key_rows, on=cols, how="left")
            .sort("__i")["__r"]
            .fill_null(key_rows.height)
            .to_numpy()
            .astype(np.int64)
        )
        n_keys = key_rows.height
    else:
        counts = counts.with_columns(pl.lit(0, dtype=pl.UInt32).alias("__r"))
        point = np.zeros(n_grid, dtype=np.int64)
        n_keys = 1
    matrix = np.zeros((n_keys + 1, n_combos))
    matrix[counts["__r"].to_numpy(), counts["__k"].to_numpy()] = counts["__n"].to_numpy()
    if equal:
        matrix = (matrix > 0).astype(float)
    out = matrix[point]
    totals = out.sum(axis=1, keepdims=True)
    # A grid point without data carries no weight in the link-scale average (the fixed-effect
    # weights come from the same counts); equal group weights keep its value finite.
    safe = np.where(totals > 0, totals, 1.0)
    return np.where(totals > 0, out / safe, 1.0 / n_combos)


def _describe(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.items()) or "the whole grid"


# ---------------------------------------------------------------------------------------------
# Draws on the grid


def _design_rows(spec: ModelSpec, frame: pl.DataFrame) -> np.ndarray:
    """Fixed-effects design rows of the grid points, in the coding of ``spec.terms``."""
    return spec.design_matrix(frame)


def _column_chunks(n_draws: int, n_cols: int, depth: int) -> list[slice]:
    """Slices of grid columns such that draws x columns x depth stays within memory bounds."""
    step = max(1, _CHUNK_ELEMENTS // max(1, n_draws * depth))
    return [slice(i, min(i + step, n_cols)) for i in range(0, n_cols, step)]


def _link_values(
    model: Model,
    grid: _Grid,
    re: str,
    shift: tuple[str, float] | None = None,
    random_seed: int | None = None,
) -> np.ndarray:
    """Link-scale values of the result rows, per draw: shape (S, result rows).

    Per draw: the linear predictor at every grid point; the random effects per ``re`` (for
    'marginal' and 'groups' an average of the inverse link, mapped back to the link scale);
    then the link-scale weighted average of the grid points of each result row.
    """
    spec = model.spec
    trace = model.posterior
    frame = grid.frame
    if shift is not None:
        col, step = shift
        frame = frame.with_columns(pl.col(col) + step)
    eta = fixed(trace) @ _design_rows(spec, frame).T
    Z = {g.name: random_design(spec, g, frame) if g.slopes else None for g in spec.groups}
    for g in spec.groups:
        if g.name in frame.columns:
            index = frame[g.name].cast(pl.String).cast(pl.Enum(g.levels)).to_physical()
            index = index.to_numpy().astype(np.int64)
            eta = eta + group_part(group_effects(trace, g), index, Z[g.name])
    if grid.remaining and re == "marginal":
        variance = sum(
            random_variance(
                group_sd(trace, g), group_cor(trace, g) if g.slopes else None, Z[g.name]
            )
            for g in grid.remaining
        )
        eta = marginal_link(spec.family, eta, np.sqrt(variance))
    elif grid.remaining and re == "new":
        eta = eta + new_group_effect(trace, grid.remaining, random_seed, Z)
    elif grid.remaining and re == "groups":
        effects = {
            g.name: group_effects(trace, g)[:, grid.combos[:, i]]
            for i, g in enumerate(grid.remaining)
        }
        intercepts = sum(effects[g.name] for g in grid.remaining if not g.slopes)
        out = np.empty_like(eta)
        for part in _column_chunks(eta.shape[0], eta.shape[1], grid.combos.shape[0]):
            # (S, grid points, observed combinations): each combination's summed effects
            nodes = eta[:, part, None] + (
                intercepts[:, None, :] if isinstance(intercepts, np.ndarray) else 0.0
            )
            for g in grid.remaining:
                if g.slopes:
                    nodes = nodes + np.einsum("skq,nq->snk", effects[g.name], Z[g.name][part])
            out[:, part] = _link_of_mean(spec.family, nodes, grid.group_weights[None, part])
        eta = out
    return eta @ grid.weights.T


def new_group_effect(
    trace: Any,
    groups: list[GroupSpec],
    random_seed: int | None = None,
    Z: dict[str, np.ndarray | None] | None = None,
) -> np.ndarray:
    """One new group's summed effect per draw.

    For random intercepts ``sqrt(sum of sd^2) * z``, z ~ N(0, 1); a factor with slopes adds
    ``u . z_row`` with ``u ~ N(0, Sigma)`` drawn once per draw (see
    :func:`bayesmer.draws.new_effects`) and ``z_row`` each row's random design.

    Parameters
    ----------
    trace : xarray.DataTree
        The posterior.
    groups : list of GroupSpec
        The grouping factors whose effects are drawn anew.
    random_seed : int, optional
        Seed of ``numpy.random.default_rng``; :data:`NEW_GROUP_SEED` when None.
    Z : dict, optional
        The random design of the rows per factor with slopes (needed for those).

    Returns
    -------
    np.ndarray
        Shape (S, 1) for random intercepts (one effect per posterior draw, chains stacked),
        (S, rows) when a factor has slopes.
    """
    rng = np.random.default_rng(NEW_GROUP_SEED if random_seed is None else random_seed)
    intercepts = [g for g in groups if not g.slopes]
    out = 0.0
    if intercepts:
        sigma = np.sqrt(sum(group_sd(trace, g) ** 2 for g in intercepts))
        out = (sigma * rng.standard_normal(sigma.shape[0]))[:, None]
    for g in groups:
        if g.slopes:
            u = new_effects(group_sd(trace, g), group_cor(trace, g), 1, rng)[:, 0, :]
            out = out + u @ Z[g.name].T
    return out


def _cdf(link: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse link F(x) and its complement 1 - F(x), each computed without cancellation."""
    if link == "logit":
        return special.expit(x), special.expit(-x)
    if link == "probit":
        return special.ndtr(x), special.ndtr(-x)
    # cloglog: F(x) = 1 - exp(-exp(x))
    return -np.expm1(-np.exp(x)), np.exp(-np.exp(x))


def _quantile(link: str, v: np.ndarray) -> np.ndarray:
    """F^-1(v): quantiles of the logistic or Gumbel(min) distribution behind the link."""
    if link == "logit":
        return special.logit(v)
    return np.log(-np.log1p(-v))


def _link_from(link: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The link of a mean probability ``p`` given ``p`` and ``q = 1 - p`` (both accurate)."""
    if link == "logit":
        return np.log(p) - np.log(q)
    low = p < 0.5
    out = np.empty_like(p)
    if link == "probit":
        out[low] = special.ndtri(p[low])
        out[~low] = -special.ndtri(q[~low])
    else:  # cloglog: log(-log(1 - p))
        out[low] = np.log(-np.log1p(-p[low]))
        out[~low] = np.log(-np.log(q[~low]))
    return out


def _link_of_mean(family: Family, nodes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """link(sum over the last axis of weights * inverse_link(nodes)), computed stably."""
    if family.link == "identity":
        return np.sum(weights * nodes, axis=-1)
    if family.link == "log":
        return special.logsumexp(nodes, b=np.broadcast_to(weights, nodes.shape), axis=-1)
    p, q = _cdf(family.link, nodes)
    return _link_from(family.link, np.sum(weights * p, axis=-1), np.sum(weights * q, axis=-1))


def marginal_link(family: Family, eta: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """link(E[inverse_link(eta + sd * Z)]), Z ~ N(0, 1), per draw (rows of ``eta``).

    ``sd`` is one value per draw, shape (S,) or (S, 1), or one per draw and column of
    ``eta`` (S, columns): with random slopes the sd of a new group's effect differs between
    rows (``sqrt(z' Sigma z)``).

    Exact for the identity link (``eta``), the log link (``eta + sd^2 / 2``) and the probit
    link (``eta / sqrt(1 + sd^2)``). For logit and cloglog: Gauss-Hermite quadrature while
    ``sd <= HERMITE_MAX_SD[link]``; for larger sds the inverse link is nearly a step at the scale of
    the Hermite nodes, so the identity ``E[F(eta + sd Z)] = E_L[Phi((eta - L) / sd)]`` (L
    drawn from the distribution F) is integrated instead, by Gauss-Legendre over the
    quantiles of L. Both rules are accurate to about 1e-6 or better over their ranges.
    """
    # one sd per draw (S,) or (S, 1), or per draw and column of eta (S, columns)
    sd = sd[:, None] if sd.ndim == 1 else sd
    if family.link == "identity":
        return eta.copy()
    if family.link == "log":
        return eta + sd**2 / 2
    if family.link == "probit":
        return eta / np.sqrt(1 + sd**2)
    z, wz = hermegauss(QUADRATURE_NODES)
    wz = wz / wz.sum()
    x, wx = leggauss(QUADRATURE_NODES)
    v, wv = (x + 1) / 2, wx / 2
    quantiles = _quantile(family.link, v)
    out = np.empty_like(eta)
    for part in _column_chunks(eta.shape[0], eta.shape[1], QUADRATURE_NODES):
        e = eta[:, part, None]
        s = sd if sd.shape[1] == 1 else sd[:, part]
        wide = s > HERMITE_MAX_SD[family.link]
        p, q = _cdf(family.link, e + s[:, :, None] * z)
        hermite = _link_from(family.link, p @ wz, q @ wz)
        if wide.any():
            t = (e - quantiles) / s[:, :, None]
            legendre = _link_from(family.link, special.ndtr(t) @ wv, special.ndtr(-t) @ wv)
            hermite = np.where(wide, legendre, hermite)
        out[:, part] = hermite
    return out


def _trend_step(spec: ModelSpec, col: str) -> float:
    """Step of the central difference for a slope: 1e-4 of the covariate's sd."""
    x = spec.cells[col].to_numpy()
    rows = spec.rows.astype(float)
    sd = float(np.sqrt(np.average((x - np.average(x, weights=rows)) ** 2, weights=rows)))
    return 1e-4 * (sd if sd > 0 else 1.0)


# ---------------------------------------------------------------------------------------------
# Contrasts and tables


def _slopes(
    model: Model, grid: _Grid, re: str, type: str, var: str, random_seed: int | None = None
) -> np.ndarray:
    """Per-draw slopes of the marginal means in ``var``, by central differences."""
    step = _trend_step(model.spec, var)
    upper = _link_values(model, grid, re, shift=(var, step), random_seed=random_seed)
    lower = _link_values(model, grid, re, shift=(var, -step), random_seed=random_seed)
    if type == "link":
        return (upper - lower) / (2 * step)
    inverse = model.spec.family.inverse_link
    return (inverse(upper) - inverse(lower)) / (2 * step)


def _contrasts(
    family: Family,
    link: np.ndarray,
    display: pl.DataFrame,
    var: str,
    levels: list[str],
    by_cols: list[str],
    contrasts: dict[str, Any] | str,
    type: str,
) -> tuple[pl.DataFrame, str, np.ndarray, Any]:
    """Contrast keys, value column name, per-draw values and their transform."""
    n_levels = len(levels)
    probit_response = type == "response" and not _ratio_scale(family)
    ratio = type == "response" and not probit_response
    names, matrix = _contrast_matrix(contrasts, levels, var, ratio)
    # Result rows are ordered by by-combination, then level: one block of n_levels per
    # by-combination.
    n_draws = link.shape[0]
    n_blocks = link.shape[1] // n_levels
    base = family.inverse_link(link) if probit_response else link
    blocks = base.reshape(n_draws, n_blocks, n_levels)
    values = np.einsum("sbl,cl->sbc", blocks, matrix).reshape(n_draws, -1)
    frame = pl.DataFrame([pl.Series("contrast", names * n_blocks, dtype=pl.Enum(names))])
    if by_cols:
        which = np.repeat(np.arange(n_blocks) * n_levels, len(names))
        frame = frame.hstack(display.select(by_cols).select(pl.all().gather(which)))
    if ratio:
        return frame, family.ratio_label, values, np.exp
    return frame, "estimate", values, None


def _finish(
    keys: pl.DataFrame,
    name: str,
    values: np.ndarray,
    transform: Any,
    ci: float,
    draws: bool,
    contrast: bool = False,
) -> pl.DataFrame:
    """The summary table, or the draws in long form."""
    if draws:
        return _long(keys, name, values if transform is None else transform(values))
    return _summary_table(keys, name, values, transform, ci, contrast)


def _ratio_scale(family: Family) -> bool:
    """Whether exp() of a link-scale contrast has a meaning (odds, rate or hazard ratio)."""
    return family.link in ("logit", "log", "cloglog")


def _contrast_matrix(
    contrasts: dict[str, Any] | str, levels: list[str], var: str, ratio: bool
) -> tuple[list[str], np.ndarray]:
    """Names and weights (contrasts x levels) of the requested contrasts."""
    n = len(levels)
    if isinstance(contrasts, str):
        if contrasts not in NAMED_CONTRASTS:
            raise ValueError(
                f"contrasts must be a dict of weight vectors or one of {list(NAMED_CONTRASTS)}, "
                f"got {contrasts!r}."
            )
        if n < 2:
            raise ValueError(f"{contrasts!r} contrasts need at least two levels of {var!r}.")
        sep = " / " if ratio else " - "
        if contrasts == "pairwise":
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        elif contrasts == "revpairwise":
            pairs = [(j, i) for j in range(1, n) for i in range(j)]
        else:
            pairs = [(j, 0) for j in range(1, n)]
        matrix = np.zeros((len(pairs), n))
        for row, (a, b) in enumerate(pairs):
            matrix[row, a], matrix[row, b] = 1.0, -1.0
        return [f"{levels[a]}{sep}{levels[b]}" for a, b in pairs], matrix
    if not isinstance(contrasts, dict) or not contrasts:
        raise ValueError(
            "contrasts must be a non-empty dict of named weight vectors, e.g. "
            "{'male_vs_female': [-1, 1]}, or one of "
            f"{list(NAMED_CONTRASTS)}; got {contrasts!r}."
        )
    names, rows = [], []
    for name, vector in contrasts.items():
        if not isinstance(name, str):
            raise ValueError(f"contrast names must be strings, got {name!r}.")
        try:
            w = np.asarray(vector, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(
                f"contrast {name!r} must be a list of numbers, got {vector!r}."
            ) from None
        if w.ndim != 1 or len(w) != n:
            raise ValueError(
                f"contrast {name!r} has {w.size} weights but {var!r} has {n} levels "
                f"{levels}; give one weight per level, in that order."
            )
        if not np.all(np.isfinite(w)):
            raise ValueError(f"contrast {name!r} has weights that are not finite: {vector!r}.")
        if abs(w.sum()) > 1e-9 * np.abs(w).sum():
            raise ValueError(
                f"contrast {name!r} has weights {vector!r} that sum to {w.sum():g}, not 0. A "
                "contrast compares levels, so its weights must sum to zero (only then is "
                "exp() of it an odds ratio or a rate ratio); a weighted average of levels is "
                "a mean, not a contrast: use emmeans() without contrasts (weights=, at=)."
            )
        names.append(name)
        rows.append(w)
    return names, np.vstack(rows)


def _summary_table(
    keys: pl.DataFrame,
    name: str,
    values: np.ndarray,
    transform: Any,
    ci: float,
    contrast: bool = False,
) -> pl.DataFrame:
    """Median, SD and HPD of each column of ``values`` (draws x rows), on the reported scale.

    ``transform`` (increasing) maps ``values`` to the reported scale; the HPD is that of the
    reported draws (an HPD is not invariant to a change of scale, so a link-scale HPD mapped
    back would not be the HPD of the probabilities or ratios shown).
    """
    reported = values if transform is None else transform(values)
    bounds = hdi(reported, ci)
    stats: dict[str, Any] = {
        name: np.median(reported, axis=0),
        "SD": reported.std(axis=0, ddof=1),
        "lower_HPD": bounds[..., 0],
        "upper_HPD": bounds[..., 1],
    }
    if contrast:
        stats["pd"] = prob_direction(values, 0.0)
        stats["prob_gt_null"] = np.mean(values > 0.0, axis=0)
    table = pl.DataFrame(stats)
    return keys.hstack(table) if keys.width else table


def _long(keys: pl.DataFrame, name: str, reported: np.ndarray) -> pl.DataFrame:
    """Per-draw values in long form: key columns, ``.draw``, value."""
    n_draws, n_rows = reported.shape
    table = pl.DataFrame(
        {
            DRAW: np.tile(np.arange(n_draws), n_rows),
            name: reported.T.ravel(),
        }
    )
    if not keys.width:
        return table
    return keys.select(pl.all().gather(np.repeat(np.arange(n_rows), n_draws))).hstack(table)

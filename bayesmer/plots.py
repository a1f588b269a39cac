"""Pictures of a fitted model, each returned as a :class:`matplotlib.figure.Figure`.

The figures are built without pyplot, so a notebook shows each one exactly once (as the
result of the cell) and nothing accumulates in pyplot's figure list; save one with
``fig.savefig('name.png', dpi=150)``. Inside IPython, importing this module registers the PNG
display of figures, which IPython otherwise sets up only once pyplot has been used.

- :func:`plot_emmeans`: marginal means, point and interval per level, optionally with the
  density of the per-draw values.
- :func:`plot_contrasts`: contrasts as a forest plot with the null line (1 for odds and rate
  ratios, 0 on the link scale).
- :func:`plot_ranef`: caterpillar plot of the group deviations, one panel per grouping factor.
- :func:`plot_trace`: trace and rank plots of every chain, one row per parameter.
- :func:`plot_shrinkage`: each group's own data against the model's estimate for it (partial
  pooling), with the complete-pooling value.
- :func:`plot_ppc`: the posterior predictive check table of ``model.ppc()``.
- :func:`plot_prior_posterior`: prior against posterior density of the fixed effects and the
  group sds.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from arviz_stats.base import array_stats
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from .arguments import require_groups, resolve_ci
from .diagnostics import average_ranks
from .draws import group_effects, group_sd, hdi, stacked
from .ppc import PPC_COLUMNS

if TYPE_CHECKING:
    from .models import Model


def _register_notebook_display() -> None:
    """Let IPython show a returned Figure as a picture even before pyplot was used."""
    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython
    from IPython.core.pylabtools import print_figure

    shell = get_ipython()
    if shell is None:
        return
    png = shell.display_formatter.formatters["image/png"]
    png.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))


_register_notebook_display()


def _panel_grid(n: int, panel_size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels, three to a row, and the panels as a flat list."""
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    width, height = panel_size
    fig = Figure(figsize=(width * ncols, height * nrows + 0.5), layout="constrained")
    flat = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


#: Estimate columns of emmeans tables, and their axis labels.
_MEAN_COLUMNS = {
    "prob": "Probability",
    "rate": "Rate",
    "emmean": "Marginal mean (link scale)",
}
_CONTRAST_COLUMNS = {
    "odds_ratio": "Odds ratio",
    "ratio": "Ratio",
    "estimate": "Difference (link scale)",
}

_POINT = "#1f4e79"
_OBSERVED = "#c0392b"
_PRIOR = "#9e9e9e"
_CHAIN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


# ---------------------------------------------------------------------------------------------
# Marginal means and contrasts


def plot_emmeans(
    model: Model, marginal_var: str, densities: bool = False, **emmeans_kwargs: Any
) -> Figure:
    """Estimated marginal means: point and credible interval per level.

    Parameters
    ----------
    model : glm or glmer
        A fitted model.
    marginal_var : str
        The factor (or factors) whose levels are compared, as for ``model.emmeans``.
    densities : bool, default False
        Also draw the density of the per-draw means of each level (a violin behind the
        interval).
    **emmeans_kwargs
        Passed to ``model.emmeans`` (``by``, ``type``, ``ci``, ``weights``, ``re``, ``at``).
        With ``by``, one panel per combination of the ``by`` levels.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``contrasts`` or ``draws`` is passed (use :func:`plot_contrasts` for contrasts).
    """
    model._require_fit("plot_emmeans")
    _refuse(emmeans_kwargs, "contrasts", "plot_emmeans draws means; use plot_contrasts.")
    _refuse(emmeans_kwargs, "draws", "plot_emmeans chooses draws= itself (see densities=).")
    from .emmeans import emmeans

    draws = emmeans(model, marginal_var, draws=True, **emmeans_kwargs) if densities else None
    table = emmeans(model, marginal_var, **emmeans_kwargs)
    ci = emmeans_kwargs.get("ci") or model.ci
    return emmeans_figure(
        table,
        by=emmeans_kwargs.get("by"),
        ci=ci,
        draws=draws,
        title=f"Estimated marginal means of {_names(marginal_var)}",
    )


def plot_contrasts(
    model: Model, marginal_var: str, contrasts: Any = "pairwise", **emmeans_kwargs: Any
) -> Figure:
    """Contrasts between levels as a forest plot, with the line of no difference.

    The null line is at 1 for odds ratios and rate ratios (drawn on a log axis, so that a
    ratio and its inverse are equally far from it) and at 0 for differences on the link scale.
    Each row is labelled with its probability of direction (pd).

    Parameters
    ----------
    model : glm or glmer
        A fitted model.
    marginal_var : str
        The factor whose levels are contrasted.
    contrasts : str or dict, default 'pairwise'
        As for ``model.emmeans`` (``'pairwise'``, ``'trt.vs.ctrl'``, or named weights).
    **emmeans_kwargs
        Passed to ``model.emmeans`` (``by``, ``type``, ``ci``, ...). With ``by``, one panel
        per combination of the ``by`` levels.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``contrasts`` is None, or ``draws`` is passed.
    """
    model._require_fit("plot_contrasts")
    if contrasts is None:
        raise ValueError(
            "plot_contrasts needs contrasts (e.g. 'pairwise'); for means use plot_emmeans."
        )
    _refuse(emmeans_kwargs, "draws", "plot_contrasts draws the summary table.")
    from .emmeans import emmeans

    table = emmeans(model, marginal_var, contrasts=contrasts, **emmeans_kwargs)
    ci = emmeans_kwargs.get("ci") or model.ci
    return contrasts_figure(
        table,
        by=emmeans_kwargs.get("by"),
        ci=ci,
        title=f"Contrasts of {_names(marginal_var)}",
    )


def _ratio_axis(ax: Axes) -> None:
    """Log scale for ratios, ticks at 1, 2, 5 x powers of ten written as plain numbers."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _refuse(kwargs: dict[str, Any], key: str, message: str) -> None:
    if key in kwargs:
        raise ValueError(f"{key}= is not accepted here: {message}")


def _names(value: str | Sequence[str]) -> str:
    return value if isinstance(value, str) else " x ".join(value)


def _estimate_column(table: pl.DataFrame, candidates: dict[str, str], what: str) -> str:
    found = [c for c in candidates if c in table.columns]
    if candidates is _MEAN_COLUMNS:
        found += [c for c in table.columns if c.endswith("_trend")]
    if not found:
        raise ValueError(
            f"Not {what} table: it has none of the columns {list(candidates)} "
            f"(columns: {table.columns})."
        )
    return found[0]


def _by_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)


def _panels(table: pl.DataFrame, by: list[str]) -> list[tuple[str | None, pl.DataFrame]]:
    """The table split into one frame per combination of the ``by`` columns, in order."""
    if not by:
        return [(None, table)]
    missing = [c for c in by if c not in table.columns]
    if missing:
        raise ValueError(f"by column(s) {missing} are not in the table {table.columns}.")
    keys = table.select(by).unique(maintain_order=True)
    out = []
    for row in keys.iter_rows(named=True):
        part = table.filter(pl.all_horizontal([pl.col(c) == v for c, v in row.items()]))
        out.append((", ".join(f"{c} = {v}" for c, v in row.items()), part))
    return out


def _row_labels(part: pl.DataFrame, cols: list[str], default: str = "") -> list[str]:
    if not cols:
        return [default] * len(part)
    if len(cols) == 1:
        return [str(v) for v in part[cols[0]].to_list()]
    return [
        ", ".join(f"{c}={v}" for c, v in zip(cols, row, strict=True))
        for row in part.select(cols).iter_rows()
    ]


def _forest_grid(n_panels: int, n_rows: int, width: float = 7.0) -> tuple[Figure, list[Axes]]:
    height = max(2.2, 0.42 * n_rows + 1.3)
    fig = Figure(figsize=(width, height * n_panels), layout="constrained")
    axes = fig.subplots(n_panels, 1, squeeze=False, sharex=True)[:, 0]
    return fig, list(axes)


def _draw_rows(
    ax: Axes,
    est: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    labels: list[str],
) -> None:
    y = np.arange(len(est))
    ax.hlines(y, low, high, color=_POINT, linewidth=2.2, zorder=3)
    ax.plot(est, y, "o", color=_POINT, markersize=7, zorder=4)
    ax.set_yticks(y, labels)
    ax.set_ylim(len(est) - 0.4, -0.6)
    ax.grid(axis="x", alpha=0.3)


def emmeans_figure(
    table: pl.DataFrame,
    by: str | Sequence[str] | None = None,
    ci: float = 0.95,
    draws: pl.DataFrame | None = None,
    title: str | None = None,
) -> Figure:
    """Draw an emmeans means table (the drawing half of :func:`plot_emmeans`).

    Parameters
    ----------
    table : polars.DataFrame
        ``<factor columns>, prob|rate|emmean|<var>_trend, SD, lower_HPD, upper_HPD``.
    by : str or list of str, optional
        Columns to split into panels (one per combination).
    ci : float, default 0.95
        Interval mass, for the caption.
    draws : polars.DataFrame, optional
        The same means per draw (``<factor columns>, .draw, <estimate>``); drawn as violins.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    est_col = _estimate_column(table, _MEAN_COLUMNS, "an emmeans")
    label_cols = table.columns[: table.columns.index(est_col)]
    by_cols = _by_list(by)
    row_cols = [c for c in label_cols if c not in by_cols] or label_cols
    panels = _panels(table, by_cols)
    fig, axes = _forest_grid(len(panels), max(len(p) for _, p in panels))
    per_draw = _draws_by_row(draws, label_cols, est_col) if draws is not None else None
    for ax, (name, part) in zip(axes, panels, strict=True):
        if per_draw is not None:
            keys = (
                [tuple(str(v) for v in r) for r in part.select(label_cols).iter_rows()]
                if label_cols
                else [()] * len(part)
            )
            _violins(ax, [per_draw.get(k) for k in keys])
        _draw_rows(
            ax,
            part[est_col].to_numpy(),
            part["lower_HPD"].to_numpy(),
            part["upper_HPD"].to_numpy(),
            _row_labels(part, row_cols, default=est_col),
        )
        if name is not None:
            ax.set_title(name, fontsize=10)
    what = _MEAN_COLUMNS.get(est_col, f"Slope ({est_col})")
    axes[-1].set_xlabel(f"{what}: point = estimate, bar = {ci:.0%} highest-density interval")
    if est_col == "prob":
        low = min(0.0, float(table["lower_HPD"].min()))
        high = max(1.0, float(table["upper_HPD"].max()))
        if float(table["upper_HPD"].max()) - float(table["lower_HPD"].min()) > 0.5:
            axes[-1].set_xlim(low - 0.02, high + 0.02)
    if title:
        fig.suptitle(title)
    return fig


def _draws_by_row(
    draws: pl.DataFrame, label_cols: list[str], est_col: str
) -> dict[tuple[str, ...], np.ndarray]:
    if est_col not in draws.columns or any(c not in draws.columns for c in label_cols):
        raise ValueError(
            f"The per-draw table needs the columns {[*label_cols, est_col]}; it has "
            f"{draws.columns}."
        )
    if not label_cols:
        return {(): draws[est_col].to_numpy().astype(float)}
    keyed = (
        draws.select([pl.col(c).cast(pl.String) for c in label_cols] + [pl.col(est_col)])
        .group_by(label_cols, maintain_order=True)
        .agg(pl.col(est_col))
    )
    return {tuple(row[:-1]): np.asarray(row[-1], dtype=float) for row in keyed.iter_rows()}


def _violins(ax: Axes, samples: list[np.ndarray | None], half_height: float = 0.38) -> None:
    for i, values in enumerate(samples):
        if values is None or len(values) < 2 or np.ptp(values) == 0:
            continue
        grid, pdf, _ = array_stats.kde(values)
        pdf = pdf / pdf.max() * half_height
        ax.fill_between(grid, i - pdf, i + pdf, color=_POINT, alpha=0.18, linewidth=0, zorder=2)


def contrasts_figure(
    table: pl.DataFrame,
    by: str | Sequence[str] | None = None,
    ci: float = 0.95,
    title: str | None = None,
) -> Figure:
    """Draw an emmeans contrasts table as a forest plot (the drawing half of plot_contrasts).

    Parameters
    ----------
    table : polars.DataFrame
        ``contrast, [by columns], odds_ratio|ratio|estimate, SD, lower_HPD, upper_HPD, pd,
        prob_gt_null``.
    by : str or list of str, optional
        Columns to split into panels (one per combination).
    ci : float, default 0.95
        Interval mass, for the caption.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    est_col = _estimate_column(table, _CONTRAST_COLUMNS, "an emmeans contrasts")
    if "contrast" not in table.columns:
        raise ValueError(f"Not a contrasts table: no 'contrast' column ({table.columns}).")
    ratio = est_col != "estimate"
    null = 1.0 if ratio else 0.0
    panels = _panels(table, _by_list(by))
    fig, axes = _forest_grid(len(panels), max(len(p) for _, p in panels), width=7.5)
    for ax, (name, part) in zip(axes, panels, strict=True):
        ax.axvline(null, color="black", linestyle="--", linewidth=1, zorder=1)
        _draw_rows(
            ax,
            part[est_col].to_numpy(),
            part["lower_HPD"].to_numpy(),
            part["upper_HPD"].to_numpy(),
            _row_labels(part, ["contrast"]),
        )
        if "pd" in part.columns:
            right = blended_transform_factory(ax.transAxes, ax.transData)
            for i, pd_ in enumerate(part["pd"].to_list()):
                ax.text(1.02, i, f"pd {pd_:.3f}", transform=right, va="center", fontsize=9)
        if name is not None:
            ax.set_title(name, fontsize=10)
    if ratio:
        _ratio_axis(axes[-1])
    axes[-1].set_xlabel(
        f"{_CONTRAST_COLUMNS[est_col]}: point = estimate, bar = {ci:.0%} highest-density "
        f"interval, dashed = no difference ({null:g})"
    )
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------
# Group effects


def plot_ranef(model: Model, ci: float | None = None, exponentiate: bool | None = None) -> Figure:
    """Caterpillar plot of the group deviations: one panel per grouping factor.

    Each level's deviation from the fixed intercept (lme4's ranef) as posterior median and
    highest-density interval, levels sorted by the median; a factor with random slopes gets
    one panel per term (``(Intercept) | g``, ``x | g``: the deviations from the fixed
    intercept and slope).

    Parameters
    ----------
    model : glmer
        A fitted mixed model.
    ci : float, optional
        Interval mass; the model's ``ci`` by default.
    exponentiate : bool, optional
        Show exp() of the deviations (multiplicative effects on the odds or the rate; null
        line at 1). The model's ``exponentiate`` setting by default.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If the model has no random effects, or ``ci`` is not in (0, 1).
    """
    model._require_fit("plot_ranef")
    spec = model.spec
    require_groups(spec, "plot_ranef")
    ci = resolve_ci(model, ci)
    exponentiate = model.exponentiate if exponentiate is None else exponentiate
    if exponentiate and not model._family.exponentiates:
        raise ValueError(
            f"exponentiate=True needs a logit or log link; this model uses {model.link}."
        )
    # one panel per random term: (1|g), and with slopes (Intercept)|g, x|g, ...
    panels = [(g, k) for g in spec.groups for k in range(len(g.terms))]
    n_levels = max(len(g.levels) for g in spec.groups)
    height = max(2.4, min(0.24 * n_levels + 1.4, 16.0))
    fig = Figure(figsize=(4.6 * len(panels), height), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (g, k) in zip(axes, panels, strict=True):
        u = group_effects(model.posterior, g)
        sd = group_sd(model.posterior, g)
        if g.slopes:
            u, sd = u[:, :, k], sd[:, k]
        if exponentiate:
            u = np.exp(u)  # the HDI of the multipliers themselves
        est = np.median(u, axis=0)
        bounds = hdi(u, ci)
        order = np.argsort(-est)  # largest at the top
        low, high = bounds[order, 0], bounds[order, 1]
        est = est[order]
        ax.axvline(1.0 if exponentiate else 0.0, color="black", linestyle="--", linewidth=1)
        _draw_rows(ax, est, low, high, [g.levels[i] for i in order])
        if len(g.levels) > 60:
            ax.set_yticks([])
            ax.set_ylabel(f"{len(g.levels)} levels, sorted by estimate")
        elif len(g.levels) > 25:
            ax.tick_params(axis="y", labelsize=7)
        label = f"(1|{g.name})" if not g.slopes else f"{g.terms[k]} | {g.name}"
        ax.set_title(f"{label}: sd {float(np.median(sd)):.2f}", fontsize=10)
        if exponentiate:
            _ratio_axis(ax)
        ax.set_xlabel(
            ("exp(deviation), multiplicative" if exponentiate else "deviation, link scale")
            + f"; {ci:.0%} HDI"
        )
    fig.suptitle("Group effects (median and interval per level)")
    return fig


def plot_shrinkage(
    model: Model, group: str | None = None, type: str = "link", ax: Axes | None = None
) -> Figure:
    """Shrinkage plot: each group's own data against the model's estimate for it.

    One column per level of the grouping factor, levels sorted by their number of rows ``n``
    (then by their observed value): an open circle at the group's own data (no pooling), an
    arrow to the model's estimate for the group (partial pooling, filled circle), and a dash
    at the fixed part alone (complete pooling). Marker areas grow with ``n``: small groups
    move furthest towards the complete-pooling value. The values are those of
    :func:`bayesmer.pooling.shrinkage`.

    Parameters
    ----------
    model : glmer
        A fitted mixed model.
    group : str, optional
        The grouping factor; needed only when the model has several.
    type : {'link', 'response'}, default 'link'
        ``'link'``: the table's link-scale values (no pooling with its continuity correction,
        so a group without successes or events sits at a finite value), the scale on which
        the model pools the groups. ``'response'``: probabilities or rates; the no-pooling
        point is the observed proportion (or rate) itself, and the model's values go through
        the inverse link.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The new figure, or the figure holding ``ax``.

    Raises
    ------
    ValueError
        If the model has no random effects, ``group`` is not one of them, or ``type`` is not
        ``'response'`` or ``'link'``.
    """
    model._require_fit("plot_shrinkage")
    if type not in ("response", "link"):
        raise ValueError(f"type must be 'response' or 'link', got {type!r}.")
    from .pooling import _pick_group, shrinkage

    name = _pick_group(model.spec, group, "plot_shrinkage").name
    table = shrinkage(model, name).sort(["n", "no_pooling"])
    n = table["n"].to_numpy()
    partial = table["partial_pooling"].to_numpy()
    complete = table["complete_pooling"].to_numpy()
    if type == "response":
        inverse = model.spec.family.inverse_link
        alone, partial, complete = table["observed"].to_numpy(), inverse(partial), inverse(complete)
        label = {
            "trials": "Probability",
            "exposure": "Rate per unit exposure",
            "rows": f"Mean {model.spec.formula.response.column}",
        }[model.spec.family.size_kind]
    else:
        alone = table["no_pooling"].to_numpy()
        label = f"Link scale ({model.link})"
    x = np.arange(len(table))
    size = 15.0 + 85.0 * n / n.max()
    if ax is None:
        fig = Figure(figsize=(min(max(6.0, 0.07 * len(x) + 4.0), 14.0), 4.4), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    if np.ptp(complete) <= 1e-12 * max(1.0, abs(complete[0])):
        ax.axhline(
            complete[0],
            color="black",
            linestyle="--",
            linewidth=1,
            label="complete pooling (fixed effects only)",
        )
    else:
        ax.plot(
            x,
            complete,
            "_",
            color="black",
            markersize=9,
            label="complete pooling (fixed effects only)",
        )
    ax.quiver(
        x,
        alone,
        np.zeros_like(x, dtype=float),
        partial - alone,
        angles="xy",
        scale_units="xy",
        scale=1.0,
        color=_PRIOR,
        width=0.0025,
        zorder=2,
    )
    ax.scatter(
        x,
        alone,
        s=size,
        facecolors="none",
        edgecolors=_OBSERVED,
        zorder=3,
        label="no pooling (own data)",
    )
    ax.scatter(x, partial, s=size, color=_POINT, zorder=4, label="partial pooling (model)")
    sizes = np.unique(n)
    if len(sizes) <= 15:
        top = blended_transform_factory(ax.transData, ax.transAxes)
        for value in sizes:
            where = np.flatnonzero(n == value)
            if where[0] > 0:
                ax.axvline(where[0] - 0.5, color="0.85", linewidth=1, zorder=1)
            if len(where) < len(x) / 30:
                continue  # too narrow to label
            ax.text(
                where.mean(),
                1.01,
                f"n={value}",
                transform=top,
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks([])
    ax.set_xlim(-1, len(x))
    ax.set_xlabel(f"levels of {name}, sorted by n (marker size: rows per level)")
    ax.set_ylabel(label)
    ax.legend(fontsize=8, loc="best", frameon=False)
    ax.set_title(
        f"Shrinkage of the {len(x)} levels of {name}: own data (open) to the model's estimate "
        "(filled)",
        fontsize=10,
        pad=16 if len(sizes) <= 15 else 6,
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Sampler diagnostics


def _scalar_series(model: Model, var_names: Sequence[str] | None) -> list[tuple[str, np.ndarray]]:
    """(label, draws of shape (chain, draw)) for every scalar in the named variables."""
    spec = model.spec
    available = spec.reported
    names = list(var_names) if var_names is not None else ["b"] + [g.sd_name for g in spec.groups]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(f"var_names {names!r}: choose among {available}.")
    posterior = model.posterior["posterior"].to_dataset()
    out = []
    for name in names:
        da = posterior[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        if not extra:
            out.append((name, da.transpose("chain", "draw").values))
            continue
        values = da.transpose("chain", "draw", *extra).values
        for idx in np.ndindex(*values.shape[2:]):
            coords = ", ".join(str(da[d].values[i]) for d, i in zip(extra, idx, strict=True))
            out.append((f"{name}[{coords}]", values[(..., *idx)]))
    return out


def plot_trace(model: Model, var_names: Sequence[str] | None = None, bins: int = 20) -> Figure:
    """Trace and rank plots, one row per parameter.

    Left: the draws of each chain against the iteration (well-mixed chains look like
    overlapping noise). Right: the rank plot of Vehtari et al. (2021), a histogram per chain
    of the ranks of its draws among all draws; well-mixed chains are flat around the dashed
    line of uniform ranks. Each row's title gives R-hat and the bulk ESS.

    Parameters
    ----------
    model : glm or glmer
        A fitted model.
    var_names : list of str, optional
        Among ``'b'`` (every fixed coefficient), ``'sd_<g>'`` and ``'u_<g>'`` (every group
        deviation of g). By default the fixed coefficients and the group sds.
    bins : int, default 20
        Rank histogram bins.

    Returns
    -------
    matplotlib.figure.Figure
        ``2 * n_parameters`` axes.

    Raises
    ------
    ValueError
        For an unknown variable name or fewer than 2 bins.
    """
    model._require_fit("plot_trace")
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}.")
    series = _scalar_series(model, var_names)
    diag = {r["term"]: r for r in model.diagnostics.iter_rows(named=True)}
    fig = Figure(figsize=(10, 1.9 * len(series) + 0.6), layout="constrained")
    axes = fig.subplots(len(series), 2, squeeze=False, width_ratios=[2.2, 1])
    for (label, values), (ax_trace, ax_rank) in zip(series, axes, strict=True):
        n_chains, n_draws = values.shape
        colours = [_CHAIN_COLOURS[c % len(_CHAIN_COLOURS)] for c in range(n_chains)]
        for c in range(n_chains):
            ax_trace.plot(values[c], color=colours[c], linewidth=0.6, alpha=0.75)
        info = diag.get(label)
        stats = f"   R-hat {info['rhat']:.3f}, bulk ESS {info['ess_bulk']:.0f}" if info else ""
        ax_trace.set_title(f"{label}{stats}", fontsize=10, loc="left")
        ax_trace.set_xlim(0, n_draws - 1)
        ranks = average_ranks(values.reshape(1, -1)).reshape(values.shape)
        edges = np.linspace(0.5, values.size + 0.5, bins + 1)
        centres = 0.5 * (edges[1:] + edges[:-1])
        for c in range(n_chains):
            counts, _ = np.histogram(ranks[c], bins=edges)
            ax_rank.step(centres, counts, where="mid", color=colours[c], linewidth=1.2)
        ax_rank.axhline(n_draws / bins, color="black", linestyle="--", linewidth=1)
        ax_rank.set_ylim(bottom=0)
        ax_rank.set_yticks([])
        ax_rank.set_title("rank per chain", fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("iteration (after tuning)")
    axes[-1, 1].set_xlabel("rank of the draw among all draws")
    return fig


# ---------------------------------------------------------------------------------------------
# Posterior predictive check


def plot_ppc(model: Model, max_panels: int = 12, **ppc_kwargs: Any) -> Figure:
    """Posterior predictive check: each observed statistic against its replicated values.

    Parameters
    ----------
    model : glm or glmer
        A fitted model.
    max_panels : int, default 12
        Up to this many statistics, one panel each: the replicated mean and interval with the
        observed value marked and the posterior predictive p-value (ppp) in the title. With
        more statistics (one per group level, say), one panel of the ppp of every statistic;
        values near 0 or 1 (shaded) flag what the model does not reproduce.
    **ppc_kwargs
        Passed to ``model.ppc`` (``stat``, ``ci``, ``random_seed``, ``re``: ``'groups'``
        replicates with the fitted group effects, ``'new'`` with fresh effects drawn from the
        population, a new set of groups; see :func:`bayesmer.ppc.ppc`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    model._require_fit("plot_ppc")
    return ppc_figure(model.ppc(**ppc_kwargs), max_panels=max_panels)


def ppc_figure(table: pl.DataFrame, max_panels: int = 12) -> Figure:
    """Draw a posterior predictive check table (the drawing half of :func:`plot_ppc`).

    Parameters
    ----------
    table : polars.DataFrame
        ``statistic, observed, replicated_mean, replicated_low, replicated_high, ppp``.
    max_panels : int, default 12
        See :func:`plot_ppc`.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per statistic, or one axes in all when there are more than ``max_panels``.
    """
    missing = [c for c in PPC_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"Not a ppc table: columns {missing} are missing ({table.columns}).")
    if not isinstance(max_panels, int) or max_panels < 1:
        raise ValueError(f"max_panels must be a positive integer, got {max_panels!r}.")
    if len(table) == 0:
        raise ValueError("The ppc table has no statistics to plot.")
    if len(table) > max_panels:
        return _ppp_overview(table)
    fig, flat = _panel_grid(len(table), panel_size=(3.6, 1.9))
    for ax, row in zip(flat, table.iter_rows(named=True), strict=False):
        ax.hlines(
            0,
            row["replicated_low"],
            row["replicated_high"],
            color=_POINT,
            linewidth=6,
            alpha=0.45,
            label="replicated interval",
        )
        ax.plot(row["replicated_mean"], 0, "o", color=_POINT, markersize=8, label="replicated mean")
        ax.axvline(row["observed"], color=_OBSERVED, linewidth=2, label="observed")
        ax.set_yticks([])
        ax.set_ylim(-1, 1)
        span = [row["replicated_low"], row["replicated_high"], row["observed"]]
        pad = 0.15 * (max(span) - min(span)) or 0.05 * (abs(row["observed"]) or 1.0)
        ax.set_xlim(min(span) - pad, max(span) + pad)
        ax.set_title(f"{row['statistic']}\nppp = {row['ppp']:.3f}", fontsize=10)
    fig.legend(
        *flat[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncols=3,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle("Posterior predictive check: observed (red) against replicated data")
    return fig


def _ppp_overview(table: pl.DataFrame) -> Figure:
    n = len(table)
    fig = Figure(figsize=(7, max(2.5, min(0.22 * n + 1.5, 30.0))), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)
    ax.axvspan(0, 0.025, color=_OBSERVED, alpha=0.15)
    ax.axvspan(0.975, 1, color=_OBSERVED, alpha=0.15)
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1)
    ppp = table["ppp"].to_numpy()
    extreme = (ppp < 0.025) | (ppp > 0.975)
    ax.plot(ppp[~extreme], y[~extreme], "o", color=_POINT)
    ax.plot(ppp[extreme], y[extreme], "o", color=_OBSERVED)
    ax.set_yticks(y, [str(s) for s in table["statistic"].to_list()])
    if n > 60:
        ax.tick_params(axis="y", labelsize=6)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(
        "posterior predictive p-value (share of replicated statistics >= observed)\n"
        "shaded: below 2.5% or above 97.5%, the model does not reproduce the statistic"
    )
    ax.set_title(f"Posterior predictive check of {n} statistics", fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------------
# Prior against posterior


def plot_prior_posterior(
    model: Model, var_names: Sequence[str] | None = None, random_seed: int | None = None
) -> Figure:
    """Prior and posterior density of each fixed effect and group sd, on the link scale.

    Draws from the prior first (``model.sample_prior``, stored as ``model.prior``) if the
    model has no prior draws yet.

    Parameters
    ----------
    model : glm or glmer
        A fitted model.
    var_names : list of str, optional
        Among ``'b'`` (every fixed coefficient) and ``'sd_<g>'``; by default all of them.
    random_seed : int, optional
        Seed of the prior draws when they have to be made (the model's seed by default).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per parameter.

    Raises
    ------
    ValueError
        For an unknown variable name.
    """
    model._require_fit("plot_prior_posterior")
    spec = model.spec
    available = ["b"] + [g.sd_name for g in spec.groups]
    names = list(var_names) if var_names is not None else available
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(f"var_names {names!r}: choose among {available}.")
    if model.prior is None:
        model.sample_prior(random_seed=model.random_seed if random_seed is None else random_seed)
    prior = model.prior["prior"].to_dataset()
    panels: list[tuple[str, str, np.ndarray, np.ndarray, bool]] = []
    for name in names:
        post = stacked(model.posterior, name)
        pri = stacked(prior, name)
        if name == "b":
            for j, term in enumerate(spec.terms):
                desc = spec.priors[term].describe()
                if term == "(Intercept)":
                    desc += "\non the centred intercept"
                panels.append((term, desc, pri[:, j], post[:, j], False))
        else:
            g = next(g for g in spec.groups if g.sd_name == name)
            for k, term in enumerate(g.terms):
                key = g.sd_key(term)
                p_k, q_k = (pri[:, k], post[:, k]) if g.slopes else (pri, post)
                panels.append((f"sd of ({key})", spec.priors[key].describe(), p_k, q_k, True))
    fig, flat = _panel_grid(len(panels), panel_size=(3.8, 2.7))
    for ax, (label, desc, pri, post, positive) in zip(flat, panels, strict=False):
        lo = min(float(np.quantile(pri, 0.005)), float(post.min()))
        hi = max(float(np.quantile(pri, 0.995)), float(post.max()))
        if positive:
            lo = 0.0
        for values, colour, text, alpha in (
            (pri, _PRIOR, "prior", 0.35),
            (post, _POINT, "posterior", 0.3),
        ):
            grid_x, pdf, _ = array_stats.kde(values)
            ax.fill_between(grid_x, pdf, color=colour, alpha=alpha, linewidth=0)
            ax.plot(grid_x, pdf, color=colour, linewidth=1.4, label=text)
        ax.set_xlim(lo, hi)
        ax.set_ylim(bottom=0)
        ax.set_yticks([])
        ax.set_title(f"{label}\nprior {desc}", fontsize=9)
    flat[0].legend(fontsize=8, frameon=False)
    fig.suptitle("Prior against posterior (link scale)")
    return fig

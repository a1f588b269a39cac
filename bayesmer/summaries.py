"""Draws -> the tables users read: params, result_fit, ranef, fixef, ranef_var, summary().

Point estimates are posterior medians (they commute with exp, so an exponentiated estimate is
the exp of the log-scale one); intervals are highest-density intervals at the model's ``ci``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from .diagnostics import Diagnostics
from .draws import fixed, group_effects, group_sd, hdi, prob_direction, stacked
from .spec import GroupSpec, ModelSpec

if TYPE_CHECKING:
    import xarray as xr


def params_table(spec: ModelSpec, trace: xr.DataTree, exponentiate: bool) -> pl.DataFrame:
    """``term, estimate``: posterior medians of the fixed effects."""
    b = fixed(trace)
    est = np.median(b, axis=0)
    if exponentiate:
        est = np.exp(est)
    return pl.DataFrame({"term": spec.terms, "estimate": est})


def _interval_rows(values: np.ndarray, ci: float, exponentiate: bool) -> dict[str, np.ndarray]:
    """Median, sd, HDI and pd of the columns of ``values`` (draws x k)."""
    pd_ = prob_direction(values)
    if exponentiate:
        ev = np.exp(values)
        bounds = hdi(ev, ci)
        return {
            "estimate": np.exp(np.median(values, axis=0)),
            "sd": ev.std(axis=0, ddof=1),
            "conf_low": bounds[..., 0],
            "conf_high": bounds[..., 1],
            "pd": pd_,
        }
    bounds = hdi(values, ci)
    return {
        "estimate": np.median(values, axis=0),
        "sd": values.std(axis=0, ddof=1),
        "conf_low": bounds[..., 0],
        "conf_high": bounds[..., 1],
        "pd": pd_,
    }


def result_fit_table(
    spec: ModelSpec, trace: xr.DataTree, diag: Diagnostics, ci: float, exponentiate: bool
) -> pl.DataFrame:
    """``term, estimate, sd, conf_low, conf_high, pd, rhat, ess_bulk, ess_tail``.

    One row per fixed effect, then one for the family's dispersion parameter (``sigma``,
    ``size`` or ``phi``), if any. With ``exponentiate=True`` a fixed effect's estimate is
    exp() of the log-scale median, and ``sd`` and the interval are those of exp(draws): the
    HDI of the odds or rate ratios themselves (the dispersion row stays as it is).
    """
    rows = _interval_rows(fixed(trace), ci, exponentiate)
    table = pl.DataFrame({"term": spec.terms, **rows})
    key = spec.family.dispersion
    if key:  # the dispersion parameter, never exponentiated (it is not on the link scale)
        extra = pl.DataFrame(
            {"term": [key], **_interval_rows(stacked(trace, key)[:, None], ci, False)}
        )
        table = pl.concat([table, extra])
    d = diag.table.with_columns(pl.col("term").str.replace(r"^b\[(.*)\]$", "$1"))
    return table.join(d.select("term", "rhat", "ess_bulk", "ess_tail"), on="term", how="left")


def _effects(trace: xr.DataTree, g: GroupSpec) -> np.ndarray:
    """A factor's group deviations as (S, levels, terms)."""
    u = group_effects(trace, g)
    return u if g.slopes else u[:, :, None]


def ranef_table(
    spec: ModelSpec, trace: xr.DataTree, exponentiate: bool
) -> pl.DataFrame | dict[str, pl.DataFrame]:
    """``level`` and one column per random term (``(Intercept)``, ``x``...): posterior
    medians of the group deviations, per grouping factor."""
    out = {}
    for g in spec.groups:
        est = np.median(_effects(trace, g), axis=0)
        if exponentiate:
            est = np.exp(est)
        out[g.name] = pl.DataFrame(
            {"level": g.levels} | {t: est[:, k] for k, t in enumerate(g.terms)}
        )
    return _one_or_dict(out)


def fixef_table(
    spec: ModelSpec, trace: xr.DataTree, exponentiate: bool
) -> pl.DataFrame | dict[str, pl.DataFrame]:
    """Per-group coefficients (lme4's ``coef()``): fixed effects plus the group deviations.

    Computed per draw, then summarised by the median. Each fixed term gets the deviation of
    the random term of the same name (the intercept, and the slopes of ``(x|g)``). A random
    term that has no fixed counterpart (``y ~ 0 + x + (1|g)``, ``y ~ 1 + (0 + x|g)``) is a
    column of the deviations, placed first, as lme4 fills it in.
    """
    b = fixed(trace)
    out = {}
    for g in spec.groups:
        u = _effects(trace, g)
        cols: dict[str, object] = {"level": g.levels}
        for k, term in enumerate(g.terms):
            if term not in spec.terms:
                est = np.median(u[:, :, k], axis=0)
                cols[term] = np.exp(est) if exponentiate else est
        for j, term in enumerate(spec.terms):
            per_group = b[:, [j]]
            if term in g.terms:
                per_group = per_group + u[:, :, g.terms.index(term)]
            per_group = np.broadcast_to(per_group, u.shape[:2])
            est = np.median(per_group, axis=0)
            cols[term] = np.exp(est) if exponentiate else est
        out[g.name] = pl.DataFrame(cols)
    return _one_or_dict(out)


def ranef_var_table(spec: ModelSpec, trace: xr.DataTree, ci: float) -> pl.DataFrame:
    """``group, term, estimate, conf_low, conf_high``: the group sds (median and HDI).

    Terms have lme4's VarCorr names, as pymer4 shows them: ``sd__(Intercept)`` for a random
    intercept, and for a factor with slopes also ``sd__x`` and ``cor__(Intercept).x``. A
    gaussian model ends with lme4's residual row: group ``Residual``, term
    ``sd__Observation`` (``sigma``).
    """
    rows = []
    for g in spec.groups:
        sd = group_sd(trace, g)
        if not g.slopes:
            values, names = sd[:, None], ["sd__(Intercept)"]
        else:
            values, names = sd, [f"sd__{t}" for t in g.terms]
            if g.cor_pairs:
                values = np.hstack([values, stacked(trace, g.cor_name)])
                names += [f"cor__{label}" for label in g.cor_labels]
        rows += _var_rows(g.name, names, values, ci)
    if spec.family.name == "gaussian":
        sigma = stacked(trace, "sigma")[:, None]
        rows += _var_rows("Residual", ["sd__Observation"], sigma, ci)
    return pl.DataFrame(rows)


def _var_rows(group: str, names: list[str], values: np.ndarray, ci: float) -> list[dict]:
    """Rows of :func:`ranef_var_table` for one group: median and HDI of each column."""
    bounds = hdi(values, ci)
    rows = []
    for k, name in enumerate(names):
        rows.append(
            {
                "group": group,
                "term": name,
                "estimate": float(np.median(values[:, k])),
                "conf_low": float(bounds[k, 0]),
                "conf_high": float(bounds[k, 1]),
            }
        )
    return rows


def _one_or_dict(tables: dict[str, pl.DataFrame]) -> pl.DataFrame | dict[str, pl.DataFrame]:
    return next(iter(tables.values())) if len(tables) == 1 else tables


@dataclass(frozen=True)
class Summary:
    """A printable model summary; renders as text in a terminal and HTML in a notebook."""

    header: list[str]
    random: pl.DataFrame | None
    fixed: pl.DataFrame
    footer: list[str]
    decimals: int = 3
    random_title: str = "sd of group intercepts"

    def __str__(self) -> str:
        lines = list(self.header)
        if self.random is not None:
            lines.append(f"Random effects ({self.random_title}, link scale):")
            lines.append(_format_table(self.random, self.decimals))
        lines.append("Fixed effects:")
        lines.append(_format_table(self.fixed, self.decimals))
        lines.extend(self.footer)
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        parts = ["<div><pre>" + "\n".join(self.header) + "</pre>"]
        if self.random is not None:
            parts.append(f"<b>Random effects</b> ({self.random_title}, link scale)")
            parts.append(_rounded(self.random, self.decimals)._repr_html_())
        parts.append("<b>Fixed effects</b>")
        parts.append(_rounded(self.fixed, self.decimals)._repr_html_())
        parts.append("<pre>" + "\n".join(self.footer) + "</pre></div>")
        return "\n".join(parts)


def _rounded(df: pl.DataFrame, decimals: int) -> pl.DataFrame:
    """The float columns rounded to ``decimals`` places."""
    return df.with_columns(pl.selectors.float().round(decimals))


def _format_table(df: pl.DataFrame, decimals: int = 3) -> str:
    """Plain aligned text, numbers to ``decimals`` decimal places."""
    cells = [[str(c) for c in df.columns]]
    for row in df.iter_rows():
        cells.append([_fmt(v, decimals) for v in row])
    widths = [max(len(r[i]) for r in cells) for i in range(len(df.columns))]
    out = []
    for r in cells:
        out.append(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)


def _fmt(value: object, decimals: int = 3) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1000:
            return f"{value:.0f}"
        return f"{value:.{decimals}f}"
    return str(value)

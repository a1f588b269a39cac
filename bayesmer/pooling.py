"""How much the groups differ, and how the model pools them: shrinkage and the group scale.

- :func:`shrinkage`: per level of a grouping factor, the group's own data (no pooling), the
  model's estimate for the group (partial pooling) and the fixed part alone (complete pooling),
  all on the link scale: the data behind a shrinkage plot (:func:`bayesmer.plots.plot_shrinkage`).
- :func:`icc`: the size of each group sd on scales people read: the latent-scale intraclass
  correlation (as R's ``performance::icc``) and the median odds ratio (Merlo et al. 2006) or
  median rate ratio, each from every posterior draw.

Everything is computed from the collapsed cells of the specification (their successes,
trials or exposure and row counts are those of the data rows) and the posterior draws.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from scipy import sparse, special

from .arguments import require_groups, resolve_ci
from .collapse import CELL, ROWS, Y
from .draws import fixed, group_effects, group_part, group_sd, hdi, stacked
from .families import Family
from .spec import GroupSpec, ModelSpec

if TYPE_CHECKING:
    from .models import Model

#: Added to the successes (and twice to the trials) of a group, or to its count, before the
#: no-pooling estimate is put on the link scale, so that groups with no (or only) successes or
#: no events get a finite value: ``link((y + 0.5) / (n + 1))``, ``log((y + 0.5) / exposure)``.
CONTINUITY = 0.5

#: Variance of the latent residual per binomial link, for the latent-scale ICC: the variance
#: of the standard logistic (pi^2/3), standard normal (1) and standard Gumbel (pi^2/6)
#: distributions.
LATENT_VARIANCE = {"logit": np.pi**2 / 3, "probit": 1.0, "cloglog": np.pi**2 / 6}

#: Name of the median ratio column per link (none for probit: exp() of a probit difference
#: means nothing).
RATIO_NAMES = {
    "logit": "median_odds_ratio",
    "log": "median_rate_ratio",
    "cloglog": "median_hazard_ratio",
}

#: Largest number of floats held at once in a (draws x cells) block.
_BLOCK_VALUES = 2_000_000


def link_of(family: Family, p: np.ndarray) -> np.ndarray:
    """The link function (the inverse of ``family.inverse_link``), in NumPy."""
    p = np.asarray(p, dtype=float)
    if family.link == "logit":
        return special.logit(p)
    if family.link == "probit":
        return special.ndtri(p)
    if family.link == "cloglog":
        return np.log(-np.log1p(-p))
    if family.link == "identity":
        return p
    return np.log(p)


def _pick_group(spec: ModelSpec, group: str | None, what: str) -> GroupSpec:
    require_groups(spec, what)
    names = [g.name for g in spec.groups]
    if group is None:
        if len(names) > 1:
            raise ValueError(
                f"{what}: the model has several grouping factors {names}; choose one with group=."
            )
        return spec.groups[0]
    if group not in names:
        raise ValueError(
            f"{what}: group must be one of the grouping factors {names}, got {group!r}."
        )
    return spec.groups[names.index(group)]


def shrinkage(model: Model, group: str | None = None) -> pl.DataFrame:
    """Per level of a grouping factor: its data alone against the model's estimate for it.

    Parameters
    ----------
    model : glmer
        A fitted mixed model.
    group : str, optional
        The grouping factor; needed only when the model has several.

    Returns
    -------
    polars.DataFrame
        One row per level, in level order:

        - ``level`` and ``n``, the number of data rows of the level (chicks in a brood);
          ``trials`` (binomial: summed trials, equal to ``n`` for 0/1 outcomes) or
          ``exposure`` (Poisson: summed exposure, equal to ``n`` without an offset);
        - ``observed``: the group's proportion of successes (successes / trials) or its count
          per unit of exposure (counts / exposure);
        - ``no_pooling``: the observed value on the link scale, with a continuity correction so
          that 0% and 100% stay finite: ``link((successes + 0.5) / (trials + 1))`` for
          binomial models, ``log((counts + 0.5) / exposure)`` for Poisson ones;
        - ``partial_pooling``: the model's estimate for the group, the posterior median of its
          linear predictor averaged over its rows: per draw, ``mean_i(x_i b + sum_k u_k[i])``
          over the group's rows ``i`` weighted by their trials or exposure (the group effects
          of every grouping factor included, so a brood carries its location's effect),
          offset excluded (a rate per unit of exposure);
        - ``complete_pooling``: the same average of the fixed part alone, ``mean_i(x_i b)``
          (posterior median): where the group would sit if the groups did not differ.

        The shrinkage of a level is the move from ``no_pooling`` to ``partial_pooling``
        towards ``complete_pooling``; it is strongest for small groups.

    Raises
    ------
    ValueError
        If the model has no random effects, or ``group`` is not one of its grouping factors.
    """
    model._require_fit("shrinkage")
    spec = model.spec
    g = _pick_group(spec, group, "shrinkage")
    cells = spec.cells
    cell = cells[CELL].to_numpy().astype(np.int64)
    y = cells[Y].to_numpy().astype(float)
    size = cells[spec.size_col].to_numpy().astype(float)
    rows = cells[ROWS].to_numpy().astype(float)
    level = g.index[cell]
    n_levels = len(g.levels)
    y_sum = np.bincount(level, y, n_levels)
    size_sum = np.bincount(level, size, n_levels)
    n = np.bincount(level, rows, n_levels)
    binomial = spec.family.size_kind == "trials"
    if binomial:
        no_pooling = link_of(spec.family, (y_sum + CONTINUITY) / (size_sum + 2 * CONTINUITY))
    elif spec.family.name == "gaussian":
        no_pooling = link_of(spec.family, y_sum / size_sum)
    else:
        no_pooling = np.log((y_sum + CONTINUITY) / size_sum)
    # (cells x levels) averaging weights: each cell's trials or exposure within its level.
    weights = sparse.csr_matrix(
        (size / size_sum[level], (np.arange(len(cell)), level)), shape=(len(cell), n_levels)
    )
    trace = model.posterior
    b = fixed(trace)
    X = spec.X[cell]
    effects = {h.name: group_effects(trace, h) for h in spec.groups}
    groups = spec.group_rows(cell)
    complete = np.empty((b.shape[0], n_levels))
    partial = np.empty((b.shape[0], n_levels))
    step = max(1, _BLOCK_VALUES // max(1, len(cell)))
    for start in range(0, b.shape[0], step):
        part = slice(start, start + step)
        eta = b[part] @ X.T
        complete[part] = (weights.T @ eta.T).T
        for name, (index, Z) in groups.items():
            eta = eta + group_part(effects[name][part], index, Z)
        partial[part] = (weights.T @ eta.T).T
    sizes = {}  # trials or exposure (a gaussian level's size is its n)
    if spec.family.size_kind != "rows":
        size_name = "trials" if binomial else "exposure"
        sizes[size_name] = size_sum.astype(np.int64) if binomial else size_sum
    return pl.DataFrame(
        {
            "level": g.levels,
            "n": n.astype(np.int64),
            **sizes,
            "observed": y_sum / size_sum,
            "no_pooling": no_pooling,
            "partial_pooling": np.median(partial, axis=0),
            "complete_pooling": np.median(complete, axis=0),
        }
    )


def _mean_count(spec: ModelSpec, b: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Per draw, the mean over the data rows of a row's expected count, groups integrated out.

    ``sum_c exposure_c * exp(x_c b + variance / 2) / rows``: ``exp(variance / 2)`` is the
    mean of the lognormal group effect, and a collapsed cell's exposure is the sum of its
    rows' exposures.
    """
    size = spec.size
    total_rows = float(spec.rows.sum())
    out = np.empty(b.shape[0])
    step = max(1, _BLOCK_VALUES // max(1, len(size)))
    for start in range(0, b.shape[0], step):
        part = slice(start, start + step)
        eta = b[part] @ spec.X.T + variance[part, None] / 2
        out[part] = np.exp(eta) @ size / total_rows
    return out


def icc(model: Model, ci: float | None = None) -> pl.DataFrame:
    """The size of each group sd: latent-scale ICC and median odds (or rate) ratio.

    Each statistic is computed per posterior draw from the group sds ``sd_k`` (and, for
    Poisson models, the fixed effects), then summarised by its median and highest-density
    interval.

    - ``sd``: the group sd on the link scale.
    - ``icc``: the latent-scale intraclass correlation, ``sd_k^2 / (sum_j sd_j^2 + s^2)``:
      the share of the latent variance that lies between levels of factor ``k``. The
      denominator holds the variance of every grouping factor of the model (Nakagawa,
      Johnson & Schielzeth 2017; R's ``performance::icc`` by component). ``s^2`` is the
      variance of the latent residual: ``pi^2 / 3`` (logit), ``1`` (probit), ``pi^2 / 6``
      (cloglog; the beta-binomial's overdispersion is left out). For Poisson models (log
      link) it is the lognormal approximation ``s^2 = log(1 + 1 / lambda)`` of Nakagawa et
      al. (2017), with ``lambda`` the mean over the data rows of a row's expected count
      with the group effects integrated out, ``mean_i(exposure_i * exp(x_i b + sum_j
      sd_j^2 / 2))``; this ICC depends on the mean count, and is larger for larger counts.
      For the negative binomial, ``log(1 + 1 / lambda + 1 / size)``. For gaussian models
      (identity link) the residual variance ``sigma^2``: the classic ICC; with the log link
      ``log(1 + sigma^2 / lambda^2)``.
    - ``median_odds_ratio`` (logit), ``median_rate_ratio`` (log) or ``median_hazard_ratio``
      (cloglog): ``exp(sqrt(2) * sd_k * Phi^-1(0.75))`` (Merlo et al. 2006), the median of
      the ratio between the odds (rate) of a higher and a lower group, for two groups drawn
      at random with everything else equal. 1 when the groups do not differ. No ratio is
      reported for the probit link.

    Parameters
    ----------
    model : glmer
        A fitted mixed model.
    ci : float, optional
        Interval mass; the model's ``ci`` by default.

    Returns
    -------
    polars.DataFrame
        ``group, statistic, estimate, conf_low, conf_high``: for every grouping factor one
        row per statistic (``sd``, ``icc`` and the ratio), ``estimate`` the posterior median.

    Raises
    ------
    ValueError
        If the model has no random effects, or ``ci`` is not in (0, 1).
    """
    model._require_fit("icc")
    spec = model.spec
    require_groups(spec, "icc")
    _intercepts_only(spec, "icc")
    ci = resolve_ci(model, ci)
    out = []
    for name, values in icc_draws(model).items():
        for statistic, draws in values.items():
            lo, hi = hdi(draws[:, None], ci)[0]
            out.append(
                {
                    "group": name,
                    "statistic": statistic,
                    "estimate": float(np.median(draws)),
                    "conf_low": float(lo),
                    "conf_high": float(hi),
                }
            )
    return pl.DataFrame(out)


def _intercepts_only(spec: ModelSpec, what: str) -> None:
    """Raise a ValueError for a model with random slopes."""
    slopes = [g.name for g in spec.groups if g.slopes]
    if slopes:
        raise ValueError(
            f"{what} is defined for random intercepts only; {slopes} has random slopes, so "
            "the variance of its effects depends on the predictors (see model.ranef_var for "
            "its sds and correlations)."
        )


def icc_draws(model: Model) -> dict[str, dict[str, np.ndarray]]:
    """Per grouping factor, the draws of ``sd``, ``icc`` and the median ratio (see :func:`icc`).

    Returns
    -------
    dict
        Grouping factor -> statistic name -> draws, shape (S,).
    """
    spec = model.spec
    _intercepts_only(spec, "icc")
    trace = model.posterior
    sds = {g.name: group_sd(trace, g) for g in spec.groups}
    variance = sum(sd**2 for sd in sds.values())
    residual = _residual_variance(spec, trace, variance)
    link = spec.family.link
    out = {}
    for name, sd in sds.items():
        values = {"sd": sd, "icc": sd**2 / (variance + residual)}
        if link in RATIO_NAMES:
            values[RATIO_NAMES[link]] = np.exp(np.sqrt(2.0) * sd * special.ndtri(0.75))
        out[name] = values
    return out


def _residual_variance(spec: ModelSpec, trace, variance: np.ndarray) -> np.ndarray | float:
    """The ICC's residual variance per draw (see :func:`icc`)."""
    family = spec.family
    if family.name == "gaussian":
        sigma = stacked(trace, "sigma")
        if family.link == "identity":
            return sigma**2
        return np.log1p((sigma / _mean_count(spec, fixed(trace), variance)) ** 2)
    if family.link == "log":
        extra = 1.0 / stacked(trace, "size") if family.name == "negativebinomial" else 0.0
        return np.log1p(1.0 / _mean_count(spec, fixed(trace), variance) + extra)
    return LATENT_VARIANCE[family.link]


def with_scale_columns(model: Model, table: pl.DataFrame) -> pl.DataFrame:
    """A ``ranef_var`` table with the posterior medians of ``icc`` and the median ratio added.

    The summary's random-effects table (see :func:`icc` for the definitions); a gaussian
    model's ``Residual`` row gets nulls.
    """
    scale = icc_draws(model)
    names = table["group"].to_list()
    extra = [k for k in next(iter(scale.values())) if k != "sd"]
    return table.with_columns(
        [
            pl.Series(
                k, [float(np.median(scale[name][k])) if name in scale else None for name in names]
            )
            for k in extra
        ]
    )


def scale_note(model: Model) -> str:
    """One line for the summary explaining the columns :func:`with_scale_columns` adds."""
    link = model.spec.family.link
    residual = {
        "logit": "pi^2/3",
        "probit": "1",
        "cloglog": "pi^2/6",
        "log": "log(1 + 1/mean count)",
        "identity": "sigma^2",
    }[link]
    if model.spec.family.name == "negativebinomial":
        residual = "log(1 + 1/mean count + 1/size)"
    elif model.spec.family.name == "gaussian" and link == "log":
        residual = "log(1 + sigma^2/mean^2)"
    text = f"icc: latent-scale intraclass correlation, sd^2 / (sum of group variances + {residual})"
    if link in RATIO_NAMES:
        text += f";\n{RATIO_NAMES[link]}: exp(sqrt(2) * sd * 0.6745) (Merlo)"
    return text + "; model.icc() gives their intervals."

"""K-fold cross-validation by group: how well the model predicts the data of *new* groups.

PSIS-LOO (:func:`bayesmer.loo.loo`) leaves out one row at a time, so it answers "a new
chick in one of these broods"; in a model with one effect per small group it also tends to
flag high Pareto k values, because leaving out a row of a brood of three moves that brood's
effect a lot. When the question is about new broods, leave whole broods out instead:
:func:`kfold` splits the levels of a grouping factor into k folds, refits the model without
each fold, and scores every held-out group with its effect integrated over the population
(the group is new to the refitted model):

    log p(y_j) = log mean_s  integral  prod_i p(y_ij | eta_ij^(s) + u) N(u; 0, sd^(s)) du,

the integral by adaptive Gauss-Hermite quadrature (:func:`group_log_likelihood`), the mean over
the refit's posterior draws ``s``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from numpy.polynomial.hermite import hermgauss
from scipy import special

from .collapse import Y
from .diagnostics import PACKAGE_DIR
from .draws import GroupRows, dispersion, fixed, group_effects, group_sd, linear_predictor
from .rows import ROW_NUMBER, cell_keys, row_table
from .spec import ModelSpec, to_lazy

if TYPE_CHECKING:
    from .models import Model

#: Nodes of the adaptive Gauss-Hermite rule of :func:`group_log_likelihood`.
QUADRATURE_NODES = 40
#: Step of the finite differences that locate the mode of the integrand (in units of the sd).
_STEP = 1e-3


def group_log_likelihood(
    spec: ModelSpec,
    eta: np.ndarray,
    y: np.ndarray,
    size: np.ndarray,
    sd: np.ndarray,
    nodes: int = QUADRATURE_NODES,
    dispersion: np.ndarray | None = None,
) -> np.ndarray:
    """Per draw, the log-likelihood of one group's rows with its effect integrated out.

    ``log integral prod_i p(y_i | eta_i + u) N(u; 0, sd) du``, by adaptive Gauss-Hermite
    quadrature on the log scale (logsumexp over the nodes): with ``u = sd * z``, the
    integrand's mode in ``z`` is found per draw by damped Newton steps (finite differences),
    and the nodes are centred there and scaled by the curvature, so the rule stays accurate
    however many rows pin the group's effect down.

    Parameters
    ----------
    spec : ModelSpec
        Gives the family and link.
    eta : np.ndarray
        Shape (S, rows): the linear predictor of the group's rows without the group effect
        (and without the offset: a Poisson row's exposure is ``size``).
    y, size : np.ndarray
        Shape (rows,): outcomes and trials (binomial) or exposure (Poisson).
    sd : np.ndarray
        Shape (S,): sd of the group effect per draw (0 gives the plain log-likelihood).
    nodes : int, default QUADRATURE_NODES
    dispersion : np.ndarray, optional
        Shape (S,): the family's dispersion parameter per draw (gaussian, negative binomial,
        beta-binomial).

    Returns
    -------
    np.ndarray
        Shape (S,).
    """
    eta = np.asarray(eta, dtype=float)
    sd = np.asarray(sd, dtype=float)

    def h(z: np.ndarray) -> np.ndarray:
        ll = spec.family.log_likelihood(eta + (sd * z)[:, None], y, size, dispersion)
        return ll.sum(axis=1) - z**2 / 2

    z = np.zeros(eta.shape[0])
    for _ in range(100):
        h0, hp, hm = h(z), h(z + _STEP), h(z - _STEP)
        grad = (hp - hm) / (2 * _STEP)
        curv = np.minimum((hp - 2 * h0 + hm) / _STEP**2, -1.0)  # h'' <= -1 (prior term)
        step = np.clip(-grad / curv, -5.0, 5.0)
        for _ in range(30):  # halve the steps that do not increase h
            worse = h(z + step) < h0
            if not worse.any():
                break
            step = np.where(worse, step / 2, step)
        z = z + step
        if np.max(np.abs(step)) < 1e-9:
            break
    h0, hp, hm = h(z), h(z + _STEP), h(z - _STEP)
    scale = 1.0 / np.sqrt(-np.minimum((hp - 2 * h0 + hm) / _STEP**2, -1e-12))
    x, w = hermgauss(nodes)
    values = np.column_stack([h(z + np.sqrt(2.0) * scale * xk) for xk in x])
    log_w = np.log(w) + x**2
    total = special.logsumexp(values + log_w, axis=1)
    return total + np.log(np.sqrt(2.0) * scale) - 0.5 * np.log(2 * np.pi)


@dataclass(frozen=True)
class KFoldResult:
    """K-fold cross-validation by group.

    Attributes
    ----------
    elpd : float
        Sum over the groups of the log predictive density of each held-out group's rows
        (jointly, the group's effect integrated out).
    se : float
        Its standard error, ``sqrt(G * var(elpd_j))`` over the G groups.
    group : str
        The grouping factor whose levels were held out.
    k : int
        Number of folds.
    n_obs : int
        Rows scored (every row of the fit, once).
    pointwise : pl.DataFrame
        One row per group level: ``level, fold, n, elpd_kfold``.
    folds : pl.DataFrame
        One row per fold: ``fold, n_groups, n, elpd_kfold, random_seed`` (the refit's seed).
    """

    elpd: float
    se: float
    group: str
    k: int
    n_obs: int
    pointwise: pl.DataFrame
    folds: pl.DataFrame

    @property
    def kfoldic(self) -> float:
        """``-2 * elpd``, on the scale of an information criterion."""
        return -2.0 * self.elpd

    def __str__(self) -> str:
        return "\n".join(
            [
                f"{self.k}-fold cross-validation by {self.group}: {len(self.pointwise)} groups "
                f"held out as new groups, {self.n_obs} observations",
                f"  elpd_kfold {self.elpd:10.1f}  (SE {self.se:.1f})",
                f"  kfoldic    {self.kfoldic:10.1f}",
            ]
        )

    def __repr__(self) -> str:
        return (
            f"KFoldResult(elpd={self.elpd:.2f}, se={self.se:.2f}, group={self.group!r}, k={self.k})"
        )


def _fold_seed(seed: int, fold: int) -> int:
    """The seed of fold ``fold``'s refit, derived from the fitted model's seed."""
    return int(np.random.default_rng([seed, fold]).integers(2**31))


def kfold(
    model: Model,
    group: str,
    k: int = 10,
    random_seed: int | None = None,
    progressbar: bool = True,
) -> KFoldResult:
    """K-fold cross-validation by group: refit without each fold of groups, score them as new.

    The levels of ``group`` are shuffled (``random_seed``) and dealt into ``k`` folds of
    nearly equal numbers of levels (``k`` equal to the number of levels is leave-one-group-
    out). For each fold the model is refitted on the other folds' rows, with the settings of
    the last fit (draws, tune, chains, sampler settings, and a seed derived from the fit's
    seed and the fold), and each held-out group is scored by the joint log predictive
    density of its rows with its effect drawn from the population ``N(0, sd)`` and
    integrated out (see :func:`group_log_likelihood`); the mean over the refit's draws is
    taken on the probability scale (log-mean-exp).

    Other grouping factors: a held-out row whose level of another factor is in the training
    data uses that level's fitted effect (a new brood in a known location). A level absent
    from the training data is integrated out too, which is exact when it lies within one
    held-out group and is the same for all that group's rows (a location all of whose
    broods were held out): its variance is added to the group's.

    Parameters
    ----------
    model : Model
        A fitted mixed model.
    group : str
        The grouping factor whose levels are held out.
    k : int, default 10
        Number of folds, from 2 to the number of levels.
    random_seed : int, optional
        Seed of the split into folds.
    progressbar : bool, default True
        Show the sampler's progress bars.

    Returns
    -------
    KFoldResult

    Raises
    ------
    ValueError
        If ``group`` is not a grouping factor of the model, ``k`` is out of range, a
        training set lacks a factor level that its held-out rows need, or another grouping
        factor's unseen level spans several held-out groups.

    Notes
    -----
    The result is not on the same footing as PSIS-LOO: LOO predicts each row given the rest
    of its group, this predicts whole groups. Compare models with the same folds (same
    ``random_seed`` and ``k``) through their ``pointwise`` values.
    """
    model._require_fit("kfold")
    spec = model.spec
    slopes = [h.name for h in spec.groups if h.slopes]
    if slopes:
        raise ValueError(
            f"kfold scores held-out groups by integrating over one group effect at a time; "
            f"{slopes} has random slopes (a vector of effects per level), which kfold does "
            "not integrate yet. Compare such models with loo()."
        )
    names = [g.name for g in spec.groups]
    if group not in names:
        raise ValueError(
            f"kfold: group must be one of the grouping factors {names}, got {group!r}."
        )
    g = spec.groups[names.index(group)]
    n_levels = len(g.levels)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 2 <= k <= n_levels:
        raise ValueError(
            f"kfold: k must be an integer from 2 to the number of levels of {group!r} "
            f"({n_levels}), got {k!r}."
        )
    rows = row_table(model)
    rng = np.random.default_rng(random_seed)
    fold_of = np.empty(n_levels, dtype=np.int64)
    fold_of[rng.permutation(n_levels)] = np.arange(n_levels) % k
    level_index = {lv: i for i, lv in enumerate(g.levels)}
    row_level = np.array([level_index[v] for v in rows[group].to_list()], dtype=np.int64)
    row_fold = fold_of[row_level]
    lf, _ = to_lazy(model.data, spec.formula.columns)
    elpd_level = np.empty(n_levels)
    fold_rows = []
    for fold in range(k):
        held = row_fold == fold
        train_rows = rows.filter(pl.Series(~held))
        test_rows = rows.filter(pl.Series(held))
        refit = _refit(model, lf, test_rows[ROW_NUMBER].to_numpy(), train_rows, fold, progressbar)
        seed = refit.random_seed
        for level in np.flatnonzero(fold_of == fold):
            part = test_rows.filter(pl.Series(row_level[held] == level))
            elpd_level[level] = _score_group(refit, part, group, fold)
        fold_rows.append(
            {
                "fold": fold,
                "n_groups": int((fold_of == fold).sum()),
                "n": int(held.sum()),
                "elpd_kfold": float(elpd_level[fold_of == fold].sum()),
                "random_seed": seed,
            }
        )
    n = np.bincount(row_level, minlength=n_levels)
    elpd = float(elpd_level.sum())
    se = float(np.sqrt(n_levels * np.var(elpd_level, ddof=1)))
    pointwise = pl.DataFrame(
        {"level": g.levels, "fold": fold_of, "n": n.astype(np.int64), "elpd_kfold": elpd_level}
    )
    return KFoldResult(elpd, se, group, int(k), len(rows), pointwise, pl.DataFrame(fold_rows))


def _refit(
    model: Model,
    lf: pl.LazyFrame,
    held_rows: np.ndarray,
    train_rows: pl.DataFrame,
    fold: int,
    progressbar: bool,
) -> Model:
    """Fit a copy of the model to the data without the held-out rows, as the model was fit."""
    spec = model.spec
    data = (
        lf.with_row_index("__kfold_row")
        .filter(~pl.col("__kfold_row").is_in(held_rows.tolist()))
        .drop("__kfold_row")
        .collect()
    )
    refit = type(model)._build(model.formula, data, model.family, model.link, dict(model.priors))
    factors = {}
    for col, levels in spec.factors.items():
        present = set(train_rows[col].to_list())
        factors[col] = [lv for lv in levels if lv in present]
    if factors:
        refit.set_factors(factors)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refit.fit(
            draws=model.draws,
            tune=model.tune,
            chains=model.chains,
            random_seed=_fold_seed(model.random_seed, fold),
            progressbar=progressbar,
            ci=model.ci,
            **model.sampler_kwargs,
        )
    for w in caught:  # say which refit a warning is about
        warnings.warn(
            f"kfold, refit of fold {fold}: {w.message}",
            w.category,
            skip_file_prefixes=(PACKAGE_DIR,),
        )
    return refit


def _score_group(refit: Model, rows: pl.DataFrame, group: str, fold: int) -> float:
    """log mean over the refit's draws of the held-out group's integrated likelihood."""
    spec = refit.spec
    for col, levels in spec.factors.items():
        unknown = sorted(set(rows[col].to_list()) - set(levels))
        if unknown:
            raise ValueError(
                f"kfold: fold {fold} holds out every row with level(s) {unknown} of {col!r}, "
                "so its refit cannot predict them; use fewer folds (or another random_seed)."
            )
    trace = refit.posterior
    b = fixed(trace)
    variance = np.zeros(b.shape[0])
    effects: dict[str, np.ndarray] = {}
    levels_of: dict[str, GroupRows] = {}
    for h in spec.groups:
        values = rows[h.name].to_list()
        lookup = {lv: i for i, lv in enumerate(h.levels)}
        seen = np.array([v in lookup for v in values])
        # a level the refit has not seen points at an appended zero effect: it is integrated
        # out below instead
        unseen = np.zeros((b.shape[0], 1))
        effects[h.name] = np.concatenate([group_effects(trace, h), unseen], axis=1)
        index = np.array([lookup.get(v, len(h.levels)) for v in values], dtype=np.int64)
        levels_of[h.name] = (index, None)
        if seen.all():
            continue
        if h.name != group and (seen.any() or len(set(values)) > 1):
            raise ValueError(
                f"kfold: the rows of a held-out level of {group!r} have level(s) of {h.name!r} "
                f"that the refit of fold {fold} has not seen, and not one level shared by all "
                f"of them; their effects cannot be integrated one group at a time. Fold by "
                f"{h.name!r} instead, or by a factor it is nested in."
            )
        variance = variance + group_sd(trace, h) ** 2
    X = spec.design_matrix(rows.select(cell_keys(spec)))
    eta = linear_predictor(b, X, effects, levels_of)
    y = rows[Y].to_numpy()
    size = rows[spec.size_col].to_numpy()
    ll = group_log_likelihood(
        spec, eta, y, size, np.sqrt(variance), dispersion=dispersion(trace, spec)
    )
    return _log_mean_exp(ll)


def _log_mean_exp(values: np.ndarray) -> float:
    return float(special.logsumexp(values) - np.log(values.size))

"""Model specification -> PyMC model.

The parametrization is chosen for the sampler, the reported quantities are the usual ones:

- Non-intercept predictors are centred (at their mean over the data rows) so the intercept and
  the slopes are nearly uncorrelated; the reported ``(Intercept)`` is shifted back.
- Hierarchical centring: the grouping factor with the most informative levels carries the
  intercept, ``m_g ~ Normal(Intercept + W_g @ b_between, sd_g)`` with linear predictor
  ``m_g[group] + Xc_within @ b_within``, where the ``W`` columns are the predictors constant
  within every group (group-level predictors, such as a year that each brood belongs to).
  This removes the intercept/group-mean ridge that makes the usual forms mix slowly.
- Per level, the choice between centred (``m ~ Normal(centre, sd)``) and non-centred
  (``m = centre + sd * z``) follows how much information the level's own data carry (see
  :data:`bayesmer.spec.CENTRED_MIN_INFORMATION`): informative levels centred, weakly informed
  levels non-centred. Other grouping factors are treated the same way around zero.

Whatever the parametrization, the posterior holds the same reported variables:
``b`` (dims ``term``: every fixed coefficient, ``(Intercept)`` included, on the scale of the
data), and per grouping factor ``g``: ``sd_g`` (the group sd) and ``u_g`` (dims ``g_level``: the
group deviations, lme4's ranef).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from .spec import GroupSpec, ModelSpec

#: Name of the likelihood term (a Potential: the log-likelihood of the collapsed cells).
OBSERVED = "loglik"


def carrier(spec: ModelSpec) -> GroupSpec | None:
    """The grouping factor whose group means carry the intercept, if any.

    The factor with the most centred levels; none when no level of any factor is informative
    enough to be centred.
    """
    if not spec.has_intercept:
        return None
    candidates = [g for g in spec.groups if g.centred.any()]
    if not candidates:
        return None
    return max(candidates, key=lambda g: (int(g.centred.sum()), float(g.information.sum())))


def coords(spec: ModelSpec) -> dict[str, list[str]]:
    """Coordinates of the model: fixed terms and the levels of each grouping factor."""
    out: dict[str, list[str]] = {"term": list(spec.terms)}
    slopes = [t for t in spec.terms if t != "(Intercept)"]
    if slopes:
        out["slope"] = slopes
    for g in spec.groups:
        out[g.dim] = list(g.levels)
    return out


def build_model(spec: ModelSpec, prior_only: bool = False) -> pm.Model:
    """Build the PyMC model of a specification.

    Parameters
    ----------
    spec : ModelSpec
    prior_only : bool, default False
        Leave out the likelihood (to draw from the prior).

    Returns
    -------
    pm.Model
    """
    X = spec.X
    rows = spec.rows.astype(float)
    slope_idx = [j for j, t in enumerate(spec.terms) if t != "(Intercept)"]
    slopes = [spec.terms[j] for j in slope_idx]
    xbar = np.average(X[:, slope_idx], axis=0, weights=rows) if slope_idx else np.zeros(0)
    Xc = X[:, slope_idx] - xbar
    top = carrier(spec)

    # Slopes of predictors constant within every group of the carrier enter the group means
    # (mu_g ~ Normal(Intercept + W_g @ b, sd)), the others the observation level.
    between = (
        _group_level_columns(Xc, top.index, len(top.levels))
        if top
        else np.zeros(len(slopes), dtype=bool)
    )

    with pm.Model(coords=coords(spec)) as model:
        eta = pt.zeros(X.shape[0])
        beta = _slope_vector(spec, slopes) if slopes else None
        if slopes and (~between).any():
            eta = eta + pt.dot(Xc[:, ~between], beta[np.flatnonzero(~between)])
        if spec.has_intercept:
            alpha = spec.priors["(Intercept)"].make("Intercept_c")
            if top is None:
                eta = eta + alpha
        for g in spec.groups:
            sd = spec.priors[f"1|{g.name}"].make(g.sd_name)
            centre = 0.0
            if g is top:
                centre = alpha
                if between.any():
                    W = _group_rows(Xc[:, between], g.index, len(g.levels))
                    centre = alpha + pt.dot(W, beta[np.flatnonzero(between)])
            level_mean = _group_means(g, centre, sd)
            u = level_mean - centre
            eta = eta + level_mean[g.index]
            pm.Deterministic(g.effect_name, u, dims=g.dim)
        b = pt.zeros(len(spec.terms))
        if slopes:
            b = pt.set_subtensor(b[slope_idx], beta)
        if spec.has_intercept:
            intercept = alpha - pt.dot(xbar, beta) if slopes else alpha
            b = pt.set_subtensor(b[spec.terms.index("(Intercept)")], intercept)
        pm.Deterministic("b", b, dims="term")

        if not prior_only:
            offset = spec.log_offset
            if offset is not None:
                eta = eta + offset
            pm.Potential(OBSERVED, _log_likelihood(spec, eta))
    return model


def _slope_vector(spec: ModelSpec, slopes: list[str]):
    """One vector of slope coefficients.

    With Normal priors (the default) the slopes are sampled standardised,
    ``b = mu + sigma * z`` with ``z ~ Normal(0, 1)``: with autoscaled priors this is the same
    as sampling the effect of one sd of each predictor, so every parameter the sampler sees has
    unit scale and a jittered starting point cannot overflow the likelihood (a predictor in
    metres with a coefficient of 1 would). Other priors are sampled as given.
    """
    priors = [spec.priors[t] for t in slopes]
    if all(p.dist == "Normal" for p in priors):
        mu = np.array([p.params.get("mu", 0.0) for p in priors], dtype=float)
        sigma = np.array([p.params["sigma"] for p in priors], dtype=float)
        z = pm.Normal("b_z", 0.0, 1.0, dims="slope")
        return mu + sigma * z
    parts = [p.make(f"b_c[{t}]") for t, p in zip(slopes, priors, strict=True)]
    return pt.stack(parts)


def _group_level_columns(Xc: np.ndarray, index: np.ndarray, n_levels: int) -> np.ndarray:
    """Which columns are constant within every group (group-level predictors)."""
    if Xc.shape[1] == 0:
        return np.zeros(0, dtype=bool)
    lo = np.full((n_levels, Xc.shape[1]), np.inf)
    hi = np.full((n_levels, Xc.shape[1]), -np.inf)
    np.minimum.at(lo, index, Xc)
    np.maximum.at(hi, index, Xc)
    return np.all(hi - lo <= 1e-12 * (1 + np.abs(hi)), axis=0)


def _group_rows(W: np.ndarray, index: np.ndarray, n_levels: int) -> np.ndarray:
    """The value of each group-level column in each group (levels x columns)."""
    out = np.zeros((n_levels, W.shape[1]))
    out[index] = W
    return out


def _group_means(g: GroupSpec, centre, sd):
    """Group means ``centre + u_g``, centred for informative levels, non-centred for the rest.

    Informative levels get ``m ~ Normal(centre, sd)`` (their data pin ``m`` down, so the
    sampler sees a well-conditioned variable); weakly informed levels get
    ``m = centre + sd * z`` with ``z ~ Normal(0, 1)`` (no funnel between ``sd`` and ``m``).
    """
    n = len(g.levels)
    strong = np.flatnonzero(g.centred)
    weak = np.flatnonzero(~g.centred)
    centre = pt.as_tensor_variable(centre)
    centre_v = pt.broadcast_to(centre, (n,)) if centre.ndim == 0 else centre
    m = pt.zeros(n)
    if len(strong):
        g_s = pm.Normal(f"m_{g.name}", centre_v[strong], sd, shape=len(strong))
        m = pt.set_subtensor(m[strong], g_s)
    if len(weak):
        z = pm.Normal(f"z_{g.name}", 0.0, 1.0, shape=len(weak))
        m = pt.set_subtensor(m[weak], centre_v[weak] + sd * z)
    return m


def _log_likelihood(spec: ModelSpec, eta):
    """Log-likelihood of the collapsed cells, up to a constant, as one fused expression.

    Binomial logit: ``s * eta - n * softplus(eta)``; other binomial links:
    ``s * log(p) + (n - s) * log1p(-p)``; Poisson: ``y * eta - exp(eta)`` (``eta`` includes
    the log exposure). The binomial coefficients and ``log(y!)`` are constants of the data and
    are left out: the posterior is the same, each gradient is cheaper (no per-cell
    ``gammaln`` or parameter checks), and pointwise log-likelihoods for LOO are computed from
    the draws in :mod:`bayesmer.checks` with the constants included.
    """
    y = spec.y.astype(float)
    if spec.family.name == "poisson":
        return pt.sum(y * eta - pt.exp(eta))
    n = spec.size
    if spec.family.link == "logit":
        return pt.sum(y * eta - n * pt.softplus(eta))
    p = pt.clip(spec.family.inverse_link_pt(eta), 1e-12, 1 - 1e-12)
    return pt.sum(y * pt.log(p) + (n - y) * pt.log1p(-p))

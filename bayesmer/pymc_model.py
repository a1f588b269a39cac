"""Model specification -> PyMC model.

The parametrization is chosen for the sampler, the reported quantities are the usual ones:

- Non-intercept predictors are centred (at their mean over the data rows) when the model has
  an intercept, so the intercept and the slopes are nearly uncorrelated; the reported
  ``(Intercept)`` is shifted back.
- Hierarchical centring: the grouping factor with the most informative levels carries the
  intercept, ``m_g ~ Normal(Intercept + Xbar_g @ b, sd_g)``, and the linear predictor is
  ``m_g[group] + (X - Xbar_g[group]) @ b``, where ``Xbar_g`` is each group's mean of the
  (centred) predictors. The same model as ``Intercept + X @ b + u_g[group]``, without its
  ridges: the intercept and the group means do not trade off, and neither do the slopes and
  the group means (a predictor constant within groups, such as the year each brood belongs
  to, enters the group means only).
- Nesting: a factor whose every level lies within one level of another (broods within
  locations, observations within broods) is centred on its parent's means,
  ``m_child ~ Normal(m_parent[parent] + (Xbar_child - Xbar_parent[parent]) @ b, sd_child)``,
  and only the innermost factor of such a chain enters the linear predictor. Factors not
  nested in the carrier's chain are deviations around zero, nested among themselves the same
  way.
- Per level, the choice between centred (``m ~ Normal(centre, sd)``) and non-centred
  (``m = centre + sd * z``) follows how much information the level's own data carry (see
  :data:`bayesmer.spec.CENTRED_MIN_INFORMATION`): informative levels centred, weakly informed
  levels non-centred.

- Random slopes: a factor with slopes (``(x|g)``, ``(x||g)``) takes no part in the nesting
  chains. It may carry the intercept like any factor (most centred levels): then its
  informative levels (data informing the intercept and every slope, see
  :func:`bayesmer.spec._slope_information`) are centred on the fixed intercept and slopes,
  ``m ~ MvNormal(b_terms, Sigma)``, the rest non-centred, ``u = z @ L.T * sd`` (see
  :func:`_slope_effects`). A factor that does not carry the intercept, or has no random
  intercept (``(0 + x|g)``), is non-centred around zero throughout.

Whatever the parametrization, the posterior holds the same reported variables:
``b`` (dims ``term``: every fixed coefficient, ``(Intercept)`` included, on the scale of the
data), and per grouping factor ``g``: ``sd_g`` (the group sd) and ``u_g`` (dims ``g_level``: the
group deviations ``m_g - centre``, lme4's ranef). A factor with slopes has ``sd_g`` with dims
``g_term``, ``u_g`` with dims ``(g_level, g_term)`` and, when correlated, ``cor_g`` (dim
``g_cor``, one per pair of terms, labelled ``'(Intercept).x'``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from .collapse import CELL, SS, WEIGHT, Y
from .spec import GroupSpec, ModelSpec

#: Name of the likelihood term (a Potential: the log-likelihood of the collapsed cells).
OBSERVED = "loglik"

#: A predictor centred within groups whose largest value is below this fraction of the
#: (centred) predictor's largest value is constant within the groups (zero up to rounding).
ZERO_WITHIN = 1e-9


@dataclass(frozen=True)
class Nesting:
    """A grouping factor's place in the model.

    Attributes
    ----------
    group : GroupSpec
        With the factor it is nested in and centred on, if any (``group.parent``).
    innermost : bool
        Whether no factor is centred on this one (its means enter the linear predictor).
    carries : bool
        Whether it is in the chain that carries the intercept.
    """

    group: GroupSpec
    innermost: bool
    carries: bool


def nesting(spec: ModelSpec) -> list[Nesting]:
    """The grouping factors in chains of nesting (see :attr:`GroupSpec.parent`), parents first.

    The chain with the most centred levels carries the intercept (none when no level is
    centred or the model has no intercept).
    """
    child = {g.parent: g for g in spec.groups if g.parent is not None}

    def chain(root: GroupSpec) -> list[GroupSpec]:
        out = [root]
        while out[-1].name in child:
            out.append(child[out[-1].name])
        return out

    chains = [chain(g) for g in spec.groups if g.parent is None]
    carried: set[str] = set()
    if spec.has_intercept:
        scored = [
            (sum(int(g.centred.sum()) for g in c), sum(float(g.information.sum()) for g in c), c)
            for c in chains
        ]
        scored = [t for t in scored if t[0] > 0]
        if scored:
            carried = {g.name for g in max(scored, key=lambda t: (t[0], t[1]))[2]}
    return [
        Nesting(group=g, innermost=g.name not in child, carries=g.name in carried)
        for c in chains
        for g in c
    ]


def carrier(spec: ModelSpec) -> GroupSpec | None:
    """The outermost grouping factor of the chain that carries the intercept, if any."""
    return next((n.group for n in nesting(spec) if n.carries and n.group.parent is None), None)


def coords(spec: ModelSpec) -> dict[str, list[str]]:
    """Coordinates of the model: fixed terms and the levels of each grouping factor."""
    out: dict[str, list[str]] = {"term": list(spec.terms)}
    slopes = [t for t in spec.terms if t != "(Intercept)"]
    if slopes:
        out["slope"] = slopes
    for g in spec.groups:
        out[g.dim] = list(g.levels)
        if g.slopes:
            out[g.term_dim] = list(g.terms)
        if g.cor_pairs:
            out[g.cor_dim] = g.cor_labels
    return out


def _predictor_means(
    values: np.ndarray, index: np.ndarray, n_levels: int, weights: np.ndarray
) -> np.ndarray:
    """Weighted mean of each column of ``values`` per group (levels x columns)."""
    total = np.bincount(index, weights=weights, minlength=n_levels)
    out = np.zeros((n_levels, values.shape[1]))
    for j in range(values.shape[1]):
        out[:, j] = np.bincount(index, weights=weights * values[:, j], minlength=n_levels)
    return out / total[:, None]


class Inputs:
    """The data and prior values of a model, packed into its one input vector ``data``.

    Each array is a slice of the vector (a ``pm.Data``): a scalar an element, a matrix a
    slice reshaped; integer arrays (group indices) are stored as floats, exact below 2^53,
    and cast back. One input rather than one per array: nutpie's general code reading any
    number of inputs takes about half a second more to compile per input, while
    :mod:`bayesmer.callbacks` reads one vector directly. :attr:`slices` says where each named
    array is.
    """

    NAME = "data"

    def __init__(self) -> None:
        self.vector = pm.Data(self.NAME, np.zeros(0), shape=(None,))
        self.slices: dict[str, slice] = {}
        self._parts: list[np.ndarray] = []
        self._size = 0

    def add(self, name: str, values: np.ndarray):
        if name in self.slices:
            raise ValueError(f"model data {name!r} added twice")
        values = np.asarray(values)
        part = slice(self._size, self._size + values.size)
        self.slices[name] = part
        self._parts.append(values.astype(float).ravel())
        self._size = part.stop
        if values.ndim == 0:
            out = self.vector[part.start]
        elif values.ndim == 1:
            out = self.vector[part]
        else:
            out = self.vector[part].reshape(values.shape)
        return pt.cast(out, "int64") if np.issubdtype(values.dtype, np.integer) else out

    def close(self) -> None:
        """Give the input vector its values (once every array is added)."""
        self.vector.set_value(np.concatenate(self._parts) if self._parts else np.zeros(0))


#: The inputs of the model being built, set by :func:`_model_inputs` as PyMC sets its model
#: context.
_INPUTS: ContextVar[Inputs] = ContextVar("bayesmer_model_inputs")


@contextmanager
def _model_inputs() -> Iterator[Inputs]:
    """Collect the data of the model being built (in its ``pm.Model`` context) into one input."""
    inputs = Inputs()
    token = _INPUTS.set(inputs)
    try:
        yield inputs
    finally:
        _INPUTS.reset(token)
    inputs.close()


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
    # Centring the predictors is a reparametrization only when an intercept absorbs it.
    if slope_idx and spec.has_intercept:
        xbar = np.average(X[:, slope_idx], axis=0, weights=rows)
    else:
        xbar = np.zeros(len(slope_idx))
    Xc = X[:, slope_idx] - xbar
    # Scale of each (centred) predictor, for telling a column that is zero up to rounding from a
    # small one: the group means are computed from Xc, so they are rounded relative to it.
    x_scale = np.abs(Xc).max(axis=0, initial=0.0)
    layout = nesting(spec)
    # Per carrying factor, its groups' predictor means (what its centres carry).
    xbar_g = {
        n.group.name: _predictor_means(Xc, n.group.index, len(n.group.levels), rows)
        for n in layout
        if n.carries
    }

    with pm.Model(coords=coords(spec)) as model, _model_inputs():
        eta = pt.zeros(X.shape[0])
        beta = _slope_vector(spec, slopes) if slopes else None
        alpha = spec.priors["(Intercept)"].make("Intercept_c") if spec.has_intercept else None
        innermost_carrier = next((n for n in layout if n.carries and n.innermost), None)
        slope_centre = None
        if innermost_carrier is not None and innermost_carrier.group.slopes:
            # the factor's levels carry the intercept and the fixed slopes of its terms
            g = innermost_carrier.group
            in_terms = np.array([t in g.terms for t in slopes], dtype=bool)
            if slopes and (~in_terms).any():
                rest = np.flatnonzero(~in_terms)
                eta = eta + pt.dot(data_input("X_rest", Xc[:, rest]), beta[rest])
            slope_centre = _slope_centre(g, slopes, alpha, beta, data_input("xbar", xbar))
        elif innermost_carrier is None:
            if alpha is not None:
                eta = eta + alpha
            if slopes:
                eta = eta + pt.dot(data_input("X", Xc), beta)
        elif slopes:
            within = Xc - xbar_g[innermost_carrier.group.name][innermost_carrier.group.index]
            eta = eta + _dot_nonzero("within", within, beta, x_scale)
        means: dict[str, pt.TensorVariable] = {}
        for n in layout:
            g = n.group
            if g.slopes:
                centre = slope_centre if n.carries else None
                u = _slope_effects(spec, g, centre)
                coef = u if centre is None else u + centre[None, :]
                index = data_input(f"index_{g.name}", g.index)
                eta = eta + pt.sum(data_input(f"Z_{g.name}", g.Z) * coef[index], axis=1)
                continue
            sd = spec.priors[g.sd_key("(Intercept)")].make(g.sd_name)
            centre = pt.zeros(len(g.levels))
            if g.parent is not None:
                centre = means[g.parent][data_input(f"parent_level_{g.name}", g.parent_level)]
            if n.carries:
                shift = xbar_g[g.name]
                if g.parent is None:
                    centre = centre + alpha
                else:
                    shift = shift - xbar_g[g.parent][g.parent_level]
                if slopes:
                    centre = centre + _dot_nonzero(f"shift_{g.name}", shift, beta, x_scale)
            level_mean = _group_means(g, centre, sd)
            means[g.name] = level_mean
            pm.Deterministic(g.effect_name, level_mean - centre, dims=g.dim)
            if n.innermost:
                eta = eta + level_mean[data_input(f"index_{g.name}", g.index)]
        b = pt.zeros(len(spec.terms))
        if slopes:
            b = pt.set_subtensor(b[slope_idx], beta)
        if alpha is not None:
            intercept = alpha - pt.dot(data_input("xbar_report", xbar), beta) if slopes else alpha
            b = pt.set_subtensor(b[spec.terms.index("(Intercept)")], intercept)
        pm.Deterministic("b", b, dims="term")

        key = spec.family.dispersion
        dispersion = spec.priors[key].make(key) if key else None
        if not prior_only:
            pm.Potential(OBSERVED, _log_likelihood(spec, eta, dispersion))
    return model


def data_input(name: str, values: np.ndarray):
    """``values`` as data of the model being built (inside :func:`build_model`).

    The data and the values of the priors (see :meth:`bayesmer.priors.Prior.make`) enter
    the model as inputs, not constants, so its compiled log density takes them as arguments:
    a model of the same structure on other data of the same shape reuses the compilation
    (:mod:`bayesmer.compiled`). Each array is a slice of the model's one input vector (see
    :class:`Inputs`), reshaped to its shape; integer arrays are cast back to integers.
    """
    return _INPUTS.get().add(name, values)


def _dot_nonzero(name: str, values: np.ndarray, beta, scale: np.ndarray):
    """``values @ beta``, leaving out the columns of ``values`` that are zero up to rounding.

    A predictor constant within groups is zero once centred within them, up to rounding of
    the group means: a few 1e-16 of the centred predictor's largest value ``scale`` (per
    column), far below the :data:`ZERO_WITHIN` of it used here. Such a column is left out
    exactly. The cutoff is relative to the predictor's spread, so a predictor in tiny units
    (concentrations of 1e-12) is kept, and so is one that varies little within groups
    compared to its magnitude (timestamps in seconds).
    """
    keep = np.flatnonzero(np.abs(values).max(axis=0, initial=0.0) > ZERO_WITHIN * scale)
    if len(keep) == 0:
        return pt.zeros(values.shape[0])
    return pt.dot(data_input(name, values[:, keep]), beta[keep])


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
        return data_input("prior_b_mu", mu) + data_input("prior_b_sigma", sigma) * z
    parts = [p.make(f"b_c[{t}]") for t, p in zip(slopes, priors, strict=True)]
    return pt.stack(parts)


def _group_means(g: GroupSpec, centre, sd):
    """Group means ``centre + u_g``, centred for informative levels, non-centred for the rest.

    ``centre`` is a vector with one entry per level.

    Informative levels get ``m ~ Normal(centre, sd)`` (their data pin ``m`` down, so the
    sampler sees a well-conditioned variable); weakly informed levels get
    ``m = centre + sd * z`` with ``z ~ Normal(0, 1)`` (no funnel between ``sd`` and ``m``).
    """
    strong = np.flatnonzero(g.centred)
    weak = np.flatnonzero(~g.centred)
    m = pt.zeros(len(g.levels))
    if len(strong):
        g_s = pm.Normal(f"m_{g.name}", centre[strong], sd, shape=len(strong))
        m = pt.set_subtensor(m[strong], g_s)
    if len(weak):
        z = pm.Normal(f"z_{g.name}", 0.0, 1.0, shape=len(weak))
        m = pt.set_subtensor(m[weak], centre[weak] + sd * z)
    return m


def _slope_centre(g: GroupSpec, slopes: list[str], alpha, beta, xbar: np.ndarray):
    """The fixed coefficients a carrying factor's levels are centred on, one per term.

    With the other predictors centred at their means and this factor's own terms not:
    ``alpha - xbar_T @ beta_T`` for the intercept, the fixed slope for a slope with a fixed
    counterpart, 0 for a random-only slope.
    """
    parts = []
    for term in g.terms:
        if term == "(Intercept)":
            own = [k for k, t in enumerate(slopes) if t in g.terms]
            parts.append(alpha - pt.dot(xbar[own], beta[own]) if own else alpha)
        elif term in slopes:
            parts.append(beta[slopes.index(term)])
        else:
            parts.append(pt.zeros(()))
    return pt.stack(parts)


def _slope_effects(spec: ModelSpec, g: GroupSpec, centre=None):
    """Random intercepts and slopes of a factor: levels x terms.

    Each level's effects are ``Normal(0, Sigma)``, ``Sigma = diag(sd) R diag(sd)``, with an
    LKJ prior on the correlation matrix ``R`` (``pm.LKJCorr``, which gives its Cholesky
    factor ``L``; the identity for ``(x||g)``). Weakly informed levels are non-centred,
    ``u = z @ L.T * sd`` with ``z ~ Normal(0, 1)``; when the factor carries the intercept
    (``centre``: the fixed coefficients of its terms, see :func:`_slope_centre`), its
    informative levels (``g.centred``) are centred, ``m ~ MvNormal(centre, chol=diag(sd) L)``
    and ``u = m - centre``.

    Reported: ``sd_g`` (dim ``g_term``), ``u_g`` (dims ``g_level, g_term``) and, for a
    correlated factor, ``cor_g``: the correlations of each pair of terms (dim ``g_cor``;
    the diagonal of the matrix is 1 and the matrix is symmetric, so the pairs are the
    parameters).
    """
    priors = [spec.priors[g.sd_key(t)] for t in g.terms]
    if all(p.dist == "HalfNormal" for p in priors):
        sigma = np.array([p.params["sigma"] for p in priors], dtype=float)
        sigma = data_input(f"prior_{g.sd_name}_sigma", sigma)
        sd = pm.HalfNormal(g.sd_name, sigma=sigma, dims=g.term_dim)
    else:
        parts = [p.make(f"{g.sd_name}[{t}]") for t, p in zip(g.terms, priors, strict=True)]
        sd = pm.Deterministic(g.sd_name, pt.stack(parts), dims=g.term_dim)
    q = len(g.terms)
    chol = None
    if g.cor_pairs:
        chol = spec.priors[f"cor|{g.name}"].make(f"L_{g.name}", n=q)
        corr = pt.dot(chol, chol.T)
        first, second = (list(k) for k in zip(*g.cor_pairs, strict=True))
        pm.Deterministic(g.cor_name, corr[first, second], dims=g.cor_dim)
    strong = np.flatnonzero(g.centred) if centre is not None else np.array([], dtype=int)
    weak = np.setdiff1d(np.arange(len(g.levels)), strong)
    u = pt.zeros((len(g.levels), q))
    if len(weak):
        z = pm.Normal(f"z_{g.name}", 0.0, 1.0, shape=(len(weak), q))
        if chol is not None:
            z = pt.dot(z, chol.T)
        u = pt.set_subtensor(u[weak], z * sd)
    if len(strong):
        mu = pt.broadcast_to(centre, (len(strong), q))
        if chol is None:
            m = pm.Normal(f"m_{g.name}", mu, sd, shape=(len(strong), q))
        else:
            m = pm.MvNormal(f"m_{g.name}", mu, chol=sd[:, None] * chol, shape=(len(strong), q))
        u = pt.set_subtensor(u[strong], m - centre)
    pm.Deterministic(g.effect_name, u, dims=(g.dim, g.term_dim))
    return u


def _log_likelihood(spec: ModelSpec, eta, dispersion=None):
    """Log-likelihood of the collapsed cells, up to a constant, as one fused expression.

    ``eta`` is the linear predictor of each cell, without offset; ``dispersion`` the family's
    dispersion parameter (``sigma``, ``size`` or ``phi``), if any.

    - Binomial: ``s * log(p) + (n - s) * log(1 - p)``, with the exact ``log(p)`` and
      ``log(1 - p)`` of :meth:`bayesmer.families.Family.log_probs_pt`.
    - Poisson: ``y * eta - exp(eta)`` (``eta`` including the log exposure).
    - Gaussian: ``-n log(sigma) - (ss + n (ybar - mu)^2) / (2 sigma^2)`` per cell, with
      ``ss`` the cell's sum of squares around its mean ``ybar``: the row-by-row sum exactly.
    - Negative binomial and beta-binomial: per distinct observation (``spec.obs``), times its
      multiplicity, as their densities have no sufficient sums.

    Constants of the data (binomial coefficients, ``log(y!)``, ``log(2 pi)``) are left out:
    the posterior is the same, each gradient is cheaper (no per-cell ``gammaln`` or parameter
    checks), and pointwise log-likelihoods for LOO are computed from the draws with the NumPy
    counterparts (:meth:`~bayesmer.families.Family.log_likelihood`, in :mod:`bayesmer.loo`),
    constants included.
    """
    family = spec.family
    if family.per_observation:
        return _observation_log_likelihood(spec, eta, dispersion)
    y_values = spec.y.astype(float)
    if family.name == "gaussian":
        n_values = spec.size.astype(float)
        n = data_input("n", n_values)
        ss = data_input("ss", spec.cells[SS].to_numpy().astype(float))
        mu = eta if family.link == "identity" else pt.exp(eta)
        sq = ss + n * (data_input("ybar", y_values / n_values) - mu) ** 2
        n_total = data_input("n_total", np.asarray(-np.sum(n_values)))
        return n_total * pt.log(dispersion) - pt.sum(sq) / (2.0 * dispersion**2)
    y = data_input("y", y_values)
    if family.name == "poisson":
        eta = eta + data_input("log_offset", spec.log_offset)
        return pt.sum(y * eta - pt.exp(eta))
    n = data_input("n", spec.size.astype(float))
    if family.link == "logit":
        # log_probs_pt's logit pair, eta - softplus(eta) and -softplus(eta), summed: written
        # in its shortest form, the one fits have always computed (the same seeded draws)
        return pt.sum(y * eta - n * pt.softplus(eta))
    log_p, log_q = family.log_probs_pt(eta)
    return pt.sum(y * log_p + (n - y) * log_q)


def _observation_log_likelihood(spec: ModelSpec, eta, dispersion):
    """Negative binomial (NB2, log link) or beta-binomial (logit link) log-likelihood over
    the distinct observations, each weighted by its multiplicity; constants left out.

    NB2 with mean ``mu`` and size ``r``: ``lgamma(y + r) - lgamma(r) + r log r - (r + y)
    log(r + mu) + y log mu``. Beta-binomial with ``a = phi p``, ``b = phi (1 - p)``:
    ``lgamma(y + a) + lgamma(n - y + b) - lgamma(n + phi) - lgamma(a) - lgamma(b) +
    lgamma(phi)``.
    """
    obs = spec.obs
    cell = data_input("obs_cell", obs[CELL].to_numpy().astype(np.int64))
    y = data_input("obs_y", obs[Y].to_numpy().astype(float))
    size_values = obs[spec.size_col].to_numpy().astype(float)
    size = data_input("obs_size", size_values)
    weight = data_input("obs_weight", obs[WEIGHT].to_numpy().astype(float))
    eta = eta[cell]
    if spec.family.name == "negativebinomial":
        log_mu = eta + data_input("obs_log_size", np.log(size_values))
        r = dispersion
        log_rmu = pt.logaddexp(pt.log(r), log_mu)
        terms = pt.gammaln(y + r) - pt.gammaln(r) + r * (pt.log(r) - log_rmu)
        terms = terms + y * (log_mu - log_rmu)
        return pt.sum(weight * terms)
    phi = dispersion
    a = phi * pt.sigmoid(eta)
    b = phi * pt.sigmoid(-eta)
    terms = pt.gammaln(y + a) + pt.gammaln(size - y + b) - pt.gammaln(a) - pt.gammaln(b)
    terms = terms + pt.gammaln(phi) - pt.gammaln(size + phi)
    return pt.sum(weight * terms)

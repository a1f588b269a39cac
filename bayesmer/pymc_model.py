"""Model specification -> PyMC model.

The parametrization is chosen for the sampler, the reported quantities are the usual ones:

- Non-intercept predictors are centred (at their mean over the data rows) when the model has
  an intercept, so the intercept and the slopes are nearly uncorrelated; the reported
  ``(Intercept)`` is shifted back.
- Hierarchical centring: a grouping factor carries the intercept (of crossed factors, the
  one with the fewest levels, see :func:`nesting`), ``m_g ~ Normal(Intercept + Xbar_g @ b,
  sd_g)``, and the linear predictor is ``m_g[group] + (X - Xbar_g[group]) @ b``, where
  ``Xbar_g`` is each group's mean of the (centred) predictors. The same model as
  ``Intercept + X @ b + u_g[group]``, without its ridges: the intercept and the group means
  do not trade off, and neither do the slopes and the group means (a predictor constant
  within groups, such as the year each brood belongs to, enters the group means only).
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
- Sum and split: a level of a nested chain that holds a single nested level (a location with
  one brood), or centred ones, is *split* from them (:attr:`bayesmer.spec.GroupSpec.split`).
  With one nested level the data inform only the sum of the two deviations, so the two
  means have a ridge along which the two sds trade off. Instead, the nested level's mean is
  drawn first, around the level's centre with the summed variance, ``t ~ Normal(c,
  sqrt(sd_p**2 + sd_c**2))`` (centred or non-centred as the nested level's information says),
  and the level's mean given it, ``m_p = c + w (t - c) + sqrt(w) sd_c z``, ``w = sd_p**2 /
  (sd_p**2 + sd_c**2)``, ``z ~ Normal(0, 1)``. Several centred nested levels are drawn
  jointly with the level integrated out (covariance ``sd_c**2 I + sd_p**2 11'``), and the
  level given them; its other nested levels are non-centred around it. Runs of single nested
  levels down a deeper chain are summed the same way. This is the joint distribution of the
  usual chain of centring, so the posterior is the same, but the sampler sees only what the
  data inform plus standard Normal ``z`` (see :func:`_sample_link` and :func:`_split_chain`).
  Grouseticks ``(1|LOCATION/BROOD)``, 4 chains x 1000 draws: bulk ESS of sd_LOCATION
  318-398 at seeds 1-6 before, 552-1,175 at seeds 1-16 after, for about 1.7 times the cost
  of a gradient. The two sds still trade off in the posterior itself, so such models get
  more draws by default (:func:`bayesmer.sampling.default_draws`).

- Random slopes: a factor with slopes (``(x|g)``, ``(x||g)``) takes no part in the nesting
  chains. It may carry the intercept like any factor (see :func:`nesting`): then its
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
from dataclasses import dataclass, replace

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from .collapse import CELL, SS, WEIGHT, Y
from .fused import FAMILIES, Predictor
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

    Of the chains with a centred level, the one whose outermost factor has the fewest levels
    carries the intercept (ties: the most centred levels, then the most information); none
    when no level is centred or the model has no intercept. A factor that does not carry it
    leaves a ridge: the intercept trades off against the mean of its effects, whose prior
    variance is ``sd**2 / levels``. Carrying the factor of fewest levels takes away the
    widest of these ridges (312 subjects x 24 items: the items carry it, and nutpie's
    diagonal mass matrix gives the intercept a bulk ESS of 434-626 per chain of 1,000 draws
    instead of 18-26 when the subjects carry it).
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
            (
                -len(c[0].levels),
                sum(int(g.centred.sum()) for g in c),
                sum(float(g.information.sum()) for g in c),
                c,
            )
            for c in chains
        ]
        scored = [t for t in scored if t[1] > 0]
        if scored:
            carried = {g.name for g in max(scored, key=lambda t: t[:3])[3]}
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


def build_model(spec: ModelSpec, prior_only: bool = False, fused: bool = True) -> pm.Model:
    """Build the PyMC model of a specification.

    Parameters
    ----------
    spec : ModelSpec
    prior_only : bool, default False
        Leave out the likelihood (to draw from the prior).
    fused : bool, default True
        Compute the likelihood with :class:`bayesmer.fused.LinearLikelihood` where it applies
        (binomial-logit and Poisson likelihoods whose linear predictor has no random slopes),
        else with the plain PyTensor graph. The two give the same log density up to rounding.

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
        eta = Predictor(X.shape[0], data_input)
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
                eta.add_dot("X_rest", Xc[:, rest], beta[rest])
            slope_centre = _slope_centre(g, slopes, alpha, beta, data_input("xbar", xbar))
        elif innermost_carrier is None:
            if alpha is not None:
                eta.add_scalar(alpha)
            if slopes:
                eta.add_dot("X", Xc, beta)
        elif slopes:
            within = Xc - xbar_g[innermost_carrier.group.name][innermost_carrier.group.index]
            keep = _nonzero_columns(within, x_scale)
            if len(keep):
                eta.add_dot("within", within[:, keep], beta[keep])
        chain: list[_Link] = []
        for n in layout:
            g = n.group
            if g.slopes:
                centre = slope_centre if n.carries else None
                u = _slope_effects(spec, g, centre)
                coef = u if centre is None else u + centre[None, :]
                index = data_input(f"index_{g.name}", g.index)
                eta.add_graph(pt.sum(data_input(f"Z_{g.name}", g.Z) * coef[index], axis=1))
                continue
            sd = spec.priors[g.sd_key("(Intercept)")].make(g.sd_name)
            centre = pt.zeros(len(g.levels))
            if g.parent is not None:
                parent_level = data_input(f"parent_level_{g.name}", g.parent_level)
                centre = chain[-1].run_mean[parent_level]
            if n.carries:
                shift = xbar_g[g.name]
                if g.parent is None:
                    centre = centre + alpha
                else:
                    shift = shift - xbar_g[g.parent][g.parent_level]
                if slopes:
                    centre = centre + _dot_nonzero(f"shift_{g.name}", shift, beta, x_scale)
            link, parent = _sample_link(g, centre, sd, chain[-1] if chain else None)
            chain = [*chain[:-1], parent] if parent is not None else chain
            chain.append(link)
            if n.innermost:
                for link in _split_chain(chain):
                    pm.Deterministic(
                        link.group.effect_name, link.mean - link.run_centre, dims=link.group.dim
                    )
                eta.add_gather(f"index_{g.name}", g.index, chain[-1].mean)
                chain = []
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
            pm.Potential(OBSERVED, _log_likelihood(spec, eta, dispersion, fused))
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


def _nonzero_columns(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The columns of ``values`` that are not zero up to rounding.

    A predictor constant within groups is zero once centred within them, up to rounding of
    the group means: a few 1e-16 of the centred predictor's largest value ``scale`` (per
    column), far below the :data:`ZERO_WITHIN` of it used here. Such a column is left out
    exactly. The cutoff is relative to the predictor's spread, so a predictor in tiny units
    (concentrations of 1e-12) is kept, and so is one that varies little within groups
    compared to its magnitude (timestamps in seconds).
    """
    return np.flatnonzero(np.abs(values).max(axis=0, initial=0.0) > ZERO_WITHIN * scale)


def _dot_nonzero(name: str, values: np.ndarray, beta, scale: np.ndarray):
    """``values @ beta``, leaving out the columns of ``values`` that are zero up to rounding
    (:func:`_nonzero_columns`)."""
    keep = _nonzero_columns(values, scale)
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

    ``centre`` is a vector with one entry per level. Levels split from their nested levels
    (``g.split``) are left at zero: their means are drawn after those (:func:`_sample_link`,
    :func:`_split_chain`).

    Informative levels get ``m ~ Normal(centre, sd)`` (their data pin ``m`` down, so the
    sampler sees a well-conditioned variable); weakly informed levels get
    ``m = centre + sd * z`` with ``z ~ Normal(0, 1)`` (no funnel between ``sd`` and ``m``).
    """
    strong = np.flatnonzero(g.centred)
    weak = np.flatnonzero(~g.centred & ~g.split)
    m = pt.zeros(len(g.levels))
    if len(strong):
        g_s = pm.Normal(f"m_{g.name}", centre[strong], sd, shape=len(strong))
        m = pt.set_subtensor(m[strong], g_s)
    if len(weak):
        z = pm.Normal(f"z_{g.name}", 0.0, 1.0, shape=len(weak))
        m = pt.set_subtensor(m[weak], centre[weak] + sd * z)
    return m


@dataclass(frozen=True)
class _Link:
    """One grouping factor of a chain of nesting, while its means are drawn.

    A *run* is a level split from its only nested level, that level, and so on down to the
    first level that is not split from a single nested level (its *bottom*): the data inform
    only the bottom's mean, the sum of the run's deviations, which is drawn first.

    Attributes
    ----------
    group : GroupSpec
    sd : TensorVariable
        The factor's sd.
    run_centre : TensorVariable
        Per level, the centre it is drawn around: its parent level's mean plus the shift of its
        predictor means or, in a run, the run's top level's centre plus the shifts down to it.
    run_var : TensorVariable
        Per level, the variance it is drawn with around ``run_centre``: ``sd**2``, in a run
        summed over the run's levels down to it.
    mean : TensorVariable
        The level means; zero at split levels until they are drawn.
    run_mean : TensorVariable
        What the nested factor's levels are drawn around (with their shifts): ``mean``, and
        ``run_centre`` at split levels not yet drawn.
    split_z : TensorVariable or None
        ``split_g``: one Normal(0, 1) per split level (created with the nested factor).
    """

    group: GroupSpec
    sd: pt.TensorVariable
    run_centre: pt.TensorVariable
    run_var: pt.TensorVariable
    mean: pt.TensorVariable
    run_mean: pt.TensorVariable
    split_z: pt.TensorVariable | None = None


def _sample_link(g: GroupSpec, run_centre, sd, parent: _Link | None) -> tuple[_Link, _Link | None]:
    """Draw the means of a factor's levels, and of the parent levels split from several of them.

    Without split parent levels, :func:`_group_means`. Under a split parent level ``p``
    (variance ``V_p``, its ``run_var``, around its ``run_centre``), ``p`` is integrated out:

    - the centred levels under ``p`` are drawn jointly, Normal around their ``run_centre``
      with covariance ``sd**2 I + V_p 11'`` (:func:`_centred_blocks`; ``V_p = 0`` under a
      level that is not split: independent, as in :func:`_group_means`);
    - ``p``, when it holds several levels, given the ``n`` centred ones, whose deviations from
      their ``run_centre`` sum to ``d``: ``m_p = run_centre_p + V_p / (sd**2 + n V_p) * d +
      sd * sqrt(V_p / (sd**2 + n V_p)) * z_p`` (``z_p`` in ``split_<parent>``);
    - the other levels under ``p``: non-centred around ``m_p`` plus their shift. A level
      that is ``p``'s only one is the bottom of, or inside, ``p``'s run: drawn around the
      run's centre with the run's summed variance (non-centred if it is not centred), and
      ``p`` is split from it when the chain is complete (:func:`_split_chain`).

    Returns
    -------
    (_Link, _Link or None)
        This factor's link, and the parent's with its split levels that hold several levels
        drawn.
    """
    n = len(g.levels)
    if parent is None or not parent.group.split.any():
        mean = _group_means(g, run_centre, sd)
        return _with_run(_Link(g, sd, run_centre, sd**2, mean, mean)), parent
    top = parent.group
    pl = g.parent_level
    n_top = len(top.levels)
    split = np.flatnonzero(top.split)
    held = np.bincount(pl, minlength=n_top)
    single = top.split & (held == 1)
    several = np.flatnonzero(top.split & (held > 1))
    # the variance each split parent level contributes to the levels under it
    if parent.run_var.ndim == 0:
        shared = parent.run_var * top.split.astype(float)
    else:
        shared = pt.set_subtensor(pt.zeros(n_top)[split], parent.run_var[split])
    split_z = pm.Normal(f"split_{top.name}", 0.0, 1.0, shape=len(split))
    strong = np.flatnonzero(g.centred)
    weak = np.flatnonzero(~g.centred & ~g.split)
    latent = []
    if len(strong):
        m = _centred_blocks(f"m_{g.name}", run_centre[strong], sd, shared, pl[strong], n_top)
        latent.append(m)
    if len(weak):
        latent.append(pm.Normal(f"z_{g.name}", 0.0, 1.0, shape=len(weak)))
    centre = run_centre
    if len(several):
        # given the centred levels under it (deviations summed: d, how many: k)
        d = _block_sums(m - run_centre[strong], pl[strong], n_top)[several]
        k = np.bincount(pl[strong], minlength=n_top)[several].astype(float)
        v = parent.run_var if parent.run_var.ndim == 0 else shared[several]
        total = sd**2 + k * v
        z = split_z[np.searchsorted(split, several)]
        moved = v / total * d + sd * pt.sqrt(v / total) * z
        drawn = parent.run_centre[several] + moved
        parent = replace(
            parent,
            mean=pt.set_subtensor(parent.mean[several], drawn),
            run_mean=pt.set_subtensor(parent.run_mean[several], drawn),
        )
        # the levels under it move with it
        centre = run_centre + pt.set_subtensor(pt.zeros(n_top)[several], moved)[pl]
    var = (shared * single.astype(float))[pl] + sd**2
    # one vector of the latent variables in level order (0 at split levels), then centred
    # levels as they are and the others non-centred
    order = np.full(n, len(strong) + len(weak))
    order[strong], order[weak] = np.arange(len(strong)), len(strong) + np.arange(len(weak))
    raw = pt.concatenate([*latent, pt.zeros(1)])[order]
    is_strong = g.centred.astype(float)
    mean = is_strong * raw + (1.0 - is_strong) * (centre + pt.sqrt(var) * raw)
    parent = replace(parent, split_z=split_z)
    return _with_run(_Link(g, sd, centre, var, mean, mean)), parent


def _with_run(link: _Link) -> _Link:
    """``run_mean``: ``mean`` with ``run_centre`` at the split levels, not drawn yet."""
    split = np.flatnonzero(link.group.split)
    if not len(split):
        return link
    return replace(link, run_mean=pt.set_subtensor(link.mean[split], link.run_centre[split]))


def _per_level(x, levels: np.ndarray):
    """``x[levels]`` for a vector, ``x`` repeated for a scalar."""
    return x[levels] if x.ndim else x * pt.ones(len(levels))


def _centred_blocks(name: str, centre, sd, shared, block: np.ndarray, n_blocks: int):
    """Centred levels drawn jointly per block (the parent level they are integrated over).

    ``block`` is each level's parent level, of ``n_blocks``. ``m ~ Normal(centre, sd**2 I +
    shared[p] 11')`` within each block ``p``, independent across blocks: the levels of a
    block share a Normal(0, ``shared[p]``) deviation of their parent level, integrated out
    (``shared[p] = 0``: independent levels). The log density in closed form, per block of
    ``n`` levels with deviations ``d = m - centre`` and ``t = sd**2 + n * shared``:
    ``-n/2 log(2 pi) - (n - 1) log(sd) - log(t)/2 - (sum d**2 - shared (sum d)**2 / t) /
    (2 sd**2)`` (zero for an empty block): a cost linear in the number of levels, whatever
    the block sizes.
    """
    counts = np.bincount(block, minlength=n_blocks).astype(float)

    def logp(value, centre, sd, shared):
        d = value - centre
        s1 = _block_sums(d, block, n_blocks)
        total = sd**2 + counts * shared
        return (
            -0.5 * len(block) * np.log(2.0 * np.pi)
            - (len(block) - n_blocks) * pt.log(sd)
            - 0.5 * pt.sum(pt.log(total))
            - (pt.sum(d**2) - pt.sum(shared * s1**2 / total)) / (2.0 * sd**2)
        )

    def draw(centre, sd, shared, size):
        # forward draws (sample_prior): the parent level's deviation plus each level's own
        common = pm.Normal.dist(0.0, pt.sqrt(shared))
        return centre + common[block] + sd * pm.Normal.dist(pt.zeros_like(centre), 1.0)

    return pm.CustomDist(
        name,
        centre,
        sd,
        shared,
        dist=draw,
        logp=logp,
        support_point=lambda rv, size, centre, sd, shared: centre,
        signature="(n),(),(k)->(n)",
    )


def _block_sums(x, block: np.ndarray, k: int):
    """Sums of ``x`` per block (``block``: each entry's block, of ``k``)."""
    return pt.inc_subtensor(pt.zeros(k)[block], x)


def _split_chain(chain: list[_Link]) -> list[_Link]:
    """Draw the remaining split levels of a chain of nested factors (those split from their
    only nested level) and each level's centre; parents first.

    Such a level ``p`` (sd ``sd_p``, centre ``c``) tops a run down to a ``bottom`` level (see
    :class:`_Link`); the levels below ``p`` have variances summing to ``rest`` and shifts
    summing to ``s``. The bottom was drawn around ``c + s`` with variance ``sd_p**2 + rest``
    (:func:`_sample_link`), and given it ``p``'s deviation ``e = m_p - c`` is Normal with mean
    ``w * (m_b - c - s)``, ``w = sd_p**2 / (sd_p**2 + rest)``, and sd
    ``sd_p * sqrt(rest / (sd_p**2 + rest))``:

        ``m_p = c + w * (m_b - c - s) + sd_p * sqrt(rest / (sd_p**2 + rest)) * z_p``.

    Together with the bottom this is the joint distribution of the run's means under the usual
    chain of centring, so the posterior is the same; only the bottom is informed by the data,
    and the sampler no longer sees the ridge along which ``sd_p`` and the nested sds trade
    off. Parents are drawn first, so each level's centre ``c`` is known.

    Returns
    -------
    list of _Link
        With every level's ``mean``, and its centre (parent level's mean plus its shift) as
        ``run_centre``.
    """
    out: list[_Link] = []
    for k, link in enumerate(chain):
        g = link.group
        centre = link.run_centre
        if k:
            # under a parent level drawn just now
            centre = centre + (out[k - 1].mean - chain[k - 1].run_mean)[g.parent_level]
        mean = link.mean
        if k + 1 < len(chain):
            held = np.bincount(chain[k + 1].group.parent_level, minlength=len(g.levels))
            split = np.flatnonzero(g.split)
            single = np.flatnonzero(g.split & (held == 1))
            for depth, which, bottom in _bottoms(chain, k, single):
                levels = single[which]
                rest = chain[k + 1].sd ** 2
                for other in chain[k + 2 : depth + 1]:
                    rest = rest + other.sd**2
                below = chain[depth]
                shifts = below.run_centre[bottom] - link.run_centre[levels]
                deviation = below.mean[bottom] - centre[levels] - shifts
                total = link.sd**2 + rest
                z = link.split_z[np.searchsorted(split, levels)]
                value = (
                    centre[levels]
                    + link.sd**2 / total * deviation
                    + link.sd * pt.sqrt(rest / total) * z
                )
                mean = pt.set_subtensor(mean[levels], value)
        out.append(replace(link, run_centre=centre, mean=mean))
    return out


def _bottoms(
    chain: list[_Link], k: int, single: np.ndarray
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Where the runs from the levels ``single`` of ``chain[k]`` (each split from its only
    nested level) end.

    Returns ``(depth, which, bottom)`` per factor ``chain[depth]`` some runs end in: the
    positions ``which`` in ``single`` of those runs and the level of ``chain[depth]`` each
    ends at (the first level down that is not split from a single nested level).
    """
    out = []
    which, level = np.arange(len(single)), single
    for depth in range(k + 1, len(chain)):
        child = chain[depth].group
        only = np.zeros(len(chain[depth - 1].group.levels), dtype=np.int64)
        only[child.parent_level] = np.arange(len(child.levels))  # a level's one nested level
        level = only[level]
        if depth + 1 < len(chain):
            held = np.bincount(chain[depth + 1].group.parent_level, minlength=len(child.levels))
            ends = ~(child.split & (held == 1))[level]
        else:
            ends = np.ones(len(level), dtype=bool)
        if ends.any():
            out.append((depth, which[ends], level[ends]))
        which, level = which[~ends], level[~ends]
        if not len(level):
            break
    return out


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


def _log_likelihood(spec: ModelSpec, predictor: Predictor, dispersion=None, fused: bool = True):
    """Log-likelihood of the collapsed cells, up to a constant.

    ``predictor`` is the linear predictor of each cell, without offset; ``dispersion`` the
    family's dispersion parameter (``sigma``, ``size`` or ``phi``), if any. With ``fused``,
    the binomial-logit and Poisson likelihoods of a linear predictor without random slopes
    are one :class:`bayesmer.fused.LinearLikelihood` (one loop over the cells for the log
    density and its gradient); the rest are PyTensor graphs:

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
    kind = FAMILIES.get((family.name, family.link))
    if fused and kind is not None and not family.per_observation and predictor.fusable():
        y = data_input("y", spec.y.astype(float))
        if kind == "poisson":
            return predictor.fused(kind, y, data_input("log_offset", spec.log_offset))
        return predictor.fused(kind, y, data_input("n", spec.size.astype(float)))
    eta = predictor.total()
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

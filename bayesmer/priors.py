"""Priors: bayesmer's defaults, and the user's overrides turned into PyMC distributions.

Defaults follow rstanarm's weakly informative, autoscaled choices:

- ``(Intercept)``: Normal(0, 2.5) on the intercept *after the predictors are centred* (the
  linear predictor at the average row), as rstanarm and brms do.
- each coefficient: Normal(0, 2.5 / sd(x)), so the prior says the same thing whatever the
  unit of the predictor.
- ``1|g`` (the sd of the intercepts of group g): HalfNormal(2.5).
- ``x|g`` (the sd of the slopes of x in group g): HalfNormal(2.5 / sd(x)), autoscaled as the
  fixed slopes.
- ``cor|g`` (the correlations of a factor's intercept and slopes): LKJ(eta=1), uniform over
  correlation matrices.
- Gaussian outcomes (identity link) are in their own units, so every scale above is multiplied
  by sd(y) and the intercept's prior is centred at mean(y), as rstanarm does; ``sigma`` (the
  residual sd): Exponential(1 / sd(y)), rstanarm's ``prior_aux``.
- ``size`` (negative binomial) and ``phi`` (beta-binomial), the precision of the
  overdispersion (large values: no overdispersion): Gamma(0.01, 0.01), brms's defaults for the
  negative binomial's shape and the beta-binomial's phi; nearly flat on the log scale between
  small and large values.

Users override any of them with ``priors={'sexmale': ('normal', 0, 1), '1|pclass':
('exponential', 1)}`` or with a ``bambi.Prior`` for anything PyMC has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import xarray as xr

    from .families import Family
    from .spec import GroupSpec, ModelSpec

#: Plain-tuple prior names -> (PyMC distribution, ordered parameter names).
_TUPLE_PRIORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "normal": ("Normal", ("mu", "sigma")),
    "student_t": ("StudentT", ("nu", "mu", "sigma")),
    "cauchy": ("Cauchy", ("alpha", "beta")),
    "laplace": ("Laplace", ("mu", "b")),
    "halfnormal": ("HalfNormal", ("sigma",)),
    "halfcauchy": ("HalfCauchy", ("beta",)),
    "halfstudent_t": ("HalfStudentT", ("nu", "sigma")),
    "exponential": ("Exponential", ("lam",)),
    "gamma": ("Gamma", ("alpha", "beta")),
}
_POSITIVE = {
    "HalfNormal",
    "HalfCauchy",
    "HalfStudentT",
    "Exponential",
    "Gamma",
    "LogNormal",
    "InverseGamma",
    "HalfFlat",
    "Weibull",
    "ChiSquared",
}

DEFAULT_SCALE = 2.5


@dataclass(frozen=True)
class Prior:
    """One prior: a PyMC distribution name and its parameters.

    Attributes
    ----------
    dist : str
        PyMC distribution class name, e.g. ``'Normal'``.
    params : dict
        Keyword arguments of that distribution.
    source : {'default', 'user'}
    """

    dist: str
    params: dict[str, Any] = field(default_factory=dict)
    source: str = "default"

    def describe(self) -> str:
        """The prior in words, e.g. ``Normal(mu=0, sigma=2.5)``."""
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        return f"{self.dist}({args})"

    def make(self, name: str, **kwargs):
        """Create the PyMC random variable ``name`` inside the current model.

        Numeric parameters enter the model as data (:func:`bayesmer.pymc_model.data_input`),
        not constants: models whose (autoscaled) priors differ only in their values share one
        compiled log density (:mod:`bayesmer.compiled`). ``kwargs`` (such as the size ``n`` of
        an LKJ prior) are passed as they are.
        """
        import pymc as pm

        from .pymc_model import data_input

        params = {
            k: data_input(f"prior_{name}_{k}", np.asarray(v, dtype=float))
            if isinstance(v, int | float | np.number) and not isinstance(v, bool)
            else v
            for k, v in self.params.items()
        }
        return getattr(pm, self.dist)(name, **params, **kwargs)


def _fmt(value: Any) -> str:
    if (isinstance(value, np.ndarray) and value.ndim == 0) or isinstance(value, np.generic):
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_prior(key: str, value: Any, positive: bool) -> Prior:
    """Turn one user prior (tuple, ``bambi.Prior`` or :class:`Prior`) into a :class:`Prior`.

    Parameters
    ----------
    key : str
        The term the prior is for (used in error messages).
    value : tuple, bambi.Prior or Prior
    positive : bool
        Whether the parameter is a standard deviation and needs a positive distribution.

    Raises
    ------
    ValueError
        For an unknown distribution name, wrong number of parameters, or a distribution
        on the real line given for a standard deviation.
    TypeError
        For a value of another type.
    """
    if isinstance(value, Prior):
        prior = Prior(value.dist, dict(value.params), "user")
    elif isinstance(value, tuple | list):
        if not value or not isinstance(value[0], str) or value[0].lower() not in _TUPLE_PRIORS:
            raise ValueError(
                f"Prior for {key!r}: the first element must name a distribution, one of "
                f"{sorted(_TUPLE_PRIORS)}; got {value!r}."
            )
        dist, names = _TUPLE_PRIORS[value[0].lower()]
        if len(value) - 1 != len(names):
            raise ValueError(
                f"Prior for {key!r}: {value[0]!r} takes {len(names)} parameter(s) "
                f"{names}, got {len(value) - 1}."
            )
        prior = Prior(dist, dict(zip(names, (float(v) for v in value[1:]), strict=True)), "user")
    elif hasattr(value, "name") and hasattr(value, "args"):  # bambi.Prior
        if not _pymc_has(value.name):
            raise ValueError(f"Prior for {key!r}: PyMC has no distribution {value.name!r}.")
        prior = Prior(value.name, dict(value.args), "user")
    else:
        raise TypeError(
            f"Prior for {key!r} must be a tuple such as ('normal', 0, 2.5) or a bambi.Prior; "
            f"got {type(value).__name__}."
        )
    if positive and prior.dist not in _POSITIVE:
        raise ValueError(
            f"Prior for {key!r} is a standard deviation and needs a positive distribution "
            f"(e.g. ('halfnormal', 2.5) or ('exponential', 1)); got {prior.dist}."
        )
    if not _pymc_has(prior.dist):
        raise ValueError(f"Prior for {key!r}: PyMC has no distribution {prior.dist!r}.")
    return prior


def _pymc_has(dist: str) -> bool:
    """Whether PyMC has a distribution of this name (PyMC is imported only for a name that is
    not one of the tuple priors')."""
    if dist in {name for name, _ in _TUPLE_PRIORS.values()}:
        return True
    import pymc as pm

    return hasattr(pm, dist)


def resolve_priors(
    terms: list[str],
    x_sd: dict[str, float],
    groups: list[GroupSpec],
    user: dict[str, Any] | None,
    random_sd: dict[str, dict[str, float]] | None = None,
    family: Family | None = None,
    outcome: tuple[float, float] = (0.0, 1.0),
) -> dict[str, Prior]:
    """Every prior in force, defaults filled in where the user gave none.

    Parameters
    ----------
    terms : list of str
        Fixed-effect term names, ``'(Intercept)'`` included if the model has one.
    x_sd : dict
        Standard deviation of each non-intercept column of the design matrix (for autoscaling).
    groups : list of GroupSpec
        Grouping factors: the sd of each random term is keyed ``'1|g'`` (intercept) or
        ``'x|g'`` (the slope of ``x``), the LKJ prior of a correlated factor ``'cor|g'``.
    user : dict or None
        The user's priors keyed by term, ``'(Intercept)'``, ``'1|g'``, ``'x|g'`` or
        ``'cor|g'`` (``('lkj', eta)``).
    random_sd : dict, optional
        Per factor with slopes, the sd of each slope column of its random design (for
        autoscaling its sd prior: HalfNormal(2.5 / sd(x)), as the fixed slopes).
    family : Family, optional
        Its dispersion parameter (``sigma``, ``size``, ``phi``), if any, gets a prior too.
    outcome : tuple of float, default (0, 1)
        Location and scale of the outcome on the link scale (see
        :func:`bayesmer.spec.outcome_scale`): the intercept's prior is centred at the location
        and every default scale is multiplied by the scale.

    Returns
    -------
    dict
        Keyed like ``user``, in model order.

    Raises
    ------
    ValueError
        If ``user`` names something that is not in the model.
    """
    user = dict(user or {})
    random_sd = random_sd or {}
    location, scale = outcome
    group_keys = [k for g in groups for k in g.prior_keys]
    dispersion = [family.dispersion] if family is not None and family.dispersion else []
    known = [*terms, *group_keys, *dispersion]
    unknown = [k for k in user if k not in known]
    if unknown:
        raise ValueError(
            f"priors given for {unknown}, which the model does not have; its parameters are "
            f"{known}."
        )
    out: dict[str, Prior] = {}
    for term in terms:
        if term in user:
            out[term] = to_prior(term, user[term], positive=False)
        elif term == "(Intercept)":
            mu = float(_round(location))
            out[term] = Prior("Normal", {"mu": mu, "sigma": _autoscaled(1.0 / scale)})
        else:
            sd = x_sd.get(term, 1.0) / scale
            out[term] = Prior("Normal", {"mu": 0.0, "sigma": _autoscaled(sd)})
    for g in groups:
        for term in g.terms:
            key = g.sd_key(term)
            if key in user:
                out[key] = to_prior(key, user[key], positive=True)
            elif term == "(Intercept)":
                out[key] = Prior("HalfNormal", {"sigma": _autoscaled(1.0 / scale)})
            else:
                sd = random_sd.get(g.name, {}).get(term, 1.0) / scale
                out[key] = Prior("HalfNormal", {"sigma": _autoscaled(sd)})
        if g.cor_pairs:
            key = f"cor|{g.name}"
            out[key] = lkj_prior(key, user[key]) if key in user else Prior("LKJCorr", {"eta": 1.0})
    for key in dispersion:
        if key in user:
            out[key] = to_prior(key, user[key], positive=True)
        elif key == "sigma":
            # rate 1 / sd(y), rounded as the autoscaled sds are (2.5 / (2.5 sd(y))
            out[key] = Prior("Exponential", {"lam": _autoscaled(DEFAULT_SCALE * scale)})
        else:
            out[key] = Prior("Gamma", {"alpha": 0.01, "beta": 0.01})
    return out


def _round(value: float) -> float:
    """``value`` to 4 significant digits (a prior's location as it is printed)."""
    if value == 0 or not np.isfinite(value):
        return 0.0
    return float(f"{value:.4g}")


def _autoscaled(sd: float) -> float:
    """``2.5 / sd``, rounded to 4 decimals but at least 3 significant digits."""
    scale = DEFAULT_SCALE / sd if sd > 0 else DEFAULT_SCALE
    # a predictor in large units (sd over 250) has a small scale, which 4 decimals would
    # round towards 0
    digits = max(4, 2 - int(np.floor(np.log10(scale))))
    return float(round(scale, digits))


def lkj_prior(key: str, value: Any) -> Prior:
    """The LKJ prior of a factor's correlations from ``('lkj', eta)`` or a Prior."""
    if isinstance(value, Prior) and value.dist == "LKJCorr":
        return Prior("LKJCorr", dict(value.params), "user")
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and isinstance(value[0], str)
        and value[0].lower() == "lkj"
        and isinstance(value[1], int | float)
        and not isinstance(value[1], bool)
        and value[1] > 0
    ):
        return Prior("LKJCorr", {"eta": float(value[1])}, "user")
    raise ValueError(
        f"Prior for {key!r} is the LKJ prior of the correlations: give it as ('lkj', eta) "
        f"with eta > 0 (1 is uniform over correlation matrices); got {value!r}."
    )


# ---------------------------------------------------------------------------------------------
# Reporting the priors, and drawing from them


def _design_sd(spec: ModelSpec) -> dict[str, float]:
    """sd of each non-intercept design column over the data rows (as autoscaling used)."""
    rows = spec.rows.astype(float)
    out: dict[str, float] = {}
    for j, term in enumerate(spec.terms):
        if term != "(Intercept)":
            x = spec.X[:, j]
            mean = np.average(x, weights=rows)
            out[term] = float(np.sqrt(np.average((x - mean) ** 2, weights=rows)))
    return out


#: Notes on the dispersion parameters' priors.
_DISPERSION_NOTES = {
    "sigma": "residual sd (lme4's Residual row), in the outcome's units",
    "size": (
        "negative binomial size: variance mu + mu^2 / size, so small values mean strong "
        "overdispersion and large ones a Poisson"
    ),
    "phi": (
        "beta-binomial precision: variance n p (1 - p) (1 + (n - 1) / (phi + 1)), so small "
        "values mean strong overdispersion and large ones a binomial"
    ),
}


def _kind(key: str) -> str:
    if key in _DISPERSION_NOTES:
        return "dispersion"
    if key == "(Intercept)":
        return "intercept"
    if key.startswith("cor|"):
        return "group correlation"
    if "|" in key:
        return "group sd"
    return "coefficient"


def _note(key: str, prior: Prior, x_sd: dict[str, float], y_scale: float = 1.0) -> str:
    kind = _kind(key)
    if kind == "dispersion":
        return _DISPERSION_NOTES[key]
    if kind == "intercept":
        return (
            "on the intercept with every predictor centred at its mean (the linear predictor "
            "of an average row); the reported (Intercept) is shifted back to the data scale"
        )
    if kind == "group correlation":
        return (
            f"LKJ prior on the correlations of the random effects of {key[4:]!r} "
            "(eta = 1: uniform over correlation matrices)"
        )
    if kind == "group sd":
        term, group = key.rsplit("|", 1)
        if term == "1":
            if y_scale != 1.0 and prior.source == "default":
                return (
                    f"sd of the random intercepts of {group!r}, in the outcome's units "
                    f"(autoscaled: sigma = {_numerator(y_scale)})"
                )
            return f"sd of the random intercepts of {group!r}, on the link scale"
        note = f"sd of the random slopes of {term!r} in {group!r}, on the link scale"
        if prior.source == "default":
            note += f" (autoscaled: sigma = {_numerator(y_scale)} / sd({term}))"
        elif y_scale != 1.0:
            note = note.replace("link scale", "outcome's scale")
        return note
    sd = x_sd.get(key, 0.0)
    if prior.source == "user":
        return "as given (user priors are not autoscaled)"
    if sd > 0:
        return (
            f"autoscaled: sigma = {_numerator(y_scale)} / sd({key}) = "
            f"{DEFAULT_SCALE * y_scale:.4g} / {sd:.4g}, so the prior means the same whatever "
            "the unit of the predictor"
        )
    return f"predictor {key!r} is constant in the data, so the prior is not autoscaled"


def _numerator(y_scale: float) -> str:
    """``'2.5'``, or ``'2.5 sd(y)'`` for an outcome in its own units."""
    return f"{DEFAULT_SCALE:g}" if y_scale == 1.0 else f"{DEFAULT_SCALE:g} sd(y)"


def prior_summary(spec: ModelSpec) -> pl.DataFrame:
    """Every prior in force, the defaults included, in words.

    Parameters
    ----------
    spec : ModelSpec
        The model specification (``model.spec``).

    Returns
    -------
    polars.DataFrame
        One row per parameter, in model order, with columns ``parameter`` (the key to use in
        ``priors=``: a term such as ``'sexmale'``, ``'(Intercept)'``, ``'1|g'`` for the sd of
        group g's intercepts, ``'x|g'`` for the sd of its slopes of x, ``'cor|g'`` for the LKJ
        prior on its correlations, ``'sigma'``, ``'size'`` or ``'phi'`` for a dispersion
        parameter), ``kind`` (``'intercept'``, ``'coefficient'``, ``'group sd'``,
        ``'group correlation'`` or ``'dispersion'``),
        ``prior`` (e.g. ``'Normal(mu=0, sigma=5.24)'``), ``source`` (``'default'`` or
        ``'user'``) and ``note`` (what the prior is on: the intercept prior is on the
        centred-predictor intercept, default coefficient priors are autoscaled).

    Examples
    --------
    >>> model.prior_summary()  # doctest: +SKIP
    """
    from .spec import outcome_scale

    x_sd = _design_sd(spec)
    y_scale = outcome_scale(spec.family, spec.cells)[1]
    rows = [
        {
            "parameter": key,
            "kind": _kind(key),
            "prior": prior.describe(),
            "source": prior.source,
            "note": _note(key, prior, x_sd, y_scale),
        }
        for key, prior in spec.priors.items()
    ]
    return pl.DataFrame(
        rows,
        schema={
            "parameter": pl.String,
            "kind": pl.String,
            "prior": pl.String,
            "source": pl.String,
            "note": pl.String,
        },
    )


def sample_prior(spec: ModelSpec, draws: int = 1000, random_seed: int | None = None) -> xr.DataTree:
    """Forward draws from the prior of a model (the likelihood left out; no MCMC).

    Parameters
    ----------
    spec : ModelSpec
        The model specification (``model.spec``).
    draws : int, default 1000
        Number of draws.
    random_seed : int, optional
        Seed; the same seed gives the same draws.

    Returns
    -------
    xarray.DataTree
        One group, ``prior``, with dims ``chain`` (length 1) and ``draw``, holding the reported
        variables as the posterior does: ``b`` (dim ``term``; the ``(Intercept)`` on the data
        scale, as reported), and per grouping factor g ``sd_g`` and ``u_g`` (dim
        ``g_level``; with slopes ``sd_g`` has dim ``g_term``, ``u_g`` dims ``g_level, g_term``,
        and a correlated factor adds ``cor_g``, dim ``g_cor``), and the family's dispersion
        parameter (``sigma``, ``size`` or ``phi``), if any.

    Raises
    ------
    ValueError
        If ``draws`` is not a positive integer.
    """
    import xarray as xr

    from .pymc_model import build_model
    from .sampling import sample_prior as _forward

    if isinstance(draws, bool) or not isinstance(draws, int | np.integer) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}.")
    names = spec.reported
    trace = _forward(build_model(spec, prior_only=True), int(draws), random_seed)
    prior = trace["prior"].to_dataset()[names]
    return xr.DataTree.from_dict({"prior": prior})

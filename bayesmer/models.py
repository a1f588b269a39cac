"""The user-facing models: one base class, and thin ``lm``, ``glm``, ``lmer`` and ``glmer``
over it.

Importing this module loads no sampler: PyMC, PyTensor and nutpie are imported by :meth:`Model.fit`
(through :mod:`bayesmer.pymc_model` and :mod:`bayesmer.sampling`), so ``import bayesmer`` stays
quick.
"""

from __future__ import annotations

import secrets
import warnings
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import polars as pl

from . import compat, summaries
from .diagnostics import PACKAGE_DIR, Diagnostics, diagnose, warn_if_bad
from .engines import columns
from .families import Family, get_family
from .formula import ParsedFormula, parse_formula
from .spec import ModelSpec, build_spec, check_columns

if TYPE_CHECKING:
    import xarray as xr

    from .sampling import Sampler, SamplingInterrupted

#: The summary's line on the dispersion parameter (the last row of the fixed-effects table).
_DISPERSION_NOTE = {
    "sigma": "sigma is the residual sd, in the outcome's units.",
    "size": (
        "size is the negative binomial's: variance mu + mu^2 / size (small: strong "
        "overdispersion; large: nearly Poisson)."
    ),
    "phi": (
        "phi is the beta-binomial's precision: variance n p (1 - p) (1 + (n - 1) / (phi + 1)) "
        "(small: strong overdispersion; large: nearly binomial)."
    ),
}


class NotFittedError(ValueError):
    """A result was asked of a model that has not been fitted."""


class FitInterruptedWarning(UserWarning):
    """Sampling was interrupted (Ctrl-C): the fit kept the finished draws, or was not made."""


class Model:
    """A Bayesian generalized linear (mixed) model with a pymer4-style interface.

    Use :class:`lm`, :class:`glm`, :class:`lmer` or :class:`glmer`; this base class holds
    what they share.

    Parameters
    ----------
    formula : str
        lme4-style formula, e.g. ``'survived ~ sex + (1|pclass)'``.
    data : any dataframe narwhals supports
        polars (DataFrame or LazyFrame), pandas, a pyarrow Table, a DuckDB relation, a Dask or
        PySpark DataFrame, an Ibis table; see :mod:`bayesmer.engines`. Frames of a lazy engine
        stay there: validation and collapsing run as queries in it.
    family : str, default 'gaussian'
        ``'gaussian'`` (as pymer4 and R, the default), ``'binomial'``, ``'poisson'``,
        ``'negativebinomial'`` (NB2; also ``'nbinom2'``) or ``'betabinomial'`` (for
        ``cbind()`` outcomes).
    link : str, default 'default'
        ``'identity'`` (default) or ``'log'`` for gaussian; ``'logit'`` (default),
        ``'probit'`` or ``'cloglog'`` for binomial; ``'log'`` for Poisson and the negative
        binomial; ``'logit'`` for the beta-binomial. Links R accepts that bayesmer does not
        fit (Poisson ``'identity'`` and ``'sqrt'``, binomial ``'log'`` and ``'cauchit'``)
        raise a ValueError saying why and what to use.
    priors : dict, optional
        Priors keyed by term (``'sexmale'``, ``'(Intercept)'``), group sd (``'1|pclass'``)
        or dispersion parameter (``'sigma'``, ``'size'``, ``'phi'``): tuples such as
        ``('normal', 0, 2.5)`` or ``bambi.Prior`` objects. See :mod:`bayesmer.priors` for
        the defaults.

    Attributes
    ----------
    data : any dataframe narwhals supports
        The data given; after :meth:`fit` an eager polars or pandas frame also holds
        ``fitted`` and ``residuals`` (as pymer4's does).
    posterior : xarray.DataTree or None
        Every draw (ArviZ object) after :meth:`fit`.
    params : polars.DataFrame
        ``term, estimate`` (posterior medians), after :meth:`fit`.
    result_fit : polars.DataFrame
        ``term, estimate, sd, conf_low, conf_high, pd, rhat, ess_bulk, ess_tail``.
    diagnostics : polars.DataFrame
        One row per parameter: ``term, rhat, ess_bulk, ess_tail, mcse``.
    chain_diagnostics : polars.DataFrame
        One row per chain: ``chain, divergences, ebfmi``.
    """

    _requires_groups: bool | None = None
    _kind = "model"

    def __init__(
        self,
        formula: str,
        data: Any,
        family: str = "gaussian",
        link: str = "default",
        priors: dict[str, Any] | None = None,
    ) -> None:
        self.formula = formula
        self._parsed: ParsedFormula = parse_formula(formula)
        self._family: Family = get_family(family, link)
        self._check_kind()
        self.data = data
        self._check_columns()
        self.factors: dict[str, list[str] | None] = {}
        self._spec: ModelSpec | None = None
        self.priors = priors
        self._sampler: Sampler | None = None
        self.posterior: xr.DataTree | None = None
        self.exponentiate = False
        self.ci = 0.95
        self._diag: Diagnostics | None = None
        self.result_emmeans: pl.DataFrame | None = None
        self.prior: xr.DataTree | None = None
        self._loo_cache: tuple[xr.DataTree, Any] | None = None  # see bayesmer.loo.loo

    # -- set-up ------------------------------------------------------------------------------

    @classmethod
    def _build(
        cls, formula: str, data: Any, family: str, link: str, priors: dict[str, Any] | None
    ) -> Model:
        """A model of this kind (lm and lmer fix the family: they take none)."""
        return cls(formula, data, family=family, link=link, priors=priors)

    def _check_kind(self) -> None:
        mixed = {"glm": "glmer", "lm": "lmer"}.get(self._kind, "glmer")
        fixed = {"glmer": "glm", "lmer": "lm"}.get(self._kind, "glm")
        if self._requires_groups is True and not self._parsed.groups:
            raise ValueError(
                f"{self._kind} needs at least one random intercept such as (1|group) in "
                f"{self.formula!r}; use {fixed} for a model without random effects."
            )
        if self._requires_groups is False and self._parsed.groups:
            raise ValueError(
                f"{self._kind} does not take random effects "
                f"({', '.join(self._parsed.groups)} in {self.formula!r}); use {mixed}."
            )

    def _check_columns(self) -> None:
        check_columns(self._parsed, columns(self.data))

    @property
    def family(self) -> str:
        """Name of the response family."""
        return self._family.name

    @property
    def link(self) -> str:
        """Name of the link function."""
        return self._family.link

    def set_factors(self, factors: str | list[str] | dict[str, list[Any]]) -> None:
        """Declare columns categorical, optionally with their level order.

        Parameters
        ----------
        factors : str, list of str, or dict
            Column name(s); a dict maps each column to its level order (the first level is
            the reference level of the treatment coding).
        """
        if isinstance(factors, str):
            new = {factors: None}
        elif isinstance(factors, dict):
            new = {}
            for col, order in factors.items():
                if not isinstance(order, list | tuple) or not order:
                    raise TypeError(
                        f"set_factors: the level order for {col!r} must be a non-empty list, "
                        f"got {order!r}."
                    )
                new[col] = [str(v) for v in order]
        elif isinstance(factors, list | tuple) and all(isinstance(f, str) for f in factors):
            new = dict.fromkeys(factors)
        else:
            raise TypeError("set_factors takes a column name, a list of names, or a dict.")
        self.factors.update(new)
        self._invalidate()

    def unset_factors(self, factors: str | list[str] | None = None) -> None:
        """Forget set_factors declarations: all of them (None) or those of the given columns.

        Parameters
        ----------
        factors : str or list of str, optional
            Column(s) to forget; every declaration when None.

        Raises
        ------
        ValueError
            If a column was not declared with set_factors.
        TypeError
            If ``factors`` is not a name, a list of names or None.
        """
        if factors is None:
            self.factors = {}
        else:
            cols = [factors] if isinstance(factors, str) else factors
            if not isinstance(cols, list | tuple) or not all(isinstance(c, str) for c in cols):
                raise TypeError("unset_factors takes a column name, a list of names, or None.")
            unknown = [c for c in cols if c not in self.factors]
            if unknown:
                raise ValueError(
                    f"unset_factors: {unknown} not set as factor(s); the factors set are "
                    f"{list(self.factors)}."
                )
            self.factors = {k: v for k, v in self.factors.items() if k not in cols}
        self._invalidate()

    @property
    def priors(self) -> MappingProxyType:
        """The user's priors keyed by term (read-only; assign a new dict to change them).

        Assigning forgets the specification, the fit and any prior draws, which belong to the
        old priors.
        """
        return self._priors

    @priors.setter
    def priors(self, priors: dict[str, Any] | None) -> None:
        if priors is not None and not isinstance(priors, dict | MappingProxyType):
            raise TypeError(f"priors must be a dict keyed by term, got {type(priors).__name__}.")
        self._priors = MappingProxyType(dict(priors or {}))
        self._invalidate()

    def _invalidate(self) -> None:
        """Forget everything built from the formula, data, factors and priors."""
        self._spec = None
        self._sampler = None
        self.posterior = None
        self._diag = None
        self.result_emmeans = None
        self.prior = None
        self._loo_cache = None

    @property
    def spec(self) -> ModelSpec:
        """The model specification (built from formula and data on first use)."""
        if self._spec is not None and self._spec_factors != self.factors:
            self._invalidate()  # factors assigned directly rather than through set_factors
        if self._spec is None:
            self._spec = build_spec(
                self._parsed, self.data, self._family, self.factors, dict(self.priors)
            )
            self._spec_factors = {
                k: None if v is None else list(v) for k, v in self.factors.items()
            }
        return self._spec

    # -- fitting -----------------------------------------------------------------------------

    def fit(
        self,
        exponentiate: bool = False,
        summary: bool = False,
        *,
        draws: int | None = None,
        tune: int | None = None,
        chains: int = 4,
        random_seed: int | None = None,
        progressbar: bool = True,
        ci: float = 0.95,
        type_predict: str = "response",
        **sampler_kwargs: Any,
    ) -> Summary | None:
        """Sample the posterior with nutpie.

        ``exponentiate`` and ``summary`` come first, in pymer4's order; every other argument
        is keyword-only. pymer4's bootstrap and interval-method arguments (``conf_method``,
        ``nboot``, ``save_boots``, ``parallel``, ``ncpus``, ``conf_type``...) have no
        Bayesian meaning and raise a TypeError that says what to use instead.

        After the fit, when ``data`` is an eager polars or pandas DataFrame, ``fitted`` (the
        posterior mean of each row's probability or rate, on the scale of ``type_predict``)
        and ``residuals`` (the response residual: the outcome, as a proportion of trials for
        a binomial ``cbind`` response, minus the response-scale ``fitted``) are added to
        :attr:`data`, as pymer4 does; rows dropped for missing values get nulls. A column of
        that name the formula uses is left alone.

        Parameters
        ----------
        exponentiate : bool, default False
            Report fixed effects (and ranef/fixef) as exp(): odds ratios for logit,
            rate ratios for log links.
        summary : bool, default False
            Return :meth:`summary` (it displays in a notebook).
        draws : int, optional
            Draws kept per chain: by default 1000, or 2000 when many levels of a nested
            factor hold a single nested level, whose two sds trade off (see
            :func:`bayesmer.sampling.default_draws`; :meth:`summary` says so).
        tune : int, optional
            Tuning steps per chain, at least 1: by default 1000, or 500 for a model with
            thousands of group levels (see :func:`bayesmer.sampling.default_tune`;
            :meth:`summary` says so).
        chains : int, default 4
            Number of chains.
        random_seed : int, optional
            Seed; the same seed reproduces the same draws. Drawn at random when None (and
            stored as ``random_seed``).
        progressbar : bool, default True
        ci : float, default 0.95
            Probability mass of the credible (highest-density) intervals.
        type_predict : {'response', 'link'}, default 'response'
            Scale of the ``fitted`` column added to the data.
        **sampler_kwargs
            Passed to nutpie (``target_accept``, ``adaptation``, ``maxdepth``...); they
            override bayesmer's choices. They are checked against nutpie's settings before
            anything is compiled.

        Returns
        -------
        Summary or None

        Raises
        ------
        TypeError
            For a pymer4 argument without a Bayesian meaning, or a setting nutpie does not
            take.
        ValueError
            For out-of-range ``ci``, ``draws``, ``tune``, ``chains`` or ``type_predict``.

        Notes
        -----
        Interrupting the sampling (Ctrl-C) keeps the chains that finished at least
        :data:`~bayesmer.sampling.MIN_KEPT_DRAWS` draws, all cut to the same length, with a
        :class:`~bayesmer.FitInterruptedWarning` saying how many; ``draws`` and ``chains``
        are then what was kept, and the diagnostics are computed on those draws. When no
        chain got that far the ``KeyboardInterrupt`` goes on and the model is left exactly as
        it was (its previous fit, if any, intact).
        """
        from .compiled import sampler
        from .pymc_model import build_model
        from .sampling import (
            SamplingInterrupted,
            check_sampler_kwargs,
            default_draws,
            default_sampler_kwargs,
            default_tune,
            is_large,
        )

        rejected = {k: v for k, v in sampler_kwargs.items() if k in compat.FIT}
        compat.reject("fit", compat.FIT, rejected)
        # checked as nutpie will get them: a low-rank setting is valid where bayesmer chose
        # the low-rank mass matrix (crossed factors), though the user did not name it
        kwargs = {**default_sampler_kwargs(self.spec), **sampler_kwargs}
        check_sampler_kwargs(kwargs)
        if type_predict not in ("response", "link"):
            raise ValueError(f"type_predict must be 'response' or 'link', got {type_predict!r}.")
        if exponentiate and not self._family.exponentiates:
            raise ValueError(
                f"exponentiate=True needs a logit or log link; this model uses {self.link}."
            )
        if not 0 < ci < 1:
            raise ValueError(f"ci must be between 0 and 1, got {ci}.")
        if draws is None:
            draws = default_draws(self.spec)
        if tune is None:
            tune = default_tune(self.spec)
        for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
            if not isinstance(value, int) or value < 1:
                # tune=0 made nutpie's adaptation panic (its first window must end in tuning)
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        spec = self.spec
        if self._sampler is None:
            # a large model's group effects are computed after sampling (one copy in memory)
            self._sampler = sampler(build_model(spec), deterministics=not is_large(spec))
        seed = secrets.randbelow(2**31) if random_seed is None else random_seed
        try:
            posterior = self._sampler.sample(
                draws, tune, chains, seed, progressbar, keep=spec.reported, **kwargs
            )
        except SamplingInterrupted as stop:
            posterior, draws, chains = self._interrupted(stop, draws, chains)
        names = spec.reported
        diag = diagnose(
            posterior["posterior"].to_dataset(), posterior["sample_stats"].to_dataset(), names
        )
        # The model changes only now, all at once: an interrupt before leaves it as it was.
        self.random_seed, self.sampler_kwargs = seed, kwargs
        self.draws, self.tune, self.chains = draws, tune, chains
        self.posterior, self._diag = posterior, diag
        self.exponentiate = exponentiate
        self.ci = ci
        warn_if_bad(self._diag)
        self._add_fitted(type_predict)
        return self.summary() if summary else None

    def _add_fitted(self, type_predict: str) -> None:
        """Add ``fitted`` and ``residuals`` to an eager data frame (see :meth:`fit`)."""
        import pandas as pd

        from .predict import fitted_values

        if not isinstance(self.data, pl.DataFrame | pd.DataFrame):
            return  # a LazyFrame, or a frame of another engine: left as it is
        fitted, residuals = fitted_values(self, type_predict)
        used = set(self._parsed.columns)
        new = {k: v for k, v in (("fitted", fitted), ("residuals", residuals)) if k not in used}
        if isinstance(self.data, pl.DataFrame):
            self.data = self.data.with_columns(
                [pl.Series(k, v, dtype=pl.Float64).fill_nan(None) for k, v in new.items()]
            )
        else:
            data = self.data.copy()
            for k, v in new.items():
                data[k] = v
            self.data = data

    def _interrupted(
        self, stop: SamplingInterrupted, draws: int, chains: int
    ) -> tuple[xr.DataTree, int, int]:
        """The finished draws of an interrupted fit, draws and chains kept, with a warning.

        When no chain finished :data:`~bayesmer.sampling.MIN_KEPT_DRAWS` draws the interrupt
        is raised again and the model is left as it was.
        """
        from .sampling import MIN_KEPT_DRAWS

        if stop.chains == 0:
            before = "its previous fit" if self.posterior is not None else "not fitted"
            warnings.warn(
                f"Sampling was interrupted before any chain finished {MIN_KEPT_DRAWS} draws: "
                f"the model is left as it was ({before}).",
                FitInterruptedWarning,
                skip_file_prefixes=(PACKAGE_DIR,),
            )
            raise stop
        left_out = (
            f"; {chains - stop.chains} chain(s) with fewer than {MIN_KEPT_DRAWS} finished "
            "draws left out"
            if stop.chains < chains
            else ""
        )
        warnings.warn(
            f"Sampling was interrupted: the fit keeps {stop.chains} chains of {stop.draws} "
            f"draws, the draws every kept chain finished (of {chains} x {draws} asked "
            f"for{left_out}); the diagnostics are computed on those.",
            FitInterruptedWarning,
            skip_file_prefixes=(PACKAGE_DIR,),
        )
        self._sampler.sample_seconds = stop.seconds
        return stop.trace, stop.draws, stop.chains

    def _require_fit(self, what: str) -> None:
        if self.posterior is None:
            raise NotFittedError(f"{self._kind} model is not fitted yet: call fit() before {what}.")

    # -- results -----------------------------------------------------------------------------

    @property
    def params(self) -> pl.DataFrame:
        """``term, estimate``: posterior medians of the fixed effects (exp() if exponentiated)."""
        self._require_fit("params")
        return summaries.params_table(self.spec, self.posterior, self.exponentiate)

    @property
    def result_fit(self) -> pl.DataFrame:
        """Fixed effects with sd, HDI (``conf_low``, ``conf_high``), pd and diagnostics."""
        self._require_fit("result_fit")
        return summaries.result_fit_table(
            self.spec, self.posterior, self._diag, self.ci, self.exponentiate
        )

    @property
    def diagnostics(self) -> pl.DataFrame:
        """``term, rhat, ess_bulk, ess_tail, mcse`` for every reported parameter."""
        self._require_fit("diagnostics")
        return self._diag.table

    @property
    def chain_diagnostics(self) -> pl.DataFrame:
        """``chain, divergences, ebfmi``."""
        self._require_fit("chain_diagnostics")
        return self._diag.chains

    @property
    def convergence_problems(self) -> list[str]:
        """What the convergence gate found wrong with the last fit (empty when clean)."""
        self._require_fit("convergence_problems")
        return list(self._diag.problems)

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent compiling the model and sampling (last fit).

        ``compile`` is near zero when a model of the same structure was compiled before in
        this process, and shorter when one was compiled in an earlier process (see
        :mod:`bayesmer.compiled`).
        """
        self._require_fit("timings")
        if self._sampler is None:
            raise ValueError("timings are not kept for a model loaded from a file; refit it.")
        return {"compile": self._sampler.compile_seconds, "sample": self._sampler.sample_seconds}

    def summary(self, decimals: int = 3) -> summaries.Summary:
        """A printable summary: model, data, sampler, LOO, diagnostics, effects.

        Parameters
        ----------
        decimals : int, default 3
            Decimal places of the numbers in the tables (text and HTML).
        """
        if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
            raise ValueError(f"decimals must be a non-negative integer, got {decimals!r}.")
        self._require_fit("summary")
        from .loo import loo

        spec = self.spec
        n_rows = spec.n_obs
        cells = (
            f"collapsed to {len(spec.cells)} cells"
            if spec.collapsed
            else "not collapsed (rows nearly all distinct)"
        )
        if spec.collapsed and spec.family.per_observation:
            cells = (
                f"collapsed to {len(spec.obs)} distinct observations in {len(spec.cells)} "
                "cells, each counted as often as it occurs"
            )
        header = [
            f"Formula: {self._kind}({self.formula})",
            f"Family: {self.family} (link: {self.link})",
            f"Number of observations: {n_rows} ({cells})"
            + (f"; {spec.n_dropped} rows dropped for missing values" if spec.n_dropped else ""),
        ]
        from .pymc_model import carrier

        # of crossed factors, say which carries the intercept (the parametrization's choice)
        held = carrier(spec) if sum(g.parent is None for g in spec.groups) >= 2 else None
        for g in spec.groups:
            within = f" within {g.parent}" if g.parent else ""
            terms = ""
            if g.slopes:
                kind = "correlated" if g.cor_pairs else "uncorrelated"
                terms = f"; {kind} {', '.join(g.terms)}"
            if held is not None and g.name == held.name:
                terms += "; carries the intercept"
            header.append(f"Groups: {g.name} {len(g.levels)}{within} ({g.parametrization}{terms})")
        from .sampling import sampler_line

        header.append(
            sampler_line(
                spec, self.chains, self.draws, self.tune, self.random_seed, self.sampler_kwargs
            )
        )
        header.append(f"Credible intervals: {self.ci:.0%} highest density")
        header.append("---------------------")
        res = loo(self)
        header.append(f"ELPD-LOO: {res.elpd:.1f} (SE {res.se:.1f}) | p_loo: {res.p_loo:.1f}")
        d = self._diag
        header.append(
            f"Convergence: max R-hat {d.max_rhat:.3f} | min bulk ESS {d.min_ess_bulk:.0f} | "
            f"min tail ESS {d.min_ess_tail:.0f} | divergences {d.divergences}"
        )
        random = None
        if spec.groups:
            from .pooling import scale_note, with_scale_columns

            random = self.ranef_var
            if not spec.slopes:  # icc and median ratios are defined for random intercepts
                random = with_scale_columns(self, random)
        fixed = self.result_fit.select("term", "estimate", "sd", "conf_low", "conf_high", "pd")
        scale = "exp() of the link scale" if self.exponentiate else "link scale"
        footer = [
            f"Fixed effects are posterior medians on the {scale}; pd is the probability "
            "of direction."
        ]
        if spec.family.dispersion:
            footer.append(_DISPERSION_NOTE[spec.family.dispersion])
        if spec.groups and not spec.slopes:
            footer.append(scale_note(self))
        if d.problems:
            footer.append("WARNING: " + " ".join(d.problems))
        title = (
            "sds and correlations of the group effects" if spec.slopes else "sd of group intercepts"
        )
        return summaries.Summary(header, random, fixed, footer, decimals, title)

    # -- marginal estimates (bayesmer.emmeans) ----------------------------------------------

    def emmeans(
        self,
        marginal_var: str | list[str],
        by: str | list[str] | None = None,
        *,
        contrasts: dict[str, list[float]] | str | None = None,
        type: str = "response",
        ci: float | None = None,
        weights: str = "equal",
        re: str = "zero",
        at: dict[str, Any] | None = None,
        regrid: str | None = None,
        draws: bool = False,
        random_seed: int | None = None,
        **kwargs: Any,
    ) -> pl.DataFrame:
        """Estimated marginal means, slopes or contrasts, computed from every posterior draw.

        See :func:`bayesmer.emmeans.emmeans` for the parameters and the conventions. pymer4's
        ``p_adjust``, ``normalize`` and ``apply_transforms`` raise a TypeError saying what
        to do instead.
        """
        compat.reject("emmeans", compat.EMMEANS, kwargs)
        self._require_fit("emmeans")
        from .emmeans import emmeans

        result = emmeans(
            self,
            marginal_var,
            by=by,
            contrasts=contrasts,
            type=type,
            ci=ci,
            weights=weights,
            re=re,
            at=at,
            regrid=regrid,
            draws=draws,
            random_seed=random_seed,
        )
        self.result_emmeans = result
        return result

    def empredict(
        self,
        at: dict[str, Any],
        *,
        type: str = "response",
        re: str = "zero",
        ci: float | None = None,
        random_seed: int | None = None,
        **kwargs: Any,
    ) -> pl.DataFrame:
        """Predictions at given predictor values; see :func:`bayesmer.emmeans.empredict`."""
        compat.reject("empredict", compat.EMMEANS, kwargs)
        self._require_fit("empredict")
        from .emmeans import empredict

        return empredict(self, at, type=type, re=re, ci=ci, random_seed=random_seed)

    # -- checking and reporting (bayesmer.loo, .ppc, .predict, .priors, .plots, .io)

    def shrinkage(self, group: str | None = None) -> pl.DataFrame:
        """No, partial and complete pooling per group; see :func:`bayesmer.pooling.shrinkage`."""
        self._require_fit("shrinkage")
        from .pooling import shrinkage

        return shrinkage(self, group=group)

    def icc(self, ci: float | None = None) -> pl.DataFrame:
        """Latent ICC and median odds/rate ratio per group; see :func:`bayesmer.pooling.icc`."""
        self._require_fit("icc")
        from .pooling import icc

        return icc(self, ci=ci)

    def loo(self) -> Any:
        """PSIS-LOO per original observation; see :func:`bayesmer.loo.loo`."""
        self._require_fit("loo")
        from .loo import loo

        return loo(self)

    def kfold(
        self, group: str, k: int = 10, random_seed: int | None = None, progressbar: bool = True
    ) -> Any:
        """K-fold cross-validation by group (new groups); see :func:`bayesmer.kfold.kfold`."""
        self._require_fit("kfold")
        from .kfold import kfold

        return kfold(self, group, k=k, random_seed=random_seed, progressbar=progressbar)

    def ppc(
        self,
        stat: Any = None,
        ci: float | None = None,
        random_seed: int | None = None,
        re: str = "groups",
    ) -> pl.DataFrame:
        """Posterior predictive check table; see :func:`bayesmer.ppc.ppc`."""
        self._require_fit("ppc")
        from .ppc import ppc

        return ppc(self, stat=stat, ci=ci, random_seed=random_seed, re=re)

    def simulate(
        self,
        nsim: int = 1,
        use_rfx: bool | None = None,
        *,
        re: str | None = None,
        random_seed: int | None = None,
        with_data: bool = False,
        **kwargs: Any,
    ) -> pl.DataFrame:
        """Replicated data sets ``sim_1..sim_<nsim>``; see :func:`bayesmer.ppc.simulate`."""
        self._require_fit("simulate")
        from .ppc import simulate

        return simulate(
            self,
            nsim,
            use_rfx,
            re=re,
            random_seed=random_seed,
            with_data=with_data,
            **kwargs,
        )

    def predict(
        self,
        data: Any = None,
        type_predict: str = "response",
        *,
        use_rfx: bool | None = None,
        re: str | None = None,
        output: str = "mean",
        ci: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Posterior mean prediction per row (NumPy array); see :func:`bayesmer.predict.predict`.

        ``output='table'`` gives a polars table with intervals, ``output='draws'`` every draw.
        """
        self._require_fit("predict")
        from .predict import predict

        return predict(
            self,
            data,
            type_predict,
            use_rfx,
            re=re,
            output=output,
            ci=ci,
            **kwargs,
        )

    def prior_summary(self) -> pl.DataFrame:
        """Every prior in force, defaults included; see :func:`bayesmer.priors.prior_summary`."""
        from .priors import prior_summary

        return prior_summary(self.spec)

    def sample_prior(self, draws: int = 1000, random_seed: int | None = None) -> xr.DataTree:
        """Draws from the prior (stored as ``prior``); see :func:`bayesmer.priors.sample_prior`."""
        from .priors import sample_prior

        self.prior = sample_prior(self.spec, draws=draws, random_seed=random_seed)
        return self.prior

    def save(self, path: str) -> None:
        """Save formula, settings, data and every draw; see :func:`bayesmer.io.save_model`."""
        self._require_fit("save")
        from .io import save_model

        save_model(self, path)

    def plot_emmeans(self, marginal_var: str, **kwargs: Any) -> Any:
        """Marginal means with intervals; see :func:`bayesmer.plots.plot_emmeans`."""
        self._require_fit("plot_emmeans")
        from .plots import plot_emmeans

        return plot_emmeans(self, marginal_var, **kwargs)

    def plot_contrasts(self, marginal_var: str, contrasts: Any = "pairwise", **kwargs: Any) -> Any:
        """Forest plot of contrasts; see :func:`bayesmer.plots.plot_contrasts`."""
        self._require_fit("plot_contrasts")
        from .plots import plot_contrasts

        return plot_contrasts(self, marginal_var, contrasts=contrasts, **kwargs)

    def plot_ranef(self, **kwargs: Any) -> Any:
        """Caterpillar plot of group effects; see :func:`bayesmer.plots.plot_ranef`."""
        self._require_fit("plot_ranef")
        from .plots import plot_ranef

        return plot_ranef(self, **kwargs)

    def plot_trace(self, **kwargs: Any) -> Any:
        """Trace and rank plots for diagnostics; see :func:`bayesmer.plots.plot_trace`."""
        self._require_fit("plot_trace")
        from .plots import plot_trace

        return plot_trace(self, **kwargs)

    def plot_ppc(self, **kwargs: Any) -> Any:
        """Posterior predictive check plot; see :func:`bayesmer.plots.plot_ppc`."""
        self._require_fit("plot_ppc")
        from .plots import plot_ppc

        return plot_ppc(self, **kwargs)

    def plot_shrinkage(self, group: str | None = None, **kwargs: Any) -> Any:
        """Shrinkage plot of the group estimates; see :func:`bayesmer.plots.plot_shrinkage`."""
        self._require_fit("plot_shrinkage")
        from .plots import plot_shrinkage

        return plot_shrinkage(self, group=group, **kwargs)

    def plot_prior_posterior(self, **kwargs: Any) -> Any:
        """Prior against posterior densities; see :func:`bayesmer.plots.plot_prior_posterior`."""
        self._require_fit("plot_prior_posterior")
        from .plots import plot_prior_posterior

        return plot_prior_posterior(self, **kwargs)

    def __repr__(self) -> str:
        fitted = self.posterior is not None
        return (
            f"bayesmer.{self._kind}(fitted={fitted}, formula={self.formula}, "
            f"family={self.family}, link={self.link})"
        )


class glm(Model):  # noqa: N801  (pymer4's name)
    """Bayesian generalized linear model (no random effects).

    Parameters are those of :class:`Model`.

    Examples
    --------
    >>> from bayesmer import glm, load_dataset
    >>> model = glm("survived ~ sex", data=load_dataset("titanic"), family="binomial")
    >>> model.fit(exponentiate=True)  # doctest: +SKIP
    >>> model.params  # doctest: +SKIP
    """

    _requires_groups = False
    _kind = "glm"


class glmer(Model):  # noqa: N801  (pymer4's name)
    """Bayesian generalized linear mixed model in lme4's formula language.

    Random effects: intercepts ``(1|g)``; correlated intercepts and slopes ``(x|g)``,
    ``(1 + x + z|g)`` (sds with half-normal priors, an LKJ prior on the correlations: keys
    ``'1|g'``, ``'x|g'`` and ``'cor|g'`` in ``priors=``); slopes only ``(0 + x|g)``;
    uncorrelated ``(x||g)`` (or ``(1|g) + (0 + x|g)``); factor slopes ``(sex|g)``, one
    deviation per non-reference level (``sexmale``); nested ``(1|site/plot)`` and combined
    ``(1|a:b)`` factors. ``ranef`` has a column per random term, ``fixef`` adds them to the
    fixed effects (lme4's ``coef()``), ``ranef_var`` lists the sds and correlations
    (``sd__(Intercept)``, ``sd__x``, ``cor__(Intercept).x`` for a factor with slopes).
    ``icc`` and ``kfold`` are for random intercepts only.

    Parameters are those of :class:`Model`.

    Examples
    --------
    >>> from bayesmer import glmer, load_dataset
    >>> model = glmer("survived ~ sex + (1|pclass)", load_dataset("titanic"), "binomial")
    >>> model.fit(exponentiate=True)  # doctest: +SKIP
    >>> model.ranef  # doctest: +SKIP
    >>> formula = "use01 ~ age + I(age^2) + urban + livch + (urban | district)"
    >>> slopes = glmer(formula, data=load_dataset("contraception"), family="binomial")
    >>> slopes.fit()  # doctest: +SKIP
    >>> slopes.ranef_var  # doctest: +SKIP
    """

    _requires_groups = True
    _kind = "glmer"

    def predict(
        self,
        data: Any = None,
        use_rfx: bool | None = None,
        type_predict: str = "response",
        *,
        re: str | None = None,
        output: str = "mean",
        ci: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Posterior mean prediction per row, each row's fitted group effects by default.

        pymer4's positional order (``data, use_rfx, type_predict``); see
        :func:`bayesmer.predict.predict`.
        """
        return super().predict(
            data, type_predict, use_rfx=use_rfx, re=re, output=output, ci=ci, **kwargs
        )

    @property
    def ranef(self) -> pl.DataFrame | dict[str, pl.DataFrame]:
        """``level`` and a column per random term (``(Intercept)``, slopes such as ``x``):
        group deviations (posterior medians; exp() if exponentiated).

        A dict keyed by grouping column when the model has several.
        """
        self._require_fit("ranef")
        return summaries.ranef_table(self.spec, self.posterior, self.exponentiate)

    @property
    def fixef(self) -> pl.DataFrame | dict[str, pl.DataFrame]:
        """Per-group coefficients (fixed effect + group deviation), as lme4's ``coef()``."""
        self._require_fit("fixef")
        return summaries.fixef_table(self.spec, self.posterior, self.exponentiate)

    @property
    def ranef_var(self) -> pl.DataFrame:
        """``group, term, estimate, conf_low, conf_high``: lme4's VarCorr rows as pymer4 names
        them: ``sd__(Intercept)`` (sd of the group intercepts), for a factor with slopes also
        ``sd__<term>`` and ``cor__<term>.<term>``, and for a gaussian model the ``Residual``
        row ``sd__Observation``."""
        self._require_fit("ranef_var")
        return summaries.ranef_var_table(self.spec, self.posterior, self.ci)


class _Gaussian:
    """What lm and lmer share: the gaussian family, fixed (they take no family argument)."""

    def __init__(self, formula: str, data: Any, priors: dict[str, Any] | None = None) -> None:
        super().__init__(formula, data, family="gaussian", priors=priors)

    @classmethod
    def _build(
        cls, formula: str, data: Any, family: str, link: str, priors: dict[str, Any] | None
    ) -> Model:
        return cls(formula, data, priors=priors)


class lm(_Gaussian, glm):  # noqa: N801  (pymer4's name)
    """Bayesian linear model: a gaussian :class:`glm` (identity link), pymer4's ``lm``.

    The residual sd is the parameter ``sigma`` (prior key ``'sigma'``; default
    Exponential(1 / sd(y))), reported after the fixed effects.

    Parameters
    ----------
    formula : str
        Formula without random effects, e.g. ``'Reaction ~ Days'``.
    data : any dataframe narwhals supports (see :class:`Model`)
    priors : dict, optional
        As for :class:`Model`.

    Examples
    --------
    >>> from bayesmer import lm, load_dataset
    >>> model = lm("Reaction ~ Days", data=load_dataset("sleepstudy"))
    >>> model.fit()  # doctest: +SKIP
    """

    _kind = "lm"


class lmer(_Gaussian, glmer):  # noqa: N801  (pymer4's name)
    """Bayesian linear mixed model: a gaussian :class:`glmer` (identity link), pymer4's
    ``lmer``.

    ``ranef_var`` ends with lme4's ``Residual`` row (``sd__Observation``): the residual sd
    ``sigma`` (prior key ``'sigma'``).

    Parameters
    ----------
    formula : str
        Formula with random effects, e.g. ``'Reaction ~ Days + (Days | Subject)'``.
    data : any dataframe narwhals supports (see :class:`Model`)
    priors : dict, optional
        As for :class:`Model`.

    Examples
    --------
    >>> from bayesmer import lmer, load_dataset
    >>> model = lmer("Reaction ~ Days + (Days | Subject)", data=load_dataset("sleepstudy"))
    >>> model.fit()  # doctest: +SKIP
    >>> model.ranef_var  # doctest: +SKIP
    """

    _kind = "lmer"


Summary = summaries.Summary

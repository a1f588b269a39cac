"""The user-facing models: one base class, and thin ``glm`` and ``glmer`` over it."""

from __future__ import annotations

import secrets
import warnings
from typing import Any

import polars as pl
import xarray as xr

from . import summaries
from .diagnostics import PACKAGE_DIR, Diagnostics, diagnose, warn_if_bad
from .families import Family, get_family
from .formula import ParsedFormula, parse_formula
from .pymc_model import build_model
from .sampling import (
    MIN_KEPT_DRAWS,
    FitInterruptedWarning,
    Sampler,
    SamplingInterrupted,
    default_sampler_kwargs,
)
from .spec import ModelSpec, build_spec, check_columns


class NotFittedError(ValueError):
    """A result was asked of a model that has not been fitted."""


class Model:
    """A Bayesian generalized linear (mixed) model with a pymer4-style interface.

    Use :class:`glm` or :class:`glmer`; this base class holds what they share.

    Parameters
    ----------
    formula : str
        lme4-style formula, e.g. ``'survived ~ sex + (1|pclass)'``.
    data : polars.DataFrame, polars.LazyFrame or pandas.DataFrame
    family : {'binomial', 'poisson'}, default 'binomial'
    link : str, default 'default'
        ``'logit'`` (default), ``'probit'`` or ``'cloglog'`` for binomial; ``'log'`` for Poisson.
    priors : dict, optional
        Priors keyed by term (``'sexmale'``, ``'(Intercept)'``) or group sd (``'1|pclass'``):
        tuples such as ``('normal', 0, 2.5)`` or ``bambi.Prior`` objects. See
        :mod:`bayesmer.priors` for the defaults.

    Attributes
    ----------
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
        family: str = "binomial",
        link: str = "default",
        priors: dict[str, Any] | None = None,
    ) -> None:
        self.formula = formula
        self._parsed: ParsedFormula = parse_formula(formula)
        self._family: Family = get_family(family, link)
        self._check_kind()
        if not isinstance(data, pl.DataFrame | pl.LazyFrame) and not hasattr(data, "columns"):
            raise TypeError(
                "data must be a polars DataFrame/LazyFrame or a pandas DataFrame, "
                f"got {type(data).__name__}."
            )
        self.data = data
        self._check_columns()
        if priors is not None and not isinstance(priors, dict):
            raise TypeError(f"priors must be a dict keyed by term, got {type(priors).__name__}.")
        self.priors = dict(priors or {})
        self.factors: dict[str, list[str] | None] = {}
        self._spec: ModelSpec | None = None
        self._sampler: Sampler | None = None
        self.posterior: xr.DataTree | None = None
        self.exponentiate = False
        self.ci = 0.95
        self._diag: Diagnostics | None = None
        self.result_emmeans: pl.DataFrame | None = None
        self.prior: xr.DataTree | None = None
        self._loo_cache: tuple[xr.DataTree, Any] | None = None  # see bayesmer.checks.loo

    # -- set-up ------------------------------------------------------------------------------

    def _check_kind(self) -> None:
        if self._requires_groups is True and not self._parsed.groups:
            raise ValueError(
                f"glmer needs at least one random intercept such as (1|group) in "
                f"{self.formula!r}; use glm for a model without random effects."
            )
        if self._requires_groups is False and self._parsed.groups:
            raise ValueError(
                f"glm does not take random effects ({', '.join(self._parsed.groups)} in "
                f"{self.formula!r}); use glmer."
            )

    def _check_columns(self) -> None:
        if isinstance(self.data, pl.LazyFrame):
            available = list(self.data.collect_schema())
        else:
            available = [str(c) for c in self.data.columns]
        check_columns(self._parsed, available)

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

    def unset_factors(self) -> None:
        """Forget every set_factors declaration."""
        self.factors = {}
        self._invalidate()

    def _invalidate(self) -> None:
        self._spec = None
        self._sampler = None
        self.posterior = None
        self._diag = None
        self.result_emmeans = None

    @property
    def spec(self) -> ModelSpec:
        """The model specification (built from formula and data on first use)."""
        if self._spec is None:
            self._spec = build_spec(
                self._parsed, self.data, self._family, self.factors, self.priors
            )
        return self._spec

    # -- fitting -----------------------------------------------------------------------------

    def fit(
        self,
        exponentiate: bool = False,
        summary: bool = False,
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        random_seed: int | None = None,
        progressbar: bool = True,
        ci: float = 0.95,
        **sampler_kwargs: Any,
    ) -> Summary | None:
        """Sample the posterior with nutpie.

        Parameters
        ----------
        exponentiate : bool, default False
            Report fixed effects (and ranef/fixef) as exp(): odds ratios for logit,
            rate ratios for log links.
        summary : bool, default False
            Return :meth:`summary` (it displays in a notebook).
        draws, tune, chains : int
            Draws kept per chain, tuning steps per chain, number of chains.
        random_seed : int, optional
            Seed; the same seed reproduces the same draws. Drawn at random when None (and
            stored as ``random_seed``).
        progressbar : bool, default True
        ci : float, default 0.95
            Probability mass of the credible (highest-density) intervals.
        **sampler_kwargs
            Passed to nutpie (``target_accept``, ``adaptation``, ``maxdepth``...); they
            override bayesmer's choices.

        Returns
        -------
        Summary or None

        Notes
        -----
        Interrupting the sampling (Ctrl-C) keeps the chains that finished at least
        :data:`~bayesmer.sampling.MIN_KEPT_DRAWS` draws, all cut to the same length, with a
        :class:`~bayesmer.FitInterruptedWarning` saying how many; ``draws`` and ``chains``
        are then what was kept, and the diagnostics are computed on those draws. When no
        chain got that far the ``KeyboardInterrupt`` goes on and the model is left exactly as
        it was (its previous fit, if any, intact).
        """
        if exponentiate and not self._family.exponentiates:
            raise ValueError(
                f"exponentiate=True needs a logit or log link; this model uses {self.link}."
            )
        if not 0 < ci < 1:
            raise ValueError(f"ci must be between 0 and 1, got {ci}.")
        for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
            if not isinstance(value, int) or value < (0 if name == "tune" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        spec = self.spec
        if self._sampler is None:
            self._sampler = Sampler.compile(build_model(spec))
        seed = secrets.randbelow(2**31) if random_seed is None else random_seed
        kwargs = {**default_sampler_kwargs(spec), **sampler_kwargs}
        try:
            posterior = self._sampler.sample(draws, tune, chains, seed, progressbar, **kwargs)
        except SamplingInterrupted as stop:
            posterior, draws, chains = self._interrupted(stop, draws, chains)
        names = ["b"] + [n for g in spec.groups for n in (g.sd_name, g.effect_name)]
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
        return self.summary() if summary else None

    def _interrupted(
        self, stop: SamplingInterrupted, draws: int, chains: int
    ) -> tuple[xr.DataTree, int, int]:
        """The finished draws of an interrupted fit, draws and chains kept, with a warning.

        When no chain finished :data:`~bayesmer.sampling.MIN_KEPT_DRAWS` draws the interrupt
        is raised again and the model is left as it was.
        """
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
        """Seconds spent compiling the model and sampling (last fit)."""
        self._require_fit("timings")
        if self._sampler is None:
            raise ValueError("timings are not kept for a model loaded from a file; refit it.")
        return {"compile": self._sampler.compile_seconds, "sample": self._sampler.sample_seconds}

    def summary(self) -> summaries.Summary:
        """A printable summary: model, data, sampler, LOO, diagnostics, effects."""
        self._require_fit("summary")
        from .checks import loo

        spec = self.spec
        n_rows = spec.n_obs
        cells = (
            f"collapsed to {len(spec.cells)} cells"
            if spec.collapsed
            else "not collapsed (rows nearly all distinct)"
        )
        header = [
            f"Formula: {self._kind}({self.formula})",
            f"Family: {self.family} (link: {self.link})",
            f"Number of observations: {n_rows} ({cells})"
            + (f"; {spec.n_dropped} rows dropped for missing values" if spec.n_dropped else ""),
        ]
        for g in spec.groups:
            within = f" within {g.parent}" if g.parent else ""
            header.append(f"Groups: {g.name} {len(g.levels)}{within} ({g.parametrization})")
        header.append(
            f"Sampler: nutpie NUTS, {self.chains} chains x {self.draws} draws "
            f"(tune {self.tune}), seed {self.random_seed}"
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
            random = self.ranef_var
        fixed = self.result_fit.select("term", "estimate", "sd", "conf_low", "conf_high", "pd")
        scale = "exp() of the link scale" if self.exponentiate else "link scale"
        footer = [
            f"Fixed effects are posterior medians on the {scale}; pd is the probability "
            "of direction."
        ]
        if d.problems:
            footer.append("WARNING: " + " ".join(d.problems))
        return summaries.Summary(header, random, fixed, footer)

    # -- marginal estimates (bayesmer.emmeans) ----------------------------------------------

    def emmeans(
        self,
        marginal_var: str,
        by: str | list[str] | None = None,
        contrasts: dict[str, list[float]] | str | None = None,
        type: str = "response",
        ci: float | None = None,
        weights: str = "equal",
        re: str = "zero",
        at: dict[str, Any] | None = None,
        draws: bool = False,
    ) -> pl.DataFrame:
        """Estimated marginal means or contrasts, computed from every posterior draw.

        See :func:`bayesmer.emmeans.emmeans` for the parameters and the conventions.
        """
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
            draws=draws,
        )
        self.result_emmeans = result
        return result

    def empredict(
        self, at: dict[str, Any], type: str = "response", re: str = "zero", ci: float | None = None
    ) -> pl.DataFrame:
        """Predictions at given predictor values; see :func:`bayesmer.emmeans.empredict`."""
        self._require_fit("empredict")
        from .emmeans import empredict

        return empredict(self, at, type=type, re=re, ci=ci)

    # -- checking and reporting (bayesmer.checks, bayesmer.priors, bayesmer.plots, bayesmer.io)

    def loo(self) -> Any:
        """PSIS-LOO per original observation; see :func:`bayesmer.checks.loo`."""
        self._require_fit("loo")
        from .checks import loo

        return loo(self)

    def ppc(
        self, stat: Any = None, ci: float | None = None, random_seed: int | None = None
    ) -> pl.DataFrame:
        """Posterior predictive check table; see :func:`bayesmer.checks.ppc`."""
        self._require_fit("ppc")
        from .checks import ppc

        return ppc(self, stat=stat, ci=ci, random_seed=random_seed)

    def simulate(self, n: int = 1, random_seed: int | None = None) -> pl.DataFrame:
        """Replicated data sets from the posterior; see :func:`bayesmer.checks.simulate`."""
        self._require_fit("simulate")
        from .checks import simulate

        return simulate(self, n=n, random_seed=random_seed)

    def predict(
        self,
        data: Any = None,
        type: str = "response",
        re: str = "zero",
        summary: bool = True,
        ci: float | None = None,
    ) -> pl.DataFrame:
        """Predictions for new (or the fitted) data; see :func:`bayesmer.checks.predict`."""
        self._require_fit("predict")
        from .checks import predict

        return predict(self, data=data, type=type, re=re, summary=summary, ci=ci)

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

    def plot_prior_posterior(self, **kwargs: Any) -> Any:
        """Prior against posterior densities; see :func:`bayesmer.plots.plot_prior_posterior`."""
        self._require_fit("plot_prior_posterior")
        from .plots import plot_prior_posterior

        return plot_prior_posterior(self, **kwargs)

    def __repr__(self) -> str:
        state = "fitted" if self.posterior is not None else "not fitted"
        return f"{self._kind}({self.formula!r}, family={self.family!r}) [{state}]"


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
    """Bayesian generalized linear mixed model with random intercepts ``(1|group)``.

    Parameters are those of :class:`Model`.

    Examples
    --------
    >>> from bayesmer import glmer, load_dataset
    >>> model = glmer("survived ~ sex + (1|pclass)", data=load_dataset("titanic"))
    >>> model.fit(exponentiate=True)  # doctest: +SKIP
    >>> model.ranef  # doctest: +SKIP
    """

    _requires_groups = True
    _kind = "glmer"

    @property
    def ranef(self) -> pl.DataFrame | dict[str, pl.DataFrame]:
        """``level, (Intercept)``: group deviations (posterior medians; exp() if exponentiated).

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
        """``group, term, estimate, conf_low, conf_high``: sd of the group intercepts."""
        self._require_fit("ranef_var")
        return summaries.ranef_var_table(self.spec, self.posterior, self.ci)


Summary = summaries.Summary

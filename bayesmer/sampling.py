"""PyMC model -> posterior draws, with nutpie.

Compiling a model (PyTensor -> numba) costs seconds; :mod:`bayesmer.compiled` keeps compiled
models by structure, and a :class:`Sampler` binds one to a fit's data.

nutpie hands the sampler two C callbacks (log density with gradient, and the expansion of a
point into the traced variables), each a small numba ``cfunc`` around the PyTensor-generated
function. :func:`compile_model` is nutpie's ``compile_pymc_model`` with bayesmer's own
callbacks (:mod:`bayesmer.callbacks`), which compile faster; the draws are identical
(``tests/test_sampling.py``).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numba
import numpy as np
import pymc as pm
import xarray as xr

from . import trace as traces
from .deferred import import_deferring
from .pymc_model import nesting
from .spec import CENTRED_MIN_INFORMATION, GroupSpec, ModelSpec

#: nutpie, imported with ArviZ deferred (bayesmer converts the draws itself, see
#: :mod:`bayesmer.trace`; ArviZ loads when something else uses it).
nutpie = import_deferring("nutpie", "arviz")

logger = logging.getLogger("bayesmer")

#: nutpie's private extension module (its settings classes), None if a release drops it.
nutpie_lib = getattr(nutpie, "_lib", None)

#: Target acceptance is raised when a grouping factor has fewer levels than this (the sd
#: posterior then has a long tail that needs small steps).
FEW_GROUPS = 10

#: A factor with correlated random slopes, centred levels and fewer levels than this gets
#: target acceptance 0.99 (see :func:`default_sampler_kwargs`).
FEW_CORRELATED_LEVELS = 30

#: Crossed grouping factors get nutpie's low-rank mass matrix while one that does not carry the
#: intercept has fewer levels than this (see :func:`default_sampler_kwargs`).
LOW_RANK_MAX_LEVELS = 100

#: An interrupted fit keeps the chains that finished at least this many draws (after tuning),
#: all cut to the same length; with none, the model is left as it was before the fit.
MIN_KEPT_DRAWS = 100


class SamplingInterrupted(KeyboardInterrupt):
    """Sampling was interrupted; the finished draws come with it (see :func:`finished_draws`).

    Attributes
    ----------
    trace : xarray.DataTree
        ``posterior`` and ``sample_stats`` of the kept chains, each cut to ``draws`` draws.
    chains, draws : int
        Chains kept (zero if no chain finished :data:`MIN_KEPT_DRAWS` draws) and draws in each.
    seconds : float
        Wall time of the sampling until the interrupt.
    """

    def __init__(self, trace: xr.DataTree, chains: int, draws: int, seconds: float) -> None:
        super().__init__(f"sampling interrupted: {chains} chains of {draws} finished draws kept")
        self.trace = trace
        self.chains = chains
        self.draws = draws
        self.seconds = seconds


#: Draws kept per chain when ``fit()`` is not told otherwise.
DRAWS = 1000

#: Tuning steps per chain when ``fit()`` is not told otherwise, and for large models.
TUNE = 1000
LARGE_TUNE = 500

#: A model with at least this many group levels (all factors together) is *large*: it gets
#: :data:`LARGE_TUNE` tuning steps (:func:`default_tune`), :data:`LARGE_TARGET_ACCEPT` and
#: :data:`LARGE_MAXDEPTH` (:func:`default_sampler_kwargs`).
MANY_LEVELS = 2000

#: Target acceptance of a large model (see :func:`default_sampler_kwargs`).
LARGE_TARGET_ACCEPT = 0.65

#: Maximum tree depth of a large model: at most 2**4 - 1 = 15 leapfrog steps a draw (see
#: :func:`default_sampler_kwargs`).
LARGE_MAXDEPTH = 4

#: Draws kept per chain by default when many levels of a nested factor hold a single nested
#: level (see :func:`default_draws`).
TRADE_OFF_DRAWS = 2000

#: Share of a factor's levels holding a single nested level from which :func:`default_draws`
#: gives :data:`TRADE_OFF_DRAWS`.
SINGLE_NESTED_SHARE = 1 / 3


def single_nested(spec: ModelSpec) -> list[tuple[str, str, int, int]]:
    """Nested factors whose parents have levels holding a single one of their levels.

    Returns
    -------
    list of (parent, nested, k, n)
        ``k`` of the parent's ``n`` levels hold a single level of ``nested``.
    """
    levels = {g.name: len(g.levels) for g in spec.groups}
    out = []
    for g in spec.groups:
        if g.parent is not None:
            held = np.bincount(g.parent_level, minlength=levels[g.parent])
            if (held == 1).any():
                out.append((g.parent, g.name, int((held == 1).sum()), levels[g.parent]))
    return out


def default_draws(spec: ModelSpec) -> int:
    """Draws kept per chain when ``fit()`` is not told: :data:`DRAWS`, or
    :data:`TRADE_OFF_DRAWS` when at least :data:`SINGLE_NESTED_SHARE` of a factor's levels
    hold a single nested level (:func:`single_nested`).

    At such a level the data inform only the sum of the two deviations, and with many of them
    the two sds trade off in the posterior itself. Splitting the level from its nested one
    (:mod:`bayesmer.pymc_model`) takes the ridge out of the group means, but the sds still mix
    more slowly than the rest. Measured on grouseticks, 4 chains: ``(1|LOCATION/BROOD)`` (35
    of 63 locations hold one brood), seeds 1-16: with 1000 draws 2 fits missed the gate (tail
    ESS 263 of sd_LOCATION; R-hat 1.0104 of one location), with 2000 none (bulk ESS of the
    sds at least 1,258, tail 693, R-hat at most 1.005); ``(1|LOCATION/BROOD/INDEX)``, seeds
    1-3: 1000 draws missed the gate, 2000 passed (bulk ESS of sd_LOCATION 651-790). With 18
    of 118 broods holding one chick, ``(1|BROOD) + (1|INDEX)`` passes with 1000.
    """
    shares = [k / n for _, _, k, n in single_nested(spec)]
    return TRADE_OFF_DRAWS if any(s >= SINGLE_NESTED_SHARE for s in shares) else DRAWS


def n_levels(spec: ModelSpec) -> int:
    """Group levels of the model, all grouping factors together."""
    return sum(len(g.levels) for g in spec.groups)


def is_large(spec: ModelSpec) -> bool:
    """Whether the model has :data:`MANY_LEVELS` group levels or more and no factor of fewer
    than :data:`FEW_GROUPS` levels (whose sd needs the higher target acceptance)."""
    few = any(len(g.levels) < FEW_GROUPS for g in spec.groups)
    return n_levels(spec) >= MANY_LEVELS and not few


def default_tune(spec: ModelSpec) -> int:
    """Tuning steps per chain when ``fit()`` is not told: :data:`TUNE`, or :data:`LARGE_TUNE`
    for a large model (:func:`is_large`).

    With thousands of levels each tuning step costs as much as a draw, and nutpie's step size
    and diagonal mass matrix have settled well before 500 steps. Measured on issue 13's
    case (10^4 groups, 10^5 Bernoulli rows, 4 chains x 1000 draws): see
    benchmarks/README.md.
    """
    return LARGE_TUNE if is_large(spec) else TUNE


def sampler_line(
    spec: ModelSpec,
    chains: int,
    draws: int,
    tune: int,
    seed: int,
    sampler_kwargs: dict[str, Any],
) -> str:
    """The ``Sampler:`` line of :meth:`bayesmer.Model.summary`: chains, draws, tuning steps and
    seed, and which of them are defaults chosen for this model and why (more draws for nested
    factors whose sds trade off, :func:`default_draws`; shorter tuning and a lower target
    acceptance for a large model, :func:`default_tune`, :func:`default_sampler_kwargs`)."""
    line = f"Sampler: nutpie NUTS, {chains} chains x {draws} draws (tune {tune}), seed {seed}"
    if draws == default_draws(spec) != DRAWS:
        pairs = "; ".join(
            f"{k} of {n} {parent} levels hold a single {nested} level"
            for parent, nested, k, n in single_nested(spec)
            if k / n >= SINGLE_NESTED_SHARE
        )
        line += f" ({draws} draws by default: {pairs}, so the sds trade off)"
    if is_large(spec):
        settings = []
        if tune == LARGE_TUNE:
            settings.append(f"tune {LARGE_TUNE}")
        if sampler_kwargs.get("target_accept") == LARGE_TARGET_ACCEPT:
            settings.append(f"target acceptance {LARGE_TARGET_ACCEPT}")
        if sampler_kwargs.get("maxdepth") == LARGE_MAXDEPTH:
            settings.append(f"maximum tree depth {LARGE_MAXDEPTH}")
        if settings:
            listed = ", ".join(settings[:-1]) + " and " if len(settings) > 1 else ""
            listed += settings[-1]
            line += f" ({listed} by default: {n_levels(spec):,} group levels)"
    narrow = narrow_crossed_factor(spec)
    if narrow is not None and sampler_kwargs.get("adaptation") == "low_rank":
        line += (
            f"; low-rank mass matrix by default: the mean of the {len(narrow.levels)} "
            f"{narrow.name} effects trades off against the intercept"
        )
    return line


def narrow_crossed_factor(spec: ModelSpec) -> GroupSpec | None:
    """Of two or more crossed grouping factors, the one with the fewest levels of those that
    do not carry the intercept, if it has fewer than :data:`LOW_RANK_MAX_LEVELS`: the mean of
    its effects and the intercept trade off (see :func:`default_sampler_kwargs`)."""
    roots = [n for n in nesting(spec) if n.group.parent is None]
    if len(roots) < 2:
        return None
    # at most one chain carries the intercept, so at least one root does not
    narrow = min((n.group for n in roots if not n.carries), key=lambda g: len(g.levels))
    return narrow if len(narrow.levels) < LOW_RANK_MAX_LEVELS else None


def default_sampler_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """nutpie settings chosen from the specification.

    - ``target_accept``: nutpie's 0.8 with many groups (their sd is well identified; 0.9 cost
      25% more gradient evaluations for 1,000 groups with no gain in ESS per second). With a
      grouping factor of fewer than :data:`FEW_GROUPS` levels its sd posterior has a long
      tail: 0.95, and 0.99 when that factor also has informative levels sampled non-centred
      (its groups do not clearly differ, see :data:`bayesmer.spec.CENTRED_MAX_P_VALUE`):
      then the sd posterior reaches from zero, where centred levels would funnel, to values
      where the non-centred informative levels do. Measured on 400 Bernoulli rows in 6
      unequal groups without group variance, 12 data sets: 5 divergences in 48,000 draws at
      0.95, none at 0.98, for about 1.5 times the gradient evaluations of a sub-second fit;
      after the log density changed in its last digits (the fused likelihood of
      :mod:`bayesmer.fused`), 1 divergence in 4,000 draws at 0.98 on one of three seeds, none
      at 0.99 on seeds 1-3.
    - ``target_accept`` at least 0.9 with correlated random slopes: sleepstudy's
      ``(Days | Subject)`` (18 subjects) had 1 divergence in 4,000 draws at 0.8 with seed 1
      once its log density moved in the last digits (data as model inputs, issue 15), none at
      0.9 on seeds 1-3 (bulk ESS >= 682, 8-12 s a fit); non-centred, later, 9 on seed 1 of 8.
    - ``target_accept`` 0.99 when such a factor has centred levels
      (:data:`bayesmer.spec.SLOPES_CENTRED_MIN_SIGNAL`) and fewer than
      :data:`FEW_CORRELATED_LEVELS` levels: its levels' joint density
      ``MvNormal(centre, diag(sd) R diag(sd))`` has a funnel towards correlations of +-1, as
      deep as the levels are few. Sleepstudy with its 18 subjects centred, seeds 1-24: at
      0.9, 1 divergence on 2 of 8 seeds; at 0.95, on 1 of 12; at 0.97, 2 and 7 (at
      correlation 0.98) on 2 of 16; at 0.99, none on 24 (bulk ESS 750-2,399, sampling 5-11 s
      instead of 2.5 s). 40 centred levels needed no more than 0.9 (3 data sets x seeds 1-3,
      no divergences, bulk ESS >= 1,926).
    - ``target_accept`` :data:`LARGE_TARGET_ACCEPT` (0.65) for a large model
      (:func:`is_large`: thousands of levels, none of them in a factor of few levels). In
      thousands of dimensions the step size NUTS needs for a given acceptance shrinks (as
      the dimension to the -1/4), and the number of leapfrog steps per draw doubles each
      time a trajectory no longer reaches its U-turn within one tree depth; 0.65 is near the
      optimal acceptance of HMC in high dimension (Beskos et al. 2013). Issue 13's case
      (10^4 groups): step size 0.16 and 31 steps per draw at 0.8, see benchmarks/README.md
      for 0.65.
    - ``maxdepth`` :data:`LARGE_MAXDEPTH` (4) for a large model: at most 15 leapfrog steps a
      draw. With a step size near 0.2 (thousands of dimensions), a trajectory reaches its
      U-turn after about pi / 0.2 = 15 steps, so NUTS's doubling makes trees of depth 4 (15
      steps) or 5 (31) at random; the longer ones cost twice as much and decorrelate little
      more. Issue 13's case, seeds 1-3 (4 chains x 1000 draws): 20.5 -> 15 steps a draw,
      sampling 50.8 -> 32 s, bulk ESS of ``sd_g`` 593 -> 646-748, of the fixed effects
      2,680-3,415 -> 1,311-2,575 (far more per second), R-hat at most 1.0072 for them, no
      divergences; 2,500 groups x 40 rows: the same ESS either way (4,000-9,700).
    - ``adaptation='low_rank'`` with two or more crossed (not nested) grouping factors, one
      of those that do not carry the intercept having fewer than
      :data:`LOW_RANK_MAX_LEVELS` levels: only one chain of nested factors can carry the
      intercept (:func:`bayesmer.pymc_model.nesting`), so the mean of another's effects
      trades off against it along one direction, which nutpie's low-rank mass matrix
      learns (30 subjects x 30 items: min bulk ESS 606-877 per chain of 1,000 draws,
      94-403 with the diagonal mass matrix). With more levels that ridge is narrow (its
      prior sd is the factor's sd over the square root of its levels) and the diagonal mass
      matrix does (312 subjects x 24 items, the items carrying the intercept: 434-626 per
      chain), while nutpie's low-rank tuning costs far more there (about 70 ms a tuning
      step at 336 levels, 75 s a chain, against 3.4 s in all with the diagonal one).
      Nested factors are centred on each other instead (:mod:`bayesmer.pymc_model`) and
      keep the diagonal one (grouseticks, broods in locations: 6 s instead of 50 s).
    """
    out: dict[str, Any] = {"target_accept": LARGE_TARGET_ACCEPT if is_large(spec) else 0.8}
    if is_large(spec):
        out["maxdepth"] = LARGE_MAXDEPTH
    few = [g for g in spec.groups if len(g.levels) < FEW_GROUPS]
    if few:
        both_funnels = any(
            ((g.information >= CENTRED_MIN_INFORMATION) & ~g.centred).any() for g in few
        )
        out["target_accept"] = 0.99 if both_funnels else 0.95
    elif any(g.cor_pairs for g in spec.groups) and not is_large(spec):
        centred_few = any(
            g.cor_pairs and g.centred.any() and len(g.levels) < FEW_CORRELATED_LEVELS
            for g in spec.groups
        )
        out["target_accept"] = max(out["target_accept"], 0.99 if centred_few else 0.9)
    if narrow_crossed_factor(spec) is not None:
        out["adaptation"] = "low_rank"
    return out


#: Arguments of :func:`nutpie.sample` that bayesmer sets itself, with what to use instead.
_SET_BY_BAYESMER = {
    "compiled_model": "fit() compiles the model",
    "draws": "use draws=",
    "num_draws": "use draws=",
    "tune": "use tune=",
    "num_tune": "use tune=",
    "chains": "use chains=",
    "num_chains": "use chains=",
    "cores": "chains run on as many cores as there are, up to one per chain",
    "seed": "use random_seed=",
    "progress_bar": "use progressbar=",
    "save_warmup": "bayesmer keeps the draws after tuning only",
    "return_raw_trace": "bayesmer reads the draws as an xarray DataTree",
    "blocking": "fit() waits for the draws",
    "zarr_store": "the draws are kept in memory (save them with bayesmer.save_model)",
}
#: nutpie's deprecated names it still takes (it maps them onto ``adaptation``).
_DEPRECATED = ("low_rank_modified_mass_matrix", "transform_adapt", "use_grad_based_mass_matrix")


def check_sampler_kwargs(kwargs: dict[str, Any]) -> None:
    """Check keyword arguments meant for nutpie before anything is compiled.

    :func:`nutpie.sample` has named arguments and hands the rest to its settings object,
    which rejects an unknown one only when sampling starts. Here the named arguments come
    from the signature of :func:`nutpie.sample`, and the others are tried on a throwaway
    settings object of the same sampler and adaptation (the one nutpie would build; that
    class is in nutpie's private ``_lib``, nutpie offers no public list of its settings).

    Raises
    ------
    TypeError
        Naming the first argument nutpie would not take, or one bayesmer sets itself.
    """
    for key in kwargs:
        if key in _SET_BY_BAYESMER:
            raise TypeError(f"sampler setting {key!r} is set by bayesmer: {_SET_BY_BAYESMER[key]}.")
    named = set(inspect.signature(nutpie.sample).parameters) - {"kwargs"}
    sampler = kwargs.get("sampler", "nuts")
    adaptation = kwargs.get("adaptation", "diag")
    classes = {"nuts": "PyNutsSettings", "mclmc": "PyMclmcSettings"}
    if sampler not in classes:
        raise TypeError(f"sampler must be one of {sorted(classes)}, got {sampler!r}.")
    kinds = {"diag": "Diag", "draw_diag": "Diag", "low_rank": "LowRank", "flow": "Flow"}
    if adaptation not in kinds:
        raise TypeError(f"adaptation must be one of {sorted(kinds)}, got {adaptation!r}.")
    settings = _settings_object(classes[sampler], kinds[adaptation])
    if settings is None:
        return  # nutpie's private settings classes changed: nutpie checks the rest itself
    for key, value in kwargs.items():
        if key in named or key in _DEPRECATED:
            continue
        try:
            settings.update({key: value})
        except AttributeError:
            raise TypeError(
                f"Unknown sampler setting {key!r}: fit() passes extra keyword arguments to "
                "nutpie.sample (e.g. target_accept, maxdepth, adaptation), which does not "
                "know it."
            ) from None
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"nutpie does not accept the sampler setting {key}={value!r}: {err}."
            ) from None


def _settings_object(class_name: str, kind: str) -> Any:
    """A throwaway nutpie settings object, or None when nutpie's private classes differ.

    The classes live in nutpie's private ``_lib``; when a nutpie release renames them, the
    extra settings are left for nutpie to check when sampling starts (after compiling)
    rather than failing here.
    """
    factory = getattr(getattr(nutpie_lib, class_name, None), kind, None)
    if factory is None:
        return None
    try:
        return factory(0)
    except (TypeError, ValueError):
        return None


@dataclass
class Sampler:
    """A compiled model with one fit's data, and the timings of its last use.

    Made by :func:`bayesmer.compiled.sampler`, which finds or compiles the compilation.

    Attributes
    ----------
    compilation : bayesmer.compiled.Compilation
        Shared by every model of the same structure.
    data : dict
        The values of the model's data inputs (``pm.Data``), by name.
    coords : dict
        The model's coordinates (term names, levels): the draws are labelled with them.
    compile_seconds : float
        Time spent compiling, or finding the compilation in the cache.
    source : {'compiled', 'callbacks', 'disk', 'memory'}
        Where the compilation came from (see :func:`bayesmer.compiled.sampler`).
    sample_seconds : float
        Wall time of the last :meth:`sample` call.
    """

    compilation: Any
    data: dict[str, np.ndarray]
    coords: dict[str, list[Any]]
    compile_seconds: float
    source: str
    sample_seconds: float = field(default=0.0)

    def sample(
        self,
        draws: int,
        tune: int,
        chains: int,
        random_seed: int,
        progressbar: bool,
        keep: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> xr.DataTree:
        """Draw from the posterior.

        Parameters
        ----------
        draws, tune, chains : int
            Draws kept per chain, tuning steps per chain, number of chains.
        random_seed : int
        progressbar : bool
        keep : sequence of str, optional
            The variables whose draws are kept (a fit keeps the ones it reports,
            :attr:`bayesmer.spec.ModelSpec.reported`); all when None. The latent variables of
            the parametrization (the standardised effects of thousands of levels) are then
            never converted: a fit with many groups holds one copy of their draws, not two.
        **kwargs
            Passed to :func:`nutpie.sample` (``target_accept``, ``adaptation``, ``maxdepth``...).

        Returns
        -------
        xarray.DataTree
            With ``posterior`` and ``sample_stats`` groups.

        Raises
        ------
        SamplingInterrupted
            On a keyboard interrupt (Ctrl-C), with the draws every chain finished.
        """
        with self.compilation.bound(self.data) as compiled:
            try:
                trace = self._sample(
                    compiled, draws, tune, chains, random_seed, progressbar, keep, kwargs
                )
            except SamplingInterrupted as stop:
                stop.trace = self._completed(stop.trace, keep)
                raise
            # after _sample: nutpie's raw trace is freed by now
            return self._completed(trace, keep)

    def _completed(self, trace: xr.DataTree, keep: Sequence[str] | None) -> xr.DataTree:
        """The trace with the kept deterministics nutpie did not store (a model compiled
        without them, see :func:`compile_model`) computed from the free variables' draws,
        and the variables not kept left out."""
        if keep is None:
            return trace
        posterior = trace["posterior"].to_dataset()
        missing = [name for name in keep if name not in posterior.data_vars]
        if missing:
            posterior = posterior.assign(self._deterministics(posterior, missing, keep))
        trace["posterior"] = posterior[[name for name in keep if name in posterior.data_vars]]
        return trace

    def _deterministics(
        self, posterior: xr.Dataset, names: list[str], keep: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Draws of the model's deterministics ``names`` from the draws of its free variables
        in ``posterior`` (this fit's data are set on the model: inside :meth:`sample`). The
        arrays of free variables not in ``keep`` may be overwritten (see below)."""
        model = self.compilation.model
        free = [rv.name for rv in model.free_RVs]
        with exact_arithmetic():
            fn = model.compile_fn(
                [model[name] for name in names], inputs=model.free_RVs, on_unused_input="ignore"
            )
        values = {name: posterior[name].values for name in free}
        n_chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
        # A free variable that is not reported (a large model's standardised group effects)
        # lends its array to a deterministic of the same shape (their group effects): each
        # draw's inputs are read before its outputs are written, and the pair is held once.
        spare = [name for name in free if name not in keep and values[name].dtype == np.float64]
        out: list[np.ndarray] = []
        for c in range(n_chains):
            for d in range(n_draws):
                results = fn({name: value[c, d] for name, value in values.items()})
                if not out:
                    out = [self._output_array(values, spare, n_chains, n_draws, r) for r in results]
                for array, result in zip(out, results, strict=True):
                    array[c, d] = result
        variables = {}
        for name, array in zip(names, out, strict=True):
            dims = list(model.named_vars_to_dims.get(name) or ())
            dims += [f"{name}_dim_{k}" for k in range(len(dims), array.ndim - 2)]
            coords = {d: self.coords[d] for d in dims if d in self.coords}
            variables[name] = xr.DataArray(array, dims=["chain", "draw", *dims], coords=coords)
        return variables

    @staticmethod
    def _output_array(
        values: dict[str, np.ndarray], spare: list[str], chains: int, draws: int, result: Any
    ) -> np.ndarray:
        """Where a deterministic's draws go: the array of a spare free variable of its shape
        (taken off ``spare``), else a new one."""
        shape = (chains, draws, *np.shape(result))
        for name in spare:
            if values[name].shape == shape and values[name].flags.writeable:
                spare.remove(name)
                return values[name]
        return np.empty(shape)

    def _labelled(self, trace: xr.DataTree) -> xr.DataTree:
        """The draws labelled with this model's coordinates (the compiled model may have been
        another model's of the same structure, with other level names)."""
        return trace.map_over_datasets(
            lambda ds: ds.assign_coords({d: self.coords[d] for d in ds.dims if d in self.coords})
        )

    def _sample(
        self,
        compiled: Any,
        draws: int,
        tune: int,
        chains: int,
        random_seed: int,
        progressbar: bool,
        keep: Sequence[str] | None,
        kwargs: dict[str, Any],
    ) -> xr.DataTree:
        cores = max(1, min(chains, os.cpu_count() or 1))
        start = time.perf_counter()
        settings = {
            "draws": draws,
            "tune": tune,
            "chains": chains,
            "cores": cores,
            "seed": random_seed,
            "progress_bar": progressbar,
            "save_warmup": False,
            **kwargs,
        }
        running = nutpie.sample(compiled, blocking=False, return_raw_trace=True, **settings)
        try:
            trace = self._converted(running.wait(), compiled, settings, keep)
        except KeyboardInterrupt:
            # nutpie's blocking sample() would return the aborted trace as if it were complete,
            # its unfinished draws NaN
            raw = running.abort()
            if not callable(getattr(raw, "get_arrow_trace", None)):
                raise  # no draws to keep: the model stays as it was
            aborted = self._converted(raw, compiled, settings, keep)
            kept, n_chains, n_draws = finished_draws(aborted)
            raise SamplingInterrupted(
                self._labelled(kept), n_chains, n_draws, time.perf_counter() - start
            ) from None
        except Exception:
            running.cancel()
            raise
        self.sample_seconds = time.perf_counter() - start
        return self._labelled(trace)

    @staticmethod
    def _converted(
        raw: Any, compiled: Any, settings: dict[str, Any], keep: Sequence[str] | None
    ) -> xr.DataTree:
        """nutpie's raw trace (``return_raw_trace=True``) as the DataTree nutpie would return
        (:func:`bayesmer.trace.to_datatree`). When nutpie stored every variable in ``keep``,
        only those are converted; else (a model compiled without its deterministics) the
        free variables are converted too, for :meth:`_completed` to compute the rest from.

        A raw trace without the Arrow batches nutpie 0.16 gives (``get_arrow_trace``) is
        sampled again, with the same settings and seed, by nutpie's own conversion (the same
        draws, ArviZ imported), with a one-line note on the ``bayesmer`` logger.
        """
        if not callable(getattr(raw, "get_arrow_trace", None)):
            logger.info(
                "nutpie %s's raw trace has no Arrow batches: sampled again with its conversion.",
                getattr(nutpie, "__version__", "?"),
            )
            return nutpie.sample(compiled, **settings)
        draw_batches, stat_batches = raw.get_arrow_trace()
        skip = set(compiled.reparameterized_names or ())
        if keep is not None and draw_batches:
            stored = draw_batches[0].column_names
            if set(keep) <= set(stored):
                skip |= {name for name in stored if name not in keep}
            # else the free variables are converted too: the missing deterministics are
            # computed from them (Sampler._completed)
        return traces.to_datatree(
            draw_batches,
            stat_batches,
            compiled.coords,
            skip_draws=sorted(skip),
            skip_stats=traces.skipped_stats(settings),
            attrs={
                "inference_library": "nutpie",
                "inference_library_version": getattr(nutpie, "__version__", "?"),
            },
        )


def finished_draws(trace: xr.DataTree) -> tuple[xr.DataTree, int, int]:
    """The finished draws of an aborted nutpie trace: the trace, chains kept, draws per chain.

    nutpie pads each chain's unfinished draws with NaN (zeros for integer statistics) up to
    the longest chain, and runs at most one chain per core at a time (with more chains than
    cores, the last ones may not have started). The chains that finished at least
    :data:`MIN_KEPT_DRAWS` draws are kept, renumbered from 0, each cut to the shortest one's
    length.
    """
    stats = trace["sample_stats"]
    if stats.sizes.get("draw", 0) == 0:
        return trace, 0, 0
    finished = ~np.isnan(stats["step_size"].values)  # (chain, draw)
    lengths = np.where(finished.all(axis=1), finished.shape[1], finished.argmin(axis=1))
    keep = np.flatnonzero(lengths >= MIN_KEPT_DRAWS)
    if len(keep) == 0:
        return trace, 0, 0
    n = int(lengths[keep].min())
    cut = trace.isel(chain=keep, draw=slice(0, n), missing_dims="ignore")
    chain = np.arange(len(keep))
    cut = cut.map_over_datasets(
        lambda ds: ds.assign_coords(chain=chain) if "chain" in ds.dims else ds
    )
    return cut, len(keep), n


def sample_prior(model: pm.Model, draws: int, random_seed: int | None) -> xr.DataTree:
    """Forward draws from the prior of a model (no MCMC needed).

    PyMC's log line naming the sampled variables is kept quiet: they are bayesmer's internal
    parameters, not the reported ones.
    """
    pymc_log = logging.getLogger("pymc")
    level = pymc_log.level
    pymc_log.setLevel(logging.WARNING)
    try:
        with model:
            return pm.sample_prior_predictive(draws=draws, random_seed=random_seed)
    finally:
        pymc_log.setLevel(level)


# -- compiling -------------------------------------------------------------------------------

#: Signatures nutpie expects of the two callbacks.
_LOGP_SIGNATURE = numba.types.int64(
    numba.types.uint64,
    numba.types.CPointer(numba.types.double),
    numba.types.CPointer(numba.types.double),
    numba.types.CPointer(numba.types.double),
    numba.types.voidptr,
)
_EXPAND_SIGNATURE = numba.types.int64(
    numba.types.uint64,
    numba.types.uint64,
    numba.types.CPointer(numba.types.double),
    numba.types.CPointer(numba.types.double),
    numba.types.voidptr,
)

#: The callbacks' source, loaded as a fresh module per compiled model (or a copy of it).
CALLBACKS_FILE = Path(__file__).with_name("callbacks.py")

_PATCH_LOCK = threading.Lock()


@contextmanager
def exact_arithmetic() -> Iterator[None]:
    """PyTensor's numba functions compiled without fast-math flags (PyTensor's setting
    ``numba__fastmath``), as bayesmer's own kernels are (:data:`bayesmer.fused.KERNEL_FLAGS`):
    a flag that lets the compiler change results makes a model's log density differ in its
    last bits between the process that compiled it and one that loads it from a cache, and
    its seeded draws with them."""
    import pytensor

    with pytensor.config.change_flags(numba__fastmath=False):
        yield


class UnexpectedLayout(ValueError):
    """nutpie's shared data are not the one float64 vector bayesmer's callbacks read."""


def single_input(user_data: np.ndarray, shared_keys: list, shared_data: dict) -> None:
    """Check that the model has one shared input, a float64 vector, in nutpie's layout.

    nutpie (0.16) passes the callbacks a record ``shared: (data, size, shape)`` with one field
    per shared variable; :mod:`bayesmer.callbacks` reads the first two (address and length)
    of a record with one float64 vector.

    Raises
    ------
    UnexpectedLayout
        For any other number, type or layout of the shared inputs.
    """
    if len(shared_keys) != 1 or set(shared_data) != set(shared_keys):
        raise UnexpectedLayout(f"{len(shared_data)} shared inputs, not 1")
    (key,) = shared_keys
    value = shared_data[key]
    expected = np.dtype(
        [
            (
                "shared",
                [
                    ("data", [(key, np.uintp)]),
                    ("size", [(key, np.uintp)]),
                    ("shape", [(key, np.uint, (1,))]),
                ],
            )
        ]
    )
    if value.dtype != np.float64 or value.ndim != 1 or user_data.dtype != expected:
        raise UnexpectedLayout(f"shared input {value.dtype} {value.shape}, {user_data.dtype}")


def _load_callbacks(path: Path | None) -> ModuleType:
    """A fresh module of :data:`CALLBACKS_FILE`, or of a structure's copy of it at ``path``.

    A copy's module is registered in ``sys.modules`` under the copy's name: numba's cache
    rebuilds a loaded function's environment by importing its module.
    """
    name = f"bayesmer_{path.stem}" if path is not None else f"bayesmer_callbacks_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path or CALLBACKS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if path is not None:
        sys.modules[name] = module
    return module


def _factories(module: ModuleType) -> tuple[Callable, Callable]:
    """nutpie's two callback factories, giving ``module``'s callbacks for this model."""

    def logp_factory(n_dim, logp_fn, user_data, shared_keys, shared_data):
        single_input(user_data, shared_keys, shared_data)
        module.n_dim, module.logp_inner = n_dim, logp_fn
        return module.logp_callback, _LOGP_SIGNATURE

    def expand_factory(n_dim, n_expanded, expand_fn, user_data, shared_var_keys, shared_data):
        module.n_expanded = n_expanded
        if shared_var_keys:
            single_input(user_data, shared_var_keys, shared_data)
            module.expand_inner = expand_fn
        else:
            # traced variables that need no data (the free variables only): the callback
            # still gets the user-data record, which the log density's check has vetted
            module.expand_of_point = expand_fn
            module.expand_inner = module.expand_without_data
        return module.expand_callback, _EXPAND_SIGNATURE

    return logp_factory, expand_factory


#: nutpie's private factories that :func:`compile_model` swaps, with their argument names.
_NUTPIE_FACTORIES = {
    "_make_c_logp_func": ["n_dim", "logp_fn", "user_data", "shared_keys", "shared_data"],
    "_make_c_expand_func": [
        "n_dim",
        "n_expanded",
        "expand_fn",
        "user_data",
        "shared_var_keys",
        "shared_data",
    ],
}


def loop_callbacks_supported() -> bool:
    """Whether this nutpie has the private callback factories bayesmer replaces, as 0.16 has.

    They are looked up by name and their arguments compared; a nutpie that renamed or
    re-shaped them is compiled as it is.
    """
    module = nutpie.compile_pymc
    for name, arguments in _NUTPIE_FACTORIES.items():
        factory = getattr(module, name, None)
        if not callable(factory):
            return False
        try:
            if list(inspect.signature(factory).parameters) != arguments:
                return False
        except (TypeError, ValueError):
            return False
    return True


@contextmanager
def _loop_callbacks(module: ModuleType) -> Iterator[None]:
    """Have nutpie build its C callbacks from ``module`` (a :mod:`bayesmer.callbacks`).

    nutpie (0.16) looks both factories up in its module when it compiles; they are swapped in
    for the duration of one compilation, under a lock so concurrent compilations cannot see a
    half-restored module.
    """
    nutpie_module = nutpie.compile_pymc
    with _PATCH_LOCK:
        saved = nutpie_module._make_c_logp_func, nutpie_module._make_c_expand_func
        nutpie_module._make_c_logp_func, nutpie_module._make_c_expand_func = _factories(module)
        try:
            yield
        finally:
            nutpie_module._make_c_logp_func, nutpie_module._make_c_expand_func = saved


def compile_model(
    model: pm.Model, callbacks_file: Path | None = None, deterministics: bool = True
) -> Any:
    """``nutpie.compile_pymc_model(model, backend="numba")`` with faster-compiling callbacks.

    The callbacks (:mod:`bayesmer.callbacks`) compute the same log density and gradient as
    nutpie's (so seeded draws are the same) but compile in a fraction of the time. When this
    nutpie does not have the private factories they replace (:func:`loop_callbacks_supported`)
    or the model's shared inputs are not the one data vector they read
    (:func:`single_input`), the model is compiled by stock nutpie, with a one-line note on
    the ``bayesmer`` logger.

    Parameters
    ----------
    model : pm.Model
    callbacks_file : Path, optional
        A copy of :data:`CALLBACKS_FILE` that is this model structure's own: the callbacks are
        then compiled with numba's cache (``cache=True``), which keeps them next to it, and
        loaded from there when they were compiled before (``compiled_logp_func.cache_hits``).
    deterministics : bool, default True
        Whether nutpie stores the deterministic variables' draws. Without them it stores the
        free variables only (``var_names`` their names), and :meth:`Sampler.sample` computes the
        deterministics a fit keeps from their draws after sampling: nutpie holds every
        stored variable's tuning and kept draws until sampling ends, so a model with
        thousands of group effects then holds one copy of them instead of two.

    Returns
    -------
    nutpie CompiledPyMCModel
    """
    with exact_arithmetic():
        return _compile_model(model, callbacks_file, deterministics)


def _compile_model(model: pm.Model, callbacks_file: Path | None, deterministics: bool) -> Any:
    """:func:`compile_model` under the settings it compiles with."""
    var_names = None if deterministics else [rv.name for rv in model.free_RVs]
    if not loop_callbacks_supported():
        logger.info(
            "nutpie %s has no callback factories bayesmer knows: compiling with stock nutpie.",
            getattr(nutpie, "__version__", "?"),
        )
        return nutpie.compile_pymc_model(model, backend="numba", var_names=var_names)
    module = _load_callbacks(callbacks_file)
    try:
        with _loop_callbacks(module):
            return nutpie.compile_pymc_model(
                model, backend="numba", cache=callbacks_file is not None, var_names=var_names
            )
    except UnexpectedLayout as err:
        logger.info("bayesmer's callbacks do not fit this model (%s): stock nutpie.", err)
        return nutpie.compile_pymc_model(model, backend="numba", var_names=var_names)

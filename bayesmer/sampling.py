"""PyMC model -> posterior draws, with nutpie.

Compiling a model (PyTensor -> numba) costs seconds; :class:`Sampler` keeps the compiled model
so refitting the same specification (new seed, more draws) skips it.

nutpie hands the sampler two C callbacks (log density with gradient, and the expansion of a
point into the traced variables), each a small numba ``cfunc`` around the PyTensor-generated
function. nutpie's own wrappers copy the results with ``out[...] = grad`` and check them with
``np.all(np.isfinite(out))``; numba compiles those generic broadcasting array operations from
scratch in every new process, which cost about 3 s of the 5-6 s it took to compile the titanic
glmer. :func:`compile_model` builds the same callbacks with plain loops instead (measured:
compile 2.0-2.7 s), and is otherwise nutpie's ``compile_pymc_model`` unchanged; the draws are
identical (``tests/test_sampling.py``).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import nutpie
import nutpie.compile_pymc
import pymc as pm
import xarray as xr

from .spec import CENTRED_MIN_INFORMATION, ModelSpec

logger = logging.getLogger("bayesmer")

#: nutpie's private extension module (its settings classes), None if a release drops it.
nutpie_lib = getattr(nutpie, "_lib", None)

#: Target acceptance is raised when a grouping factor has fewer levels than this (the sd
#: posterior then has a long tail that needs small steps).
FEW_GROUPS = 10

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


def default_sampler_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """nutpie settings chosen from the specification.

    - ``target_accept``: nutpie's 0.8 with many groups (their sd is well identified; 0.9 cost
      25% more gradient evaluations for 1,000 groups with no gain in ESS per second). With a
      grouping factor of fewer than :data:`FEW_GROUPS` levels its sd posterior has a long
      tail: 0.95, and 0.98 when that factor also has informative levels sampled non-centred
      (its groups do not clearly differ, see :data:`bayesmer.spec.CENTRED_MAX_P_VALUE`):
      then the sd posterior reaches from zero, where centred levels would funnel, to values
      where the non-centred informative levels do. Measured on 400 Bernoulli rows in 6
      unequal groups without group variance, 12 data sets: 5 divergences in 48,000 draws at
      0.95, none at 0.98, for about 1.5 times the gradient evaluations of a sub-second fit.
    - ``adaptation='low_rank'`` with two or more crossed (not nested) grouping factors: only
      one chain of nested factors can carry the intercept, so the mean of the others'
      effects trades off against it along one direction, which nutpie's low-rank mass
      matrix learns (measured on crossed synthetic data: min bulk ESS 600-870 instead of
      60-95 with the diagonal mass matrix). Nested factors are centred on each other instead
      (:mod:`bayesmer.pymc_model`) and keep the diagonal one, which costs far less per step
      with hundreds of levels (grouseticks, broods in locations: 6 s instead of 50 s).
    """
    out: dict[str, Any] = {"target_accept": 0.8}
    few = [g for g in spec.groups if len(g.levels) < FEW_GROUPS]
    if few:
        both_funnels = any(
            ((g.information >= CENTRED_MIN_INFORMATION) & ~g.centred).any() for g in few
        )
        out["target_accept"] = 0.98 if both_funnels else 0.95
    if sum(g.parent is None for g in spec.groups) >= 2:
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
    """A compiled model and the timings of its last use.

    Attributes
    ----------
    model : pm.Model
    compiled : nutpie CompiledModel
    compile_seconds : float
    sample_seconds : float
        Wall time of the last :meth:`sample` call.
    """

    model: pm.Model
    compiled: Any
    compile_seconds: float
    sample_seconds: float = field(default=0.0)

    @classmethod
    def compile(cls, model: pm.Model) -> Sampler:
        """Compile a PyMC model for nutpie (numba backend, see :func:`compile_model`)."""
        start = time.perf_counter()
        compiled = compile_model(model)
        return cls(model, compiled, time.perf_counter() - start)

    def sample(
        self,
        draws: int,
        tune: int,
        chains: int,
        random_seed: int,
        progressbar: bool,
        **kwargs: Any,
    ) -> xr.DataTree:
        """Draw from the posterior.

        Parameters
        ----------
        draws, tune, chains : int
            Draws kept per chain, tuning steps per chain, number of chains.
        random_seed : int
        progressbar : bool
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
        cores = max(1, min(chains, os.cpu_count() or 1))
        start = time.perf_counter()
        running = nutpie.sample(
            self.compiled,
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            seed=random_seed,
            progress_bar=progressbar,
            save_warmup=False,
            blocking=False,
            **kwargs,
        )
        try:
            trace = running.wait()
        except KeyboardInterrupt:
            # nutpie's blocking sample() would return the aborted trace as if it were complete,
            # its unfinished draws NaN
            with warnings.catch_warnings():
                # arviz's complaint about a trace with fewer draws than chains (none finished)
                warnings.filterwarnings("ignore", "Found chain dimension", UserWarning)
                aborted = running.abort()
            kept, n_chains, n_draws = finished_draws(aborted)
            raise SamplingInterrupted(
                kept, n_chains, n_draws, time.perf_counter() - start
            ) from None
        except Exception:
            running.cancel()
            raise
        self.sample_seconds = time.perf_counter() - start
        return trace


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


def _logp_callback(
    n_dim: int, logp_fn: Callable, user_data: np.ndarray, shared_keys: list, shared_data: dict
) -> tuple[Callable, Any]:
    """Log density and gradient callback, with nutpie's return codes.

    0 ok, -1 wrong dimension, 1 error in the log density, 3 non-finite gradient, 4 non-finite
    log density.
    """
    extract = nutpie.compile_pymc.make_extraction_fn(
        logp_fn, shared_data, shared_keys, user_data.dtype
    )

    def logp_callback(dim, x_, out_, logp_, user_data_):  # pragma: no cover - numba code
        if dim != n_dim:
            return -1
        x = numba.carray(x_, (n_dim,))
        try:
            logp_val, grad = extract(x, user_data_)
        except Exception:  # noqa: BLE001 - a cfunc cannot raise: report a failed evaluation
            return 1
        logp_[0] = logp_val
        finite = True
        for i in range(n_dim):
            out_[i] = grad[i]
            if not np.isfinite(grad[i]):
                finite = False
        if not finite:
            return 3
        if not np.isfinite(logp_val):
            return 4
        return 0

    return logp_callback, _LOGP_SIGNATURE


def _expand_callback(
    n_dim: int,
    n_expanded: int,
    expand_fn: Callable,
    user_data: np.ndarray,
    shared_keys: list,
    shared_data: dict,
) -> tuple[Callable, Any]:
    """Callback writing the traced variables of a point (-1 wrong sizes, -2 error)."""
    extract = nutpie.compile_pymc.make_extraction_fn(
        expand_fn, shared_data, shared_keys, user_data.dtype
    )

    def expand_callback(dim, expanded, x_, out_, user_data_):  # pragma: no cover - numba code
        if dim != n_dim or expanded != n_expanded:
            return -1
        x = numba.carray(x_, (n_dim,))
        try:
            (values,) = extract(x, user_data_)
        except Exception:  # noqa: BLE001 - a cfunc cannot raise: report a failed evaluation
            return -2
        for i in range(n_expanded):
            out_[i] = values[i]
        return 0

    return expand_callback, _EXPAND_SIGNATURE


_PATCH_LOCK = threading.Lock()


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

    They (and ``make_extraction_fn``, which the replacements call) are looked up by name and
    their arguments compared; a nutpie that renamed or re-shaped them is compiled as it is.
    """
    module = nutpie.compile_pymc
    if not callable(getattr(module, "make_extraction_fn", None)):
        return False
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
def _loop_callbacks() -> Iterator[None]:
    """Have nutpie build its C callbacks with :func:`_logp_callback` and :func:`_expand_callback`.

    nutpie (0.16) looks both factories up in its module when it compiles; they are swapped in
    for the duration of one compilation, under a lock so concurrent compilations cannot see a
    half-restored module.
    """
    module = nutpie.compile_pymc
    with _PATCH_LOCK:
        saved = module._make_c_logp_func, module._make_c_expand_func
        module._make_c_logp_func, module._make_c_expand_func = _logp_callback, _expand_callback
        try:
            yield
        finally:
            module._make_c_logp_func, module._make_c_expand_func = saved


def compile_model(model: pm.Model) -> Any:
    """``nutpie.compile_pymc_model(model, backend="numba")`` with faster-compiling callbacks.

    The callbacks compute the same log density and gradient as nutpie's (so seeded draws are
    the same) but compile about 3 s faster per process. When this nutpie does not have the
    private factories they replace (:func:`loop_callbacks_supported`), the model is compiled
    by stock nutpie, with a one-line note on the ``bayesmer`` logger.

    Parameters
    ----------
    model : pm.Model

    Returns
    -------
    nutpie CompiledPyMCModel
    """
    if not loop_callbacks_supported():
        logger.info(
            "nutpie %s has no callback factories bayesmer knows: compiling with stock nutpie.",
            getattr(nutpie, "__version__", "?"),
        )
        return nutpie.compile_pymc_model(model, backend="numba")
    with _loop_callbacks():
        return nutpie.compile_pymc_model(model, backend="numba")

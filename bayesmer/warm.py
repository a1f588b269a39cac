"""A compiled model rebuilt from the disk cache, with nothing compiled.

nutpie's compiled model (``nutpie.compile_pymc.CompiledPyMCModel``) is, for sampling, two C
callbacks plus what describes the model around them: the sizes, names and shapes of its
variables, its dims and coordinates, its data and a function giving each chain's initial
point. For a model structure compiled before, the callbacks load from numba's cache
(:mod:`bayesmer.compiled`), with the PyTensor functions they call compiled into them; the
rest is structural and is written next to them, as JSON (:func:`write_entry`), when the
structure is first compiled. :func:`rebuild` puts the two together with the new model's
data and coordinates, skipping what a compile costs besides (PyTensor's rewrites and numba
code generation of the log density and expansion functions: 0.5-0.8 s of the seed script).

The initial points come from PyMC's :func:`pymc.initial_point.make_initial_point_fn` with
nutpie's defaults (support points jittered by U(-1, 1), the same seeds), so the draws are the
same as after a compile. The model's ``logp_func`` and ``expand_func`` (PyTensor functions
nutpie keeps for inspection; it samples through the callbacks) are None.

``CompiledPyMCModel`` is a dataclass of nutpie's (0.16) with private fields (``_n_dim``,
``_shapes``, ``_coords``); :func:`supported` checks its fields and the ``make_user_data``
helper before use, and :func:`rebuild` returns None (the model is then compiled as before)
when they differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

from .sampling import (
    _EXPAND_SIGNATURE,
    _LOGP_SIGNATURE,
    UnexpectedLayout,
    _load_callbacks,
    nutpie,
    single_input,
)

#: The fields of nutpie's ``CompiledPyMCModel`` :func:`rebuild` fills.
NUTPIE_FIELDS = frozenset(
    {
        "dims",
        "reparameterized_names",
        "compiled_logp_func",
        "compiled_expand_func",
        "initial_point_func",
        "shared_data",
        "shared_var_keys",
        "user_data",
        "n_expanded",
        "shape_info",
        "logp_func",
        "expand_func",
        "_n_dim",
        "_shapes",
        "_coords",
        "_transform_adapt_args",
    }
)

#: Version of the entry's layout; an entry of another is rebuilt.
ENTRY_VERSION = 1

#: What an entry holds (:func:`write_entry`).
ENTRY_KEYS = frozenset(
    {
        "version",
        "n_dim",
        "n_expanded",
        "names",
        "slices",
        "shapes",
        "n_free",
        "dims",
        "reparameterized",
        "coords",
        "extra_coords",
        "shared",
    }
)


def supported() -> bool:
    """Whether this nutpie's compiled model has the fields and helper :func:`rebuild` uses."""
    module = nutpie.compile_pymc
    cls = getattr(module, "CompiledPyMCModel", None)
    if cls is None or not dataclasses.is_dataclass(cls):
        return False
    fields = {f.name for f in dataclasses.fields(cls)}
    return fields == NUTPIE_FIELDS and callable(getattr(module, "make_user_data", None))


def entry_path(callbacks_source: Path) -> Path:
    """The structure's entry, next to its copy of the callbacks' source."""
    return callbacks_source.with_suffix(".json")


def write_entry(path: Path, compiled: Any, model: Any) -> None:
    """Write the structural part of nutpie's compiled model ``compiled`` of ``model`` to
    ``path`` (a temporary file, then renamed: a reader sees the old entry or the new one)."""
    names, slices, shapes = compiled.shape_info
    (shared,) = [var.name for var in compiled.shared_var_keys]
    entry = {
        "version": ENTRY_VERSION,
        "n_dim": int(compiled.n_dim),
        "n_expanded": int(compiled.n_expanded),
        "names": list(names),
        "slices": [[int(s.start), int(s.stop)] for s in slices],
        "shapes": [[int(n) for n in shape] for shape in shapes],
        "n_free": len(model.free_RVs),
        "dims": {name: list(dims) for name, dims in (compiled.dims or {}).items()},
        "reparameterized": list(compiled.reparameterized_names or []),
        "coords": list(compiled.coords),
        "extra_coords": {
            name: [str(v) for v in values]
            for name, values in compiled.coords.items()
            if name not in model.coords
        },
        "shared": shared,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_entry(path: Path) -> dict[str, Any] | None:
    """The entry at ``path``, or None when there is none, it does not parse, is of another
    layout version or misses a part."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("version") != ENTRY_VERSION:
        return None
    return entry if set(entry) == ENTRY_KEYS else None


def rebuild(model: Any, callbacks_source: Path, inputs: dict[str, Any]) -> Any | None:
    """nutpie's compiled model for ``model`` from the structure's entry and numba's cache of
    its callbacks, or None when either is missing, damaged or does not fit (the caller
    compiles the model then).

    Parameters
    ----------
    model : pm.Model
    callbacks_source : Path
        The structure's copy of the callbacks' source (:func:`bayesmer.compiled._compile`).
    inputs : dict
        The model's data inputs by name (:func:`bayesmer.compiled.data_inputs`).
    """
    if not supported():
        return None
    entry = read_entry(entry_path(callbacks_source))
    if entry is None:
        return None
    if any(values is None for values in model.coords.values()):
        return None
    try:
        logp, expand = _cached_callbacks(callbacks_source)
    except Exception:  # noqa: BLE001 - not in numba's cache, or damaged: compile instead
        return None
    if logp is None:
        return None
    try:
        return _assemble(model, entry, inputs, logp, expand)
    except (KeyError, TypeError, ValueError, IndexError, UnexpectedLayout):
        return None  # an entry that does not fit this model: compile instead


def _assemble(
    model: Any, entry: dict[str, Any], inputs: dict[str, Any], logp: Any, expand: Any
) -> Any:
    """nutpie's compiled model of ``model`` from the structure's entry and callbacks."""
    import pandas as pd
    from pymc.initial_point import make_initial_point_fn

    n_free = entry["n_free"]
    names = entry["names"]
    shapes = [tuple(shape) for shape in entry["shapes"]]
    if n_free != len(model.free_RVs) or len(names) != len(shapes):
        raise ValueError("the entry does not describe this model")
    point = make_initial_point_fn(
        model=model,
        overrides=None,
        default_strategy="support_point",
        jitter_rvs=set(model.free_RVs),
        return_transformed=True,
    )
    var = inputs[entry["shared"]]
    key = uuid.uuid4().hex
    shared_data = {key: np.array(var.get_value(borrow=True), order="C", copy=True)}
    shared_data[key].flags.writeable = False
    shared_var_keys = {var: key}
    user_data = nutpie.compile_pymc.make_user_data(shared_var_keys, shared_data)
    single_input(user_data, [key], shared_data)
    coords = {name: pd.Index(values) for name, values in model.coords.items()}
    coords.update({name: pd.Index(values) for name, values in entry["extra_coords"].items()})
    coords = {name: coords[name] for name in entry["coords"]}
    return nutpie.compile_pymc.CompiledPyMCModel(
        dims={name: tuple(dims) for name, dims in entry["dims"].items()},
        reparameterized_names=entry["reparameterized"],
        compiled_logp_func=logp,
        compiled_expand_func=expand,
        initial_point_func=flat_initial_point(point, names[:n_free], shapes[:n_free]),
        shared_data=shared_data,
        shared_var_keys=shared_var_keys,
        user_data=user_data,
        n_expanded=entry["n_expanded"],
        shape_info=(names, [slice(a, b) for a, b in entry["slices"]], shapes),
        logp_func=None,
        expand_func=None,
        _n_dim=entry["n_dim"],
        _shapes=dict(zip(names, shapes, strict=True)),
        _coords=coords,
    )


def _cached_callbacks(callbacks_source: Path) -> tuple[Any, Any]:
    """The two callbacks from numba's cache, (None, None) when either is not there.

    The module's PyTensor functions are left unset: a callback loaded from the cache has
    them compiled in, and one that is not cached fails to compile without them (quickly, in
    typing), which :func:`rebuild` takes as a miss.
    """
    module = _load_callbacks(callbacks_source)
    logp = numba.cfunc(_LOGP_SIGNATURE, cache=True)(module.logp_callback)
    expand = numba.cfunc(_EXPAND_SIGNATURE, cache=True)(module.expand_callback)
    if logp.cache_hits != 1 or expand.cache_hits != 1:
        return None, None
    return logp, expand


def flat_initial_point(
    point: Callable[[Any], dict[str, np.ndarray]], names: list[str], shapes: list[tuple]
) -> Callable[[Any], np.ndarray]:
    """A seed -> flat float64 vector of ``point``'s values of ``names`` (in that order), as
    nutpie flattens PyMC's initial point, one call at a time (nutpie's chains call it from
    their threads)."""
    lock = threading.Lock()
    size = sum(int(np.prod(shape)) for shape in shapes)

    def initial_point(seed: Any = None) -> np.ndarray:
        with lock:
            values = point(seed)
        out = np.empty(size, dtype="float64")
        start = 0
        for name, shape in zip(names, shapes, strict=True):
            value = np.asarray(values[name])
            if tuple(value.shape) != tuple(shape):
                raise ValueError(f"initial value of {name} has shape {value.shape}, not {shape}")
            n = int(np.prod(shape))
            out[start : start + n] = value.ravel().astype("float64")
            start += n
        return out

    return initial_point

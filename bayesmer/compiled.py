"""Compile once per model structure: a cache of compiled models keyed by their structure.

Compiling a model (PyTensor's rewrites, then numba) costs seconds; sampling a small model a
tenth of that. The data and the values of the priors enter the PyMC model as inputs
(``pm.Data``, see :func:`bayesmer.pymc_model._data` and :meth:`bayesmer.priors.Prior.make`),
so the compiled log density takes them as arguments, and one compilation serves every model
of the same *structure*: family, link, fixed and random terms, grouping and nesting, the
parametrization (which levels are centred), the prior distributions, and the shapes of the
data. A bootstrap, a simulation study, per-subgroup fits or a class re-running an exercise
then compile once.

The structure is read off the PyMC model itself (:func:`structure_key`): a hash of its graph
(every random variable, potential and deterministic, with their operations, constants,
transforms and dims) in which a data input counts by its name, type and shape but not its
values. Two models with the same key compile to the same functions, whatever their data.

A :class:`Compilation` holds the PyMC model it was compiled from and nutpie's compiled
model; :meth:`Compilation.bound` hands out the compiled model with a fit's data
(:meth:`nutpie.compile_pymc.CompiledPyMCModel.with_data`) and sets the same data on the PyMC
model, whose initial-point function nutpie calls when the chains start. Compilations are kept
in memory, the :data:`MEMORY_ENTRIES` most recently used.

Across processes, the compiled model is kept on disk. Each structure gets its own copy of the
callbacks' source (:mod:`bayesmer.callbacks`) in the cache folder (:func:`cache_folder`:
``$BAYESMER_CACHE_DIR`` or the user cache folder, one subfolder per set of library versions),
compiled with numba's cache, which keeps the machine code (with the PyTensor functions the
callbacks call compiled into it) next to it and loads it in a later process; beside it a
small JSON entry holds the rest of nutpie's compiled model that does not depend on the data
(:mod:`bayesmer.warm`). A later process rebuilds the compiled model from the two without
building PyTensor's functions (no graph rewrites, no code generation): ``'disk'``. When the
entry is missing or damaged the PyTensor functions are compiled and the callbacks still come
from numba's cache (``'callbacks'``), and the entry is written again. Files are written to a
temporary name and renamed, so processes filling the cache at once do not see each other's
half-written files; a damaged entry is deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import pymc as pm
import pytensor
from pymc.logprob.transforms import Transform
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.traversal import graph_inputs, io_toposort
from pytensor.tensor.random.type import RandomType

from . import __version__, fused, warm
from .sampling import (
    CALLBACKS_FILE,
    Sampler,
    UnexpectedLayout,
    compile_model,
    loop_callbacks_supported,
    single_input,
)

logger = logging.getLogger("bayesmer")

#: Compilations kept in memory (least recently used dropped first).
MEMORY_ENTRIES = 16

#: Environment variable naming the folder of the disk cache.
CACHE_ENV = "BAYESMER_CACHE_DIR"

#: Modification time given to every copy of the callbacks' source, so that copies written by
#: different processes agree for a numba whose cache checks a source file's time and size
#: (numba 0.68 checks its contents).
_SOURCE_MTIME = 1_000_000_000

_MEMORY: OrderedDict[str, Compilation] = OrderedDict()
_MEMORY_LOCK = threading.Lock()


@dataclass
class Compilation:
    """A compiled model structure.

    Attributes
    ----------
    key : str
        :func:`structure_key` of the models it serves.
    model : pm.Model
        The PyMC model it was compiled from (its data are set to each fit's, see
        :meth:`bound`).
    compiled : nutpie CompiledPyMCModel
    inputs : dict
        The data inputs (shared variables) of :attr:`model`, by name.
    """

    key: str | None
    model: pm.Model
    compiled: Any
    inputs: dict[str, SharedVariable]
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextmanager
    def bound(self, data: dict[str, np.ndarray]) -> Iterator[Any]:
        """nutpie's compiled model with ``data``, for the duration of one sampling.

        The data are also set on :attr:`model`, whose initial-point function nutpie calls as
        each chain starts, so the compilation serves one sampling at a time (a lock).
        """
        with self.lock:
            for name, value in data.items():
                self.inputs[name].set_value(value)
            names = {var.name for var in self.compiled.shared_var_keys}
            yield self.compiled.with_data(**{k: v for k, v in data.items() if k in names})


def sampler(model: pm.Model, deterministics: bool = True) -> Sampler:
    """A :class:`~bayesmer.sampling.Sampler` for ``model``, compiling it only when no model of
    its structure has been compiled in this process (and then with the callbacks from the
    disk cache when an earlier process compiled them).

    Parameters
    ----------
    model : pm.Model
        Built by :func:`bayesmer.pymc_model.build_model`.
    deterministics : bool, default True
        Whether nutpie stores the deterministics' draws (see
        :func:`bayesmer.sampling.compile_model`); part of the cache key.

    Returns
    -------
    Sampler
        ``compile_seconds`` is the time spent finding or compiling the compilation;
        ``source`` says which: ``'memory'``, ``'disk'`` (rebuilt from the disk cache,
        nothing compiled), ``'callbacks'`` (the C callbacks loaded from the disk cache,
        PyTensor's functions compiled) or ``'compiled'``.
    """
    start = time.perf_counter()
    inputs = data_inputs(model)
    try:
        key = structure_key(model)
    except UnkeyedStructure:
        key = None
    if key is not None and not deterministics:
        key = hashlib.sha256(f"{key} free variables only".encode()).hexdigest()
    with _MEMORY_LOCK:
        compilation = _MEMORY.get(key) if key is not None else None
        if compilation is not None:
            _MEMORY.move_to_end(key)
    source = "memory"
    if compilation is None:
        compiled, source = _compile(model, key, inputs, deterministics)
        compilation = Compilation(key, model, compiled, inputs)
        if key is not None:
            with _MEMORY_LOCK:
                _MEMORY[key] = compilation
                while len(_MEMORY) > MEMORY_ENTRIES:
                    _MEMORY.popitem(last=False)
    coords = {name: list(values) for name, values in model.coords.items()}
    data = {name: var.get_value(borrow=True) for name, var in inputs.items()}
    return Sampler(compilation, data, coords, time.perf_counter() - start, source)


def clear_memory() -> None:
    """Forget the compilations kept in memory."""
    with _MEMORY_LOCK:
        _MEMORY.clear()


# -- the disk cache --------------------------------------------------------------------------


def cache_folder() -> Path:
    """The disk cache's folder for the libraries in use.

    ``$BAYESMER_CACHE_DIR``, else the user cache folder (``~/.cache/bayesmer`` on Linux), and
    in it one subfolder per set of library versions (:func:`versions`): any change of
    version starts an empty one.
    """
    root = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("bayesmer")
    digest = hashlib.sha256(repr(sorted(versions().items())).encode()).hexdigest()
    return Path(root) / f"compiled-{digest[:16]}"


def versions() -> dict[str, str]:
    """What the compiled callbacks depend on besides the model's structure: the versions of
    Python and every library in the chain, the machine, PyTensor's settings that change its
    functions (not ``numba__fastmath``: models are compiled without fast-math flags,
    :func:`bayesmer.sampling.exact_arithmetic`), and the source of bayesmer's callbacks and
    fused likelihood kernel."""
    import llvmlite
    import numba
    import nutpie

    config = pytensor.config
    return {
        "bayesmer": __version__,
        "callbacks": hashlib.sha256(CALLBACKS_FILE.read_bytes()).hexdigest(),
        "fused": hashlib.sha256(Path(fused.__file__).read_bytes()).hexdigest(),
        "python": sys.version,
        "machine": platform.machine(),
        "numpy": np.__version__,
        "pymc": pm.__version__,
        "pytensor": pytensor.__version__,
        "nutpie": nutpie.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "pytensor_config": repr(
            [
                config.floatX,
                config.optimizer,
                config.optimizer_including,
                config.optimizer_excluding,
                config.optimizer_requiring,
            ]
        ),
    }


def _compile(
    model: pm.Model, key: str | None, inputs: dict[str, SharedVariable], deterministics: bool
) -> tuple[Any, str]:
    """nutpie's compiled model, from the disk cache when it is there.

    Returns the compiled model and where it came from: ``'disk'`` (rebuilt from the cache
    with nothing compiled, :func:`bayesmer.warm.rebuild`), ``'callbacks'`` (PyTensor's
    functions compiled, the C callbacks loaded from the cache) or ``'compiled'``. Without a
    key, or when the cache folder cannot be written, the model is compiled without the disk
    cache. A cache entry that fails to load is deleted and the model compiled again; after a
    compile the structure's entry is written (:func:`bayesmer.warm.write_entry`).
    """
    if key is None:
        return compile_model(model, deterministics=deterministics), "compiled"
    try:
        source = _callbacks_source(key)
    except OSError as err:
        logger.info("bayesmer's compiled-model cache is not writable (%s): not used.", err)
        return compile_model(model, deterministics=deterministics), "compiled"
    rebuilt = warm.rebuild(model, source, inputs)
    if rebuilt is not None:
        return rebuilt, "disk"
    try:
        compiled = compile_model(model, source, deterministics)
    except Exception as err:  # noqa: BLE001 - whatever a damaged entry raises, rebuild it
        logger.info("bayesmer's cached compilation %s failed to load (%s): rebuilt.", key, err)
        _remove_entry(source)
        source = _callbacks_source(key)
        compiled = compile_model(model, source, deterministics)
    if _own_callbacks(compiled):
        try:
            warm.write_entry(warm.entry_path(source), compiled, model)
        except (OSError, TypeError, ValueError, AttributeError) as err:
            # a cache that cannot be written, or a compiled model of another layout: the
            # next process compiles again, as without the entry
            logger.info("bayesmer's compiled-model entry %s not written (%s).", key, err)
    hits = compiled.compiled_logp_func.cache_hits + compiled.compiled_expand_func.cache_hits
    return compiled, "callbacks" if hits == 2 else "compiled"


def _own_callbacks(compiled: Any) -> bool:
    """Whether ``compiled`` has bayesmer's callbacks (one float64 data vector), which the
    disk cache keeps, rather than stock nutpie's."""
    if not loop_callbacks_supported():
        return False
    try:
        keys = list(compiled.shared_var_keys.values())
        single_input(compiled.user_data, keys, compiled.shared_data)
    except UnexpectedLayout:
        return False
    return True


def _callbacks_source(key: str) -> Path:
    """This structure's copy of the callbacks' source in the cache folder, written (to a
    temporary file, then renamed) when missing or different."""
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"callbacks_{key[:32]}.py"
    source = CALLBACKS_FILE.read_bytes()
    if path.exists() and path.read_bytes() == source:
        return path
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(source)
        os.utime(tmp, (_SOURCE_MTIME, _SOURCE_MTIME))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _remove_entry(source: Path) -> None:
    """Delete a structure's source copy, its entry and numba's files for it."""
    source.unlink(missing_ok=True)
    warm.entry_path(source).unlink(missing_ok=True)
    for cached in (source.parent / "__pycache__").glob(f"{source.stem}.*"):
        cached.unlink(missing_ok=True)


def clear_disk() -> None:
    """Delete the disk cache of the libraries in use (:func:`cache_folder`)."""
    shutil.rmtree(cache_folder(), ignore_errors=True)


# -- the structure of a model ----------------------------------------------------------------


class UnkeyedStructure(ValueError):
    """A part of the model has no description stable enough to key a cache by."""


def _outputs(model: pm.Model) -> list[Variable]:
    """Every variable the compiled model computes from: random variables, potentials,
    deterministics."""
    return [*model.free_RVs, *model.observed_RVs, *model.potentials, *model.deterministics]


def data_inputs(model: pm.Model) -> dict[str, SharedVariable]:
    """The model's data inputs by name: the shared variables of its graph (``pm.Data``, the
    lengths of its dims), random generators aside."""
    return {
        var.name: var
        for var in graph_inputs(_outputs(model))
        if isinstance(var, SharedVariable) and not isinstance(var.type, RandomType)
    }


def structure_key(model: pm.Model) -> str:
    """A hash of the model's structure.

    The hash covers the graphs of every free random variable, potential and deterministic
    (operations with their parameters, constants with their values, data inputs by name,
    type and static shape), the names, transforms and dims of the variables, the lengths of
    the coordinates and ``check_bounds``. The values of the data inputs
    (:func:`data_inputs`) are left out.

    Raises
    ------
    UnkeyedStructure
        When a parameter of an operation cannot be described (pickled); the model is then
        compiled without the cache.
    """
    outputs = _outputs(model)
    parts = _graph_parts(outputs)
    parts.append(
        (
            "model",
            [_value_key(model.rvs_to_transforms.get(v)) for v in model.free_RVs],
            sorted((k, tuple(v)) for k, v in model.named_vars_to_dims.items()),
            sorted((k, len(v)) for k, v in model.coords.items()),
            model.check_bounds,
        )
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _graph_parts(outputs: list[Variable]) -> list[Any]:
    """The graph of ``outputs`` as plain values: its inputs (data by name and type,
    constants by value), its operations in order with the positions of their inputs, and
    the outputs' positions and names."""
    roots = list(graph_inputs(outputs))
    ids: dict[Variable, int] = {}
    parts: list[Any] = []
    for var in roots:
        ids[var] = len(ids)
        if isinstance(var, SharedVariable):
            parts.append(("shared", var.name, str(var.type)))
        elif isinstance(var, Constant):
            parts.append(("constant", str(var.type), _value_key(var.data)))
        else:
            parts.append(("input", var.name, str(var.type)))
    for node in io_toposort(roots, outputs):
        parts.append((_op_key(node.op), [ids[v] for v in node.inputs]))
        for out in node.outputs:
            ids[out] = len(ids)
    parts.append(("outputs", [ids[v] for v in outputs], [v.name for v in outputs]))
    return parts


def _op_key(op: Any) -> Any:
    """An operation by its class and parameters (``__props__``), stable across processes."""
    name = f"{type(op).__module__}.{type(op).__qualname__}"
    props = op._props_dict() if getattr(op, "__props__", None) else {}
    return (name, [(k, _value_key(v)) for k, v in props.items()])


def _value_key(value: Any) -> Any:
    """A parameter or constant as a plain, stable value (a hash for arrays and objects)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.ndarray | np.generic):
        value = np.asarray(value)
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        return ("array", str(value.dtype), value.shape, digest)
    if isinstance(value, np.dtype):
        return str(value)
    if isinstance(value, tuple | list):
        return [_value_key(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return sorted((repr(k), _value_key(v)) for k, v in value.items())
    if hasattr(value, "_props_dict"):
        return _op_key(value)
    if isinstance(value, Variable):  # e.g. the size of an LKJ Cholesky transform
        return ("graph", _graph_parts([value]))
    if isinstance(value, Transform):  # by its parameters: a pickle holds PyTensor's ids
        return (
            "transform",
            f"{type(value).__module__}.{type(value).__qualname__}",
            _value_key(vars(value)),
        )
    try:
        return ("object", hashlib.sha256(pickle.dumps(value)).hexdigest())
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        raise UnkeyedStructure(f"no stable description of {value!r}: {err}") from err

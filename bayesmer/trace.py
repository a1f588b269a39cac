"""nutpie's raw draws (Arrow record batches) as the xarray DataTree nutpie would return.

:func:`nutpie.sample` converts its draws with ArviZ, whose import costs more than compiling
and sampling a small model from the cache (see :mod:`bayesmer.deferred`). bayesmer samples
with ``return_raw_trace=True`` and converts here, with the same result as nutpie's own
conversion without warm-up draws (``tests/test_trace.py`` compares them): a ``posterior``
group of the model's variables and a ``sample_stats`` group of nutpie's statistics, each
``(chain, draw, ...)`` with the model's coordinates, the draws of a chain shorter than the
longest (an interrupted sampling) padded with NaN (zero for integer statistics, None for
text), the unconstrained values of transformed variables and the statistics nutpie was not
told to store (gradients, mass matrices, divergence details) left out.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow
import xarray as xr

#: Statistics nutpie stores only when its setting of that name is on, as nutpie 0.16 leaves
#: them out of its converted trace.
OPTIONAL_STATS = {
    "store_gradient": ("gradient",),
    "store_unconstrained": ("unconstrained_draw",),
    "store_mass_matrix": ("mass_matrix_inv", "mass_matrix_eigvals", "mass_matrix_stds"),
    "store_divergences": (
        "divergence_start",
        "divergence_end",
        "divergence_momentum",
        "divergence_start_gradient",
    ),
    "store_transformed": ("transformed_position", "transformed_gradient", "transformation_mu"),
}

#: The dimensions of every draw.
SAMPLE_DIMS = ("chain", "draw")


def skipped_stats(settings: Mapping[str, Any]) -> set[str]:
    """The statistics left out for the sampler ``settings`` (keyword arguments of
    :func:`nutpie.sample`): those of every :data:`OPTIONAL_STATS` setting not turned on."""
    return {
        name
        for setting, names in OPTIONAL_STATS.items()
        if not settings.get(setting, False)
        for name in names
    }


def to_datatree(
    draw_batches: list[Any],
    stat_batches: list[Any],
    coords: Mapping[str, Sequence[Any]],
    skip_draws: Sequence[str] = (),
    skip_stats: set[str] | frozenset[str] = frozenset(),
    attrs: Mapping[str, Any] | None = None,
) -> xr.DataTree:
    """The DataTree of the draws after tuning.

    Parameters
    ----------
    draw_batches, stat_batches : list of Arrow record batches
        One per chain, tuning draws first (nutpie's ``get_arrow_trace()``); the statistics'
        ``tuning`` column tells them apart. Both lists are emptied (each entry set to None)
        as the chains are converted, which frees nutpie's buffers chain by chain.
    coords : mapping
        Values of the model's dimensions (nutpie's ``compiled.coords``).
    skip_draws : sequence of str
        Variables left out of the posterior (the compiled model's ``reparameterized_names``).
    skip_stats : set of str
        Statistics left out (:func:`skipped_stats`).
    attrs : mapping, optional
        Added to the ``sample_stats`` group's attributes.
    """
    if len(draw_batches) != len(stat_batches):
        raise ValueError(f"{len(draw_batches)} chains of draws, {len(stat_batches)} of stats")
    tuning = [int(np.asarray(pyarrow.array(s.column("tuning"))).sum()) for s in stat_batches]
    kept = [d.num_rows - t for d, t in zip(draw_batches, tuning, strict=True)]
    length = max(kept, default=0)
    draws = _group(draw_batches, tuning, length, set(skip_draws))
    stats = _group(stat_batches, tuning, length, set(skip_stats) | set(SAMPLE_DIMS))
    created = datetime.datetime.now(datetime.UTC).isoformat()
    base = {"created_at": created, "creation_library": "bayesmer", "sample_dims": [*SAMPLE_DIMS]}
    return xr.DataTree.from_dict(
        {
            "posterior": _dataset(draws, len(draw_batches), length, coords, base),
            "sample_stats": _dataset(
                stats, len(draw_batches), length, coords, {**base, **(attrs or {})}
            ),
        }
    )


def _group(
    batches: list[Any], tuning: list[int], length: int, skip: set[str]
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Each column's values after tuning, ``(chains, length, *shape)``, and its dims.

    Each chain's batch is released (its entry in ``batches`` set to None) once converted, so
    the draws are held about once, not twice: nutpie's Arrow buffers of a chain are freed as
    the chain is copied out, and the arrays are filled chain by chain (allocated empty, their
    pages taken as they are written).
    """
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    for chain in range(len(batches)):
        batch, batches[chain] = batches[chain], None
        rows = batch.slice(tuning[chain], batch.num_rows - tuning[chain])
        del batch
        n = rows.num_rows
        for name in rows.column_names:
            if name in skip:
                continue
            column = rows.column(name)
            meta = column.field.metadata
            dims = meta[b"dims"].decode().split(",") if meta.get(b"dims") else []
            sizes = meta[b"shape"].decode().split(",") if meta.get(b"shape") else []
            shape = [int(size) for size in sizes]
            values = pyarrow.array(column)
            missing = values.is_null()
            if hasattr(values, "flatten"):
                values = values.flatten()
            dtype = np.dtype(values.type.to_pandas_dtype())
            if name not in out:
                out[name] = (np.empty((len(batches), length, *shape), dtype=dtype), dims)
            array = out[name][0]
            # what a chain did not draw (an aborted chain, a missing value) is NaN, None or 0
            blank = np.nan if dtype.kind == "f" else None if dtype == np.dtype("O") else 0
            array[chain, n:] = blank
            numbers = values.to_numpy(zero_copy_only=False)
            if missing.sum().as_py() == 0:
                array[chain, :n] = numbers.reshape((n, *shape))
            else:
                present = ~missing.to_numpy(zero_copy_only=False)
                if numbers.shape[0] == n:
                    numbers = numbers[present]
                array[chain, :n] = blank
                array[chain, :n][present] = numbers.reshape((int(present.sum()), *shape))
            del column, values, numbers
        del rows
    return out


def _dataset(
    columns: dict[str, tuple[np.ndarray, list[str]]],
    chains: int,
    length: int,
    coords: Mapping[str, Sequence[Any]],
    attrs: dict[str, Any],
) -> xr.Dataset:
    """The columns as a Dataset: dims ``(chain, draw, *dims)``, unnamed ones ``{name}_dim_k``
    with integer coordinates, named ones with ``coords``."""
    variables = {}
    dim_coords: dict[str, Any] = {"chain": np.arange(chains), "draw": np.arange(length)}
    for name, (array, dims) in columns.items():
        named = [*dims, *[f"{name}_dim_{k}" for k in range(len(dims), array.ndim - 2)]]
        for k, dim in enumerate(named):
            if dim not in dim_coords:
                size = array.shape[2 + k]
                dim_coords[dim] = coords[dim] if dim in coords else np.arange(size)
        variables[name] = ([*SAMPLE_DIMS, *named], array)
    return xr.Dataset(variables, coords=dim_coords, attrs=attrs)

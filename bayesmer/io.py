"""Saving a fitted model to one file, and loading it back without refitting.

A bayesmer file is a zip archive holding

- ``bayesmer.json``: the format name and version, the model (kind, formula, family, link,
  factors, user priors), the fit settings (ci, exponentiate, draws, tune, chains, seed, sampler
  keyword arguments), what the data was, and the layout (dims, coordinates, dtypes,
  attributes) of every saved draw;
- ``data.parquet``: the data the model was fitted to: the frame itself when it was an eager
  polars or pandas DataFrame; for a polars LazyFrame or a frame of another engine (DuckDB,
  Dask, Spark...), the distinct observations of the used columns with their multiplicity (as
  many rows as the data had distinct observations, however many rows it had), from which the
  fitted rows are rebuilt, lazily, on loading;
- ``<group>.npz``: the draws of every group of ``model.posterior`` (``posterior`` and
  ``sample_stats``) and, when present, of ``model.prior``, as plain NumPy arrays.

The model specification is rebuilt from the data on loading and checked against the one saved
(terms, levels, number of cells), so a reloaded model answers ``params``, ``result_fit``,
``ranef`` and ``emmeans`` exactly as the saved one did.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from .collapse import CELL, EXPOSURE, ROWS, SS, TRIALS, WEIGHT, Y
from .priors import Prior, lkj_prior, to_prior

if TYPE_CHECKING:
    import xarray as xr

    from .models import Model

#: Name written into every file, checked on loading.
FORMAT_NAME = "bayesmer-model"
#: Version of the file layout this bayesmer writes; it reads every version up to this one.
FORMAT_VERSION = 1

_META = "bayesmer.json"
_DATA = "data.parquet"
_ZIP_MAGIC = b"PK\x03\x04"


# ---------------------------------------------------------------------------------------------
# Saving


def save_model(model: Model, path: str | os.PathLike[str]) -> None:
    """Save a fitted model, its data and every draw to one file.

    The file is written to a temporary file in the same folder and then renamed over ``path``,
    so an interrupted save leaves either the old file or the new one, never half a file.

    Parameters
    ----------
    model : lm, glm, lmer or glmer
        A fitted model.
    path : str or path-like
        Where to write (conventionally ending in ``.bayesmer``; any name is accepted, so a
        pymer4 script's ``'model.joblib'`` works too, though the file is a bayesmer archive,
        not a joblib pickle, and no ``.rds`` file is written beside it); an existing file is
        replaced.

    Raises
    ------
    NotFittedError
        If the model has not been fitted.
    ValueError
        If a user prior or sampler setting cannot be written (for example a ``bambi.Prior``
        whose parameters are themselves priors).

    See Also
    --------
    load_model
    """
    model._require_fit("save")
    path = Path(path)
    meta = _model_metadata(model)
    members: dict[str, bytes] = {}
    members[_DATA], meta["data"] = _data_bytes(model)
    groups = {name: model.posterior[name].to_dataset() for name in model.posterior.children}
    if model.prior is not None:
        groups.update({f"prior/{n}": model.prior[n].to_dataset() for n in model.prior.children})
    meta["draws"] = {}
    for name, ds in groups.items():
        member = f"{name.replace('/', '__')}.npz"
        meta["draws"][name], members[member] = _dataset_to_npz(ds)
        meta["draws"][name]["member"] = member
    payload = json.dumps(meta, indent=1).encode("utf-8")

    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, _file_mode(path))
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(_META, payload)
                for member, data in members.items():
                    archive.writestr(member, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_mode(path: Path) -> int:
    """Permissions for the saved file: those of the file it replaces, else the umask's."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _model_metadata(model: Model) -> dict[str, Any]:
    from . import __version__

    spec = model.spec
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "bayesmer_version": __version__,
        "model": {
            "kind": model._kind,
            "formula": model.formula,
            "family": model.family,
            "link": model.link,
            "factors": {k: (list(v) if v is not None else None) for k, v in model.factors.items()},
            "priors": {k: _encode_prior(k, v) for k, v in model.priors.items()},
        },
        "fit": {
            "ci": float(model.ci),
            "exponentiate": bool(model.exponentiate),
            "draws": int(model.draws),
            "tune": int(model.tune),
            "chains": int(model.chains),
            "random_seed": int(model.random_seed),
            "sampler_kwargs": {
                k: _plain(v, f"sampler setting {k!r}") for k, v in model.sampler_kwargs.items()
            },
        },
        "spec": {
            "terms": list(spec.terms),
            "levels": {g.name: list(g.levels) for g in spec.groups},
            "factors": {k: list(v) for k, v in spec.factors.items()},
            "n_cells": len(spec.cells),
            "n_obs": int(spec.n_obs),
            "n_dropped": int(spec.n_dropped),
        },
    }


def _plain(value: Any, what: str) -> Any:
    """A JSON-ready copy of a setting made of numbers, strings, booleans, lists and dicts."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, what) for k, v in value.items()}
    raise ValueError(
        f"Cannot save {what}: {value!r} ({type(value).__name__}) is not a number, string, "
        "list or dict."
    )


def _encode_prior(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, tuple | list):
        return {"type": "tuple", "value": _plain(list(value), f"the prior for {key!r}")}
    if key.startswith("cor|"):
        prior = lkj_prior(key, value)
    else:
        prior = to_prior(key, value, positive="|" in key)
    return {
        "type": "dist",
        "dist": prior.dist,
        "params": {k: _plain(v, f"the prior for {key!r}") for k, v in prior.params.items()},
    }


def _data_bytes(model: Model) -> tuple[bytes, dict[str, Any]]:
    """The data as parquet, and how to read it back."""
    import pandas as pd

    buffer = io.BytesIO()
    data = model.data
    if isinstance(data, pl.DataFrame):
        data.write_parquet(buffer)
        return buffer.getvalue(), {"kind": "polars"}
    if isinstance(data, pd.DataFrame):
        data.to_parquet(buffer, engine="pyarrow")
        return buffer.getvalue(), {"kind": "pandas"}
    # A LazyFrame or another engine's frame is not materialised: keep the distinct
    # observations of the used columns.
    table, enums = _observation_table(model.spec)
    table.write_parquet(buffer)
    return buffer.getvalue(), {"kind": "observations", "enums": enums}


def _observation_table(spec: Any) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """Distinct observations of the used columns with their multiplicity ``_weight``.

    Factor, grouping and two-level outcome columns are returned as strings with their level
    order alongside (they are cast to ``pl.Enum`` on loading, which pins that order).
    """
    parsed = spec.formula
    internal = {Y, TRIALS, EXPOSURE, SS, ROWS, CELL}
    keys = [c for c in spec.cells.columns if c not in internal]
    obs = spec.obs.join(spec.cells.select([CELL, *keys]), on=CELL, how="left")
    resp = parsed.response
    y = pl.col(Y)
    size = pl.col(spec.size_col)
    cols: list[pl.Expr] = [pl.col(k) for k in keys]
    enums = {**spec.factors, **{g.name: list(g.levels) for g in spec.groups}}
    if spec.family.size_kind == "exposure":
        cols.append(y.alias(resp.column))
        if parsed.exposure is not None:
            cols.append(size.alias(parsed.exposure))
        elif parsed.offset is not None:
            cols.append(size.log().alias(parsed.offset))
    elif resp.kind == "cbind_trials":
        cols += [y.alias(resp.column), size.alias(resp.second)]
    elif resp.kind != "column":
        cols += [y.alias(resp.column), (size - y).alias(resp.second)]
    elif spec.response_levels is not None:
        failure, success = spec.response_levels
        label = pl.when(y == 1).then(pl.lit(success)).otherwise(pl.lit(failure))
        cols.append(label.alias(resp.column))
        enums[resp.column] = [failure, success]
    else:
        cols.append(y.alias(resp.column))
    table = obs.select([*cols, pl.col(WEIGHT)])
    return table, {k: [str(v) for v in lv] for k, lv in enums.items() if k in table.columns}


def _dataset_to_npz(ds: xr.Dataset) -> tuple[dict[str, Any], bytes]:
    """Arrays of a dataset as npz bytes, and its layout as JSON-ready metadata."""
    arrays: dict[str, np.ndarray] = {}
    layout: dict[str, Any] = {"attrs": _attrs(ds.attrs), "coords": {}, "vars": {}}
    for i, (name, coord) in enumerate(ds.coords.items()):
        key = f"c{i}"
        layout["coords"][str(name)] = _array_entry(key, coord, arrays)
    for i, (name, var) in enumerate(ds.data_vars.items()):
        key = f"v{i}"
        layout["vars"][str(name)] = _array_entry(key, var, arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return layout, buffer.getvalue()


def _array_entry(key: str, da: xr.DataArray, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "dims": [str(d) for d in da.dims],
        "dtype": da.dtype.str if da.dtype != object else "object",
        "attrs": _attrs(da.attrs),
    }
    values = np.asarray(da.values)
    if values.dtype == object:
        # Strings with missing values (nutpie's divergence messages): JSON, None kept.
        flat = [None if v is None else str(v) for v in values.ravel().tolist()]
        if all(v is not None for v in flat):
            arrays[key] = np.asarray(flat, dtype=str).reshape(values.shape)
            entry["array"] = key
        else:
            entry["values"] = flat
            entry["shape"] = list(values.shape)
    else:
        arrays[key] = values
        entry["array"] = key
    return entry


def _attrs(attrs: dict[Any, Any]) -> dict[str, Any]:
    """Attributes that JSON can hold (others are written as their text)."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        try:
            out[str(k)] = _plain(v, "attribute")
        except ValueError:
            out[str(k)] = str(v)
    return out


# ---------------------------------------------------------------------------------------------
# Loading


def load_model(path: str | os.PathLike[str]) -> Model:
    """Load a model saved with ``model.save(path)``; it is fitted, no sampling needed.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    lm, glm, lmer or glmer
        With the same formula, family, factors, priors, data, fit settings and draws (and the
        prior draws when they were saved): ``params``, ``result_fit``, ``ranef`` and
        ``emmeans`` are identical to the saved model's. Calling ``fit()`` again samples anew.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not a bayesmer model, is truncated or damaged, or was written by a newer
        bayesmer (a newer format version).

    Examples
    --------
    >>> model.save("titanic.bayesmer")  # doctest: +SKIP
    >>> same = bayesmer.load_model("titanic.bayesmer")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No bayesmer model file at {str(path)!r}.")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head != _ZIP_MAGIC:
        raise ValueError(
            f"{str(path)!r} is not a bayesmer model file (save one with model.save(path))."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            if damaged is not None:
                raise zipfile.BadZipFile(f"bad CRC in member {damaged!r}")
            contents = {name: archive.read(name) for name in archive.namelist()}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise ValueError(
            f"{str(path)!r} is truncated or damaged and cannot be loaded ({err}); save the "
            "model again."
        ) from err
    if _META not in contents:
        raise ValueError(
            f"{str(path)!r} is a zip archive but not a bayesmer model file (no {_META})."
        )
    try:
        meta = json.loads(contents[_META].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r}: its {_META} is damaged ({err}).") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{str(path)!r} is not a bayesmer model file.")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{str(path)!r} has an invalid format version {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was written by a newer bayesmer ({meta.get('bayesmer_version')}, "
            f"file format version {version}); this bayesmer reads format versions up to "
            f"{FORMAT_VERSION}. Upgrade bayesmer to load it."
        )
    try:
        return _rebuild(meta, contents)
    except (KeyError, TypeError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{str(path)!r} is damaged: a part of the saved model is missing or malformed "
            f"({type(err).__name__}: {err})."
        ) from err


def _rebuild(meta: dict[str, Any], contents: dict[str, bytes]) -> Model:
    import xarray as xr

    from .diagnostics import diagnose
    from .models import glm, glmer, lm, lmer

    info = meta["model"]
    kinds = {"glm": glm, "glmer": glmer, "lm": lm, "lmer": lmer}
    if info["kind"] not in kinds:
        raise ValueError(f"Unknown model kind {info['kind']!r} in the file.")
    data = _read_data(meta["data"], contents[_DATA])
    priors = {k: _decode_prior(v) for k, v in info["priors"].items()}
    model = kinds[info["kind"]]._build(info["formula"], data, info["family"], info["link"], priors)
    model.factors = {k: (list(v) if v is not None else None) for k, v in info["factors"].items()}
    spec = model.spec
    _check_spec(spec, meta["spec"])
    spec.n_dropped = int(meta["spec"]["n_dropped"])

    trees: dict[str, dict[str, xr.Dataset]] = {"posterior": {}, "prior": {}}
    for name, layout in meta["draws"].items():
        ds = _npz_to_dataset(layout, contents[layout["member"]])
        if name.startswith("prior/"):
            trees["prior"][name.split("/", 1)[1]] = ds
        else:
            trees["posterior"][name] = ds
    fit = meta["fit"]
    model.posterior = xr.DataTree.from_dict(trees["posterior"])
    model.prior = xr.DataTree.from_dict(trees["prior"]) if trees["prior"] else None
    model.ci = float(fit["ci"])
    model.exponentiate = bool(fit["exponentiate"])
    model.draws, model.tune, model.chains = int(fit["draws"]), int(fit["tune"]), int(fit["chains"])
    model.random_seed = int(fit["random_seed"])
    model.sampler_kwargs = dict(fit["sampler_kwargs"])
    names = spec.reported
    model._diag = diagnose(
        model.posterior["posterior"].to_dataset(),
        model.posterior["sample_stats"].to_dataset(),
        names,
    )
    return model


def _decode_prior(entry: dict[str, Any]) -> Any:
    if entry["type"] == "tuple":
        return tuple(entry["value"])
    if entry["type"] == "dist":
        return Prior(str(entry["dist"]), dict(entry["params"]), "user")
    raise ValueError(f"Unknown prior entry {entry!r} in the file.")


def _read_data(info: dict[str, Any], raw: bytes) -> Any:
    kind = info["kind"]
    if kind == "polars":
        return pl.read_parquet(io.BytesIO(raw))
    if kind == "pandas":
        import pandas as pd

        return pd.read_parquet(io.BytesIO(raw), engine="pyarrow")
    if kind == "observations":
        obs = pl.read_parquet(io.BytesIO(raw))
        obs = obs.with_columns(
            [pl.col(c).cast(pl.String).cast(pl.Enum(lv)) for c, lv in info["enums"].items()]
        )
        values = [c for c in obs.columns if c != WEIGHT]
        # One row per original data row, rebuilt lazily from the distinct observations.
        return (
            obs.lazy()
            .with_columns(pl.int_ranges(pl.col(WEIGHT)).alias("__copy"))
            .explode("__copy")
            .select(values)
        )
    raise ValueError(f"Unknown data kind {kind!r} in the file.")


def _check_spec(spec: Any, saved: dict[str, Any]) -> None:
    found = {
        "terms": list(spec.terms),
        "levels": {g.name: list(g.levels) for g in spec.groups},
        "factors": {k: list(v) for k, v in spec.factors.items()},
        "n_cells": len(spec.cells),
        "n_obs": int(spec.n_obs),
    }
    wrong = [k for k, v in found.items() if v != saved[k]]
    if wrong:
        raise ValueError(
            "The model rebuilt from the saved data differs from the saved one in "
            f"{', '.join(wrong)} (saved {[saved[k] for k in wrong]}, rebuilt "
            f"{[found[k] for k in wrong]}); the file is damaged or was written by an "
            "incompatible bayesmer."
        )


def _npz_to_dataset(layout: dict[str, Any], raw: bytes) -> xr.Dataset:
    import xarray as xr

    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}

    def values(entry: dict[str, Any]) -> np.ndarray:
        if "array" in entry:
            out = arrays[entry["array"]]
        else:
            out = np.empty(len(entry["values"]), dtype=object)
            out[:] = entry["values"]
            out = out.reshape(entry["shape"])
        if entry["dtype"] == "object" and out.dtype != object:
            out = out.astype(object)
        return out

    coords = {
        name: xr.Variable(entry["dims"], values(entry), attrs=entry["attrs"])
        for name, entry in layout["coords"].items()
    }
    data_vars = {
        name: xr.Variable(entry["dims"], values(entry), attrs=entry["attrs"])
        for name, entry in layout["vars"].items()
    }
    return xr.Dataset(data_vars, coords=coords, attrs=layout["attrs"])

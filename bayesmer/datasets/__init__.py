"""Datasets shipped with bayesmer (provenance in this folder's README.md)."""

from __future__ import annotations

from importlib import resources

import polars as pl

_DATASETS = {
    "titanic": "titanic.csv",
    "grouseticks": "grouseticks.csv",
    "sleepstudy": "sleepstudy.csv",
    "contraception": "contraception.csv",
    "salamanders": "salamanders.csv",
}
_SCHEMAS = {
    # Keep identifiers as strings so they read as labels, not numbers.
    "grouseticks": {
        "INDEX": pl.String,
        "BROOD": pl.String,
        "YEAR": pl.String,
        "LOCATION": pl.String,
    },
    "sleepstudy": {"Subject": pl.String},
    "contraception": {"woman": pl.String, "district": pl.String, "livch": pl.String},
    "salamanders": {"site": pl.String},
}


def load_dataset(name: str | None = None) -> pl.DataFrame | list[str]:
    """Load a bundled dataset as a polars DataFrame.

    Parameters
    ----------
    name : str, optional
        ``'titanic'``, ``'grouseticks'``, ``'sleepstudy'``, ``'contraception'`` or
        ``'salamanders'`` (provenance in ``bayesmer/datasets/README.md``). Without a name, the
        list of dataset names.

    Returns
    -------
    polars.DataFrame or list of str

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if name is None:
        return sorted(_DATASETS)
    if name not in _DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; available: {sorted(_DATASETS)}.")
    path = resources.files(__name__).joinpath(_DATASETS[name])
    with resources.as_file(path) as file:
        return pl.read_csv(file, schema_overrides=_SCHEMAS.get(name))

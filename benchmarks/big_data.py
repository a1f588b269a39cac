"""From Parquet rows to a posterior in polars, DuckDB and Dask: time and peak memory.

Writes ``--rows`` Bernoulli rows of ``y ~ a + b + (1|g)`` (``a`` 2 levels, ``b`` 3, ``g``
``--groups`` levels, all integer columns) as Parquet files in a temporary directory, then, per
engine, in a fresh process: reads them lazily (``pl.scan_parquet``, ``duckdb.sql(... read_parquet
...)``, ``dd.read_parquet`` with Dask's threaded scheduler), builds the model (validation and the
exact collapse, in the engine), fits it with bayesmer's defaults (4 chains x 1000 draws, seed
1) and prints ``summary()`` (which computes PSIS-LOO). Reported per engine: seconds to build
(the collapse's rows per second), to fit and for the summary, and the process's peak resident
memory after each (``ru_maxrss``, so including the interpreter and the libraries).

    PYTHONPATH=. .venv/bin/python benchmarks/big_data.py --rows 10_000_000
    PYTHONPATH=. .venv/bin/python benchmarks/big_data.py --rows 100_000_000 --engines duckdb
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ENGINES = ("polars", "duckdb", "dask")

#: Rows per Parquet file (the data are written and read in files of this size).
FILE_ROWS = 5_000_000


def write_parquet(directory: Path, rows: int, groups: int, seed: int = 1) -> float:
    """Write the rows as Parquet files in ``directory``; seconds taken."""
    import numpy as np
    import polars as pl

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, 0.5, groups)
    for k, first in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - first)
        a = rng.integers(0, 2, n, dtype=np.int8)
        b = rng.integers(0, 3, n, dtype=np.int8)
        g = rng.integers(0, groups, n, dtype=np.int32)
        eta = -0.5 + 0.7 * a + np.array([0.0, -0.4, 0.6])[b] + u[g]
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int8)
        pl.DataFrame({"y": y, "a": a, "b": b, "g": g}).write_parquet(directory / f"{k:04d}.parquet")
    return time.perf_counter() - start


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_engine(engine: str, directory: Path) -> dict[str, Any]:
    """Build, fit and summarise the model from the Parquet files with one engine."""
    import bayesmer

    pattern = str(directory / "*.parquet")
    if engine == "polars":
        import polars as pl

        data: Any = pl.scan_parquet(pattern)
    elif engine == "duckdb":
        import duckdb

        data = duckdb.sql(f"select * from read_parquet('{pattern}')")
    else:
        import dask
        import dask.dataframe as dd

        dask.config.set(scheduler="threads")
        data = dd.read_parquet(str(directory))
    out: dict[str, Any] = {"engine": engine, "import_mb": _peak_mb()}
    model = bayesmer.glmer("y ~ a + b + (1|g)", data, family="binomial")
    model.set_factors(["a", "b"])
    start = time.perf_counter()
    spec = model.spec
    out["build_s"] = time.perf_counter() - start
    out["build_mb"] = _peak_mb()
    out["rows"], out["cells"] = spec.n_obs, len(spec.cells)
    start = time.perf_counter()
    model.fit(random_seed=1, progressbar=False)
    out["fit_s"] = time.perf_counter() - start + out["build_s"]
    out["fit_mb"] = _peak_mb()
    start = time.perf_counter()
    text = str(model.summary())
    out["summary_s"] = time.perf_counter() - start
    out["summary_mb"] = _peak_mb()
    out["elpd"] = model.loo().elpd
    out["b"] = model.result_fit["estimate"].to_list()
    out["summary_head"] = text.splitlines()[:8]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--directory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_engine(args.child, Path(args.directory))))
        return
    engines = args.engines.split(",")
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    with tempfile.TemporaryDirectory(prefix="bayesmer-big-") as tmp:
        directory = Path(tmp)
        seconds = write_parquet(directory, args.rows, args.groups)
        size = sum(f.stat().st_size for f in directory.iterdir()) / 2**20
        print(f"wrote {args.rows:,} rows ({size:.0f} MB of Parquet) in {seconds:.0f} s")
        print(
            "| engine | rows | cells | build s | collapse rows/s | fit s (incl. build) | "
            "summary s | fit + summary s | peak MB after fit | peak MB after summary |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for engine in engines:
            command = [sys.executable, __file__, "--child", engine, "--directory", tmp]
            done = subprocess.run(
                command, capture_output=True, text=True, check=True, env=dict(os.environ)
            )
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"| {engine} | {r['rows']:,} | {r['cells']:,} | {r['build_s']:.1f} | "
                f"{r['rows'] / r['build_s']:,.0f} | {r['fit_s']:.1f} | {r['summary_s']:.1f} | "
                f"{r['fit_s'] + r['summary_s']:.1f} | {r['fit_mb']:,.0f} | "
                f"{r['summary_mb']:,.0f} |",
                flush=True,
            )
            print("  " + " | ".join(r["summary_head"][2:3] + r["summary_head"][6:7]), flush=True)


if __name__ == "__main__":
    main()

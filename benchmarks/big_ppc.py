"""ppc() of the default statistics on many Bernoulli rows: time and peak memory.

Writes ``--rows`` rows of ``big_data.py``'s model (``y ~ a + b + (1|g)``, 1,000 groups) as
Parquet files, then in a fresh process per run: reads them with ``pl.scan_parquet``, fits with
bayesmer's defaults (4 chains x 1000 draws, seed 1), keeps the first ``--draws`` draws of each
chain (all by default) and times ``model.ppc(random_seed=1)`` (the default statistics: the
mean and the mean of every level of ``a``, ``b`` and ``g``, 1,006 in all). Reported: seconds,
the peak of the allocations Python traces during the ppc (``tracemalloc``: NumPy arrays,
not polars' buffers) and the process's peak resident memory after the fit and after the ppc
(``ru_maxrss``, interpreter and libraries included).

``--code DIR`` runs the children with ``PYTHONPATH=DIR``, to time another version of bayesmer
(for example a ``git archive`` of an older commit).

    PYTHONPATH=. .venv/bin/python benchmarks/big_ppc.py --rows 10_000_000
    PYTHONPATH=. .venv/bin/python benchmarks/big_ppc.py --draws 2 --code /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from big_data import _peak_mb, write_parquet


def run(directory: Path, draws: int | None) -> dict[str, Any]:
    """Fit the model from the Parquet files and time its ppc."""
    import polars as pl

    import bayesmer

    model = bayesmer.glmer(
        "y ~ a + b + (1|g)", pl.scan_parquet(str(directory / "*.parquet")), family="binomial"
    )
    model.set_factors(["a", "b"])
    model.fit(random_seed=1, progressbar=False)
    if draws is not None:
        model.posterior = model.posterior.isel(draw=slice(0, draws))
    out: dict[str, Any] = {
        "bayesmer": str(Path(bayesmer.__file__).parent),
        "rows": model.spec.n_obs,
        "draws": model.posterior["posterior"].sizes["draw"]
        * model.posterior["posterior"].sizes["chain"],
        "fit_mb": _peak_mb(),
    }
    tracemalloc.start()
    start = time.perf_counter()
    table = model.ppc(random_seed=1)
    out["ppc_s"] = time.perf_counter() - start
    out["traced_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    out["ppc_mb"] = _peak_mb()
    out["statistics"] = table.height
    out["mean"] = table.filter(statistic="mean").row(0, named=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--draws", type=int, help="draws per chain kept for the ppc")
    parser.add_argument("--code", help="PYTHONPATH of the bayesmer to time")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(Path(args.child), args.draws)))
        return
    env = dict(os.environ)
    if args.code:
        env["PYTHONPATH"] = args.code
    with tempfile.TemporaryDirectory(prefix="bayesmer-ppc-") as tmp:
        write_parquet(Path(tmp), args.rows, 1000)
        command = [sys.executable, __file__, "--child", tmp]
        if args.draws:
            command += ["--draws", str(args.draws)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(r, indent=1))
    print(
        f"| {r['rows']:,} | {r['draws']:,} | {r['statistics']:,} | {r['ppc_s']:.1f} | "
        f"{r['traced_mb']:,.0f} | {r['fit_mb']:,.0f} | {r['ppc_mb']:,.0f} |"
    )


if __name__ == "__main__":
    main()

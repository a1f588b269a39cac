"""Start-up time: ``import bayesmer``, the seed's glmer script cold and warm, a same-shape refit.

Run it with ``make bench`` (after ``bench.py``) or ``.venv/bin/python benchmarks/startup.py``.
Every measurement runs in fresh Python processes (``subprocess``), timed with
``time.perf_counter``; the median of ``--repeats`` (5) processes is reported, with the range.

- **import**: ``import bayesmer``, timed inside the process.
- **script, cold cache**: the seed's glmer script end to end (interpreter start-up, import,
  ``glmer('survived ~ sex + (1|pclass)', titanic, family='binomial')``, ``fit()`` with the
  default 4 chains x 1000 draws, ``emmeans('sex')``), timed by the parent around the process.
  Each run gets its own copy of caches that have seen bayesmer fit *another* model (a Poisson
  glmer on grouseticks): bayesmer's compiled-model cache (``BAYESMER_CACHE_DIR``) and
  PyTensor's compile cache (``base_compiledir``). So this is the first fit of this model
  structure on a machine where bayesmer has run before, not the first run of a fresh install.
- **script, warm cache**: the same, with the caches a first run of the script filled.
- **same-shape refit**: in a process that has fitted the titanic model, a model of the same
  formula on a bootstrap resample of the data (same columns, same cells): the model's
  construction and ``fit()``, timed inside the process, and the compile time the fit reports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIT = "random_seed=1, progressbar=False"
SCRIPT = f"""
import bayesmer
data = bayesmer.load_dataset("titanic")
model = bayesmer.glmer("survived ~ sex + (1|pclass)", data, family="binomial")
model.fit({FIT})
model.emmeans("sex")
"""

IMPORT = """
import time
start = time.perf_counter()
import bayesmer
print(time.perf_counter() - start)
"""

WARMUP = f"""
import bayesmer
data = bayesmer.load_dataset("grouseticks")
bayesmer.glmer("TICKS ~ YEAR + (1|BROOD)", data, family="poisson").fit({FIT})
"""

REFIT = f"""
import json, sys, time
import bayesmer
data = bayesmer.load_dataset("titanic")
bayesmer.glmer("survived ~ sex + (1|pclass)", data, family="binomial").fit({FIT})
resample = data.sample(fraction=1.0, with_replacement=True, seed=int(sys.argv[1]))
start = time.perf_counter()
model = bayesmer.glmer("survived ~ sex + (1|pclass)", resample, family="binomial")
model.fit({FIT})
print(json.dumps({{"seconds": time.perf_counter() - start, **model.timings}}))
"""


def run(code: str, cache: Path, *args: str) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter with its caches under ``cache``: wall s, stdout."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BAYESMER_CACHE_DIR": str(cache / "bayesmer"),
        "PYTENSOR_FLAGS": f"base_compiledir={cache / 'pytensor'}",
    }
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"benchmark process failed:\n{out.stderr}")
    return seconds, out.stdout


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per measurement")
    args = p.parse_args(argv)
    n = args.repeats
    load = os.getloadavg()[0]
    print(f"bayesmer start-up, median of {n} fresh processes (load 1m before: {load:.2f})")

    with tempfile.TemporaryDirectory(prefix="bayesmer-startup-") as tmp:
        tmp = Path(tmp)
        imports = [float(run(IMPORT, tmp / "import")[1]) for _ in range(n)]
        print(f"import bayesmer              {summary(imports)}")

        run(WARMUP, tmp / "template")  # caches that have seen another model
        cold = []
        for i in range(n):
            shutil.copytree(tmp / "template", tmp / f"cold{i}")
            cold.append(run(SCRIPT, tmp / f"cold{i}")[0])
        print(f"script, cold cache           {summary(cold)}")

        run(SCRIPT, tmp / "warm")  # fills the caches
        warm = [run(SCRIPT, tmp / "warm")[0] for _ in range(n)]
        print(f"script, warm cache           {summary(warm)}")

        refits = [json.loads(run(REFIT, tmp / "warm", str(i))[1]) for i in range(n)]
        seconds = [r["seconds"] for r in refits]
        compile_s = [r["compile"] for r in refits]
        print(f"same-shape refit, in process {summary(seconds)}  compile {summary(compile_s)}")
    print(f"load 1m after: {os.getloadavg()[0]:.2f} (2 cores: above 2 the cores were shared)")


if __name__ == "__main__":
    main()

"""Start-up time: ``import bayesmer``, the seed's glmer script cold and warm, a same-shape refit.

Run it with ``make bench`` (after ``bench.py``) or ``.venv/bin/python benchmarks/startup.py``.
Every measurement runs in fresh Python processes (``subprocess``), timed with
``time.perf_counter``; the median of ``--repeats`` (5) processes is reported, with the range,
and for whole processes the median of their CPU time (user + system, all threads, from
``resource.getrusage(RUSAGE_CHILDREN)``), which another process competing for the cores
disturbs less than the wall time.

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
import resource
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(code: str, cache: Path, *args: str, root: Path = ROOT) -> tuple[float, str, float]:
    """Run ``code`` in a fresh interpreter with its caches under ``cache`` and the bayesmer
    of the checkout ``root``: wall s, stdout, CPU s (user + system)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "BAYESMER_CACHE_DIR": str(cache / "bayesmer"),
        "PYTENSOR_FLAGS": f"base_compiledir={cache / 'pytensor'}",
    }
    cpu = _children_cpu()
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=root, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"benchmark process failed:\n{out.stderr}")
    return seconds, out.stdout, _children_cpu() - cpu


def summary(values: list[float], cpu: list[float] | None = None) -> str:
    out = f"{statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})"
    if cpu:
        out += f"  cpu {statistics.median(cpu):.2f} s"
    return out


def _wall_cpu(runs: list[tuple[float, str, float]]) -> tuple[list[float], list[float]]:
    return [r[0] for r in runs], [r[2] for r in runs]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per measurement")
    p.add_argument(
        "--only",
        default="import,cold,warm,refit",
        help="comma-separated measurements to run (default: all of import,cold,warm,refit)",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="checkout whose bayesmer is measured (default: this script's), e.g. another "
        "worktree for a before/after comparison",
    )
    args = p.parse_args(argv)
    n = args.repeats
    root = args.root.resolve()
    only = set(args.only.split(","))
    unknown = only - {"import", "cold", "warm", "refit"}
    if unknown:
        p.error(f"unknown measurement(s) {sorted(unknown)}: use import, cold, warm, refit")
    load = os.getloadavg()[0]
    print(f"bayesmer start-up of {root}, median of {n} fresh processes (load 1m: {load:.2f})")

    with tempfile.TemporaryDirectory(prefix="bayesmer-startup-") as tmp:
        tmp = Path(tmp)
        if "import" in only:
            imports = [float(run(IMPORT, tmp / "import", root=root)[1]) for _ in range(n)]
            print(f"import bayesmer              {summary(imports)}")

        if "cold" in only:
            run(WARMUP, tmp / "template", root=root)  # caches that have seen another model
            cold = []
            for i in range(n):
                shutil.copytree(tmp / "template", tmp / f"cold{i}")
                cold.append(run(SCRIPT, tmp / f"cold{i}", root=root))
            print(f"script, cold cache           {summary(*_wall_cpu(cold))}")

        if only & {"warm", "refit"}:
            run(SCRIPT, tmp / "warm", root=root)  # fills the caches
        if "warm" in only:
            warm = [run(SCRIPT, tmp / "warm", root=root) for _ in range(n)]
            print(f"script, warm cache           {summary(*_wall_cpu(warm))}")

        if "refit" in only:
            refits = [json.loads(run(REFIT, tmp / "warm", str(i), root=root)[1]) for i in range(n)]
            seconds = [r["seconds"] for r in refits]
            compile_s = [r["compile"] for r in refits]
            print(f"same-shape refit, in process {summary(seconds)}  compile {summary(compile_s)}")
    print(f"load 1m after: {os.getloadavg()[0]:.2f} (2 cores: above 2 the cores were shared)")


if __name__ == "__main__":
    main()

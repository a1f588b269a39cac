"""bayesmer against plain Bambi, side by side, on the models of issues 4, 11, 12 and 13.

Run it with ``make bench`` (or ``.venv/bin/python benchmarks/bench.py --help``). One command
fits every case with both libraries, with the same draws, tuning steps, chains and seed, and
prints per case and library:

- wall time end to end (model construction to a finished fit; imports and data generation
  excluded), split for bayesmer into spec/collapse, compile and sampling (``model.timings``),
  for Bambi into model build, PyMC compile + init, and sampling;
- min bulk ESS, ESS per second of end-to-end wall time, max R-hat and divergences, all
  computed by the same function for both libraries over the same quantities (fixed effects,
  group sds and group deviations);
- peak memory and CPU time;

then the bayesmer/Bambi ratios.

How memory is measured
----------------------
Each (case, library) fit runs in a fresh ``spawn`` child process, so nothing (imports,
compiled code, caches, freed-but-kept heap) carries over from one case to the next and the
peak is per case. PyMC samples its chains in further child processes while nutpie samples in
threads, so the parent polls the whole process tree of the fit every 0.1 s and records the
largest *sum* of resident set sizes (RSS); the child also reports its own
``getrusage(RUSAGE_SELF).ru_maxrss`` (exact, never missed between polls) and the table shows
the larger of the two. Both include the interpreter and the imported libraries (the baseline
after imports is printed too). CPU time is ``ru_utime + ru_stime`` of the fit's process and
its reaped children: on a shared machine it is steadier than wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[1] / "bayesmer" / "datasets"


@dataclass(frozen=True)
class Case:
    """One benchmark model.

    Attributes
    ----------
    name : str
        Short name used with ``--cases``.
    formula : str
        The formula, the same for bayesmer and Bambi.
    family : {'binomial', 'poisson', 'gaussian', 'negativebinomial'}
        bayesmer's family; Bambi gets ``'bernoulli'`` for a binomial one, the same name
        otherwise.
    rows : int
        Number of data rows.
    groups : int
        Number of levels of the grouping factor (0 for a GLM).
    glmer : bool
        Fit with ``bayesmer.glmer`` (else ``bayesmer.glm``).
    in_quick : bool
        Part of a ``--quick`` smoke run.
    dataset : str
        A bundled data set (``load_dataset`` name), ``'synthetic'`` (:func:`synthetic`) or
        one of the simulated data sets of issue 13 (:data:`SIMULATED`).
    bambi_formula : str or None
        The formula in Bambi's spelling where it differs (``I(age**2)``; a nested factor
        written out as ``(1|a) + (1|a:b)``): the same model.
    bambi_note : str
        What differs in Bambi's model, if anything (shown in the details).
    """

    name: str
    formula: str
    family: str
    rows: int
    groups: int
    glmer: bool
    in_quick: bool = True
    dataset: str = "synthetic"
    bambi_formula: str | None = None
    bambi_note: str = ""


CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case("titanic_glm", "survived ~ sex", "binomial", 891, 0, False, dataset="titanic"),
        Case(
            "titanic_glmer",
            "survived ~ sex + (1|pclass)",
            "binomial",
            891,
            3,
            True,
            dataset="titanic",
        ),
        Case(
            "grouse_glmer",
            "TICKS ~ YEAR + cHEIGHT + (1|BROOD)",
            "poisson",
            403,
            118,
            True,
            dataset="grouseticks",
        ),
        Case("synth_1e5", "y ~ a + b + (1|g)", "binomial", 100_000, 50, True),
        Case("synth_1e6", "y ~ a + b + (1|g)", "binomial", 1_000_000, 1_000, True, False),
        Case(
            "grouse_nested",
            "TICKS ~ YEAR + cHEIGHT + (1|LOCATION/BROOD)",
            "poisson",
            403,
            181,
            True,
            False,
            dataset="grouseticks",
            bambi_formula="TICKS ~ YEAR + cHEIGHT + (1|LOCATION) + (1|LOCATION:BROOD)",
        ),
        Case(
            "titanic_slopes",
            "survived ~ sex + (sex|pclass)",
            "binomial",
            891,
            3,
            True,
            False,
            dataset="titanic",
            bambi_note="Bambi fits (sex|pclass) without the correlation (bambi issue 702)",
        ),
        Case(
            "contraception",
            "use01 ~ age + I(age^2) + urban + livch + (urban|district)",
            "binomial",
            1_934,
            60,
            True,
            False,
            dataset="contraception",
            bambi_formula="use01 ~ age + I(age**2) + urban + livch + (urban|district)",
            bambi_note="Bambi fits (urban|district) without the correlation (bambi issue 702)",
        ),
        Case(
            "sleepstudy",
            "Reaction ~ Days + (Days|Subject)",
            "gaussian",
            180,
            18,
            True,
            False,
            dataset="sleepstudy",
            bambi_note="Bambi fits (Days|Subject) without the correlation (bambi issue 702)",
        ),
        Case(
            "salamanders_nb",
            "count ~ spp + mined + (1|site)",
            "negativebinomial",
            644,
            23,
            True,
            False,
            dataset="salamanders",
        ),
        Case(
            "gauss_1e6",
            "y ~ a + b + (1|g)",
            "gaussian",
            1_000_000,
            1_000,
            True,
            False,
        ),
        Case(
            "many_groups",
            "y ~ a + x + (1|g)",
            "binomial",
            100_000,
            10_000,
            True,
            False,
            dataset="many_groups",
        ),
        Case(
            "poisson_many",
            "y ~ a + x + offset(log(t)) + (1|g)",
            "poisson",
            1_000_000,
            100_000,
            True,
            False,
            dataset="poisson_many",
            bambi_formula="y ~ a + x + offset(np.log(t)) + (1|g)",
        ),
        Case(
            "crossed",
            "y ~ age + (1|subject) + (1|item)",
            "binomial",
            7_488,
            336,
            True,
            False,
            dataset="crossed",
        ),
    ]
}

LIBRARIES = ("bayesmer", "bambi")

#: Bambi's tuning steps when ``--tune`` is not given (bayesmer then uses its own default).
TUNE = 1000


@dataclass
class Result:
    """What one (case, library) fit measured.

    Times are seconds, memory MiB. ``None`` where a quantity does not apply.
    """

    case: str
    library: str
    status: str = "ok"
    note: str = ""
    rows: int = 0
    cells: int = 0
    wall: float = math.nan
    build: float = math.nan
    compile: float = math.nan
    sample: float = math.nan
    min_ess_bulk: float = math.nan
    min_ess_tail: float = math.nan
    worst_ess_term: str = ""
    max_rhat: float = math.nan
    divergences: int = -1
    n_steps: float = math.nan
    step_size: float = math.nan
    ess_per_s: float = math.nan
    peak_mb: float = math.nan
    self_maxrss_mb: float = math.nan
    tree_peak_mb: float = math.nan
    fit_maxrss_mb: float = math.nan
    whole_peak_mb: float = math.nan
    base_mb: float = math.nan
    cpu_s: float = math.nan
    import_s: float = math.nan
    load_before: float = math.nan
    load_after: float = math.nan
    sampler: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Data


def synthetic(
    rows: int, groups: int, seed: int = 20261125, family: str = "binomial"
) -> dict[str, Any]:
    """Bernoulli (or gaussian) rows with two factor predictors and group intercepts (as
    numpy arrays).

    ``a`` has 2 levels, ``b`` 3, ``g`` ``groups`` (group sd 0.5), so the data collapse to
    ``6 * groups`` binomial cells (gaussian: residual sd 1, cells of n, sum and sum of
    squares).

    Parameters
    ----------
    rows : int
    groups : int
    seed : int

    Returns
    -------
    dict of str to numpy.ndarray
        Columns ``y`` (0/1), ``a``, ``b``, ``g`` (strings).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, rows)
    b = rng.integers(0, 3, rows)
    g = rng.integers(0, groups, rows)
    u = rng.normal(0.0, 0.5, groups)
    eta = -0.5 + 0.7 * a + np.array([0.0, -0.4, 0.6])[b] + u[g]
    if family == "gaussian":
        y = eta + rng.normal(0.0, 1.0, rows)
    else:
        y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
    width = len(str(groups - 1))
    return {
        "y": y,
        "a": np.array(["a0", "a1"])[a],
        "b": np.array(["b0", "b1", "b2"])[b],
        "g": np.array([f"g{i:0{width}d}" for i in range(groups)])[g],
    }


def _grouped_predictor(n_groups: int, rows: int) -> tuple[Any, dict[str, Any]]:
    """Issue 13's design (seed 0): group effects of sd 0.5, a two-level factor ``a`` and a
    continuous ``x``; the generator (for the outcome) and the linear predictor with the
    columns."""
    import numpy as np

    rng = np.random.default_rng(0)
    u = rng.normal(0, 0.5, n_groups)
    g = rng.integers(0, n_groups, rows)
    a = rng.integers(0, 2, rows)
    x = rng.normal(size=rows)
    eta = -0.5 + 0.8 * a + 0.3 * x + u[g]
    return rng, {"eta": eta, "a": a.astype(str), "x": x, "g": g.astype(str)}


def many_groups() -> dict[str, Any]:
    """Issue 13's case, as the issue draws it (seed 0): 10^5 Bernoulli rows in 10^4 groups,
    a two-level factor ``a`` and a continuous ``x``, so the rows do not collapse."""
    import numpy as np

    rng, cols = _grouped_predictor(10_000, 100_000)
    eta = cols.pop("eta")
    y = (rng.random(eta.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return {"y": y, **cols}


def poisson_many() -> dict[str, Any]:
    """Issue 13's Poisson case (seed 0): 10^6 counts in 10^5 groups with an exposure ``t``
    (uniform on 0.5-2), ``y ~ Poisson(t exp(-0.5 + 0.8 a + 0.3 x + u_g))``, u_g sd 0.5."""
    import numpy as np

    rng, cols = _grouped_predictor(100_000, 1_000_000)
    eta = cols.pop("eta")
    t = rng.uniform(0.5, 2.0, eta.size)
    y = rng.poisson(t * np.exp(eta))
    return {"y": y, "a": cols["a"], "x": cols["x"], "t": t, "g": cols["g"]}


def crossed() -> dict[str, Any]:
    """Issue 13's crossed design (seed 0): 312 subjects each answering the same 24 items
    (7,488 Bernoulli rows), a standardised subject-level covariate ``age``, subject sd 1,
    item sd 0.7: ``y ~ age + (1|subject) + (1|item)``."""
    import numpy as np

    rng = np.random.default_rng(0)
    n_subjects, n_items = 312, 24
    age = rng.normal(size=n_subjects)
    u = rng.normal(0, 1.0, n_subjects)
    v = rng.normal(0, 0.7, n_items)
    s = np.repeat(np.arange(n_subjects), n_items)
    i = np.tile(np.arange(n_items), n_subjects)
    eta = -0.3 + 0.5 * age[s] + u[s] + v[i]
    y = (rng.random(s.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return {
        "y": y,
        "age": age[s],
        "subject": np.array([f"s{k:03d}" for k in s]),
        "item": np.array([f"i{k:02d}" for k in i]),
    }


#: Simulated data sets of issue 13, by :attr:`Case.dataset` name.
SIMULATED = {"many_groups": many_groups, "poisson_many": poisson_many, "crossed": crossed}


def load_pandas(case: Case):
    """The case's data as a pandas DataFrame (for Bambi), without importing bayesmer."""
    import pandas as pd

    labels = {
        "grouseticks": {"INDEX": str, "BROOD": str, "YEAR": str, "LOCATION": str},
        "contraception": {"district": str, "woman": str},
        "sleepstudy": {"Subject": str},
        "salamanders": {"site": str},
    }
    if case.dataset in SIMULATED:
        return pd.DataFrame(SIMULATED[case.dataset]())
    if case.dataset != "synthetic":
        return pd.read_csv(DATA_DIR / f"{case.dataset}.csv", dtype=labels.get(case.dataset))
    return pd.DataFrame(synthetic(case.rows, case.groups, family=case.family))


def load_polars(case: Case):
    """The case's data as a polars DataFrame (for bayesmer)."""
    import polars as pl

    from bayesmer import load_dataset

    if case.dataset in SIMULATED:
        return pl.DataFrame(SIMULATED[case.dataset]())
    if case.dataset != "synthetic":
        return load_dataset(case.dataset)
    return pl.DataFrame(synthetic(case.rows, case.groups, family=case.family))


# ---------------------------------------------------------------------------------------------
# Measurements shared by both libraries


#: What a benchmark's child process sends when its fit is done (its diagnostics follow).
FITTED = "fitted"


def maxrss_mb() -> float:
    """Peak resident memory so far of this process and of its finished children, MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def rss_mb(pid: int | str = "self") -> float:
    """Current resident set size of a process, MiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            pages = int(fh.read().split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc (Linux)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier]
        tree += frontier
    return tree


def diagnose(posterior, sample_stats, names: list[str]) -> dict[str, Any]:
    """Min bulk/tail ESS, max R-hat and divergences over the named posterior variables.

    Rank-normalised R-hat and ESS (Vehtari et al. 2021) from ``arviz_stats``, the same
    estimators bayesmer's convergence gate uses, applied to both libraries alike; also the
    mean number of leapfrog steps (gradient evaluations) per draw and the mean step size.
    """
    import arviz_stats as azs
    import numpy as np

    labels: list[str] = []
    cols = []
    for name in names:
        da = posterior[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        values = da.transpose("chain", "draw", *extra).values.reshape(
            da.sizes["chain"], da.sizes["draw"], -1
        )
        coords = [""] if not extra else [str(v) for v in da[extra[0]].values]
        if len(extra) > 1:
            coords = [str(i) for i in range(values.shape[-1])]
        labels += [f"{name}[{c}]" if c else name for c in coords]
        cols.append(values)
    arr = np.moveaxis(np.concatenate(cols, axis=-1), -1, 0)
    rhat = np.asarray(azs.rhat(arr, chain_axis=-2, draw_axis=-1))
    bulk = np.asarray(azs.ess(arr, method="bulk", chain_axis=-2, draw_axis=-1))
    tail = np.asarray(azs.ess(arr, method="tail", prob=0.05, chain_axis=-2, draw_axis=-1))
    worst = int(np.nanargmin(bulk))
    return {
        "min_ess_bulk": float(np.nanmin(bulk)),
        "min_ess_tail": float(np.nanmin(tail)),
        "worst_ess_term": labels[worst],
        "max_rhat": float(np.nanmax(rhat)),
        "divergences": int(sample_stats["diverging"].values.sum()),
        "n_steps": float(sample_stats["n_steps"].values.mean()),
        "step_size": float(sample_stats["step_size"].values.mean()),
    }


# ---------------------------------------------------------------------------------------------
# One fit, in a child process


def run_bayesmer(
    case: Case, draws: int, tune: int, chains: int, seed: int, res: Result, fitted: Callable
) -> None:
    """Fit ``case`` with bayesmer's defaults; fill ``res``; call ``fitted(res)`` when the fit
    is done (before the benchmark's own diagnostics)."""
    start = time.perf_counter()
    import bayesmer

    res.import_s = time.perf_counter() - start
    res.base_mb = rss_mb()
    data = load_polars(case)
    res.rows = data.height

    start = time.perf_counter()
    make = bayesmer.glmer if case.glmer else bayesmer.glm
    model = make(case.formula, data=data, family=case.family)
    spec = model.spec  # formula, validation, collapsing, design
    res.build = time.perf_counter() - start
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bayesmer.ConvergenceWarning)
        extra = {} if tune is None else {"tune": tune}  # None: bayesmer's default
        model.fit(draws=draws, chains=chains, random_seed=seed, progressbar=False, **extra)
    res.wall = time.perf_counter() - start
    fitted(res)
    res.compile = model.timings["compile"]
    res.sample = model.timings["sample"]
    res.warnings = [str(w.message) for w in caught]
    res.cells = len(spec.cells)
    res.note = ("collapsed" if spec.collapsed else "not collapsed") + "".join(
        f"; {g.name}: {g.parametrization}" for g in spec.groups
    )
    res.sampler = {"tune": repr(model.tune)} | {k: repr(v) for k, v in model.sampler_kwargs.items()}
    post = model.posterior["posterior"].to_dataset()
    names = spec.reported  # fixed effects, sds, deviations, correlations, dispersion
    stats = diagnose(post, model.posterior["sample_stats"].to_dataset(), names)
    for key, value in stats.items():
        setattr(res, key, value)
    # cross-check against the numbers bayesmer reports itself
    own = model.diagnostics
    if abs(float(own["ess_bulk"].min()) - res.min_ess_bulk) > 1e-6 * res.min_ess_bulk:
        res.warnings.append(
            f"bayesmer reports min bulk ESS {float(own['ess_bulk'].min()):.1f}, "
            f"the benchmark computes {res.min_ess_bulk:.1f}"
        )


def run_bambi(
    case: Case,
    draws: int,
    tune: int,
    chains: int,
    seed: int,
    res: Result,
    fitted: Callable,
    cores: int | None,
) -> None:
    """Fit ``case`` with plain Bambi (its defaults: PyMC NUTS); fill ``res``; call
    ``fitted(res)`` when the fit is done.

    ``cores=None`` keeps PyMC's default, ``min(4, cpu_count() // 2)`` processes.
    """
    start = time.perf_counter()
    import bambi
    import numpy as np  # noqa: F401  (Bambi evaluates a formula's np.log(t) in this frame)

    res.import_s = time.perf_counter() - start
    res.base_mb = rss_mb()
    data = load_pandas(case)
    res.rows = res.cells = len(data)

    start = time.perf_counter()
    family = "bernoulli" if case.family == "binomial" else case.family
    model = bambi.Model(case.bambi_formula or case.formula, data, family=family)
    res.build = time.perf_counter() - start
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extra = {} if cores is None else {"cores": cores}
        idata = model.fit(
            draws=draws,
            tune=TUNE if tune is None else tune,
            chains=chains,
            random_seed=seed,
            progressbar=False,
            **extra,
        )
    res.wall = time.perf_counter() - start
    fitted(res)
    post = idata["posterior"].to_dataset()
    res.sample = float(post.attrs.get("sampling_time", math.nan))
    res.compile = res.wall - res.build - res.sample
    res.warnings = [str(w.message) for w in caught]
    used = min(4, mp.cpu_count() // 2) if cores is None else cores
    res.note = f"PyMC NUTS, Bambi defaults, {max(used, 1)} sampling process(es)"
    if case.bambi_note:
        res.note += f"; {case.bambi_note}"
    res.sampler = {"cores": "default" if cores is None else str(cores)}
    names = [str(n) for n in post.data_vars]
    stats = diagnose(post, idata["sample_stats"].to_dataset(), names)
    for key, value in stats.items():
        setattr(res, key, value)


def worker(case: Case, library: str, settings: dict[str, Any], conn) -> None:
    """Child-process entry point: fit, measure, send the :class:`Result` back."""
    res = Result(case.name, library)

    def fitted(res: Result) -> None:
        """The fit is done: its own peak memory, and the parent told to stop counting."""
        res.fit_maxrss_mb = maxrss_mb()
        conn.send(FITTED)

    try:
        args = (
            case,
            settings["draws"],
            settings["tune"],
            settings["chains"],
            settings["seed"],
            res,
            fitted,
        )
        if library == "bayesmer":
            run_bayesmer(*args)
        else:
            run_bambi(*args, settings["bambi_cores"])
        res.ess_per_s = res.min_ess_bulk / res.wall
    except Exception as exc:  # report the failure, keep benchmarking the other cases
        res.status = "error"
        res.note = f"{type(exc).__name__}: {exc}"
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    res.self_maxrss_mb = own.ru_maxrss / 1024
    res.cpu_s = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    conn.send(asdict(res))
    conn.close()


def measure(
    case: Case, library: str, settings: dict[str, Any], timeout: float, poll: float = 0.1
) -> Result:
    """Run one fit in a fresh process; poll the RSS of its process tree; enforce ``timeout``."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    load_before = os.getloadavg()[0]
    proc = ctx.Process(target=worker, args=(case, library, settings, send), daemon=False)
    proc.start()
    send.close()
    tree_peak, whole_peak, start = 0.0, 0.0, time.perf_counter()
    payload, fitting = None, True
    while True:
        tree = sum(rss_mb(p) for p in descendants(proc.pid))
        whole_peak = max(whole_peak, tree)
        if fitting:
            tree_peak = whole_peak
        if recv.poll(poll):
            message = recv.recv()
            if message == FITTED:
                fitting = False
                continue
            payload = message
            break
        if not proc.is_alive():
            break
        if time.perf_counter() - start > timeout:
            for pid in reversed(descendants(proc.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break
    proc.join()
    if payload is None:
        res = Result(case.name, library, status="timeout" if proc.exitcode == -9 else "error")
        res.note = (
            f"stopped after {timeout:.0f} s"
            if res.status == "timeout"
            else f"child exited with code {proc.exitcode}"
        )
        res.wall = time.perf_counter() - start
    else:
        res = Result(**payload)
    res.tree_peak_mb = tree_peak
    # the fit's peak: until the fit is done (the benchmark's own diagnostics come after)
    own = res.fit_maxrss_mb if not math.isnan(res.fit_maxrss_mb) else res.self_maxrss_mb
    res.peak_mb = max(tree_peak, 0.0 if math.isnan(own) else own)
    res.whole_peak_mb = max(
        whole_peak, 0.0 if math.isnan(res.self_maxrss_mb) else res.self_maxrss_mb
    )
    res.load_before = load_before
    res.load_after = os.getloadavg()[0]
    return res


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.{digits}f}"
    return str(value)


def table(results: list[Result]) -> str:
    """Markdown table, one row per (case, library)."""
    head = (
        "| case | library | rows | cells | wall s | build s | compile s | sample s | "
        "min bulk ESS | ESS/s | max R-hat | div | peak MB | CPU s | load 1m |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        if r.status != "ok":
            lines.append(
                f"| {r.case} | {r.library} | {r.rows or '-'} | - | {_fmt(r.wall)} | "
                f"{r.status}: {r.note} | | | | | | | {_fmt(r.peak_mb, 0)} | | |"
            )
            continue
        lines.append(
            f"| {r.case} | {r.library} | {r.rows:,} | {r.cells:,} | {_fmt(r.wall)} | "
            f"{_fmt(r.build, 2)} | {_fmt(r.compile)} | {_fmt(r.sample)} | "
            f"{_fmt(r.min_ess_bulk, 0)} | {_fmt(r.ess_per_s)} | {_fmt(r.max_rhat, 3)} | "
            f"{r.divergences} | {_fmt(r.peak_mb, 0)} | {_fmt(r.cpu_s)} | "
            f"{_fmt(r.load_before)}-{_fmt(r.load_after)} |"
        )
    return "\n".join(lines)


def ratio_table(results: list[Result]) -> str:
    """bayesmer/Bambi ratios per case where both finished."""
    by = {(r.case, r.library): r for r in results}
    head = (
        "| case | wall bayesmer/Bambi | speed-up (Bambi/bayesmer wall) | min bulk ESS ratio | "
        "ESS/s ratio | peak MB ratio | CPU s ratio |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for case in dict.fromkeys(r.case for r in results):
        ours, theirs = by.get((case, "bayesmer")), by.get((case, "bambi"))
        if ours and theirs and ours.status == "ok" and theirs.status == "timeout":
            lines.append(
                f"| {case} | < {ours.wall / theirs.wall:.3f} | > {theirs.wall / ours.wall:.0f}x "
                f"(Bambi stopped at {theirs.wall:.0f} s) | | | | |"
            )
            continue
        if not ours or not theirs or ours.status != "ok" or theirs.status != "ok":
            why = "Bambi not run" if not theirs else f"Bambi {theirs.status}"
            if ours and ours.status != "ok":
                why = f"bayesmer {ours.status}"
            lines.append(f"| {case} | {why} | | | | | |")
            continue
        lines.append(
            f"| {case} | {ours.wall / theirs.wall:.3f} | {theirs.wall / ours.wall:.1f}x | "
            f"{ours.min_ess_bulk / theirs.min_ess_bulk:.2f} | "
            f"{ours.ess_per_s / theirs.ess_per_s:.1f} | {ours.peak_mb / theirs.peak_mb:.2f} | "
            f"{ours.cpu_s / theirs.cpu_s:.2f} |"
        )
    return "\n".join(lines)


def details(results: list[Result]) -> str:
    """Per fit: parametrization, sampler settings, baseline memory, warnings."""
    out = []
    for r in results:
        out.append(
            f"- {r.case} / {r.library}: {r.note}; sampler {r.sampler or '-'}; worst bulk ESS "
            f"{r.worst_ess_term or '-'}, min tail ESS {_fmt(r.min_ess_tail, 0)}; leapfrog steps "
            f"per draw {_fmt(r.n_steps)}, step size {_fmt(r.step_size, 3)}; memory after "
            f"imports {_fmt(r.base_mb, 0)} MB (import {_fmt(r.import_s)} s); peak of the fit = "
            f"max(tree RSS {_fmt(r.tree_peak_mb, 0)}, ru_maxrss {_fmt(r.fit_maxrss_mb, 0)}); "
            f"with the benchmark's own diagnostics after it {_fmt(r.whole_peak_mb, 0)}"
        )
        for text, count in Counter(" ".join(w.split()) for w in r.warnings).items():
            times = f" (x{count})" if count > 1 else ""
            out.append(f"  - warning{times}: {text[:600]}")
    return "\n".join(out)


def header(settings: dict[str, Any], cases: list[str]) -> str:
    """Date, machine, versions and settings."""
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for pkg in ("bayesmer", "bambi", "pymc", "nutpie", "polars", "arviz-stats"):
        try:
            versions.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    cpu = platform.processor() or platform.machine()
    return "\n".join(
        [
            f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"machine: {platform.node()}, {os.cpu_count()} cores, {cpu}, "
            f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}",
            "versions: " + ", ".join(versions),
            f"settings: draws {settings['draws']}, tune "
            f"{settings['tune'] or f'bayesmer default, Bambi {TUNE}'}, chains "
            f"{settings['chains']}, seed {settings['seed']}, Bambi cores "
            f"{settings['bambi_cores'] or 'default'}; cases {', '.join(cases)}",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 200 draws/200 tune, no 1e6")
    p.add_argument(
        "--cases",
        default=None,
        help=f"comma-separated subset of {', '.join(CASES)} (default: all; --quick: no 1e6)",
    )
    p.add_argument("--libraries", default="bayesmer,bambi", help="comma-separated subset")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=None, help="default 1000 (200 with --quick)")
    p.add_argument(
        "--tune",
        type=int,
        default=None,
        help="default: bayesmer's own (1000, or 500 for thousands of group levels), 1000 for "
        "Bambi (200 for both with --quick)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--bambi-max-rows",
        type=int,
        default=None,
        help="skip Bambi on bigger data (default 200,000; 20,000 with --quick)",
    )
    p.add_argument(
        "--bambi-cores",
        type=int,
        default=None,
        help="cores for Bambi's PyMC sampler (default: PyMC's, cpu_count() // 2)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per fit")
    p.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    p.add_argument("--json", type=Path, default=None, help="also write every result here")
    args = p.parse_args(argv)
    if args.draws is None:
        args.draws = 200 if args.quick else 1000
    if args.tune is None and args.quick:
        args.tune = 200
    if args.bambi_max_rows is None:
        args.bambi_max_rows = 20_000 if args.quick else 200_000
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the tables; return a process exit code."""
    args = parse_args(argv)
    if args.cases:
        names = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in names if c not in CASES]
        if unknown:
            print(f"Unknown case(s) {unknown}; choose from {list(CASES)}.", file=sys.stderr)
            return 2
    else:
        names = [n for n, c in CASES.items() if c.in_quick or not args.quick]
    libraries = [lib.strip() for lib in args.libraries.split(",")]
    if not set(libraries) <= set(LIBRARIES):
        print(f"--libraries takes {LIBRARIES}, got {libraries}.", file=sys.stderr)
        return 2
    settings = {
        "draws": args.draws,
        "tune": args.tune,
        "chains": args.chains,
        "seed": args.seed,
        "bambi_cores": args.bambi_cores,
    }
    head = header(settings, names)
    print(head, flush=True)
    skipped: list[str] = []

    results: list[Result] = []
    for name in names:
        case = CASES[name]
        for library in libraries:
            if library == "bambi" and case.rows > args.bambi_max_rows:
                skipped.append(
                    f"[{name}] Bambi skipped: {case.rows:,} rows > --bambi-max-rows "
                    f"{args.bambi_max_rows:,}"
                )
                print(skipped[-1], flush=True)
                continue
            print(f"[{name}] {library} ...", end=" ", flush=True)
            res = measure(case, library, settings, args.timeout)
            results.append(res)
            if args.json:  # after every fit, so an interrupted run keeps what it measured
                args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
            print(
                f"{res.status}, {_fmt(res.wall)} s, min bulk ESS {_fmt(res.min_ess_bulk, 0)}, "
                f"peak {_fmt(res.peak_mb, 0)} MB",
                flush=True,
            )

    report = "\n\n".join(
        [
            head.replace("\n", "  \n"),
            table(results),
            "Ratios (bayesmer / Bambi; ESS/s = min bulk ESS per second of end-to-end wall time)",
            ratio_table(results),
            "Details\n\n" + details(results) + "".join(f"\n- {s}" for s in skipped),
        ]
    )
    print("\n" + report.split("\n\n", 1)[1])
    if args.markdown:
        args.markdown.write_text(report + "\n")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Simulation-based calibration of bayesmer's posteriors (Talts et al. 2018).

Run it with ``make sbc`` (or ``.venv/bin/python benchmarks/sbc.py --help``). For each model and
each data set k, the script

1. simulates a design (group sizes, predictors, exposures),
2. draws every parameter from *the priors the fit uses* (passed to ``glmer(priors=...)``),
3. simulates the outcome from those parameters,
4. fits the model with bayesmer's default sampler settings (4 chains x 1000 draws after 1000
   tuning steps; target acceptance and mass matrix chosen by bayesmer, and so is the per-level
   centred/non-centred parametrization),
5. thins the draws to ``L`` and records the rank of each true value among them (the number of
   thinned draws below it, 0..L).

If the posterior is right, every rank is uniform on 0..L over data sets drawn this way; the
script tests each parameter's ranks with a chi-square test on equal-width bins and draws the
rank histograms with the 99% band of a uniform bin count.

How the priors are matched (see :mod:`bayesmer.priors` and :mod:`bayesmer.pymc_model`):

- ``(Intercept)``: the prior is on the intercept after the predictors are centred at their
  mean over the data rows (``Intercept_c``). The generator draws that centred intercept from
  the prior and converts it to the reported, data-scale ``(Intercept)`` with the same means:
  ``(Intercept) = Intercept_c - mean(X) @ b``.
- slopes: user priors are used as given (not autoscaled); each slope is drawn from its prior.
- group sds (``1|g``): drawn from their HalfNormal priors; each level's deviation is drawn from
  Normal(0, sd). For a nested pair the inner deviations are around the outer level's mean, so
  the linear predictor is ``Intercept + X @ b + u_outer + u_inner`` in both cases.
- correlated random slopes (``(x | g)``): the sds ``1|g`` and ``x|g`` from their HalfNormal
  priors, the correlation ``cor|g`` from the LKJ(eta) prior of a 2 x 2 correlation matrix (density
  proportional to ``(1 - r^2)^(eta - 1)``, i.e. ``(r + 1) / 2 ~ Beta(eta, eta)``), each level's
  ``(u_0, u_x)`` from the bivariate Normal with those sds and that correlation; the linear
  predictor is ``Intercept + X @ b + u_0 + x * u_x``.

Results go to ``--out`` (one JSON line per fitted data set and model, appended as fits finish
so ``--resume`` continues an interrupted run), with ``summary.csv`` (p-value per model and
parameter) and ``sbc_ranks.png`` (the rank histograms).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import special, stats

#: Thinned draws per fit: 99 draws give 100 possible ranks, 20 bins of 5 ranks.
L_DEFAULT = 99
#: Bins of the uniformity test and the histograms (200 data sets: 10 expected per bin).
BINS_DEFAULT = 20


# ---------------------------------------------------------------------------------------------
# Models


@dataclass(frozen=True)
class SBCModel:
    """One model to calibrate.

    Attributes
    ----------
    name : str
        Short name used with ``--models``.
    key : int
        Fixed number that enters the seeds (stable whatever ``--models`` lists).
    family : {'binomial', 'poisson'}
    formula : str
        What ``glmer`` fits.
    priors : dict
        The priors the fit uses and the truths are drawn from: ``('normal', mu, sigma)`` for
        ``(Intercept)`` (on the centred-predictor intercept) and slopes, ``('halfnormal',
        sigma)`` for group sds (``'1|g'``, ``'x|g'``), ``('lkj', eta)`` for the correlation of
        a factor with a random slope (``'cor|g'``).
    design : callable
        ``design(rng) -> polars.DataFrame`` of predictors, grouping columns and, for Poisson,
        the exposure ``t``, without the outcome.
    columns : dict
        Slope term -> function of the design giving its design-matrix column.
    groups : tuple of str
        Grouping columns, outer first.
    description : str
    exposure : str or None
        Exposure column of a Poisson model (``offset(log(t))`` in the formula).
    random_slopes : dict
        Grouping factor -> the one slope term (a key of ``columns``) that varies by it,
        correlated with the factor's intercept (``(x | g)``); factors not listed have a random
        intercept only.
    """

    name: str
    key: int
    family: str
    formula: str
    priors: dict[str, tuple]
    design: Callable[[np.random.Generator], pl.DataFrame]
    columns: dict[str, Callable[[pl.DataFrame], np.ndarray]]
    groups: tuple[str, ...]
    description: str = ""
    exposure: str | None = None
    random_slopes: dict[str, str] = field(default_factory=dict)

    @property
    def slopes(self) -> list[str]:
        return list(self.columns)

    def group_parameters(self, g: str) -> list[str]:
        """Ranked quantities of factor ``g``: ``1|g``, then ``x|g`` and ``cor|g`` with a slope."""
        if g in self.random_slopes:
            return [f"1|{g}", f"{self.random_slopes[g]}|{g}", f"cor|{g}"]
        return [f"1|{g}"]

    @property
    def parameters(self) -> list[str]:
        """Ranked quantities: ``(Intercept)``, slopes, then each factor's sds (``1|g``, ``x|g``)
        and correlation (``cor|g``)."""
        return [
            "(Intercept)",
            *self.slopes,
            *(p for g in self.groups for p in self.group_parameters(g)),
        ]


def _sizes(rng: np.random.Generator, n_groups: int, low: int, high: int) -> np.ndarray:
    return rng.integers(low, high + 1, size=n_groups)


def _one_factor(
    n_groups: int, low: int, high: int, exposure: bool, two_level: bool
) -> Callable[[np.random.Generator], pl.DataFrame]:
    def design(rng: np.random.Generator) -> pl.DataFrame:
        sizes = _sizes(rng, n_groups, low, high)
        n = int(sizes.sum())
        width = len(str(n_groups - 1))
        cols: dict[str, Any] = {
            "g": np.repeat([f"g{i:0{width}d}" for i in range(n_groups)], sizes),
            "x": rng.normal(0.0, 1.0, n),
        }
        if two_level:
            cols["z"] = np.where(rng.random(n) < 0.5, "a", "b")
        if exposure:
            cols["t"] = rng.uniform(0.5, 2.0, n)
        return pl.DataFrame(cols)

    return design


def _nested(
    n_outer: int, inner_per_outer: int, low: int, high: int
) -> Callable[[np.random.Generator], pl.DataFrame]:
    def design(rng: np.random.Generator) -> pl.DataFrame:
        outer = np.repeat([f"s{i}" for i in range(n_outer)], inner_per_outer)
        # inner labels unique across outers, so bayesmer detects the nesting from the data
        inner = [f"{o}p{j}" for o in range(n_outer) for j in range(inner_per_outer)]
        sizes = _sizes(rng, len(inner), low, high)
        n = int(sizes.sum())
        return pl.DataFrame(
            {
                "site": np.repeat(outer, sizes),
                "plot": np.repeat(inner, sizes),
                "x": rng.normal(0.0, 1.0, n),
                "t": rng.uniform(0.5, 2.0, n),
            }
        )

    return design


def _numeric(col: str) -> Callable[[pl.DataFrame], np.ndarray]:
    return lambda d: d[col].to_numpy().astype(float)


def _dummy(col: str, level: str) -> Callable[[pl.DataFrame], np.ndarray]:
    return lambda d: (d[col] == level).to_numpy().astype(float)


MODELS: dict[str, SBCModel] = {
    m.name: m
    for m in [
        SBCModel(
            name="binomial_few",
            key=1,
            family="binomial",
            formula="y ~ x + z + (1|g)",
            priors={
                "(Intercept)": ("normal", 0.0, 1.0),
                "x": ("normal", 0.0, 0.75),
                "zb": ("normal", 0.0, 0.75),
                "1|g": ("halfnormal", 1.0),
            },
            design=_one_factor(8, 5, 60, exposure=False, two_level=True),
            columns={"x": _numeric("x"), "zb": _dummy("z", "b")},
            groups=("g",),
            description="Bernoulli rows, 8 groups of 5-60 rows, numeric x and 2-level z",
        ),
        SBCModel(
            name="poisson_few",
            key=2,
            family="poisson",
            formula="y ~ x + (1|g) + offset(log(t))",
            priors={
                "(Intercept)": ("normal", 0.5, 0.5),
                "x": ("normal", 0.0, 0.3),
                "1|g": ("halfnormal", 0.5),
            },
            design=_one_factor(8, 5, 60, exposure=True, two_level=False),
            columns={"x": _numeric("x")},
            groups=("g",),
            description="counts, 8 groups of 5-60 rows, numeric x, exposure t in 0.5-2",
            exposure="t",
        ),
        SBCModel(
            name="binomial_many",
            key=3,
            family="binomial",
            formula="y ~ x + (1|g)",
            priors={
                "(Intercept)": ("normal", 0.0, 1.0),
                "x": ("normal", 0.0, 0.75),
                "1|g": ("halfnormal", 1.0),
            },
            design=_one_factor(50, 5, 30, exposure=False, two_level=False),
            columns={"x": _numeric("x")},
            groups=("g",),
            description="Bernoulli rows, 50 groups of 5-30 rows, numeric x",
        ),
        SBCModel(
            name="poisson_nested",
            key=4,
            family="poisson",
            formula="y ~ x + (1|site) + (1|plot) + offset(log(t))",
            priors={
                "(Intercept)": ("normal", 0.5, 0.5),
                "x": ("normal", 0.0, 0.3),
                "1|site": ("halfnormal", 0.5),
                "1|plot": ("halfnormal", 0.5),
            },
            design=_nested(6, 4, 3, 15),
            columns={"x": _numeric("x")},
            groups=("site", "plot"),
            description="counts, 24 plots (3-15 rows) nested in 6 sites, numeric x, exposure t",
            exposure="t",
        ),
        SBCModel(
            name="poisson_slopes",
            key=5,
            family="poisson",
            formula="y ~ x + (x | g)",
            priors={
                "(Intercept)": ("normal", 1.0, 0.5),
                "x": ("normal", 0.0, 0.3),
                "1|g": ("halfnormal", 0.5),
                "x|g": ("halfnormal", 0.5),
                "cor|g": ("lkj", 2.0),
            },
            design=_one_factor(25, 10, 30, exposure=False, two_level=False),
            columns={"x": _numeric("x")},
            groups=("g",),
            description="counts, 25 groups of 10-30 rows, numeric x, correlated (x | g)",
            random_slopes={"g": "x"},
        ),
    ]
}


# ---------------------------------------------------------------------------------------------
# Truths and data


def draw_from_prior(prior: tuple, rng: np.random.Generator, size: int | None = None) -> Any:
    """One draw (or ``size`` draws) from a tuple prior, as :func:`bayesmer.priors.to_prior`
    and :func:`bayesmer.priors.lkj_prior` read it: ``('normal', mu, sigma)``,
    ``('halfnormal', sigma)`` or ``('lkj', eta)``, the last one the correlation of a 2 x 2
    correlation matrix under LKJ(eta): ``2 * Beta(eta, eta) - 1`` (density proportional to
    ``(1 - r^2)^(eta - 1)``).

    Raises
    ------
    ValueError
        For any other distribution (the generator knows only these three).
    """
    kind = prior[0].lower()
    if kind == "normal":
        return rng.normal(prior[1], prior[2], size)
    if kind == "halfnormal":
        return np.abs(rng.normal(0.0, prior[1], size))
    if kind == "lkj":
        return 2.0 * rng.beta(prior[1], prior[1], size) - 1.0
    raise ValueError(f"sbc draws only 'normal', 'halfnormal' and 'lkj' priors, got {prior!r}.")


def design_matrix(model: SBCModel, design: pl.DataFrame) -> np.ndarray:
    """The slope columns of the design matrix (rows x slopes)."""
    n = design.height
    return np.column_stack([f(design) for f in model.columns.values()]).reshape(n, -1)


def draw_truth(model: SBCModel, design: pl.DataFrame, rng: np.random.Generator) -> dict[str, Any]:
    """Parameters drawn from the priors the fit uses.

    Returns
    -------
    dict
        ``'(Intercept)'`` (data scale, as reported), ``'Intercept_c'`` (the centred-predictor
        intercept the prior is on), each slope, each ``'1|g'`` (group sd) and ``'u|g'`` (the
        level deviations, one per level in sorted level order). A factor with a random slope
        ``x`` adds ``'x|g'`` (its sd) and ``'cor|g'`` (the correlation), and its ``'u|g'`` holds
        one ``[u_0, u_x]`` pair per level.
    """
    X = design_matrix(model, design)
    xbar = X.mean(axis=0)  # bayesmer centres at the mean over data rows
    alpha_c = float(draw_from_prior(model.priors["(Intercept)"], rng))
    beta = np.array([float(draw_from_prior(model.priors[t], rng)) for t in model.slopes])
    truth: dict[str, Any] = {
        "Intercept_c": alpha_c,
        "(Intercept)": float(alpha_c - xbar @ beta),
    }
    truth.update(zip(model.slopes, beta.tolist(), strict=True))
    for g in model.groups:
        sd = float(draw_from_prior(model.priors[f"1|{g}"], rng))
        n_levels = design[g].n_unique()
        truth[f"1|{g}"] = sd
        if g not in model.random_slopes:
            truth[f"u|{g}"] = rng.normal(0.0, sd, n_levels).tolist()
            continue
        term = model.random_slopes[g]
        sd_x = float(draw_from_prior(model.priors[f"{term}|{g}"], rng))
        r = float(draw_from_prior(model.priors[f"cor|{g}"], rng))
        truth[f"{term}|{g}"] = sd_x
        truth[f"cor|{g}"] = r
        # (u_0, u_x) ~ Normal(0, diag(sd) R diag(sd)), from its Cholesky factor
        chol = np.array([[sd, 0.0], [r * sd_x, np.sqrt(1.0 - r**2) * sd_x]])
        truth[f"u|{g}"] = (rng.normal(0.0, 1.0, (n_levels, 2)) @ chol.T).tolist()
    return truth


def linear_predictor(model: SBCModel, design: pl.DataFrame, truth: dict[str, Any]) -> np.ndarray:
    """``(Intercept) + X @ b + sum of the group deviations`` per row (no offset); a factor with
    a random slope of ``x`` adds ``u_0 + x * u_x``."""
    X = design_matrix(model, design)
    beta = np.array([truth[t] for t in model.slopes])
    eta = truth["(Intercept)"] + X @ beta
    for g in model.groups:
        levels = sorted(design[g].unique().to_list())
        index = design[g].cast(pl.Enum(levels)).to_physical().to_numpy()
        u = np.asarray(truth[f"u|{g}"])[index]
        if g in model.random_slopes:
            u = u[:, 0] + model.columns[model.random_slopes[g]](design) * u[:, 1]
        eta = eta + u
    return eta


def simulate(
    model: SBCModel, design: pl.DataFrame, truth: dict[str, Any], rng: np.random.Generator
) -> pl.DataFrame:
    """The design with an outcome ``y`` drawn given ``truth``."""
    eta = linear_predictor(model, design, truth)
    if model.family == "binomial":
        y = rng.binomial(1, special.expit(eta))
    else:
        exposure = design[model.exposure].to_numpy() if model.exposure else 1.0
        y = rng.poisson(exposure * np.exp(eta))
    return design.with_columns(pl.Series("y", y.astype(np.int64)))


def seeds(base: int, model: SBCModel, k: int) -> tuple[int, int]:
    """Data seed and fit seed of data set ``k`` of ``model`` (deterministic in all three)."""
    data, fit = np.random.SeedSequence([base, model.key, k]).generate_state(2)
    return int(data), int(fit) % 2**31


# ---------------------------------------------------------------------------------------------
# Ranks and uniformity


def thin(draws: np.ndarray, n_keep: int) -> np.ndarray:
    """``n_keep`` draws evenly spaced over the first axis (every (S // n_keep)-th draw).

    Raises
    ------
    ValueError
        If there are fewer than ``n_keep`` draws.
    """
    total = len(draws)
    if total < n_keep:
        raise ValueError(f"cannot thin {total} draws to {n_keep}.")
    return draws[:: total // n_keep][:n_keep]


def rank(truth: float, draws: np.ndarray) -> int:
    """Number of ``draws`` below ``truth``: 0..len(draws) (continuous draws, so no ties)."""
    return int(np.sum(np.asarray(draws) < truth))


def bin_counts(ranks: np.ndarray, n_draws: int, bins: int) -> np.ndarray:
    """Counts of ranks (0..n_draws) in ``bins`` equal-width bins.

    Raises
    ------
    ValueError
        If the ``n_draws + 1`` possible ranks do not split into ``bins`` equal bins, or a rank is
        outside 0..n_draws.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    if (n_draws + 1) % bins:
        raise ValueError(
            f"{n_draws + 1} possible ranks (0..{n_draws}) do not split into {bins} equal bins."
        )
    if ranks.size and (ranks.min() < 0 or ranks.max() > n_draws):
        raise ValueError(f"ranks must lie in 0..{n_draws}.")
    return np.bincount(ranks // ((n_draws + 1) // bins), minlength=bins)


def uniformity_pvalue(ranks: np.ndarray, n_draws: int, bins: int) -> float:
    """Chi-square test p-value of the ranks being uniform over ``bins`` equal bins."""
    counts = bin_counts(ranks, n_draws, bins)
    return float(stats.chisquare(counts).pvalue)


def band(n_sets: int, bins: int, level: float = 0.99) -> tuple[float, float]:
    """Central ``level`` interval of one bin's count under uniform ranks: Binomial(n, 1/bins)."""
    tail = (1.0 - level) / 2.0
    dist = stats.binom(n_sets, 1.0 / bins)
    return float(dist.ppf(tail)), float(dist.ppf(1.0 - tail))


# ---------------------------------------------------------------------------------------------
# One data set


def fit_one(
    model: SBCModel,
    k: int,
    base_seed: int,
    n_draws: int = L_DEFAULT,
    chains: int = 4,
    draws: int = 1000,
    tune: int = 1000,
) -> dict[str, Any]:
    """Simulate data set ``k`` of ``model``, fit it, and rank the truths.

    Returns
    -------
    dict
        ``model, dataset, ranks`` (parameter -> rank in 0..n_draws), ``truth``, ``ess_bulk``
        (min over the ranked parameters), ``rhat`` (max), ``divergences``, ``warnings``
        (messages of every warning the fit raised, ConvergenceWarnings included),
        ``parametrization`` (per grouping factor), ``target_accept``, ``seconds``
        (``compile``, ``sample``, ``total``) and the simulated data's size and mean outcome.
    """
    from bayesmer import glmer

    start = time.perf_counter()
    data_seed, fit_seed = seeds(base_seed, model, k)
    rng = np.random.default_rng(data_seed)
    design = model.design(rng)
    truth = draw_truth(model, design, rng)
    data = simulate(model, design, truth, rng)
    fitted = glmer(model.formula, data=data, family=model.family, priors=dict(model.priors))
    spec = fitted.spec
    expected = ["(Intercept)", *model.slopes]
    if list(spec.terms) != expected:
        raise RuntimeError(f"{model.name}: bayesmer's terms {spec.terms} are not {expected}.")
    for g in spec.groups:
        want = (
            "(Intercept)",
            *([model.random_slopes[g.name]] if g.name in model.random_slopes else []),
        )
        if tuple(g.terms) != want or len(g.terms) > 1 and not g.cor_pairs:
            raise RuntimeError(f"{model.name}: factor {g.name} has terms {g.terms}, not {want}.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted.fit(chains=chains, draws=draws, tune=tune, random_seed=fit_seed, progressbar=False)
    post = fitted.posterior["posterior"].to_dataset()
    b = post["b"].transpose("chain", "draw", "term").values.reshape(-1, len(spec.terms))
    samples = {t: b[:, j] for j, t in enumerate(spec.terms)}
    labels = ["b[(Intercept)]", *(f"b[{t}]" for t in model.slopes)]
    for g in spec.groups:
        if not g.slopes:
            samples[f"1|{g.name}"] = post[g.sd_name].transpose("chain", "draw").values.reshape(-1)
            labels.append(g.sd_name)
            continue
        sd = post[g.sd_name].transpose("chain", "draw", g.term_dim).values.reshape(-1, 2)
        samples[f"1|{g.name}"], samples[f"{g.terms[1]}|{g.name}"] = sd[:, 0], sd[:, 1]
        cor = post[g.cor_name].transpose("chain", "draw", g.cor_dim).values.reshape(-1)
        samples[f"cor|{g.name}"] = cor
        labels += [f"{g.sd_name}[{t}]" for t in g.terms]
        labels += [f"{g.cor_name}[{c}]" for c in g.cor_labels]
    ranks = {p: rank(truth[p], thin(samples[p], n_draws)) for p in model.parameters}
    diag = fitted.diagnostics
    ranked = diag.filter(pl.col("term").is_in(labels))
    return {
        "model": model.name,
        "dataset": k,
        "ranks": ranks,
        "truth": {p: truth[p] for p in model.parameters},
        "ess_bulk": float(ranked["ess_bulk"].min()),
        "rhat": float(ranked["rhat"].max()),
        "divergences": int(fitted.chain_diagnostics["divergences"].sum()),
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        "parametrization": {g.name: g.parametrization for g in spec.groups},
        "target_accept": fitted.sampler_kwargs.get("target_accept"),
        "rows": data.height,
        "mean_y": float(data["y"].mean()),
        "seconds": {
            **{k_: round(v, 3) for k_, v in fitted.timings.items()},
            "total": round(time.perf_counter() - start, 3),
        },
    }


def _work(task: tuple) -> dict[str, Any]:
    name, k, base_seed, n_draws, chains, draws, tune = task
    try:
        return fit_one(MODELS[name], k, base_seed, n_draws, chains, draws, tune)
    except Exception as exc:  # noqa: BLE001 - recorded in the results and reported, not hidden
        return {"model": name, "dataset": k, "error": f"{type(exc).__name__}: {exc}"}


def _init_worker() -> None:
    import bayesmer  # noqa: F401 - imported once per worker process


# ---------------------------------------------------------------------------------------------
# Results on disk


def results_path(out: Path, name: str) -> Path:
    return out / f"ranks_{name}.jsonl"


def read_results(out: Path, name: str) -> list[dict[str, Any]]:
    """Every recorded data set of one model, in data-set order (the last record of each wins)."""
    path = results_path(out, name)
    if not path.exists():
        return []
    records: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            records[rec["dataset"]] = rec
    return [records[k] for k in sorted(records)]


def summarise(
    out: Path, names: list[str], n_draws: int, bins: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """p-value per model and parameter, and per-model fit statistics.

    Returns
    -------
    params : polars.DataFrame
        ``model, parameter, datasets, chi2, p_value, min_bin, max_bin``.
    fits : polars.DataFrame
        ``model, datasets, errors, warned, divergent_fits, divergences, min_ess_bulk,
        median_ess_bulk, max_rhat, fit_seconds`` (mean wall time of one data set: simulate,
        compile, sample, rank), ``fit_minutes`` (their sum: with 2 workers the model's share of
        a run's wall time is about half of it) and ``parametrizations``.
    """
    p_rows, f_rows = [], []
    for name in names:
        model = MODELS[name]
        recs = read_results(out, name)
        ok = [r for r in recs if "error" not in r]
        for p in model.parameters:
            r = np.array([rec["ranks"][p] for rec in ok], dtype=np.int64)
            counts = bin_counts(r, n_draws, bins)
            test = stats.chisquare(counts) if len(r) else None
            p_rows.append(
                {
                    "model": name,
                    "parameter": p,
                    "datasets": len(r),
                    "chi2": float(test.statistic) if test else float("nan"),
                    "p_value": float(test.pvalue) if test else float("nan"),
                    "min_bin": int(counts.min()),
                    "max_bin": int(counts.max()),
                }
            )
        ess = np.array([rec["ess_bulk"] for rec in ok])
        kinds: dict[str, int] = {}
        for rec in ok:
            for g, kind in rec["parametrization"].items():
                label = f"{g}: {kind.split(' ')[0]}"
                kinds[label] = kinds.get(label, 0) + 1
        f_rows.append(
            {
                "model": name,
                "datasets": len(ok),
                "errors": len(recs) - len(ok),
                "warned": sum(bool(rec["warnings"]) for rec in ok),
                "divergent_fits": sum(rec["divergences"] > 0 for rec in ok),
                "divergences": sum(rec["divergences"] for rec in ok),
                "min_ess_bulk": float(ess.min()) if len(ess) else float("nan"),
                "median_ess_bulk": float(np.median(ess)) if len(ess) else float("nan"),
                "max_rhat": max((rec["rhat"] for rec in ok), default=float("nan")),
                "fit_seconds": float(np.mean([rec["seconds"]["total"] for rec in ok]))
                if ok
                else float("nan"),
                "fit_minutes": sum(rec["seconds"]["total"] for rec in ok) / 60,
                "parametrizations": ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
            }
        )
    return pl.DataFrame(p_rows), pl.DataFrame(f_rows)


def plot_ranks(out: Path, names: list[str], n_draws: int, bins: int, path: Path) -> None:
    """One panel per model x parameter: the rank histogram, the expected count and its 99% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(len(MODELS[n].parameters) for n in names)
    fig, axes = plt.subplots(
        len(names), width, figsize=(3.0 * width, 2.4 * len(names)), squeeze=False
    )
    for i, name in enumerate(names):
        model = MODELS[name]
        ok = [r for r in read_results(out, name) if "error" not in r]
        for j in range(width):
            ax = axes[i, j]
            if j >= len(model.parameters):
                ax.set_visible(False)
                continue
            p = model.parameters[j]
            ranks = np.array([rec["ranks"][p] for rec in ok], dtype=np.int64)
            counts = bin_counts(ranks, n_draws, bins)
            low, high = band(len(ranks), bins)
            ax.axhspan(low, high, color="0.85", zorder=0)
            ax.axhline(len(ranks) / bins, color="0.5", lw=0.8, zorder=1)
            ax.bar(np.arange(bins), counts, width=1.0, color="tab:blue", alpha=0.8, zorder=2)
            pval = stats.chisquare(counts).pvalue if len(ranks) else float("nan")
            ax.set_title(f"{name}\n{p}  (p = {pval:.2g}, n = {len(ranks)})", fontsize=8)
            ax.set_xticks([0, bins - 1], ["0", str(n_draws)], fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(
        f"SBC rank histograms ({bins} bins of {(n_draws + 1) // bins} ranks; grey: 99% band "
        "of a bin's count under uniform ranks)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(params: pl.DataFrame, fits: pl.DataFrame) -> str:
    """The two summary tables in Markdown (for benchmarks/README.md)."""
    lines = ["| model | parameter | data sets | chi2 | p-value |", "|---|---|---:|---:|---:|"]
    for r in params.iter_rows(named=True):
        lines.append(
            f"| {r['model']} | `{r['parameter']}` | {r['datasets']} | {r['chi2']:.1f} | "
            f"{r['p_value']:.3f} |"
        )
    lines += [
        "",
        "| model | data sets | errors | fits warned | fits with divergences (total) | "
        "min / median bulk ESS | max R-hat | s per fit | fit-minutes | parametrizations |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in fits.iter_rows(named=True):
        lines.append(
            f"| {r['model']} | {r['datasets']} | {r['errors']} | {r['warned']} | "
            f"{r['divergent_fits']} ({r['divergences']}) | {r['min_ess_bulk']:.0f} / "
            f"{r['median_ess_bulk']:.0f} | {r['max_rhat']:.3f} | {r['fit_seconds']:.1f} | "
            f"{r['fit_minutes']:.0f} | {r['parametrizations']} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        choices=list(MODELS),
        help="models to calibrate (default: all)",
    )
    parser.add_argument("--datasets", type=int, default=200, help="data sets per model")
    parser.add_argument("--seed", type=int, default=1, help="base seed of every data set and fit")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "sbc_results")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1: in-process)")
    parser.add_argument("--thin-to", type=int, default=L_DEFAULT, help="thinned draws L per fit")
    parser.add_argument("--bins", type=int, default=BINS_DEFAULT, help="histogram/test bins")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000, help="draws kept per chain")
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the recorded data sets and fit only the missing ones (otherwise start afresh)",
    )
    args = parser.parse_args(argv)
    if args.datasets < 1:
        parser.error(f"--datasets must be at least 1, got {args.datasets}.")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}.")
    if (args.thin_to + 1) % args.bins:
        parser.error(
            f"--thin-to {args.thin_to} gives {args.thin_to + 1} possible ranks, which do not "
            f"split into --bins {args.bins} equal bins (e.g. --thin-to 99 --bins 20)."
        )
    if args.chains * args.draws < args.thin_to:
        parser.error(f"{args.chains} chains x {args.draws} draws < --thin-to {args.thin_to}.")
    return args


def _results(tasks: list[tuple], workers: int) -> Iterator[dict[str, Any]]:
    if workers == 1:
        yield from map(_work, tasks)
        return
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_work, tasks)


def main(argv: list[str] | None = None) -> int:
    """Run the calibration; print and save the summary. Returns the exit status."""
    args = _parse(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in MODELS if n in args.models]
    if not args.resume:
        for name in names:
            results_path(out, name).unlink(missing_ok=True)
        (out / "runs.jsonl").unlink(missing_ok=True)
    # Round robin over the models, so an interrupted run leaves every model with as many data
    # sets as the others (``--resume`` fills in the rest).
    missing = {}
    for name in names:
        done = {r["dataset"] for r in read_results(out, name) if "error" not in r}
        missing[name] = [k for k in range(args.datasets) if k not in done]
        print(f"{name}: {len(done)} data sets recorded, fitting {len(missing[name])}", flush=True)
    tasks = [
        (name, k, args.seed, args.thin_to, args.chains, args.draws, args.tune)
        for i in range(args.datasets)
        for name in names
        if i < len(missing[name])
        for k in [missing[name][i]]
    ]
    start = time.perf_counter()
    handles = {name: results_path(out, name).open("a") for name in names}
    try:
        for i, rec in enumerate(_results(tasks, args.workers), 1):
            handles[rec["model"]].write(json.dumps(rec) + "\n")
            handles[rec["model"]].flush()
            if "error" in rec:
                print(f"  {rec['model']} data set {rec['dataset']}: {rec['error']}", flush=True)
            if i % 20 == 0 or i == len(tasks):
                print(f"  {i}/{len(tasks)} ({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        for fh in handles.values():
            fh.close()
    if tasks:
        run = {
            "fitted": {name: len(missing[name]) for name in names},
            "wall_seconds": round(time.perf_counter() - start, 1),
            "workers": args.workers,
            "seed": args.seed,
            "chains": args.chains,
            "draws": args.draws,
            "tune": args.tune,
        }
        with (out / "runs.jsonl").open("a") as fh:
            fh.write(json.dumps(run) + "\n")
    params, fits = summarise(out, names, args.thin_to, args.bins)
    params.write_csv(out / "summary.csv")
    fits.write_csv(out / "fits.csv")
    plot_ranks(out, names, args.thin_to, args.bins, out / "sbc_ranks.png")
    print(markdown(params, fits))
    failed = params.filter(pl.col("p_value") < 0.01)
    if failed.height:
        print(f"\nRanks not uniform (p < 0.01):\n{failed}")
    return 1 if failed.height else 0


if __name__ == "__main__":
    sys.exit(main())

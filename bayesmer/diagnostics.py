"""The convergence gate: every fit is checked, and a bad one says so loudly."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import xarray as xr

#: Warnings point at the first line of user code, outside this folder.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

#: Thresholds (Vehtari et al. 2021; Betancourt 2016).
RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
EBFMI_MIN = 0.3

#: Parameters diagnosed at once (bounds the memory of the vectorised estimators).
DIAGNOSE_BLOCK = 128


class ConvergenceWarning(UserWarning):
    """The sampler did not converge well enough to trust the numbers as they are."""


@dataclass(frozen=True)
class Diagnostics:
    """Convergence diagnostics of one fit.

    Attributes
    ----------
    table : pl.DataFrame
        One row per reported parameter: ``term, rhat, ess_bulk, ess_tail, mcse``.
    chains : pl.DataFrame
        One row per chain: ``chain, divergences, ebfmi``.
    problems : list of str
        What went wrong, in words (empty for a clean fit).
    """

    table: pl.DataFrame
    chains: pl.DataFrame
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def divergences(self) -> int:
        return int(self.chains["divergences"].sum())

    @property
    def max_rhat(self) -> float:
        return float(self.table["rhat"].max())

    @property
    def min_ess_bulk(self) -> float:
        return float(self.table["ess_bulk"].min())

    @property
    def min_ess_tail(self) -> float:
        return float(self.table["ess_tail"].min())


def _parameter_diagnostics(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """R-hat, bulk ESS, tail ESS and MCSE of the mean for draws of shape (k, chain, draw)."""
    x = np.ascontiguousarray(x, dtype=float)
    rhat, ess_bulk = rank_diagnostics(x)
    ess_tail = ess_tail_quantiles(x, 0.05)
    mcse = x.reshape(len(x), -1).std(axis=1, ddof=1) / np.sqrt(ess(_split_chains(x)))
    return rhat, ess_bulk, ess_tail, mcse


def _flatten(ds: xr.Dataset, names: list[str]) -> tuple[list[str], list[np.ndarray]]:
    """Labels and (chain, draw, k) values of the named variables, one column per scalar, one
    array per variable (views of the draws where their layout allows: not one copy of them
    all, which for thousands of group effects would double the memory of the draws)."""
    labels: list[str] = []
    cols: list[np.ndarray] = []
    for name in names:
        da = ds[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        if not extra:
            labels.append(name)
            cols.append(da.transpose("chain", "draw").values[..., None])
            continue
        values = da.transpose("chain", "draw", *extra).values
        # one label per scalar, in C order: u_g[level] or u_g[level, term]
        for idx in np.ndindex(*values.shape[2:]):
            coords = ", ".join(str(da[d].values[i]) for d, i in zip(extra, idx, strict=True))
            labels.append(f"{name}[{coords}]")
        cols.append(values.reshape(*values.shape[:2], -1))
    return labels, cols


def diagnose(posterior: xr.Dataset, sample_stats: xr.Dataset, names: list[str]) -> Diagnostics:
    """Compute R-hat, bulk/tail ESS, MCSE, divergences and E-BFMI.

    Parameters
    ----------
    posterior : xarray.Dataset
        The posterior group.
    sample_stats : xarray.Dataset
        The sample_stats group (``diverging`` and ``energy``).
    names : list of str
        Variables to check (the reported ones).
    """
    labels, parts = _flatten(posterior, names)
    # In blocks of parameters, so the FFT and rank buffers stay small for many groups.
    blocks = []
    for values in parts:
        arr = np.moveaxis(values, -1, 0)  # (k, chain, draw)
        blocks += [
            _parameter_diagnostics(arr[i : i + DIAGNOSE_BLOCK])
            for i in range(0, len(arr), DIAGNOSE_BLOCK)
        ]
    columns = ("rhat", "ess_bulk", "ess_tail", "mcse")
    table = pl.DataFrame(
        {"term": labels}
        | {c: np.concatenate([b[j] for b in blocks]) for j, c in enumerate(columns)}
    )
    n_chains = posterior.sizes["chain"]
    div = sample_stats["diverging"].sum("draw").values.astype(int)
    energy = sample_stats["energy"].transpose("chain", "draw").values
    ebfmi = np.square(np.diff(energy, axis=1)).mean(axis=1) / np.var(energy, axis=1)
    chains = pl.DataFrame({"chain": np.arange(n_chains), "divergences": div, "ebfmi": ebfmi})

    problems: list[str] = []
    if div.sum() > 0:
        problems.append(
            f"{div.sum()} divergent transition(s) after tuning: the sampler could not follow "
            "the posterior everywhere; raise target_accept (e.g. fit(target_accept=0.99)) or "
            "use more informative priors."
        )
    n_draws = posterior.sizes["draw"]
    bad_rhat = table.filter(~(pl.col("rhat") <= RHAT_MAX))
    if n_chains < 2:
        problems.append(
            "Only one chain: R-hat needs at least two to tell whether the sampler converged; "
            "fit with chains >= 2 (the default is 4)."
        )
    elif len(bad_rhat):
        worst = bad_rhat.sort("rhat", descending=True).row(0, named=True)
        problems.append(
            f"R-hat above {RHAT_MAX} for {len(bad_rhat)} parameter(s) (worst {worst['term']}: "
            f"{worst['rhat']:.3f}): the chains disagree; run longer (more tune and draws)."
        )
    ess_min = min(ESS_PER_CHAIN_MIN * n_chains, 0.5 * n_chains * n_draws)
    for kind in ("ess_bulk", "ess_tail"):
        low = table.filter(~(pl.col(kind) >= ess_min))
        if len(low):
            worst = low.sort(kind).row(0, named=True)
            problems.append(
                f"{kind.replace('_', ' ')} below {ess_min:.0f} for {len(low)} parameter(s) "
                f"(lowest {worst['term']}: {worst[kind]:.0f}): intervals and tails are "
                "unreliable; draw more (fit(draws=...)) or reparametrize."
            )
    low_bfmi = np.flatnonzero(ebfmi < EBFMI_MIN)
    if len(low_bfmi):
        problems.append(
            f"E-BFMI below {EBFMI_MIN} in chain(s) {low_bfmi.tolist()} "
            f"(min {ebfmi.min():.2f}): the sampler explores the energy poorly; a group sd "
            "near zero often causes this, try a tighter prior on it."
        )
    return Diagnostics(table, chains, problems)


def warn_if_bad(diag: Diagnostics) -> None:
    """Emit one :class:`ConvergenceWarning` listing every problem, if any."""
    if diag.problems:
        text = "The fit has convergence problems:\n- " + "\n- ".join(diag.problems)
        warnings.warn(text, ConvergenceWarning, skip_file_prefixes=(PACKAGE_DIR,))


# ---------------------------------------------------------------------------------------------
# Vectorised rank-normalised R-hat and ESS (Vehtari et al. 2021).
#
# The same algorithms as arviz_stats (rank normalisation with Blom's offsets, split chains,
# Geyer's initial positive and monotone sequences), computed for every parameter at once:
# arviz_stats loops over parameters in Python, which took 5.5 s for the 1,006 parameters of a
# 1,000-group model. tests/test_diagnostics.py checks the results equal arviz_stats'.


def _split_chains(x: np.ndarray) -> np.ndarray:
    """(k, chains, draws) -> (k, 2 * chains, draws // 2): first and last halves of each chain."""
    half = x.shape[2] // 2
    return np.concatenate([x[:, :, :half], x[:, :, x.shape[2] - half :]], axis=1)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise each parameter over all its draws."""
    from scipy import special

    k = x.shape[0]
    flat = x.reshape(k, -1)
    ranks = average_ranks(flat)
    c = 3.0 / 8.0
    return special.ndtri((ranks - c) / (flat.shape[1] - 2 * c + 1)).reshape(x.shape)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks (1..n) of each row's values, ties given their mean rank, a row holding NaN all NaN:
    ``scipy.stats.rankdata(x, method="average", axis=1)``, without importing scipy.stats
    (0.4 s)."""
    rows, n = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    ordered = np.take_along_axis(x, order, axis=1)
    starts = np.ones((rows, n), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    # tie groups numbered across rows, so that bincount counts each row's groups apart
    groups = np.cumsum(starts.ravel()) - 1
    counts = np.bincount(groups)
    first = np.cumsum(counts) - counts  # flat position of each group's first value
    mean_rank = first + (counts + 1) / 2.0
    within = mean_rank[groups].reshape(rows, n) - (np.arange(rows) * n)[:, None]
    ranks = np.empty((rows, n))
    np.put_along_axis(ranks, order, within, axis=1)
    ranks[np.isnan(x).any(axis=1)] = np.nan
    return ranks


def _rhat_basic(x: np.ndarray) -> np.ndarray:
    n = x.shape[2]
    between = n * x.mean(axis=2).var(axis=1, ddof=1)
    within = x.var(axis=2, ddof=1).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant parameter: NaN
        return np.sqrt((between / within + n - 1) / n)


def rank_diagnostics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat and bulk ESS of each parameter.

    R-hat is the larger of the bulk and the folded (tail) version; both share the
    rank-normalised split chains with the bulk ESS, so they are computed once.

    Parameters
    ----------
    x : np.ndarray
        Draws, shape (parameters, chains, draws).

    Returns
    -------
    rhat, ess_bulk : np.ndarray
        R-hat is NaN with fewer than 2 chains or 4 draws, as in arviz_stats.
    """
    split = _split_chains(x)
    z = _z_scale(split)
    ess_bulk = ess(z)
    if x.shape[1] < 2 or x.shape[2] < 4:
        return np.full(x.shape[0], np.nan), ess_bulk
    median = np.median(split.reshape(len(split), -1), axis=1)[:, None, None]
    tail = _rhat_basic(_z_scale(np.abs(split - median)))
    return np.maximum(_rhat_basic(z), tail), ess_bulk


def ess(x: np.ndarray) -> np.ndarray:
    """Effective sample size of each parameter's chains (Geyer's initial monotone sequence).

    Parameters
    ----------
    x : np.ndarray
        Shape (parameters, chains, draws); already split/normalised as the caller wants.
    """
    x = np.asarray(x, dtype=float)
    k, m, n = x.shape
    total = m * n
    if n < 2:
        return np.full(k, np.nan)
    from scipy import fft

    centred = x - x.mean(axis=2, keepdims=True)
    size = fft.next_fast_len(2 * n)
    spec = fft.rfft(centred, n=size, axis=2)
    acov = fft.irfft(spec * np.conjugate(spec), n=size, axis=2)[:, :, :n] / n
    mean_var = acov[:, :, 0].mean(axis=1) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + x.mean(axis=2).var(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - acov.mean(axis=1)) / var_plus[:, None]
    rho[:, 0] = 1.0

    # Pairs P_j = rho[2j] + rho[2j+1]; pair j >= 1 is looked at while the previous one is
    # positive and 2j - 1 < n - 3.
    n_pairs = (n - 2 + 1) // 2  # pairs j = 0 .. n_pairs - 1 satisfy 2j - 1 < n - 3 (j >= 1)
    j_max = max(0, n_pairs - 1)
    pairs = rho[:, 0 : 2 * (j_max + 1) : 2] + rho[:, 1 : 2 * (j_max + 1) : 2]
    if j_max >= 1:
        nonpositive = pairs[:, 1:] <= 0
        j_last = np.where(nonpositive.any(axis=1), nonpositive.argmax(axis=1) + 1, j_max)
    else:
        j_last = np.zeros(k, dtype=int)
    # Monotone: running minimum over the pairs before the last one examined.
    monotone = np.minimum.accumulate(pairs, axis=1)
    before_last = np.arange(pairs.shape[1])[None, :] < j_last[:, None]
    rows = np.arange(k)
    last_even = rho[rows, 2 * j_last]
    last_pair = pairs[rows, j_last]
    last_term = np.where((last_pair >= 0) | (last_even > 0), last_even, 0.0)
    tau = -1.0 + 2.0 * np.where(before_last, monotone, 0.0).sum(axis=1) + last_term
    tau = np.maximum(tau, 1.0 / np.log10(total))
    out = total / tau
    constant = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) < np.finfo(float).resolution
    out = np.where(constant, float(total), out)
    return np.where(np.isnan(rho).any(axis=1) & ~constant, np.nan, out)


def ess_tail_quantiles(x: np.ndarray, prob: float) -> np.ndarray:
    """Tail ESS: the smaller ESS of the indicators x <= q(prob) and x <= q(1 - prob)."""
    k = x.shape[0]
    flat = x.reshape(k, -1)
    out = []
    for p in (prob, 1.0 - prob):
        q = np.quantile(flat, p, axis=1)[:, None, None]
        out.append(ess(_split_chains((x <= q).astype(float))))
    return np.minimum(*out)

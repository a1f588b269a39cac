"""The convergence gate: every fit is checked, and a bad one says so loudly."""

from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from .parallel import map_blocks

if TYPE_CHECKING:
    import xarray as xr

#: Warnings point at the first line of user code, outside this folder.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

#: Thresholds (Vehtari et al. 2021; Betancourt 2016).
RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
EBFMI_MIN = 0.3

#: Parameters diagnosed at once (bounds the memory of the vectorised estimators: a block
#: of 32 parameters x 4,000 draws needs ~21 MB, per thread; blocks of 128 took 1.7 times as
#: long, their 4 MB arrays missing the cache and faulting fresh pages in).
DIAGNOSE_BLOCK = 32


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
    split = _split_chains(x)
    z, order, ordered = _rank_normalised(split)
    rhat, ess_bulk = _rhat(split, z, order, ordered), ess(z)
    # split chains hold every draw when the chains' length is even: sorted, they are x's
    ess_tail = ess_tail_quantiles(x, 0.05, ordered if x.shape[2] % 2 == 0 else None)
    mcse = x.reshape(len(x), -1).std(axis=1, ddof=1) / np.sqrt(ess(split))
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
        # one label per scalar, in C order: u_g[level] or u_g[level, term]; each coordinate
        # read once (reading one converts the whole of it, Arrow-backed, to NumPy)
        coords = [[str(v) for v in da[d].values] for d in extra]
        labels += [f"{name}[{', '.join(c)}]" for c in itertools.product(*coords)]
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
    # In blocks of parameters, so the FFT and rank buffers stay small for many groups;
    # the blocks are computed in threads (the same numbers as one by one).
    arrays = [np.moveaxis(values, -1, 0) for values in parts]  # (k, chain, draw)
    blocks = map_blocks(
        _parameter_diagnostics,
        (arr[i : i + DIAGNOSE_BLOCK] for arr in arrays for i in range(0, len(arr), DIAGNOSE_BLOCK)),
        values=sum(arr.size for arr in arrays),
    )
    columns = ("rhat", "ess_bulk", "ess_tail", "mcse")
    table = pl.DataFrame(
        {"term": labels}
        | {c: np.concatenate([b[j] for b in blocks]) for j, c in enumerate(columns)}
    )
    n_chains = posterior.sizes["chain"]
    # NumPy sums: xarray's reductions import its optional array libraries on first use
    div = sample_stats["diverging"].transpose("chain", "draw").values.sum(axis=1).astype(int)
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
# Each parameter's draws are sorted once: the sort gives the ranks (ties averaged), the
# median, the tail quantiles and, merged, the sort of the folded draws; the normal scores
# of the ranks are looked up. For 10,000 parameters of 4,000 draws the whole takes a few
# seconds, over the cores (:func:`bayesmer.parallel.map_blocks`).


def _split_chains(x: np.ndarray) -> np.ndarray:
    """(k, chains, draws) -> (k, 2 * chains, draws // 2): first and last halves of each chain."""
    half = x.shape[2] // 2
    return np.concatenate([x[:, :, :half], x[:, :, x.shape[2] - half :]], axis=1)


def _tie_codes(ordered: np.ndarray) -> np.ndarray:
    """``first + last``: for each position of rows sorted ascending, the sum of the 0-based
    first and last positions of its run of equal values (so its average rank, 1-based, is
    ``code / 2 + 1``); ``2 * position`` in a row without ties. NaNs (sorted last) each count
    as their own run."""
    k, n = ordered.shape
    position = np.arange(n)
    starts = np.ones((k, n), dtype=bool)
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=starts[:, 1:])
    codes = np.broadcast_to(2 * position, (k, n))
    tied = ~starts.all(axis=1)
    if tied.any():
        codes = codes.copy()
        new = starts[tied]
        first = np.maximum.accumulate(np.where(new, position, 0), axis=1)
        ends = np.ones_like(new)
        ends[:, :-1] = new[:, 1:]
        last = np.minimum.accumulate(np.where(ends, position, n)[:, ::-1], axis=1)[:, ::-1]
        codes[tied] = first + last
    return codes


def _sort_rows(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's sorting order and sorted values (NaNs last)."""
    order = np.argsort(flat, axis=1)
    return order, np.take_along_axis(flat, order, axis=1)


def _scatter(values: np.ndarray, order: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """Values given per sorted position, put back at the rows' own positions; NaN for a
    row holding a NaN (as scipy's rankdata propagates it)."""
    out = np.empty(order.shape)
    if out.size:  # (a chain of 1 draw splits into empty halves)
        np.put_along_axis(out, order, np.broadcast_to(values, order.shape), axis=1)
        out[np.isnan(ordered[:, -1])] = np.nan
    return out


def average_ranks(flat: np.ndarray) -> np.ndarray:
    """Ranks of each row's values, ties given their average rank: exactly
    ``scipy.stats.rankdata(flat, method="average", axis=1)`` (a row holding a NaN is all NaN),
    from one unstable sort per row (rankdata sorts stably, which takes twice as long).

    Parameters
    ----------
    flat : np.ndarray
        Shape (rows, values).
    """
    order, ordered = _sort_rows(flat)
    return _scatter(_tie_codes(ordered) / 2 + 1, order, ordered)


def _z_scale(order: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """Rank-normalise each row (Blom's offsets): ``ndtri((rank - 3/8) / (n + 1/4))``.

    A rank is one of the ``2n - 1`` half-integers ``1, 1.5, ..., n``, so the normal
    quantiles are computed once for those and looked up: the same numbers as computing
    them for every value.
    """
    from scipy import special

    n = order.shape[1]
    c = 3.0 / 8.0
    ranks = np.arange(2 * n - 1) / 2 + 1
    table = special.ndtri((ranks - c) / (n - 2 * c + 1))
    return _scatter(table[_tie_codes(ordered)], order, ordered)


def _median(ordered: np.ndarray) -> np.ndarray:
    """``np.median`` of each row, from the sorted rows (NaN for a row holding a NaN)."""
    n = ordered.shape[1]
    mid = ordered[:, n // 2] if n % 2 else (ordered[:, n // 2 - 1] + ordered[:, n // 2]) / 2
    return np.where(np.isnan(ordered[:, -1]), np.nan, mid)


def _rhat_basic(x: np.ndarray) -> np.ndarray:
    n = x.shape[2]
    between = n * x.mean(axis=2).var(axis=1, ddof=1)
    within = x.var(axis=2, ddof=1).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant parameter: NaN
        return np.sqrt((between / within + n - 1) / n)


def _rank_normalised(split: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-normalised split chains (same shape), with each parameter's sorting order and
    sorted draws."""
    order, ordered = _sort_rows(split.reshape(len(split), -1))
    return _z_scale(order, ordered).reshape(split.shape), order, ordered


def _folded_sort(order: np.ndarray, ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorting order and sorted values of each row's ``|x - median(x)|``, from x's own.

    The distances of the sorted values below the median, read backwards, and of those above
    are each sorted already, so a stable sort (timsort) only merges two runs: several
    times faster than sorting the distances afresh, and the same values in the same order.
    """
    half = ordered.shape[1] // 2
    arranged = np.concatenate([ordered[:, :half][:, ::-1], ordered[:, half:]], axis=1)
    positions = np.concatenate([order[:, :half][:, ::-1], order[:, half:]], axis=1)
    distance = np.abs(arranged - _median(ordered)[:, None])
    merge = np.argsort(distance, axis=1, kind="stable")
    return np.take_along_axis(positions, merge, axis=1), np.take_along_axis(distance, merge, axis=1)


def _rhat(split: np.ndarray, z: np.ndarray, order: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """The larger of the bulk and the folded (tail) rank-normalised split R-hat, from the
    rank-normalised split chains ``z`` and the sorting of the split chains."""
    if split.shape[1] < 4 or split.shape[2] < 2:
        return np.full(split.shape[0], np.nan)
    tail = _rhat_basic(_z_scale(*_folded_sort(order, ordered)).reshape(split.shape))
    return np.maximum(_rhat_basic(z), tail)


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
    z, order, ordered = _rank_normalised(split)
    return _rhat(split, z, order, ordered), ess(z)


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

    size = fft.next_fast_len(2 * n)
    padded = np.empty((k, m, size))  # centred chains, zero-padded (no wrap-around)
    np.subtract(x, x.mean(axis=2, keepdims=True), out=padded[:, :, :n])
    padded[:, :, n:] = 0.0
    spec = fft.rfft(padded, axis=2, overwrite_x=True)
    del padded
    # The chains' autocovariances are only used averaged over chains, and the inverse
    # transform is linear: one inverse FFT of the chains' mean power spectrum.
    parts = spec.view(np.float64)  # real and imaginary parts side by side
    np.square(parts, out=parts)
    power = np.add(parts[:, :, 0::2], parts[:, :, 1::2]).mean(axis=1)
    del spec, parts
    acov = fft.irfft(power, n=size, axis=1)[:, :n] / n  # (k, lags): mean over chains
    mean_var = acov[:, 0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + x.mean(axis=2).var(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - acov) / var_plus[:, None]
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


def mean_ess(draws: np.ndarray) -> np.ndarray:
    """ESS of the mean of each parameter (arviz_stats' ``ess(method="mean")``), in blocks of
    :data:`DIAGNOSE_BLOCK` parameters over the cores.

    Parameters
    ----------
    draws : np.ndarray
        Shape (chains, draws, parameters).
    """
    arr = np.moveaxis(draws, -1, 0)  # (k, chain, draw) view

    def block(i: int) -> np.ndarray:
        return ess(_split_chains(np.ascontiguousarray(arr[i : i + DIAGNOSE_BLOCK], dtype=float)))

    parts = map_blocks(block, range(0, len(arr), DIAGNOSE_BLOCK), values=arr.size)
    return np.concatenate(parts) if parts else np.empty(0)


def ess_tail_quantiles(x: np.ndarray, prob: float, ordered: np.ndarray | None = None) -> np.ndarray:
    """Tail ESS: the smaller ESS of the indicators x <= q(prob) and x <= q(1 - prob).

    ``ordered``, each parameter's draws sorted (any order of the same draws), makes the
    quantiles cheaper (the same numbers).
    """
    flat = x.reshape(x.shape[0], -1) if ordered is None else ordered
    out = []
    for p in (prob, 1.0 - prob):
        q = np.quantile(flat, p, axis=1)[:, None, None]
        out.append(ess(_split_chains((x <= q).astype(float))))
    return np.minimum(*out)

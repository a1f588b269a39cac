"""The convergence gate: every fit is checked, and a bad one says so loudly."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import arviz_stats as azs
import numpy as np
import polars as pl
import xarray as xr

#: Thresholds (Vehtari et al. 2021; Betancourt 2016).
RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
EBFMI_MIN = 0.3


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


def _flatten(ds: xr.Dataset, names: list[str]) -> tuple[list[str], np.ndarray]:
    """Labels and (chain, draw, k) values of the named variables, one column per scalar."""
    labels: list[str] = []
    cols: list[np.ndarray] = []
    for name in names:
        da = ds[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        if not extra:
            labels.append(name)
            cols.append(da.transpose("chain", "draw").values[..., None])
            continue
        (dim,) = extra
        for lv in da[dim].values:
            labels.append(f"{name}[{lv}]")
        cols.append(da.transpose("chain", "draw", dim).values)
    return labels, np.concatenate(cols, axis=-1)


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
    labels, values = _flatten(posterior, names)
    arr = np.moveaxis(values, -1, 0)  # (k, chain, draw)
    rhat = np.asarray(azs.rhat(arr, chain_axis=-2, draw_axis=-1))
    ess_bulk = np.asarray(azs.ess(arr, method="bulk", chain_axis=-2, draw_axis=-1))
    ess_tail = np.asarray(azs.ess(arr, method="tail", prob=0.05, chain_axis=-2, draw_axis=-1))
    mcse = np.asarray(azs.mcse(arr, method="mean", chain_axis=-2, draw_axis=-1))
    table = pl.DataFrame(
        {"term": labels, "rhat": rhat, "ess_bulk": ess_bulk, "ess_tail": ess_tail, "mcse": mcse}
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
    if len(bad_rhat):
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


def warn_if_bad(diag: Diagnostics, stacklevel: int = 3) -> None:
    """Emit one :class:`ConvergenceWarning` listing every problem, if any."""
    if diag.problems:
        text = "The fit has convergence problems:\n- " + "\n- ".join(diag.problems)
        warnings.warn(text, ConvergenceWarning, stacklevel=stacklevel)

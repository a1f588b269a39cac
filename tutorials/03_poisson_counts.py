# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Counts: Poisson regression with a random intercept
#
# Red grouse chicks pick up sheep ticks on the moors of northern Scotland. The `grouseticks`
# data count the ticks on the heads of 403 chicks from 118 broods, caught in three years at
# different altitudes. Counts call for a Poisson model with a log link: its coefficients are
# differences in log rates, and exponentiated they become **rate ratios**.
#
# This tutorial fits `TICKS ~ YEAR + cHEIGHT + (1|BROOD)`, reads the expected number of ticks per
# chick in each year and the effect of altitude, checks with a posterior predictive check
# whether the model reproduces how spread out the counts are (overdispersion), and compares it
# with simpler models by leave-one-out cross-validation (LOO).

# %%
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

import bayesmer
from bayesmer import glm, glmer, load_dataset

pl.Config.set_tbl_cols(-1)
pl.Config.set_tbl_width_chars(140)
pl.Config.set_float_precision(3)

SEED = 2026

# %% [markdown]
# ## The data
#
# `TICKS` is the count, `BROOD` identifies the brood a chick belongs to, `YEAR` is 95, 96 or 97
# (stored as text, so it is a factor), and `cHEIGHT` is the altitude of the site in metres,
# centred on the average altitude.

# %%
ticks = load_dataset("grouseticks")
print(ticks.head())
print(
    ticks.group_by("YEAR")
    .agg(
        chicks=pl.len(),
        broods=pl.col("BROOD").n_unique(),
        mean=pl.col("TICKS").mean(),
        variance=pl.col("TICKS").var(),
        share_zero=(pl.col("TICKS") == 0).mean(),
    )
    .sort("YEAR")
)

# %% [markdown]
# A Poisson distribution has its variance equal to its mean. Within every year the variance of
# the counts is many times the mean: the counts are **overdispersed**. Part of that comes from
# altitude and from broods (chicks of one brood share a nest site and a mother), which the model
# will include; whether that is enough is what the posterior predictive check will tell us.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
axes[0].hist(ticks["TICKS"], bins=np.arange(0, ticks["TICKS"].max() + 2) - 0.5)
axes[0].set(xlabel="ticks on a chick", ylabel="chicks", title="Most chicks carry few ticks")
for year in ("95", "96", "97"):
    rows = ticks.filter(pl.col("YEAR") == year)
    axes[1].scatter(rows["HEIGHT"], rows["TICKS"] + 1, s=12, alpha=0.6, label=f"19{year}")
axes[1].set_yscale("log")
axes[1].set(xlabel="altitude (m)", ylabel="ticks + 1 (log scale)", title="Fewer ticks higher up")
axes[1].legend(frameon=False)
for ax in axes:
    ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

# %% [markdown]
# ## The model
#
# `family='poisson'` uses the log link. We declare `YEAR` a factor (its first level, 95, is the
# reference) and give each brood its own intercept. With `exponentiate=True` the intercept is
# the expected count for a chick in 1995 at average altitude in a typical brood, `YEAR96` and
# `YEAR97` are rate ratios against 1995, and `cHEIGHT` is the rate ratio for one metre of
# altitude.

# %%
model = glmer("TICKS ~ YEAR + cHEIGHT + (1|BROOD)", data=ticks, family="poisson")
model.set_factors("YEAR")
print(model.fit(exponentiate=True, summary=True, random_seed=SEED, progressbar=False))

# %% [markdown]
# ## Rates and rate ratios by year
#
# `emmeans('YEAR')` gives the expected number of ticks per chick in each year (`rate`), at the
# average altitude (numeric covariates are held at their mean) and for a typical brood
# (`re='zero'`).

# %%
print(model.emmeans("YEAR"))

# %% [markdown]
# 1996 was a bad year for the chicks and 1997 a good one. Pairwise contrasts on the response
# scale are rate ratios: `ratio` is how many times more ticks a chick carried in the first year
# of the pair than in the second, computed per posterior draw. `pd` and `prob_gt_null` say how
# sure we can be of the direction.

# %%
print(model.emmeans("YEAR", contrasts="pairwise"))

# %% [markdown]
# `plot_contrasts` draws them as a forest plot, with the line at a ratio of 1 (no difference).

# %%
model.plot_contrasts("YEAR", contrasts="pairwise")

# %% [markdown]
# ## The altitude slope
#
# The `cHEIGHT` rate ratio is per metre, which is a small step. For a numeric variable
# `emmeans` reports a slope (`cHEIGHT_trend`), the derivative of the marginal mean. As in R's
# emtrends and pymer4 it is on the link scale whatever `type` says: the change in log rate per
# metre, the `cHEIGHT` coefficient. `regrid='response'` gives the slope on the response scale
# instead: the change in the expected number of ticks per metre at the average altitude, with
# the years averaged on the log scale (the emmeans convention).

# %%
print(model.emmeans("cHEIGHT"))
print(model.emmeans("cHEIGHT", regrid="response"))

# %% [markdown]
# A log-scale slope adds up over distance: multiplying each draw by 100 and exponentiating gives
# the rate ratio for 100 metres of altitude, with its uncertainty.

# %%
slope = model.posterior["posterior"]["b"].sel(term="cHEIGHT").values.ravel()
per_100m = np.exp(100 * slope)
low, high = np.quantile(per_100m, [0.025, 0.975])
print(
    f"100 m higher: {np.median(per_100m):.2f} times the ticks "
    f"(central 95% interval {low:.2f} to {high:.2f})"
)

# %% [markdown]
# Climbing 100 metres cuts the expected number of ticks to roughly a tenth. `empredict` turns
# this into expected counts along the altitude range, one curve per year, with the 95%
# interval around each.

# %%
heights = np.linspace(ticks["cHEIGHT"].min(), ticks["cHEIGHT"].max(), 40).tolist()
curves = model.empredict(at={"cHEIGHT": heights, "YEAR": ["95", "96", "97"]})
print(curves.head())

fig, ax = plt.subplots(figsize=(6, 3.5))
for year in ("95", "96", "97"):
    rows = curves.filter(pl.col("YEAR") == year)
    ax.plot(rows["cHEIGHT"], rows["rate"], label=f"19{year}")
    ax.fill_between(rows["cHEIGHT"], rows["lower_HPD"], rows["upper_HPD"], alpha=0.2)
ax.set_yscale("log")
ax.set(xlabel="altitude, centred (m)", ylabel="expected ticks per chick")
ax.set_title("Expected ticks by altitude (typical brood)")
ax.legend(frameon=False)
ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

# %% [markdown]
# ## Does the model reproduce the spread of the counts?
#
# A posterior predictive check simulates a new data set from each posterior draw and compares
# statistics of the simulated data with the same statistics of the observed data. If the model
# cannot produce data like ours, the observed value falls outside the simulated range. `ppp`
# is the share of simulated data sets whose statistic is at or above the observed one: values
# near 0 or 1 flag a misfit, values in between are what a well fitting model gives.
#
# We look at the mean count, the mean count per year, the share of chicks without ticks, the
# variance of the counts and the largest count.

# %%
checks = ["mean", "YEAR", "zeros", "var", "max"]
print(model.ppc(stat=checks, random_seed=SEED))

# %% [markdown]
# For comparison, fit the same model without the brood intercepts: a plain Poisson `glm`, which
# assumes that, given year and altitude, every chick's count varies only as a Poisson
# distribution allows.

# %%
no_brood = glm("TICKS ~ YEAR + cHEIGHT", data=ticks, family="poisson")
no_brood.set_factors("YEAR")
no_brood.fit(random_seed=SEED, progressbar=False)
print(no_brood.ppc(stat=checks, random_seed=SEED))

# %% [markdown]
# Without broods the model is far from the data: nearly all observed statistics of spread (the
# variance, the share of zeros, the maximum) lie outside what it can simulate, with `ppp` at 0
# or 1. That is overdispersion. The brood intercepts absorb most of it: chicks of the same brood
# share their exposure to ticks. Not all of it, though: the multilevel model still simulates
# slightly too few chicks without ticks (a low `ppp` for `zeros`), a hint of variation
# between chicks of the same brood. An intercept per chick, `(1|INDEX)`, is the usual next
# step for that.
#
# `plot_ppc` shows the check for the multilevel model as a picture, each observed statistic
# against the distribution of its replicates.

# %%
model.plot_ppc(stat=checks, random_seed=SEED)

# %% [markdown]
# ## Comparing models by LOO
#
# A model that fits the data it was trained on is not necessarily one that predicts new data
# well. PSIS-LOO estimates the expected log predictive density (ELPD) for a chick the model has
# not seen, from a single fit. `loo()` gives it for one model, with `p_loo`, the effective
# number of parameters, and Pareto k values that flag observations for which the approximation
# is unreliable (k above 0.7; bayesmer warns and names them).

# %%
loo_full = model.loo()
print(loo_full)
high_k = loo_full.pointwise.filter(pl.col("pareto_k") > 0.7)
print(f"{high_k.height} chicks with Pareto k > 0.7; p_loo {loo_full.p_loo:.0f}")

# %% [markdown]
# Read this output critically. `p_loo` is well over a hundred for a model with four fixed
# effects, and a couple of dozen chicks have a high Pareto k. Each brood has only three or four
# chicks and its own intercept, so leaving one chick out moves its brood's intercept a lot,
# more than PSIS can reconstruct from a single fit; the flagged chicks typically carry many
# more ticks than their brood mates.
# The ELPD of this model is therefore itself somewhat uncertain. (Refitting without each
# flagged chick, or cross-validating whole broods, would settle it, at the cost of many fits.)
#

# `bayesmer.compare` ranks models of the same data by ELPD. `elpd_diff` is each model's
# difference from the best, and `se_diff` its standard error: a difference of several standard
# errors is a clear preference. Here the candidates are the full model, the model without
# altitude, and the model without broods.

# %%
no_height = glmer("TICKS ~ YEAR + (1|BROOD)", data=ticks, family="poisson")
no_height.set_factors("YEAR")
no_height.fit(random_seed=SEED, progressbar=False)
print(
    bayesmer.compare(
        model, no_height, no_brood, names=["year + altitude + brood", "year + brood", "no brood"]
    )
)

# %% [markdown]
# The model without broods predicts far worse, by more than a thousand ELPD points, many
# standard errors: no doubt about the high-k chicks can reverse that, and it agrees with the
# posterior predictive check. Dropping altitude costs only a few points, less than two
# standard errors of the difference: a mild preference for keeping it, not a decisive one, and
# within reach of the unreliable estimates flagged above. Altitude matters less for prediction
# than its clear slope suggests because all chicks of a brood were caught at one site, so the
# brood intercepts can absorb most of the altitude effect; keeping it still gives a direct,
# interpretable estimate of a known driver of tick load.
#
# ## What we learned
#
# - A Poisson `glmer` with a log link turns exponentiated coefficients into rate ratios;
#   `emmeans('YEAR')` gives expected counts per year and its pairwise contrasts give rate ratios
#   with credible intervals.
# - The altitude slope is per metre; transforming its draws (here to 100 m) gives a readable
#   effect with its uncertainty, and `empredict` draws the expected counts along altitude.
# - Counts are often overdispersed. A posterior predictive check (`ppc`, `plot_ppc`) on the
#   variance, the share of zeros and the maximum shows whether a model can reproduce it; the
#   brood intercepts do most of that work here.
# - `loo()` and `bayesmer.compare` rank models by expected predictive accuracy, with a standard
#   error for every difference; `p_loo` and the Pareto k counts say how far to trust them.

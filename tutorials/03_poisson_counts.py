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
# chick in each year and the association with altitude, shows partial pooling (how the model
# pulls small broods towards the average) and what ignoring the broods does to the altitude
# estimate (pseudo-replication), checks with posterior predictive checks whether the model
# reproduces how spread out the counts are (overdispersion), and compares it with simpler
# models by leave-one-out and by leave-broods-out cross-validation.

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
    .with_columns(variance_over_mean=pl.col("variance") / pl.col("mean"))
    .sort("YEAR")
)

# %% [markdown]
# A Poisson distribution has its variance equal to its mean. In every year the variance of the
# counts is above the mean (`variance_over_mean`), in some years many times over: the counts
# are **overdispersed**. Part of that comes from altitude and from broods (chicks of one brood
# share a nest site and a mother), which the model will include; whether that is enough is
# what the posterior predictive checks will tell us.

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
# These are ratios for a typical brood (`re='zero'`). Unlike an odds ratio, a rate ratio is
# *collapsible*: averaging the rates over the whole population of broods (`re='marginal'`)
# multiplies every year's rate by the same factor, so the population-averaged rate ratios are
# the same as the conditional ones, draw by draw (tutorial 2 shows the opposite for odds
# ratios).

# %%
marginal_ratios = model.emmeans("YEAR", contrasts="pairwise", re="marginal")
print(marginal_ratios.select("contrast", "ratio", "lower_HPD", "upper_HPD"))
same = np.allclose(
    model.emmeans("YEAR", contrasts="pairwise", draws=True)["ratio"].to_numpy(),
    model.emmeans("YEAR", contrasts="pairwise", re="marginal", draws=True)["ratio"].to_numpy(),
)
print("conditional and population-averaged rate ratios equal draw by draw:", same)

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
# Chicks caught 100 metres higher carried that many times the ticks of otherwise comparable
# chicks (a ratio well below 1). This is an association across sites, not the effect of moving
# a chick uphill: altitude goes together with vegetation, sheep and deer, which these data do
# not measure. `empredict` turns the slope into expected counts along the altitude range, one
# curve per year, with the 95% interval around each.

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
# ## Partial pooling: what the brood intercepts do
#
# Each brood has only a few chicks. Estimating each brood's tick rate from its own chicks
# alone (*no pooling*) gives extreme values for small broods; ignoring broods altogether
# (*complete pooling*) gives every brood the same rate. The multilevel model does something in
# between (*partial pooling*): each brood's estimate is pulled towards what year and altitude
# predict, the more so the fewer chicks the brood has. `shrinkage()` lists the three per
# brood, on the log scale, with the number of chicks; `plot_shrinkage()` draws them.

# %%
pooling = model.shrinkage()
print(pooling.sort("n").head(8))
model.plot_shrinkage()

# %%
moved = (
    pooling.with_columns(
        pulled=(pl.col("no_pooling") - pl.col("partial_pooling")).abs(),
    )
    .group_by("n")
    .agg(broods=pl.len(), mean_pull=pl.col("pulled").mean())
    .sort("n")
)
print(moved)

# %% [markdown]
# Broods with one or two chicks move most: their own data say little, so the model leans on
# the rest. Broods with many chicks keep estimates close to their own data.
#
# ## Pseudo-replication: altitude with and without broods
#
# Altitude is measured per site, and all chicks of a brood were caught at one site: a brood's
# chicks share their altitude. A model without the brood intercepts treats the 403 chicks as
# 403 independent pieces of evidence about altitude, when the evidence is closer to the 118
# broods. The altitude slope's interval shows the difference.

# %%
no_brood = glm("TICKS ~ YEAR + cHEIGHT", data=ticks, family="poisson")
no_brood.set_factors("YEAR")
no_brood.fit(random_seed=SEED, progressbar=False)
rows = []
for name, fitted in (("with broods", model), ("without broods", no_brood)):
    draws_100m = 100 * fitted.posterior["posterior"]["b"].sel(term="cHEIGHT").values.ravel()
    low, high = np.exp(np.quantile(draws_100m, [0.025, 0.975]))
    rows.append(
        {
            "model": name,
            "ratio per 100 m": float(np.exp(np.median(draws_100m))),
            "2.5%": float(low),
            "97.5%": float(high),
            "sd of the log ratio": float(draws_100m.std()),
        }
    )
print(pl.DataFrame(rows))

# %% [markdown]
# Without broods the interval is much narrower: the model claims a precision the data do not
# have (pseudo-replication). With broods in the model, the altitude slope is learned from the
# variation between broods, and its interval says so.

# %% [markdown]
# ## Does the model reproduce the spread of the counts?
#
# A posterior predictive check simulates a new data set from each posterior draw and compares
# statistics of the simulated data with the same statistics of the observed data. `ppp` is the
# share of simulated data sets whose statistic is at or above the observed one. What it can and
# cannot show:
#
# - A `ppp` near 0 or 1 flags a feature of the data that the model does not reproduce.
# - A middle `ppp` does **not** show that the model fits: only that this statistic does not
#   reveal a misfit. The check uses the data twice (to fit and to test), so `ppp` values
#   bunch towards the middle even for a poor model.
# - Statistics the model matches by construction test nothing: with an intercept and a `YEAR`
#   factor, the overall mean and the mean per year are reproduced almost automatically.
#   Informative checks look at what the model does not fit directly: the share of zeros, the
#   variance, the largest count.
#
# How the replicates are made matters too. By default (`re='groups'`) each simulated data set
# reuses the fitted brood effects; with 118 broods of about three chicks, those effects can
# soak up extra variation, which makes the check lenient. `re='new'` draws new brood effects
# from the estimated population of broods for every replicate: what a new set of broods would
# look like, a stricter test of the brood distribution.

# %%
checks = ["zeros", "var", "max"]
ppc_table = pl.concat(
    [
        model.ppc(stat=checks, random_seed=SEED, re=re).with_columns(replicate=pl.lit(re))
        for re in ("groups", "new")
    ]
)
print(ppc_table)
# With re='new' the default statistics include the spread of the brood means.
print(model.ppc(random_seed=SEED, re="new"))

# %% [markdown]
# For comparison, the model without brood intercepts assumes that, given year and altitude,
# every chick's count varies only as a Poisson distribution allows.

# %%
print(no_brood.ppc(stat=checks, random_seed=SEED))

# %% [markdown]
# Without broods the model is far from the data: the observed statistics of spread lie outside
# what it can simulate, with `ppp` at or near 0 or 1. That is overdispersion.
#
# The two replications of the multilevel model answer different questions. Reusing the fitted
# broods asks whether chicks vary *within* their broods as a Poisson distribution allows; the
# observed share of zeros and variance sit in the upper tail of those replicates (read the
# `ppp` column), a hint that chicks of one brood differ more than that. Replicating new broods
# asks whether the *population* of broods could produce data like these; its replicates spread
# far wider, because the brood effects vary too, so the same statistics land in the middle,
# and the spread of the brood means is checked directly. Neither `ppp` proves fit. The hint of
# within-brood excess is what an intercept per chick, `(1|INDEX)`, or a negative binomial
# distribution would address.
#
# `plot_ppc` shows the check as a picture, each observed statistic against the distribution of
# its replicates, here with new broods.

# %%
model.plot_ppc(stat=checks, random_seed=SEED, re="new")

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
n_parameters = len(model.spec.terms) + sum(len(g.levels) + 1 for g in model.spec.groups)
print(
    f"{high_k.height} chicks with Pareto k > 0.7; p_loo {loo_full.p_loo:.0f}; "
    f"{n_parameters} parameters for {model.spec.n_obs} chicks"
)

# %% [markdown]
# Read this output critically. The model has four fixed effects, but also 118 brood intercepts
# and their sd: over a hundred parameters. `p_loo` (the effective number of parameters) comes
# out even larger than that count, itself a sign that the importance sampling behind PSIS-LOO
# is struggling. With more parameters than about a fifth of the observations, high Pareto k values
# are expected *even for a correct model*: each brood has only three or four chicks and its
# own intercept, so leaving one chick out moves its brood's intercept more than PSIS can
# reconstruct from a single fit. The ELPD is then itself uncertain.
#
# PSIS-LOO also answers a particular question: how well does the model predict *another chick
# of a brood it has seen*? When the question is about *new broods*, leave whole broods out.
# `kfold(group='BROOD', k=5)` refits the model five times, each time without a fifth of the
# broods, and scores each held-out brood as a new one (its effect drawn from the population).

# %%
by_brood = model.kfold(group="BROOD", k=5, random_seed=SEED, progressbar=False)
print(by_brood)
print(f"LOO (new chick, seen brood): {loo_full.elpd:.1f}; 5-fold by brood: {by_brood.elpd:.1f}")

# %% [markdown]
# Predicting new broods is harder than predicting new chicks of known broods, so its ELPD is
# lower: the two numbers answer different questions and are not compared with each other.
#

# `bayesmer.compare` ranks models of the same data by ELPD. `elpd_diff` is each model's
# difference from the best, and `se_diff` its standard error: a difference of several standard
# errors is a clear preference. Here the candidates are the full model, the model without
# altitude, and the model without broods.

# %%
no_height = glmer("TICKS ~ YEAR + (1|BROOD)", data=ticks, family="poisson")  # no altitude
no_height.set_factors("YEAR")
no_height.fit(random_seed=SEED, progressbar=False)
print(
    bayesmer.compare(
        model, no_height, no_brood, names=["year + altitude + brood", "year + brood", "no brood"]
    )
)

# %% [markdown]
# The model without broods predicts far worse, by many standard errors: no doubt about the
# high-k chicks can reverse that, and it agrees with the posterior predictive check. Compare
# `elpd_diff` with `se_diff` for the model without altitude: a difference of less than about
# two standard errors is at most a mild preference, within reach of the unreliable estimates
# flagged above. Altitude matters less for predicting chicks of known broods than its clear
# slope suggests because all chicks of a brood were caught at one site, so the brood
# intercepts can absorb most of it; keeping it still gives a direct estimate of how tick load
# varies with altitude (an association, as above).
#
# ## What we learned
#
# - A Poisson `glmer` with a log link turns exponentiated coefficients into rate ratios;
#   `emmeans('YEAR')` gives expected counts per year and its pairwise contrasts give rate ratios
#   with credible intervals.
# - The altitude slope is per metre; transforming its draws (here to 100 m) gives a readable
#   association with its uncertainty, and `empredict` draws the expected counts along altitude.
# - Partial pooling pulls small broods towards the average (`shrinkage`, `plot_shrinkage`);
#   leaving the broods out of the model overstates the precision of a brood-level predictor
#   (pseudo-replication).
# - Counts are often overdispersed. A posterior predictive check (`ppc`, `plot_ppc`) on the
#   variance, the share of zeros and the maximum can reveal it; a middle `ppp` is not proof of
#   fit, and replicating new groups (`re='new'`) is stricter than reusing the fitted ones.
# - `loo()` and `bayesmer.compare` rank models by expected predictive accuracy for new
#   observations of known groups; `kfold(group=...)` answers the question for new groups. With
#   many group parameters, high Pareto k values are expected.

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
# models by leave-one-out and by leave-broods-out cross-validation. The last section replaces
# the Poisson distribution by a negative binomial one, for counts that vary more than a
# Poisson distribution allows, and judges the change by posterior predictive checks and LOO.

# %%
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from scipy import stats

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
# distribution would address (the last section fits the negative binomial, with a statistic
# that looks at the variation within broods directly).
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
# Read this output critically. The model has four fixed effects, but also 118 brood intercepts and
# their sd: over a hundred parameters. `p_loo` (the effective number of parameters) comes out even
# larger than that count, itself a sign that the importance sampling behind PSIS-LOO is struggling
# (and, as the last section shows, of a misspecified model). With more parameters than about a fifth
# of the observations, high Pareto k values are expected *even for a correct model*: each brood has
# only three or four chicks and its own intercept, so leaving one chick out moves its brood's
# intercept more than PSIS can reconstruct from a single fit. The ELPD is then itself uncertain.
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
# ## Counts that are overdispersed: Poisson -> negative binomial, judged by ppc and LOO
#
# The checks so far left a hint: chicks of one brood seem to differ from each other more
# than a Poisson distribution allows. There are two classic remedies, and both add variation
# *between chicks* on top of the variation between broods:
#
# - a **negative binomial** distribution (`family='negativebinomial'`): each chick's count is
#   Poisson, but with the chick's own rate, the brood's expected rate times a gamma-distributed
#   factor with mean 1. Averaged over that factor, the count of a chick whose expected number
#   of ticks is `mu` has variance `mu + mu^2 / size` (R's glmmTMB calls it `nbinom2`). The new
#   parameter `size` measures how close to Poisson the counts are: large `size`, nearly
#   Poisson; small `size`, strong overdispersion.
# - an **intercept per chick**, `(1|INDEX)` (an observation-level random effect): the same
#   idea with a normal deviation per chick on the log scale instead of a gamma factor.
#
# Both say "chicks differ by more than chance"; neither says *why* (age, condition, time of
# capture, how well the ticks were counted: the data do not record it). We fit the negative
# binomial: it adds one parameter, `size`, where `(1|INDEX)` would add 403 chick effects and
# their sd. Everything else stays: the same formula, the same brood intercepts,
# `exponentiate=True` for rate ratios. The summary lists `size` after the fixed effects.

# %%
nb = glmer("TICKS ~ YEAR + cHEIGHT + (1|BROOD)", data=ticks, family="negativebinomial")
nb.set_factors("YEAR")
print(nb.fit(exponentiate=True, summary=True, random_seed=SEED, progressbar=False))
print(nb.prior_summary().filter(pl.col("parameter") == "size").select("parameter", "prior"))

# %% [markdown]
# The prior on `size` is Gamma(0.01, 0.01) (brms's default), nearly flat on the log scale, so
# the data decide. The sampler reports no problems. Identical rows (a brood's chicks with the
# same count) are merged and counted, as the header says: the negative binomial's likelihood
# cannot be summed over a cell as the Poisson's can, but the posterior is still exact.
#
# ### What `size` means for a brood
#
# Take a brood whose chicks are expected to carry 5 ticks each (`mu = 5`; the brood's own
# effect included). Under the Poisson model the counts of its chicks vary with variance 5.
# Under the negative binomial the variance is `5 + 25 / size`; the posterior of `size`
# carries over into every derived quantity, here computed draw by draw.

# %%
size = nb.posterior["posterior"]["size"].values.ravel()
mu = 5.0
p = size / (size + mu)  # scipy's parametrisation of NB2: n = size, p = size / (size + mu)


def interval(x: np.ndarray) -> tuple[float, float, float]:
    """Median and central 95% interval of a quantity's draws."""
    low, mid, high = np.quantile(x, [0.025, 0.5, 0.975])
    return float(mid), float(low), float(high)


meaning = []
for quantity, poisson_value, nb_draws in (
    ("variance of a chick's count", mu, mu + mu**2 / size),
    ("sd of a chick's count", np.sqrt(mu), np.sqrt(mu + mu**2 / size)),
    ("P(no ticks)", stats.poisson.pmf(0, mu), stats.nbinom.pmf(0, size, p)),
    ("P(12 ticks or more)", stats.poisson.sf(11, mu), stats.nbinom.sf(11, size, p)),
    ("sd of the rate factor, 1/sqrt(size)", 0.0, 1 / np.sqrt(size)),
):
    mid, low, high = interval(nb_draws)
    meaning.append(
        {
            "quantity (brood with mean 5)": quantity,
            "Poisson": float(poisson_value),
            "neg. binomial": mid,
            "2.5%": low,
            "97.5%": high,
        }
    )
print(f"size: median {np.median(size):.2f}")
print(pl.DataFrame(meaning))

counts = np.arange(21)
typical_size = float(np.median(size))
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.bar(counts - 0.2, stats.poisson.pmf(counts, mu), width=0.4, label="Poisson, mean 5")
ax.bar(
    counts + 0.2,
    stats.nbinom.pmf(counts, typical_size, typical_size / (typical_size + mu)),
    width=0.4,
    label=f"negative binomial, mean 5, size {typical_size:.1f}",
)
ax.set(xlabel="ticks on a chick", ylabel="probability")
ax.set_title("Chicks of one brood expected to carry 5 ticks each")
ax.legend(frameon=False)
ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

# %% [markdown]
# With the same mean, the negative binomial puts far more chicks at zero and more in the long
# right tail: the variance more than doubles. Another reading of `size`: the chick's own rate
# factor has sd `1/sqrt(size)`, so chicks of one brood that "should" carry the same number of
# ticks differ in their own tick rates by roughly half of that rate. That is a lot of
# chick-to-chick variation, and the brood intercepts cannot absorb it, because it is *within*
# broods: their sd in the summary is barely smaller than under the Poisson model. The `icc`
# is smaller, though: its denominator now holds the chick-to-chick variance of the negative
# binomial too (the `1/size` in the note under the summary), so a smaller share of the
# variation lies between broods.
#
# ### The posterior predictive check again
#
# The statistics of the earlier check (`zeros`, `var`) pool all chicks, so most of what they
# see is the variation *between* broods, which the fitted brood effects reproduce either way.
# A statistic aimed at the question asks directly how far chicks lie from their own brood's
# mean: the pooled within-brood variance. `ppc` takes it as a function of the replicated
# counts `y` (data sets x chicks) and of the rows (here only their `BROOD` column is used).


# %%
def within_brood_var(y: np.ndarray, data: pl.DataFrame) -> np.ndarray:
    """Pooled variance of the counts around their brood's mean, one value per data set."""
    levels, index = np.unique(data["BROOD"].to_numpy(), return_inverse=True)
    member = (index[:, None] == np.arange(len(levels))).astype(float)  # chicks x broods
    n = member.sum(axis=0)
    sums = y @ member  # data sets x broods
    squares = (y.astype(float) ** 2).sum(axis=1) - (sums**2 / n).sum(axis=1)
    return squares / (y.shape[1] - len(levels))


overdispersion_checks = {"zeros": "zeros", "var": "var", "within-brood var": within_brood_var}
print(
    pl.concat(
        [
            fitted.ppc(stat=overdispersion_checks, random_seed=SEED).with_columns(
                model=pl.lit(name)
            )
            for name, fitted in (("Poisson", model), ("negative binomial", nb))
        ]
    )
)

# %% [markdown]
# For the Poisson model the within-brood variance of the real chicks lies far above anything
# the model produces (`ppp` at 0): chicks of one brood differ several times more than a
# Poisson distribution allows. The pooled `var` and `zeros` had only hinted at it. Under the
# negative binomial the observed within-brood variance falls inside the replicated interval,
# and `var` and `zeros` move to the middle. The picture, with the negative binomial's
# replicated interval for each statistic against the observed value:

# %%
nb.plot_ppc(stat=overdispersion_checks | {"max": "max"}, random_seed=SEED)

# %% [markdown]
# Read it honestly. The observed within-brood variance and the largest count now sit in the
# *lower* part of the replicated range: the negative binomial, whose variance grows with the
# square of the mean, lets chicks of high-tick broods vary rather more than they do. It fixes
# the big misfit, not every detail; with about three chicks per brood the data cannot say
# much about the exact shape of the chick-to-chick variation (a gamma factor, a lognormal
# one as with `(1|INDEX)`, or a variance linear in the mean). And a `ppp` in the middle is
# not proof of fit, as before.
#
# ### LOO: which model predicts new chicks better?

# %%
print(bayesmer.compare(model, nb, names=["Poisson", "negative binomial"]))

# %% [markdown]
# The negative binomial predicts held-out chicks far better: `elpd_diff` is many times its
# `se_diff`. Two more signs in the same table. First, `p_loo`: for the Poisson model it exceeds the
# number of parameters (counted in the LOO section above), which the loo package's documentation
# reads as a badly misspecified model: the Poisson model has to bend a brood's intercept to every
# unusual chick in it. Under the negative binomial `p_loo` drops well below the parameter count.
# Second, far fewer chicks have Pareto k above 0.7 (`n_bad_k`), so the estimate itself is more
# trustworthy. PSIS-LOO still answers "a new chick of a brood we have seen"; the same ranking holds
# when whole broods are held out (try `nb.kfold(group='BROOD', k=5, random_seed=SEED)` and compare
# its `pointwise` values with `by_brood`'s, brood by brood: it takes a few minutes).
#
# ### What changes in the rate ratios
#
# Overdispersion is often introduced as "the Poisson model's intervals are too narrow". Here
# that holds only for a model that ignores the broods. The year and altitude are measured
# per brood, so their rate ratios are learned from the differences between broods, and the
# brood intercepts already carry that uncertainty. The table puts the year ratios of four
# models side by side: with and without brood intercepts, Poisson and negative binomial.
# `upper / lower` is how many times the upper end of the interval is the lower end.

# %%
nb_no_brood = glm("TICKS ~ YEAR + cHEIGHT", data=ticks, family="negativebinomial")
nb_no_brood.set_factors("YEAR")
nb_no_brood.fit(random_seed=SEED, progressbar=False)
ratios = pl.concat(
    [
        fitted.emmeans("YEAR", contrasts="pairwise")
        .select("contrast", "ratio", "lower_HPD", "upper_HPD")
        .with_columns(model=pl.lit(name))
        for name, fitted in (
            ("Poisson, broods", model),
            ("neg. binomial, broods", nb),
            ("Poisson, no broods", no_brood),
            ("neg. binomial, no broods", nb_no_brood),
        )
    ]
).with_columns(upper_over_lower=pl.col("upper_HPD") / pl.col("lower_HPD"))
with pl.Config(tbl_rows=len(ratios)):
    print(
        ratios.sort("contrast", maintain_order=True).select(
            "contrast", "model", "ratio", "lower_HPD", "upper_HPD", "upper_over_lower"
        )
    )
print(nb_no_brood.ppc(stat=["zeros", "var", "max"], random_seed=SEED))

# %% [markdown]
# - **With broods**, the negative binomial leaves the rate ratios and their intervals nearly
#   where the Poisson model had them. The extra chick-to-chick variation averages out within
#   a brood and says little about the difference between years.
# - **Without broods**, the Poisson intervals are very narrow (pseudo-replication again), and
#   the ratios themselves differ: a Poisson model without broods reproduces the total number
#   of ticks per year, so a few heavily infested broods set them, where the multilevel model
#   compares typical broods. The negative binomial widens the intervals a lot and moves the
#   ratios towards the multilevel model's: it absorbs the brood-to-brood variation as if it
#   were chick-to-chick variation (its `size` is much smaller), and its posterior predictive
#   check (the last table) passes. Yet its intervals are still narrower than the multilevel
#   model's, because it counts 403 independent chicks where the year contrast rests on 118
#   broods. No check of pooled statistics can see the missing broods: the design tells you
#   they belong in the model, the data cannot.
#
# So for these data: keep the brood intercepts (the design demands them), and use the negative
# binomial for the chick-to-chick variation (the checks and LOO prefer it). The conclusions
# about years and altitude barely change; what changes is that the model now describes how
# the counts vary, which matters for predicting a chick, for simulating data and for any
# question about the counts themselves (how many chicks carry no ticks, or a dozen or more).

# %% [markdown]
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
#   variance, the share of zeros and the maximum can reveal it, and a statistic aimed at the
#   question (a function passed to `ppc`, here the variance within broods) reveals it better;
#   a middle `ppp` is not proof of fit, and replicating new groups (`re='new'`) is stricter
#   than reusing the fitted ones.
# - `loo()` and `bayesmer.compare` rank models by expected predictive accuracy for new
#   observations of known groups; `kfold(group=...)` answers the question for new groups. With
#   many group parameters, high Pareto k values are expected.
# - `family='negativebinomial'` adds one parameter, `size` (variance `mu + mu^2 / size`), for
#   chick-to-chick variation beyond the Poisson; `(1|INDEX)` is the other classic remedy.
#   Here the checks and LOO both prefer it, and `p_loo` falls back below the number of
#   parameters.
# - Overdispersion does not always widen the intervals that matter: with the brood
#   intercepts in the model the year rate ratios barely change. Without them the negative
#   binomial widens the intervals, but it does not replace the brood intercepts.

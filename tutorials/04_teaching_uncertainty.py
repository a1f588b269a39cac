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
# # Teaching uncertainty with posterior draws
#
# A Bayesian fit does not hand back one answer; it hands back thousands of plausible answers,
# the posterior draws. That makes uncertainty something students can look at, count and plot,
# rather than a formula for a standard error. This tutorial is a set of classroom
# demonstrations on the Titanic data:
#
# 1. what the model believed **before** seeing the data (the prior) against what it believes
#    after (the posterior);
# 2. how the posterior of a probability **narrows as rows are added**;
# 3. working with **every draw** of a marginal mean, to answer questions a summary table does
#    not;
# 4. turning the result into **one honest sentence**.

# %%
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from bayesmer import glm, load_dataset

pl.Config.set_tbl_cols(-1)
pl.Config.set_tbl_width_chars(140)
pl.Config.set_float_precision(3)
pl.Config.set_fmt_str_lengths(100)

SEED = 2026


def inv_logit(x):
    """Log-odds to probability."""
    return 1 / (1 + np.exp(-x))


# %%
titanic = load_dataset("titanic")
model = glm("survived ~ sex", data=titanic, family="binomial")
model.set_factors("sex")
model.fit(random_seed=SEED, progressbar=False)
print(model.result_fit)

# %% [markdown]
# ## 1. Prior against posterior
#
# Every Bayesian model starts from priors. `prior_summary()` lists the ones in force. bayesmer's
# defaults follow rstanarm: normal distributions centred on zero, with a scale of 2.5 on the
# log-odds of an average passenger and 2.5 / sd(x) for each coefficient. Two things to know
# about them: they are *autoscaled* (the coefficient's prior depends on the spread of its
# predictor in the data), and they are *wide*: "weakly informative" here means that they hardly
# constrain anything, not that they rule out absurd values.

# %%
print(model.prior_summary())

# %% [markdown]
# `sample_prior()` draws parameter values from the priors alone, as if no passenger had been
# observed. Priors are easiest to judge on the scale of the question, so we first turn the prior
# draws of the coefficients into survival probabilities, and set them beside the posterior ones
# (`emmeans` with `draws=True`, explained in section 3). The numbers above are worth reading
# aloud: a sizeable share of the prior sits on survival probabilities below 2% or above 98%,
# and on odds ratios beyond 100-fold, values nobody would call plausible for a shipwreck. A
# wide normal prior on the log-odds piles its tails up near 0 and 1 on the probability scale.
# With 891 passengers it does not matter, as the posterior is a narrow band for each sex; with
# a handful of rows it can (section 2).

# %%
prior = model.sample_prior(draws=4000, random_seed=SEED)
b_prior = prior["prior"]["b"]
prior_female = inv_logit(b_prior.sel(term="(Intercept)").values.ravel())
prior_male = inv_logit(
    (b_prior.sel(term="(Intercept)") + b_prior.sel(term="sexmale")).values.ravel()
)
prior_odds_ratio = np.exp(b_prior.sel(term="sexmale").values.ravel())
extreme = (prior_female < 0.02) | (prior_female > 0.98)
huge = (prior_odds_ratio > 100) | (prior_odds_ratio < 1 / 100)
print(f"prior P(a woman's survival probability < 0.02 or > 0.98) = {extreme.mean():.2f}")
print(f"prior P(odds ratio beyond 100-fold either way)           = {huge.mean():.2f}")
posterior = model.emmeans("sex", draws=True)

fig, axes = plt.subplots(1, 2, figsize=(11, 3), sharey=True)
bins = np.linspace(0, 1, 81)
for ax, sex, prior_draws in zip(axes, ("female", "male"), (prior_female, prior_male), strict=True):
    post_draws = posterior.filter(pl.col("sex") == sex)["prob"]
    ax.hist(prior_draws, bins=bins, density=True, alpha=0.5, color="grey", label="prior")
    ax.hist(post_draws, bins=bins, density=True, alpha=0.7, color="tab:blue", label="posterior")
    ax.set(xlabel=f"P(survive), {sex}", title=sex)
    ax.spines[["top", "right"]].set_visible(False)
axes[0].set_ylabel("density")
axes[0].legend(frameon=False)
fig.tight_layout()

# %% [markdown]
# `plot_prior_posterior()` shows the same comparison for the coefficients themselves, on the
# log-odds scale: the wide prior of each, and the narrow posterior the data left behind.

# %%
model.plot_prior_posterior()

# %% [markdown]
# ## 2. The posterior narrows as data arrive
#
# How much does each additional passenger teach the model? Shuffle the passengers once, then fit
# the same model to the first 10, 40, 160 and 640 of them, and to all 891. Each fit is a new
# model, so each compiles for a few seconds.
#
# For the comparison to be fair, every fit must start from **the same prior**. The defaults
# cannot promise that: they are autoscaled from the data, so a subset with another mix of men
# and women would get another prior. So this section writes the model as one log-odds per sex
# (`survived ~ 0 + sex`, no intercept) and gives both the same explicit prior,
# Normal(0, 1.5): on the probability scale that is nearly flat, the same for every subset.

# %%
fixed_prior = {"sexfemale": ("normal", 0, 1.5), "sexmale": ("normal", 0, 1.5)}
shuffled = titanic.sample(fraction=1.0, shuffle=True, seed=SEED)
sizes = [10, 40, 160, 640]
per_draw = []
for n in [*sizes, titanic.height]:
    subset = shuffled.head(n)
    sub_model = glm("survived ~ 0 + sex", data=subset, family="binomial", priors=fixed_prior)
    sub_model.set_factors("sex")
    sub_model.fit(random_seed=SEED, progressbar=False)
    per_draw.append(sub_model.emmeans("sex", draws=True).with_columns(n=pl.lit(n)))
    counts = subset.group_by("sex").agg(rows=pl.len(), survived=pl.col("survived").sum())
    shown = ", ".join(
        f"{row['rows']} {row['sex']} ({row['survived']} survived)"
        for row in counts.sort("sex").iter_rows(named=True)
    )
    print(f"n = {n:3d}: {shown}")
print(sub_model.prior_summary().select("parameter", "prior", "source"))
per_draw = pl.concat(per_draw)

# %% [markdown]
# Each panel shows the posterior of the survival probability for one sex; darker curves come from
# more passengers. What counts is the number of passengers *of that sex* (printed above): with
# one or two women among the first ten, the posterior for women is nearly as wide as the
# prior, while a handful of men already rules out some values for men. With more rows both
# curves tighten around the values of the full data.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), sharey=True)
all_sizes = [*sizes, titanic.height]
colors = plt.cm.Blues(np.linspace(0.35, 1, len(all_sizes)))
for ax, sex in zip(axes, ("female", "male"), strict=True):
    for n, color in zip(all_sizes, colors, strict=True):
        draws = per_draw.filter((pl.col("sex") == sex) & (pl.col("n") == n))["prob"].to_numpy()
        density, edges = np.histogram(draws, bins=np.linspace(0, 1, 101), density=True)
        ax.plot((edges[:-1] + edges[1:]) / 2, density, color=color, label=f"n = {n}")
    ax.set(xlabel=f"P(survive), {sex}", title=sex, ylim=(0, 25))
    ax.spines[["top", "right"]].set_visible(False)
axes[0].set_ylabel("posterior density")
axes[0].legend(frameon=False)
fig.tight_layout()

# %% [markdown]
# The width of the central 95% interval against the number of passengers, on log-log axes,
# falls roughly along a line of slope -1/2: uncertainty shrinks like one over the square root
# of the sample size. To halve it, you need about four times the data. The women's line sits
# above the men's because only about a third of the passengers were women, and the smallest
# subsets sit off the line, where the (fixed) prior and the handful of passengers of each sex
# still shape the posterior.

# %%
widths = (
    per_draw.group_by("n", "sex")
    .agg(
        median=pl.col("prob").median(),
        width=pl.col("prob").quantile(0.975) - pl.col("prob").quantile(0.025),
    )
    .sort("sex", "n")
)
print(widths)

fig, ax = plt.subplots(figsize=(5.5, 3.5))
for sex in ("female", "male"):
    rows = widths.filter(pl.col("sex") == sex)
    ax.plot(rows["n"], rows["width"], "o-", label=sex)
reference = widths.filter(pl.col("n") == sizes[1])["width"].mean() * np.sqrt(sizes[1])
grid = np.array([sizes[0], titanic.height])
ax.plot(grid, reference / np.sqrt(grid), "k:", label=r"$\propto 1/\sqrt{n}$")
ax.set(xscale="log", yscale="log", xlabel="passengers in the fit", ylabel="width of 95% interval")
ax.set_xticks(all_sizes, [str(n) for n in all_sizes])
ax.set_yticks([0.05, 0.1, 0.2, 0.4, 0.8], ["0.05", "0.1", "0.2", "0.4", "0.8"])
ax.minorticks_off()
ax.legend(frameon=False)
ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

# %% [markdown]
# ## 3. Working with every draw
#
# With `draws=True`, `emmeans` returns one row per level and posterior draw (the draw number is
# in `.draw`). Any quantity computed draw by draw inherits the full uncertainty, with no
# formulas for propagating errors. A few questions a summary table cannot answer directly:

# %%
print(posterior.head())

wide = posterior.pivot(on="sex", index=".draw", values="prob")
difference = wide["female"] - wide["male"]
ratio = wide["female"] / wide["male"]
odds_ratio = (wide["female"] / (1 - wide["female"])) / (wide["male"] / (1 - wide["male"]))
print(f"P(a woman's chance was above 70%)       = {(wide['female'] > 0.7).mean():.3f}")
print(f"P(women's chance > twice men's chance)  = {(ratio > 2).mean():.3f}")
print(f"P(difference > 50 percentage points)    = {(difference > 0.5).mean():.3f}")
print(f"median risk ratio, women / men          = {ratio.median():.2f}")
print(f"median odds ratio, women / men          = {odds_ratio.median():.2f}")

# %% [markdown]
# The last two lines answer "how many times more likely were women to survive?" in two ways
# that students often mix up. The risk ratio (a ratio of probabilities) is the answer to that
# question; the odds ratio, which a logistic regression's coefficient gives, is about three
# times larger here, because survival was common. An odds ratio approximates a risk ratio
# only when the outcome is rare.

# %% [markdown]
# A picture students remember: a random sample of draws, each one a complete, plausible version
# of the world. Each grey line joins the female and male survival probability of one draw;
# together they are the uncertainty. On the left, 100 draws from the fit to 40 passengers; on
# the right, 100 draws from the fit to all of them.

# %%
rng = np.random.default_rng(SEED)
fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), sharey=True)
for ax, n in zip(axes, (sizes[1], titanic.height), strict=True):
    pairs = (
        per_draw.filter(pl.col("n") == n)
        .pivot(on="sex", index=".draw", values="prob")
        .select("female", "male")
        .to_numpy()
    )
    shown = pairs[rng.choice(len(pairs), size=100, replace=False)]
    ax.plot([0, 1], shown.T, color="grey", alpha=0.25, lw=0.8)
    ax.plot([0, 1], np.median(pairs, axis=0), "o-", color="black", label="posterior median")
    ax.set_xticks([0, 1], ["female", "male"])
    ax.set(xlim=(-0.3, 1.3), ylim=(0, 1), title=f"100 posterior draws, n = {n}")
    ax.spines[["top", "right"]].set_visible(False)
axes[0].set_ylabel("P(survive)")
axes[0].legend(frameon=False, loc="lower left")
fig.tight_layout()

# %% [markdown]
# ## 4. One honest sentence
#
# A good report says what was estimated, how large it is, how uncertain it is, and under which
# assumptions, without claiming more than the model can support. Build it from the numbers
# rather than typing them in by hand.

# %%
summary = model.emmeans("sex")
female, male = summary.sort("sex").iter_rows(named=True)
shares = titanic.group_by("sex").agg(pl.col("survived").mean()).sort("sex")["survived"]
rr_low, rr_high = np.quantile(ratio.to_numpy(), [0.025, 0.975])
sentence = (
    f"Of the {titanic.height} passengers in these data, {shares[0]:.0%} of the women and "
    f"{shares[1]:.0%} of the men survived. A Bayesian logistic regression with rstanarm-style "
    f"default priors puts the underlying chance of survival at {female['prob']:.2f} for women "
    f"(95% credible interval {female['lower_HPD']:.2f} to {female['upper_HPD']:.2f}) and "
    f"{male['prob']:.2f} for men ({male['lower_HPD']:.2f} to {male['upper_HPD']:.2f}): women "
    f"were about {ratio.median():.1f} times as likely to survive as men (central 95% interval "
    f"{rr_low:.1f} to {rr_high:.1f}). This describes an association; it does not by itself "
    f"explain its cause."
)
print(sentence)

# %% [markdown]
# What the sentence avoids is as important as what it says:
#
# - no "significant": it reports the size of the effect and its uncertainty instead;
# - no interval on a known number: the shares of survivors among these 891 passengers are
#   counted, not estimated; the intervals are about the chance of survival behind them (what
#   the model says about passengers like these);
# - no "proves": a credible interval is conditional on the model and the priors, which are
#   named;
# - "times as likely" is a risk ratio, not the odds ratio;
# - no causal language: sex is associated with survival here, and the association may run
#   through an evacuation policy of "women and children first", through where passengers were
#   berthed, or through whatever else this model leaves out;
# - no false precision: two decimals, because the intervals are several hundredths wide.
#
# ## What we learned
#
# - `prior_summary()`, `sample_prior()` and `plot_prior_posterior()` show what the model
#   assumed and how far the data moved it. The default priors favour neither sex and are wide:
#   a good share of their mass sits on extreme probabilities and odds ratios. They are
#   autoscaled from the data, so fix the prior explicitly when comparing fits to different data.
# - Refitting on growing subsets with one fixed prior shows the posterior narrowing like
#   $1/\sqrt{n}$: four times the data for half the uncertainty.
# - `emmeans(..., draws=True)` gives every draw of a marginal mean, so any derived question
#   (a threshold, a ratio, a difference) is answered by counting draws.
# - An honest report gives the estimate, its interval, the assumptions, and no more than that.

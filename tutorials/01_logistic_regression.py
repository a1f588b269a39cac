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
# # Logistic regression, the Bayesian way
#
# Who survived the sinking of the Titanic? This tutorial answers one small question with a
# Bayesian logistic regression: how much more likely were women to survive than men? Along the
# way it shows the three scales a logistic model lives on (log-odds, odds, probability), how
# `bayesmer.glm` reports its estimates on each of them, and how to ask questions directly on
# the probability scale with `emmeans`, where every answer comes with its full posterior
# uncertainty. "How many times more likely" has two common answers, a ratio of probabilities
# (the *risk ratio*) and a ratio of odds (the *odds ratio*); here they differ by a factor of
# three, and the tutorial shows both.
#
# The model is fitted by Markov chain Monte Carlo (PyMC, sampled with nutpie). Instead of a
# single best estimate and a standard error, a fit gives thousands of plausible parameter
# values (*posterior draws*); every number below is a summary of those draws.

# %%
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from bayesmer import glm, load_dataset
from bayesmer.draws import hdi  # highest-density interval of draws, as bayesmer computes it

# Show every column of the tables and three decimals.
pl.Config.set_tbl_cols(-1)
pl.Config.set_tbl_width_chars(140)
pl.Config.set_float_precision(3)

SEED = 2026  # pins the sampler, so the numbers in this tutorial are reproducible

# %% [markdown]
# ## The data: survival by sex
#
# `load_dataset('titanic')` returns the 891 passengers as a polars DataFrame. `survived` is 1
# for passengers who survived and 0 otherwise, so its mean within a group is the share of that
# group who survived.

# %%
titanic = load_dataset("titanic")
by_sex = (
    titanic.group_by("sex")
    .agg(
        passengers=pl.len(),
        survivors=pl.col("survived").sum(),
        share_survived=pl.col("survived").mean(),
    )
    .sort("sex")
)
print(by_sex)

# %% [markdown]
# Roughly three women in four survived, but fewer than one man in five. A bar chart of the
# counts makes the asymmetry plain.

# %%
counts = titanic.group_by("sex", "survived").len().sort("sex", "survived")
fig, ax = plt.subplots(figsize=(5, 3))
width = 0.38
for outcome, label in ((0, "died"), (1, "survived")):
    rows = counts.filter(pl.col("survived") == outcome)
    offset = (outcome - 0.5) * width
    ax.bar(np.arange(rows.height) + offset, rows["len"], width, label=label)
ax.set_xticks(np.arange(by_sex.height), by_sex["sex"].to_list())
ax.set_ylabel("passengers")
ax.set_title("Titanic passengers by sex and outcome")
ax.legend(frameon=False)
ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

# %% [markdown]
# ## Three scales: probability, odds and log-odds
#
# A logistic regression does not model the probability $p$ of surviving directly. It models
# the **log-odds**, a transformation of $p$ that can take any real value, so that a linear
# combination of predictors can never produce an impossible probability:
#
# $$
# \text{odds} = \frac{p}{1 - p}, \qquad
# \text{log-odds} = \operatorname{logit}(p) = \ln \frac{p}{1 - p}, \qquad
# p = \frac{1}{1 + e^{-\text{log-odds}}} = \frac{\text{odds}}{1 + \text{odds}}.
# $$
#
# A probability of 0.5 is odds of 1 (one survivor per death) and log-odds of 0. Odds above 1
# mean survival is more likely than death; negative log-odds mean it is less likely. The curves
# below show how the three scales map onto each other.

# %%
log_odds = np.linspace(-4, 4, 201)
odds = np.exp(log_odds)
prob = odds / (1 + odds)

fig, axes = plt.subplots(1, 3, figsize=(11, 3))
axes[0].plot(log_odds, odds)
axes[0].set(xlabel="log-odds", ylabel="odds", title="exp turns log-odds into odds")
axes[1].plot(odds, prob)
axes[1].set(xlabel="odds", ylabel="probability", title="odds / (1 + odds)", xlim=(0, 20))
axes[2].plot(log_odds, prob)
axes[2].axhline(0.5, color="grey", lw=0.8, ls=":")
axes[2].axvline(0, color="grey", lw=0.8, ls=":")
axes[2].set(xlabel="log-odds", ylabel="probability", title="the logistic curve")
for ax in axes:
    ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

# %% [markdown]
# The same transformations applied to the observed shares tell us what to expect from the
# model before fitting it. The *odds ratio* of men to women is the odds of a man surviving
# divided by the odds of a woman surviving; on the log-odds scale that ratio becomes a
# difference.

# %%
by_sex_scales = by_sex.with_columns(
    odds=pl.col("share_survived") / (1 - pl.col("share_survived")),
).with_columns(log_odds=pl.col("odds").log())
print(by_sex_scales)

odds_female, odds_male = by_sex_scales["odds"].to_list()
print(f"odds ratio, male / female: {odds_male / odds_female:.3f}")
print(f"difference in log-odds, male - female: {np.log(odds_male / odds_female):.3f}")

# %% [markdown]
# ## Fitting the model
#
# `glm` takes an R-style formula, the data and the response family. `set_factors('sex')`
# declares `sex` categorical; its first level (here `female`, alphabetically) becomes the
# reference level, so the model has an intercept (the log-odds for women) and a `sexmale`
# coefficient (how much lower the log-odds are for men).
#
# `fit` draws from the posterior: by default 4 chains of 1000 draws after 1000 tuning steps.
# `random_seed` makes the draws reproducible and `progressbar=False` keeps the output tidy.
# The first fit compiles the model, which takes a few seconds; refitting reuses the compiled
# model.

# %%
model = glm("survived ~ sex", data=titanic, family="binomial")
model.set_factors("sex")
model.fit(random_seed=SEED, progressbar=False)
print(model.params)

# %% [markdown]
# `params` gives the posterior median of each coefficient on the log-odds scale. The
# intercept matches the log-odds of survival for women computed by hand above, and `sexmale`
# matches the difference in log-odds between men and women: with 891 passengers and the weak
# default priors, the data dominate.
#
# ### On the odds scale
#
# Log-odds are hard to think in. Refitting with `exponentiate=True` reports `exp()` of each
# coefficient: the intercept becomes the odds of survival for women, and `sexmale` becomes the
# odds ratio of men to women.

# %%
model.fit(exponentiate=True, random_seed=SEED, progressbar=False)
print(model.params)

# %%
odds_ratio_median = model.params.filter(pl.col("term") == "sexmale")["estimate"].item()
print(
    f"A man's odds of surviving were {odds_ratio_median:.3f} times a woman's: "
    f"about 1/{1 / odds_ratio_median:.0f}."
)

# %% [markdown]
#
# `result_fit` adds the uncertainty: the posterior standard deviation (`sd`), the bounds of the
# 95% highest-density credible interval (`conf_low`, `conf_high`), the probability of
# direction (`pd`, explained below) and the sampler's convergence diagnostics (`rhat` close to
# 1 and large effective sample sizes `ess_bulk`, `ess_tail` mean the chains agree and mixed
# well).

# %%
print(model.result_fit)

# %% [markdown]
# `summary()` puts all of this in one report, together with the sampler settings, the
# convergence checks and the model's expected log predictive density under leave-one-out
# cross-validation (ELPD-LOO, used to compare models).

# %%
print(model.summary())

# %% [markdown]
# ## Asking questions on the probability scale: `emmeans`
#
# Coefficients answer questions about the model's parameters. Usually we want answers about
# outcomes: *what was the probability of surviving for a woman, and for a man?* `emmeans`
# (estimated marginal means) computes such answers from every posterior draw and summarises
# the result. With the default `type='response'` the answer is a probability: the posterior
# median (`prob`), its posterior standard deviation (`SD`), and the 95% highest posterior
# density interval (`lower_HPD`, `upper_HPD`).

# %%
print(model.emmeans("sex"))

# %% [markdown]
# These are the observed shares again, now with credible intervals. The same question on the
# link scale (`type='link'`) gives log-odds: the female row is the intercept, and the male row
# is the intercept plus `sexmale`.

# %%
print(model.emmeans("sex", type="link"))

# %% [markdown]
# ### A contrast as an odds ratio
#
# A contrast is a weighted sum of the marginal means, with one weight per level in level
# order (`female`, `male`). The weights `[-1, 1]` take the male log-odds minus the female
# log-odds. On the response scale `emmeans` exponentiates that difference in every draw, which
# turns it into the odds ratio of men to women. (Only the weights matter: the name is a label
# of your choosing. We keep the name `female_minus_male` from the pymer4 tutorial that
# bayesmer grew from, but these weights put men in the numerator.)

# %%
contrast = {"female_minus_male": [-1, 1]}
print(model.emmeans("sex", contrasts=contrast))

# %% [markdown]
# The odds ratio is the exponentiated `sexmale` coefficient, and on the link scale the contrast
# is `sexmale` itself, draw for draw. The `pd` column is the probability of direction, and
# `prob_gt_null` the posterior probability that the effect is above the null (an odds ratio of
# 1 on this scale, a difference of 0 on the link scale).

# %%
print(model.emmeans("sex", contrasts=contrast, type="link"))

# %% [markdown]
# Reversing the weights puts women in the numerator: the odds ratio of women to men. This time
# the name says what the weights compute.

# %%
print(model.emmeans("sex", contrasts={"female_over_male": [1, -1]}))

# %% [markdown]
# ### Odds ratio or risk ratio?
#
# "Women's odds of surviving were about twelve times men's" is true, but it does **not** mean
# that women were twelve times as likely to survive. "Times as likely" is a ratio of
# probabilities, the *risk ratio*. The two ratios agree only when the outcome is rare in both
# groups (then odds and probabilities are close); here three women in four survived, and the
# odds ratio is far from the risk ratio. Both come from the same draws: `emmeans(...,
# draws=True)` gives every draw of each probability, and their ratio per draw is the
# posterior of the risk ratio.

# %%
per_draw = model.emmeans("sex", draws=True)
wide = per_draw.pivot(on="sex", index=".draw", values="prob")
p_f, p_m = wide["female"].to_numpy(), wide["male"].to_numpy()
ratios = {
    "risk ratio, women / men": p_f / p_m,
    "odds ratio, women / men": (p_f / (1 - p_f)) / (p_m / (1 - p_m)),
    "risk difference, women - men": p_f - p_m,
}
side_by_side = pl.DataFrame(
    [
        {
            "quantity": name,
            "median": float(np.median(v)),
            "lower_HPD": float(hdi(v[:, None], 0.95)[0, 0]),
            "upper_HPD": float(hdi(v[:, None], 0.95)[0, 1]),
        }
        for name, v in ratios.items()
    ]
)
print(side_by_side)
rr, orr = np.median(ratios["risk ratio, women / men"]), np.median(ratios["odds ratio, women / men"])
print(f"Women were about {rr:.1f} times as likely to survive as men; their odds were {orr:.0f}x.")

# %% [markdown]
# Report the ratio that answers the question asked: "how many times as likely" is the risk
# ratio; the odds ratio is what a logistic model's coefficient gives, and it is the right
# number for other purposes (it is the same in a case-control sample, and it is what
# `exponentiate=True` reports). The risk difference, in percentage points, is often the
# clearest of all.

# %% [markdown]
# `plot_emmeans` draws the marginal means with their intervals.

# %%
model.plot_emmeans("sex")

# %% [markdown]
# ## What a credible interval says, and what pd does not
#
# A frequentist analysis of these data reports a p-value far below 0.001 for `sexmale`. That
# number is a statement about *data*: if men and women had had exactly the same odds of
# surviving, data showing a difference this large would almost never occur. It does not say how
# big the difference is.
#
# The posterior is a statement about the *quantity we care about*, given the data and the
# priors. Because it is a distribution over the odds ratio, we can read off direct answers:
#
# - **Credible interval.** Given the model and priors, there is a 95% probability that the odds
#   ratio lies between the two bounds (the 95% highest-density interval of the odds-ratio
#   draws). (A 95% confidence interval does not license that sentence.) It speaks about size.
# - **Probability of direction (pd).** The share of the draws on the side of the null (an odds
#   ratio of 1) where the median lies. pd is *not* something new that a p-value lacks: with
#   weak priors it is close to 1 - p/2 (p the two-sided p-value), the same information on
#   another scale, and like a p-value it says nothing about size: a negligible effect measured
#   precisely also has pd near 1. And it is counted from draws: when all 4,000 draws are on one
#   side it prints as 1, which only means it is above about 0.9997.
# - **Any question about size** is a count over draws: for example, the probability that men's
#   odds were less than a tenth of women's. Pair pd with such a statement, or with the
#   interval.
#
# The draws of every parameter are in `model.posterior` (an ArviZ DataTree). Here are those of
# the odds ratio, with the 95% credible interval from `result_fit` shaded.

# %%
b = model.posterior["posterior"]["b"].sel(term="sexmale")
odds_ratio = np.exp(b.values.ravel())
row = model.result_fit.filter(pl.col("term") == "sexmale").row(0, named=True)

fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(odds_ratio, bins=60, color="tab:blue", alpha=0.7)
ax.axvspan(
    row["conf_low"],
    row["conf_high"],
    color="tab:orange",
    alpha=0.2,
    label="95% HDI of the odds ratio",
)
ax.axvline(row["estimate"], color="black", lw=1, label="posterior median")
ax.set(xlabel="odds ratio, men / women", ylabel="draws", title="Posterior of the odds ratio")
ax.legend(frameon=False)
ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

print(f"95% credible interval: {row['conf_low']:.3f} to {row['conf_high']:.3f}")
n_draws = odds_ratio.size
pd_odds = np.mean(odds_ratio < 1)
shown = f"> {1 - 1 / n_draws:.4f}" if pd_odds == 1 else f"{pd_odds:.4f}"
print(f"pd = P(odds ratio < 1) = {shown} ({n_draws} draws)")
print(f"P(odds ratio < 0.1)    = {np.mean(odds_ratio < 0.1):.3f}   <- a statement about size")

# %% [markdown]
# The same works on the probability scale. With `draws=True`, `emmeans` returns every
# posterior draw of each marginal mean (one row per level and draw, numbered in the `.draw`
# column) instead of a summary, so we can compute any derived quantity ourselves: here, the
# difference in survival probability between women and men, in percentage points, and the
# probability that it exceeds 50 points.

# %%
print(per_draw.head())
gap = (wide["female"] - wide["male"]) * 100
print(f"female - male survival, median {gap.median():.1f} percentage points")
print(f"P(gap > 50 points) = {(gap > 50).mean():.3f}")

# %% [markdown]
# ## What we learned
#
# - A logistic regression works on the log-odds scale; `exp()` turns its coefficients into odds
#   and odds ratios, and the logistic curve turns log-odds into probabilities.
# - `glm('survived ~ sex')` with `set_factors('sex')` reproduces the observed survival shares:
#   `params` gives log-odds, and `fit(exponentiate=True)` gives odds (intercept) and the odds
#   ratio of men to women (`sexmale`).
# - `emmeans('sex')` answers on the probability scale, and the contrast `[-1, 1]` gives the
#   same odds ratio, computed draw by draw.
# - An odds ratio is not a risk ratio: "how many times as likely" is the ratio of
#   probabilities, computed here from the same draws; with a common outcome the two differ a
#   lot.
# - Every result is a summary of posterior draws. A credible interval is a probability
#   statement about the size of the effect. pd carries about the same information as a
#   p-value and says nothing about size; pair it with an interval or with the probability of an
#   effect beyond a size that matters (such as P(odds ratio < 0.1)).

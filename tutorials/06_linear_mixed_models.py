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
# # Linear mixed models: reaction times under sleep deprivation
#
# The `sleepstudy` data follow 18 people of the most sleep-restricted group (three hours in
# bed a night) of a study by Belenky et al. (2003) over ten days. Every day each of them did
# a reaction-time test; `Reaction` is their
# average reaction time that day, in milliseconds. How much slower do people get per day of
# sleep restriction, and do they all slow down at the same pace?
#
# Each person is measured ten times, so the rows are not independent: a linear mixed model
# gives each subject an intercept and a slope of their own, `(Days | Subject)`, drawn from a
# population of subjects. This is lme4's best-known example, and the model pymer4 users
# write as `lmer("Reaction ~ Days + (Days | Subject)", data=...)`; in bayesmer it is the same
# call. One caveat about the data: lme4's documentation says days 0 and 1 were adaptation
# and training and day 2 the baseline, with the sleep restriction starting after day 2 (its
# own example now fits days 2 to 9, `subset = Days >= 2`). Like the classic lme4 and pymer4
# examples we use all ten days, so that the numbers can be compared with theirs.

# %%
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from scipy import stats

import bayesmer
from bayesmer import lm, lmer, load_dataset

pl.Config.set_tbl_cols(-1)
pl.Config.set_tbl_width_chars(140)
pl.Config.set_float_precision(3)

SEED = 2026
sleep = load_dataset("sleepstudy")
print(sleep.head())
print(
    f"{sleep['Subject'].n_unique()} subjects, {sleep.height} rows, "
    f"days {sleep['Days'].min()} to {sleep['Days'].max()}"
)

# %% [markdown]
# ## The model
#
# `lmer` is a Gaussian `glmer` (identity link): the outcome is in milliseconds and so is
# every coefficient. With the default priors (below) the fit takes a few seconds after
# compiling.

# %%
model = lmer("Reaction ~ Days + (Days | Subject)", data=sleep)
print(model.fit(summary=True, random_seed=SEED, progressbar=False))

# %% [markdown]
# The summary has three parts.
#
# - **Fixed effects**: `(Intercept)` is the expected reaction time at day 0 of a typical
#   subject (about 250 ms), `Days` how many milliseconds slower a typical subject gets per
#   day (about 10). `sigma`, after them, is the residual sd: how far a subject's daily result
#   scatters around their own line.
# - **Random effects**, lme4's `VarCorr`: `sd__(Intercept)`, the spread of the subjects'
#   day-0 reaction times around the typical one; `sd__Days`, the spread of their slopes;
#   `cor__(Intercept).Days`, the correlation between the two; and the `Residual` row,
#   `sd__Observation`, which is `sigma` again, as lme4 prints it.
# - **Convergence**: R-hat, effective sample sizes and divergences, checked by every fit.
#
# `ranef_var` returns the random-effects table on its own:

# %%
print(model.ranef_var)

# %% [markdown]
# Read the sds on the scale of the data. Subjects start about 25 ms apart (one sd) and their
# slopes differ by about 6 ms a day, against a typical slope of about 10: a subject one sd
# below the typical slope slows by about 4 ms a day, one above by about 16. Counting from the
# posterior draws (each draw's typical slope and slope sd), the share of a population of such
# subjects who would *not* slow down at all:

# %%
post = model.posterior["posterior"]
typical_slope = post["b"].sel(term="Days").values.ravel()
slope_sd = post["sd_Subject"].sel(Subject_term="Days").values.ravel()
not_slower = stats.norm.cdf(0, loc=typical_slope, scale=slope_sd)  # P(slope < 0), per draw
low, high = np.quantile(not_slower, [0.025, 0.975])
print(
    f"share of subjects who do not slow down: {np.median(not_slower):.3f} "
    f"(95% interval {low:.3f} to {high:.3f})"
)

# %% [markdown]
# A small share, with a wide interval: it rests on the assumption that the slopes are
# normally distributed across people, which 18 subjects can check only roughly.
#
# The correlation says whether subjects who start slow also slow down faster (positive) or
# less (negative). Its posterior median is close to zero and its interval runs from clearly
# negative to clearly positive: **18 subjects cannot tell the sign of this correlation**.
# lme4 prints a single number (0.066) with no interval, which invites over-reading it.
#
# ## Next to lme4
#
# lme4 (1.1-31) estimates by REML; bayesmer reports posterior medians and 95% highest-density
# intervals under weakly informative priors. With 180 rows the fixed effects and `sigma`
# nearly coincide with lme4's. The sds of the subject effects rest on only 18 subjects, so their
# posteriors are wide and skewed to the right, and a posterior median need not sit on the
# REML estimate; what matters is that lme4's values lie well inside the intervals. The
# rstanarm column (rstanarm 2.21.3, another Bayesian fit with its own default priors;
# posterior medians) shows the same spread between reasonable answers.

# %%
lme4 = pl.DataFrame(
    {
        "term": [
            "(Intercept)",
            "Days",
            "sd__(Intercept)",
            "sd__Days",
            "cor__(Intercept).Days",
            "sd__Observation",
        ],
        "lme4": [251.405, 10.467, 24.741, 5.922, 0.066, 25.592],
        "rstanarm": [251.64, 10.50, 23.2, 6.64, None, 25.83],
    }
)
ours = pl.concat(
    [
        model.result_fit.filter(pl.col("term").is_in(["(Intercept)", "Days"])),
        model.ranef_var,
    ],
    how="diagonal",
).select("term", "estimate", "conf_low", "conf_high")
side_by_side = lme4.join(ours, on="term", how="left", maintain_order="left").with_columns(
    lme4_inside=pl.col("lme4").is_between(pl.col("conf_low"), pl.col("conf_high"))
)
print(side_by_side)

# %% [markdown]
# ## One line per subject
#
# `fixef` adds each subject's deviations (`ranef`) to the fixed effects: each subject's own
# intercept and slope, as lme4's `coef()`. They are *partially pooled*: estimated from the
# subject's own ten days and pulled towards the typical line, the more so the less the
# subject's own data say. To see the pull, compare them with a separate least-squares line
# through each subject's ten points (*no pooling*).

# %%
lines = model.fixef.rename({"(Intercept)": "intercept", "Days": "slope"})
own = (
    sleep.group_by("Subject", maintain_order=True)
    .agg(
        own_slope=(
            (pl.col("Days") - pl.col("Days").mean())
            * (pl.col("Reaction") - pl.col("Reaction").mean())
        ).sum()
        / ((pl.col("Days") - pl.col("Days").mean()) ** 2).sum(),
        mean_days=pl.col("Days").mean(),
        mean_reaction=pl.col("Reaction").mean(),
    )
    .with_columns(own_intercept=pl.col("mean_reaction") - pl.col("own_slope") * pl.col("mean_days"))
    .select(pl.col("Subject").alias("level"), "own_intercept", "own_slope")
)
lines = lines.join(own, on="level").sort("slope")
print(lines)

# %% [markdown]
# The classic picture: each panel one subject, the points their ten days, the dashed line
# their own least-squares line, the solid line the model's line for them, the grey line the
# typical subject (the fixed effects).

# %%
fixed = dict(model.params.iter_rows())
days = np.array([0.0, 9.0])
fig, axes = plt.subplots(3, 6, figsize=(13, 6.5), sharex=True, sharey=True)
for ax, row in zip(axes.ravel(), lines.iter_rows(named=True), strict=True):
    points = sleep.filter(pl.col("Subject") == row["level"])
    ax.plot(days, fixed["(Intercept)"] + fixed["Days"] * days, color="0.75", lw=1.5)
    ax.plot(days, row["own_intercept"] + row["own_slope"] * days, "--", color="C1", lw=1.2)
    ax.plot(days, row["intercept"] + row["slope"] * days, color="C0", lw=1.8)
    ax.scatter(points["Days"], points["Reaction"], s=10, color="k", zorder=3)
    ax.set_title(f"subject {row['level']}", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
for ax in axes[-1]:
    ax.set_xlabel("days")
for ax in axes[:, 0]:
    ax.set_ylabel("reaction (ms)")
fig.suptitle(
    "Own line (dashed), the model's line (solid) and the typical subject (grey), "
    "by the model's slope"
)
fig.tight_layout()

# %% [markdown]
# For most subjects the two lines nearly coincide: ten days with a residual sd of about 25 ms
# pin a line down well. Where they differ, the model's line is pulled towards the typical
# one, most for the subjects whose own lines are furthest from it (subject 335, whose own
# line slopes down, or 330 and 370). Subject 332 shows the limits of the model: two days far
# from its line (days 6 and 9) and the rest close to it, where a normal residual expects all
# days to scatter alike. The same pull in the plane of intercepts and slopes, an arrow from
# each subject's own estimate to the model's:

# %%
fig, ax = plt.subplots(figsize=(6, 4.5))
for row in lines.iter_rows(named=True):
    ax.annotate(
        "",
        xy=(row["intercept"], row["slope"]),
        xytext=(row["own_intercept"], row["own_slope"]),
        arrowprops={"arrowstyle": "->", "color": "0.5"},
    )
ax.scatter(
    lines["own_intercept"],
    lines["own_slope"],
    facecolors="none",
    edgecolors="C1",
    label="own line (no pooling)",
)
ax.scatter(lines["intercept"], lines["slope"], color="C0", label="model (partial pooling)")
ax.scatter(
    [fixed["(Intercept)"]], [fixed["Days"]], marker="+", s=150, color="k", label="typical subject"
)
ax.set(xlabel="intercept: reaction at day 0 (ms)", ylabel="slope (ms per day)")
ax.legend(frameon=False, fontsize=8)
ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

# %% [markdown]
# The arrows run diagonally: a subject's intercept (day 0) and slope are estimated from the
# same ten days, so pulling the slope towards the typical one turns the line around the
# middle of the days and moves its day-0 value too.
#
# ## Expected reaction times at day 0 and day 9
#
# In R, `emmeans(m, ~ Days, at = list(Days = c(0, 9)))` gives the expected reaction time at
# those days: 251.4 and 345.6 ms. In bayesmer (as in pymer4) `emmeans` of a numeric
# variable gives its *slope* (`Days_trend`, R's `emtrends`); expected values at chosen
# values of a numeric predictor come from `empredict(at=...)`. The column is `emmean`, in
# milliseconds.

# %%
print(model.emmeans("Days"))
print(model.empredict(at={"Days": [0, 9]}))

# %% [markdown]
# These are for a typical subject (`re='zero'`, the default). In a linear model the typical
# subject and the average over the population of subjects (`re='marginal'`) are the same
# thing: averaging a straight line over normal deviations gives the same straight line
# (unlike the odds ratio of tutorial 2). What differs is a *new* subject (`re='new'`): the
# interval for one person not in the study adds the spread of the intercepts and slopes, and
# grows with the days as the slopes fan out.

# %%
print(model.empredict(at={"Days": [0, 9]}, re="new", random_seed=SEED))

# %% [markdown]
# The difference between day 9 and day 0 for a typical subject is nine times the slope,
# computed draw by draw:

# %%
nine_days = 9 * typical_slope
low, high = np.quantile(nine_days, [0.025, 0.975])
print(f"day 9 - day 0: {np.median(nine_days):.1f} ms (95% interval {low:.1f} to {high:.1f})")

# %% [markdown]
# ## Does the model reproduce the data?
#
# A posterior predictive check (see tutorial 3) compares statistics of the data with the
# same statistics of data sets simulated from the posterior. The mean and each subject's
# mean are reproduced almost by construction. More telling here: the overall variance, the
# fastest and slowest reaction times, and the spread of the subjects' own least-squares
# slopes, a statistic we write ourselves (a function of the simulated outcomes `y`, data
# sets x rows, and of the rows). With `re='new'` every simulated data set has 18 *new*
# subjects, which checks the population model of the subjects, not only these 18.


# %%
def sd_of_slopes(y: np.ndarray, data: pl.DataFrame) -> np.ndarray:
    """Sd across subjects of their least-squares slopes, one value per data set."""
    x = data["Days"].to_numpy().astype(float)
    levels, index = np.unique(data["Subject"].to_numpy(), return_inverse=True)
    member = (index[:, None] == np.arange(len(levels))).astype(float)  # rows x subjects
    centred = x - (x @ member / member.sum(axis=0))[index]
    slopes = (y * centred) @ member / (centred**2 @ member)  # data sets x subjects
    return slopes.std(axis=1, ddof=1)


checks = {"var": "var", "min": "min", "max": "max", "sd of slopes": sd_of_slopes}
print(model.ppc(stat=checks, random_seed=SEED))
model.plot_ppc(stat=checks, random_seed=SEED, re="new")

# %% [markdown]
# The spread of the slopes and the variance are reproduced. The fastest reaction time is the
# one to look at: with the fitted subjects (the table) nearly every simulated data set
# contains a faster reaction than the fastest real one (`ppp` near 0); with new subjects (the
# figure) the hint is weaker. A normal residual has a symmetric lower tail, while reaction
# times have a floor (nobody reacts in 100 ms) and a longer upper tail. For the typical slope
# this is a detail; for predicting one day's reaction time it is not. If the tails matter,
# model a transformed outcome: the log of the reaction time (a column added to the data), or
# speed, 1 / reaction time, which the original study analysed.
#
# ## Do the slopes need to vary? Comparing models
#
# A model with a random intercept only, `(1 | Subject)`, says that every subject slows down
# at the same pace. A plain `lm` ignores the subjects altogether. Compare the `Days`
# estimate and its interval in the three models, then their predictive accuracy by LOO.

# %%
intercepts_only = lmer("Reaction ~ Days + (1 | Subject)", data=sleep)
intercepts_only.fit(random_seed=SEED, progressbar=False)
no_subjects = lm("Reaction ~ Days", data=sleep)
no_subjects.fit(random_seed=SEED, progressbar=False)
print(
    pl.concat(
        [
            fitted.result_fit.filter(pl.col("term") == "Days")
            .select("estimate", "sd", "conf_low", "conf_high")
            .with_columns(model=pl.lit(name))
            for name, fitted in (
                ("(Days | Subject)", model),
                ("(1 | Subject)", intercepts_only),
                ("lm, no subjects", no_subjects),
            )
        ]
    ).select("model", "estimate", "sd", "conf_low", "conf_high")
)
print(intercepts_only.icc())
print(
    bayesmer.compare(
        model,
        intercepts_only,
        no_subjects,
        names=["(Days | Subject)", "(1 | Subject)", "lm, no subjects"],
    )
)

# %% [markdown]
# All three agree on about 10.5 ms per day, but not on how sure to be. The intercept-only
# model is the *most* confident about the slope: it treats the 180 rows as ten repeated
# measurements of one common slope, when each subject has a slope of their own and the
# typical slope is learned from 18 subjects. Only the model with `(Days | Subject)` has an
# interval that reflects that; in repeated-measures designs, leaving out the random slope of
# the effect being tested makes its interval too narrow.
#
# `icc()` of the intercept-only model is the classic intraclass correlation,
# `sd^2 / (sd^2 + sigma^2)`: the share of the variance that lies between subjects, and the
# correlation between two days of the same subject. With random slopes there is no single
# ICC (the between-subject variance changes with the day), so `icc()` asks for random
# intercepts only.
#
# LOO prefers the model with random slopes, by about two standard errors of the difference:
# a clear preference, not an overwhelming one. The model without subjects is far behind.
# Two days of subject 332 get high Pareto k values in the model with random slopes (its
# outlying days are hard to predict from the rest of its data, and leaving one out moves its
# line), which the warning under the fit names.
#
# ## Priors
#
# The default priors are in the units of the outcome: every scale is multiplied by sd(y),
# the intercept's prior is centred at the mean reaction time, and `sigma` gets an
# exponential prior with mean sd(y), as rstanarm does. They are wide: the data dominate.

# %%
print(model.prior_summary().select("parameter", "kind", "prior"))

# %% [markdown]
# ## What we learned
#
# - `lmer(formula, data)` is a Gaussian `glmer`: coefficients, sds and `sigma` in the units of
#   the outcome; `ranef_var` is lme4's `VarCorr`, with the `Residual` row (`sd__Observation`,
#   equal to `sigma`) at the end.
# - The fixed effects and `sigma` match lme4's closely; the subject sds and their correlation
#   are uncertain with 18 subjects, and their intervals say so (lme4's single numbers do not).
# - `fixef` gives each subject's line (partial pooling), pulled towards the typical line
#   compared with the subject's own least-squares line.
# - `emmeans('Days')` is the slope; `empredict(at={'Days': [0, 9]})` gives expected values,
#   for a typical subject or (`re='new'`) for a new one.
# - A posterior predictive check with statistics of our own (here the spread of the slopes)
#   tests the population model; the fastest reaction times hint at a floor that a normal
#   residual does not have.
# - Leaving out the random slope makes the slope's interval too narrow; LOO prefers the
#   model with `(Days | Subject)`.

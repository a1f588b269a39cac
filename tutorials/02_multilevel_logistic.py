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
# # Multilevel logistic regression
#
# Titanic passengers travelled in three classes, and survival differed sharply between them.
# This tutorial adds class to the survival model of tutorial 1 as a **random intercept**: each
# class gets its own baseline log-odds of survival, and those baselines are treated as draws
# from a common distribution whose spread (the group standard deviation) is estimated too.
#
# It covers the per-class estimates on the odds scale (`ranef`, `fixef`), why adding class
# moves the odds ratio away from 1 while it moves the risk difference towards 0
# (non-collapsibility), whether one odds ratio fits every class, the size of the class
# spread on a readable scale (ICC, median odds ratio), the different questions a "probability
# of survival" can answer in a multilevel model (`re='zero'`, `'marginal'`, `'new'`,
# `'groups'`), why three groups tell us little about the group standard deviation, and how to
# read the convergence diagnostics, including what to do when they complain.

# %%
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from scipy import stats

from bayesmer import compare, glm, glmer, load_dataset

pl.Config.set_tbl_cols(-1)
pl.Config.set_tbl_width_chars(140)
pl.Config.set_float_precision(3)

SEED = 2026

# %% [markdown]
# ## Survival by class and sex

# %%
titanic = load_dataset("titanic")
shares = (
    titanic.group_by("pclass", "sex")
    .agg(passengers=pl.len(), share_survived=pl.col("survived").mean())
    .sort("pclass", "sex")
)
print(shares)

# %%
fig, ax = plt.subplots(figsize=(5.5, 3))
width = 0.38
for k, sex in enumerate(("female", "male")):
    rows = shares.filter(pl.col("sex") == sex)
    ax.bar(rows["pclass"] + (k - 0.5) * width, rows["share_survived"], width, label=sex)
ax.set_xticks([1, 2, 3], ["1st class", "2nd class", "3rd class"])
ax.set(ylabel="share survived", ylim=(0, 1), title="Survival by class and sex")
ax.legend(frameon=False)
ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

# %% [markdown]
# In every class women survived far more often than men, and in both sexes survival fell from
# first to third class. A single intercept, as in tutorial 1, averages over those classes.
#
# ## The model
#
# `glmer` accepts lme4's random-effects syntax: `(1|pclass)` gives each class its own
# intercept, drawn from a normal distribution centred on the overall intercept with a standard
# deviation that the model also estimates. A grouping column is always read as labels, so the
# numbers 1, 2, 3 of `pclass` need no `set_factors` here (declaring it does no harm).
#
# `fit(summary=True)` returns the summary, and `exponentiate=True` reports the fixed effects as
# odds (the intercept) and odds ratios (`sexmale`).

# %%
model = glmer("survived ~ sex + (1|pclass)", data=titanic, family="binomial")
print(model.fit(exponentiate=True, summary=True, random_seed=SEED, progressbar=False))

# %% [markdown]
# The intercept, the odds of survival for a woman in a typical class, is very uncertain: its
# interval spans a factor of ten or more. We come back to why below. First, the sex effect.
#
# ## Why the odds ratio moves away from 1: non-collapsibility
#
# The odds ratio of men to women is further from 1 here than in tutorial 1's model without
# class. It is tempting to read that as confounding removed (women were more often in first
# class, where everybody survived more often). But removing that confounding moves a
# difference in *probabilities* towards 0, not away from it. The table below compares the
# sexes three ways, in the data: across all passengers and within each class.


# %%
def compare_sexes(frame):
    shares = frame.group_by("sex").agg(p=pl.col("survived").mean()).sort("sex")["p"].to_list()
    p_f, p_m = shares
    return {
        "risk difference (m - f)": p_m - p_f,
        "risk ratio (m / f)": p_m / p_f,
        "odds ratio (m / f)": (p_m / (1 - p_m)) / (p_f / (1 - p_f)),
    }


rows = [{"passengers": "all classes", **compare_sexes(titanic)}]
for cls in (1, 2, 3):
    rows.append(
        {"passengers": f"class {cls}", **compare_sexes(titanic.filter(pl.col("pclass") == cls))}
    )
print(pl.DataFrame(rows))

# %% [markdown]
# In first and second class the men's odds relative to women's are far lower than across all
# passengers (in third class somewhat higher). Now the same comparison from the model, on a
# common footing: the probability of survival for each sex *standardised to the class mix of
# all passengers* (`re='groups'` averages over the observed classes; `weights='proportional'`
# gives each class its share of all passengers, the same for both sexes), against the model's
# conditional odds ratio (one class at a time).

# %%
std = model.emmeans("sex", re="groups", weights="proportional", draws=True)
std = std.pivot(on="sex", index=".draw", values="prob")
p_f, p_m = std["female"].to_numpy(), std["male"].to_numpy()
odds_ratio_conditional = np.exp(model.posterior["posterior"]["b"].sel(term="sexmale").values)
table = pl.DataFrame(
    {
        "quantity": [
            "risk difference (m - f), standardised",
            "risk ratio (m / f), standardised",
            "odds ratio (m / f), standardised",
            "odds ratio (m / f) within a class (sexmale)",
        ],
        "model median": [
            float(np.median(p_m - p_f)),
            float(np.median(p_m / p_f)),
            float(np.median((p_m / (1 - p_m)) / (p_f / (1 - p_f)))),
            float(np.median(odds_ratio_conditional)),
        ],
    }
)
print(table)
crude = compare_sexes(titanic)
print(
    f"across all passengers, unadjusted: risk difference {crude['risk difference (m - f)']:.3f},"
    f" odds ratio {crude['odds ratio (m / f)']:.3f}"
)

# %% [markdown]
# Standardising to one class mix moves the risk difference towards 0 (less of a gap once
# women's better classes are accounted for), yet the odds ratio *within* a class is further
# from 1 than any odds ratio computed across classes. Both are correct: the odds ratio is
# **non-collapsible**. Averaging probabilities over groups with different baselines gives an
# odds ratio closer to 1 than the odds ratio inside each group, even with no confounding at
# all. So a change in an odds ratio when a covariate is added is not, by itself, evidence of
# confounding; compare risk differences (or risk ratios, which are collapsible when there is no
# confounding) for that.
#
# ## One odds ratio for every class?
#
# The model gives every class the same sex effect. The data disagree: in the table above, the
# within-class odds ratios of classes 1 and 2 are far below that of class 3. An interaction
# `sex * pclass` (fixed effects: one odds ratio per class) lets them differ, and LOO compares
# the two models' predictions. (Random slopes, `(sex | pclass)`, would let the sex effect vary
# by class as a random effect; with three classes fixed effects are the simpler choice.)

# %%
interaction = glm("survived ~ sex * pclass", data=titanic, family="binomial")
interaction.set_factors("pclass")
interaction.fit(random_seed=SEED, progressbar=False)
print(interaction.emmeans("sex", by="pclass", contrasts={"male_vs_female": [-1, 1]}))
print(compare(model, interaction, names=["one odds ratio", "one per class"]))

# %% [markdown]
# The per-class odds ratios reproduce the data, and LOO prefers the interaction model. The
# single odds ratio of the random-intercept model is a compromise that fits no class well;
# report the per-class effects when the classes differ this much.
#
# ## The classes on the odds scale
#
# `ranef` gives each class's deviation from the overall intercept. With `exponentiate=True`
# these are multipliers of the odds relative to a typical class.

# %%
print(model.ranef)
first, second, third = model.ranef["(Intercept)"].to_list()
print(
    f"first class: {first:.1f} times the odds of a typical class; third class: "
    f"{third:.2f} times (about 1/{1 / third:.1f})"
)

# %% [markdown]
# `fixef` combines the fixed effects with each class's deviation (lme4's `coef()`): the
# intercept column is now the odds of survival for a woman in each class. `sexmale` is the
# same in every class, because the model gives each class its own intercept but a common sex
# effect.

# %%
print(model.fixef)

# %% [markdown]
# `plot_ranef` shows the class effects with their credible intervals.

# %%
model.plot_ranef()

# %% [markdown]
# The intervals are wide, yet survival in each class is not that uncertain. A class effect is a
# deviation from the centre of the distribution of classes, and that centre (the intercept) is
# poorly known. The two errors go in opposite directions (a higher centre means lower class
# effects), so they largely cancel when added back together. The draws show
# it: the odds of survival of a woman in each class, intercept plus class effect computed draw
# by draw, have much narrower intervals than the class effects alone.

# %%
draws = model.posterior["posterior"]
intercept = draws["b"].sel(term="(Intercept)")
per_class = []
for level in draws["u_pclass"].coords["pclass_level"].values:
    effect = draws["u_pclass"].sel(pclass_level=level)
    for what, values in (("class effect", effect), ("odds, woman", intercept + effect)):
        low, high = np.exp(np.quantile(values.values.ravel(), [0.025, 0.975]))
        per_class.append({"pclass": str(level), "quantity": what, "low": low, "high": high})
print(pl.DataFrame(per_class).with_columns(ratio_high_to_low=pl.col("high") / pl.col("low")))

# %% [markdown]
# ## Three groups leave the group standard deviation uncertain
#
# `ranef_var` reports the standard deviation of the class intercepts on the log-odds scale,
# with its credible interval.

# %%
print(model.ranef_var)

# %% [markdown]
# `icc()` puts the same spread on scales people read: the latent-scale intraclass correlation
# (the share of the variance of the latent log-odds that lies between classes; a logistic
# model's residual variance on that scale is pi^2/3) and the median odds ratio (for two
# passengers alike in everything but class, picked from two random classes, the median ratio
# of the higher odds to the lower).

# %%
print(model.icc())

# %% [markdown]
# The interval is wide. This is not a flaw of the sampler: the spread of a population is
# estimated from the members we observe, and here we observe three classes. Three values tell
# us roughly where a standard deviation lies, but not much more, however many passengers each
# class holds. (lme4 reports a single number for this standard deviation, about 0.77, with no
# uncertainty attached.)
#
# Plotting the posterior draws of the standard deviation against the default prior, a
# half-normal with scale 2.5, shows how much the data taught us: the posterior has moved away
# from zero and its long right tail is still shaped by the prior.

# %%
sd_draws = model.posterior["posterior"]["sd_pclass"].values.ravel()
grid = np.linspace(0, 8, 400)

fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(sd_draws, bins=80, density=True, alpha=0.6, label="posterior")
ax.plot(grid, stats.halfnorm(scale=2.5).pdf(grid), color="black", label="prior HalfNormal(2.5)")
ax.set(xlabel="sd of class intercepts (log-odds)", ylabel="density", xlim=(0, 8))
ax.set_title("Three classes: the data narrow the group sd only a little")
ax.legend(frameon=False)
ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

print(f"P(sd > 2) = {np.mean(sd_draws > 2):.2f}")

# %% [markdown]
# Because the data say little about the standard deviation, the prior matters. With a tighter
# prior, a half-normal of scale 1 (`priors={'1|pclass': ('halfnormal', 1)}`), the estimate of
# the standard deviation shrinks, while the sex effect, which 891 passengers pin down, hardly
# moves. When a conclusion depends on the group standard deviation and there are few groups,
# report how it changes under a reasonable alternative prior.

# %%
tight = glmer(
    "survived ~ sex + (1|pclass)",
    data=titanic,
    family="binomial",
    priors={"1|pclass": ("halfnormal", 1)},
)
tight.fit(exponentiate=True, random_seed=SEED, progressbar=False)
print(
    pl.concat(
        [
            model.ranef_var.with_columns(prior=pl.lit("HalfNormal(2.5), default")),
            tight.ranef_var.with_columns(prior=pl.lit("HalfNormal(1)")),
        ]
    )
)
print(
    pl.concat(
        [
            model.result_fit.with_columns(prior=pl.lit("HalfNormal(2.5), default")),
            tight.result_fit.with_columns(prior=pl.lit("HalfNormal(1)")),
        ]
    )
    .filter(pl.col("term") == "sexmale")
    .select("prior", "term", "estimate", "conf_low", "conf_high")
)

# %% [markdown]
# ## Which probability of survival?
#
# In a model with random intercepts "the probability that a woman survived" can mean four
# different things, and `emmeans` answers each one when asked with `re=`:
#
# - `re='zero'` (the default, as in lme4 and R's emmeans): the class effect set to zero, that
#   is, a woman in a **typical class**, one sitting exactly at the centre of the distribution of
#   classes.
# - `re='marginal'`: the probability **averaged over the whole population of classes** (a
#   population-averaged probability). Its interval is our uncertainty about that *average*; it
#   does not say where one new class would fall. Because the logistic curve bends, averaging
#   over classes pulls probabilities towards 0.5.
# - `re='new'`: **one new class** drawn from the population: per draw, a class effect is drawn
#   from the estimated distribution of classes. Its interval adds the spread between classes,
#   so it is much wider: it says where a single new class could land.
# - `re='groups'`: averaged over the **three classes we observed**, here weighted for each sex
#   by how many passengers of that sex travelled in each class (`weights='cells'`), which
#   reproduces the mix of the data.
#
# None of them is the right one in general; they answer different questions.

# %%
by_re = pl.concat(
    [
        model.emmeans("sex", re=re, weights="cells" if re == "groups" else "equal").with_columns(
            re=pl.lit(re)
        )
        for re in ("zero", "marginal", "new", "groups")
    ]
)
print(by_re.select("re", "sex", "prob", "lower_HPD", "upper_HPD"))
print(titanic.group_by("sex").agg(observed=pl.col("survived").mean()).sort("sex"))

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for k, (re, color) in enumerate(
    (("zero", "C0"), ("marginal", "C1"), ("new", "C3"), ("groups", "C2"))
):
    rows = by_re.filter(pl.col("re") == re)
    x = np.arange(rows.height) + (k - 1.5) * 0.18
    ax.errorbar(
        x,
        rows["prob"],
        yerr=[rows["prob"] - rows["lower_HPD"], rows["upper_HPD"] - rows["prob"]],
        fmt="o",
        color=color,
        capsize=3,
        label=f"re='{re}'",
    )
ax.set_xticks([0, 1], ["female", "male"])
ax.set(ylabel="probability of survival", ylim=(0, 1))
ax.set_title("Four questions, four answers (95% intervals)")
ax.legend(frameon=False)
ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()

# %% [markdown]
# The four answers differ in their centre and even more in their uncertainty. The widths of
# the intervals, per sex:

# %%
print(
    by_re.with_columns(width=pl.col("upper_HPD") - pl.col("lower_HPD"))
    .pivot(on="sex", index="re", values="width")
    .rename({"female": "width, female", "male": "width, male"})
)

# %% [markdown]
# - A typical class (`re='zero'`) has wide intervals: where the centre of the distribution of
#   classes lies is learned from three classes only.
# - The population average (`re='marginal'`) sits closer to 0.5 than the typical class (lower
#   for women, higher for men). Its interval is about that average and stays wide because the
#   spread between classes is itself uncertain.
# - One new class (`re='new'`) has the widest interval: a single class can land anywhere in the
#   spread. This is the interval to quote for "a woman in a class we have not seen".
# - The observed classes, weighted by their passengers (`re='groups'`), give narrow intervals
#   close to the observed survival shares. They are intervals for the underlying chance of
#   survival of passengers like these, not for the share of survivors among these 891 people,
#   which is known exactly.
#
# The odds ratio between the sexes, by contrast, is one number in this model whichever class
# we pick, because the sex effect is shared by all classes (the interaction model above shows
# that the data do not quite agree). That is the *conditional* odds ratio, within a class. The
# *population-averaged* odds ratio, between the probabilities averaged over all classes
# (`re='marginal'`), is closer to 1: averaging over classes attenuates an odds ratio, the
# non-collapsibility met above.

# %%
conditional_vs_averaged = pl.concat(
    [
        model.emmeans("sex", contrasts={"male_vs_female": [-1, 1]}, re=re).with_columns(
            re=pl.lit(re)
        )
        for re in ("zero", "marginal")
    ]
)
print(conditional_vs_averaged.select("re", "contrast", "odds_ratio", "lower_HPD", "upper_HPD"))

# %% [markdown]
# ## Diagnostics, and what to do when they complain
#
# Every fit passes through a convergence check. The numbers behind it are available:
# `diagnostics` has one row per parameter (R-hat should be below 1.01, and the effective sample
# sizes `ess_bulk` and `ess_tail` comfortably above 100 per chain), and `chain_diagnostics` one
# row per chain (no divergent transitions, E-BFMI above 0.3). `convergence_problems` lists what
# went wrong, in words; it is empty for the fit above.

# %%
print(model.diagnostics)
print(model.chain_diagnostics)
print(model.convergence_problems)

# %% [markdown]
# `plot_trace` shows each chain's draws in order (left) and where each chain's draws rank among
# all draws (right). Chains that agree look like overlapping fuzzy bands, with rank histograms
# close to flat around the dashed line; a chain stuck somewhere else stands out in both.

# %%
model.plot_trace()

# %% [markdown]
# A posterior with three groups has a difficult shape: when the group sd is small the class
# effects are squeezed together in a narrow funnel, and a sampler taking large steps misses
# it. bayesmer therefore raises nutpie's `target_accept` (the step size is tuned to reach this
# acceptance rate: higher means smaller, more careful steps) above the usual 0.8 for models
# with fewer than ten groups: 0.95, or 0.99 when some of the few groups are informative enough
# to be sampled non-centred. The setting it chose is kept with the fit:

# %%
print("target_accept used:", model.sampler_kwargs["target_accept"])

# %% [markdown]
# Overriding it with the more usual 0.8 shows what a complaint looks like: the fit still
# returns, but it raises a `ConvergenceWarning` that names the problem and suggests a fix.

# %% tags=["expect-convergence-warning"]
model.fit(exponentiate=True, random_seed=SEED, progressbar=False, target_accept=0.8)
print(model.chain_diagnostics)
for problem in model.convergence_problems:
    print("-", problem)

# %% [markdown]
# Divergent transitions mean the sampler failed to explore part of the posterior, so the draws
# may be biased, typically against small group standard deviations. Do not report such a fit.
# In order of preference:
#
# 1. **Take smaller steps**: raise `target_accept` (0.95, 0.99). This costs only time.
# 2. **Use a more informative prior** on the group sd when the data cannot pin it down (few
#    groups), as with the half-normal of scale 1 above, and say so in the report.
# 3. **Rethink the model** when divergences persist: with two or three groups a fixed effect
#    (`survived ~ sex + pclass` with `pclass` as a factor) is often the more honest choice.
#
# For other complaints: R-hat above 1.01 or a low effective sample size means the chains have
# not mixed; run more `tune` and `draws`. A low E-BFMI often points to a group sd near zero.
#
# Here smaller steps are enough:

# %%
model.fit(exponentiate=True, random_seed=SEED, progressbar=False, target_accept=0.99)
print(model.chain_diagnostics)
print("problems:", model.convergence_problems)

# %% [markdown]
# ## What we learned
#
# - `glmer('survived ~ sex + (1|pclass)')` gives each class its own intercept; `ranef` shows
#   the class effects as odds multipliers, `fixef` the resulting per-class odds, with the sex
#   odds ratio shared by all classes.
# - Odds ratios are non-collapsible: adjusting for class moves the odds ratio away from 1
#   while the standardised risk difference moves towards 0, and the population-averaged odds
#   ratio (`re='marginal'`) is closer to 1 than the conditional one. Judge confounding on risk
#   differences or ratios, not on a change in an odds ratio.
# - Check a shared effect against the data: here the sex odds ratio differs by class, and a
#   `sex * pclass` interaction predicts better.
# - With three groups the group standard deviation (`ranef_var`) stays uncertain and its prior
#   matters; check how conclusions change under a reasonable alternative prior. `icc()` reports
#   its size as an ICC and a median odds ratio.
# - A "probability of survival" in a multilevel model answers one of four questions: a
#   typical group (`re='zero'`), the average over the population of groups (`re='marginal'`),
#   one new group (`re='new'`), or the observed groups (`re='groups'`). Say which one you
#   report.
# - Read `diagnostics`, `chain_diagnostics` and `convergence_problems`; when the check
#   complains, take smaller steps, use a more informative prior, or simplify the model, and do
#   not report the fit until it is clean.

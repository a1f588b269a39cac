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
# # Random slopes: an effect that differs between groups
#
# The `contraception` data come from the 1988 Bangladesh Fertility Survey: 1,934 women in 60
# districts, whether each used contraception (`use01`), her age (centred, in years), whether
# she lived in a town (`urban`) and how many living children she had (`livch`). Women in towns
# used contraception more often; but is the town-countryside gap the same in every district?
#
# A random intercept `(1 | district)` lets each district have its own level of use. A random
# slope `(urban | district)` also lets the urban effect differ by district: each district gets
# a deviation of its intercept and of its `urbanY` coefficient, drawn from a bivariate normal
# distribution with two standard deviations and a correlation. This is the model of lme4's
# documentation, `use01 ~ age + I(age^2) + urban + livch + (urban | district)`.

# %%
import polars as pl

from bayesmer import glmer, load_dataset

pl.Config.set_tbl_cols(-1)
pl.Config.set_tbl_width_chars(140)
pl.Config.set_float_precision(3)

SEED = 1
contraception = load_dataset("contraception")
model = glmer(
    "use01 ~ age + I(age^2) + urban + livch + (urban | district)",
    data=contraception,
    family="binomial",
)
model.fit(random_seed=SEED, progressbar=False)
print(model.summary())

# %% [markdown]
# The header says how the district effects were sampled (`noncentered`: most districts hold
# few women, so their effects are drawn as standard normals scaled by the sds) and which terms
# vary by district. The random-effects table is lme4's `VarCorr`: `sd__(Intercept)` is the
# spread of the districts' log-odds of use among rural women, `sd__urbanY` the spread of the
# urban effect, and `cor__(Intercept).urbanY` their correlation. lme4's estimates are 0.620,
# 0.736 and -0.793; the posterior medians are close and the intervals show how little 60
# districts say about a correlation.
#
# The negative correlation reads: where rural use is high, the town-countryside gap is small.
# Per district, `fixef` adds the deviations to the fixed effects (lme4's `coef()`):

# %%
print(model.fixef.select("level", "(Intercept)", "urbanY").head(8))

# %% [markdown]
# Each district's deviations with their intervals, one panel per term:

# %%
model.plot_ranef()

# %% [markdown]
# ## Probabilities: a typical district or the population of districts
#
# `emmeans('urban')` holds age at its mean (and `I(age^2)` at the square of that mean, as R's
# emmeans does) and averages over the numbers of children. With `re='zero'` it answers for a
# typical district (every district deviation at zero); R's emmeans gives 0.402 and 0.593. With
# `re='marginal'` it averages over the population of districts: at each point of the grid the
# district part of the linear predictor is normal with variance `z' Sigma z` (here
# `sd0^2 + 2 r sd0 sd1 + sd1^2` for urban women, `sd0^2` for rural ones), integrated per draw.

# %%
typical = model.emmeans("urban")
population = model.emmeans("urban", re="marginal")
print(typical)
print(population)

# %% [markdown]
# ## Priors
#
# Each sd has a half-normal prior (scale 2.5 for the intercept, autoscaled `2.5 / sd(x)` for a
# slope, as the fixed slopes), and the correlations an LKJ prior (eta = 1: uniform over
# correlation matrices). Set them with `priors={'1|district': ..., 'urbanY|district': ...,
# 'cor|district': ('lkj', 2)}`.

# %%
print(model.prior_summary().select("parameter", "kind", "prior"))

# %% [markdown]
# ## What we learned
#
# - `(x | g)` gives each group its own intercept and slope, correlated; `(x || g)` leaves out
#   the correlation and `(0 + x | g)` the intercept.
# - `ranef_var` lists the sds and correlations as lme4 names them; `fixef` gives each group's
#   coefficients; `plot_ranef` shows every term.
# - With random slopes the spread of the group effects differs from one grid point to another,
#   so a population-averaged probability (`re='marginal'`) integrates over `z' Sigma z` there.

"""pymer4's GLM tutorial (shared/seed/pymer4-glm-tutorial.txt) runs as written on bayesmer.

The code cells below are copied verbatim from the tutorial; only the import lines changed
(``from pymer4.models import ...`` and ``from pymer4 import load_dataset`` now import from
bayesmer). They run in one namespace like a notebook, each cell's last expression kept as its
output, and the outputs are checked against the figures the other tests pin (lme4's numbers,
with the same tolerances). The tutorial's ``fit()`` calls give no seed, so bayesmer draws one:
the tolerances are those of the seeded tests, each many Monte Carlo standard errors wide.

One bridge is not bayesmer's: seaborn 0.13.2 (its latest release) takes a non-pandas frame
only through the DataFrame interchange protocol (``__dataframe__``), which polars 2 no longer
has. pymer4's tutorial ran with polars 1. While the cells run, polars frames get a
``__dataframe__`` that hands seaborn the pandas copy's protocol object; nothing else changes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest

from bayesmer import glm, glmer

#: The tutorial text, beside the repository (``../shared/seed``) in the project's workspace.
SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "pymer4-glm-tutorial.txt"

CELLS = [
    """\
from bayesmer import glm, glmer
import polars as pl, polars.selectors as cs
from polars import col
import seaborn as sns
from bayesmer import load_dataset
""",
    """\
titanic = load_dataset('titanic')
titanic.group_by('sex').agg(col('survived').mean())
""",
    """\
ax = sns.countplot(data=titanic, x='survived', hue='sex')
ax.set_xticks([0,1],['No', 'Yes'])
sns.despine();
""",
    """\
import numpy as np
import matplotlib.pyplot as plt
# Create a range of log-odds values
log_odds = np.linspace(-2, 2, 100)

# Convert to odds and probability
odds = np.exp(log_odds)
prob = odds / (1 + odds)

# Create the plots
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))

# Plot log-odds vs odds
ax1.plot(log_odds, odds)
ax1.set_xlabel('Log-odds')
ax1.set_ylabel('Odds')
ax1.set_title('Relationship between Log-odds and Odds')

# Plot odds vs probability
ax2.plot(odds, prob)
ax2.set_xlabel('Odds')
ax2.set_ylabel('Probability')
ax2.set_title('Relationship between Odds and Probability')

plt.tight_layout()
sns.despine();
""",
    """\
log_regress = glm('survived ~ sex', data=titanic, family='binomial')
log_regress.set_factors('sex')
log_regress.fit()
log_regress.params
""",
    """\
log_regress.fit(exponentiate=True)
log_regress.params
""",
    """\
log_regress.summary()
""",
    """\
# Probability of survival by sex
log_regress.emmeans('sex')
""",
    """\
log_regress.emmeans('sex', contrasts={'female_minus_male': [-1, 1]})
""",
    """\
# Log-odds scale
log_regress.emmeans('sex', type='link')
""",
    """\
# Contrast is same as untransformed parameter estimate
log_regress.emmeans('sex', contrasts={'female_minus_male': [-1, 1]}, type='link')
""",
    """\
from bayesmer import glmer

log_lmm = glmer('survived ~ sex + (1 | pclass)', data=titanic, family='binomial')
log_lmm.set_factors('pclass')

# Convert estimates to odds
log_lmm.fit(exponentiate=True, summary=True)
""",
    """\
log_lmm.ranef
""",
    """\
log_lmm.fixef
""",
    """\
grid = sns.FacetGrid(titanic, col='pclass', hue='sex',)
grid.map(sns.countplot, 'survived', order=[0,1])
grid.add_legend()
grid.set_xlabels("")
grid.set_xticklabels(['No', 'Yes'])
sns.despine();
""",
]


def _run(cells: list[str]) -> tuple[list[object], dict[str, object]]:
    """Run cells in one namespace, as a notebook does; each cell's last expression is kept."""
    namespace: dict[str, object] = {}
    outputs: list[object] = []
    for source in cells:
        tree = ast.parse(source)
        last = tree.body[-1] if tree.body else None
        if isinstance(last, ast.Expr) and not source.rstrip().endswith(";"):
            tree.body = tree.body[:-1]
            exec(compile(tree, "<cell>", "exec"), namespace)
            expr = ast.Expression(last.value)
            outputs.append(eval(compile(expr, "<cell>", "eval"), namespace))
        else:
            exec(compile(tree, "<cell>", "exec"), namespace)
            outputs.append(None)
    return outputs, namespace


def _value(table: pl.DataFrame, key: str, name: str, column: str) -> float:
    return table.filter(pl.col(key).cast(pl.String) == name)[column].item()


def _interchange(self: pl.DataFrame, nan_as_null: bool = False, allow_copy: bool = True):
    """The interchange object seaborn asks polars 1 frames for, via a pandas copy."""
    return self.to_pandas().__dataframe__(nan_as_null=nan_as_null, allow_copy=allow_copy)


@pytest.fixture(scope="module")
def tutorial():
    with pytest.MonkeyPatch.context() as patch:
        if not hasattr(pl.DataFrame, "__dataframe__"):
            patch.setattr(pl.DataFrame, "__dataframe__", _interchange, raising=False)
        outputs, namespace = _run(CELLS)
    yield outputs, namespace
    plt.close("all")


@pytest.mark.skipif(not SEED.exists(), reason="the seed tutorial text is not in this checkout")
def test_only_the_imports_changed():
    seed = SEED.read_text(encoding="utf-8")
    for cell in CELLS:
        original = cell.replace(
            "from bayesmer import glm, glmer", "from pymer4.models import glm, glmer"
        )
        original = original.replace(
            "from bayesmer import load_dataset", "from pymer4 import load_dataset"
        )
        original = original.replace("from bayesmer import glmer", "from pymer4.models import glmer")
        for line in original.splitlines():
            assert line.strip() in seed, line


def test_glm_cells(tutorial):
    outputs, ns = tutorial
    observed = outputs[1]
    assert _value(observed, "sex", "male", "survived") == pytest.approx(0.188908, abs=1e-6)
    assert isinstance(ns["log_regress"], glm)
    params = outputs[4]
    # the log-odds scale params, as test_models pins them against lme4
    assert _value(params, "term", "(Intercept)", "estimate") == pytest.approx(1.056589, abs=0.05)
    assert _value(params, "term", "sexmale", "estimate") == pytest.approx(-2.513710, abs=0.05)
    odds = outputs[5]
    assert _value(odds, "term", "sexmale", "estimate") == pytest.approx(0.080967, abs=0.01)
    assert _value(odds, "term", "(Intercept)", "estimate") == pytest.approx(2.876543, abs=0.2)
    text = str(outputs[6])
    assert "Formula: glm(survived ~ sex)" in text and "exp() of the link scale" in text


def test_emmeans_cells(tutorial):
    outputs, _ = tutorial
    means = outputs[7]
    assert means.columns[:2] == ["sex", "prob"]
    assert abs(_value(means, "sex", "female", "prob") - 0.742038) < 0.015
    assert abs(_value(means, "sex", "male", "prob") - 0.188908) < 0.015
    ratio = outputs[8]
    assert abs(ratio["odds_ratio"][0] - 0.080967) < 0.01
    assert abs(ratio["lower_HPD"][0] - 0.058) < 0.01
    assert abs(ratio["upper_HPD"][0] - 0.112) < 0.01
    link = outputs[9]
    assert abs(_value(link, "sex", "female", "emmean") - 1.056589) < 0.05
    assert abs(_value(link, "sex", "male", "emmean") - -1.45712) < 0.05
    link_contrast = outputs[10]
    assert abs(link_contrast["estimate"][0] - -2.51371) < 0.05


def test_glmer_cells(tutorial):
    outputs, ns = tutorial
    log_lmm = ns["log_lmm"]
    assert isinstance(log_lmm, glmer)
    text = str(outputs[11])
    assert "Formula: glmer(survived ~ sex + (1 | pclass))" in text
    # exponentiated, as the tutorial asked: lme4's odds ratio 0.072 for sexmale
    assert np.log(_value(log_lmm.params, "term", "sexmale", "estimate")) == pytest.approx(
        -2.636224, abs=0.1
    )
    ranef = outputs[12]
    assert ranef["level"].to_list() == ["1", "2", "3"]
    # lme4: 2.413829, 1.082862, 0.383755 on the odds scale; a posterior with 3 groups is wide
    np.testing.assert_allclose(
        np.log(ranef["(Intercept)"].to_numpy()), np.log([2.413829, 1.082862, 0.383755]), atol=0.25
    )
    fixef = outputs[13]
    np.testing.assert_allclose(
        fixef["(Intercept)"].to_numpy(), [9.515432, 4.268696, 1.512781], rtol=0.35
    )
    # pymer4 adds the fitted values to the data: predictions equal them
    np.testing.assert_allclose(log_lmm.predict(log_lmm.data), log_lmm.data["fitted"].to_numpy())

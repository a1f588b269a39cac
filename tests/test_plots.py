"""Every plot returns a matplotlib Figure with the expected axes, and saves to PNG."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from bayesmer import NotFittedError, glmer, plots
from bayesmer.io import load_model


def _check_png(fig: Figure, path) -> None:
    fig.savefig(path, dpi=60)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = imread(path).shape[:2]
    assert height > 100 and width > 100


def _null_lines(ax) -> list[float]:
    """x of the vertical dashed lines of an axes."""
    out = []
    for line in ax.get_lines():
        x = np.unique(line.get_xdata())
        if line.get_linestyle() == "--" and len(x) == 1 and np.ptp(line.get_ydata()) > 0:
            out.append(float(x[0]))
    return out


@pytest.fixture(scope="module")
def glmer_copy(titanic_glmer, tmp_path_factory):
    """A reloaded copy of the titanic glmer, so that storing prior draws leaves the fixture."""
    path = tmp_path_factory.mktemp("plots") / "titanic.bayesmer"
    titanic_glmer.save(path)
    return load_model(path)


# -- drawing code, on hand-made tables ------------------------------------------------------------

MEANS = pl.DataFrame(
    {
        "sex": ["female", "male", "female", "male"],
        "pclass": ["1", "1", "3", "3"],
        "prob": [0.95, 0.4, 0.5, 0.13],
        "SD": [0.02, 0.05, 0.05, 0.02],
        "lower_HPD": [0.9, 0.3, 0.4, 0.09],
        "upper_HPD": [0.98, 0.5, 0.6, 0.17],
    }
)
CONTRASTS = pl.DataFrame(
    {
        "contrast": ["female / male", "female / male"],
        "pclass": ["1", "3"],
        "odds_ratio": [20.0, 6.0],
        "SD": [5.0, 1.5],
        "lower_HPD": [11.0, 3.5],
        "upper_HPD": [31.0, 9.0],
        "pd": [1.0, 0.999],
        "prob_gt_null": [1.0, 0.999],
    }
)
PPC = pl.DataFrame(
    {
        "statistic": ["mean", "variance", "share of zeros", "mean[YEAR=95]"],
        "observed": [6.4, 180.0, 0.3, 3.2],
        "replicated_mean": [6.4, 40.0, 0.1, 3.1],
        "replicated_low": [6.0, 30.0, 0.07, 2.7],
        "replicated_high": [6.8, 52.0, 0.13, 3.6],
        "ppp": [0.51, 0.0, 0.0, 0.4],
    }
)


def test_emmeans_figure_one_panel_per_by_level(tmp_path):
    fig = plots.emmeans_figure(MEANS.filter(pclass="1").drop("pclass"))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["female", "male"]
    fig = plots.emmeans_figure(MEANS, by="pclass", ci=0.9, title="Means")
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["pclass = 1", "pclass = 3"]
    assert "90% highest-density" in fig.axes[-1].get_xlabel()
    _check_png(fig, tmp_path / "means.png")


def test_emmeans_figure_without_by_labels_every_factor():
    fig = plots.emmeans_figure(MEANS)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "sex=female, pclass=1"


def test_emmeans_figure_densities_from_draws():
    rng = np.random.default_rng(1)
    means = MEANS.filter(pclass="1").drop("pclass")
    draws = pl.DataFrame(
        {
            "sex": ["female"] * 500 + ["male"] * 500,
            ".draw": list(range(500)) * 2,
            "prob": np.r_[rng.beta(95, 5, 500), rng.beta(40, 60, 500)],
        }
    )
    plain = plots.emmeans_figure(means)
    dense = plots.emmeans_figure(means, draws=draws)
    assert len(dense.axes[0].collections) == len(plain.axes[0].collections) + 2


def test_emmeans_figure_slope_table():
    slopes = pl.DataFrame(
        {"age_trend": [-0.01], "SD": [0.002], "lower_HPD": [-0.014], "upper_HPD": [-0.006]}
    )
    fig = plots.emmeans_figure(slopes)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["age_trend"]
    assert "Slope" in fig.axes[0].get_xlabel()


def test_contrasts_figure_null_line_on_each_scale(tmp_path):
    fig = plots.contrasts_figure(CONTRASTS, by="pclass")
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert _null_lines(ax) == [1.0]
        assert ax.get_xscale() == "log"
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["pd 1.000"]
    _check_png(fig, tmp_path / "contrasts.png")
    link = CONTRASTS.rename({"odds_ratio": "estimate"}).with_columns(
        pl.col("estimate", "lower_HPD", "upper_HPD").log()
    )
    fig = plots.contrasts_figure(link.filter(pclass="1").drop("pclass"))
    assert len(fig.axes) == 1
    assert _null_lines(fig.axes[0]) == [0.0]
    assert fig.axes[0].get_xscale() == "linear"


def test_ppc_figure_one_panel_per_statistic(tmp_path):
    fig = plots.ppc_figure(PPC)
    assert len(fig.axes) == 4
    assert fig.axes[1].get_title() == "variance\nppp = 0.000"
    _check_png(fig, tmp_path / "ppc.png")


def test_ppc_figure_many_statistics_in_one_ppp_panel(tmp_path):
    rng = np.random.default_rng(2)
    many = pl.DataFrame(
        {
            "statistic": [f"mean[BROOD={i}]" for i in range(40)],
            "observed": rng.normal(size=40),
            "replicated_mean": 0.0,
            "replicated_low": -1.0,
            "replicated_high": 1.0,
            "ppp": rng.uniform(size=40),
        }
    )
    fig = plots.ppc_figure(many)
    assert len(fig.axes) == 1
    assert len(fig.axes[0].get_yticklabels()) == 40
    assert len(plots.ppc_figure(many, max_panels=40).axes) == 40
    _check_png(fig, tmp_path / "ppp.png")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: plots.emmeans_figure(MEANS.drop("prob")), "Not an emmeans table"),
        (lambda: plots.emmeans_figure(MEANS, by="class"), r"by column\(s\) \['class'\]"),
        (lambda: plots.contrasts_figure(MEANS), "Not an emmeans contrasts table"),
        (lambda: plots.contrasts_figure(CONTRASTS.drop("contrast")), "no 'contrast' column"),
        (lambda: plots.ppc_figure(PPC.drop("ppp")), r"columns \['ppp'\] are missing"),
        (lambda: plots.ppc_figure(PPC.head(0)), "no statistics"),
        (lambda: plots.ppc_figure(PPC, max_panels=0), "max_panels must be"),
    ],
)
def test_drawing_bad_tables(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- end to end, on fitted models ---------------------------------------------------------------


def test_plot_emmeans(titanic_glmer, tmp_path):
    fig = titanic_glmer.plot_emmeans("sex", densities=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    table = titanic_glmer.emmeans("sex")
    points = fig.axes[0].get_lines()[0].get_xdata()
    np.testing.assert_allclose(points, table["prob"].to_numpy())
    _check_png(fig, tmp_path / "emmeans.png")
    link = plots.plot_emmeans(titanic_glmer, "sex", type="link")
    assert "link scale" in link.axes[0].get_xlabel()


def test_plot_contrasts(titanic_glmer, tmp_path):
    fig = titanic_glmer.plot_contrasts("sex")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert _null_lines(fig.axes[0]) == [1.0]
    _check_png(fig, tmp_path / "contrasts.png")
    link = plots.plot_contrasts(titanic_glmer, "sex", type="link")
    assert _null_lines(link.axes[0]) == [0.0]


def test_plot_emmeans_and_contrasts_refuse_wrong_arguments(titanic_glmer):
    with pytest.raises(ValueError, match="use plot_contrasts"):
        plots.plot_emmeans(titanic_glmer, "sex", contrasts="pairwise")
    with pytest.raises(ValueError, match="draws= is not accepted"):
        plots.plot_emmeans(titanic_glmer, "sex", draws=True)
    with pytest.raises(ValueError, match="needs contrasts"):
        plots.plot_contrasts(titanic_glmer, "sex", contrasts=None)


def test_plot_ranef(titanic_glmer, tmp_path):
    fig = titanic_glmer.plot_ranef()
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert _null_lines(ax) == [0.0]
    medians = titanic_glmer.ranef.sort("(Intercept)", descending=True)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == medians["level"].to_list()
    _check_png(fig, tmp_path / "ranef.png")
    ratio = plots.plot_ranef(titanic_glmer, exponentiate=True, ci=0.8)
    assert _null_lines(ratio.axes[0]) == [1.0]
    assert "80% HDI" in ratio.axes[0].get_xlabel()


def test_plot_ranef_bad_input(titanic_glm, titanic_glmer):
    with pytest.raises(ValueError, match="needs random effects"):
        plots.plot_ranef(titanic_glm)
    with pytest.raises(ValueError, match="ci must be between 0 and 1"):
        plots.plot_ranef(titanic_glmer, ci=1.5)


def test_plot_trace(titanic_glmer, tmp_path):
    fig = titanic_glmer.plot_trace()
    assert isinstance(fig, Figure)
    # (Intercept), sexmale, sd_pclass: a trace and a rank axes each.
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title(loc="left").startswith("b[(Intercept)]   R-hat")
    assert len(fig.axes[0].get_lines()) == titanic_glmer.chains
    _check_png(fig, tmp_path / "trace.png")
    levels = plots.plot_trace(titanic_glmer, var_names=["u_pclass"], bins=10)
    assert len(levels.axes) == 6
    assert levels.axes[4].get_title(loc="left").startswith("u_pclass[3]")


def test_plot_trace_bad_input(titanic_glmer):
    with pytest.raises(ValueError, match=r"choose among \['b', 'sd_pclass', 'u_pclass'\]"):
        plots.plot_trace(titanic_glmer, var_names=["beta"])
    with pytest.raises(ValueError, match="bins must be"):
        plots.plot_trace(titanic_glmer, bins=1)


def test_plot_ppc(titanic_glmer, tmp_path):
    fig = titanic_glmer.plot_ppc(random_seed=1)
    table = titanic_glmer.ppc(random_seed=1)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(table)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == table["statistic"].to_list()
    _check_png(fig, tmp_path / "ppc.png")
    assert len(plots.plot_ppc(titanic_glmer, max_panels=2, random_seed=1).axes) == 1
    chosen = titanic_glmer.plot_ppc(stat=["mean", "sex"], random_seed=1)
    titles = [ax.get_title().split("\n")[0] for ax in chosen.axes]
    assert titles == titanic_glmer.ppc(stat=["mean", "sex"], random_seed=1)["statistic"].to_list()
    assert len(titles) == 3  # the mean, and one per level of sex


def test_plot_prior_posterior(glmer_copy, tmp_path):
    assert glmer_copy.prior is None
    fig = glmer_copy.plot_prior_posterior()
    assert glmer_copy.prior is not None
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("(Intercept)\nprior Normal(mu=0, sigma=2.5)")
    assert titles[2] == "sd of (1|pclass)\nprior HalfNormal(sigma=2.5)"
    # Each panel: the prior and the posterior density.
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    _check_png(fig, tmp_path / "prior_posterior.png")
    prior = glmer_copy.prior
    sds = plots.plot_prior_posterior(glmer_copy, var_names=["sd_pclass"])
    assert glmer_copy.prior is prior
    assert len(sds.axes) == 1
    with pytest.raises(ValueError, match="choose among"):
        plots.plot_prior_posterior(glmer_copy, var_names=["u_pclass"])


@pytest.mark.parametrize(
    "call",
    [
        lambda m: plots.plot_emmeans(m, "sex"),
        lambda m: plots.plot_contrasts(m, "sex"),
        plots.plot_ranef,
        plots.plot_trace,
        plots.plot_ppc,
        plots.plot_prior_posterior,
    ],
)
def test_plots_of_an_unfitted_model_fail(titanic, call):
    model = glmer("survived ~ sex + (1|pclass)", data=titanic, family="binomial")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        call(model)


@pytest.mark.slow
def test_figures_display_as_pictures_in_a_fresh_notebook(tmp_path):
    """A bayesmer Figure returned by a cell shows as PNG before pyplot was ever used."""
    import nbformat
    from nbclient import NotebookClient

    code = (
        "import bayesmer.plots\n"
        "from matplotlib.figure import Figure\n"
        "fig = Figure()\n"
        "fig.subplots().plot([0, 1], [1, 0])\n"
        "fig"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = nb.cells[0].outputs
    assert any("image/png" in out.get("data", {}) for out in outputs), outputs

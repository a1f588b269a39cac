"""The sampling stage: bayesmer's C callbacks are nutpie's, compiled faster.

Equivalent code paths, so the tolerances are tight: the callbacks return exactly what the
PyTensor functions return, and a seeded fit draws exactly what stock nutpie draws.
"""

import _thread
import ctypes
import os
import re
import sys
import threading
import time
import warnings

import numpy as np
import nutpie
import nutpie.compile_pymc
import polars as pl
import polars.selectors
import pytest

from bayesmer import FitInterruptedWarning, glm, glmer
from bayesmer.diagnostics import rank_diagnostics
from bayesmer.pymc_model import build_model
from bayesmer.sampling import MIN_KEPT_DRAWS, compile_model, exact_arithmetic
from bayesmer.trace import to_datatree


@pytest.fixture(scope="module")
def titanic_model(titanic):
    return build_model(glmer("survived ~ sex + (1|pclass)", titanic, family="binomial").spec)


@pytest.fixture(scope="module")
def compiled(titanic_model):
    return compile_model(titanic_model)


def _call_logp(compiled, x, dim=None):
    out = np.zeros_like(x)
    logp = np.zeros(1)
    code = compiled.compiled_logp_func.ctypes(
        ctypes.c_uint64(len(x) if dim is None else dim),
        x.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        logp.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        ctypes.c_void_p(compiled.user_data.ctypes.data),
    )
    return code, float(logp[0]), out


def test_logp_callback_returns_the_pytensor_log_density_and_gradient(compiled):
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.normal(0, 0.5, compiled.n_dim)
        code, logp, grad = _call_logp(compiled, x)
        want_logp, want_grad = compiled.logp_func(x)
        assert code == 0
        assert logp == float(want_logp)
        np.testing.assert_array_equal(grad, want_grad)


def test_logp_callback_reports_a_wrong_dimension_and_a_non_finite_density(compiled):
    x = np.zeros(compiled.n_dim)
    assert _call_logp(compiled, x, dim=compiled.n_dim + 1)[0] == -1
    # A huge log group sd makes the centred group means' density overflow.
    x_bad = np.full(compiled.n_dim, 800.0)
    assert _call_logp(compiled, x_bad)[0] in (3, 4)


def test_compiling_leaves_nutpie_as_it_was(compiled):
    assert nutpie.compile_pymc._make_c_logp_func.__module__ == "nutpie.compile_pymc"
    assert nutpie.compile_pymc._make_c_expand_func.__module__ == "nutpie.compile_pymc"


def test_seeded_draws_equal_stock_nutpie(titanic_model, compiled):
    settings = dict(
        draws=100, tune=150, chains=2, cores=1, seed=7, progress_bar=False, target_accept=0.95
    )
    ours = nutpie.sample(compiled, **settings)
    with exact_arithmetic():  # bayesmer compiles without fast-math flags
        stock_model = nutpie.compile_pymc_model(titanic_model, backend="numba")
    stock = nutpie.sample(stock_model, **settings)
    for name in ("b", "sd_pclass", "u_pclass"):
        np.testing.assert_array_equal(
            ours["posterior"][name].values, stock["posterior"][name].values
        )
    np.testing.assert_array_equal(
        ours["sample_stats"]["diverging"].values, stock["sample_stats"]["diverging"].values
    )


# -- interrupting a fit ------------------------------------------------------------------------


def _interrupt_after(draws: int, chains: int = 1):
    """A stand-in for nutpie's wait() that raises KeyboardInterrupt (what Ctrl-C does there)
    once ``chains`` chains have finished ``draws`` posterior draws each."""

    def wait(self, *, timeout=None):
        while True:
            time.sleep(0.02)
            stats = to_datatree(*self.inspect().get_arrow_trace(), {})["sample_stats"]
            done = np.isfinite(stats["step_size"].values).sum(axis=1) if stats.sizes["draw"] else 0
            if np.sum(done >= draws) >= chains:
                raise KeyboardInterrupt

    return wait


def _interrupt_at_once(self, *, timeout=None):
    """nutpie's wait() interrupted as soon as sampling starts (long before tuning is over)."""
    raise KeyboardInterrupt


def _nutpie_waiting():
    return sys.modules["nutpie.sample"]._BackgroundSampler


def test_interrupted_fit_keeps_the_draws_every_chain_finished(titanic, monkeypatch):
    """Ctrl-C during fit(draws=10**6): the chains that ran are cut to the same finished length
    (one chain per core runs at a time: with 3 chains on 2 cores the third has not started),
    the model says so, and its tables hold numbers (they were NaN: unfinished draws read as
    finished)."""
    model = glm("survived ~ sex + fare", titanic, family="binomial")
    running = min(3, os.cpu_count())
    monkeypatch.setattr(_nutpie_waiting(), "wait", _interrupt_after(400, running))
    with pytest.warns(FitInterruptedWarning, match="the fit keeps") as caught:
        model.fit(draws=10**6, chains=3, random_seed=1, progressbar=False)
    message = str(next(w.message for w in caught if w.category is FitInterruptedWarning))
    chains, kept = map(int, re.search(r"keeps (\d+) chains of (\d+) draws", message).groups())
    assert chains == running and 400 <= kept < 10**6
    assert (model.chains, model.draws) == (chains, kept)
    posterior = model.posterior["posterior"]
    assert dict(posterior.sizes)["chain"] == chains and posterior.sizes["draw"] == kept
    assert posterior["chain"].values.tolist() == list(range(chains))
    assert model.posterior["sample_stats"].sizes["draw"] == kept
    assert np.isfinite(posterior["b"].values).all()
    assert np.isfinite(model.result_fit.select(pl.selectors.numeric()).to_numpy()).all()
    assert np.isfinite(model.emmeans("sex")["prob"].to_numpy()).all()
    # the diagnostics are those of the kept draws
    b = posterior["b"].values.transpose(2, 0, 1)
    np.testing.assert_allclose(model.diagnostics["ess_bulk"].to_numpy(), rank_diagnostics(b)[1])
    assert len(model.chain_diagnostics) == chains


def test_fit_interrupted_before_enough_draws_leaves_the_model_as_it_was(titanic, monkeypatch):
    model = glm("survived ~ sex", titanic, family="binomial")
    model.fit(draws=1000, chains=2, random_seed=1, progressbar=False)
    posterior, params, summary = model.posterior, model.params, str(model.summary())
    monkeypatch.setattr(_nutpie_waiting(), "wait", _interrupt_at_once)
    with pytest.warns(FitInterruptedWarning, match="left as it was \\(its previous fit\\)"):
        with pytest.raises(KeyboardInterrupt):
            model.fit(draws=5000, tune=5000, chains=4, random_seed=2, progressbar=False)
    assert model.posterior is posterior
    assert model.params.equals(params)
    assert (model.draws, model.chains, model.random_seed) == (1000, 2, 1)
    assert str(model.summary()) == summary


def test_fit_interrupted_by_a_real_ctrl_c(titanic):
    """SIGINT through nutpie's own waiting: the fit keeps finished draws or (on a machine too
    slow to finish MIN_KEPT_DRAWS in a second) raises and keeps its previous fit; never NaN."""
    model = glm("survived ~ sex", titanic, family="binomial")
    model.fit(draws=1000, chains=2, random_seed=1, progressbar=False)  # compiled before the timer
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # a short kept fit may also warn about convergence
            model.fit(draws=10**8, chains=2, random_seed=2, progressbar=False)
    except KeyboardInterrupt:
        assert (model.draws, model.random_seed) == (1000, 1)
    else:
        assert FitInterruptedWarning in [w.category for w in caught]
        assert MIN_KEPT_DRAWS <= model.draws < 10**8 and model.random_seed == 2
    finally:
        timer.join()
    assert np.isfinite(model.params["estimate"].to_numpy()).all()


def test_sampler_settings_check_falls_back_when_nutpie_internals_change(monkeypatch):
    """The check of extra nutpie settings uses nutpie's private settings classes; when a
    release renames them, nothing fails here and nutpie checks the settings itself."""
    from types import SimpleNamespace

    from bayesmer import sampling

    with pytest.raises(TypeError, match="Unknown sampler setting 'foo'"):
        sampling.check_sampler_kwargs({"foo": 1})
    monkeypatch.setattr(sampling, "nutpie_lib", SimpleNamespace())
    sampling.check_sampler_kwargs({"foo": 1, "target_accept": 0.9})
    # what bayesmer knows without nutpie's classes is still checked
    with pytest.raises(TypeError, match="'seed' is set by bayesmer"):
        sampling.check_sampler_kwargs({"seed": 1})
    with pytest.raises(TypeError, match="adaptation must be one of"):
        sampling.check_sampler_kwargs({"adaptation": "full"})


def test_compile_falls_back_to_stock_nutpie_without_its_private_factories(
    titanic_model, compiled, monkeypatch, caplog
):
    """A nutpie whose factories are not those bayesmer swaps (here one re-shaped, as a new
    release might) compiles as it is (a note, no failure), with the same draws."""
    from bayesmer import sampling

    assert sampling.loop_callbacks_supported()
    original = nutpie.compile_pymc._make_c_expand_func

    def reshaped(*args):
        return original(*args)

    monkeypatch.setattr(nutpie.compile_pymc, "_make_c_expand_func", reshaped)
    assert not sampling.loop_callbacks_supported()
    with caplog.at_level("INFO", logger="bayesmer"):
        stock = sampling.compile_model(titanic_model)
    assert "compiling with stock nutpie" in caplog.text
    settings = dict(draws=50, tune=100, chains=1, cores=1, seed=3, progress_bar=False)
    ours = nutpie.sample(compiled, **settings)
    again = nutpie.sample(stock, **settings)
    np.testing.assert_array_equal(ours["posterior"]["b"].values, again["posterior"]["b"].values)


def _groups_data(sizes: dict[str, int], rows: int, seed: int) -> pl.DataFrame:
    """Bernoulli rows with a continuous x and grouping factors of the given sizes."""
    rng = np.random.default_rng(seed)
    columns = {name: rng.permutation(np.arange(rows) % k).astype(str) for name, k in sizes.items()}
    return pl.DataFrame({"y": rng.integers(0, 2, rows), "x": rng.normal(size=rows), **columns})


def test_large_models_get_shorter_tuning_lower_target_acceptance_and_shallower_trees():
    """Thousands of group levels: tune 500, target acceptance 0.65 and maximum tree depth 4
    by default; fewer levels, or a factor of few levels (whose sd needs small steps), keep
    1000, 0.8/0.99 and nutpie's depth."""
    from bayesmer.sampling import default_sampler_kwargs, default_tune

    cases = [
        ({"g": 2500}, "y ~ x + (1|g)", 500, 0.65, 4),
        ({"g": 1200, "h": 900}, "y ~ x + (1|g) + (1|h)", 500, 0.65, 4),
        ({"g": 300}, "y ~ x + (1|g)", 1000, 0.8, None),
        ({"g": 2500, "k": 4}, "y ~ x + (1|g) + (1|k)", 1000, 0.99, None),
    ]
    for sizes, formula, tune, target, depth in cases:
        spec = glmer(formula, data=_groups_data(sizes, 20_000, 1), family="binomial").spec
        assert sum(len(g.levels) for g in spec.groups) == sum(sizes.values())
        assert default_tune(spec) == tune, formula
        assert default_sampler_kwargs(spec)["target_accept"] == target, formula
        assert default_sampler_kwargs(spec).get("maxdepth") == depth, formula


def test_summary_sampler_line_says_which_settings_are_large_model_defaults():
    """The summary's Sampler line names the large-model defaults in use and why, and says
    nothing of them when the user chose other settings or the model is small."""
    from bayesmer.sampling import sampler_line

    large = glmer("y ~ x + (1|g)", _groups_data({"g": 2500}, 20_000, 1), family="binomial").spec
    line = sampler_line(large, 4, 1000, 500, 7, {"target_accept": 0.65, "maxdepth": 4})
    assert line == (
        "Sampler: nutpie NUTS, 4 chains x 1000 draws (tune 500), seed 7 (tune 500, target "
        "acceptance 0.65 and maximum tree depth 4 by default: 2,500 group levels)"
    )
    deeper = sampler_line(large, 4, 1000, 500, 7, {"target_accept": 0.65, "maxdepth": 10})
    assert deeper.endswith("(tune 500 and target acceptance 0.65 by default: 2,500 group levels)")
    chosen = sampler_line(large, 4, 1000, 1000, 7, {"target_accept": 0.9})
    assert chosen == "Sampler: nutpie NUTS, 4 chains x 1000 draws (tune 1000), seed 7"
    small = glmer("y ~ x + (1|g)", _groups_data({"g": 300}, 2_000, 1), family="binomial").spec
    assert sampler_line(small, 2, 500, 500, 1, {"target_accept": 0.65}).endswith("seed 1")

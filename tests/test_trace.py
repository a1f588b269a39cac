"""nutpie's raw draws converted by bayesmer (bayesmer.trace) equal nutpie's own conversion."""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import nutpie
import pytest
import xarray as xr

from bayesmer import glmer
from bayesmer.pymc_model import build_model
from bayesmer.sampling import Sampler, compile_model
from bayesmer.trace import skipped_stats, to_datatree

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = dict(draws=60, tune=80, chains=2, cores=1, seed=3, progress_bar=False, save_warmup=False)


@pytest.fixture(scope="module")
def compiled(titanic):
    model = glmer("survived ~ sex + (1|pclass)", titanic, family="binomial")
    return compile_model(build_model(model.spec))


def _ours(compiled, **settings):
    raw = nutpie.sample(compiled, return_raw_trace=True, **settings)
    return to_datatree(
        *raw.get_arrow_trace(),
        compiled.coords,
        skip_draws=compiled.reparameterized_names,
        skip_stats=skipped_stats(settings),
    )


def _assert_same(ours, theirs):
    assert set(ours.children) == set(theirs.children) == {"posterior", "sample_stats"}
    for group in ("posterior", "sample_stats"):
        a, b = ours[group].to_dataset(), theirs[group].to_dataset()
        xr.testing.assert_equal(a, b)
        assert {k: a[k].dtype for k in a.variables} == {k: b[k].dtype for k in b.variables}


@pytest.mark.parametrize("store", [{}, {"store_gradient": True, "store_divergences": True}])
def test_conversion_equals_nutpies(compiled, store):
    settings = {**SETTINGS, **store}
    ours = _ours(compiled, **settings)
    theirs = nutpie.sample(compiled, **settings)
    _assert_same(ours, theirs)
    assert ("gradient" in ours["sample_stats"]) == bool(store)
    assert "sd_pclass_log__" not in ours["posterior"]  # the unconstrained value is left out


def test_the_conversion_releases_nutpies_batches_chain_by_chain(compiled):
    """Each chain's Arrow batch is let go once converted (so nutpie's buffers are freed as
    the draws are copied out, not after all of them): the lists handed over end empty."""
    raw = nutpie.sample(compiled, return_raw_trace=True, **SETTINGS)
    draws, stats = raw.get_arrow_trace()
    trace = to_datatree(draws, stats, compiled.coords, compiled.reparameterized_names)
    assert draws == [None, None] and stats == [None, None]
    assert np.isfinite(trace["posterior"]["b"].values).all()


def test_a_shorter_chain_is_padded(compiled):
    """An interrupted sampling: the chains' draws differ in number; the missing ones are NaN
    (zero for integer statistics, None for text) as in nutpie's conversion."""
    raw = nutpie.sample(compiled, return_raw_trace=True, **SETTINGS)
    draws, stats = raw.get_arrow_trace()
    cut = SETTINGS["tune"] + 25
    draws = [draws[0], draws[1].slice(0, cut)]
    stats = [stats[0], stats[1].slice(0, cut)]
    trace = to_datatree(draws, stats, compiled.coords, compiled.reparameterized_names)
    b = trace["posterior"]["b"].values
    assert b.shape[:2] == (2, SETTINGS["draws"])
    assert np.isfinite(b[0]).all() and np.isfinite(b[1, :25]).all() and np.isnan(b[1, 25:]).all()
    depth = trace["sample_stats"]["depth"].values
    assert (depth[1, 25:] == 0).all() and (depth[1, :25] > 0).all()
    assert (trace["sample_stats"]["divergence_message"].values[1, 25:] == None).all()  # noqa: E711


def test_a_raw_trace_without_arrow_batches_is_sampled_again_by_nutpie(compiled, caplog):
    """The fallback for a nutpie whose raw trace changed: the same draws, with a note."""

    class Opaque:
        pass

    sampler = Sampler(compilation=None, data={}, coords={}, compile_seconds=0.0, source="memory")
    with caplog.at_level(logging.INFO, logger="bayesmer"):
        trace = sampler._converted(Opaque(), compiled, dict(SETTINGS), None)
    assert "no Arrow batches: sampled again" in caplog.text
    _assert_same(_ours(compiled, **SETTINGS), trace)


class _Opaque:
    """A raw trace of a nutpie without Arrow batches."""


@pytest.mark.parametrize("route", ["ours", "nutpie's conversion"])
def test_only_the_kept_variables_are_kept(compiled, route):
    """With ``keep``, the posterior holds those variables only, their draws unchanged (our
    conversion leaves the others out; nutpie's is cut after)."""
    sampler = Sampler(compilation=None, data={}, coords={}, compile_seconds=0.0, source="memory")
    raw = (
        _Opaque() if route != "ours" else nutpie.sample(compiled, return_raw_trace=True, **SETTINGS)
    )
    keep = ["b", "sd_pclass"]
    converted = sampler._converted(raw, compiled, dict(SETTINGS), keep)
    if route == "ours":
        assert sorted(converted["posterior"].data_vars) == keep
    trace = sampler._completed(converted, keep)
    assert sorted(trace["posterior"].data_vars) == keep
    full = _ours(compiled, **SETTINGS)
    for name in keep:
        np.testing.assert_array_equal(
            trace["posterior"][name].values, full["posterior"][name].values
        )


def test_deterministics_computed_after_sampling_equal_nutpies(titanic):
    """A model compiled without its deterministics (what a large model does to hold one copy
    of its group effects): the same seeded draws of the free variables, and the group effects
    and coefficients computed from them equal those nutpie stores, with this fit's labels."""
    from bayesmer import compiled as cache

    model = glmer("survived ~ sex + (1|pclass)", titanic, family="binomial")
    keep = model.spec.reported
    traces = {}
    for stored in (True, False):
        sampler = cache.sampler(build_model(model.spec), deterministics=stored)
        traces[stored] = sampler.sample(60, 80, 2, 3, False, keep=keep)
    with_, without = traces[True]["posterior"], traces[False]["posterior"]
    assert sorted(without.data_vars) == sorted(keep)
    for name in keep:
        np.testing.assert_allclose(without[name].values, with_[name].values, rtol=1e-12, atol=1e-14)
        assert without[name].dims == with_[name].dims
        for dim in without[name].dims:
            np.testing.assert_array_equal(without[name][dim].values, with_[name][dim].values)


def test_group_effects_computed_after_sampling_take_the_latent_effects_place(titanic):
    """The group effects of a model compiled without its deterministics are written into the
    array of the latent effects they come from (not kept), so the two are held once; the
    values are those nutpie stores (the test above)."""
    from bayesmer import compiled as cache

    model = glmer("survived ~ sex + (1|pclass)", titanic, family="binomial")
    keep = model.spec.reported
    sampler = cache.sampler(build_model(model.spec), deterministics=False)
    posterior = sampler.sample(60, 80, 2, 3, False)["posterior"].to_dataset()
    free = [rv.name for rv in sampler.compilation.model.free_RVs]
    latent = [name for name in free if name not in keep and posterior[name].shape == (2, 60, 3)]
    assert latent
    before = posterior[latent[0]].values.copy()
    with sampler.compilation.bound(sampler.data):
        out = sampler._deterministics(posterior, ["u_pclass", "b"], keep)
    assert np.shares_memory(out["u_pclass"].values, posterior[latent[0]].values)
    assert not np.array_equal(posterior[latent[0]].values, before)
    # a variable that is kept is never overwritten
    with sampler.compilation.bound(sampler.data):
        out = sampler._deterministics(posterior, ["u_pclass"], keep=[*keep, *latent])
    assert not any(np.shares_memory(out["u_pclass"].values, posterior[n].values) for n in free)


def test_a_fit_keeps_the_reported_variables(titanic):
    """The latent variables of the parametrization (standardised effects, centred means, the
    centred intercept) are not kept: only what summaries read."""
    model = glmer("survived ~ sex + (1|pclass)", titanic, family="binomial")
    model.fit(random_seed=1, progressbar=False, summary=False)
    assert sorted(model.posterior["posterior"].data_vars) == sorted(model.spec.reported)


def test_a_fit_imports_no_arviz_and_arviz_still_works_after():
    code = (
        "import sys, bayesmer\n"
        "data = bayesmer.load_dataset('titanic')\n"
        "m = bayesmer.glmer('survived ~ sex + (1|pclass)', data, family='binomial')\n"
        "m.fit(draws=200, tune=200, chains=2, random_seed=1, progressbar=False)\n"
        "m.emmeans('sex')\n"
        "loaded = [n for n in ('arviz_stats', 'arviz_plots', 'matplotlib', 'scipy.signal')\n"
        "          if n in sys.modules]\n"
        "print(' '.join(loaded) or 'none')\n"
        "import arviz\n"
        "print(arviz.ess(m.posterior['posterior'].to_dataset()[['b']])['b'].shape)\n"
        "print(type(sys.modules['arviz']).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    lines = out.stdout.split("\n")
    assert lines[0] == "none", lines[0]
    assert lines[1] == "(2,)" and lines[2] == "module"

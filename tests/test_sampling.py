"""The sampling stage: bayesmer's C callbacks are nutpie's, compiled faster.

Equivalent code paths, so the tolerances are tight: the callbacks return exactly what the
PyTensor functions return, and a seeded fit draws exactly what stock nutpie draws.
"""

import ctypes

import numpy as np
import nutpie
import nutpie.compile_pymc
import pytest

from bayesmer import glmer
from bayesmer.pymc_model import build_model
from bayesmer.sampling import compile_model


@pytest.fixture(scope="module")
def titanic_model(titanic):
    return build_model(glmer("survived ~ sex + (1|pclass)", titanic).spec)


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
    stock = nutpie.sample(nutpie.compile_pymc_model(titanic_model, backend="numba"), **settings)
    for name in ("b", "sd_pclass", "u_pclass"):
        np.testing.assert_array_equal(
            ours["posterior"][name].values, stock["posterior"][name].values
        )
    np.testing.assert_array_equal(
        ours["sample_stats"]["diverging"].values, stock["sample_stats"]["diverging"].values
    )

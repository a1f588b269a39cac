"""The fused GLM likelihood (bayesmer.fused) gives the plain graph's log density and gradient."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode
from pytensor.graph import clone_replace, rewrite_graph
from scipy import special

import bayesmer
from bayesmer.fused import LinearLikelihood
from bayesmer.pymc_model import build_model


def _many_groups(n_groups: int, rows: int, seed: int) -> pl.DataFrame:
    """Bernoulli rows, a factor, a continuous predictor and group intercepts (issue 13)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 0.5, n_groups)
    g = rng.integers(0, n_groups, rows)
    a = rng.integers(0, 2, rows)
    x = rng.normal(size=rows)
    eta = -0.5 + 0.8 * a + 0.3 * x + u[g]
    y = (rng.random(rows) < 1 / (1 + np.exp(-eta))).astype(int)
    h = rng.integers(0, 7, rows)
    t = rng.uniform(0.5, 2.0, rows)
    counts = rng.poisson(t * np.exp(eta))
    return pl.DataFrame(
        {"y": y, "a": a.astype(str), "x": x, "g": g.astype(str), "h": h.astype(str)}
    ).with_columns(count=pl.Series(counts), t=pl.Series(t))


def _logp_dlogp(model):
    """The model's log density and gradient as nutpie compiles them (PyTensor's numba
    backend), and with PyTensor's Python linker (the Op's ``perform``), on one vector."""
    value_vars = model.value_vars
    point = model.initial_point()
    logp = rewrite_graph(model.logp(), include=["canonicalize", "stabilize"])
    grad = pt.concatenate([g.ravel() for g in pt.grad(logp, value_vars)])
    joined = pt.dvector("joined")
    replace, start = {}, 0
    for var in value_vars:
        size = point[var.name].size
        replace[var] = joined[start : start + size].reshape(point[var.name].shape)
        start += size
    outputs = clone_replace([logp, grad], replace=replace)
    modes = ["NUMBA", Mode(linker="py", optimizer="fast_run")]
    functions = [pytensor.function([joined], outputs, mode=m) for m in modes]
    fused = [
        sum(isinstance(node.op, LinearLikelihood) for node in f.maker.fgraph.apply_nodes)
        for f in functions
    ]
    x0 = np.concatenate([point[var.name].ravel() for var in value_vars])
    return functions, fused, x0


CASES = {
    "binomial, non-centred groups, rows not collapsed": (
        "y ~ a + x + (1|g)",
        "binomial",
        (300, 3000),
    ),
    "binomial, centred groups, within-group predictor": (
        "y ~ a + x + (1|g)",
        "binomial",
        (8, 3000),
    ),
    "binomial, collapsed cells of several trials": ("y ~ a + (1|g)", "binomial", (20, 3000)),
    "binomial, crossed factors": ("y ~ a + x + (1|g) + (1|h)", "binomial", (40, 2000)),
    "binomial glm": ("y ~ a + x", "binomial", (5, 1000)),
    "binomial, no intercept": ("y ~ 0 + a + x + (1|g)", "binomial", (30, 1000)),
    "binomial, intercept only (no columns)": ("y ~ 1 + (1|g)", "binomial", (30, 1000)),
    "poisson with offset, crossed": (
        "count ~ a + x + offset(log(t)) + (1|g) + (1|h)",
        "poisson",
        (200, 3000),
    ),
    "poisson, centred groups": ("count ~ x + (1|g)", "poisson", (6, 2000)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_likelihood_matches_plain_graph(case):
    """At random points around the initial point, the fused model's log density and
    gradient equal the plain PyTensor graph's to 1e-8 (relative to the largest entry), with
    the numba kernel and with the NumPy ``perform``."""
    formula, family, (n_groups, rows) = CASES[case]
    data = _many_groups(n_groups, rows, seed=3)
    make = bayesmer.glmer if "|" in formula else bayesmer.glm
    spec = make(formula, data=data, family=family).spec
    (plain, _), n_plain, x0 = _logp_dlogp(build_model(spec, fused=False))
    fused_fns, n_fused, x1 = _logp_dlogp(build_model(spec, fused=True))
    assert n_plain == [0, 0]
    assert n_fused == [1, 1]  # one pass over the rows for the log density and its gradient
    np.testing.assert_array_equal(x0, x1)
    rng = np.random.default_rng(11)
    for scale in (0.3, 1.0, 3.0):
        point = x0 + scale * rng.normal(size=x0.size)
        logp, grad = plain(point)
        for fn in fused_fns:
            logp_f, grad_f = fn(point)
            assert abs(logp_f - logp) <= 1e-8 * abs(logp)
            assert np.max(np.abs(grad_f - grad)) <= 1e-8 * np.max(np.abs(grad))


def test_slopes_and_other_families_keep_the_plain_graph():
    """Random slopes and families without a fused likelihood are built as before."""
    data = _many_groups(30, 600, seed=4)
    for formula, family in [
        ("y ~ x + (x|g)", "binomial"),
        ("count ~ x + (1|g)", "negativebinomial"),
        ("x ~ a + (1|g)", "gaussian"),
    ]:
        spec = bayesmer.glmer(formula, data=data, family=family).spec
        _, counts, _ = _logp_dlogp(build_model(spec))
        assert counts == [0, 0], formula


def test_second_derivatives_are_refused():
    """The Op's gradient outputs are not differentiated further: an error, not a wrong
    Hessian."""
    spec = bayesmer.glmer("y ~ x + (1|g)", data=_many_groups(20, 200, 5), family="binomial").spec
    model = build_model(spec)
    logp = model.logp()
    grad = pt.grad(logp, model.value_vars[0])
    with pytest.raises(NotImplementedError, match="no second derivatives"):
        pt.grad(grad.sum(), model.value_vars[0])


@pytest.mark.parametrize("trials", ["one", "several"])
def test_binomial_kernel_exact_far_in_the_tails(trials):
    """Linear predictors from -750 to 750 (exp(-|eta|) below the smallest normal float at
    the ends): the numba kernel's log-likelihood and gradients equal NumPy's exact ones."""
    rng = np.random.default_rng(2)
    rows = 4001
    Xt = np.linspace(-750.0, 750.0, rows)[None, :]  # the design matrix transposed
    n = np.ones(rows) if trials == "one" else rng.integers(1, 30, rows).astype(float)
    y = np.minimum(rng.poisson(n / 2), n)
    index = rng.integers(0, 7, rows).astype(float)
    means = np.zeros(7)
    inputs = [pt.dscalar(), pt.dmatrix(), pt.dvector(), pt.dvector(), pt.dvector()]
    inputs += [pt.dvector(), pt.dvector()]
    out = LinearLikelihood("binomial", 1, 1)(*inputs)
    f = pytensor.function(inputs, out, mode="NUMBA")
    logp, dc, db, dm = f(0.0, Xt, np.array([1.0]), means, index, y, n)
    eta = Xt[0]
    r = y - n * special.expit(eta)
    exact = np.sum(y * eta - n * np.logaddexp(0.0, eta))
    assert abs(logp - exact) <= 1e-12 * abs(exact)
    np.testing.assert_allclose(dc, r.sum(), rtol=1e-10)
    np.testing.assert_allclose(db, [np.sum(r * eta)], rtol=1e-10)
    np.testing.assert_allclose(dm, np.bincount(index.astype(int), weights=r), rtol=1e-10)


def test_exp_kernel_matches_numpy_over_the_whole_range():
    """The vectorised exp equals NumPy's to a unit in the last place from -708 to 709 and
    clips beyond."""
    from bayesmer.fused import _row_kernels

    exp_neg_abs, _, exp_all = _row_kernels()
    a = np.linspace(-708.0, 709.0, 200_001)
    out = np.empty_like(a)
    exp_all(a, out)
    np.testing.assert_allclose(out, np.exp(a), rtol=1e-15, atol=0)
    edges = np.array([709.5, 709.7828, 800.0, np.inf, -750.0, -np.inf])
    exp_all(edges, out[:6])
    np.testing.assert_allclose(out[:6], np.exp([709.0] * 4 + [-708.0] * 2), rtol=1e-15)
    inside = a[np.abs(a) <= 708.0]
    exp_neg_abs(inside, out[: len(inside)])
    np.testing.assert_allclose(out[: len(inside)], np.exp(-np.abs(inside)), rtol=1e-15)


EXP_AFTER_A_FAST_CALLER = """
import numba, numpy as np
from bayesmer.fused import _row_kernels
exp_neg_abs, _, exp_all = _row_kernels()

@numba.njit(fastmath={"reassoc", "contract", "afn", "arcp", "nsz"})
def fast_caller(a, e):
    exp_all(a, e)
    exp_neg_abs(a, e)

a = np.linspace(-708.0, 708.0, 200_001)
out = np.empty_like(a)
fast_caller(a[:8], out[:8])
exp_all(a, out)
print(np.max(np.abs(out / np.exp(a) - 1)))
exp_neg_abs(a, out)
print(np.max(np.abs(out / np.exp(-np.abs(a)) - 1)))
"""


def test_exp_kernel_does_not_depend_on_what_called_it_first():
    """numba compiles a function that sets no flags of its own with those of its first caller
    (PyTensor's fast-math ones, with reassociation) and keeps that version: the exp passes set
    theirs, so a fast-math caller compiled first in a process changes none of their digits (it
    did: a relative error of 2.4e-14, and seeded draws that depended on the order of tests).
    In a fresh process, so that the caller it compiles cannot touch this one's kernels."""
    result = subprocess.run(
        [sys.executable, "-c", EXP_AFTER_A_FAST_CALLER], capture_output=True, text=True, check=True
    )
    errors = [float(line) for line in result.stdout.split()]
    assert len(errors) == 2
    assert max(errors) <= 1e-15, errors


def test_poisson_kernel_exact_far_in_the_tails():
    """Linear predictors from -700 to 700 with a log offset: the numba kernel's
    log-likelihood and gradients equal NumPy's."""
    rng = np.random.default_rng(3)
    rows = 4001
    Xt = np.linspace(-700.0, 700.0, rows)[None, :]
    offset = rng.uniform(-1.0, 0.0, rows)
    y = rng.poisson(3.0, rows).astype(float)
    index = rng.integers(0, 7, rows).astype(float)
    means = rng.normal(0.0, 0.1, 7)
    inputs = [pt.dscalar(), pt.dmatrix(), pt.dvector(), pt.dvector(), pt.dvector()]
    inputs += [pt.dvector(), pt.dvector()]
    out = LinearLikelihood("poisson", 1, 1)(*inputs)
    f = pytensor.function(inputs, out, mode="NUMBA")
    logp, dc, db, dm = f(0.25, Xt, np.array([1.0]), means, index, y, offset)
    eta = 0.25 + Xt[0] + means[index.astype(int)]
    mu = np.exp(eta + offset)
    r = y - mu
    exact = np.sum(y * (eta + offset) - mu)
    assert abs(logp - exact) <= 1e-12 * abs(exact)
    np.testing.assert_allclose(dc, r.sum(), rtol=1e-10)
    np.testing.assert_allclose(db, [np.sum(r * Xt[0])], rtol=1e-10)
    np.testing.assert_allclose(dm, np.bincount(index.astype(int), weights=r), rtol=1e-10)

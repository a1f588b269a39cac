"""The GLM log-likelihood and its gradient in one kernel: a PyTensor Op.

PyTensor's graph of ``sum(y * eta - n * softplus(eta))`` with ``eta = c + X @ b + m[index]``
walks the rows several times (the linear predictor, softplus, the sigmoid of the gradient,
``X.T @ r``, the scatter of ``r`` into the group means), each a loop of its own with its
temporaries, and calls the C library's ``exp`` and ``log1p`` one row at a time.
:class:`LinearLikelihood` computes the log-likelihood and every gradient in one kernel, a
block of rows at a time while it is in the processor's cache. For the binomial-logit
likelihood: the linear predictor, then ``e = exp(-|eta|)`` in plain arithmetic that the
compiler turns into SIMD instructions (:func:`_row_kernels`), the
log-likelihood with ``softplus(eta) = max(eta, 0) + log1p(e)`` (the sum of ``log1p(e)`` as
the log of products of ``1 + e``, one ``log`` per :data:`PRODUCT_BLOCK` rows when every row
is one trial) and the residuals ``y - n sigmoid(eta)`` from the same ``e``, then
``X.T @ r`` and the scatter. For the Poisson likelihood, the same with ``exp(eta)``. The Op
takes the design matrix transposed (a row of the data per column of ``X``), so that each
column is contiguous and the loops over it are vectorised.
Its numba implementation is registered with PyTensor's numba dispatch, which nutpie's numba
backend compiles; ``perform`` is the same computation in NumPy.

The log density is the same as the plain graph's up to rounding (the sums are taken in
another order, ``exp`` is computed to a few units in the last place): ``tests/test_fused.py``
compares the two models' log density and gradient at random points to 1e-8.

The linear predictor is collected by :class:`Predictor` while the model is built; the
likelihood then takes the fused path for the families it implements (:data:`FAMILIES`) when
every part of the linear predictor is one it knows (a scalar, a data matrix times a
coefficient vector, group means indexed by a data index), and the plain graph otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytensor.tensor as pt
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from pytensor.gradient import DisconnectedType, disconnected_type
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

#: Families (name, link) with a fused likelihood: their log-likelihood per row, up to a
#: constant, is ``y * eta - n * softplus(eta)`` and ``y * eta - exp(eta + log offset)``.
FAMILIES = {("binomial", "logit"): "binomial", ("poisson", "log"): "poisson"}


#: Rows whose ``1 + exp(-|eta|)`` (each at most 2) are multiplied before taking the log: the
#: product stays below 2**PRODUCT_BLOCK, far from overflowing (2**1024), and its rounding
#: (PRODUCT_BLOCK ulps at most) far below 1e-8 of the log density.
PRODUCT_BLOCK = 512


class LinearLikelihood(Op):
    """Log-likelihood of a GLM with linear predictor ``c + X @ b + sum_k m_k[index_k]``, and
    its gradient with respect to ``c``, ``b`` and each ``m_k``, in one pass over the rows.

    Inputs: ``c`` (scalar), ``Xt`` (p x rows: the design matrix transposed, each of its
    columns contiguous), ``b`` (p), then per gathered term ``m_k``
    (levels) and ``index_k`` (rows, the level of each row as a float: the model's data are one
    float vector, see :class:`bayesmer.pymc_model.Inputs`), then ``y`` (rows) and ``w``
    (rows): the trials ``n`` of a binomial likelihood, the log offset of a Poisson one.

    Outputs: the log-likelihood (scalar), then its gradients: ``dc``, ``db``, each ``dm_k``.
    The gradient of the first output (:meth:`pullback`) is read off the others, so a compiled
    log density with gradient evaluates the loop once.

    Parameters
    ----------
    family : {'binomial', 'poisson'}
    n_gathers : int
        Number of gathered terms ``m_k[index_k]``.
    columns : int
        Number of columns of ``X`` (rows of ``Xt``; the kernel is written out for it: its
        loops over the columns unrolled).
    """

    __props__ = ("family", "n_gathers", "columns")

    def __init__(self, family: str, n_gathers: int, columns: int) -> None:
        if family not in FAMILIES.values():
            raise ValueError(f"no fused likelihood for family {family!r}")
        self.family = family
        self.n_gathers = n_gathers
        self.columns = columns

    def make_node(self, c, Xt, b, *rest) -> Apply:
        register()  # the numba implementation, for any graph holding the Op
        c, Xt, b = (pt.as_tensor_variable(v) for v in (c, Xt, b))
        rest = [pt.as_tensor_variable(v) for v in rest]
        if len(rest) != 2 * self.n_gathers + 2:
            raise ValueError(f"{len(rest)} inputs after c, Xt, b for {self.n_gathers} gathers")
        if c.ndim != 0 or Xt.ndim != 2 or b.ndim != 1 or any(v.ndim != 1 for v in rest):
            raise ValueError("LinearLikelihood takes a scalar, a matrix and vectors")
        if Xt.type.shape[0] not in (None, self.columns):
            raise ValueError(f"Xt has {Xt.type.shape[0]} rows, the Op {self.columns} columns")
        inputs = [c, Xt, b, *rest]
        means = rest[: 2 * self.n_gathers : 2]
        outputs = [pt.dscalar(), pt.dscalar(), pt.dvector(), *(pt.dvector() for _ in means)]
        return Apply(self, inputs, outputs)

    def perform(self, node, inputs, output_storage) -> None:
        c, Xt, b, *rest = inputs
        means = rest[: 2 * self.n_gathers : 2]
        indices = [np.asarray(i, dtype=np.int64) for i in rest[1 : 2 * self.n_gathers : 2]]
        y, w = rest[-2], rest[-1]
        eta = c + Xt.T @ b
        for m, i in zip(means, indices, strict=True):
            eta = eta + m[i]
        if self.family == "binomial":
            e = np.exp(-np.abs(eta))
            logp = np.sum(y * eta - w * (np.maximum(eta, 0.0) + np.log1p(e)))
            r = y - w * np.where(eta >= 0, 1.0, e) / (1.0 + e)
        else:
            mu = np.exp(eta + w)
            logp = np.sum(y * eta + y * w - mu)
            r = y - mu
        output_storage[0][0] = np.asarray(logp, dtype=np.float64)
        output_storage[1][0] = np.asarray(np.sum(r), dtype=np.float64)
        output_storage[2][0] = np.asarray(Xt @ r, dtype=np.float64)
        for k, (m, i) in enumerate(zip(means, indices, strict=True)):
            output_storage[3 + k][0] = np.bincount(i, weights=r, minlength=len(m)).astype(float)

    def pullback(self, inputs, outputs, output_grads):
        if not all(isinstance(g.type, DisconnectedType) for g in output_grads[1:]):
            raise NotImplementedError("LinearLikelihood has no second derivatives")
        g = output_grads[0]
        grads = [None] * len(inputs)
        grads[0] = g * outputs[1]
        grads[2] = g * outputs[2]
        for k in range(self.n_gathers):
            grads[3 + 2 * k] = g * outputs[3 + k]
        # data: the matrix, the indices, y and w are not differentiated
        for j, value in enumerate(grads):
            if value is None:
                grads[j] = disconnected_type()
        return grads

    def connection_pattern(self, node) -> list[list[bool]]:
        n_out = len(node.outputs)
        out = []
        for j in range(len(node.inputs)):
            parameter = j in (0, 2) or (3 <= j < 3 + 2 * self.n_gathers and (j - 3) % 2 == 0)
            out.append([parameter] * n_out)
        return out


def linear_likelihood(family: str, c, Xt, b, gathers: list[tuple[Any, Any]], y, w, columns: int):
    """The log-likelihood (first output of :class:`LinearLikelihood`); ``Xt`` (the design
    matrix transposed) has ``columns`` rows."""
    args = [a for m, i in gathers for a in (m, i)]
    return LinearLikelihood(family, len(gathers), columns)(c, Xt, b, *args, y, w)[0]


#: Lanes of the sums and products over rows: each is taken as LANES running sums (or
#: products) of every LANES-th row, combined pairwise at the end. The compiler turns the
#: lanes into SIMD instructions without reassociating anything (:data:`KERNEL_FLAGS`), so
#: the order of every operation is the one written here.
LANES = 8

#: LLVM fast-math flags of every kernel: none. A flag that lets the compiler change a result
#: (reassociation, contraction into fused multiply-adds, approximate functions or
#: reciprocals) makes the last bits depend on how the code was optimised, and numba
#: optimises a function again when it links it into its caller: the first process that
#: compiled a model (whose callbacks call the functions it compiled on their own) and a later
#: one that loads the callbacks from the cache (and runs their linked-in copies) then
#: computed log densities a bit apart, and their seeded draws parted after a few hundred
#: iterations. Without them the result is the one the source states wherever it is compiled
#: (tested across processes in ``tests/test_compiled.py``); the explicit lanes keep the
#: loops vectorised. Set on each function, with its error model: numba otherwise compiles a
#: callee with the flags of its first caller and keeps that version for every later caller.
KERNEL_FLAGS = False

# exp(a) in plain arithmetic (so that a loop of it is vectorised): a = k ln2 + r,
# |r| <= ln2 / 2, by Cody and Waite's two-part ln2 (fdlibm's); exp(r) by its Taylor
# polynomial of degree 13 (truncation below 2e-16); 2**(k - 1) built from the bits of
# k + 1.5 * 2**52, whose low bits hold k, then doubled; no product of two of the factors
# overflows in any order. Compiled with :data:`KERNEL_FLAGS` (none): a relative
# error of 2e-16 against NumPy's exp (tested).
# Arguments are clipped to [-708, 709]: below -708 gives exp(-708) (about 3e-308) instead of
# a smaller number or 0, an absolute difference below 1e-307; above 709 gives exp(709)
# (about 8.2e307) instead of a larger number or inf (a Poisson rate of 1e307 is rejected by
# the sampler either way).
_LOG2E = 1.4426950408889634
_SHIFT = 6755399441055744.0
_SHIFT_BITS = int(np.array([_SHIFT]).view(np.int64)[0])
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(13, -1, -1))


@intrinsic
def _float_as_int(typingctx, value):
    """The bits of a float64 as an int64 (a bit cast of the value, not of memory)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _int_as_float(typingctx, value):
    """The float64 of an int64's bits."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``fma``: one instruction on processors with fused
    multiply-add, the same result, computed slower, on others). Written out where wanted, so
    that no compiler decides it (:data:`KERNEL_FLAGS`)."""

    def codegen(context, builder, signature, args):
        double = ir.DoubleType()
        fnty = ir.FunctionType(double, [double, double, double])
        fn = builder.module.declare_intrinsic("llvm.fma", [double], fnty)
        return builder.call(fn, args)

    return types.float64(types.float64, types.float64, types.float64), codegen


@functools.cache
def _lane_kernels() -> tuple[Callable, Callable, Callable]:
    """Sums over rows in :data:`LANES` lanes: ``sum(a)``, ``sum(a * b)`` and
    ``sum(log(1 + e))`` (made once per process)."""
    import numba

    lanes = LANES
    flags = {"boundscheck": False, "fastmath": KERNEL_FLAGS, "error_model": "numpy"}

    @numba.njit(**flags)
    def lane_sum(a):  # pragma: no cover - numba code
        """``sum(a)``: LANES running sums of every LANES-th element, then pairwise."""
        n = a.shape[0]
        full = n - n % lanes
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        for i in range(0, full, lanes):
            s0 += a[i]
            s1 += a[i + 1]
            s2 += a[i + 2]
            s3 += a[i + 3]
            s4 += a[i + 4]
            s5 += a[i + 5]
            s6 += a[i + 6]
            s7 += a[i + 7]
        for i in range(full, n):
            s0 += a[i]
        return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))

    @numba.njit(**flags)
    def lane_dot(a, b):  # pragma: no cover - numba code
        """``sum(a * b)``, in the lanes of :func:`lane_sum`."""
        n = a.shape[0]
        full = n - n % lanes
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        for i in range(0, full, lanes):
            s0 += a[i] * b[i]
            s1 += a[i + 1] * b[i + 1]
            s2 += a[i + 2] * b[i + 2]
            s3 += a[i + 3] * b[i + 3]
            s4 += a[i + 4] * b[i + 4]
            s5 += a[i + 5] * b[i + 5]
            s6 += a[i + 6] * b[i + 6]
            s7 += a[i + 7] * b[i + 7]
        for i in range(full, n):
            s0 += a[i] * b[i]
        return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))

    @numba.njit(**flags)
    def log1p_sum(e):  # pragma: no cover - numba code
        """``sum(log(1 + e))`` for ``0 <= e <= 1``: the log of products of the factors
        ``1 + e`` (each in [1, 2]), PRODUCT_BLOCK at most per log, in the lanes of
        :func:`lane_sum`."""
        n = e.shape[0]
        total = 0.0
        for start in range(0, n, PRODUCT_BLOCK):
            stop = min(start + PRODUCT_BLOCK, n)
            full = stop - (stop - start) % lanes
            p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = 1.0
            for i in range(start, full, lanes):
                p0 *= 1.0 + e[i]
                p1 *= 1.0 + e[i + 1]
                p2 *= 1.0 + e[i + 2]
                p3 *= 1.0 + e[i + 3]
                p4 *= 1.0 + e[i + 4]
                p5 *= 1.0 + e[i + 5]
                p6 *= 1.0 + e[i + 6]
                p7 *= 1.0 + e[i + 7]
            for i in range(full, stop):
                p0 *= 1.0 + e[i]
            total += np.log(((p0 * p1) * (p2 * p3)) * ((p4 * p5) * (p6 * p7)))
        return total

    return lane_sum, lane_dot, log1p_sum


@functools.cache
def _row_kernels() -> tuple[Callable, Callable, Callable]:
    """The vectorised passes of the kernels: ``exp(-|eta|)`` and the log-likelihood with the
    residuals ``y - n sigmoid(eta)`` of the binomial-logit likelihood, and ``exp`` of the
    Poisson one (made once per process)."""
    import numba

    top, taylor = _TAYLOR[0], _TAYLOR[1:]
    log2e, shift, shift_bits, ln2_hi, ln2_lo = _LOG2E, _SHIFT, _SHIFT_BITS, _LN2_HI, _LN2_LO
    lane_sum, _, log1p_sum = _lane_kernels()
    flags = {"boundscheck": False, "fastmath": KERNEL_FLAGS, "error_model": "numpy"}

    @numba.njit(boundscheck=False, inline="always")
    def exp_clipped(a):  # pragma: no cover - numba code
        """``exp(a)`` for ``-708 <= a <= 709``."""
        k = np.floor(_fma(a, log2e, 0.5))
        t = k + shift  # exact: k is a whole number below 2**10 in size
        r = _fma(-k, ln2_lo, _fma(-k, ln2_hi, a))
        p = top
        for c in taylor:  # Horner's rule, unrolled by the compiler
            p = _fma(p, r, c)
        return p * _int_as_float((_float_as_int(t) - shift_bits + 1022) << 52) * 2.0

    @numba.njit(**flags)
    def exp_neg_abs(eta, e):  # pragma: no cover - numba code
        """``e = exp(-|eta|)``."""
        for i in range(eta.shape[0]):
            e[i] = exp_clipped(max(-abs(eta[i]), -708.0))

    @numba.njit(**flags)
    def exp_all(a, e):  # pragma: no cover - numba code
        """``e = exp(a)``, ``a`` clipped to [-708, 709]."""
        for i in range(a.shape[0]):
            e[i] = exp_clipped(min(max(a[i], -708.0), 709.0))

    # error_model="numpy": a division by zero gives inf or NaN instead of raising, so the
    # division of the residuals has no branch and its loop is vectorised (2.1 -> 0.6 ns a row)
    @numba.njit(**flags)
    def binomial_terms(eta, e, y, w, r, t):  # pragma: no cover - numba code
        """The log-likelihood ``sum(y eta - w softplus(eta))``; ``r = y - w sigmoid(eta)``
        (``t`` is scratch space of the rows' size)."""
        n = eta.shape[0]
        all_one = True
        for i in range(n):
            one_e = 1.0 + e[i]
            top = 1.0 if eta[i] >= 0.0 else e[i]
            r[i] = y[i] - w[i] * (top / one_e)
            t[i] = y[i] * eta[i] - w[i] * max(eta[i], 0.0)
            all_one = all_one and w[i] == 1.0
        linear = lane_sum(t)
        if all_one:
            return linear - log1p_sum(e)
        for i in range(n):
            t[i] = w[i] * np.log1p(e[i])
        return linear - lane_sum(t)

    return exp_neg_abs, binomial_terms, exp_all


def _kernel_source(family: str, n: int, p: int) -> str:
    """Source of the kernel for ``family``, ``n`` gathered terms and ``p`` columns of ``X``
    (written out per term and column: numba takes no ``*args`` of arrays in different roles,
    and a loop over the columns inside the loop over the rows is not vectorised).

    The rows are taken in blocks of :data:`PRODUCT_BLOCK`, and every step runs on a block
    while it is in the processor's cache: the data are read from memory once (with each step
    a pass over all rows, the passes over arrays larger than the cache made the kernel
    memory-bound). Per block: the linear predictor; for the binomial-logit likelihood
    ``exp(-|eta|)``, the log-likelihood and the residuals, for the Poisson one ``exp(eta +
    log offset)``, the log-likelihood and the residuals, in vectorised loops
    (:func:`_row_kernels`); then ``sum(r)`` and ``X.T @ r`` in the lanes of
    :func:`_lane_kernels`, and the scatter of ``r`` into each factor's group means. Every
    sum is taken in the order written here (:data:`KERNEL_FLAGS`).
    """
    pairs = "".join(f"m{k}, i{k}, " for k in range(n))
    linear = "c_"
    for j in range(p):
        linear = f"fma(x{j}[i], b{j}, {linear})"
    terms = [linear, *(f"m{k}[int(i{k}[i])]" for k in range(n))]
    head = [
        f"def fused(c, Xt, b, {pairs}y, w):",
        "    n_rows = y.shape[0]",
        "    c_ = c.item()",
        *(f"    b{j} = b[{j}]" for j in range(p)),
        *(f"    x{j} = Xt[{j}]" for j in range(p)),
        "    eta = np.empty(BLOCK)",
        "    r = np.empty(BLOCK)",
        "    e = np.empty(BLOCK)",
        "    t = np.empty(BLOCK)",
        "    logp = 0.0",
        "    dc = 0.0",
        *(f"    db{j} = 0.0" for j in range(p)),
        *(f"    dm{k} = np.zeros(m{k}.shape[0])" for k in range(n)),
        "    for start in range(0, n_rows, BLOCK):",
        "        stop = min(start + BLOCK, n_rows)",
        "        size = stop - start",
        "        for i in range(start, stop):",
        f"            eta[i - start] = {' + '.join(terms)}",
    ]
    if family == "binomial":
        likelihood = [
            "        exp_neg_abs(eta[:size], e[:size])",
            "        logp += binomial_terms(",
            "            eta[:size], e[:size], y[start:stop], w[start:stop], r[:size], t[:size]",
            "        )",
        ]
    else:
        likelihood = [
            "        for i in range(start, stop):",
            "            eta[i - start] += w[i]",
            "        exp_all(eta[:size], e[:size])",
            "        for i in range(start, stop):",
            "            mu = e[i - start]",
            "            t[i - start] = y[i] * eta[i - start] - mu",
            "            r[i - start] = y[i] - mu",
            "        logp += lane_sum(t[:size])",
        ]
    gradient = [
        "        dc += lane_sum(r[:size])",
        *(f"        db{j} += lane_dot(r[:size], x{j}[start:stop])" for j in range(p)),
    ]
    for k in range(n):
        gradient += [
            "        for i in range(start, stop):",
            f"            dm{k}[int(i{k}[i])] += r[i - start]",
        ]
    tail = [
        f"    db = np.empty({p})",
        *(f"    db[{j}] = db{j}" for j in range(p)),
        "    return np.asarray(logp), np.asarray(dc), db" + "".join(f", dm{k}" for k in range(n)),
    ]
    return "\n".join(head + likelihood + gradient + tail) + "\n"


def _numba_funcify(op: LinearLikelihood, node=None, **kwargs) -> tuple[Callable, int]:
    """numba implementation of :class:`LinearLikelihood` for PyTensor's numba backend, and
    the version of its source for PyTensor's cache key."""
    from pytensor.link.numba.dispatch import basic as numba_basic

    exp_neg_abs, binomial_terms, exp_all = _row_kernels()
    lane_sum, lane_dot, _ = _lane_kernels()
    scope = {
        "np": np,
        "lane_sum": lane_sum,
        "lane_dot": lane_dot,
        "fma": _fma,
        "exp_neg_abs": exp_neg_abs,
        "binomial_terms": binomial_terms,
        "exp_all": exp_all,
        "BLOCK": PRODUCT_BLOCK,
    }
    source = _kernel_source(op.family, op.n_gathers, op.columns)
    exec(compile(source, "<bayesmer.fused>", "exec"), scope)  # noqa: S102 - generated source
    # PyTensor's numba cache knows the Op by its class and props: the source's hash is added
    # to its key, so a changed kernel is compiled anew
    # (and that of the module, which holds the vectorised passes)
    version = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12], 16)
    kernel = numba_basic.numba_njit(
        scope["fused"], boundscheck=False, fastmath=KERNEL_FLAGS, error_model="numpy"
    )
    return kernel, version


def register() -> None:
    """Register the numba implementation with PyTensor's numba dispatch (once)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key

    register_funcify_default_op_cache_key(LinearLikelihood)(_numba_funcify)
    _REGISTERED = True


_REGISTERED = False


@dataclass
class Predictor:
    """The linear predictor of a model being built, kept as its parts.

    Each part is one of: ``('scalar', value)``, ``('dot', name, matrix, coefficients)`` (a
    data matrix, not yet a model input, times a coefficient vector), ``('gather', name,
    index, means)`` (group means indexed by a data index) or ``('graph', value)`` (any other
    vector of one value per row). The data enter the model (:func:`data_input`) when the
    likelihood is built: as the plain graph's inputs for :meth:`total`, as the fused
    likelihood's (an index as floats) for :meth:`fused`.

    Parameters
    ----------
    rows : int
    data_input : callable
        ``(name, values) -> variable``, :func:`bayesmer.pymc_model.data_input`.
    """

    rows: int
    data_input: Callable
    parts: list[tuple] = field(default_factory=list)

    def add_scalar(self, value) -> None:
        self.parts.append(("scalar", value))

    def add_dot(self, name: str, matrix: np.ndarray, coefficients) -> None:
        self.parts.append(("dot", name, matrix, coefficients))

    def add_gather(self, name: str, index: np.ndarray, means) -> None:
        self.parts.append(("gather", name, index, means))

    def add_graph(self, value) -> None:
        self.parts.append(("graph", value))

    def total(self):
        """The linear predictor as one PyTensor vector, its parts summed in order."""
        eta = pt.zeros(self.rows)
        for part in self.parts:
            kind = part[0]
            if kind in ("scalar", "graph"):
                eta = eta + part[1]
            elif kind == "dot":
                eta = eta + pt.dot(self.data_input(part[1], part[2]), part[3])
            else:
                eta = eta + part[3][self.data_input(part[1], part[2])]
        return eta

    def fusable(self) -> bool:
        """Whether every part is one :class:`LinearLikelihood` takes."""
        return all(part[0] != "graph" for part in self.parts)

    def fused(self, family: str, y, w):
        """The log-likelihood by :class:`LinearLikelihood`, ``y`` and ``w`` as it takes them."""
        c = pt.as_tensor_variable(0.0)
        dots, gathers = [], []
        for part in self.parts:
            if part[0] == "scalar":
                c = c + part[1]
            elif part[0] == "dot":
                dots.append((part[1], part[2], part[3]))
            else:
                index = self.data_input(part[1], part[2].astype(float))
                gathers.append((part[3], index))
        if dots:
            matrix = np.concatenate([m for _, m, _ in dots], axis=1)
            b = pt.concatenate([pt.as_tensor_variable(v) for _, _, v in dots])
        else:
            matrix = np.zeros((self.rows, 0))
            b = pt.zeros(0)
        name = "+".join(n for n, _, _ in dots) if dots else "no_predictors"
        Xt = self.data_input(f"({name}).T", np.ascontiguousarray(matrix.T))
        return linear_likelihood(family, c, Xt, b, gathers, y, w, matrix.shape[1])

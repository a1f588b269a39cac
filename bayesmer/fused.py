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


#: LLVM fast-math flags of the reductions: reassociation lets the sums and the product of
#: ``1 + exp(-|eta|)`` run in SIMD lanes. No ``nnan``/``ninf``: a non-finite linear
#: predictor must still give a non-finite log density.
REDUCTION_FLAGS = frozenset({"reassoc", "contract", "nsz", "arcp"})

#: LLVM fast-math flags of the exp passes: PyTensor's (contraction into fused multiply-adds,
#: approximate functions, reciprocals, no signed zeros) without reassociation, which would
#: cost the two-part reduction below its extra precision (3e-14 instead of 2e-16, for no
#: speed: the loop is vectorised either way). Set on the functions themselves, with their
#: error model: numba otherwise compiles a callee with the flags of its first caller and keeps
#: that version for every later caller, so the kernel's last digits (and seeded draws) would
#: depend on what the process had compiled before.
EXP_FLAGS = frozenset({"contract", "afn", "arcp", "nsz"})

# exp(a) in plain arithmetic (so that a loop of it is vectorised): a = k ln2 + r,
# |r| <= ln2 / 2, by Cody and Waite's two-part ln2 (fdlibm's); exp(r) by its Taylor
# polynomial of degree 13 (truncation below 2e-16); 2**(k - 1) built from the bits of
# k + 1.5 * 2**52, whose low bits hold k, then doubled; no product of two of the factors
# overflows in any order. Compiled with :data:`EXP_FLAGS` (no reassociation): a relative
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


@functools.cache
def _row_kernels() -> tuple[Callable, Callable, Callable]:
    """The vectorised passes of the kernels: ``exp(-|eta|)`` and the log-likelihood with the
    residuals ``y - n sigmoid(eta)`` of the binomial-logit likelihood, and ``exp`` of the
    Poisson one (made once per process)."""
    import numba

    c13, c12, c11, c10, c9, c8, c7, c6, c5, c4, c3, c2, c1, c0 = _TAYLOR
    log2e, shift, shift_bits, ln2_hi, ln2_lo = _LOG2E, _SHIFT, _SHIFT_BITS, _LN2_HI, _LN2_LO
    block = PRODUCT_BLOCK

    @numba.njit(boundscheck=False, inline="always")
    def exp_clipped(a):  # pragma: no cover - numba code
        """``exp(a)`` for ``-708 <= a <= 709``."""
        k = np.floor(a * log2e + 0.5)
        t = k + shift  # exact: k is a whole number below 2**10 in size
        r = (a - k * ln2_hi) - k * ln2_lo
        p = c13 * r + c12
        p = p * r + c11
        p = p * r + c10
        p = p * r + c9
        p = p * r + c8
        p = p * r + c7
        p = p * r + c6
        p = p * r + c5
        p = p * r + c4
        p = p * r + c3
        p = p * r + c2
        p = p * r + c1
        p = p * r + c0
        return p * _int_as_float((_float_as_int(t) - shift_bits + 1022) << 52) * 2.0

    @numba.njit(boundscheck=False, fastmath=set(EXP_FLAGS), error_model="numpy")
    def exp_neg_abs(eta, e):  # pragma: no cover - numba code
        """``e = exp(-|eta|)``."""
        for i in range(eta.shape[0]):
            e[i] = exp_clipped(max(-abs(eta[i]), -708.0))

    @numba.njit(boundscheck=False, fastmath=set(EXP_FLAGS), error_model="numpy")
    def exp_all(a, e):  # pragma: no cover - numba code
        """``e = exp(a)``, ``a`` clipped to [-708, 709]."""
        for i in range(a.shape[0]):
            e[i] = exp_clipped(min(max(a[i], -708.0), 709.0))

    # error_model="numpy": a division by zero gives inf or NaN instead of raising, so the
    # division of the residuals has no branch and its loop is vectorised (2.1 -> 0.6 ns a row)
    @numba.njit(boundscheck=False, fastmath=set(REDUCTION_FLAGS), error_model="numpy")
    def binomial_terms(eta, e, y, w, r):  # pragma: no cover - numba code
        """The log-likelihood ``sum(y eta - w softplus(eta))``; ``r = y - w sigmoid(eta)``."""
        n = eta.shape[0]
        linear = 0.0
        all_one = True
        for i in range(n):
            one_e = 1.0 + e[i]
            top = 1.0 if eta[i] >= 0.0 else e[i]
            r[i] = y[i] - w[i] * (top / one_e)
            linear += y[i] * eta[i] - w[i] * max(eta[i], 0.0)
            all_one = all_one and w[i] == 1.0
        logs = 0.0
        if all_one:
            # sum of log(1 + e): the log of products of BLOCK factors in (1, 2]
            for start in range(0, n, block):
                prod = 1.0
                for i in range(start, min(start + block, n)):
                    prod *= 1.0 + e[i]
                logs += np.log(prod)
        else:
            for i in range(n):
                logs += w[i] * np.log1p(e[i])
        return linear - logs

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
    (:func:`_row_kernels`); then
    ``sum(r)`` and ``X.T @ r`` in one vectorised loop, and the scatter of ``r`` into each
    factor's group means.
    """
    pairs = "".join(f"m{k}, i{k}, " for k in range(n))
    terms = ["c_", *(f"x{j}[i] * b{j}" for j in range(p))]
    terms += [f"m{k}[int(i{k}[i])]" for k in range(n)]
    head = [
        f"def fused(c, Xt, b, {pairs}y, w):",
        "    n_rows = y.shape[0]",
        "    c_ = c.item()",
        *(f"    b{j} = b[{j}]" for j in range(p)),
        *(f"    x{j} = Xt[{j}]" for j in range(p)),
        "    eta = np.empty(BLOCK)",
        "    r = np.empty(BLOCK)",
        "    e = np.empty(BLOCK)",
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
            "            eta[:size], e[:size], y[start:stop], w[start:stop], r[:size]",
            "        )",
        ]
    else:
        likelihood = [
            "        for i in range(start, stop):",
            "            eta[i - start] += w[i]",
            "        exp_all(eta[:size], e[:size])",
            "        for i in range(start, stop):",
            "            mu = e[i - start]",
            "            logp += y[i] * eta[i - start] - mu",
            "            r[i - start] = y[i] - mu",
        ]
    gradient = [
        "        for i in range(start, stop):",
        "            ri = r[i - start]",
        "            dc += ri",
        *(f"            db{j} += ri * x{j}[i]" for j in range(p)),
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
    scope = {
        "np": np,
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
    return numba_basic.numba_njit(scope["fused"], boundscheck=False, error_model="numpy"), version


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

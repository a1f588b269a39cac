"""nutpie's two C callbacks for one compiled model: log density with gradient, and expansion.

This file is loaded as a fresh module for every model compiled
(:func:`bayesmer.sampling.compile_model`), and its globals set to that model's sizes and
PyTensor functions before numba compiles the callbacks; for the disk cache
(:mod:`bayesmer.compiled`) each model structure has its own copy of it, so that numba's cache
(``cache=True``) keeps one entry per structure.

The callbacks are nutpie's own with plain loops: nutpie copies the results with
``out[...] = grad`` and checks them with ``np.all(np.isfinite(out))``, generic broadcasting
operations numba compiles from scratch in every new process (about 3 s of the 5-6 s it took to
compile the titanic glmer). The model's data reach the PyTensor functions as their one shared
input, a float64 vector (see :class:`bayesmer.pymc_model.Inputs`): nutpie hands each callback
a pointer to its user-data record, whose first two fields are the vector's address and length
(nutpie's layout for one shared variable, checked before compiling by
:func:`bayesmer.sampling.single_input`). Reading them directly compiles in a fraction of the
time nutpie's general extraction of any number of shared variables takes.
"""

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

#: Set for each model before compiling: sizes, and the PyTensor-generated numba functions.
n_dim = 0
n_expanded = 0
logp_inner = None
expand_inner = None
#: An expansion that reads no data (a model whose traced variables are its free variables
#: only), when :data:`expand_inner` is :func:`expand_without_data`.
expand_of_point = None


@intrinsic
def _float_pointer(typingctx, address):
    """The integer ``address`` as a pointer to float64."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return types.CPointer(types.float64)(address), codegen


@numba.njit(inline="always")
def _data(user_data_):  # pragma: no cover - numba code
    """The model's data vector from nutpie's user-data record (address, length, ...)."""
    header = numba.carray(user_data_, (2,), np.uint64)
    return numba.carray(_float_pointer(header[0]), (int(header[1]),))


@numba.njit
def expand_without_data(x, data):  # pragma: no cover - numba code
    """:data:`expand_of_point` with the data argument every expansion is called with."""
    return expand_of_point(x)


def logp_callback(dim, x_, out_, logp_, user_data_):  # pragma: no cover - numba code
    """Log density and gradient, with nutpie's return codes.

    0 ok, -1 wrong dimension, 1 error in the log density, 3 non-finite gradient, 4 non-finite
    log density.
    """
    if dim != n_dim:
        return -1
    x = numba.carray(x_, (n_dim,))
    try:
        logp_val, grad = logp_inner(x, _data(user_data_))
    except Exception:  # noqa: BLE001 - a cfunc cannot raise: report a failed evaluation
        return 1
    logp_[0] = logp_val
    finite = True
    for i in range(n_dim):
        out_[i] = grad[i]
        if not np.isfinite(grad[i]):
            finite = False
    if not finite:
        return 3
    if not np.isfinite(logp_val):
        return 4
    return 0


def expand_callback(dim, expanded, x_, out_, user_data_):  # pragma: no cover - numba code
    """The traced variables of a point (-1 wrong sizes, -2 error)."""
    if dim != n_dim or expanded != n_expanded:
        return -1
    x = numba.carray(x_, (n_dim,))
    try:
        (values,) = expand_inner(x, _data(user_data_))
    except Exception:  # noqa: BLE001 - a cfunc cannot raise: report a failed evaluation
        return -2
    for i in range(n_expanded):
        out_[i] = values[i]
    return 0

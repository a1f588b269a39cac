"""A quick interpreter exit: the garbage collector's objects are frozen when Python exits.

When the interpreter exits it clears every module and runs several full garbage collections
(``Py_FinalizeEx``). Each walks every object the collector tracks, and after a fit those are
the ~400,000 functions, tuples, dicts and classes of the ~3,000 modules PyMC, PyTensor,
numba, nutpie, xarray and pandas bring in: measured on the seed's glmer script, about 1 s
(four collections of 0.2-0.4 s each) between its last line and the end of the process, on top
of a 5 s script. Nearly all of those objects are freed anyway when their modules are cleared,
or by the operating system with the process.

:func:`register` has the interpreter call :func:`gc.freeze` at exit (an :mod:`atexit`
handler, so it runs after the handlers registered later, such as the libraries' own): the
objects alive at that point move to the collector's permanent generation, which the shutdown
collections skip. The exit then takes about 0.1 s. Objects still freed by reference counting
when their module is cleared (an open file a module holds, say) are finalized as before; only
objects left in reference cycles at exit are released with the process without their
finalizers, which Python does not promise to run at exit in any case.
"""

from __future__ import annotations

import atexit
import gc
import threading

_REGISTERED = False
_LOCK = threading.Lock()


def register() -> None:
    """Have :func:`gc.freeze` run when the interpreter exits (once, however often called)."""
    global _REGISTERED
    with _LOCK:
        if not _REGISTERED:
            atexit.register(gc.freeze)
            _REGISTERED = True

"""Modules a library imports eagerly but bayesmer's fits do not use, loaded on first use.

nutpie imports ArviZ when it is imported (``nutpie.sample``: ``import arviz``) to convert its
draws, and ArviZ imports its statistics and plotting packages, SciPy's statistics and signal
processing and matplotlib: about 1.6 s of the seed script's 5 s, spent in every process that
fits a model. bayesmer converts nutpie's draws itself (:mod:`bayesmer.trace`), so none of
that is needed for a fit.

:func:`defer` puts a stand-in module in :data:`sys.modules` for a module not imported yet: an
``import`` of it binds the stand-in, and the first attribute read from it imports the real
module, which then replaces the stand-in in :data:`sys.modules` (later imports get the real
module) and answers that read and every later one. Code that imported the module keeps
working as before, only the cost moves to the first use. The standard library's
:class:`importlib.util.LazyLoader` cannot do this: the import statement itself reads the
module's ``__spec__``, which makes a lazy module load.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

_LOCK = threading.RLock()


class DeferredModule(types.ModuleType):
    """Stands in for the module of the same name until an attribute of it is read."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(load(self), attribute)

    def __dir__(self) -> list[str]:
        return dir(load(self))


def defer(name: str) -> bool:
    """Put a :class:`DeferredModule` for the top-level module ``name`` in :data:`sys.modules`.

    Nothing is done when the module is imported already, or cannot be found (its import then
    fails where it is imported, as without bayesmer).

    Returns
    -------
    bool
        Whether a stand-in was put in place.
    """
    with _LOCK:
        if name in sys.modules:
            return False
        spec = importlib.util.find_spec(name)
        if spec is None:
            return False
        module = DeferredModule(name)
        # what tools read from every module in sys.modules (inspect.getmodule reads
        # __file__) without it meaning a use of the module; __path__ is left out so that
        # importing a submodule loads the package first, as it would have
        module.__spec__ = spec
        module.__loader__ = spec.loader
        module.__file__ = spec.origin
        module.__package__ = spec.parent
        sys.modules[name] = module
        return True


def import_deferring(name: str, *unused: str) -> types.ModuleType:
    """Import the module ``name`` with the modules ``unused`` deferred (:func:`defer`) first.

    Example: ``nutpie = import_deferring("nutpie", "arviz")``.
    """
    for other in unused:
        defer(other)
    return importlib.import_module(name)


def load(module: types.ModuleType) -> types.ModuleType:
    """The real module a :class:`DeferredModule` stands for, imported on the first call."""
    name = module.__name__
    with _LOCK:
        if sys.modules.get(name) is module:
            del sys.modules[name]
        return importlib.import_module(name)

"""bayesmer: Bayesian GLMs and GLMMs with a pymer4-style API, fitted by MCMC (PyMC + nutpie)."""

from .datasets import load_dataset
from .diagnostics import ConvergenceWarning
from .io import load_model, save_model
from .loo import compare
from .models import FitInterruptedWarning, Model, NotFittedError, glm, glmer, lm, lmer
from .shutdown import register as _register_quick_exit

_register_quick_exit()  # see bayesmer.shutdown: a fitted process exits in 0.1 s, not 1 s

__all__ = [
    "ConvergenceWarning",
    "FitInterruptedWarning",
    "compare",
    "Model",
    "NotFittedError",
    "glm",
    "glmer",
    "lm",
    "lmer",
    "load_dataset",
    "load_model",
    "save_model",
]
__version__ = "0.1.0"

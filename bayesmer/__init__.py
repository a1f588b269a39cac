"""bayesmer: Bayesian GLMs and GLMMs with a pymer4-style API, fitted by MCMC (PyMC + nutpie)."""

from .datasets import load_dataset
from .diagnostics import ConvergenceWarning
from .models import Model, NotFittedError, glm, glmer

__all__ = [
    "ConvergenceWarning",
    "Model",
    "NotFittedError",
    "glm",
    "glmer",
    "load_dataset",
]
__version__ = "0.1.0"

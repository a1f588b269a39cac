"""Response families and link functions, in NumPy (for draws) and PyTensor (for the model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytensor.tensor as pt
from scipy import special

_LINKS: dict[str, tuple[str, ...]] = {
    "binomial": ("logit", "probit", "cloglog"),
    "poisson": ("log",),
}


@dataclass(frozen=True)
class Family:
    """A response distribution with its link.

    Attributes
    ----------
    name : {'binomial', 'poisson'}
    link : str
        ``'logit'``, ``'probit'`` or ``'cloglog'`` for binomial; ``'log'`` for Poisson.
    """

    name: str
    link: str

    @property
    def response_label(self) -> str:
        """Column name of a mean on the response scale (``prob`` or ``rate``)."""
        return "prob" if self.name == "binomial" else "rate"

    @property
    def ratio_label(self) -> str:
        """Column name of a contrast on the response scale."""
        if self.name == "binomial" and self.link == "logit":
            return "odds_ratio"
        return "ratio"

    @property
    def exponentiates(self) -> bool:
        """Whether exp() of a coefficient has a plain meaning (odds or rate ratio)."""
        return self.link in ("logit", "log")

    def inverse_link(self, eta: np.ndarray) -> np.ndarray:
        """Map linear-predictor values to the mean (probability or rate), in NumPy."""
        eta = np.asarray(eta, dtype=float)
        if self.link == "logit":
            return special.expit(eta)
        if self.link == "probit":
            return special.ndtr(eta)
        if self.link == "cloglog":
            return -np.expm1(-np.exp(eta))
        return np.exp(eta)

    def inverse_link_pt(self, eta):
        """The inverse link as a PyTensor expression."""
        if self.link == "logit":
            return pt.sigmoid(eta)
        if self.link == "probit":
            return 0.5 * pt.erfc(-eta / np.sqrt(2.0))
        if self.link == "cloglog":
            return -pt.expm1(-pt.exp(eta))
        return pt.exp(eta)


def get_family(family: str, link: str = "default") -> Family:
    """Validate a family/link pair.

    Parameters
    ----------
    family : {'binomial', 'poisson'}
    link : str, default 'default'
        ``'default'`` picks logit for binomial and log for Poisson.

    Returns
    -------
    Family

    Raises
    ------
    ValueError
        If the family or the link is not supported.
    """
    if not isinstance(family, str) or family.lower() not in _LINKS:
        raise ValueError(f"Unknown family {family!r}; choose one of {sorted(_LINKS)}.")
    name = family.lower()
    allowed = _LINKS[name]
    chosen = allowed[0] if link in (None, "default") else link
    if chosen not in allowed:
        raise ValueError(
            f"Unknown link {link!r} for the {name} family; choose 'default' or one of {allowed}."
        )
    return Family(name, chosen)

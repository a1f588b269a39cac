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

#: Links R (and so pymer4) accepts for these families that bayesmer does not fit, and why.
_NOT_FITTED: dict[tuple[str, str], str] = {
    ("poisson", "identity"): (
        "the identity link lets the Poisson mean go negative, so most of the parameter "
        "space has no likelihood and the sampler cannot start or move freely (R's glm needs "
        "starting values for the same reason). Use link='log': predict() and "
        "emmeans(type='response') still give counts, and emmeans(..., draws=True) gives "
        "every draw for differences of rates"
    ),
    ("poisson", "sqrt"): (
        "with the sqrt link the mean is eta^2, so eta and -eta fit equally well and the "
        "posterior has two mirror-image modes the chains cannot agree on. Use link='log'"
    ),
    ("binomial", "log"): (
        "the log link lets the probability exceed 1 (log-binomial models are fitted under a "
        "constraint R enforces with starting values). Use link='logit' (odds ratios) or "
        "link='cloglog'; emmeans(type='response') gives probabilities"
    ),
    ("binomial", "cauchit"): "use link='logit', 'probit' or 'cloglog'",
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
    if (name, chosen) in _NOT_FITTED:
        raise ValueError(
            f"link={chosen!r} for the {name} family is not supported: "
            f"{_NOT_FITTED[(name, chosen)]}. Links for {name}: {allowed}."
        )
    if chosen not in allowed:
        listed = "; ".join(f"{f}: {', '.join(links)}" for f, links in _LINKS.items())
        raise ValueError(
            f"Unknown link {link!r} for the {name} family; choose 'default' or one of "
            f"{allowed} (links per family: {listed})."
        )
    return Family(name, chosen)

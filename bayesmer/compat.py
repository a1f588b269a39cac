"""pymer4's arguments in bayesmer: the ones without a Bayesian meaning, and ``use_rfx``.

A pymer4 call either does the same thing here or fails with a :class:`TypeError` that names
what bayesmer offers instead. This module holds those messages, one table per method, and the
translation of pymer4's ``use_rfx`` into bayesmer's ``re=``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_INTERVALS = (
    "bayesmer's intervals are posterior credible intervals (highest density); set their mass "
    "with ci= (e.g. ci=0.9)"
)
_DRAWS = "the posterior is sampled by MCMC: set the number of draws with draws= and chains="

#: pymer4 arguments of fit() and what to use instead.
FIT: dict[str, str] = {
    "conf_method": f"there is no interval method to choose: {_INTERVALS}",
    "nboot": f"there is no bootstrap: {_DRAWS}",
    "save_boots": "there is no bootstrap: every posterior draw is kept in model.posterior",
    "parallel": "chains run in parallel on their own; set their number with chains=",
    "ncpus": "chains run in parallel on their own; set their number with chains=",
    "conf_type": f"there is no bootstrap interval type: {_INTERVALS}",
    "bootMer_kwargs": f"there is no bootstrap: {_DRAWS}",
    "ci_type": f"there is no bootstrap interval type: {_INTERVALS}",
    "conf_level": f"use ci= (e.g. ci=0.9): {_INTERVALS}",
    "verbose": "use progressbar=False for a quiet fit; convergence problems are always warned",
    "REML": "REML is a frequentist estimation criterion; the posterior needs no choice of it",
}

#: pymer4 arguments of emmeans()/empredict() and what to use instead.
EMMEANS: dict[str, str] = {
    "p_adjust": (
        "there is no multiplicity adjustment of posterior intervals: each credible interval "
        "is a statement about its own estimate. For a joint statement use the draws "
        "(draws=True) or a wider ci="
    ),
    "normalize": "contrast weights are used as given: divide them by their norm yourself",
    "apply_transforms": "bayesmer has no set_transforms: give at= values on the data's scale",
    "level": "use ci= (e.g. ci=0.9) for the mass of the credible interval",
    "adjust": "there is no multiplicity adjustment of posterior intervals (see p_adjust)",
    "interaction": "use by= and a contrasts= dict of weights over the combined levels",
    "mode": "degrees-of-freedom methods have no Bayesian meaning: intervals come from the draws",
    "lmer_df": "degrees-of-freedom methods have no Bayesian meaning: intervals come from the draws",
    "lmerTest_limit": "degrees-of-freedom methods have no Bayesian meaning",
    "verbose": "emmeans prints nothing; there are no R messages to show",
}

#: pymer4 arguments of predict() and what to use instead.
PREDICT: dict[str, str] = {
    "type": "the scale is type_predict= ('response' or 'link'), as in pymer4",
    "allow_new_levels": (
        "rows of groups not in the fit need an explicit choice: re='zero' (a typical group) "
        "or re='marginal' (averaged over the population of groups)"
    ),
    "re_form": "use re= ('groups', 'zero' or 'marginal')",
}

#: pymer4 arguments of simulate() and what to use instead.
SIMULATE: dict[str, str] = {
    "n": "the number of simulations is nsim=, as in pymer4",
    "re_form": "use re= ('groups', 'zero', 'marginal' or 'new')",
}


def reject(method: str, table: Mapping[str, str], kwargs: Mapping[str, Any]) -> None:
    """Raise a TypeError for the first argument of ``kwargs``, naming the bayesmer way.

    Parameters
    ----------
    method : str
        The method's name, for the message (``'fit'``, ``'emmeans'``...).
    table : mapping
        pymer4 argument -> what bayesmer offers instead.
    kwargs : mapping
        The unexpected keyword arguments the method received.

    Raises
    ------
    TypeError
        If ``kwargs`` is not empty.
    """
    for key in kwargs:
        if key in table:
            raise TypeError(f"{method}() does not take {key!r}: {table[key]}.")
        raise TypeError(f"{method}() got an unexpected keyword argument {key!r}.")


def resolve_re(
    re: str | None, use_rfx: bool | None, has_groups: bool, default: str, when_false: str
) -> str:
    """bayesmer's ``re=`` from the arguments given (``re=`` or pymer4's ``use_rfx=``).

    Parameters
    ----------
    re : str or None
        The ``re=`` given, if any.
    use_rfx : bool or None
        pymer4's argument, if given: True means ``'groups'``, False ``when_false``.
    has_groups : bool
        Whether the model has random effects (without them every choice is ``'zero'``).
    default : str
        The choice when neither is given (for a model with random effects).
    when_false : str
        What ``use_rfx=False`` means for this method.

    Raises
    ------
    TypeError
        If both ``re`` and ``use_rfx`` are given, or ``use_rfx`` is not a bool.
    ValueError
        For the retired word ``'include'``.
    """
    if re is not None and use_rfx is not None:
        raise TypeError(
            "give either re= or pymer4's use_rfx=, not both (use_rfx=True is re='groups', "
            f"use_rfx=False is re={when_false!r})."
        )
    if use_rfx is not None:
        if not isinstance(use_rfx, bool):
            raise TypeError(f"use_rfx must be True or False, got {use_rfx!r}.")
        re = "groups" if use_rfx else when_false
    if re == "include":
        raise ValueError("re='include' is now re='groups' (each row's fitted group effects).")
    if re is None:
        return default if has_groups else "zero"
    return re

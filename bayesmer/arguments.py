"""Checks of the arguments that several verbs share (the interval mass, a model with groups)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Model
    from .spec import ModelSpec


def resolve_ci(model: Model, ci: float | None) -> float:
    """The interval mass to use: ``ci`` if given, else the model's, checked to lie in (0, 1).

    Raises
    ------
    ValueError
        If it is not a number strictly between 0 and 1.
    """
    level = model.ci if ci is None else ci
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise ValueError(f"ci must be between 0 and 1, got {level!r}.")
    return float(level)


def require_groups(spec: ModelSpec, what: str) -> None:
    """Raise a ValueError naming ``what`` when the model has no random effects."""
    if not spec.groups:
        raise ValueError(f"{what} needs random effects (a glmer model such as (1|group)).")

"""Fixed-effects designs of main effects only (``y ~ a + b + (1|g)``), without formulae.

formulae builds bayesmer's design matrices; importing it costs about 0.45 s (its spline
transform imports SciPy's interpolation and optimisation), a tenth of a short script. The
commonest fixed parts are an intercept and main effects of plain columns: a numeric column
is its own column of the design, a factor of ``k`` levels ``k - 1`` indicator columns, its
first level the reference (treatment coding), named as R names them (``sexmale``), in formula
order. :func:`main_effects` builds those, and the same columns for new rows
(:meth:`MainEffects.evaluate_new_data`, as formulae's design does); any other fixed part
(calls, interactions, no intercept) goes to formulae (``tests/test_design.py`` checks the two
agree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def main_effect_columns(fixed: str) -> list[str] | None:
    """The columns of a fixed part that is an intercept plus main effects (``'a + b'``,
    ``'1 + a'``, ``'1'``), or None for any other fixed part."""
    terms = [t.strip() for t in fixed.split("+")]
    if terms and terms[0] == "1":
        terms = terms[1:]
    if not all(_NAME.fullmatch(t) for t in terms) or len(set(terms)) != len(terms):
        return None
    return terms


@dataclass(frozen=True)
class DesignMatrix:
    """Rows of a design (formulae's ``design_matrix`` attribute)."""

    design_matrix: np.ndarray


@dataclass(frozen=True)
class MainEffects:
    """An intercept and main effects: each column's levels (None for a numeric column).

    Attributes
    ----------
    columns : tuple of (str, tuple of str or None)
    """

    columns: tuple[tuple[str, tuple[str, ...] | None], ...]

    @property
    def terms(self) -> list[str]:
        """R's names of the design's columns."""
        out = ["(Intercept)"]
        for name, levels in self.columns:
            out += [name] if levels is None else [f"{name}{level}" for level in levels[1:]]
        return out

    def evaluate_new_data(self, frame: pd.DataFrame) -> DesignMatrix:
        """The design of the rows of ``frame`` (factors as categoricals of the fit's levels,
        as :func:`bayesmer.spec.design_frame` makes them).

        Raises
        ------
        ValueError
            When a factor has a value that is not one of its levels (or none).
        """
        parts = [np.ones((len(frame), 1))]
        for name, levels in self.columns:
            column = frame[name]
            if levels is None:
                parts.append(np.asarray(column, dtype=float)[:, None])
                continue
            codes = np.asarray(column.cat.codes)
            if list(column.cat.categories) != list(levels):
                raise ValueError(f"The column {name!r} does not have the levels {list(levels)}.")
            if (codes < 0).any():
                raise ValueError(
                    f"The levels (nan) in {name!r} are not present in the original data set."
                )
            parts.append((codes[:, None] == np.arange(1, len(levels))[None, :]).astype(float))
        return DesignMatrix(np.concatenate(parts, axis=1))


def main_effects(columns: list[str], frame: pd.DataFrame) -> MainEffects:
    """The design of ``columns`` of ``frame`` (categoricals are factors, the rest numeric)."""
    described = []
    for name in columns:
        column = frame[name]
        is_factor = str(column.dtype) == "category"
        levels = tuple(str(v) for v in column.cat.categories) if is_factor else None
        described.append((name, levels))
    return MainEffects(tuple(described))

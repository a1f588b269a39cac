"""Transformations in the fixed part of a formula: ``log(x)``, ``I(x^2)``, ``scale(x)``, ...

R formulas let a term be a call on a column. This module owns those calls: finding them in
the fixed part, checking that bayesmer supports them, naming them as R names them
(``I(age^2)``, ``scale(x)``, ``log(dose)``) and rewriting them for formulae, which builds the
design matrix.

bayesmer computes each numeric call itself and hands formulae the values as a column of their
own (``C(x)`` goes to formulae as it is). Two calls are *stateful*: ``scale(x)`` and
``center(x)`` subtract the mean (and divide by the sd, ``ddof=1`` as R's ``scale``) of ``x``
over the rows used in the fit. Those statistics are taken on the data rows (not on the
collapsed cells) and kept with the model, so new data (emmeans grids, predictions) are
transformed with the training values, as R does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

IDENT = r"[A-Za-z_][A-Za-z0-9_.]*"

#: Calls computed element-wise by NumPy (name in the formula -> NumPy function name).
ELEMENTWISE = {
    "log": "log",
    "log1p": "log1p",
    "log2": "log2",
    "log10": "log10",
    "exp": "exp",
    "sqrt": "sqrt",
}
#: Every call bayesmer accepts in the fixed part.
SUPPORTED = (*ELEMENTWISE, "I", "scale", "center", "C")

#: Functions formulae may evaluate inside the rewritten terms.
NAMESPACE = {name: getattr(np, fn) for name, fn in ELEMENTWISE.items()}

_INSIDE = re.compile(r"[\sA-Za-z0-9_.+\-*/^()]*")


@dataclass(frozen=True)
class Call:
    """One call in the fixed part, e.g. ``I(age^2)``.

    Attributes
    ----------
    name : str
        The function: ``'I'``, ``'log'``, ``'scale'``...
    text : str
        The call as written in the formula.
    inner : str
        What is inside the parentheses.
    variables : tuple of str
        The data columns it reads.
    """

    name: str
    text: str
    inner: str
    variables: tuple[str, ...]

    @property
    def label(self) -> str:
        """The term's name as R prints it (``I(age^2)``, ``log(dose)``, ``scale(x)``)."""
        return f"{self.name}({r_expression(self.inner)})"

    @property
    def stateful(self) -> bool:
        """Whether the call needs statistics of the training rows."""
        return self.name in ("scale", "center")

    @property
    def numeric(self) -> bool:
        """Whether the columns it reads must be numeric (every call but ``C``)."""
        return self.name != "C"

    def evaluate(
        self, columns: dict[str, np.ndarray], stats: dict[str, tuple[float, float]]
    ) -> np.ndarray:
        """The numeric call's values for the given columns (``stats``: training mean, sd).

        The inner expression has been checked to hold only column names, numbers, arithmetic
        and the functions of :data:`ELEMENTWISE`, so it is evaluated with NumPy and nothing
        else in scope.
        """
        if self.stateful:
            mean, sd = stats[self.inner]
            x = np.asarray(columns[self.inner], dtype=float) - mean
            return x / sd if self.name == "scale" else x
        scope = {**NAMESPACE, **{v: np.asarray(columns[v], dtype=float) for v in self.variables}}
        code = self.inner.replace("^", "**")
        with np.errstate(all="ignore"):  # log(0) and the like are reported by the caller
            values = eval(code, {"__builtins__": {}}, scope)  # noqa: S307 (checked grammar)
            if self.name in ELEMENTWISE:
                values = NAMESPACE[self.name](values)
        n = len(next(iter(columns.values())))
        return np.broadcast_to(np.asarray(values, dtype=float), (n,)).copy()


def r_expression(text: str) -> str:
    """An expression spaced as R deparses it: ``age ^ 2`` -> ``age^2``, ``a*b`` -> ``a * b``.

    Binary ``+ - *`` get spaces, ``/ ^`` none; a leading sign stays unary.
    """
    s = re.sub(r"\s+", "", text).replace("**", "^")
    s = re.sub(r"(?<=[A-Za-z0-9_.)])([+\-*])", r" \1 ", s)
    return s


def find_calls(fixed: str) -> list[Call]:
    """Every top-level call ``name(...)`` in the fixed part, in order.

    Raises
    ------
    ValueError
        For a function bayesmer does not support, unbalanced parentheses, characters that do
        not belong in a term, a stateful call on anything but one column, or ``C()`` with more
        than one argument.
    """
    calls = []
    for m in re.finditer(IDENT + r"\s*\(", fixed):
        start = m.start()
        if calls and start < calls[-1][1]:
            continue  # nested inside the previous call
        depth, end = 0, None
        for i in range(m.end() - 1, len(fixed)):
            depth += {"(": 1, ")": -1}.get(fixed[i], 0)
            if depth == 0:
                end = i + 1
                break
        if end is None:
            raise ValueError(f"Unbalanced parentheses in the term {fixed[start:]!r}.")
        calls.append((start, end))
    return [_call(fixed[a:b].strip()) for a, b in calls]


def _call(text: str) -> Call:
    name = re.match(IDENT, text).group(0)
    inner = text[text.index("(") + 1 : -1].strip()
    if name not in SUPPORTED:
        raise ValueError(
            f"The function {name}() in the term {text!r} is not supported in the fixed part; "
            f"bayesmer accepts {', '.join(f'{s}()' for s in SUPPORTED)}. Compute the column in "
            "the data first for anything else."
        )
    if not inner or not _INSIDE.fullmatch(inner):
        raise ValueError(
            f"Could not read the term {text!r}: inside a call use column names, numbers, "
            "+ - * / ^ and the functions " + ", ".join(ELEMENTWISE) + "."
        )
    for inner_call in re.findall(IDENT + r"(?=\s*\()", inner):  # a name then '(' is a call
        if inner_call not in ELEMENTWISE:
            raise ValueError(
                f"The function {inner_call}() inside {text!r} is not supported; inside a call "
                f"bayesmer accepts {', '.join(ELEMENTWISE)}."
            )
    variables = tuple(dict.fromkeys(re.findall(IDENT + r"(?![A-Za-z0-9_.]|\s*\()", inner)))
    if not variables:
        raise ValueError(f"The term {text!r} reads no column of the data.")
    if name in ("scale", "center", "C") and not re.fullmatch(IDENT, inner):
        raise ValueError(
            f"{name}() takes one column in bayesmer, got {text!r}; compute "
            f"{inner!r} as a column first."
        )
    return Call(name, text, inner, variables)


def column_name(k: int) -> str:
    """The name under which the k-th call's values are handed to formulae."""
    return f"bayesmer_call{k}_"


def relabel(label: str, calls: tuple[Call, ...]) -> str:
    """Put R's names of the calls back into a formulae label (``bayesmer_call0_`` -> ``log(x)``)."""
    return re.sub(r"bayesmer_call(\d+)_", lambda m: calls[int(m.group(1))].label, label)

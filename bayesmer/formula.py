"""Parse lme4-style formulas into their parts.

The fixed-effects part is later handed to formulae for the design matrix; this module only
splits a formula into response, fixed terms, random intercepts and an offset, and rejects what
bayesmer does not support with a message that says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENT = r"[A-Za-z_][A-Za-z0-9_.]*"
_RANDOM = re.compile(r"\(([^()]*?)\|{1,2}([^()]*)\)")
_OFFSET = re.compile(r"offset\(\s*(log\(\s*(" + _IDENT + r")\s*\)|(" + _IDENT + r"))\s*\)")
_CBIND = re.compile(
    r"^cbind\(\s*("
    + _IDENT
    + r")\s*,\s*(?:("
    + _IDENT
    + r")\s*-\s*("
    + _IDENT
    + r")|("
    + _IDENT
    + r"))\s*\)$"
)


@dataclass(frozen=True)
class Response:
    """The left-hand side of a formula.

    ``kind`` is ``'column'`` (one outcome column), ``'cbind_failures'``
    (``cbind(successes, failures)``) or ``'cbind_trials'``
    (``cbind(successes, trials - successes)``).
    """

    kind: str
    column: str
    second: str | None = None

    @property
    def columns(self) -> list[str]:
        return [self.column] if self.second is None else [self.column, self.second]

    def __str__(self) -> str:
        if self.kind == "column":
            return self.column
        if self.kind == "cbind_failures":
            return f"cbind({self.column}, {self.second})"
        return f"cbind({self.column}, {self.second} - {self.column})"


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into the pieces bayesmer models.

    Attributes
    ----------
    formula : str
        The formula as written by the user.
    response : Response
        The outcome.
    fixed : str
        Right-hand side of the fixed effects in formulae/Wilkinson syntax (``"1"`` if empty).
    groups : tuple of str
        Grouping columns of the random intercepts ``(1|g)``, in formula order.
    exposure : str or None
        Column holding the exposure when the formula has ``offset(log(col))``.
    offset : str or None
        Column holding a log-scale offset when the formula has ``offset(col)``.
    """

    formula: str
    response: Response
    fixed: str
    groups: tuple[str, ...]
    exposure: str | None = None
    offset: str | None = None

    @property
    def fixed_variables(self) -> list[str]:
        """Column names used by the fixed effects, in order of first appearance."""
        names = re.findall(_IDENT, self.fixed)
        return list(dict.fromkeys(names))

    @property
    def columns(self) -> list[str]:
        """Every data column the formula uses."""
        cols = [*self.response.columns, *self.fixed_variables, *self.groups]
        cols += [c for c in (self.exposure, self.offset) if c is not None]
        return list(dict.fromkeys(cols))


def _parse_response(lhs: str) -> Response:
    lhs = lhs.strip()
    if re.fullmatch(_IDENT, lhs):
        return Response("column", lhs)
    m = _CBIND.match(lhs)
    if m:
        succ, trials, minus, fail = m.groups()
        if fail is not None:
            return Response("cbind_failures", succ, fail)
        if minus != succ:
            raise ValueError(
                f"cbind({succ}, {trials} - {minus}): the second argument must be "
                f"'{trials} - {succ}' (trials minus successes) or a column of failures."
            )
        return Response("cbind_trials", succ, trials)
    if lhs.startswith("cbind"):
        raise ValueError(
            f"Could not read the response {lhs!r}: write cbind(successes, failures) or "
            "cbind(successes, trials - successes) with plain column names."
        )
    raise ValueError(
        f"The response {lhs!r} must be a plain column name or cbind(successes, failures); "
        "transform the column in the data first."
    )


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4-style formula into response, fixed part, random intercepts and offset.

    Parameters
    ----------
    formula : str
        For example ``"survived ~ sex + (1 | pclass)"`` or
        ``"cbind(s, f) ~ x + offset(log(exposure))"``.

    Returns
    -------
    ParsedFormula

    Raises
    ------
    ValueError
        If the formula has no single ``~``, uses random slopes, nested or crossed-by-colon
        grouping, or function calls in the fixed part.
    TypeError
        If ``formula`` is not a string.
    """
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string such as 'y ~ x', got {type(formula).__name__}")
    if formula.count("~") != 1:
        raise ValueError(f"The formula {formula!r} must contain exactly one '~'.")
    lhs, rhs = formula.split("~")
    if not lhs.strip():
        raise ValueError(f"The formula {formula!r} has no response on the left of '~'.")
    response = _parse_response(lhs)

    groups: list[str] = []
    for m in _RANDOM.finditer(rhs):
        expr, group = m.group(1).strip(), m.group(2).strip()
        if "||" in m.group(0):
            raise ValueError(f"Random-effect term {m.group(0)!r}: '||' is not supported yet.")
        if expr != "1":
            raise ValueError(
                f"Random-effect term {m.group(0)!r}: random slopes are not supported yet; "
                "only random intercepts such as (1|group) are."
            )
        if not re.fullmatch(_IDENT, group):
            raise ValueError(
                f"Random-effect term {m.group(0)!r}: the grouping must be one column. For "
                "nested groups write one term per level, e.g. (1|site) + (1|plot): bayesmer "
                "finds the nesting in the data when the inner labels are unique across the "
                "outer ones (otherwise make a combined column first); ':' groupings are not "
                "supported."
            )
        if group in groups:
            raise ValueError(f"The grouping column {group!r} appears twice in {formula!r}.")
        groups.append(group)
    rest = _RANDOM.sub(" ", rhs)

    exposure = offset = None
    offsets = list(_OFFSET.finditer(rest))
    if len(offsets) > 1:
        raise ValueError(f"The formula {formula!r} has more than one offset().")
    if offsets:
        exposure, offset = offsets[0].group(2), offsets[0].group(3)
        rest = _OFFSET.sub(" ", rest)
    elif "offset(" in rest:
        raise ValueError("Write the offset as offset(log(exposure)) or offset(column).")

    fixed = _tidy_terms(rest)
    if "|" in fixed:
        raise ValueError(
            f"Could not read the random-effect part of {formula!r}: write it as (1 | group)."
        )
    call = re.search(_IDENT + r"\s*\(", fixed)
    if call:
        raise ValueError(
            f"Function calls such as {call.group(0)}...) are not supported in the fixed part "
            f"of {formula!r}: transform the column in the data first."
        )
    bad = re.sub(_IDENT, "", fixed)
    bad = re.sub(r"[\s+*:\-()0-9]", "", bad)
    if bad:
        raise ValueError(
            f"Unexpected characters {bad!r} in the fixed part of {formula!r}: "
            "use column names joined by +, *, : and -1."
        )
    return ParsedFormula(formula, response, fixed, tuple(groups), exposure, offset)


def _tidy_terms(rhs: str) -> str:
    """Remove the empty slots left by cutting random terms and offsets out of a formula."""
    text = re.sub(r"\s+", " ", rhs).strip()
    # Collapse '+ +' runs and strip leading/trailing '+'.
    while True:
        new = re.sub(r"\+\s*\+", "+", text).strip()
        new = re.sub(r"^\+\s*|\s*\+$", "", new).strip()
        if new == text:
            break
        text = new
    return text or "1"

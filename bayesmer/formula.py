"""Parse lme4-style formulas into their parts.

The fixed-effects part is later handed to formulae for the design matrix; this module only
splits a formula into response, fixed terms, random effects (``(1|g)``, ``(x|g)``, ``(0 + x|g)``,
``(x||g)``, nested ``(1|a/b)`` and combined ``(1|a:b)`` factors) and an offset, and rejects what
bayesmer does not support with a message that says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .transforms import IDENT as _IDENT
from .transforms import Call, column_name, find_calls

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
class RandomPart:
    """The random effects of one grouping factor.

    Attributes
    ----------
    group : str
        The grouping factor (a column, or ``'a:b'`` for a combination of columns).
    intercept : bool
        Whether the levels have their own intercept (lme4's default; ``0 +`` or ``-1 +``
        removes it).
    variables : tuple of str
        The columns with a slope per level, in formula order (a factor gives one slope per
        non-reference level, as in the fixed part).
    correlated : bool
        Whether the intercept and slopes are correlated (``|``) or not (``||``, or several
        one-column terms such as ``(1|g) + (0 + x|g)``).
    """

    group: str
    intercept: bool = True
    variables: tuple[str, ...] = ()
    correlated: bool = True

    @property
    def slopes(self) -> bool:
        """Whether the factor has anything but a random intercept."""
        return bool(self.variables) or not self.intercept

    @property
    def rhs(self) -> str:
        """The random design in Wilkinson syntax, for formulae (``'1 + x'``, ``'0 + x'``)."""
        return " + ".join(["1" if self.intercept else "0", *self.variables])


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
        Right-hand side of the fixed effects in Wilkinson syntax (``"1"`` if empty), calls such
        as ``log(x)`` or ``I(x^2)`` as written.
    groups : tuple of str
        Grouping factors of the random effects, in formula order: a column (``(1|g)``) or
        a combination of columns named as lme4 names it (``'site:plot'`` for ``(1|site:plot)``;
        ``(1|site/plot)`` gives ``'site'`` and ``'site:plot'``).
    exposure : str or None
        Column holding the exposure when the formula has ``offset(log(col))``.
    offset : str or None
        Column holding a log-scale offset when the formula has ``offset(col)``.
    calls : tuple of Call
        The calls in the fixed part (see :mod:`bayesmer.transforms`).
    random : tuple of RandomPart
        The random effects of each grouping factor, in the order of ``groups``.
    """

    formula: str
    response: Response
    fixed: str
    groups: tuple[str, ...]
    exposure: str | None = None
    offset: str | None = None
    calls: tuple[Call, ...] = ()
    random: tuple[RandomPart, ...] = ()

    def random_part(self, group: str) -> RandomPart:
        """The random effects of a grouping factor (a random intercept by default)."""
        return next((r for r in self.random if r.group == group), RandomPart(group))

    @property
    def random_variables(self) -> list[str]:
        """Data columns with random slopes, in order of first appearance."""
        return list(dict.fromkeys(v for r in self.random for v in r.variables))

    @property
    def fixed_variables(self) -> list[str]:
        """Data columns used by the fixed effects, in order of first appearance."""
        text = self.fixed
        for call in self.calls:
            text = text.replace(call.text, " " + " ".join(call.variables) + " ", 1)
        return list(dict.fromkeys(re.findall(_IDENT, text)))

    def group_sources(self, group: str) -> list[str]:
        """The data columns a grouping factor is made of (``'site:plot'`` -> site, plot)."""
        return group.split(":")

    @property
    def columns(self) -> list[str]:
        """Every data column the formula uses."""
        cols = [*self.response.columns, *self.fixed_variables, *self.random_variables]
        cols += [c for g in self.groups for c in self.group_sources(g)]
        cols += [c for c in (self.exposure, self.offset) if c is not None]
        return list(dict.fromkeys(cols))

    @property
    def fixed_for_formulae(self) -> str:
        """The fixed part as formulae reads it: each call replaced by the name of the column
        that holds its values (:func:`bayesmer.transforms.column_name`)."""
        text = self.fixed
        for k, call in enumerate(self.calls):
            text = text.replace(call.text, column_name(k), 1)
        return text


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
    """Split an lme4-style formula into response, fixed part, random effects and offset.

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
        If the formula has no single ``~``, a random term bayesmer cannot read (calls inside
        it, or several terms on one factor that are not one column each), or a call in the
        fixed part that bayesmer does not support (see :mod:`bayesmer.transforms`).
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
    parts: dict[str, list[tuple[RandomPart, str]]] = {}
    for m in _RANDOM.finditer(rhs):
        expr, group = m.group(1).strip(), m.group(2).strip()
        correlated = "||" not in m.group(0)
        intercept, variables = _random_expression(expr, m.group(0))
        for name in _grouping_factors(group, m.group(0)):
            if name not in parts:
                groups.append(name)
            parts.setdefault(name, []).append(
                (RandomPart(name, intercept, variables, correlated), m.group(0))
            )
    random = tuple(_merge_parts(name, parts[name], formula) for name in groups)
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
            f"Could not read the random-effect part of {formula!r}: write it as (1 | group), "
            "(1 + x | group) or (x || group), with plain column names (no calls such as "
            "log(x) inside random terms)."
        )
    calls = tuple(find_calls(fixed))
    outside = fixed
    for call in calls:
        outside = outside.replace(call.text, " ", 1)
    bad = re.sub(_IDENT, "", outside)
    bad = re.sub(r"[\s+*:\-()0-9]", "", bad)
    if bad:
        raise ValueError(
            f"Unexpected characters {bad!r} in the fixed part of {formula!r}: "
            "use column names joined by +, *, : and -1, or calls such as log(x) and I(x^2)."
        )
    return ParsedFormula(formula, response, fixed, tuple(groups), exposure, offset, calls, random)


def _random_expression(expr: str, term: str) -> tuple[bool, tuple[str, ...]]:
    """The left side of a random term: (has an intercept, columns with slopes)."""
    tokens = [t.strip() for t in re.split(r"\+", re.sub(r"-\s*1\b", "+ -1", expr))]
    tokens = [t for t in tokens if t]
    intercept = "0" not in tokens and "-1" not in tokens
    variables = [t for t in tokens if t not in ("0", "1", "-1")]
    for t in variables:
        if "(" in t:
            raise ValueError(
                f"Random-effect term {term!r}: calls such as {t!r} are not supported inside "
                "random terms yet; add the transformed values as a column of the data and use "
                "that column."
            )
        if not re.fullmatch(_IDENT, t):
            raise ValueError(
                f"Random-effect term {term!r}: could not read {t!r}; write the random part "
                "as columns joined by '+', e.g. (1 + x | g), (0 + x | g) or (x || g)."
            )
    if len(set(variables)) != len(variables):
        raise ValueError(f"Random-effect term {term!r} names a column twice.")
    if not intercept and not variables:
        raise ValueError(f"Random-effect term {term!r} has neither an intercept nor a slope.")
    return intercept, tuple(variables)


def _merge_parts(name: str, parts: list[tuple[RandomPart, str]], formula: str) -> RandomPart:
    """One grouping factor's terms as one :class:`RandomPart`.

    Several terms on a factor are accepted when each has one column (``(1|g) + (0 + x|g)``,
    lme4's way of writing ``(x || g)``): uncorrelated effects.
    """
    if len(parts) == 1:
        return parts[0][0]
    columns = [
        "(Intercept)" if p.intercept else p.variables[0]
        for p, _ in parts
        if len(p.variables) + p.intercept == 1
    ]
    if len(columns) < len(parts) or len(set(columns)) < len(columns):
        terms = " + ".join(t for _, t in parts)
        if all(not p.slopes for p, _ in parts):
            raise ValueError(
                f"The grouping factor {name!r} appears twice in {formula!r}"
                + (" ((1|a/b) already means (1|a) + (1|a:b))." if ":" in name else ".")
            )
        raise ValueError(
            f"The grouping factor {name!r} appears in several random terms ({terms}) that "
            "bayesmer cannot combine: write one term per factor, (1 + x | g) for correlated "
            "effects or (x || g) for uncorrelated ones; separate one-column terms such as "
            "(1 | g) + (0 + x | g) are read as (x || g)."
        )
    intercept = "(Intercept)" in columns
    variables = tuple(c for c in columns if c != "(Intercept)")
    return RandomPart(name, intercept, variables, correlated=False)


def _grouping_factors(group: str, term: str) -> list[str]:
    """``g`` -> [g]; ``a:b`` -> ['a:b'] (one factor of the combinations); ``a/b`` -> [a, a:b]."""
    parts = re.split(r"\s*([/:])\s*", group.strip())
    names, seps = parts[::2], set(parts[1::2])
    if not all(re.fullmatch(_IDENT, n) for n in names) or len(seps) > 1:
        raise ValueError(
            f"Random-effect term {term!r}: write the grouping as one column (1|g), nested "
            "columns (1|site/plot), or a combination of columns (1|site:plot)."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"Random-effect term {term!r} names a column twice.")
    if seps == {"/"}:
        return [":".join(names[: k + 1]) for k in range(len(names))]
    return [":".join(names)]


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

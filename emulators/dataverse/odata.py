"""The OData query language of the Dataverse emulator: ``$filter``, ``$orderby`` and ``$select``.

A ``$filter`` is parsed and compiled once into closures; evaluating the result per row costs a few
dict lookups and comparisons against precomputed constants (about 40 ms per 100,000 rows for a
three-condition filter on one core).

Row model (the store keeps rows this way; predicates read them):

- a row is a dict keyed by logical attribute names; a lookup column such as ``parentcustomerid`` is
  kept as ``_parentcustomerid_value`` holding the related record's GUID as a string;
- DateTime values are timezone-aware ``datetime`` objects (naive ones are read as UTC; ISO-8601
  strings are accepted too but are parsed at every comparison, so prefer ``datetime``);
- GUIDs are strings in any letter case; Boolean values are ``bool``; Integer, BigInt, Picklist,
  State and Status values are ``int``; a missing key and ``None`` both mean null.

Behaviour reproduced from Dataverse (SQL Server underneath):

- string comparisons ignore letter case, accents and trailing spaces (collation
  ``Latin1_General_CI_AI``); ``contains``/``startswith``/``endswith`` are SQL ``LIKE``, so ``%``,
  ``_`` and ``[...]`` in their argument are wildcards;
- a comparison with a null column is unknown, so ``ne``, ``gt``, ``not (...)`` and ``NotIn`` never
  return rows whose column is null; ``eq null`` and ``ne null`` test for null;
- OData precedence: ``not`` binds to the next operand, so ``not a eq 1`` is a type error and
  ``not (a eq 1)`` is what works; comparison before ``and`` before ``or``;
- lookups are filtered as ``_<name>_value``; GUIDs may be written bare or quoted;
- Dataverse functions: ``Microsoft.Dynamics.CRM.In``/``NotIn``/``Between``/``NotBetween``/``On``/
  ``OnOrAfter``/``OnOrBefore``/``Today``/``Yesterday``/``Tomorrow``/``Last7Days``/``LastXHours``/
  ``LastXDays``/``OlderThanXMinutes``/``OlderThanXHours``/``OlderThanXDays``; the relative ones
  read the emulator's clock through ``RowContext.now()``; day boundaries are UTC midnights;
  ``PropertyName`` takes the logical name (or ``_<name>_value``) of a column of the innermost
  lambda's table, or of the queried table outside lambdas;
- lambdas ``nav/any(x:...)``, ``nav/any()`` and ``nav/all(x:...)`` over collection-valued navigation
  properties, resolved through ``RowContext.related(row, nav)``; a bare property inside a lambda
  refers to the outer row, as in OData;
- parameter aliases (``@p1``) when the caller passes the query string's alias values.

Errors are ``ODataError`` (status 400, code ``0x80060888``, the code Dataverse gives OData
parsing errors) with ODataLib's wording where it is known: unknown properties, syntax errors with
their position, incompatible operand types, unknown functions; a Dataverse function naming an
unknown column answers ``0x80041103`` as the query builder does. Functions the real service rejects
or that the emulator leaves out (``tolower``, ``substring``, arithmetic, the ``in`` operator,
fiscal-period functions, ...) answer "... is not supported." (the real wording of those refusals,
and of the messages marked ``# text unverified``, is the emulator's own).
"""

from __future__ import annotations

import json
import operator
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from emulators.dataverse.fetchxml import Link

PARSE_ERROR = "0x80060888"
NO_ATTRIBUTE = "0x80041103"  # QueryBuilderNoAttribute: a Dataverse function names an unknown column
TYPE_PREFIX = "Microsoft.Dynamics.CRM."


class ODataError(ValueError):
    """A query option the real service would refuse with 400; ``message`` is what it answers."""

    def __init__(self, message: str, code: str = PARSE_ERROR, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class EntityType(Protocol):
    """What the query engine needs to know about a table (implemented by the schema module)."""

    logical_name: str

    def attribute_type(self, name: str) -> str | None:
        """The attribute's type ("String", "Lookup", "DateTime", ...) or None if there is no such column."""
        ...

    def navigation(self, name: str) -> EntityType | None:
        """The table a collection-valued navigation property leads to, or None."""
        ...


class RowContext(Protocol):
    """What a predicate may ask the store while it evaluates one row."""

    def related(self, row: dict, navigation: str | Link) -> Iterable[dict]:
        """Rows reached from ``row``: through a collection-valued navigation property (OData lambdas,
        ``navigation`` is its name) or through a FetchXML ``<link-entity>`` (``navigation`` is a
        ``fetchxml.Link``; see its docstring)."""
        ...

    def now(self) -> datetime:
        """The emulator's current time (timezone-aware), for relative date conditions."""
        ...


Predicate = Callable[[dict, RowContext], bool]
ValueTest = Callable[[Any], bool | None]


# ---------------------------------------------------------------------------------------------
# Columns, value normalisation and the comparison primitives (shared with fetchxml)
# ---------------------------------------------------------------------------------------------

LOOKUP_TYPES = frozenset({"Lookup", "Customer", "Owner"})

# attribute type -> (comparison family, Edm type named in error messages)
_TYPES: dict[str, tuple[str, str]] = {
    "String": ("string", "Edm.String"),
    "Memo": ("string", "Edm.String"),
    "EntityName": ("string", "Edm.String"),
    "Boolean": ("boolean", "Edm.Boolean"),
    "Integer": ("number", "Edm.Int32"),
    "Picklist": ("number", "Edm.Int32"),
    "State": ("number", "Edm.Int32"),
    "Status": ("number", "Edm.Int32"),
    "BigInt": ("number", "Edm.Int64"),
    "Decimal": ("number", "Edm.Decimal"),
    "Money": ("number", "Edm.Decimal"),
    "Double": ("number", "Edm.Double"),
    "DateTime": ("datetime", "Edm.DateTimeOffset"),
    "Uniqueidentifier": ("guid", "Edm.Guid"),
    "Lookup": ("guid", "Edm.Guid"),
    "Customer": ("guid", "Edm.Guid"),
    "Owner": ("guid", "Edm.Guid"),
}


@dataclass(frozen=True)
class Column:
    """One column as a query names it: ``key`` is where the row keeps it."""

    name: str
    attribute: str
    key: str
    kind: str

    @property
    def family(self) -> str:
        return _TYPES.get(self.kind, ("string", "Edm.String"))[0]

    @property
    def edm(self) -> str:
        return _TYPES.get(self.kind, ("string", "Edm.String"))[1]


def web_api_column(entity: EntityType, name: str) -> Column | None:
    """A column as the Web API names it: lookups only as ``_<name>_value``."""
    if name.startswith("_") and name.endswith("_value") and len(name) > 7:
        attribute = name[1:-6]
        kind = entity.attribute_type(attribute)
        if kind in LOOKUP_TYPES:
            return Column(name, attribute, name, kind)
    kind = entity.attribute_type(name)
    if kind is None or kind in LOOKUP_TYPES:
        return None
    return Column(name, name, name, kind)


def logical_column(entity: EntityType, name: str) -> Column | None:
    """A column as FetchXML and the Dataverse functions name it: lookups by their logical name."""
    if name.startswith("_") and name.endswith("_value") and entity.attribute_type(name[1:-6]) in LOOKUP_TYPES:
        return None
    kind = entity.attribute_type(name)
    if kind is None:
        return None
    key = f"_{name}_value" if kind in LOOKUP_TYPES else name
    return Column(name, name, key, kind)


_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def fold_pattern(text: str) -> str:
    """Case- and accent-folded text, trailing spaces kept (LIKE patterns keep them)."""
    if text.isascii():
        return text.lower()
    return _COMBINING.sub("", unicodedata.normalize("NFKD", text.casefold()))


def fold_text(text: str) -> str:
    """The form two strings share when Latin1_General_CI_AI calls them equal."""
    if text.isascii():
        return text.lower().rstrip(" ")
    return _COMBINING.sub("", unicodedata.normalize("NFKD", text.casefold())).rstrip(" ")


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> datetime:
    return parse_datetime(text)


def to_utc(value: Any) -> datetime:
    """A stored DateTime value as an aware datetime (naive values and ISO strings are UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        return _parse_cached(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise TypeError(f"not a date and time: {value!r}")


def _guid(value: Any) -> str:
    return str(value).lower()


_NORMALISERS: dict[str, Callable[[Any], Any]] = {
    "string": lambda v: fold_text(v if isinstance(v, str) else str(v)),
    "boolean": bool,
    "number": lambda v: v,
    "datetime": to_utc,
    "guid": _guid,
}


def normalise(family: str, value: Any) -> Any:
    """A stored value in the form comparisons use."""
    return None if value is None else _NORMALISERS[family](value)


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_datetime(text: str) -> datetime:
    """An OData/ISO-8601 date and time as an aware datetime.

    Accepts ``2024-01-01T00:00:00Z``, offsets (``+02:00``), fractional seconds (up to 7 digits)
    and a bare date (midnight UTC); a value without an offset is read as UTC.
    """
    value = text.strip()
    try:
        if _DATE_ONLY.fullmatch(value):
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ODataError(
            f"The value '{text}' is not a valid date and time; expected ISO 8601 such as 2024-01-01T00:00:00Z."
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def coerce_text(column: Column, text: str) -> Any:
    """A value written as text (FetchXML values, Dataverse function arguments) in the column's
    comparison form; ValueError when the text does not fit the column's type."""
    family = column.family
    if family == "string":
        return fold_text(text)
    if family == "boolean":
        lowered = text.strip().lower()
        if lowered in ("1", "true"):
            return True
        if lowered in ("0", "false"):
            return False
        raise ValueError(text)
    if family == "number":
        stripped = text.strip()
        if column.edm in ("Edm.Int32", "Edm.Int64"):
            return int(stripped)
        try:
            return Decimal(stripped)
        except InvalidOperation:
            raise ValueError(text) from None
    if family == "datetime":
        try:
            return parse_datetime(text)
        except ODataError:
            raise ValueError(text) from None
    return str(uuid.UUID(text.strip().strip("{}")))


_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def compare_test(family: str, op: str, constant: Any) -> ValueTest:
    """``column <op> constant`` for a stored value; ``constant`` is already normalised (or None)."""
    if constant is None:
        if op == "eq":
            return lambda v: v is None
        if op == "ne":
            return lambda v: v is not None
        return lambda v: None
    if family == "string" and op in ("eq", "ne"):
        equal = op == "eq"

        def text_test(v: Any) -> bool | None:
            if v is None:
                return None
            return (fold_text(v) == constant) is equal

        return text_test
    norm = _NORMALISERS[family]
    cmp = _COMPARATORS[op]

    def test(v: Any) -> bool | None:
        if v is None:
            return None
        return cmp(norm(v), constant)

    return test


def in_test(family: str, constants: Iterable[Any], negate: bool = False) -> ValueTest:
    """``column in (...)`` / ``not in``; the constants are already normalised."""
    members = frozenset(constants)
    norm = _NORMALISERS[family]

    def test(v: Any) -> bool | None:
        if v is None:
            return None
        return (norm(v) in members) is not negate

    return test


def between_test(family: str, low: Any, high: Any, negate: bool = False) -> ValueTest:
    """Inclusive ``between``; the bounds are already normalised."""
    norm = _NORMALISERS[family]

    def test(v: Any) -> bool | None:
        if v is None:
            return None
        return (low <= norm(v) <= high) is not negate

    return test


def _like_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        elif char == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negated = body.startswith("^")
            body = body[1:] if negated else body
            escaped = "".join("\\" + c if c in "\\[]^" else c for c in body)
            parts.append(f"[{'^' if negated else ''}{escaped}]")
            i = end
        else:
            parts.append(re.escape(char))
        i += 1
    try:
        return re.compile("".join(parts), re.DOTALL)
    except re.error:
        # a malformed range such as [z-a] matches itself literally rather than failing the query
        return re.compile(re.escape(pattern), re.DOTALL)


def like_test(pattern: str, negate: bool = False) -> ValueTest:
    """SQL ``LIKE`` (case- and accent-insensitive): ``%`` any run, ``_`` one character, ``[a-c]``/``[^a]`` sets."""
    folded = fold_pattern(pattern)
    inner = folded.strip("%")
    if not any(c in inner for c in "%_["):
        starts, ends = folded.startswith("%"), folded.endswith("%") and len(folded) > 1
        if starts and ends:

            def match(text: str) -> bool:
                return inner in text
        elif ends:

            def match(text: str) -> bool:
                return text.startswith(inner)
        elif starts:

            def match(text: str) -> bool:
                return text.endswith(inner)
        else:

            def match(text: str) -> bool:
                return text == inner
    else:
        match = _like_regex(folded).fullmatch  # type: ignore[assignment]

    def test(v: Any) -> bool | None:
        if v is None:
            return None
        return bool(match(fold_text(v if isinstance(v, str) else str(v)))) is not negate

    return test


def midnight(moment: datetime) -> datetime:
    """The start of ``moment``'s day in UTC."""
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return utc.replace(hour=0, minute=0, second=0, microsecond=0)


_DAY = timedelta(days=1)
_INSTANT = timedelta(microseconds=1)

# relative date conditions: (now, x) -> [low, high) with None for an open end
RELATIVE_DATE_RANGES: dict[str, Callable[[datetime, int], tuple[datetime | None, datetime | None]]] = {
    "last-x-hours": lambda now, x: (now - timedelta(hours=x), now + _INSTANT),
    "last-x-days": lambda now, x: (midnight(now) - timedelta(days=x), now + _INSTANT),
    "last-seven-days": lambda now, _: (midnight(now) - timedelta(days=7), now + _INSTANT),
    "olderthan-x-minutes": lambda now, x: (None, now - timedelta(minutes=x)),
    "olderthan-x-hours": lambda now, x: (None, now - timedelta(hours=x)),
    "olderthan-x-days": lambda now, x: (None, now - timedelta(days=x)),
    "today": lambda now, _: (midnight(now), midnight(now) + _DAY),
    "yesterday": lambda now, _: (midnight(now) - _DAY, midnight(now)),
    "tomorrow": lambda now, _: (midnight(now) + _DAY, midnight(now) + 2 * _DAY),
}
RELATIVE_NEEDS_VALUE = frozenset(
    {"last-x-hours", "last-x-days", "olderthan-x-minutes", "olderthan-x-hours", "olderthan-x-days"}
)


def day_range_test(op: str, day: datetime) -> ValueTest:
    """``on``, ``on-or-after``, ``on-or-before`` a calendar day (the time of ``day`` is ignored)."""
    start = midnight(day)
    low, high = {"on": (start, start + _DAY), "on-or-after": (start, None), "on-or-before": (None, start + _DAY)}[op]
    return range_test(low, high)


def range_test(low: datetime | None, high: datetime | None) -> ValueTest:
    """A DateTime in ``[low, high)``."""

    def test(v: Any) -> bool | None:
        if v is None:
            return None
        moment = to_utc(v)
        return (low is None or moment >= low) and (high is None or moment < high)

    return test


def relative_test(op: str, amount: int) -> Callable[[Any, datetime], bool | None]:
    """A DateTime relative to the clock: ``(value, now) -> bool | None``."""
    bounds = RELATIVE_DATE_RANGES[op]
    # the clock rarely moves between rows of one scan: keep the last bounds
    last: list[tuple[Any, datetime | None, datetime | None]] = [(None, None, None)]

    def test(v: Any, now: datetime) -> bool | None:
        if v is None:
            return None
        seen, low, high = last[0]
        if seen != now:
            low, high = bounds(now if now.tzinfo is not None else now.replace(tzinfo=UTC), amount)
            last[0] = (now, low, high)
        moment = to_utc(v)
        return (low is None or moment >= low) and (high is None or moment < high)

    return test


# ---------------------------------------------------------------------------------------------
# Lexer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # ident, string, json, number, guid, datetime, date, alias, punct, end
    text: str
    pos: int
    value: Any = None


_LEXEME = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<guid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Za-z_]))
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\d:]))
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>\$?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<alias>@[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(),/:=\[\]])
""",
    re.VERBOSE,
)
_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:\d{2})$")


def _syntax(text: str, pos: int) -> ODataError:
    return ODataError(f"Syntax error at position {pos} in '{text}'.")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in "'\"":
            end = _string_end(text, pos)
            raw = text[pos:end]
            if char == "'":
                tokens.append(_Token("string", raw, pos, raw[1:-1].replace("''", "'")))
            else:
                try:
                    tokens.append(_Token("json", raw, pos, json.loads(raw)))
                except ValueError:
                    raise _syntax(text, pos) from None
            pos = end
            continue
        match = _LEXEME.match(text, pos)
        if match is None:
            raise ODataError(f"Syntax error: character '{char}' is not valid at position {pos} in '{text}'.")
        kind, lexeme = match.lastgroup or "", match.group()
        if kind != "space":
            tokens.append(_Token(kind, lexeme, pos, _literal_value(kind, lexeme, pos, text)))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _string_end(text: str, start: int) -> int:
    quote = text[start]
    i = start + 1
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            if quote == "'" and text.startswith("''", i):
                i += 2
                continue
            return i + 1
        i += 1
    raise ODataError(f"There is an unterminated literal at position {len(text)} in '{text}'.")


def _literal_value(kind: str, lexeme: str, pos: int, text: str) -> Any:
    if kind == "guid":
        return lexeme.lower()
    if kind == "number":
        if any(c in lexeme for c in ".eE"):
            return float(lexeme) if "e" in lexeme.lower() else Decimal(lexeme)
        return int(lexeme)
    if kind in ("datetime", "date"):
        # an OData DateTimeOffset literal must carry its offset
        if kind == "datetime" and not _OFFSET.search(lexeme):
            raise ODataError(f"Unrecognized 'Edm.DateTimeOffset' literal '{lexeme}' at '{pos}' in '{text}'.")
        try:
            return parse_datetime(lexeme) if kind == "datetime" else date.fromisoformat(lexeme)
        except (ODataError, ValueError):
            edm = "Edm.DateTimeOffset" if kind == "datetime" else "Edm.Date"
            raise ODataError(f"Unrecognized '{edm}' literal '{lexeme}' at '{pos}' in '{text}'.") from None
    return None


# ---------------------------------------------------------------------------------------------
# Parser and compiler for $filter
# ---------------------------------------------------------------------------------------------

Frames = tuple[dict, ...]
Test = Callable[[Frames, RowContext], bool | None]

_CMP_KIND = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_MIRROR = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}
_UNSUPPORTED_OPERATORS = {"add", "sub", "mul", "div", "divby", "mod", "has", "in"}
_CANONICAL_FUNCTIONS = {
    "tolower",
    "toupper",
    "trim",
    "length",
    "indexof",
    "substring",
    "substringof",
    "concat",
    "matchesPattern",
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "fractionalseconds",
    "totalseconds",
    "totaloffsetminutes",
    "date",
    "time",
    "now",
    "mindatetime",
    "maxdatetime",
    "round",
    "floor",
    "ceiling",
    "cast",
    "isof",
    "hassubset",
    "hassubsequence",
    "case",
    "geo.distance",
    "geo.length",
    "geo.intersects",
}
_STRING_FUNCTIONS = {"contains": ("%", "%"), "startswith": ("", "%"), "endswith": ("%", "")}
_RELATIVE_FUNCTIONS = {
    "LastXHours": "last-x-hours",
    "LastXDays": "last-x-days",
    "Last7Days": "last-seven-days",
    "OlderThanXMinutes": "olderthan-x-minutes",
    "OlderThanXHours": "olderthan-x-hours",
    "OlderThanXDays": "olderthan-x-days",
    "Today": "today",
    "Yesterday": "yesterday",
    "Tomorrow": "tomorrow",
}
_DAY_FUNCTIONS = {"On": "on", "OnOrAfter": "on-or-after", "OnOrBefore": "on-or-before"}
_DATAVERSE_FUNCTIONS = {  # the real service's query functions the emulator does not evaluate
    "Above",
    "AboveOrEqual",
    "Contains",
    "ContainValues",
    "DoesNotContainValues",
    "EqualBusinessId",
    "EqualUserId",
    "EqualUserLanguage",
    "EqualUserOrUserHierarchy",
    "EqualUserOrUserHierarchyAndTeams",
    "EqualUserOrUserTeams",
    "EqualUserTeams",
    "InFiscalPeriod",
    "InFiscalPeriodAndYear",
    "InFiscalYear",
    "InOrAfterFiscalPeriodAndYear",
    "InOrBeforeFiscalPeriodAndYear",
    "LastFiscalPeriod",
    "LastFiscalYear",
    "LastMonth",
    "LastWeek",
    "LastXFiscalPeriods",
    "LastXFiscalYears",
    "LastXMonths",
    "LastXWeeks",
    "LastXYears",
    "LastYear",
    "Next7Days",
    "NextFiscalPeriod",
    "NextFiscalYear",
    "NextMonth",
    "NextWeek",
    "NextXDays",
    "NextXFiscalPeriods",
    "NextXFiscalYears",
    "NextXHours",
    "NextXMonths",
    "NextXWeeks",
    "NextXYears",
    "NextYear",
    "NotEqualBusinessId",
    "NotEqualUserId",
    "NotUnder",
    "OlderThanXMonths",
    "OlderThanXWeeks",
    "OlderThanXYears",
    "ThisFiscalPeriod",
    "ThisFiscalYear",
    "ThisMonth",
    "ThisWeek",
    "ThisYear",
    "Under",
    "UnderOrEqual",
}


@dataclass(slots=True)
class _Operand:
    """A parsed operand: a literal, a column of one scope, or a boolean expression."""

    kind: str  # literal | property | boolean
    edm: str | None
    pos: int
    value: Any = None
    column: Column | None = None
    depth: int = 0
    test: Test | None = None
    hop: Callable[[Test], Test] | None = None  # a column of the row a lookup points at: wraps its test


@dataclass(slots=True)
class _Scope:
    variable: str | None
    entity: EntityType


def _type_name(entity: EntityType) -> str:
    return f"{TYPE_PREFIX}{entity.logical_name}"


def _no_property(name: str, entity: EntityType) -> ODataError:
    return ODataError(f"Could not find a property named '{name}' on type '{_type_name(entity)}'.")


def _incompatible(left: str | None, right: str | None, kind: str) -> ODataError:
    return ODataError(
        "A binary operator with incompatible types was detected. Found operand types "
        f"'{left or '<null>'}' and '{right or '<null>'}' for operator kind '{kind}'."
    )


class _Parser:
    def __init__(self, text: str, scopes: list[_Scope], aliases: Mapping[str, str]) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.scopes = scopes
        self.aliases = aliases

    # -- token helpers --------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def is_word(self, word: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "ident" and token.text == word

    def is_punct(self, char: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "punct" and token.text == char

    def expect(self, char: str, message: str) -> _Token:
        if not self.is_punct(char):
            raise ODataError(f"{message} at position {self.peek().pos} in '{self.text}'.")
        return self.advance()

    def finish(self) -> None:
        token = self.peek()
        if token.kind != "end":
            if token.kind == "ident" and token.text in _UNSUPPORTED_OPERATORS:
                raise ODataError(f"The operator '{token.text}' is not supported.")  # text unverified
            raise _syntax(self.text, token.pos)

    # -- grammar --------------------------------------------------------------------------------

    def parse_filter(self) -> Test:
        result = self.parse_or()
        self.finish()
        return self.as_test(result, "The $filter expression must evaluate to a single boolean value.")

    def parse_or(self) -> _Operand:
        left = self.parse_and()
        while self.is_word("or"):
            self.advance()
            left = self.logical("Or", left, self.parse_and(), _or)
        return left

    def parse_and(self) -> _Operand:
        left = self.parse_comparison()
        while self.is_word("and"):
            self.advance()
            left = self.logical("And", left, self.parse_comparison(), _and)
        return left

    def parse_comparison(self) -> _Operand:
        left = self.parse_unary()
        while self.peek().kind == "ident" and self.peek().text in _CMP_KIND:
            op = self.advance().text
            right = self.parse_unary()
            left = self.compare(op, left, right)
        token = self.peek()
        if token.kind == "ident" and token.text in _UNSUPPORTED_OPERATORS:
            raise ODataError(f"The operator '{token.text}' is not supported.")  # text unverified
        return left

    def parse_unary(self) -> _Operand:
        if self.is_word("not"):
            pos = self.advance().pos
            operand = self.parse_unary()
            if not self.is_boolean(operand):
                raise ODataError(
                    "A unary operator with an incompatible type was detected. Found operand type "
                    f"'{operand.edm or '<null>'}' for operator kind 'Not'."
                )
            return _Operand("boolean", "Edm.Boolean", pos, test=_not(self.as_test(operand, "")))
        return self.parse_primary()

    def parse_primary(self) -> _Operand:
        token = self.peek()
        if token.kind == "punct" and token.text == "(":
            self.advance()
            inner = self.parse_or()
            self.expect(")", "')' or operator expected")
            return inner
        if token.kind in ("string", "number", "guid", "datetime", "date"):
            self.advance()
            return self.literal(token)
        if token.kind == "alias":
            self.advance()
            return self.alias_operand(token)
        if token.kind == "ident":
            if token.text in ("true", "false"):
                self.advance()
                return _Operand("literal", "Edm.Boolean", token.pos, value=token.text == "true")
            if token.text == "null":
                self.advance()
                return _Operand("literal", None, token.pos)
            if self.is_punct("(", 1):
                return self.function_call()
            return self.member_path()
        raise ODataError(f"Expression expected at position {token.pos} in '{self.text}'.")

    @staticmethod
    def literal(token: _Token) -> _Operand:
        if token.kind == "string":
            return _Operand("literal", "Edm.String", token.pos, value=token.value)
        if token.kind == "guid":
            return _Operand("literal", "Edm.Guid", token.pos, value=token.value)
        if token.kind == "datetime":
            return _Operand("literal", "Edm.DateTimeOffset", token.pos, value=token.value)
        if token.kind == "date":
            return _Operand("literal", "Edm.Date", token.pos, value=token.value)
        value = token.value
        if isinstance(value, int):
            edm = "Edm.Int32" if -(2**31) <= value < 2**31 else "Edm.Int64"
        else:
            edm = "Edm.Double" if isinstance(value, float) else "Edm.Decimal"
        return _Operand("literal", edm, token.pos, value=value)

    def alias_text(self, token: _Token) -> str | None:
        name = token.text
        return self.aliases.get(name, self.aliases.get(name[1:]))

    def alias_operand(self, token: _Token) -> _Operand:
        text = self.alias_text(token)
        if text is None:  # an alias without a value is null, as OData specifies
            return _Operand("literal", None, token.pos)
        nested = _Parser(text, self.scopes, {})
        result = nested.parse_or()
        nested.finish()
        return result

    def member_path(self) -> _Operand:
        first = self.advance()
        depth = 0
        name_token = first
        for index in range(len(self.scopes) - 1, 0, -1):
            if self.scopes[index].variable == first.text:
                if not self.is_punct("/"):
                    raise ODataError(
                        f"The range variable '{first.text}' must be followed by '/' and a property "
                        f"at position {self.peek().pos} in '{self.text}'."
                    )  # text unverified
                self.advance()
                name_token = self.advance()
                if name_token.kind != "ident":
                    raise _syntax(self.text, name_token.pos)
                depth = index
                break
        entity = self.scopes[depth].entity
        name = name_token.text
        if self.is_punct("/"):
            target = entity.navigation(name)
            single = getattr(entity, "single_navigation", lambda _: None)(name) if target is None else None
            if single is not None:
                self.advance()
                return self.related_property(single[0], single[1], depth)
            if target is None:
                if web_api_column(entity, name) is None:
                    raise _no_property(name, entity)
                raise _syntax(self.text, self.peek().pos)
            self.advance()
            step = self.advance()
            if step.kind == "ident" and step.text in ("any", "all") and self.is_punct("("):
                return self.lambda_expression(step, name, target, depth)
            raise ODataError(
                f"The parent value for a property access of a property '{step.text}' is not a single "
                "value. Property access can only be applied to a single value."
            )
        column = web_api_column(entity, name)
        if column is None:
            raise _no_property(name, entity)
        return _Operand("property", column.edm, name_token.pos, column=column, depth=depth)

    def related_property(self, key: str, target: EntityType, depth: int) -> _Operand:
        """``lookup/column``: a column of the one row the lookup points at (null when it points nowhere)."""
        token = self.advance()
        if token.kind != "ident":
            raise _syntax(self.text, token.pos)
        column = web_api_column(target, token.text)
        if column is None or self.is_punct("/"):
            raise _no_property(token.text, target)
        inner = len(self.scopes)  # the frame the related row takes while the comparison is evaluated
        return _Operand(
            "property", column.edm, token.pos, column=column, depth=inner, hop=_lookup_hop(key, target, depth)
        )

    def lambda_expression(self, step: _Token, navigation: str, target: EntityType, depth: int) -> _Operand:
        self.expect("(", "'(' expected")
        if self.is_punct(")"):
            if step.text == "all":
                raise _syntax(self.text, self.peek().pos)
            self.advance()
            return _Operand("boolean", "Edm.Boolean", step.pos, test=_exists(navigation, depth))
        variable = self.advance()
        if variable.kind != "ident":
            raise _syntax(self.text, variable.pos)
        if any(scope.variable == variable.text for scope in self.scopes):
            raise ODataError(f"The range variable '{variable.text}' has already been declared.")  # text unverified
        self.expect(":", "':' expected")
        self.scopes.append(_Scope(variable.text, target))
        try:
            body = self.parse_or()
        finally:
            self.scopes.pop()
        self.expect(")", "')' or operator expected")
        body_test = self.as_test(body, f"The lambda body of '{navigation}/{step.text}' must be a boolean expression.")
        maker = _any if step.text == "any" else _all
        return _Operand("boolean", "Edm.Boolean", step.pos, test=maker(navigation, depth, body_test))

    # -- functions ------------------------------------------------------------------------------

    def function_call(self) -> _Operand:
        name_token = self.advance()
        name = name_token.text
        if name in _STRING_FUNCTIONS:
            return self.string_function(name_token)
        if name.startswith(TYPE_PREFIX):
            return self.dataverse_function(name_token)
        if name in _CANONICAL_FUNCTIONS or name.lower() in _CANONICAL_FUNCTIONS:
            raise ODataError(f"The function '{name}' is not supported.")  # text unverified
        raise ODataError(
            f"An unknown function with name '{name}' was found. This may also be a function import or "
            "a key lookup on a navigation property, which is not allowed."
        )

    def string_function(self, name_token: _Token) -> _Operand:
        name = name_token.text
        self.expect("(", "'(' expected")
        subject = self.parse_or()
        self.expect(",", "')' or ',' expected")
        argument = self.parse_or()
        self.expect(")", "')' or ',' expected")
        signature = (
            f"No function signature for the function with name '{name}' matches the specified arguments. "
            f"The function signatures considered are: {name}(Edm.String Nullable=true, "
            "Edm.String Nullable=true)."
        )
        if subject.kind != "property" or subject.edm != "Edm.String":
            if subject.kind == "literal" and subject.edm == "Edm.String":
                raise ODataError(f"The first argument of '{name}' must be a column.")  # text unverified
            raise ODataError(signature)
        if argument.kind != "literal" or argument.edm not in ("Edm.String", None):
            if argument.kind == "property":
                raise ODataError(f"The second argument of '{name}' must be a literal.")  # text unverified
            raise ODataError(signature)
        assert subject.column is not None
        if argument.value is None:
            return _Operand("boolean", "Edm.Boolean", name_token.pos, test=_constant(None))
        prefix, suffix = _STRING_FUNCTIONS[name]
        matcher = like_test(prefix + argument.value + suffix)
        return _Operand(
            "boolean",
            "Edm.Boolean",
            name_token.pos,
            test=_hopped(subject, _column_test(subject.column.key, subject.depth, matcher)),
        )

    def dataverse_function(self, name_token: _Token) -> _Operand:
        short = name_token.text[len(TYPE_PREFIX) :]
        supported = {"In", "NotIn", "Between", "NotBetween", *_DAY_FUNCTIONS, *_RELATIVE_FUNCTIONS}
        if short not in supported:
            if short in _DATAVERSE_FUNCTIONS:
                raise ODataError(f"The function '{name_token.text}' is not supported.")  # text unverified
            raise ODataError(
                f"An unknown function with name '{name_token.text}' was found. This may also be a "
                "function import or a key lookup on a navigation property, which is not allowed."
            )
        parameters = self.function_parameters(name_token.text)
        column = self.function_column(name_token.text, parameters)
        family = column.family
        if short in ("In", "NotIn", "Between", "NotBetween"):
            values = parameters.get("PropertyValues")
            if not isinstance(values, list) or not values:
                raise ODataError(f"The function '{name_token.text}' needs PropertyValues, a non-empty list.")
            constants = [self.coerce(column, value, name_token.text) for value in values]
            if short in ("In", "NotIn"):
                value_test = in_test(family, constants, negate=short == "NotIn")
            else:
                if len(constants) != 2:
                    raise ODataError(f"The function '{name_token.text}' needs exactly two PropertyValues.")
                value_test = between_test(family, constants[0], constants[1], negate=short == "NotBetween")
            return _Operand(
                "boolean",
                "Edm.Boolean",
                name_token.pos,
                test=_column_test(column.key, len(self.scopes) - 1, value_test),
            )
        if family != "datetime":
            raise ODataError(
                f"The function '{name_token.text}' applies to date and time columns; '{column.name}' is {column.edm}."
            )  # text unverified
        if short in _DAY_FUNCTIONS:
            day = self.coerce(column, parameters.get("PropertyValue"), name_token.text)
            return _Operand(
                "boolean",
                "Edm.Boolean",
                name_token.pos,
                test=_column_test(column.key, len(self.scopes) - 1, day_range_test(_DAY_FUNCTIONS[short], day)),
            )
        op = _RELATIVE_FUNCTIONS[short]
        amount = 0
        if op in RELATIVE_NEEDS_VALUE:
            raw = parameters.get("PropertyValue")
            try:
                amount = int(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ODataError(f"The function '{name_token.text}' needs PropertyValue, a whole number.") from None
        return _Operand(
            "boolean",
            "Edm.Boolean",
            name_token.pos,
            test=_relative_column_test(column.key, len(self.scopes) - 1, relative_test(op, amount)),
        )

    def function_parameters(self, function: str) -> dict[str, Any]:
        self.expect("(", "'(' expected")
        parameters: dict[str, Any] = {}
        while not self.is_punct(")"):
            name = self.advance()
            if name.kind != "ident":
                raise _syntax(self.text, name.pos)
            self.expect("=", "'=' expected")
            if name.text in parameters:
                raise ODataError(f"The parameter '{name.text}' is given twice to '{function}'.")  # text unverified
            parameters[name.text] = self.parameter_value()
            if not self.is_punct(")"):
                self.expect(",", "')' or ',' expected")
        self.advance()
        return parameters

    def parameter_value(self) -> Any:
        token = self.advance()
        if token.kind in ("string", "json"):
            return token.value
        if token.kind in ("number", "guid", "datetime", "date"):
            return token.text
        if token.kind == "ident" and token.text == "null":
            return None
        if token.kind == "alias":
            text = self.alias_text(token)
            if text is None:
                return None
            nested = _Parser(text, self.scopes, {})
            value = nested.parameter_value()
            nested.finish()
            return value
        if token.kind == "punct" and token.text == "[":
            items: list[Any] = []
            while not self.is_punct("]"):
                item = self.advance()
                if item.kind in ("string", "json"):
                    items.append(item.value)
                elif item.kind in ("number", "guid", "datetime", "date"):
                    items.append(item.text)
                else:
                    raise _syntax(self.text, item.pos)
                if not self.is_punct("]"):
                    self.expect(",", "']' or ',' expected")
            self.advance()
            return items
        raise ODataError(f"Expression expected at position {token.pos} in '{self.text}'.")

    def function_column(self, function: str, parameters: dict[str, Any]) -> Column:
        name = parameters.get("PropertyName")
        if not isinstance(name, str):
            raise ODataError(f"The function '{function}' needs PropertyName, a column name in quotes.")
        entity = self.scopes[-1].entity
        column = logical_column(entity, name) or web_api_column(entity, name)
        if column is None:
            raise ODataError(
                f"'{entity.logical_name}' entity doesn't contain attribute with Name = '{name}' and "
                "NameMapping = 'Logical'.",
                code=NO_ATTRIBUTE,
            )
        return column

    @staticmethod
    def coerce(column: Column, value: Any, function: str) -> Any:
        if value is None:
            raise ODataError(f"The function '{function}' got a null value for '{column.name}'.")  # text unverified
        try:
            return coerce_text(column, str(value))
        except ValueError:
            raise ODataError(
                f"The value '{value}' given to '{function}' is not valid for '{column.name}' ({column.edm})."
            ) from None  # text unverified

    # -- typing and compilation -----------------------------------------------------------------

    @staticmethod
    def is_boolean(operand: _Operand) -> bool:
        return operand.kind == "boolean" or operand.edm == "Edm.Boolean"

    def logical(self, kind: str, left: _Operand, right: _Operand, combine: Callable[[Test, Test], Test]) -> _Operand:
        if not (self.is_boolean(left) and self.is_boolean(right)):
            raise _incompatible(left.edm, right.edm, kind)
        test = combine(self.as_test(left, ""), self.as_test(right, ""))
        return _Operand("boolean", "Edm.Boolean", left.pos, test=test)

    @staticmethod
    def as_test(operand: _Operand, message: str) -> Test:
        if operand.kind == "boolean" and operand.test is not None:
            return operand.test
        if operand.kind == "property" and operand.edm == "Edm.Boolean" and operand.column is not None:
            return _hopped(
                operand, _column_test(operand.column.key, operand.depth, compare_test("boolean", "eq", True))
            )
        if operand.kind == "literal" and operand.edm == "Edm.Boolean":
            return _constant(bool(operand.value))
        raise ODataError(message)

    def compare(self, op: str, left: _Operand, right: _Operand) -> _Operand:
        kind = _CMP_KIND[op]
        if left.kind == "literal" and right.kind != "literal":
            return self.compare_to_literal(_MIRROR[op], right, left, kind, mirrored=True)
        if right.kind == "literal" and left.kind != "literal":
            return self.compare_to_literal(op, left, right, kind, mirrored=False)
        if left.kind == "property" and right.kind == "property":
            assert left.column is not None and right.column is not None
            if left.hop is not None or right.hop is not None:
                raise ODataError("Comparing a related table's column with another column is not supported.")  # unv.
            if left.column.family != right.column.family:
                raise _incompatible(left.edm, right.edm, kind)
            return _Operand(
                "boolean",
                "Edm.Boolean",
                left.pos,
                test=_columns_test(op, left.column, left.depth, right.column, right.depth),
            )
        if left.kind == "literal" and right.kind == "literal":
            raise ODataError(
                f"A comparison needs a column on one side; found two literals at position {left.pos} in '{self.text}'."
            )  # text unverified
        raise ODataError(f"Comparing a boolean expression with '{op}' to a column is not supported.")  # text unverified

    def compare_to_literal(self, op: str, subject: _Operand, literal: _Operand, kind: str, mirrored: bool) -> _Operand:
        def incompatible() -> ODataError:
            return (
                _incompatible(literal.edm, subject.edm, kind)
                if mirrored
                else _incompatible(subject.edm, literal.edm, kind)
            )

        if subject.kind == "boolean":
            assert subject.test is not None
            if literal.edm != "Edm.Boolean":
                raise incompatible()
            if op not in ("eq", "ne"):
                raise ODataError(f"Ordering a boolean expression with '{op}' is not supported.")  # text unverified
            keep = (op == "eq") is bool(literal.value)
            return _Operand("boolean", "Edm.Boolean", subject.pos, test=subject.test if keep else _not(subject.test))
        assert subject.column is not None
        column = subject.column
        constant = None if literal.edm is None else self.literal_for(column, literal, incompatible)
        return _Operand(
            "boolean",
            "Edm.Boolean",
            subject.pos,
            test=_hopped(subject, _column_test(column.key, subject.depth, compare_test(column.family, op, constant))),
        )

    @staticmethod
    def literal_for(column: Column, literal: _Operand, incompatible: Callable[[], ODataError]) -> Any:
        family, edm, value = column.family, literal.edm, literal.value
        if family == "string" and edm == "Edm.String":
            return fold_text(value)
        if family == "boolean" and edm == "Edm.Boolean":
            return bool(value)
        if family == "number" and edm in ("Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double"):
            return value
        if family == "datetime" and edm == "Edm.DateTimeOffset":
            return value
        if family == "datetime" and edm == "Edm.Date":
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        if family == "guid" and edm == "Edm.Guid":
            return value
        if family == "guid" and edm == "Edm.String":
            # the documentation's own examples quote GUIDs, and the service accepts them
            try:
                return str(uuid.UUID(value.strip("{}")))
            except ValueError:
                raise incompatible() from None
        raise incompatible()


# -- closure builders (module level so each closure captures only what it needs) -----------------


def _constant(result: bool | None) -> Test:
    return lambda frames, ctx: result


def _column_test(key: str, depth: int, value_test: ValueTest) -> Test:
    if depth == 0:

        def root_test(frames: Frames, ctx: RowContext) -> bool | None:
            return value_test(frames[0].get(key))

        return root_test

    def test(frames: Frames, ctx: RowContext) -> bool | None:
        return value_test(frames[depth].get(key))

    return test


def _relative_column_test(key: str, depth: int, value_test: Callable[[Any, datetime], bool | None]) -> Test:
    def test(frames: Frames, ctx: RowContext) -> bool | None:
        value = frames[depth].get(key)
        return None if value is None else value_test(value, ctx.now())

    return test


def _columns_test(op: str, left: Column, left_depth: int, right: Column, right_depth: int) -> Test:
    norm = _NORMALISERS[left.family]
    cmp = _COMPARATORS[op]

    def test(frames: Frames, ctx: RowContext) -> bool | None:
        a = frames[left_depth].get(left.key)
        b = frames[right_depth].get(right.key)
        if a is None or b is None:
            return None
        return cmp(norm(a), norm(b))

    return test


def _and(left: Test, right: Test) -> Test:
    def test(frames: Frames, ctx: RowContext) -> bool | None:
        a = left(frames, ctx)
        if a is False:
            return False
        b = right(frames, ctx)
        if b is False:
            return False
        return True if a is True and b is True else None

    return test


def _or(left: Test, right: Test) -> Test:
    def test(frames: Frames, ctx: RowContext) -> bool | None:
        a = left(frames, ctx)
        if a is True:
            return True
        b = right(frames, ctx)
        if b is True:
            return True
        return False if a is False and b is False else None

    return test


def _not(inner: Test) -> Test:
    def test(frames: Frames, ctx: RowContext) -> bool | None:
        result = inner(frames, ctx)
        return None if result is None else not result

    return test


def _lookup_hop(key: str, target: EntityType, depth: int) -> Callable[[Test], Test]:
    """Evaluates a test against the row that the lookup ``key`` of the row at ``depth`` points at."""
    from emulators.dataverse.fetchxml import Link  # fetchxml imports this module

    primary = getattr(target, "primary_id", f"{target.logical_name}id")
    link = Link(target.logical_name, from_key=primary, to_key=key)

    def wrap(body: Test) -> Test:
        def test(frames: Frames, ctx: RowContext) -> bool | None:
            for related in ctx.related(frames[depth], link):
                return body((*frames, related), ctx)
            return None

        return test

    return wrap


def _hopped(operand: _Operand, test: Test) -> Test:
    return operand.hop(test) if operand.hop is not None else test


def _exists(navigation: str, depth: int) -> Test:
    def test(frames: Frames, ctx: RowContext) -> bool | None:
        return any(True for _ in ctx.related(frames[depth], navigation))

    return test


def _any(navigation: str, depth: int, body: Test) -> Test:
    def test(frames: Frames, ctx: RowContext) -> bool | None:
        return any(body((*frames, row), ctx) is True for row in ctx.related(frames[depth], navigation))

    return test


def _all(navigation: str, depth: int, body: Test) -> Test:
    def test(frames: Frames, ctx: RowContext) -> bool | None:
        return all(body((*frames, row), ctx) is True for row in ctx.related(frames[depth], navigation))

    return test


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def parse_filter(text: str, entity: EntityType, *, aliases: Mapping[str, str] | None = None) -> Predicate:
    """Compile a ``$filter`` into ``predicate(row, ctx) -> bool`` (True only when the filter is true,
    not when it is false or unknown). ``aliases`` maps ``@p1`` (or ``p1``) to the alias's raw value
    from the query string. Raises ODataError."""
    if not text.strip():
        raise ODataError(f"Expression expected at position {len(text)} in '{text}'.")
    test = _Parser(text, [_Scope(None, entity)], aliases or {}).parse_filter()

    def predicate(row: dict, ctx: RowContext) -> bool:
        return test((row,), ctx) is True

    return predicate


def _comma_items(text: str) -> list[list[_Token]]:
    tokens = _tokenize(text)
    items: list[list[_Token]] = [[]]
    for token in tokens[:-1]:
        if token.kind == "punct" and token.text == ",":
            items.append([])
        else:
            items[-1].append(token)
    for item, following in zip(items, [*(t for t in tokens if t.text == ","), tokens[-1]], strict=True):
        if not item:
            raise ODataError(f"Expression expected at position {following.pos} in '{text}'.")
    return items


def _resolve_alias(token: _Token, aliases: Mapping[str, str], text: str) -> str:
    if token.kind == "alias":
        value = aliases.get(token.text, aliases.get(token.text[1:]))
        if value is None:
            raise ODataError(f"The parameter alias '{token.text}' has no value in '{text}'.")  # text unverified
        return value.strip()
    if token.kind != "ident":
        raise _syntax(text, token.pos)
    return token.text


def parse_orderby(text: str, entity: EntityType, *, aliases: Mapping[str, str] | None = None) -> list[tuple[str, bool]]:
    """``$orderby`` as ``[(row key, descending), ...]``; lookups are ordered as ``_<name>_value``."""
    orders: list[tuple[str, bool]] = []
    for item in _comma_items(text):
        name = _resolve_alias(item[0], aliases or {}, text)
        if len(item) > 1 and item[1].kind == "punct" and item[1].text == "/":
            raise ODataError(f"Ordering by a related table's column ('{name}/...') is not supported.")  # unverified
        column = web_api_column(entity, name)
        if column is None:
            raise _no_property(name, entity)
        descending = False
        if len(item) >= 2:
            direction = item[1]
            if direction.kind != "ident" or direction.text not in ("asc", "desc"):
                raise _syntax(text, direction.pos)
            descending = direction.text == "desc"
        if len(item) > 2:
            raise _syntax(text, item[2].pos)
        orders.append((column.key, descending))
    return orders


def parse_select(text: str, entity: EntityType) -> list[str]:
    """``$select`` as row keys, in the order given, without duplicates; blank text selects nothing."""
    if not text.strip():
        return []
    keys: list[str] = []
    for item in _comma_items(text):
        if len(item) > 1:
            raise _syntax(text, item[1].pos)
        token = item[0]
        if token.kind != "ident":
            raise _syntax(text, token.pos)
        column = web_api_column(entity, token.text)
        if column is None:
            raise _no_property(token.text, entity)
        if column.key not in keys:
            keys.append(column.key)
    return keys


class _Descending:
    """Inverts the order of one sort column."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Descending) -> bool:
        return other.value < self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


_ISO_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _sortable(value: Any) -> tuple:
    # SQL Server puts nulls first in ascending order; the middle rank keeps unlike types comparable
    if value is None:
        return (0,)
    if isinstance(value, str):
        if value[:1].isdigit() and _ISO_MOMENT.match(value):
            return (2, to_utc(value))
        return (3, fold_text(value))
    if isinstance(value, datetime):
        return (2, to_utc(value))
    if isinstance(value, int | float | Decimal):
        return (1, value)
    return (4, str(value))


def sort_key(orderby: Iterable[tuple[str, bool]]) -> Callable[[dict], Any]:
    """A ``key=`` for ``sorted``: nulls first (last when descending), strings ignoring case and accents."""
    columns = list(orderby)

    def key(row: dict) -> tuple:
        return tuple(
            _Descending(_sortable(row.get(name))) if descending else _sortable(row.get(name))
            for name, descending in columns
        )

    return key

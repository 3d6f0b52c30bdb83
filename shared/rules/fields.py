"""Mapped fields (FIELD_MAP, rule 11): values converted both ways as each side stores them, and the merge per
record and field against a compact base (a digest of the agreed value, never the value).

A value is compared in its Mailchimp form: the Dynamics value converted as it would be written to the merge
field. The base holds a short digest of the value both sides last agreed on; a side whose digest differs from
it changed since. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from shared.settings import FieldMapping

FEATURE = "fields"
TEXT_LIMIT = 255  # characters a text merge field holds
DIGEST_CHARS = 10
ADDRESS_SUFFIX = "_composite"
# the address merge field's parts and the Dataverse address columns' suffixes
ADDRESS_PARTS: tuple[tuple[str, str], ...] = (
    ("addr1", "line1"),
    ("addr2", "line2"),
    ("city", "city"),
    ("state", "stateorprovince"),
    ("zip", "postalcode"),
    ("country", "country"),
)
ADDRESS_REQUIRED = ("addr1", "city", "state", "zip")  # what Mailchimp calls a complete address
MERGE_TYPES = ("text", "number", "address", "phone", "date", "url", "imageurl", "radio", "dropdown", "birthday", "zip")
DATE_FORMATS = ("MM/DD/YYYY", "DD/MM/YYYY")
BIRTHDAY_FORMATS = ("MM/DD", "DD/MM")


Direction = Literal["to-mailchimp", "to-dynamics", "both"]
Side = Literal["mailchimp", "dynamics"]


@dataclass(frozen=True)
class MergeDefinition:
    """A merge field as the audience defines it (the parts of it conversions need)."""

    tag: str
    type: str = "text"
    required: bool = False
    date_format: str = ""  # date: MM/DD/YYYY or DD/MM/YYYY; birthday: MM/DD or DD/MM
    size: int = TEXT_LIMIT

    def encode(self) -> list[Any]:
        return [self.tag, self.type, int(self.required), self.date_format, self.size]

    @classmethod
    def decode(cls, data: Sequence[Any]) -> MergeDefinition:
        return cls(str(data[0]), str(data[1]), bool(data[2]), str(data[3]), int(data[4]))

    @classmethod
    def of(cls, answer: Mapping[str, Any]) -> MergeDefinition:
        """From Mailchimp's merge field object."""
        options = answer.get("options") or {}
        size = options.get("size")
        return cls(
            str(answer["tag"]),
            str(answer.get("type") or "text"),
            bool(answer.get("required")),
            str(options.get("date_format") or ""),
            int(size) if isinstance(size, int) and 0 < size <= TEXT_LIMIT else TEXT_LIMIT,
        )


@dataclass(frozen=True)
class Converted:
    """A value converted for the other side, or why it cannot be (``refused``); ``cut`` says text was cut."""

    value: Any = None
    refused: str | None = None
    cut: bool = False


def is_address(column: str) -> bool:
    return column.endswith(ADDRESS_SUFFIX) and column[: -len(ADDRESS_SUFFIX)] in ("address1", "address2")


def columns_read(column: str) -> list[str]:
    """The columns a mapping's column stands for in a $select or a PATCH (an address: its parts)."""
    if is_address(column):
        stem = column[: -len(ADDRESS_SUFFIX)]
        return [f"{stem}_{part}" for _, part in ADDRESS_PARTS]
    return [column]


def record_value(column: str, row: Mapping[str, Any]) -> Any:
    """The mapped column's value in a Dataverse row (an address: its parts as a dict, None when all empty)."""
    if not is_address(column):
        return row.get(column)
    stem = column[: -len(ADDRESS_SUFFIX)]
    parts = {part: row.get(f"{stem}_{part}") for _, part in ADDRESS_PARTS}
    return parts if any(v not in (None, "") for v in parts.values()) else None


def kinds_of(mapping: FieldMapping) -> tuple[str, ...]:
    """The record kinds a mapping applies to: its own ``kinds``, or those that have the column."""
    return mapping.applies_to


def for_kind(field_map: Sequence[FieldMapping], kind: str) -> list[FieldMapping]:
    return [m for m in field_map if kind in kinds_of(m)]


def fitting_type(column: str, attribute_type: str | None) -> MergeDefinition:
    """The merge field type that fits a column (provision), from its Dataverse attribute type."""
    if is_address(column):
        return MergeDefinition("", "address")
    if column == "birthdate":
        return MergeDefinition("", "birthday", date_format="MM/DD")
    kind = (attribute_type or "String").lower()
    if kind in ("integer", "decimal", "double", "money", "bigint"):
        return MergeDefinition("", "number")
    if kind == "datetime":
        return MergeDefinition("", "date", date_format="MM/DD/YYYY")
    if column.startswith("telephone") or column in ("mobilephone", "fax"):
        return MergeDefinition("", "phone")
    if column == "websiteurl":
        return MergeDefinition("", "url")
    return MergeDefinition("", "text")


def compatible(definition: MergeDefinition, column: str, attribute_type: str | None) -> bool:
    """Whether an existing merge field can hold the column's values (check)."""
    wanted = fitting_type(column, attribute_type).type
    if wanted == definition.type:
        return True
    textual = ("text", "phone", "url", "imageurl", "zip", "radio", "dropdown")
    if wanted in ("text", "phone", "url"):
        return definition.type in textual
    if wanted == "date":
        return definition.type in ("date", "birthday", "text")
    if wanted == "number":
        return definition.type in ("number", "text")
    return False


# ---- conversions ---------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return " ".join(str(value).split()) if isinstance(value, str) and "\n" in value else str(value).strip()


def _parse_date(text: str, date_format: str) -> date | None:
    text = text.strip()
    iso = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?", text)
    try:
        if iso:
            return date(int(iso[1]), int(iso[2]), int(iso[3]))
        parts = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
        if parts:
            first, second, year = int(parts[1]), int(parts[2]), int(parts[3])
            month, day = (second, first) if date_format == "DD/MM/YYYY" else (first, second)
            return date(year, month, day)
    except ValueError:
        return None
    return None


def _format_date(value: date, date_format: str) -> str:
    if date_format == "DD/MM/YYYY":
        return f"{value.day:02d}/{value.month:02d}/{value.year:04d}"
    return f"{value.month:02d}/{value.day:02d}/{value.year:04d}"


def _parse_birthday(text: str, date_format: str) -> tuple[int, int] | None:
    parts = re.fullmatch(r"(\d{1,2})/(\d{1,2})", text.strip())
    if not parts:
        whole = _parse_date(text, "MM/DD/YYYY")
        return (whole.month, whole.day) if whole else None
    first, second = int(parts[1]), int(parts[2])
    month, day = (second, first) if date_format == "DD/MM" else (first, second)
    try:
        date(2000, month, day)  # a leap year: 02/29 is a birthday
    except ValueError:
        return None
    return month, day


def _format_birthday(month: int, day: int, date_format: str) -> str:
    return f"{day:02d}/{month:02d}" if date_format == "DD/MM" else f"{month:02d}/{day:02d}"


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    try:
        parsed = Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        return None
    if not parsed.is_finite():
        return None
    return int(parsed) if parsed == parsed.to_integral_value() else float(parsed)


def _address_to_mailchimp(value: Any, *, from_dynamics: bool = True) -> dict[str, str] | None:
    """The address merge field's object from the record's parts (or, normalised, from Mailchimp's object)."""
    if not isinstance(value, Mapping):
        return None
    parts = {tag: _text(value.get(part if from_dynamics else tag)) for tag, part in ADDRESS_PARTS}
    return parts if any(parts.values()) else None


def empty(value: Any) -> bool:
    return value is None or value == "" or value == {}


def to_mailchimp(definition: MergeDefinition, value: Any) -> Converted:
    """A Dynamics value in the merge field's form; empty values are ""."""
    kind = definition.type
    if kind == "address":
        parts = _address_to_mailchimp(value)
        if parts is None:
            return _empty(definition)
        missing = [tag for tag in ADDRESS_REQUIRED if not parts[tag]]
        if missing:
            return Converted(refused=f"incomplete-address ({', '.join(missing)} missing)")
        return Converted({k: v[:TEXT_LIMIT] for k, v in parts.items()})
    if empty(value) or (isinstance(value, str) and not value.strip()):
        return _empty(definition)
    if kind == "number":
        number = _number(value)
        return Converted(refused="not-a-number") if number is None else Converted(number)
    if kind == "date":
        found = value if isinstance(value, date) else _parse_date(_text(value), "")
        if isinstance(found, datetime):
            found = found.date()
        if found is None:
            return Converted(refused="not-a-date")
        return Converted(_format_date(found, definition.date_format))
    if kind == "birthday":
        found = value if isinstance(value, date) else _parse_date(_text(value), "")
        if found is None:
            return Converted(refused="not-a-date")
        return Converted(_format_birthday(found.month, found.day, definition.date_format))
    text = _text(value)
    if kind == "phone" and not any(c.isdigit() for c in text):
        return Converted(refused="not-a-phone-number")
    limit = min(definition.size, TEXT_LIMIT)
    if len(text) > limit:
        return Converted(text[:limit].rstrip(), cut=True)
    return Converted(text)


def _empty(definition: MergeDefinition) -> Converted:
    if definition.required:
        return Converted(refused="required-field-empty")
    return Converted("")


def mailchimp_form(definition: MergeDefinition, value: Any) -> Any:
    """A value Mailchimp holds, normalised the way ``to_mailchimp`` writes it (for comparing the two sides)."""
    kind = definition.type
    if kind == "address":
        parts = _address_to_mailchimp(value, from_dynamics=False)
        return parts if parts is not None else ""
    if empty(value):
        return ""
    if kind == "number":
        number = _number(value)
        return "" if number is None else number
    if kind == "date":
        found = _parse_date(_text(value), definition.date_format)
        return _format_date(found, definition.date_format) if found else _text(value)
    if kind == "birthday":
        pair = _parse_birthday(_text(value), definition.date_format)
        return _format_birthday(*pair, definition.date_format) if pair else _text(value)
    return _text(value)[: min(definition.size, TEXT_LIMIT)].rstrip()


def to_dynamics(definition: MergeDefinition, value: Any, current: Any = None) -> Converted:
    """A merge field's value as Dataverse stores it in the mapped column (None clears it).

    A birthday has no year: the record's own year is kept, or 2000 when it has none."""
    kind = definition.type
    if kind == "address":
        parts = _address_to_mailchimp(value, from_dynamics=False)
        if parts is None:
            return Converted({part: None for _, part in ADDRESS_PARTS})
        return Converted({part: (parts[tag] or None) for tag, part in ADDRESS_PARTS})
    if empty(value) or (isinstance(value, str) and not value.strip()):
        return Converted(None)
    if kind == "number":
        number = _number(value)
        return Converted(refused="not-a-number") if number is None else Converted(number)
    if kind == "date":
        found = _parse_date(_text(value), definition.date_format)
        return Converted(refused="not-a-date") if found is None else Converted(found.isoformat())
    if kind == "birthday":
        pair = _parse_birthday(_text(value), definition.date_format)
        if pair is None:
            return Converted(refused="not-a-date")
        year_of = _parse_date(_text(current), "") if not empty(current) else None
        year = year_of.year if year_of else 2000
        try:
            return Converted(date(year, *pair).isoformat())
        except ValueError:  # 02/29 in a year that has none
            return Converted(date(2000, *pair).isoformat())
    return Converted(_text(value))


def patch_columns(column: str, converted: Any) -> dict[str, Any]:
    """The PATCH body that writes a converted value into a mapped column (an address: its parts)."""
    if not is_address(column):
        return {column: converted}
    stem = column[: -len(ADDRESS_SUFFIX)]
    parts = converted if isinstance(converted, Mapping) else {}
    return {f"{stem}_{part}": parts.get(part) for _, part in ADDRESS_PARTS}


def digest(value: Any) -> str:
    """A short, stable digest of a value in its Mailchimp form: what a base keeps instead of the value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()[:DIGEST_CHARS]


# ---- the merge (rule 11) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Reading:
    """One side's value of a field in this unit, in the merge field's form; ``known`` False: not read (unchanged)."""

    value: Any = ""
    known: bool = False


@dataclass
class FieldDecision:
    """What to do with one field of one person."""

    write_mailchimp: bool = False  # write the Dynamics value to Mailchimp
    write_dynamics: bool = False  # write the Mailchimp value to Dynamics
    rule: str = "field-unchanged"
    agreed: str | None = None  # the base digest once the writes succeed (None: keep the old one)
    reasons: list[str] = field(default_factory=list)


def _allows(direction: Direction, to: Side) -> bool:
    return direction == "both" or direction == f"to-{to}"


def merge(
    direction: Direction,
    mailchimp: Reading,
    dynamics: Reading,
    base: str | None,
    *,
    member_changed: datetime | None,
    records_changed: datetime | None,
) -> FieldDecision:
    """Rule 11 for one field of one person.

    Only one side changed since the base: it wins where the direction allows. Both changed: the later wins
    (member ``last_changed`` against record ``modifiedon``; a tie keeps Dynamics). No base (first meeting): the
    Dynamics value goes to Mailchimp (``to-mailchimp``, ``both``) or the Mailchimp value to Dynamics
    (``to-dynamics``); an empty value never erases the other side's at a first meeting."""
    m = digest(mailchimp.value) if mailchimp.known else base
    d = digest(dynamics.value) if dynamics.known else base
    if m is None or d is None:  # first meeting with one side unread: nothing to compare yet
        return FieldDecision(rule="field-unread")
    if m == d:
        return FieldDecision(rule="field-agree", agreed=m)
    if base is None:
        m_empty, d_empty = empty(mailchimp.value), empty(dynamics.value)
        if direction == "to-dynamics" or (direction == "both" and d_empty and not m_empty):
            if m_empty and not d_empty:
                return FieldDecision(rule="field-first-meeting-kept", agreed=d)
            return FieldDecision(write_dynamics=True, rule="field-first-meeting", agreed=m)
        if d_empty and not m_empty:
            return FieldDecision(rule="field-first-meeting-kept", agreed=m)
        return FieldDecision(write_mailchimp=True, rule="field-first-meeting", agreed=d)
    m_changed, d_changed = m != base, d != base
    if d_changed and not m_changed:
        if _allows(direction, "mailchimp"):
            return FieldDecision(write_mailchimp=True, rule="field-dynamics-changed", agreed=d)
        return FieldDecision(rule="field-direction-holds")
    if m_changed and not d_changed:
        if _allows(direction, "dynamics"):
            return FieldDecision(write_dynamics=True, rule="field-mailchimp-changed", agreed=m)
        return FieldDecision(rule="field-direction-holds")
    mailchimp_later = (
        member_changed is not None and records_changed is not None and member_changed > records_changed
    ) or (records_changed is None and member_changed is not None)
    if mailchimp_later:
        if _allows(direction, "dynamics"):
            return FieldDecision(write_dynamics=True, rule="field-both-changed-mailchimp-later", agreed=m)
        return FieldDecision(rule="field-direction-holds")
    if _allows(direction, "mailchimp"):
        return FieldDecision(write_mailchimp=True, rule="field-both-changed-dynamics-later", agreed=d)
    return FieldDecision(rule="field-direction-holds")


def speaking_record(
    records: Sequence[tuple[str, datetime, bool, Mapping[str, Any] | None]], since: datetime | None = None
) -> int | None:
    """Which of a person's records speaks for them: the most recently modified active one that was read
    (record id, modifiedon, active, mapped values or None when not read); None when none was read.

    With ``since`` (when the sides last agreed, the sync's own record writes included), only a record modified
    after it speaks: a record that merely echoes the sync's own write holds what was agreed, so two records
    with different values do not take turns."""
    best: int | None = None
    for index, (record_id, modified, active, values) in enumerate(records):
        if values is None or not active or (since is not None and modified <= since):
            continue
        if best is None or (modified, record_id) > (records[best][1], records[best][0]):
            best = index
    return best

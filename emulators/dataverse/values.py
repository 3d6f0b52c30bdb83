"""Column values in and out: JSON bodies checked and converted like the real service, rows written
back as Web API JSON (UTC ``...Z`` datetimes, ``@odata.etag``, optional annotations)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from . import errors
from .odata import ODataError, parse_datetime
from .schema import (
    BIGINT,
    BOOLEAN,
    DATETIME,
    ENTITYNAME,
    GUID,
    INTEGER,
    LOOKUP,
    MEMO,
    PICKLIST,
    STATE,
    STATUS,
    STRING,
    Attribute,
    Table,
)

FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"

_GUID = re.compile(r"^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$")


def parse_guid(text: str) -> str | None:
    found = _GUID.match(text.strip())
    return found.group(1).lower() if found else None


def now_seconds(moment: datetime) -> datetime:
    """Stored datetimes keep whole seconds: the Web API returns them without fractions."""
    return moment.astimezone(UTC).replace(microsecond=0)


def format_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    return value


def etag(row: dict[str, Any]) -> str:
    return f'W/"{row["versionnumber"]}"'


def project(
    table: Table,
    row: dict[str, Any],
    select: list[str] | None,
    annotations: set[str] | None = None,
    omit_nulls: bool = False,
) -> dict[str, Any]:
    """A row as the Web API returns it: the selected columns (all when ``select`` is None) and the key."""
    out: dict[str, Any] = {"@odata.etag": etag(row)}
    keys = select if select is not None else table.row_keys()
    want_formatted = annotations is not None and (FORMATTED in annotations or "*" in annotations)
    want_lookup = annotations is not None and (LOOKUP_NAME in annotations or "*" in annotations)
    for key in keys:
        value = row.get(key)
        if value is None and omit_nulls:
            continue
        out[key] = encode(value)
        attribute = table.by_row_key(key)
        if attribute is None or value is None:
            continue
        if want_formatted:
            text = formatted(attribute, value)
            if text is not None:
                out[f"{key}@{FORMATTED}"] = text
        if want_lookup and attribute.type == LOOKUP:
            target = row.get(f"{key}@target") or (attribute.targets[0] if attribute.targets else None)
            if target:
                out[f"{key}@{LOOKUP_NAME}"] = target
    out[table.primary_id] = row[table.primary_id]
    return out


def formatted(attribute: Attribute, value: Any) -> str | None:
    if attribute.type in (BOOLEAN, PICKLIST, STATE, STATUS):
        return attribute.option_label(value)
    if attribute.type == DATETIME and isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%m/%d/%Y %I:%M %p").lstrip("0")
    if attribute.type in (INTEGER, BIGINT) and isinstance(value, int):
        return f"{value:,}"
    return None


def convert(table: Table, attribute: Attribute, value: Any) -> Any:
    """A JSON body value for ``attribute`` as stored, or the service's 400."""
    if value is None:
        return None
    kind = attribute.type
    name, entity = attribute.logical_name, table.logical_name
    if kind in (STRING, MEMO, ENTITYNAME):
        if not isinstance(value, str):
            raise errors.bad_literal(value, "Edm.String")
        if attribute.max_length is not None and len(value) > attribute.max_length:
            raise errors.too_long(name, entity, attribute.max_length)
        return value
    if kind == BOOLEAN:
        if not isinstance(value, bool):
            raise errors.bad_literal(value, "Edm.Boolean")
        return value
    if kind in (INTEGER, BIGINT, PICKLIST, STATE, STATUS):
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.bad_literal(value, "Edm.Int64" if kind == BIGINT else "Edm.Int32")
        if kind in (PICKLIST, STATE, STATUS) and attribute.options:
            allowed = [o.value for o in attribute.options]
            if value not in allowed:
                raise errors.out_of_range(value, name, entity, ",".join(str(v) for v in allowed))
        low, high = attribute.min_value, attribute.max_value
        if (low is not None and value < low) or (high is not None and value > high):
            raise errors.out_of_range(value, name, entity, f"{attribute.min_value} to {attribute.max_value}")
        return value
    if kind == DATETIME:
        if not isinstance(value, str):
            raise errors.bad_literal(value, "Edm.DateTimeOffset")
        try:
            return now_seconds(parse_datetime(value))
        except (ODataError, ValueError) as exc:
            raise errors.bad_literal(value, "Edm.DateTimeOffset") from exc
    if kind == GUID:
        guid = parse_guid(value) if isinstance(value, str) else None
        if guid is None:
            raise errors.bad_literal(value, "Edm.Guid")
        return guid
    raise errors.undeclared_property(name, entity)


def new_id() -> str:
    return str(uuid.uuid4())

"""Paging cookies in the real service's shape.

A Web API ``$skiptoken`` and a FetchXML ``@Microsoft.Dynamics.CRM.fetchxmlpagingcookie`` are both
``<cookie pagenumber="2" pagingcookie="..." istracking="False" />`` whose ``pagingcookie`` is the
inner cookie URL-encoded twice: ``<cookie page="1"><name last=".." first=".." /><contactid last="{ID}"
first="{ID}" /></cookie>``. The inner cookie carries the last row's sort values and key, so the next
page resumes with a bisect instead of a rescan, even when rows changed in between.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote
from xml.sax.saxutils import quoteattr

from .errors import ApiError
from .odata import ODataError, parse_datetime
from .schema import BIGINT, BOOLEAN, DATETIME, INTEGER, PICKLIST, STATE, STATUS, Table
from .values import format_datetime


@dataclass
class Cursor:
    page: int  # the page just served
    last_id: str | None
    first_id: str | None = None
    values: list[tuple[str, str | None]] = field(default_factory=list)  # last row's sort columns
    snapshot: int | None = None  # change tracking: the version the initial sync started at


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def cursor_for(
    page: int,
    primary_id: str,
    first: dict[str, Any],
    last: dict[str, Any],
    order_keys: list[str],
    snapshot: int | None = None,
) -> Cursor:
    return Cursor(page, last[primary_id], first[primary_id], [(k, _text(last.get(k))) for k in order_keys], snapshot)


def inner_cookie(cursor: Cursor, primary_id: str) -> str:
    snapshot = f" snapshot={quoteattr(str(cursor.snapshot))}" if cursor.snapshot is not None else ""
    parts = [f"<cookie page={quoteattr(str(cursor.page))}{snapshot}>"]
    for key, text in cursor.values:
        if text is None:
            parts.append(f'<{key} lastnull="1" />')
        else:
            parts.append(f"<{key} last={quoteattr(text)} />")
    if cursor.last_id is not None:
        parts.append(
            f"<{primary_id} last={quoteattr('{' + cursor.last_id.upper() + '}')} "
            f"first={quoteattr('{' + (cursor.first_id or cursor.last_id).upper() + '}')} />"
        )
    parts.append("</cookie>")
    return "".join(parts)


def outer_cookie(cursor: Cursor, primary_id: str) -> str:
    encoded = quote(quote(inner_cookie(cursor, primary_id), safe=""), safe="")
    tracking = "True" if cursor.snapshot is not None else "False"
    return f'<cookie pagenumber="{cursor.page + 1}" pagingcookie="{encoded}" istracking="{tracking}" />'


def _invalid(what: str) -> ApiError:
    return ApiError(400, "0x80040203", f"The {what} is not valid.")  # text unverified


def parse_inner(text: str, primary_id: str, what: str = "paging cookie") -> Cursor:
    try:
        root = ET.fromstring(text)  # noqa: S314 - a cookie this emulator wrote
    except ET.ParseError as exc:
        raise _invalid(what) from exc
    if root.tag != "cookie":
        raise _invalid(what)
    try:
        page = int(root.get("page", "1"))
        snapshot = int(root.attrib["snapshot"]) if "snapshot" in root.attrib else None
    except ValueError as exc:
        raise _invalid(what) from exc
    cursor = Cursor(page, None, snapshot=snapshot)
    for child in root:
        if child.tag == primary_id:
            cursor.last_id = (child.get("last") or "").strip("{}").lower() or None
            cursor.first_id = (child.get("first") or "").strip("{}").lower() or None
        else:
            cursor.values.append((child.tag, None if child.get("lastnull") == "1" else child.get("last", "")))
    return cursor


def parse_outer(text: str, primary_id: str, what: str = "$skiptoken") -> Cursor:
    try:
        root = ET.fromstring(text)  # noqa: S314 - a cookie this emulator wrote
    except ET.ParseError as exc:
        raise _invalid(what) from exc
    inner = root.get("pagingcookie")
    if root.tag != "cookie" or inner is None:
        raise _invalid(what)
    return parse_inner(unquote(unquote(inner)), primary_id, what)


def row_from_cursor(table: Table, cursor: Cursor) -> dict[str, Any]:
    """A stand-in row holding the cursor's sort values typed like the columns, for bisecting."""
    row: dict[str, Any] = {table.primary_id: cursor.last_id}
    for key, text in cursor.values:
        attribute = table.by_row_key(key)
        if text is None or attribute is None:
            row[key] = None if attribute is not None else text
            continue
        try:
            if attribute.type == DATETIME:
                row[key] = parse_datetime(text)
            elif attribute.type == BOOLEAN:
                row[key] = text == "1"
            elif attribute.type in (INTEGER, BIGINT, PICKLIST, STATE, STATUS):
                row[key] = int(text)
            else:
                row[key] = text
        except (ODataError, ValueError) as exc:
            raise _invalid("paging cookie") from exc
    return row

"""Time as the product stores and exchanges it: aware UTC datetimes, ISO text, epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: object) -> datetime | None:
    """ISO 8601 text (a trailing ``Z`` included) or a datetime, as an aware datetime; None for empty or
    unreadable values (naive values are taken as UTC)."""
    if isinstance(value, datetime):
        return utc(value)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return utc(moment)


def iso(moment: datetime | None) -> str:
    """ISO text in UTC, or "" for no time (the form Table Storage rows keep)."""
    return utc(moment).isoformat() if moment else ""


def iso_seconds(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``: whole seconds, the form OData filters and Dataverse columns take."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def from_epoch(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)

"""Mailchimp's timestamps: whole seconds in UTC, written as ``2024-05-01T12:00:00+00:00``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# The documented filter format (2015-10-21T15:41:36+00:00); up to six fractional digits are read, more
# digits or a missing offset make the value unreadable, and the real API then ignores the filter.
_FILTER = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:?\d{2})$")

# The four shapes the member endpoints accept for timestamp_opt / timestamp_signup.
_BODY_FORMATS = (
    re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"),
    re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})?$"),
    re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?[+-]\d{4}$"),
    re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [A-Z][A-Z0-9+\-]{1,4}$"),
)


def format_epoch(epoch: int | None) -> str:
    """'' for never, else the second in Mailchimp's ISO 8601 form."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def to_epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def parse_filter(value: str | None) -> float | None:
    """A query filter such as since_last_changed as epoch seconds; None when absent or unreadable."""
    if not value or not _FILTER.match(value):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_body_timestamp(value: str) -> int | None:
    """A timestamp sent in a member body, as epoch seconds; None when it matches none of the accepted shapes."""
    if not isinstance(value, str) or not any(shape.match(value) for shape in _BODY_FORMATS):
        return None
    text = value
    if re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [A-Z]", text):
        text = text[:19]  # a zone abbreviation: read as UTC, the emulator keeps no zone database
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def parse_admin_time(value: str | None, default: int) -> int:
    """An ``at`` given to an admin route (any ISO 8601 form, naive means UTC) as epoch seconds."""
    if value in (None, ""):
        return default
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())

"""NCRONTAB with seconds, as the Functions timer reads ``SYNC_SCHEDULE``: the next time a schedule fires.

Six fields: second minute hour day month day-of-week; each ``*``, a number, a range ``a-b``, a list
``a,b``, a step ``*/n`` or ``a-b/n``; months and days of the week also by three-letter name (``Jan``,
``Mon``); day of week 0-6 from Sunday (7 is Sunday too). As in NCrontab, a time matches when every field
matches: a day of the month and a day of the week both restricted means both must hold. Times are UTC,
the timer's time zone on Linux plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names counted from the lowest value)
FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)
HORIZON_DAYS = 366 * 5  # a schedule that never fires in five years (31 February) has no next run


class ScheduleError(ValueError):
    """The expression is not an NCRONTAB schedule this parser reads; the message names the field."""


@dataclass(frozen=True)
class Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def fires_on(self, day: date) -> bool:
        return day.month in self.months and day.day in self.days and (day.isoweekday() % 7) in self.weekdays

    def times(self) -> list[time]:
        return [time(h, m, s) for h in sorted(self.hours) for m in sorted(self.minutes) for s in sorted(self.seconds)]


def parse(expression: str) -> Schedule:
    parts = expression.split()
    if len(parts) != len(FIELDS):
        raise ScheduleError(
            f"expected six fields (second minute hour day month day-of-week), got {len(parts)}: {expression!r}"
        )
    values = [_field(text, *spec) for text, spec in zip(parts, FIELDS, strict=True)]
    weekdays = frozenset(0 if v == 7 else v for v in values[5])
    return Schedule(values[0], values[1], values[2], values[3], values[4], weekdays)


def next_run(expression: str, after: datetime) -> datetime | None:
    """The first time strictly after ``after`` at which the schedule fires (UTC, whole seconds)."""
    schedule = parse(expression)
    start = after.astimezone(UTC).replace(microsecond=0, tzinfo=None)
    times = schedule.times()
    for offset in range(HORIZON_DAYS):
        day = start.date() + timedelta(days=offset)
        if not schedule.fires_on(day):
            continue
        for moment in times:
            candidate = datetime.combine(day, moment)
            if candidate > start:
                return candidate.replace(tzinfo=UTC)
    return None


def _field(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    found: set[int] = set()
    for item in text.split(","):
        found |= _item(item, name, low, high, names)
    return frozenset(found)


def _item(item: str, name: str, low: int, high: int, names: tuple[str, ...]) -> set[int]:
    body, _, step_text = item.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) == 0:
            raise ScheduleError(f"the {name} field has a bad step {item!r}")
        step = int(step_text)
    if body == "*":
        first, last = low, high if name != "day of week" else 6
    elif "-" in body:
        first_text, _, last_text = body.partition("-")
        first, last = _value(first_text, name, low, high, names), _value(last_text, name, low, high, names)
    else:
        first = _value(body, name, low, high, names)
        last = high if step_text else first  # "5/15" means from 5 every 15, as in NCrontab
    if first > last:
        raise ScheduleError(f"the {name} field has a range that runs backwards: {item!r}")
    return set(range(first, last + 1, step))


def _value(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    lowered = text.lower()
    if names and lowered in names:
        return names.index(lowered) + low
    if not text.isdigit() or not low <= int(text) <= high:
        raise ScheduleError(f"the {name} field must hold values from {low} to {high}; got {text!r}")
    return int(text)

"""The next run of an NCRONTAB schedule with seconds, as the Functions timer fires it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.rules.schedule import ScheduleError, next_run


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */15 * * * *", "2026-12-02T14:07:31", "2026-12-02T14:15:00"),
        ("0 */15 * * * *", "2026-12-02T14:15:00", "2026-12-02T14:30:00"),  # strictly after
        ("0 */15 * * * *", "2026-12-02T23:50:00", "2026-12-03T00:00:00"),
        ("0 * * * * *", "2026-12-02T14:07:31", "2026-12-02T14:08:00"),
        ("*/10 * * * * *", "2026-12-02T14:07:31", "2026-12-02T14:07:40"),
        ("0 30 9 * * 1-5", "2026-12-04T10:00:00", "2026-12-07T09:30:00"),  # Friday after 9:30 -> Monday
        ("0 30 9 * * Mon-Fri", "2026-12-04T10:00:00", "2026-12-07T09:30:00"),
        ("0 0 0 1 Jan *", "2026-12-02T00:00:00", "2027-01-01T00:00:00"),
        ("0 0 12 29 2 *", "2026-03-01T00:00:00", "2028-02-29T12:00:00"),  # the next leap day
        ("0 0 0 13 * 5", "2026-01-01T00:00:00", "2026-02-13T00:00:00"),  # both day fields must hold (NCrontab)
        ("0 0 8 * * 0", "2026-12-02T00:00:00", "2026-12-06T08:00:00"),  # 0 is Sunday
        ("0 0 8 * * 7", "2026-12-02T00:00:00", "2026-12-06T08:00:00"),  # and so is 7
        ("5/20 0 0 * * *", "2026-12-02T00:00:06", "2026-12-02T00:00:25"),
        ("0 0,30 8-9 * * *", "2026-12-02T08:45:00", "2026-12-02T09:00:00"),
    ],
)
def test_next_run(expression, after, expected):
    assert next_run(expression, at(after)) == at(expected)


def test_a_schedule_that_never_fires_has_no_next_run():
    assert next_run("0 0 0 31 2 *", at("2026-01-01T00:00:00")) is None


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("0 */15 * * *", "six fields"),
        ("0 61 * * * *", "minute field"),
        ("0 */0 * * * *", "bad step"),
        ("0 10-5 * * * *", "backwards"),
        ("0 0 0 * Foo *", "month field"),
    ],
)
def test_a_bad_schedule_names_the_field(expression, named):
    with pytest.raises(ScheduleError, match=named):
        next_run(expression, at("2026-01-01T00:00:00"))

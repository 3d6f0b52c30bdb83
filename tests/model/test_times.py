"""Time as the product stores it: aware UTC, ISO text, whole epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.model.times import epoch, from_epoch, iso, iso_seconds, now, parse_time, utc

PARIS = timezone(timedelta(hours=1))
NOON = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_a_naive_time_is_taken_as_utc() -> None:
    assert utc(datetime(2025, 3, 1, 12, 0)) == NOON
    assert utc(datetime(2025, 3, 1, 12, 0)).tzinfo is UTC


def test_an_aware_time_is_moved_to_utc() -> None:
    moved = utc(datetime(2025, 3, 1, 13, 0, tzinfo=PARIS))

    assert moved == NOON and moved.tzinfo is UTC and moved.hour == 12


def test_now_is_aware_utc() -> None:
    assert now().tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-01T12:00:00Z", NOON),
        ("2025-03-01T12:00:00+00:00", NOON),
        ("2025-03-01T13:00:00+01:00", NOON),
        ("2025-03-01T12:00:00", NOON),
        (datetime(2025, 3, 1, 12, 0), NOON),
        (datetime(2025, 3, 1, 13, 0, tzinfo=PARIS), NOON),
        ("", None),
        (None, None),
        ("not a time", None),
    ],
)
def test_parse_time(value: object, expected: datetime | None) -> None:
    parsed = parse_time(value)

    assert parsed == expected
    assert parsed is None or parsed.tzinfo is UTC


def test_iso_is_utc_text_or_empty() -> None:
    assert iso(datetime(2025, 3, 1, 13, 0, tzinfo=PARIS)) == "2025-03-01T12:00:00+00:00"
    assert iso(None) == ""


def test_iso_seconds_drops_fractions_and_ends_in_z() -> None:
    assert iso_seconds(NOON + timedelta(microseconds=999_999)) == "2025-03-01T12:00:00Z"
    assert iso_seconds(datetime(2025, 3, 1, 13, 0, tzinfo=PARIS)) == "2025-03-01T12:00:00Z"


def test_epoch_round_trips_whole_seconds() -> None:
    assert epoch(NOON) == 1740830400
    assert from_epoch(1740830400) == NOON
    assert from_epoch(epoch(NOON + timedelta(milliseconds=700))) == NOON
    assert epoch(None) is None and from_epoch(None) is None

"""Watermark decisions over plain rows: parsing, proposing, reading from, advancing and committing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.rules.watermarks import (
    OVERLAP,
    Watermarks,
    committed,
    full_pass_due,
    later,
    on_run_closed,
    proposal,
    read_from,
)

STORED: dict[str, str | int] = {
    "mailchimp": "2026-11-30T08:20:00+00:00",
    "dataverse_records": "2026-11-30T08:19:30+00:00",
    "dataverse_members": "2026-11-30T08:19:30+00:00",
    "last_full": "2026-11-29T02:00:00+00:00",
    "map_rows": 2,
    "completed_runs": 6,
}
NEVER_SYNCED: dict[str, str | int] = {
    "mailchimp": "",
    "dataverse_records": "",
    "dataverse_members": "",
    "last_full": "",
    "map_rows": 0,
    "completed_runs": 0,
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_stored_row_reads_as_aware_times_and_counters() -> None:
    marks = Watermarks.from_entity(STORED)
    assert marks == Watermarks(
        at("2026-11-30T08:20:00+00:00"),
        at("2026-11-30T08:19:30+00:00"),
        at("2026-11-30T08:19:30+00:00"),
        at("2026-11-29T02:00:00+00:00"),
        2,
        6,
    )
    assert marks.mailchimp is not None and marks.mailchimp.tzinfo is not None


def test_no_row_or_empty_values_are_no_watermarks() -> None:
    assert Watermarks.from_entity(None) == Watermarks()
    assert Watermarks.from_entity({}) == Watermarks()
    assert Watermarks.from_entity(NEVER_SYNCED) == Watermarks()
    assert Watermarks.from_entity({"map_rows": None, "completed_runs": ""}) == Watermarks()


def test_a_row_round_trips_and_other_properties_are_ignored() -> None:
    assert Watermarks.from_entity(STORED).to_entity() == STORED
    assert Watermarks().to_entity() == NEVER_SYNCED
    row = {"PartitionKey": "link", "RowKey": "watermarks", "v": 1, **STORED}
    assert Watermarks.from_entity(row).to_entity() == STORED


def test_times_are_stored_in_utc() -> None:
    east = datetime(2026, 11, 30, 10, 20, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    assert Watermarks(mailchimp=east).to_entity()["mailchimp"] == "2026-11-30T10:20:00+00:00"


def test_counters_are_whole_numbers_from_text_too() -> None:
    assert Watermarks.from_entity({"map_rows": "7", "completed_runs": 3}).map_rows == 7
    with pytest.raises(TypeError):
        Watermarks.from_entity({"map_rows": [1]})


def test_a_full_pass_is_due_when_asked_never_made_or_older_than_the_period() -> None:
    every = timedelta(hours=24)
    current = Watermarks.from_entity(STORED)  # last full pass 2026-11-29T02:00
    assert not full_pass_due(current, at("2026-11-30T02:00:00+00:00"), every=every)  # exactly the period: not yet
    assert full_pass_due(current, at("2026-11-30T02:00:01+00:00"), every=every)
    assert full_pass_due(current, at("2026-11-29T03:00:00+00:00"), every=every, asked=True)
    assert full_pass_due(Watermarks.from_entity(NEVER_SYNCED), at("2026-11-29T03:00:00+00:00"), every=every)


def test_a_proposal_starts_as_a_copy_of_the_current_watermarks() -> None:
    current = Watermarks.from_entity(STORED)
    proposed = proposal(current)
    assert proposed == current
    proposed.mailchimp = at("2026-12-01T00:00:00+00:00")
    assert current.mailchimp == at("2026-11-30T08:20:00+00:00")


def test_a_side_is_read_from_its_watermark_less_the_overlap() -> None:
    mark = at("2026-11-30T08:20:00+00:00")
    assert timedelta(minutes=5) == OVERLAP
    assert read_from(mark, full=False) == at("2026-11-30T08:15:00+00:00")
    assert read_from(mark, full=True) is None  # a full pass reads everything
    assert read_from(None, full=False) is None  # a side never read: everything


def test_a_proposed_watermark_only_moves_forward() -> None:
    early, late = at("2026-11-30T08:00:00+00:00"), at("2026-11-30T09:00:00+00:00")
    assert later(None, early) == early
    assert later(early, late) == late
    assert later(late, early) == late
    assert later(late, late) == late


def test_committing_counts_one_more_completed_run() -> None:
    proposed = Watermarks.from_entity(STORED).to_entity()
    row = committed(Watermarks.from_entity({"completed_runs": 6}), proposed)
    assert row == {**STORED, "completed_runs": 7}
    # the proposal's own counter (as the run saw it when it began) is not what counts
    assert committed(Watermarks(), {**proposed, "completed_runs": 40})["completed_runs"] == 1


def test_a_closed_run_advances_the_watermarks_unless_it_was_a_dry_run() -> None:
    reads: list[str] = []

    def current() -> Watermarks:
        reads.append("watermarks")
        return Watermarks.from_entity(STORED)

    proposed: dict[str, str | int] = {**STORED, "mailchimp": "2026-12-01T00:00:00+00:00"}
    assert on_run_closed(proposed, dry_run=True, current=current) is None
    assert reads == []  # a dry run does not even read them
    row = on_run_closed(proposed, dry_run=False, current=current)
    assert row == {**proposed, "completed_runs": 7}
    assert reads == ["watermarks"]
    assert Watermarks.from_entity(row).mailchimp == at("2026-12-01T00:00:00+00:00")

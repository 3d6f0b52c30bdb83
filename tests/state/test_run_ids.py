"""Run ids sort newest first in SyncRuns, also for runs started within one second, and across an upgrade."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.state.ledger import new_run_id, run_started_at

T0 = datetime(2026, 12, 2, 14, 54, 18, 120_000, tzinfo=UTC)


def test_runs_of_one_second_sort_newest_first() -> None:
    ids = [new_run_id(T0 + timedelta(milliseconds=n)) for n in (0, 5, 400, 870)]
    assert sorted(ids) == list(reversed(ids))


def test_a_run_id_tells_when_its_run_started_to_the_millisecond() -> None:
    assert run_started_at(new_run_id(T0)) == T0


def test_ids_written_before_sort_after_every_newer_id_and_still_tell_their_start() -> None:
    earlier = f"{10**10 - int((T0 - timedelta(seconds=1)).timestamp()):010d}-a1b2c3"  # how earlier releases named runs
    assert run_started_at(earlier) == (T0 - timedelta(seconds=1)).replace(microsecond=0)
    assert sorted([earlier, new_run_id(T0)])[0] != earlier
    assert sorted([earlier, new_run_id(T0 + timedelta(days=30))])[-1] == earlier

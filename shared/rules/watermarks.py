"""Watermarks: where a link's last completed run got to on each side, as plain data and pure decisions.

The lifecycle of a run's watermarks, in order:

0. ``full_pass_due(current, now, ...)``: whether the run reads everything or only what changed;
1. ``proposal(current)``: the run starts from the link's watermarks;
2. ``read_from(mark, full=...)``: each side is read from its watermark less ``OVERLAP`` (everything on a full
   pass, or for a side never read);
3. ``later(proposed, seen)``: every change read may move the proposed watermark forward, never back;
4. ``on_run_closed(...)``: once every batch of the run is closed (done, or dead-lettered and kept as a retry
   for the next run), the proposed watermarks become the link's, unless the run was a dry run.

Nothing here reads or writes storage: the ledger (shared.state.ledger) stores what these functions return.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.model.times import iso, parse_time

OVERLAP = timedelta(minutes=5)  # re-read a little before each watermark; the merge makes re-reads harmless

WatermarkRow = dict[str, str | int]  # the stored form: ISO text ("" for none) and counters


@dataclass
class Watermarks:
    mailchimp: datetime | None = None
    dataverse_records: datetime | None = None
    dataverse_members: datetime | None = None
    last_full: datetime | None = None
    map_rows: int = 0
    completed_runs: int = 0

    def to_entity(self) -> WatermarkRow:
        return {
            "mailchimp": iso(self.mailchimp),
            "dataverse_records": iso(self.dataverse_records),
            "dataverse_members": iso(self.dataverse_members),
            "last_full": iso(self.last_full),
            "map_rows": self.map_rows,
            "completed_runs": self.completed_runs,
        }

    @classmethod
    def from_entity(cls, entity: Mapping[str, object] | None) -> Watermarks:
        """The watermarks of a stored row; no row (a link never synced) is no watermark at all."""
        if not entity:
            return cls()
        return cls(
            parse_time(entity.get("mailchimp")),
            parse_time(entity.get("dataverse_records")),
            parse_time(entity.get("dataverse_members")),
            parse_time(entity.get("last_full")),
            _count(entity.get("map_rows")),
            _count(entity.get("completed_runs")),
        )


def _count(value: object) -> int:
    if not value:
        return 0
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"a watermark counter holds {type(value).__name__}, not a number")


def full_pass_due(current: Watermarks, now: datetime, *, every: timedelta, asked: bool = False) -> bool:
    """Whether a run reads everything: when asked, when the link never had a full pass, or when the last one
    is older than ``every``."""
    return asked or current.last_full is None or now - current.last_full > every


def proposal(current: Watermarks) -> Watermarks:
    """What a run proposes before it has read anything: the link's watermarks as they are."""
    return replace(current)


def read_from(mark: datetime | None, *, full: bool) -> datetime | None:
    """Where a side's read starts: None (everything) on a full pass or for a side never read, else the
    watermark less the overlap."""
    return None if full or mark is None else mark - OVERLAP


def later(proposed: datetime | None, seen: datetime) -> datetime:
    """The proposed watermark once a change made at ``seen`` was read: it moves forward, never back."""
    return seen if proposed is None or seen > proposed else proposed


def committed(current: Watermarks, proposed: Mapping[str, str | int]) -> WatermarkRow:
    """The link's new watermark row: what the run proposed, counting one more completed run."""
    return {**proposed, "completed_runs": current.completed_runs + 1}


def on_run_closed(
    proposed: Mapping[str, str | int], *, dry_run: bool, current: Callable[[], Watermarks]
) -> WatermarkRow | None:
    """The last batch of a run closed: the watermark row to store, or None when the watermarks stay.

    A dry run changed nothing, so it never advances them. Dead-lettered batches do not hold them back: their
    groups are kept as retries and replayed by the next run. ``current`` is asked for the link's watermarks
    only when they advance (it reads storage).
    """
    if dry_run:
        return None
    return committed(current(), proposed)

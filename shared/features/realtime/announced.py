"""What the real-time path announced, per link, so that the scheduled scan can count what it missed.

Every member hash an event named, and every member hash the product itself wrote (whose echo no webhook
announces, by design), is kept in SyncState (partition ``<link>|announced``, one row per hash with the latest
time, on this app's clock). A scan shows each change it reads to a ChangeWatch; a change in the scan's window
(after the previous watermark, before the scan began less a grace for events still in flight) whose hash was not
announced at or after the change is "missed by webhooks". A change time is on the service's clock; it is moved
onto this app's clock by the difference of the two clocks as the scan began, so a skewed service clock shifts
nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from azure.data.tables import TransactionOperation

from shared.adapters.ports import StoragePort
from shared.adapters.storage import SYNC_STATE, upsert
from shared.model.times import now
from shared.rules.audit import AuditEntry
from shared.rules.watermarks import Watermarks
from shared.sync.pipeline import Item, Step, Unit

GRACE = timedelta(minutes=2)  # an event may still be on its way this long after the change
SLACK = timedelta(seconds=1.5)  # change times are whole seconds on the service's clock
KEEP = timedelta(days=3)  # rows older than this are removed by the next scan
EVENTS_BATCH = "events"  # the batch id of a unit the events handler reconciles
SIDES = ("mailchimp", "dataverse")


def partition(link: str) -> str:
    return f"{link}|announced"


class Announced:
    """The per-link rows of announced member hashes."""

    def __init__(self, storage: StoragePort, grace: timedelta = GRACE) -> None:
        self.storage = storage
        self.grace = grace

    def announce(self, link: str, hashes: Iterable[str], when: datetime | None = None) -> int:
        moment = when or now()
        rows = [upsert({"PartitionKey": partition(link), "RowKey": h, "t": moment}) for h in sorted(set(hashes))]
        return self.storage.write(SYNC_STATE, rows) if rows else 0

    def since(self, link: str, after: datetime) -> dict[str, datetime]:
        """Member hash -> its latest announcement, for those announced at or after ``after``."""
        rows = self.storage.query(
            SYNC_STATE, "PartitionKey eq @p and t ge @t", {"p": partition(link), "t": after}, select=["RowKey", "t"]
        )
        return {row["RowKey"]: row["t"] for row in rows}

    def prune(self, link: str) -> None:
        rows = self.storage.query(
            SYNC_STATE, "PartitionKey eq @p and t lt @t", {"p": partition(link), "t": now() - KEEP}, select=["RowKey"]
        )
        self.storage.write(
            SYNC_STATE,
            [(TransactionOperation.DELETE, {"PartitionKey": partition(link), "RowKey": r["RowKey"]}) for r in rows],
        )

    def watch(self, link: str, watermarks: Watermarks) -> MissedWatch:
        return MissedWatch(self, link, watermarks)


class MissedWatch:
    """One scan's view: implements the scan's ChangeWatch."""

    def __init__(self, announced: Announced, link: str, watermarks: Watermarks) -> None:
        self.announced = announced
        self.link = link
        self.began = now()
        self.lower = {"mailchimp": watermarks.mailchimp, "dataverse": watermarks.dataverse_records}
        self.seen: dict[str, dict[str, datetime]] = {side: {} for side in SIDES}

    def saw(self, side: str, member_hash: str, changed: datetime) -> None:
        lower = self.lower.get(side)
        if lower is None or changed <= lower - self.announced.grace:
            return  # the link's first run, or a change an earlier scan already counted
        seen = self.seen[side]
        if member_hash not in seen or seen[member_hash] < changed:
            seen[member_hash] = changed

    def missed(self, started: dict[str, datetime | None]) -> Counter[str]:
        """Per side, the changes read before ``started`` (the service's clock as the scan began) less the grace
        that no event announced."""
        found: Counter[str] = Counter()
        for side in SIDES:
            lower, upper = self.lower.get(side), started.get(side)
            if lower is None or upper is None or not self.seen[side]:
                continue
            offset = upper - self.began  # the service's clock less this app's, as the scan began
            grace = self.announced.grace
            window = max(upper - lower, timedelta()) + 2 * GRACE
            announced = self.announced.since(self.link, self.began - window)
            found[side] = sum(
                1
                for h, changed in self.seen[side].items()
                if changed <= upper - grace and (h not in announced or announced[h] < changed - offset - SLACK)
            )
        self.announced.prune(self.link)
        return found


class AnnouncingStep(Step):
    """Keeps the member hashes the product wrote (their echoes are no one's event) and marks event audits."""

    name = "realtime"

    def __init__(self, storage: StoragePort, enabled: bool) -> None:
        self.announced = Announced(storage)
        self.enabled = enabled

    def audits(self, unit: Unit, items: list[Item]) -> list[AuditEntry]:
        if self.enabled and not unit.dry_run:
            written = [
                item.group.member_hash
                for item in items
                if item.record_writes
                or item.email_writes
                or (item.decision is not None and item.decision.mailchimp is not None and not item.mailchimp_failed)
            ]
            self.announced.announce(unit.link.name, written)
        return []

    def audit_detail(self, unit: Unit, entry: AuditEntry, detail: str) -> str:
        if unit.batch_id != EVENTS_BATCH:
            return detail
        return f"{detail}; applied from a real-time event" if detail else "applied from a real-time event"

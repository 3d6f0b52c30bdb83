"""A cap on concurrent Mailchimp requests across every instance of the app: leased slots in Table Storage.

Mailchimp allows 10 simultaneous connections per user, whatever the number of processes, and the
Flex Consumption plan cannot be held to few enough instances to stay under that on its own. Each request
takes one of MAILCHIMP_MAX_CONNECTIONS slot rows in SyncState (an ETag-guarded claim with a lease longer
than Mailchimp's 120-second call limit) and gives it back when the answer arrives. A request that timed out
on our side keeps its slot until the lease ends, because Mailchimp may still be working on it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.adapters.storage import SYNC_STATE, Storage

PARTITION = "mailchimp-slots"
LEASE_SECONDS = 130


class SlotsBusy(RuntimeError):  # noqa: N818 - reads as the condition it names
    """Every slot stayed taken for longer than the wait allows; the message is retried later."""


@dataclass
class Lease:
    key: str
    holder: str
    abandoned: bool = False

    def abandon(self) -> None:
        """The request timed out on our side: Mailchimp may still be on it, so the slot runs out its lease."""
        self.abandoned = True


class ConnectionSlots:
    def __init__(
        self, storage: Storage, limit: int, *, max_wait_seconds: float = 300, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self.table = storage.table(SYNC_STATE)
        self.limit = limit
        self.max_wait_seconds = max_wait_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.operations = 0
        self.waited_seconds = 0.0

    @contextmanager
    def slot(self) -> Iterator[Lease]:
        lease = Lease(*self._acquire())
        try:
            yield lease
        finally:
            if not lease.abandoned:
                self._release(lease.key, lease.holder)

    def _acquire(self) -> tuple[str, str]:
        started = time.monotonic()
        pause = 0.05
        while True:
            now = datetime.now(UTC)
            self.operations += 1
            rows = {
                row["RowKey"]: row
                for row in self.table.query_entities("PartitionKey eq @p", parameters={"p": PARTITION})
            }
            order = [f"slot-{i:02d}" for i in range(self.limit)]
            random.shuffle(order)  # instances spread over the slots instead of racing for the first
            for key in order:
                holder = f"{time.monotonic_ns():x}{random.getrandbits(32):08x}"
                entity = {"PartitionKey": PARTITION, "RowKey": key, "holder": holder, "expires": now + self.lease}
                row = rows.get(key)
                self.operations += 1
                try:
                    if row is None:
                        self.table.create_entity(entity)
                    elif not row.get("holder") or row["expires"] <= now:
                        self.table.update_entity(
                            entity,
                            mode=UpdateMode.REPLACE,
                            etag=row.metadata["etag"],
                            match_condition=MatchConditions.IfNotModified,
                        )
                    else:
                        self.operations -= 1
                        continue
                except (ResourceExistsError, ResourceModifiedError):
                    continue  # another request took it first
                return key, holder
            waited = time.monotonic() - started
            if waited > self.max_wait_seconds:
                raise SlotsBusy(
                    f"all {self.limit} Mailchimp connection slots (MAILCHIMP_MAX_CONNECTIONS) stayed "
                    f"busy for {waited:.0f}s"
                )
            time.sleep(pause * random.uniform(0.5, 1.0))
            self.waited_seconds += pause
            pause = min(pause * 2, 2.0)

    def _release(self, key: str, holder: str) -> None:
        self.operations += 1
        try:
            row = self.table.get_entity(PARTITION, key)
        except ResourceNotFoundError:
            return
        if row.get("holder") != holder:
            return  # the lease ran out and someone else has the slot now
        row["holder"] = ""
        self.operations += 1
        with suppress(ResourceModifiedError, ResourceNotFoundError):
            self.table.update_entity(
                row, mode=UpdateMode.REPLACE, etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified
            )

"""Scoped opt-outs: membership rows a Dynamics user edited since the link's last full pass.

Before the scan of a full pass, one read of the audience's membership rows modified since the previous full pass
by anyone but the product's own user (``_modifiedby_value``) finds the edits. On every run it would cost a call
per link even when nothing changed; a full pass (FULL_RESYNC_HOURS, or ``sync --full``) is where it is paid.
Each edit is kept in SyncState (partition ``<link>|scoped``, one row per record) until the unit that meets the
record has applied it, and the record's member hash is handed to the scan so that a unit meets it even though
the record itself did not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from azure.data.tables import TransactionOperation

from shared.adapters.ports import DataversePort, StoragePort
from shared.adapters.storage import SYNC_STATE, upsert
from shared.features.memberships.schema import KINDS, Names
from shared.model.times import iso_seconds, parse_time
from shared.rules.memberships import STATUS_BY_CODE
from shared.rules.watermarks import OVERLAP, Watermarks
from shared.settings import Link
from shared.state.aliases import AliasIndex

USER_PARTITION, USER_ROW = "memberships", "user"


def partition(link: str) -> str:
    return f"{link}|scoped"


class ScopedEdits:
    def __init__(self, dataverse: DataversePort, storage: StoragePort, prefix: str) -> None:
        self.dataverse = dataverse
        self.storage = storage
        self.names = Names(prefix)
        self._user: str | None = None

    def collect(self, link: Link, watermarks: Watermarks) -> list[str]:
        """Reads the edits made since the last full pass and keeps them; returns the member hashes to meet now."""
        if watermarks.last_full is None:
            return []  # no rows yet: nothing a user could have edited
        since = watermarks.last_full - OVERLAP
        edits: dict[str, dict[str, Any]] = {}
        for row in self._edited(link.audience_id, since):
            status = STATUS_BY_CODE.get(int(row.get(self.names.column("status")) or 0))
            record_id = next((row[v] for v in map(self.names.lookup_value, KINDS) if row.get(v)), None)
            if status is None or record_id is None:
                continue
            edits[str(record_id)] = {"status": status, "at": str(row.get("modifiedon") or "")}
        if not edits:
            return []
        hashes = AliasIndex(self.storage, link.name, "records").get(edits)
        kept = {record_id: edit for record_id, edit in edits.items() if record_id in hashes}
        self.storage.write(
            SYNC_STATE,
            [
                upsert({"PartitionKey": partition(link.name), "RowKey": record_id, **edit})
                for record_id, edit in kept.items()
            ],
        )
        return sorted({hashes[record_id] for record_id in kept})

    def _edited(self, audience_id: str, since: datetime) -> Iterator[dict[str, Any]]:
        if self._user is None:
            self._user = self._own_user()
        select = [self.names.column("status"), "modifiedon", *map(self.names.lookup_value, KINDS)]
        quoted = audience_id.replace("'", "''")
        row_filter = f"{self.names.column('audienceid')} eq '{quoted}' and modifiedon ge {iso_seconds(since)}"
        if self._user:
            row_filter += f" and _modifiedby_value ne {self._user}"  # the product's own writes are no edit
        for page in self.dataverse.iter_pages(self.names.membership_set, select=select, filter=row_filter):
            yield from page

    def _own_user(self) -> str:
        """The product's own Dataverse user, asked once and kept in SyncState (it never changes for a deployment)."""
        kept = self.storage.get(SYNC_STATE, USER_PARTITION, USER_ROW) or {}
        if kept.get("user"):
            return str(kept["user"])
        user = str(self.dataverse.whoami().get("UserId") or "")
        if user:
            self.storage.write(SYNC_STATE, [upsert({"PartitionKey": USER_PARTITION, "RowKey": USER_ROW, "user": user})])
        return user

    def pending(self, link: str) -> dict[str, tuple[str, datetime | None]]:
        """The edits not applied yet: record id -> (status, when)."""
        return {
            str(row["RowKey"]): (str(row["status"]), parse_time(row.get("at")))
            for row in self.storage.query(SYNC_STATE, "PartitionKey eq @p", {"p": partition(link)})
        }

    def applied(self, link: str, record_ids: list[str]) -> None:
        if record_ids:
            self.storage.write(
                SYNC_STATE,
                [(TransactionOperation.DELETE, {"PartitionKey": partition(link), "RowKey": rid}) for rid in record_ids],
            )

"""Scoped opt-outs: membership rows a Dynamics user edited.

Two ways in, one keeping:

- in seconds, with the real-time path: ``webhooks register`` adds an asynchronous step on Update of the
  membership table filtered to its status (``table``/``columns`` below), and the sync-events handler hands
  the rows' ids to ``edited``: one read of those rows, the product's own writes left out
  (``_modifiedby_value``);
- as the safety net, before the scan of a full pass: one read of the audience's rows modified since the
  previous full pass by anyone but the product's own user (``collect``). On every run it would cost a call per
  link even when nothing changed; a full pass (FULL_RESYNC_HOURS, or ``sync --full``) is where it is paid.

Each edit is kept in SyncState (partition ``<link>|scoped``, one row per record) until the unit that meets the
record has applied it, and the record's member hash is handed on (to the scan, or to the events' unit) so that
a unit meets it even though the record itself did not change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
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
ROWS_PER_READ = 50  # row ids per read: the filter stays well inside the URL's length
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def partition(link: str) -> str:
    return f"{link}|scoped"


class ScopedEdits:
    def __init__(self, dataverse: DataversePort, storage: StoragePort, prefix: str, links: Sequence[Link]) -> None:
        self.dataverse = dataverse
        self.storage = storage
        self.names = Names(prefix)
        self.links = list(links)
        self._user: str | None = None

    # ---- in seconds: the real-time path's rows -----------------------------------------------------
    @property
    def table(self) -> str:
        """The table whose edits the real-time path watches."""
        return self.names.membership_table

    @property
    def columns(self) -> list[str]:
        """Its columns whose change is worth an event."""
        return [self.names.column("status")]

    def edited(self, row_ids: list[str], own_user: str) -> dict[str, list[str]]:
        """The rows the events name, read once (those ``own_user``, the product, wrote last left out) and kept as
        edits; returns per link the member hashes to meet now."""
        ids = sorted({row_id.lower() for row_id in row_ids if _GUID.fullmatch(row_id)})
        if not ids:
            return {}
        key = f"{self.names.membership_table}id"
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), ROWS_PER_READ):
            chosen = " or ".join(f"{key} eq {row_id}" for row_id in ids[start : start + ROWS_PER_READ])
            row_filter = f"({chosen})" + (f" and _modifiedby_value ne {own_user}" if own_user else "")
            for page in self.dataverse.iter_pages(self.names.membership_set, select=self._select(), filter=row_filter):
                rows.extend(page)
        audience = self.names.column("audienceid")
        met: dict[str, list[str]] = {}
        for link in self.links:
            mine = [row for row in rows if row.get(audience) == link.audience_id]
            if mine:
                met[link.name] = self._keep(link, mine)
        return {name: hashes for name, hashes in met.items() if hashes}

    # ---- the safety net: a full pass ------------------------------------------------------------
    def collect(self, link: Link, watermarks: Watermarks) -> list[str]:
        """Reads the edits made since the last full pass and keeps them; returns the member hashes to meet now."""
        if watermarks.last_full is None:
            return []  # no rows yet: nothing a user could have edited
        since = watermarks.last_full - OVERLAP
        return self._keep(link, list(self._edited(link.audience_id, since)))

    def _keep(self, link: Link, rows: list[dict[str, Any]]) -> list[str]:
        """Keeps the rows' edits until a unit applies them; returns the member hashes of their records."""
        edits: dict[str, dict[str, Any]] = {}
        for row in rows:
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
        select = self._select()
        quoted = audience_id.replace("'", "''")
        row_filter = f"{self.names.column('audienceid')} eq '{quoted}' and modifiedon ge {iso_seconds(since)}"
        if self._user:
            row_filter += f" and _modifiedby_value ne {self._user}"  # the product's own writes are no edit
        for page in self.dataverse.iter_pages(self.names.membership_set, select=select, filter=row_filter):
            yield from page

    def _select(self) -> list[str]:
        c = self.names.column
        return [c("status"), c("audienceid"), "modifiedon", *map(self.names.lookup_value, KINDS)]

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

"""Which tables take which Dataverse bulk message, as ``sdkmessagefilters`` answered, kept for a day.

Every run is a process of its own on the Functions host, and asking the service again in each would cost a call
per run for an answer that changes only when the environment is upgraded. The answer lives in SyncState,
partition ``dataverse|messages`` (a ``|`` no link name can contain), one row per message: the tables, and when
they were read. A row older than ``KEEP`` is asked again; a table that stops taking a message in between only
costs a refused chunk, which the bulk writer sends again as ``$batch``.
"""

from __future__ import annotations

import json
from datetime import timedelta

from shared.adapters.ports import StoragePort
from shared.adapters.storage import SYNC_STATE, upsert
from shared.model.times import iso_seconds, now, parse_time
from shared.state.versions import STATE_VERSION, VERSION, check_version

PARTITION = "dataverse|messages"
KEEP = timedelta(hours=24)


class MessageSupport:
    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage

    def known(self) -> dict[str, frozenset[str]]:
        """The answers read within ``KEEP``: message -> the tables that take it."""
        fresh_after = now() - KEEP
        known: dict[str, frozenset[str]] = {}
        for row in self.storage.query(SYNC_STATE, "PartitionKey eq @p", {"p": PARTITION}):
            check_version(SYNC_STATE, row)
            read = parse_time(row.get("read"))
            if read is None or read < fresh_after:
                continue
            try:
                tables = json.loads(str(row.get("tables") or "[]"))
            except ValueError:
                continue  # a damaged row is asked again
            if isinstance(tables, list):
                known[str(row["RowKey"])] = frozenset(str(table) for table in tables)
        return known

    def learned(self, message: str, tables: frozenset[str]) -> None:
        self.storage.write(
            SYNC_STATE,
            [
                upsert(
                    {
                        "PartitionKey": PARTITION,
                        "RowKey": message,
                        "tables": json.dumps(sorted(tables)),
                        "read": iso_seconds(now()),
                        VERSION: STATE_VERSION,
                    }
                )
            ],
        )

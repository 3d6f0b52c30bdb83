"""Packed shards: many small entries in one compressed entity, written by ETag-guarded read-merge-write.

The identity map (member hash -> base) and the alias indexes (record or contact id -> member hash) keep their
entries this way: a batch of neighbouring keys reads and writes a few dozen entities instead of hundreds. A
shard is an entity of the IdentityMap table: ``count`` entries, ``bases`` their JSON object zlib-compressed (the
name is historical: alias shards use it too) and ``v`` the format version.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableClient, TransactionOperation, UpdateMode

from shared.adapters.ports import StoragePort
from shared.adapters.storage import IDENTITY_MAP, TRANSACTION_LIMIT, Operation, submit
from shared.state.versions import STATE_VERSION, VERSION, check_version

SHARD_CHARS = 3  # characters of a key's hash naming its shard: 4,096 shards per partition

Change = TypeVar("Change")


@dataclass
class Shard:
    """One shard's entries (key -> JSON value) and the ETag it was read at (None: not stored yet)."""

    bases: dict[str, Any]
    etag: str | None


def decode_shard(entity: Mapping[str, object]) -> Shard:
    """A stored shard entity (as the table client returns it, or a plain dict) as its entries and ETag.

    Raises StoredFormatError for a shard written in a format this release cannot read."""
    check_version(IDENTITY_MAP, entity)
    payload = entity.get("bases")
    raw = getattr(payload, "value", payload)  # the client wraps binary values it did not type itself
    bases = json.loads(zlib.decompress(raw)) if isinstance(raw, bytes) and raw else {}
    metadata = getattr(entity, "metadata", None)  # only entities read from the table have one
    return Shard(bases, metadata.get("etag") if isinstance(metadata, dict) else None)


def shard_write(partition: str, key: str, shard: Shard) -> Operation:
    """The transaction operation storing a shard: insert when new, else replace if nobody changed it since."""
    entity: dict[str, Any] = {
        "PartitionKey": partition,
        "RowKey": key,
        VERSION: STATE_VERSION,
        "count": len(shard.bases),
        "bases": zlib.compress(json.dumps(shard.bases, separators=(",", ":")).encode(), 6),
    }
    if shard.etag is None:
        return (TransactionOperation.CREATE, entity)
    return (
        TransactionOperation.UPDATE,
        entity,
        {"mode": UpdateMode.REPLACE, "etag": shard.etag, "match_condition": MatchConditions.IfNotModified},
    )


class ShardedTable:
    """Shards in the IdentityMap table, with the storage calls made counted for the run's counters."""

    def __init__(self, storage: StoragePort) -> None:
        self.table: TableClient = storage.table(IDENTITY_MAP)
        self.operations = 0  # storage calls made

    def merge_write(
        self,
        partition: str,
        changes: Mapping[str, Change],
        *,
        read: Callable[[list[str]], Mapping[str, Shard]],
        merge: Callable[[Shard, Change], None],
        what: str,
        attempts: int,
    ) -> None:
        """Applies each shard's change to the stored shard: read, merge and write a transaction's worth of
        shards at a time, each write guarded by the ETag read; shards a concurrent writer changed meanwhile are
        read and merged again, up to ``attempts`` times.

        ``changes`` maps a shard key to its change; ``read`` returns the stored shards of some keys (a key
        missing, or with no ETag, is a shard not stored yet); ``merge`` applies a change to a shard in place.
        """
        pending = set(changes)
        for _ in range(attempts):
            failed: set[str] = set()
            keys = sorted(pending)
            for start in range(0, len(keys), TRANSACTION_LIMIT):
                chunk = keys[start : start + TRANSACTION_LIMIT]
                shards = read(chunk)
                operations = []
                for key in chunk:
                    shard = shards.get(key) or Shard({}, None)
                    merge(shard, changes[key])
                    operations.append(shard_write(partition, key, shard))
                self.operations += 1
                try:
                    submit(self.table, operations)
                except HttpResponseError:
                    failed |= set(chunk)  # a concurrent writer; re-read and merge again
            if not failed:
                return
            pending = failed
        raise RuntimeError(f"{what} kept changing under this batch; it will be retried")

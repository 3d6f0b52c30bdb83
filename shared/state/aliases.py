"""The alias indexes: where a record id (or a Mailchimp contact_id) pointed last, key -> member hash, per link.

Packed like the identity map's bases (shared.state.shards): one entity per 3-character prefix of the key's
digest, in partition ``<link>|<kind>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from shared.adapters.ports import StoragePort
from shared.state.shards import SHARD_CHARS, Shard, ShardedTable, decode_shard


def alias_digest(key: str) -> str:
    """Where an alias key lives: a digest, because record ids need not be random (imported or sequential ids
    share their first characters and would all fall into one shard)."""
    return hashlib.md5(key.lower().encode(), usedforsecurity=False).hexdigest()


def alias_bucket(key: str) -> str:
    return alias_digest(key)[:1]


class AliasIndex(ShardedTable):
    """Where a record id (or a Mailchimp contact_id) pointed last: key -> member hash, per link.

    The scan reads it to notice an address change (a record, or a Mailchimp contact, now under another hash);
    entries are written for keys never seen before, and by reconcile once it has applied a move.
    """

    def __init__(self, storage: StoragePort, link: str, kind: str) -> None:
        super().__init__(storage)
        self.partition = f"{link}|{kind}"  # table keys may not contain # / \ ?

    @staticmethod
    def shard(key: str) -> str:
        return f"s:{alias_digest(key)[:SHARD_CHARS]}"

    def read_range(self, first_shard: str, last_shard: str) -> dict[str, str]:
        self.operations += 1
        found: dict[str, str] = {}
        for row in self.table.query_entities(
            "PartitionKey eq @p and RowKey ge @a and RowKey le @b",
            parameters={"p": self.partition, "a": first_shard, "b": last_shard},
        ):
            found.update(decode_shard(row).bases)
        return found

    def update(self, entries: dict[str, str], attempts: int = 5) -> None:
        """Sets key -> hash for these keys, merging into the stored shards (ETag-guarded)."""
        by_shard: dict[str, dict[str, str]] = {}
        for key, member_hash in entries.items():
            by_shard.setdefault(self.shard(key), {})[key] = member_hash
        self.merge_write(
            self.partition,
            by_shard,
            read=self._read_chunk,
            merge=lambda shard, entries: shard.bases.update(entries),
            what=f"the {self.partition} index",
            attempts=attempts,
        )

    def remove(self, keys: list[str], attempts: int = 5) -> None:
        """Drops these keys from the stored shards (an erasure: the person no longer has aliases)."""
        by_shard: dict[str, list[str]] = {}
        for key in keys:
            by_shard.setdefault(self.shard(key), []).append(key)
        self.merge_write(
            self.partition,
            by_shard,
            read=self._read_chunk,
            merge=_drop_keys,
            what=f"the {self.partition} index",
            attempts=attempts,
        )

    def _read_chunk(self, chunk: list[str]) -> dict[str, Shard]:
        """The stored shards of these sorted, neighbouring keys: one range query."""
        self.operations += 1
        wanted = set(chunk)
        rows = self.table.query_entities(
            "PartitionKey eq @p and RowKey ge @a and RowKey le @b",
            parameters={"p": self.partition, "a": chunk[0], "b": chunk[-1]},
        )
        return {row["RowKey"]: decode_shard(row) for row in rows if row["RowKey"] in wanted}

    def get(self, keys: Iterable[str]) -> dict[str, str]:
        """The hash each of these keys points to, for the keys the index knows."""
        wanted = set(keys)
        found: dict[str, str] = {}
        for shard in sorted({self.shard(k) for k in wanted}):
            found.update({k: v for k, v in self.read_range(shard, shard).items() if k in wanted})
        return found


def _drop_keys(shard: Shard, keys: list[str]) -> None:
    for key in keys:
        shard.bases.pop(key, None)

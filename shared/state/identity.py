"""The identity map: per link and member hash, the records it stands for and the last agreed state (the base).

Bases are packed into one IdentityMap entity per link and hash prefix (4,096 shards), compressed:
a batch of 500 neighbouring hashes reads and writes a few dozen entities instead of 500, which
keeps storage work a small share of a run. Writes are ETag-guarded read-modify-writes.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TransactionOperation, UpdateMode

from shared.adapters.storage import IDENTITY_MAP, TRANSACTION_LIMIT, Storage, submit
from shared.model.snapshots import epoch, from_epoch

SHARD_CHARS = 3
POINT_READ_WORKERS = 8
SHARDS_AT_ONCE = TRANSACTION_LIMIT  # shards decoded at a time: memory follows this, not the size of the map


def shard_of(member_hash: str) -> str:
    return f"s:{member_hash[:SHARD_CHARS]}"


def alias_digest(key: str) -> str:
    """Where an alias key lives: a digest, because record ids need not be random (imported or sequential ids
    share their first characters and would all fall into one shard)."""
    return hashlib.md5(key.lower().encode(), usedforsecurity=False).hexdigest()


def alias_bucket(key: str) -> str:
    return alias_digest(key)[:1]


@dataclass
class BaseRow:
    """What the map knows about one member hash in one link."""

    email: str
    records: list[tuple[str, str]] = field(default_factory=list)  # (record id, kind) in the marketing list
    member_status: str | None = None  # last agreed Mailchimp status; None: not in the audience
    opted_out: bool = False  # last agreed Dynamics meaning
    member_last_changed: datetime | None = None
    records_modifiedon: datetime | None = None
    contact_id: str | None = None
    tagged: bool = False
    refused: str | None = None  # why Mailchimp last refused this address, if it did
    opted_out_records: list[str] = field(default_factory=list)  # which of the records were opted out
    skipped: list[list[str]] = field(default_factory=list)  # [record id, reason] refused last time, audited then
    # marketing preferences (shared.preferences): the agreed value per interest id, what Dynamics holds that
    # Mailchimp may not take yet (interest id -> [value, epoch of the change]), the newest preference row time
    # agreed, and the ids of rows a user made ("<record id>|<interest id>" -> row id)
    interests: dict[str, bool] = field(default_factory=dict)
    held: dict[str, list[Any]] = field(default_factory=dict)
    preferences_modifiedon: datetime | None = None
    preference_rows: dict[str, str] = field(default_factory=dict)

    def encode(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "e": self.email,
            "r": self.records,
            "s": self.member_status,
            "o": int(self.opted_out),
            "m": epoch(self.member_last_changed),
            "d": epoch(self.records_modifiedon),
        }
        for key, value in (
            ("c", self.contact_id),
            ("t", int(self.tagged)),
            ("x", self.refused),
            ("p", self.opted_out_records),
            ("k", self.skipped),
            ("i", {k: int(v) for k, v in sorted(self.interests.items())}),
            ("h", self.held),
            ("q", epoch(self.preferences_modifiedon)),
            ("w", self.preference_rows),
        ):
            if value:
                data[key] = value
        return data

    @classmethod
    def decode(cls, data: dict[str, Any]) -> BaseRow:
        return cls(
            data["e"],
            [tuple(r) for r in data.get("r", [])],
            data.get("s"),
            bool(data.get("o")),
            from_epoch(data.get("m")),
            from_epoch(data.get("d")),
            data.get("c"),
            bool(data.get("t")),
            data.get("x"),
            list(data.get("p", [])),
            [list(k) for k in data.get("k", [])],
            {k: bool(v) for k, v in data.get("i", {}).items()},
            dict(data.get("h", {})),
            from_epoch(data.get("q")),
            dict(data.get("w", {})),
        )


@dataclass
class _Shard:
    bases: dict[str, dict[str, Any]]
    etag: str | None


class IdentityMap:
    def __init__(self, storage: Storage) -> None:
        self.table = storage.table(IDENTITY_MAP)
        self.operations = 0  # storage calls made, for the run's counters

    def load(self, link: str, hashes: Iterable[str]) -> dict[str, BaseRow]:
        wanted = set(hashes)
        found: dict[str, BaseRow] = {}
        keys = sorted({shard_of(h) for h in wanted})
        for start in range(0, len(keys), SHARDS_AT_ONCE):  # a shard holds every base of its prefix: few at once
            for shard in self._read_shards(link, set(keys[start : start + SHARDS_AT_ONCE])).values():
                found.update({h: BaseRow.decode(data) for h, data in shard.bases.items() if h in wanted})
        return found

    def _read_shards(self, link: str, keys: set[str]) -> dict[str, _Shard]:
        if not keys:
            return {}
        first, last = min(keys), max(keys)
        span = int(last[2:], 16) - int(first[2:], 16) + 1
        if span <= 4 * len(keys):  # dense: one range query beats many point reads
            self.operations += 1
            rows = self.table.query_entities(
                "PartitionKey eq @p and RowKey ge @a and RowKey le @b", parameters={"p": link, "a": first, "b": last}
            )
            found = {row["RowKey"]: _decode_shard(row) for row in rows if row["RowKey"] in keys}
        else:
            self.operations += len(keys)
            with ThreadPoolExecutor(POINT_READ_WORKERS) as pool:
                pairs = pool.map(lambda key: (key, self._point(link, key)), sorted(keys))
            found = {key: shard for key, shard in pairs if shard is not None}
        return {key: found.get(key, _Shard({}, None)) for key in keys}

    def _point(self, link: str, key: str) -> _Shard | None:
        try:
            return _decode_shard(self.table.get_entity(link, key))
        except ResourceNotFoundError:
            return None

    def save(self, link: str, changes: dict[str, BaseRow | None], attempts: int = 5) -> None:
        """Writes changed bases (None deletes one), merging into the current shards; retries on ETag conflicts."""
        by_shard: dict[str, dict[str, BaseRow | None]] = {}
        for member_hash, row in changes.items():
            by_shard.setdefault(shard_of(member_hash), {})[member_hash] = row
        pending = set(by_shard)
        for _ in range(attempts):
            failed = set()
            keys = sorted(pending)
            for start in range(0, len(keys), TRANSACTION_LIMIT):  # read, merge and write a transaction's worth
                chunk = keys[start : start + TRANSACTION_LIMIT]
                shards = self._read_shards(link, set(chunk))
                operations = []
                for key in chunk:
                    shard = shards[key]
                    for member_hash, row in by_shard[key].items():
                        if row is None:
                            shard.bases.pop(member_hash, None)
                        else:
                            shard.bases[member_hash] = row.encode()
                    operations.append(_shard_write(link, key, shard))
                self.operations += 1
                try:
                    submit(self.table, operations)
                except HttpResponseError:
                    failed |= set(chunk)  # a concurrent writer; re-read and merge again
            if not failed:
                return
            pending = failed
        raise RuntimeError(f"identity map shards of link {link} kept changing under this batch; it will be retried")

    def iter_records(self, link: str) -> Iterable[tuple[str, list[str]]]:
        """(member hash, record ids) for every base of the link: the full pass's view of the list."""
        self.operations += 1
        for row in self.table.query_entities("PartitionKey eq @p", parameters={"p": link}):
            for member_hash, data in _decode_shard(row).bases.items():
                if data.get("r"):
                    yield member_hash, [r[0] for r in data["r"]]


def _shard_write(partition: str, key: str, shard: _Shard) -> tuple[Any, ...]:
    """The transaction operation storing a shard: insert when new, else replace if nobody changed it since."""
    entity = {
        "PartitionKey": partition,
        "RowKey": key,
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


def _decode_shard(entity: Any) -> _Shard:
    payload = entity.get("bases")
    raw = payload.value if hasattr(payload, "value") else payload
    bases = json.loads(zlib.decompress(raw)) if raw else {}
    return _Shard(bases, entity.metadata.get("etag") if hasattr(entity, "metadata") else None)


class AliasIndex:
    """Where a record id (or a Mailchimp contact_id) pointed last: key -> member hash, per link.

    Packed like the bases: one entity per 3-character key prefix, in partition ``<link>|<kind>``. The scan
    reads it to notice an address change (a record, or a Mailchimp contact, now under another hash);
    entries are written for keys never seen before, and by reconcile once it has applied a move.
    """

    def __init__(self, storage: Storage, link: str, kind: str) -> None:
        self.table = storage.table(IDENTITY_MAP)
        self.partition = f"{link}|{kind}"  # table keys may not contain # / \ ?
        self.operations = 0

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
            found.update(_decode_shard(row).bases)
        return found

    def update(self, entries: dict[str, str], attempts: int = 5) -> None:
        """Sets key -> hash for these keys, merging into the stored shards (ETag-guarded)."""
        by_shard: dict[str, dict[str, str]] = {}
        for key, member_hash in entries.items():
            by_shard.setdefault(self.shard(key), {})[key] = member_hash
        pending = set(by_shard)
        for _ in range(attempts):
            failed: set[str] = set()
            keys = sorted(pending)
            current: dict[str, _Shard] = {}
            for start in range(0, len(keys), TRANSACTION_LIMIT):
                chunk = keys[start : start + TRANSACTION_LIMIT]
                self.operations += 1
                rows = self.table.query_entities(
                    "PartitionKey eq @p and RowKey ge @a and RowKey le @b",
                    parameters={"p": self.partition, "a": chunk[0], "b": chunk[-1]},
                )
                current.update({row["RowKey"]: _decode_shard(row) for row in rows if row["RowKey"] in pending})
                operations = []
                for key in chunk:
                    shard = current.get(key, _Shard({}, None))
                    shard.bases.update(by_shard[key])
                    operations.append(_shard_write(self.partition, key, shard))
                self.operations += 1
                try:
                    submit(self.table, operations)
                except HttpResponseError:
                    failed |= set(chunk)
            if not failed:
                return
            pending = failed
        raise RuntimeError(f"the {self.partition} index kept changing under this batch; it will be retried")

    def get(self, keys: Iterable[str]) -> dict[str, str]:
        """The hash each of these keys points to, for the keys the index knows."""
        wanted = set(keys)
        found: dict[str, str] = {}
        for shard in sorted({self.shard(k) for k in wanted}):
            found.update({k: v for k, v in self.read_range(shard, shard).items() if k in wanted})
        return found

"""The identity map: per link and member hash, the records it stands for and the last agreed state (the base).

Bases are packed into one IdentityMap entity per link and hash prefix (4,096 shards), compressed:
a batch of 500 neighbouring hashes reads and writes a few dozen entities instead of 500, which
keeps storage work a small share of a run. Writes are ETag-guarded read-merge-writes (shared.state.shards).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.storage import TRANSACTION_LIMIT
from shared.model.times import epoch, from_epoch
from shared.state.shards import SHARD_CHARS, Shard, ShardedTable, decode_shard

POINT_READ_WORKERS = 8
SHARDS_AT_ONCE = TRANSACTION_LIMIT  # shards decoded at a time: memory follows this, not the size of the map

Records = list[tuple[str, str]]  # (record id, kind)


def shard_of(member_hash: str) -> str:
    return f"s:{member_hash[:SHARD_CHARS]}"


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
    # mapped fields (shared.features.fields): per merge tag, a digest of the value both sides agreed on (never the
    # value), with "!<digest>" after it for a value a side refused, so that it is not sent again
    fields: dict[str, str] = field(default_factory=dict)

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
            ("f", self.fields),
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
            dict(data.get("f", {})),
        )


class IdentityMap(ShardedTable):
    def load(self, link: str, hashes: Iterable[str]) -> dict[str, BaseRow]:
        wanted = set(hashes)
        found: dict[str, BaseRow] = {}
        keys = sorted({shard_of(h) for h in wanted})
        for start in range(0, len(keys), SHARDS_AT_ONCE):  # a shard holds every base of its prefix: few at once
            for shard in self._read_shards(link, set(keys[start : start + SHARDS_AT_ONCE])).values():
                found.update({h: BaseRow.decode(data) for h, data in shard.bases.items() if h in wanted})
        return found

    def _read_shards(self, link: str, keys: set[str]) -> dict[str, Shard]:
        if not keys:
            return {}
        first, last = min(keys), max(keys)
        span = int(last[2:], 16) - int(first[2:], 16) + 1
        if span <= 4 * len(keys):  # dense: one range query beats many point reads
            self.operations += 1
            rows = self.table.query_entities(
                "PartitionKey eq @p and RowKey ge @a and RowKey le @b", parameters={"p": link, "a": first, "b": last}
            )
            found = {row["RowKey"]: decode_shard(row) for row in rows if row["RowKey"] in keys}
        else:
            self.operations += len(keys)
            with ThreadPoolExecutor(POINT_READ_WORKERS) as pool:
                pairs = pool.map(lambda key: (key, self._point(link, key)), sorted(keys))
            found = {key: shard for key, shard in pairs if shard is not None}
        return {key: found.get(key, Shard({}, None)) for key in keys}

    def _point(self, link: str, key: str) -> Shard | None:
        try:
            return decode_shard(self.table.get_entity(link, key))
        except ResourceNotFoundError:
            return None

    def save(self, link: str, changes: dict[str, BaseRow | None], attempts: int = 5) -> None:
        """Writes changed bases (None deletes one), merging into the current shards; retries on ETag conflicts."""
        by_shard: dict[str, dict[str, BaseRow | None]] = {}
        for member_hash, row in changes.items():
            by_shard.setdefault(shard_of(member_hash), {})[member_hash] = row
        self.merge_write(
            link,
            by_shard,
            read=lambda chunk: self._read_shards(link, set(chunk)),
            merge=_merge_bases,
            what=f"identity map shards of link {link}",
            attempts=attempts,
        )

    def iter_records(self, link: str) -> Iterable[tuple[str, list[str]]]:
        """(member hash, record ids) for every base of the link: the full pass's view of the list."""
        for member_hash, records in self.link_records(link):
            yield member_hash, [record_id for record_id, _ in records]

    def link_records(self, link: str) -> Iterator[tuple[str, Records]]:
        """(member hash, [(record id, kind)]) for every base of the link that stands for records, read shard by
        shard in one partition query: memory holds one shard's bases at a time."""
        self.operations += 1
        for row in self.table.query_entities("PartitionKey eq @p", parameters={"p": link}):
            for member_hash, data in decode_shard(row).bases.items():
                if data.get("r"):
                    yield member_hash, [(record_id, kind) for record_id, kind in data["r"]]


def _merge_bases(shard: Shard, changes: dict[str, BaseRow | None]) -> None:
    for member_hash, row in changes.items():
        if row is None:
            shard.bases.pop(member_hash, None)
        else:
            shard.bases[member_hash] = row.encode()

"""The ConsentAudit table: one row per change written to either side (or refused), named by member hash.

Row properties are a contract other tools read (design.md, "Storage names"). Keys: a link's day is spread over
``SPREAD`` partitions ``link|yyyymmdd|<first hex digit of the member hash>`` (a record refused before it had a
member hash goes by a checksum of its record id), so a large run's rows and concurrent writers land in 16
partitions instead of one. Row keys ``run|member hash|n`` start with the run id, which starts with the run's start
time: each partition lists in time order, and a unit decided twice writes the same rows again rather than new ones.

A link's day is one range of partition keys, ``link|yyyymmdd`` up to ``link|yyyymmdd}``: it holds the 16 spread
partitions and the single ``link|yyyymmdd`` partition that earlier releases wrote, so the consent history written
before the spread stays readable through the same calls (``day``, ``member_rows``).
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from shared.adapters.ports import StoragePort
from shared.adapters.storage import CONSENT_AUDIT, upsert
from shared.model.times import iso, now
from shared.rules.audit import AuditEntry

SPREAD_CHARS = 1  # hex digits of the member hash naming a row's partition: 16 partitions per link and day
SPREAD = 16**SPREAD_CHARS
DAY_END = "}"  # sorts after "|", so "link|yyyymmdd" .. "link|yyyymmdd}" holds that day's partitions and no other


def day_partition(link: str, day: date | datetime) -> str:
    """The single partition of a link's day as earlier releases wrote it (and the prefix of the spread ones)."""
    return f"{link}|{day:%Y%m%d}"


def partition(link: str, day: date | datetime, member_hash: str) -> str:
    """The partition of a member's rows on one day."""
    return f"{day_partition(link, day)}|{member_hash[:SPREAD_CHARS]}"


def record_partition(link: str, day: date | datetime, record_id: str) -> str:
    """The partition of a row about a record that has no member hash (no usable address)."""
    spread = zlib.crc32(record_id.encode()) % SPREAD
    return f"{day_partition(link, day)}|{spread:0{SPREAD_CHARS}x}"


class AuditLog:
    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage

    def write(self, link: str, run_id: str, entries: list[AuditEntry], *, when: datetime | None = None) -> int:
        """Writes one row per entry; returns the storage calls it took."""
        if not entries:
            return 0
        when = when or now()
        seen: Counter[str] = Counter()
        rows = []
        for entry in entries:
            seen[entry.member_hash] += 1
            rows.append(
                upsert(
                    {
                        "PartitionKey": (
                            partition(link, when, entry.member_hash)
                            if entry.member_hash
                            else record_partition(link, when, ",".join(entry.record_ids))
                        ),
                        "RowKey": f"{run_id}|{entry.member_hash or '-'}|{seen[entry.member_hash]}",
                        "when": when,
                        "link": link,
                        "run_id": run_id,
                        "member_hash": entry.member_hash,
                        "record_ids": json.dumps(entry.record_ids),
                        "side": entry.side,
                        "rule": entry.rule,
                        "mailchimp_old": entry.mailchimp_old or "",
                        "mailchimp_new": entry.mailchimp_new or "",
                        "dynamics_old": entry.dynamics_old or "",
                        "dynamics_new": entry.dynamics_new or "",
                        "skipped": json.dumps(entry.skipped) if entry.skipped else "",
                        "detail": entry.detail,
                        "member_last_changed": iso(entry.member_last_changed),
                        "records_modifiedon": iso(entry.records_modifiedon),
                    }
                )
            )
        return self.storage.write(CONSENT_AUDIT, rows)

    def write_skips(self, link: str, run_id: str, skips: list[tuple[str, str]], when: datetime) -> None:
        """Records the scan could not use (no usable address): one row per record, reason and day, so a
        record re-read by later runs of the day is not audited again."""
        rows = [
            upsert(
                {
                    "PartitionKey": record_partition(link, when, record_id),
                    "RowKey": f"skip|{record_id}|{reason}",
                    "when": when,
                    "link": link,
                    "run_id": run_id,
                    "member_hash": "",
                    "record_ids": json.dumps([record_id]),
                    "side": "none",
                    "rule": "skipped",
                    "skipped": json.dumps([[record_id, reason]]),
                    "detail": f"record {record_id} has no usable email address ({reason})",
                }
            )
            for record_id, reason in skips
        ]
        self.storage.write(CONSENT_AUDIT, rows)

    def day(self, link: str, day: date | datetime) -> list[dict[str, Any]]:
        """Every row of a link's day, in the order they were written (both key layouts): one range query."""
        first = day_partition(link, day)
        rows = self.storage.query(
            CONSENT_AUDIT, "PartitionKey ge @first and PartitionKey lt @end", {"first": first, "end": first + DAY_END}
        )
        return sorted((dict(row) for row in rows), key=lambda row: (row["when"], row["RowKey"]))

    def history(self, member_hash: str) -> list[dict[str, Any]]:
        """Every row of one member hash over all links and days, oldest first (whatever the partitioning)."""
        rows = self.storage.query(CONSENT_AUDIT, "member_hash eq @h", {"h": member_hash})
        return sorted((dict(row) for row in rows), key=lambda row: (row["when"], row["RowKey"]))

    def member_rows(self, link: str, day: date | datetime, run_id: str, member_hash: str) -> Iterator[dict[str, Any]]:
        """A member's rows of one run written on one day, from its spread partition and the earlier single one."""
        keys = {"a": f"{run_id}|{member_hash}|", "b": f"{run_id}|{member_hash}|~"}
        for key in (partition(link, day, member_hash), day_partition(link, day)):
            yield from self.storage.query(
                CONSENT_AUDIT, "PartitionKey eq @p and RowKey ge @a and RowKey lt @b", {"p": key, **keys}
            )

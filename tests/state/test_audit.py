"""ConsentAudit: a link's day spreads over partitions by member hash and still lists in time order, old rows too."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from shared.adapters.storage import CONSENT_AUDIT, Storage, upsert
from shared.rules.addresses import member_hash as address_hash
from shared.rules.audit import AuditEntry
from shared.settings import StorageSettings
from shared.state.audit import SPREAD, AuditLog, day_partition, partition, record_partition

DAY = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def member_hash(n: int) -> str:
    return address_hash(f"person{n}@example.org")


def entry(n: int) -> AuditEntry:
    return AuditEntry(member_hash(n), "rule-2", [f"record-{n}"], dynamics_old="false", dynamics_new="true")


def test_a_50000_row_day_spreads_over_16_partitions_of_similar_size() -> None:
    rows = Counter(partition("newsletter", DAY, member_hash(n)) for n in range(50_000))
    assert len(rows) == SPREAD == 16
    assert set(rows) == {f"newsletter|20261122|{digit:x}" for digit in range(16)}
    assert max(rows.values()) < 50_000 / 16 * 1.1  # none holds much more than its share (about 3,125)
    skips = Counter(record_partition("newsletter", DAY, f"00000000-0000-4000-8000-{n:012d}") for n in range(5_000))
    assert set(skips) <= set(rows) and len(skips) == 16  # sequential record ids spread too


def test_a_link_day_lists_in_time_order_across_partitions_and_key_layouts(azurite) -> None:
    storage = Storage(StorageSettings(connection_string=azurite))
    storage.ensure()
    link = f"audit-{uuid.uuid4().hex[:8]}"
    log = AuditLog(storage)
    # A row in the layout earlier releases wrote (one partition per link and day): the consent history before.
    legacy = {
        "PartitionKey": day_partition(link, DAY),
        "RowKey": f"2026-11-22T07:45:00Z-aa01|{member_hash(0)}|1",
        "when": DAY - timedelta(minutes=15),
        "link": link,
        "run_id": "2026-11-22T07:45:00Z-aa01",
        "member_hash": member_hash(0),
        "record_ids": json.dumps(["record-0"]),
        "side": "dynamics",
        "rule": "rule-2",
    }
    storage.write(CONSENT_AUDIT, [upsert(legacy)])
    first_run, second_run = "2026-11-22T08:00:00Z-bb02", "2026-11-22T08:15:00Z-cc03"
    log.write(link, first_run, [entry(n) for n in range(40)], when=DAY)
    log.write(link, second_run, [entry(n) for n in range(40, 60)], when=DAY + timedelta(minutes=15))
    log.write_skips(link, second_run, [("record-x", "invalid-address")], DAY + timedelta(minutes=16))
    # The next day and another link sort right beside this day's range and must stay out of it.
    log.write(link, "2026-11-23T00:00:00Z-dd04", [entry(99)], when=DAY + timedelta(days=1))
    log.write(f"{link}x", first_run, [entry(98)], when=DAY)

    rows = log.day(link, DAY)
    assert len(rows) == 1 + 40 + 20 + 1
    assert [row["run_id"] for row in rows] == [legacy["run_id"]] + [first_run] * 40 + [second_run] * 21
    assert [row["when"] for row in rows] == sorted(row["when"] for row in rows)
    spread = {row["PartitionKey"] for row in rows if row["PartitionKey"] != legacy["PartitionKey"]}
    assert len(spread) > 10 and all(key.startswith(f"{link}|20261122|") for key in spread)
    assert {row["member_hash"] for row in rows[1:41]} == {member_hash(n) for n in range(40)}
    # Each row sits in its member's partition.
    assert all(row["PartitionKey"] == partition(link, DAY, row["member_hash"]) for row in rows[1:61])


def test_a_member_rows_of_a_run_are_found_in_either_layout(azurite) -> None:
    storage = Storage(StorageSettings(connection_string=azurite))
    storage.ensure()
    link = f"audit-{uuid.uuid4().hex[:8]}"
    log = AuditLog(storage)
    run_id = "2026-11-22T08:00:00Z-bb02"
    log.write(link, run_id, [entry(1), entry(1), entry(2)], when=DAY)
    old = {"PartitionKey": day_partition(link, DAY), "RowKey": f"{run_id}|{member_hash(3)}|1", "rule": "rule-3"}
    storage.write(CONSENT_AUDIT, [upsert(old)])
    assert [row["RowKey"] for row in log.member_rows(link, DAY, run_id, member_hash(1))] == [
        f"{run_id}|{member_hash(1)}|1",
        f"{run_id}|{member_hash(1)}|2",
    ]
    assert [row["rule"] for row in log.member_rows(link, DAY, run_id, member_hash(3))] == ["rule-3"]
    assert list(log.member_rows(link, DAY, "2026-11-22T09:00:00Z-ee05", member_hash(1))) == []

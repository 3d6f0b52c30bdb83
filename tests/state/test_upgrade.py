"""Upgrade in place: state written before stored formats carried a version reads the same, and stays readable
once this version writes over it. A version this release does not know is refused, naming the row.

The raw entities below are exactly what the release before versions wrote (its identity map, alias index and
ledger run once against Azurite and the stored entities copied here).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from dataclasses import replace
from datetime import datetime

import pytest

from shared.adapters.storage import IDENTITY_MAP, SYNC_RUNS, SYNC_STATE, Storage
from shared.errors import StoredFormatError
from shared.model.wire import BatchMessage
from shared.rules.watermarks import Watermarks
from shared.settings import StorageSettings
from shared.state.aliases import AliasIndex
from shared.state.identity import BaseRow, IdentityMap
from shared.state.ledger import Ledger

LINK = "upgrade-link"  # the link the entities were written for; each test moves them to a link of its own
ADA, GRACE, GONE = (
    "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "0a1ffe3d4e5f60718293a4b5c6d7e8f9",
    "f00dfeedbeef00112233445566778899",
)
RECORD_1, RECORD_2, RECORD_3 = (
    "1d5c2a2e-0000-4000-8000-000000000001",
    "2d5c2a2e-0000-4000-8000-000000000002",
    "3d5c2a2e-0000-4000-8000-000000000003",
)

BEFORE_VERSIONS = [
    (
        IDENTITY_MAP,
        {
            "PartitionKey": "upgrade-link",
            "RowKey": "s:0a1",
            "count": 2,
            "bases": base64.b64decode(
                "eJyNUstugzAQ/Jc9k8o2tnmc+h+Iw2IvKSqPFEhbKeXfuyaikapIsAdL4x17Zse+gUBZKRd7Taa2IpGpymLUlXHWJ5TWGeQ3IMgB"
                "Pb7SN3aXll6G8QwRjJAXBUhvnEJFJ8F10mFJwyIeJZnshn5GN0NZRjDxddO1mtzYVOS5OUAuIuggl0lmhbJGMPR/UAXo+NAhrSUK"
                "M9U17c90HtHR06nUvpJickvooYwKiPf58ZMUrv3/HOSWg8m01Y8cGKo0wHnlXNjlMZOs9L6OpPfZmj00/Se2jT9Rh027Gm1CXPdf"
                "smrfY+Un46TfQm/bKGpsJ4pkYrVe7yuZ8bHZ1zbY/woHjhj/2RTB7LMNLMvyC9H/sXc="
            ),
        },
    ),
    (
        IDENTITY_MAP,
        {
            "PartitionKey": "upgrade-link",
            "RowKey": "s:f00",
            "count": 1,
            "bases": base64.b64decode(
                "eJwVikEKgCAUBe/y1i6+pqn/KtGi8geBWRRBEN09280M82AmSrNIGkUqam1M01jrXNt6H0KM4AcCBhQOcNcrnNWmLEORVOMGJoUV"
                "rH10wViiqglcrpwV7v/d1j0vQ5kE7/sBmMAerw=="
            ),
        },
    ),
    (
        IDENTITY_MAP,
        {
            "PartitionKey": "upgrade-link|records",
            "RowKey": "s:6e7",
            "count": 1,
            "bases": base64.b64decode(
                "eJxFxMENwCAIAMBd+JsggmK3oQJLmO7e+uo9bgO5LDKKgp/CJz3hj+ACtJoZzTkkO46qNJvxLav7CM0JzwuZQhJT"
            ),
        },
    ),
    (
        IDENTITY_MAP,
        {
            "PartitionKey": "upgrade-link|records",
            "RowKey": "s:b52",
            "count": 1,
            "bases": base64.b64decode(
                "eJxFxMENwCAIAMBd+JsAgmK3QcQlmu7e+uo97gZaGuycBT9FTnbCH8EF6DQ56pLU3bCT8aguU6OtnrYHPC+SBRIX"
            ),
        },
    ),
    (
        IDENTITY_MAP,
        {
            "PartitionKey": "upgrade-link|contacts",
            "RowKey": "s:c1d",
            "count": 1,
            "bases": base64.b64decode(
                "eJyrVspN1k3OzytJTC7RNVeyUjJINEwySjZOMUk1TTMzMDe0MLI0TjRJMk02SzFPtUizVKoFAI7FDsw="
            ),
        },
    ),
    (
        SYNC_STATE,
        {
            "PartitionKey": "upgrade-link",
            "RowKey": "retry|9999999999-abcdef|b0001",
            "groups": '[["0a1b2c3d4e5f60718293a4b5c6d7e8f9"]]',
        },
    ),
    (
        SYNC_STATE,
        {
            "PartitionKey": "upgrade-link",
            "RowKey": "watermarks",
            "mailchimp": "2026-11-30T08:20:00+00:00",
            "dataverse_records": "2026-11-30T08:19:30+00:00",
            "dataverse_members": "2026-11-30T08:19:30+00:00",
            "last_full": "2026-11-29T02:00:00+00:00",
            "map_rows": 2,
            "completed_runs": 1,
        },
    ),
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# What the release before versions was asked to store, as this release must read it back.
BASES = {
    ADA: BaseRow(
        "ada@example.org",
        [(RECORD_1, "contact")],
        "subscribed",
        False,
        at("2026-11-30T08:15:00+00:00"),
        at("2026-11-30T08:10:00+00:00"),
        RECORD_1,
    ),
    GRACE: BaseRow(
        "grace@example.org",
        [(RECORD_2, "lead"), (RECORD_3, "contact")],
        "unsubscribed",
        True,
        at("2026-11-29T10:00:00+00:00"),
        at("2026-11-29T09:00:00+00:00"),
        None,
        True,
        None,
        [RECORD_2],
        [["4d5c2a2e-0000-4000-8000-000000000004", "invalid-email"]],
        {"a1b2c3": True, "d4e5f6": False},
        {"d4e5f6": [False, 1764400000]},
        at("2026-11-29T09:30:00+00:00"),
        {f"{RECORD_2}|a1b2c3": "5d5c2a2e-0000-4000-8000-000000000005"},
    ),
    GONE: BaseRow("", [], "cleaned", False, at("2026-11-28T00:00:00+00:00"), None, None, False, "compliance"),
}
RECORD_ALIASES = {RECORD_1: ADA, RECORD_2: GRACE}
CONTACT_ALIASES = {"mc-contact-7": ADA}
WATERMARKS = Watermarks(
    at("2026-11-30T08:20:00+00:00"),
    at("2026-11-30T08:19:30+00:00"),
    at("2026-11-30T08:19:30+00:00"),
    at("2026-11-29T02:00:00+00:00"),
    2,
    1,
)


@pytest.fixture
def storage(azurite: str) -> Storage:
    storage = Storage(StorageSettings(connection_string=azurite))
    storage.ensure()
    return storage


def written_before_versions(storage: Storage) -> str:
    """Stores the old entities under a new link; returns the link."""
    link = f"upgrade-{uuid.uuid4().hex[:8]}"
    for table, entity in BEFORE_VERSIONS:
        storage.table(table).create_entity({**entity, "PartitionKey": entity["PartitionKey"].replace(LINK, link)})
    return link


def raw(storage: Storage, table: str, partition: str) -> dict[str, dict[str, object]]:
    return {row["RowKey"]: dict(row) for row in storage.query(table, "PartitionKey eq @p", {"p": partition})}


def test_state_written_before_versions_reads_the_same(storage: Storage) -> None:
    link = written_before_versions(storage)
    identity = IdentityMap(storage)
    assert identity.load(link, [ADA, GRACE, GONE, "0a1000000000000000000000000000ff"]) == BASES
    assert sorted(identity.iter_records(link)) == [(ADA, [RECORD_1]), (GRACE, [RECORD_2, RECORD_3])]
    assert dict(identity.link_records(link)) == {ADA: [(RECORD_1, "contact")], GRACE: BASES[GRACE].records}
    assert AliasIndex(storage, link, "records").get([RECORD_1, RECORD_2, RECORD_3]) == RECORD_ALIASES
    assert AliasIndex(storage, link, "contacts").get(["mc-contact-7", "mc-contact-8"]) == CONTACT_ALIASES
    ledger = Ledger(storage)
    assert ledger.watermarks(link) == WATERMARKS
    retries = ledger.pending_retries(link)
    assert [(r["RowKey"], json.loads(r["groups"])) for r in retries] == [("retry|9999999999-abcdef|b0001", [[ADA]])]


def test_writing_over_old_state_keeps_it_readable_and_marks_its_version(storage: Storage) -> None:
    link = written_before_versions(storage)
    identity = IdentityMap(storage)
    moved = BaseRow("ada@example.org", [(RECORD_1, "contact")], "unsubscribed", True, at("2026-12-01T00:00:00+00:00"))
    identity.save(link, {ADA: moved, GONE: None})  # one base changed beside an untouched one; one shard emptied
    assert identity.load(link, [ADA, GRACE, GONE]) == {ADA: moved, GRACE: BASES[GRACE]}
    shards = raw(storage, IDENTITY_MAP, link)
    assert {key: (row["v"], row["count"]) for key, row in shards.items()} == {"s:0a1": (1, 2), "s:f00": (1, 0)}

    records = AliasIndex(storage, link, "records")
    records.update({RECORD_2: ADA})  # an existing key of an old shard now points elsewhere
    assert records.get([RECORD_1, RECORD_2]) == {RECORD_1: ADA, RECORD_2: ADA}
    assert AliasIndex(storage, link, "contacts").get(["mc-contact-7"]) == CONTACT_ALIASES
    assert {row.get("v") for row in raw(storage, IDENTITY_MAP, f"{link}|records").values()} == {None, 1}

    ledger = Ledger(storage)
    proposed = replace(WATERMARKS, mailchimp=at("2026-12-01T00:05:00+00:00"))
    ledger.start_run(link, "9999990000-000001", full=False, dry_run=False, now=at("2026-12-01T00:00:00+00:00"))
    ledger.scanned(link, "9999990000-000001", [], proposed, Counter())
    assert ledger.try_finalize(link, "9999990000-000001", at("2026-12-01T00:10:00+00:00")) is not None
    assert ledger.watermarks(link) == replace(proposed, completed_runs=2)
    assert storage.get(SYNC_STATE, link, "watermarks")["v"] == 1
    ledger.record_retry(link, "9999990000-000001", "b0002", f'[["{GRACE}"]]')
    assert [r["RowKey"] for r in ledger.pending_retries(link)] == [
        "retry|9999990000-000001|b0002",
        "retry|9999999999-abcdef|b0001",
    ]


def test_a_shard_of_an_unknown_version_is_refused_naming_the_row(storage: Storage) -> None:
    link = written_before_versions(storage)
    table = storage.table(IDENTITY_MAP)
    table.upsert_entity({**table.get_entity(link, "s:0a1"), "v": 2})
    with pytest.raises(StoredFormatError) as refused:
        IdentityMap(storage).load(link, [ADA])
    assert f"table IdentityMap row {link}/s:0a1" in str(refused.value)
    assert "newer Consent Bridge" in str(refused.value)
    with pytest.raises(StoredFormatError):
        IdentityMap(storage).save(link, {ADA: BASES[ADA]})  # nor is it written over
    assert table.get_entity(link, "s:0a1")["v"] == 2

    alias_table = f"{link}|contacts"
    table.upsert_entity({**table.get_entity(alias_table, "s:c1d"), "v": "2"})
    with pytest.raises(StoredFormatError, match=r"row upgrade-\w+\|contacts/s:c1d"):
        AliasIndex(storage, link, "contacts").get(["mc-contact-7"])


def test_ledger_rows_of_an_unknown_version_are_refused_naming_the_row(storage: Storage) -> None:
    link = written_before_versions(storage)
    state = storage.table(SYNC_STATE)
    state.upsert_entity({**state.get_entity(link, "watermarks"), "v": 9})
    with pytest.raises(StoredFormatError, match=f"table SyncState row {link}/watermarks"):
        Ledger(storage).watermarks(link)
    state.upsert_entity({**state.get_entity(link, "retry|9999999999-abcdef|b0001"), "v": 9})
    with pytest.raises(StoredFormatError, match=r"retry\|9999999999-abcdef\|b0001"):
        Ledger(storage).pending_retries(link)


def test_run_and_batch_rows_carry_a_version_and_an_unknown_one_is_refused(storage: Storage) -> None:
    link, run_id = f"upgrade-{uuid.uuid4().hex[:8]}", "9999990000-000002"
    ledger = Ledger(storage)
    ledger.start_run(link, run_id, full=False, dry_run=True, now=at("2026-12-01T00:00:00+00:00"))
    ledger.queue_batch(BatchMessage(link, run_id, "b0001", fresh=False, full=False, groups=[]))
    assert storage.get(SYNC_RUNS, link, run_id)["v"] == 1
    assert storage.get(SYNC_RUNS, f"{link}|{run_id}", "b0001")["v"] == 1
    assert ledger.batch_payload(link, run_id, "b0001") == BatchMessage(link, run_id, "b0001", False, False, [])

    runs = storage.table(SYNC_RUNS)
    runs.upsert_entity({**runs.get_entity(f"{link}|{run_id}", "b0001"), "v": 2})
    with pytest.raises(StoredFormatError, match=f"table SyncRuns row {link}\\|{run_id}/b0001"):
        ledger.batch_payload(link, run_id, "b0001")
    runs.upsert_entity({**runs.get_entity(link, run_id), "v": 2})
    with pytest.raises(StoredFormatError, match=f"table SyncRuns row {link}/{run_id}"):
        ledger.latest_runs(link)

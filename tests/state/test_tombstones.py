"""Tombstones in Azurite: hash only, everywhere or per link, a unit's read in one call."""

from __future__ import annotations

import uuid

from shared.adapters.storage import SYNC_STATE, Storage
from shared.rules.addresses import member_hash
from shared.settings import StorageSettings
from shared.state.tombstones import EVERYWHERE, PARTITION, Tombstones


def test_tombstones_cover_every_link_or_one_and_are_read_for_a_unit_in_one_call(azurite):
    storage = Storage(StorageSettings(connection_string=azurite))
    storage.ensure()
    hashes = sorted(member_hash(f"{uuid.uuid4().hex}@example.com") for _ in range(6))
    stones = Tombstones(storage)
    stones.add(hashes[1], reason="forget")
    stones.add(hashes[3], reason="mailchimp-forgotten", scope="news")
    stones.add(hashes[3], reason="forget")
    stones.add(hashes[4], reason="mailchimp-forgotten", scope="other")

    reader = Tombstones(storage)
    news = reader.among("news", hashes)
    assert reader.operations == 1
    assert sorted(news) == [hashes[1], hashes[3]]
    assert sorted(Tombstones(storage).among("other", hashes)) == [hashes[1], hashes[3], hashes[4]]
    assert Tombstones(storage).among("news", [hashes[0], hashes[5]]) == {}
    assert sorted((s.scope, s.reason) for s in reader.of(hashes[3])) == [
        (EVERYWHERE, "forget"),
        ("news", "mailchimp-forgotten"),
    ]
    empty = Tombstones(storage)
    assert empty.among("news", []) == {} and empty.operations == 0

    row = storage.get(SYNC_STATE, PARTITION, f"{hashes[1]}|{EVERYWHERE}")
    assert row is not None
    assert set(row) - {"PartitionKey", "RowKey"} == {"v", "reason", "when"}  # the hash, and nothing of the person

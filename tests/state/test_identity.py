"""The alias index: record ids that share their first characters still spread over many shards."""

from __future__ import annotations

import uuid

from shared.adapters.storage import IDENTITY_MAP, Storage
from shared.settings import StorageSettings
from shared.state.aliases import AliasIndex, alias_bucket


def test_sequential_record_ids_spread_over_shards_and_read_back(azurite):
    storage = Storage(StorageSettings(connection_string=azurite))
    storage.ensure()
    index = AliasIndex(storage, f"ids-{uuid.uuid4().hex[:8]}", "records")
    keys = {f"00000000-0000-4000-8000-{i:012d}": f"{i:032x}" for i in range(3000)}  # imported, numbered ids
    index.update(keys)
    shards = {
        row["RowKey"]
        for row in storage.query(IDENTITY_MAP, "PartitionKey eq @p", {"p": index.partition}, select=["RowKey"])
    }
    assert len(shards) > 1000  # one shard for all of them would outgrow a table property
    assert len({alias_bucket(k) for k in keys}) == 16
    sample = list(keys)[::97]
    assert index.get(sample) == {k: keys[k] for k in sample}
    bucket = alias_bucket(sample[0])
    in_bucket = index.read_range(f"s:{bucket}", f"s:{bucket}~")
    assert {k for k in keys if alias_bucket(k) == bucket} == set(in_bucket)

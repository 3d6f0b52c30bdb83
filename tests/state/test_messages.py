"""Which tables take a bulk message, kept in Azurite for a day so that each run need not ask the service."""

from __future__ import annotations

import uuid
from datetime import timedelta

from shared.adapters.storage import SYNC_STATE, Storage, upsert
from shared.model.times import iso_seconds, now
from shared.settings import StorageSettings
from shared.state.messages import KEEP, PARTITION, MessageSupport


def test_an_answer_is_kept_for_a_day_and_then_asked_again(azurite):
    storage = Storage(StorageSettings(connection_string=azurite))
    storage.ensure()
    fresh, stale = f"Fresh{uuid.uuid4().hex}", f"Stale{uuid.uuid4().hex}"
    MessageSupport(storage).learned(fresh, frozenset({"contact", "lead"}))
    storage.write(
        SYNC_STATE,
        [
            upsert(
                {
                    "PartitionKey": PARTITION,
                    "RowKey": stale,
                    "tables": '["contact"]',
                    "read": iso_seconds(now() - KEEP - timedelta(minutes=1)),
                }
            )
        ],
    )

    known = MessageSupport(storage).known()

    assert known[fresh] == frozenset({"contact", "lead"})
    assert stale not in known

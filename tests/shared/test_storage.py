import pytest

from shared.settings import StorageSettings
from shared.storage import (
    BATCHES_QUEUE,
    CONSENT_AUDIT,
    MessageTooLarge,
    Storage,
    poison,
    upsert,
)


@pytest.fixture
def storage(azurite):
    store = Storage(StorageSettings(connection_string=azurite))
    store.ensure()
    yield store
    for message in store.receive(BATCHES_QUEUE, visibility_timeout=1):
        store.delete(BATCHES_QUEUE, message)


def test_ensure_is_idempotent_and_creates_poison_queues(azurite):
    store = Storage(StorageSettings(connection_string=azurite))
    store.ensure()
    assert store.ensure() == []
    names = {q.name for q in store.queues.list_queues()}
    assert {"sync-links", "sync-batches", "sync-links-poison", "sync-batches-poison"} <= names
    assert {"SyncState", "IdentityMap", "SyncRuns", "ConsentAudit"} <= {t.name for t in store.tables.list_tables()}


def test_messages_are_base64_json_as_the_functions_host_reads_them(storage):
    storage.send(BATCHES_QUEUE, {"link": "newsletter", "n": 1})
    raw = storage.queues.get_queue_client(BATCHES_QUEUE).peek_messages()[0].content
    import base64
    import json

    assert json.loads(base64.b64decode(raw)) == {"link": "newsletter", "n": 1}
    [message] = storage.receive(BATCHES_QUEUE, visibility_timeout=5)
    assert json.loads(message.content) == {"link": "newsletter", "n": 1}


def test_an_oversized_message_is_refused_with_the_remedy(storage):
    with pytest.raises(MessageTooLarge, match="lower BATCH_SIZE"):
        storage.send(BATCHES_QUEUE, {"emails": ["x" * 100] * 600})


def test_writes_are_grouped_into_transactions_of_one_partition(storage):
    entities = [upsert({"PartitionKey": f"p{i % 2}", "RowKey": f"r{i:04d}", "n": i}) for i in range(250)]
    assert storage.write(CONSENT_AUDIT, entities) == 4  # 125 per partition -> 100 + 25, twice
    rows = list(storage.query(CONSENT_AUDIT, "PartitionKey eq @p", {"p": "p1"}))
    assert len(rows) == 125
    assert storage.get(CONSENT_AUDIT, "p0", "r0000")["n"] == 0
    assert storage.get(CONSENT_AUDIT, "p0", "missing") is None


def test_poison_names():
    assert poison("sync-batches") == "sync-batches-poison"

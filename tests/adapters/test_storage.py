import pytest

from shared.adapters.storage import (
    BATCHES_QUEUE,
    CONSENT_AUDIT,
    MessageTooLarge,
    Storage,
    poison,
    upsert,
)
from shared.errors import ConfigurationError
from shared.settings import StorageSettings


@pytest.fixture
def storage(azurite):
    store = Storage(StorageSettings(connection_string=azurite))
    store.ensure()
    yield store
    for message in store.receive(BATCHES_QUEUE, visibility_timeout=1):
        store.delete(BATCHES_QUEUE, message)


def test_storage_without_a_connection_string_or_service_uris_names_the_setting():
    with pytest.raises(ConfigurationError, match="AzureWebJobsStorage") as refused:
        Storage(StorageSettings(queue_service_uri="https://account.queue.core.windows.net"))
    assert refused.value.subject == "AzureWebJobsStorage"


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


def test_transactions_keep_every_property_type_and_odd_keys(storage):
    from datetime import UTC, datetime

    from azure.data.tables import EdmType, TransactionOperation, UpdateMode

    moment = datetime(2026, 11, 23, 8, 30, 15, 123456, tzinfo=UTC)
    odd = "o'brien|zoë 100%+&=x"  # a quote, a space, non-ASCII and URL-reserved characters in a key
    entity = {
        "PartitionKey": "types",
        "RowKey": odd,
        "text": 'zoë\'s "list"\n',
        "flag": True,
        "small": 7,
        "large": (2**40, EdmType.INT64),
        "ratio": 0.25,
        "when": moment,
        "blob": bytes(range(256)),
        "typed": (5, EdmType.INT64),
    }
    assert storage.write(CONSENT_AUDIT, [upsert(entity)]) == 1
    row = storage.get(CONSENT_AUDIT, "types", odd)
    assert (row["text"], row["flag"], row["small"], row["large"].value, row["ratio"], row["blob"]) == (
        'zoë\'s "list"\n',
        True,
        7,
        2**40,
        0.25,
        bytes(range(256)),
    )
    assert row["when"] == moment and row["typed"].value == 5
    merge = (
        TransactionOperation.UPSERT,
        {"PartitionKey": "types", "RowKey": odd, "extra": "x"},
        {"mode": UpdateMode.MERGE},
    )
    create = (TransactionOperation.CREATE, {"PartitionKey": "types", "RowKey": "new", "n": 1})
    storage.write(CONSENT_AUDIT, [merge, create])
    assert storage.get(CONSENT_AUDIT, "types", odd)["extra"] == "x" and storage.get(CONSENT_AUDIT, "types", odd)["flag"]
    storage.write(CONSENT_AUDIT, [(TransactionOperation.DELETE, {"PartitionKey": "types", "RowKey": "new"})])
    assert storage.get(CONSENT_AUDIT, "types", "new") is None


def test_a_refused_transaction_names_the_table_and_applies_nothing(storage):
    from azure.data.tables import TransactionOperation

    from shared.adapters.storage import TransactionError

    storage.write(CONSENT_AUDIT, [upsert({"PartitionKey": "refused", "RowKey": "taken", "n": 1})])
    operations = [
        upsert({"PartitionKey": "refused", "RowKey": "fresh", "n": 2}),
        (TransactionOperation.CREATE, {"PartitionKey": "refused", "RowKey": "taken", "n": 3}),
    ]
    with pytest.raises(TransactionError, match="table ConsentAudit was refused"):
        storage.write(CONSENT_AUDIT, operations)
    assert storage.get(CONSENT_AUDIT, "refused", "fresh") is None
    assert storage.get(CONSENT_AUDIT, "refused", "taken")["n"] == 1


def test_a_conditional_update_in_a_transaction_is_refused_when_the_row_changed(storage):
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError
    from azure.data.tables import TransactionOperation, UpdateMode

    storage.write(CONSENT_AUDIT, [upsert({"PartitionKey": "etag", "RowKey": "row", "n": 1})])
    etag = storage.table(CONSENT_AUDIT).get_entity("etag", "row").metadata["etag"]
    update = (
        TransactionOperation.UPDATE,
        {"PartitionKey": "etag", "RowKey": "row", "n": 2},
        {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified},
    )
    storage.write(CONSENT_AUDIT, [update])
    assert storage.get(CONSENT_AUDIT, "etag", "row")["n"] == 2
    with pytest.raises(HttpResponseError, match="refused"):  # the etag is stale now
        storage.write(CONSENT_AUDIT, [update])
    assert storage.get(CONSENT_AUDIT, "etag", "row")["n"] == 2

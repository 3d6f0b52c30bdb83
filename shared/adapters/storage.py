"""Table Storage and Storage Queues, through azure-data-tables and azure-storage-queue.

Queue messages are JSON, base64-encoded as the Functions host expects by default, so a message
put here by the CLI is the same message the host's queue trigger reads.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient, TableServiceClient, TransactionOperation, UpdateMode

# The SDK's own entity serialiser (Edm types, UTC datetimes), so a row written here reads back exactly as one
# written through the SDK; private in azure-data-tables, which requirements.txt pins.
from azure.data.tables._serialize import _add_entity_properties
from azure.storage.queue import (
    BinaryBase64DecodePolicy,
    BinaryBase64EncodePolicy,
    QueueClient,
    QueueMessage,
    QueueServiceClient,
)

from shared.errors import ConfigurationError
from shared.settings import StorageSettings

# Storage names (contract).
SYNC_STATE = "SyncState"
IDENTITY_MAP = "IdentityMap"
SYNC_RUNS = "SyncRuns"
CONSENT_AUDIT = "ConsentAudit"
TABLES = (SYNC_STATE, IDENTITY_MAP, SYNC_RUNS, CONSENT_AUDIT)
LINKS_QUEUE = "sync-links"
BATCHES_QUEUE = "sync-batches"
EVENTS_QUEUE = "sync-events"  # real-time events from the webhook routes
QUEUES = (LINKS_QUEUE, BATCHES_QUEUE, EVENTS_QUEUE)
MAX_MESSAGE_BYTES = 64 * 1024
TRANSACTION_LIMIT = 100  # entities per table batch transaction, all of one partition

Operation = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], dict[str, Any]]


def poison(queue: str) -> str:
    return f"{queue}-poison"


class TransactionError(HttpResponseError):
    """A table batch transaction was refused; nothing of it was applied."""


class MessageTooLarge(ValueError):  # noqa: N818 - reads as the condition it names
    """A queue message would exceed the 64 KB limit of Storage Queues."""


class Storage:
    """The product's tables and queues in one storage account."""

    def __init__(self, settings: StorageSettings) -> None:
        if settings.connection_string:
            self.tables = TableServiceClient.from_connection_string(settings.connection_string)
            self.queues = QueueServiceClient.from_connection_string(settings.connection_string)
        else:
            if not settings.table_service_uri or not settings.queue_service_uri:
                raise ConfigurationError(
                    "AzureWebJobsStorage",
                    "has neither a connection string nor both service URIs",
                    "set AzureWebJobsStorage to a connection string, or AzureWebJobsStorage__accountName "
                    "(or __queueServiceUri and __tableServiceUri) for the app's identity",
                )
            # imported here: azure.identity is slow to load and a connection string never needs it
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id)
            self.tables = TableServiceClient(endpoint=settings.table_service_uri, credential=credential)
            self.queues = QueueServiceClient(account_url=settings.queue_service_uri, credential=credential)
        self._table_clients: dict[str, TableClient] = {}
        self._queue_clients: dict[str, QueueClient] = {}

    def table(self, name: str) -> TableClient:
        if name not in self._table_clients:
            self._table_clients[name] = self.tables.get_table_client(name)
        return self._table_clients[name]

    def queue(self, name: str) -> QueueClient:
        if name not in self._queue_clients:
            self._queue_clients[name] = self.queues.get_queue_client(
                name, message_encode_policy=BinaryBase64EncodePolicy(), message_decode_policy=BinaryBase64DecodePolicy()
            )
        return self._queue_clients[name]

    def ensure(self) -> list[str]:
        """Creates every table and queue (with poison queues) that is missing; returns what it created."""
        created: list[str] = []
        for name in TABLES:
            try:
                self.tables.create_table(name)
                created.append(f"table {name}")
            except ResourceExistsError:
                pass
        for name in (*QUEUES, *(poison(q) for q in QUEUES)):
            try:
                self.queues.create_queue(name)
                created.append(f"queue {name}")
            except ResourceExistsError:
                pass
        return created

    # ---- queues ---------------------------------------------------------------------------
    def send(self, queue: str, message: dict[str, Any], visibility_timeout: int | None = None) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        if len(body) * 4 / 3 > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"a {queue} message of {len(body)} bytes exceeds the 64 KB queue limit once "
                f"base64-encoded; lower BATCH_SIZE"
            )
        self.queue(queue).send_message(body, visibility_timeout=visibility_timeout)

    def receive(self, queue: str, visibility_timeout: int, max_messages: int = 32) -> list[QueueMessage]:
        return list(
            self.queue(queue).receive_messages(max_messages=max_messages, visibility_timeout=visibility_timeout)
        )

    def delete(self, queue: str, message: QueueMessage) -> None:
        self.queue(queue).delete_message(message)

    def queue_length(self, queue: str) -> int:
        """The approximate number of messages (0 when the service does not say)."""
        return self.queue(queue).get_queue_properties().approximate_message_count or 0

    # ---- tables ---------------------------------------------------------------------------
    def write(self, table: str, operations: Iterable[Operation]) -> int:
        """Applies (op, entity[, kwargs]) operations as batch transactions: grouped by partition, 100 at a time.

        Returns the number of transactions submitted (each one storage call).
        """
        by_partition: dict[str, list[Operation]] = defaultdict(list)
        for operation in operations:
            by_partition[operation[1]["PartitionKey"]].append(operation)
        client = self.table(table)
        transactions = 0
        for group in by_partition.values():
            for start in range(0, len(group), TRANSACTION_LIMIT):
                submit(client, group[start : start + TRANSACTION_LIMIT])
                transactions += 1
        return transactions

    def query(
        self, table: str, filter_: str, parameters: dict[str, Any] | None = None, select: list[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        return iter(self.table(table).query_entities(filter_, parameters=parameters, select=select))

    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None:
        try:
            return dict(self.table(table).get_entity(partition, row))
        except ResourceNotFoundError:
            return None


_METHODS: dict[tuple[str, str | None], str] = {
    (TransactionOperation.UPSERT, UpdateMode.REPLACE): "PUT",
    (TransactionOperation.UPSERT, UpdateMode.MERGE): "MERGE",
    (TransactionOperation.UPDATE, UpdateMode.REPLACE): "PUT",
    (TransactionOperation.UPDATE, UpdateMode.MERGE): "MERGE",
    (TransactionOperation.DELETE, None): "DELETE",
    (TransactionOperation.CREATE, None): "POST",
}
_PART_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3})", re.MULTILINE)


def submit(client: TableClient, operations: list[Operation]) -> None:
    """One batch transaction (at most 100 operations on one partition), framed here rather than by the SDK.

    The SDK builds and parses every operation as a full HTTP message through the stdlib email package, about
    half a millisecond of CPU per entity; a run writes tens of thousands of audit rows and bases. The framing
    is the documented Table service $batch format; the request still goes through the client's pipeline
    (authentication, retries). Supports create, upsert and update (replace or merge; update with an etag
    is conditional) and delete.
    """
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    base = client.url.split("?")[0].rstrip("/")
    parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
    for operation in operations:
        kind, entity = operation[0], operation[1]
        options = operation[2] if len(operation) > 2 else {}  # type: ignore[misc]
        updating = kind in (TransactionOperation.UPSERT, TransactionOperation.UPDATE)
        mode = options.get("mode", UpdateMode.MERGE) if updating else None
        method = _METHODS.get((kind, mode))
        if method is None:
            raise ValueError(f"table operation {kind} {options} is not supported in a transaction here")
        if method == "POST":
            target, body = f"{base}/{client.table_name}", json.dumps(_add_entity_properties(entity))
        else:
            keys = f"PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}'"
            target = f"{base}/{client.table_name}({keys})"
            body = "" if method == "DELETE" else json.dumps(_add_entity_properties(entity))
        headers = ["Accept: application/json;odata=nometadata", "DataServiceVersion: 3.0"]
        if method == "POST":
            headers.append("Prefer: return-no-content")
        if kind in (TransactionOperation.UPDATE, TransactionOperation.DELETE):
            headers.append(f"If-Match: {options.get('etag') or '*'}")  # an etag means: only if unchanged since
        if body:
            headers.append("Content-Type: application/json")
        parts.append(
            f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            f"{method} {target} HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in headers) + f"\r\n{body}\r\n"
        )
    parts.append(f"--{changeset}--\r\n--{batch}--\r\n")
    request = HttpRequest(
        "POST",
        f"{base}/$batch",
        content="".join(parts).encode(),
        headers={
            "Content-Type": f"multipart/mixed; boundary={batch}",
            "Accept": "application/json",
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "x-ms-version": client.api_version,
        },
    )
    response = client._client.send_request(request, stream=True)  # the client's authenticated pipeline
    content = response.read()
    statuses = [int(code) for code in _PART_STATUS.findall(content or b"")]
    if response.status_code != 202 or any(not 200 <= code < 300 for code in statuses):
        detail = (content or b"").decode(errors="replace")
        message = re.search(r'"(?:value|message)"\s*:\s*"([^"]*)"', detail) or re.search(
            r"<message[^>]*>([^<]*)", detail
        )
        raise TransactionError(
            message=f"a transaction of {len(operations)} operations on table "
            f"{client.table_name} was refused ({response.status_code}, parts "
            f"{sorted(set(statuses))}): {message.group(1) if message else detail[:300]}"
        )
    if len(statuses) != len(operations):
        raise TransactionError(
            message=f"a transaction on table {client.table_name} answered {len(statuses)} of "
            f"{len(operations)} operations"
        )


def _key(value: Any) -> str:
    return quote(str(value).replace("'", "''"), safe="")


def upsert(entity: dict[str, Any]) -> Operation:
    return (TransactionOperation.UPSERT, entity, {"mode": UpdateMode.REPLACE})

"""The three doors the layers above use, as typing Protocols: what the sync engine, the features, the app, the
CLI and provisioning may call on Mailchimp, Dataverse and storage, and nothing more.

Upper layers annotate their clients with these ports instead of ``Any``; the concrete adapters
(``Mailchimp``, ``Dataverse``, ``Storage``) satisfy them, which mypy checks at the bottom of this module.
A call an upper layer starts making belongs here first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

from shared.adapters.dataverse import BatchOperation, Dataverse
from shared.adapters.dataverse import BatchResult as DataverseBatchResult
from shared.adapters.limiter import ConnectionSlots
from shared.adapters.mailchimp import PAGE_SIZE_MAX, Mailchimp, SharedSlot, TagMembersResult, ThrottleObserver
from shared.adapters.mailchimp import BatchResult as SubscribeResult
from shared.adapters.storage import Operation, Storage
from shared.settings import Settings


class MailchimpPort(Protocol):
    """The Mailchimp Marketing API as the product uses it; members are addressed by member hash."""

    @property
    def last_server_time(self) -> datetime | None:
        """Mailchimp's clock (the Date header of the latest answer): watermarks are set on it."""

    def use_shared_slot(self, slot: SharedSlot | None) -> None:
        """Every request also holds one of these slots: a connection cap across every instance of the app."""

    def set_throttle_observer(self, observer: ThrottleObserver | None) -> None:
        """``observer(wait_seconds)`` is told of each throttled request before it is retried."""

    def ping(self) -> None: ...

    def audience(self, list_id: str) -> dict[str, Any]: ...

    def iter_member_pages(
        self,
        list_id: str,
        *,
        since_last_changed: datetime | None,
        fields: list[str],
        status: str | None = None,
        page_size: int = PAGE_SIZE_MAX,
        newest_first: bool = False,
    ) -> Iterator[list[dict[str, Any]]]: ...

    def member(self, list_id: str, member_hash: str, *, fields: list[str] | None = None) -> dict[str, Any] | None: ...

    def update_member(self, list_id: str, member_hash: str, changes: Mapping[str, Any]) -> dict[str, Any]: ...

    def archive_member(self, list_id: str, member_hash: str) -> None: ...

    def delete_member_permanently(self, list_id: str, member_hash: str) -> bool: ...

    def batch_subscribe(
        self, list_id: str, members: list[Mapping[str, Any]], *, update_existing: bool = True
    ) -> SubscribeResult: ...

    def update_member_tags(self, list_id: str, member_hash: str, tags: Mapping[str, bool]) -> None: ...

    def add_tag_members(self, list_id: str, tag_name: str, emails: Iterable[str]) -> TagMembersResult: ...

    def remove_tag_members(self, list_id: str, tag_name: str, emails: Iterable[str]) -> TagMembersResult: ...

    def interest_categories(self, list_id: str) -> list[dict[str, Any]]: ...

    def interests(self, list_id: str, category_id: str) -> list[dict[str, Any]]: ...

    def merge_fields(self, list_id: str) -> list[dict[str, Any]]: ...

    def create_merge_field(self, list_id: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def iter_campaigns(self, list_id: str, since_send_time: datetime | None) -> Iterator[dict[str, Any]]: ...

    def campaign_report(self, campaign_id: str, fields: list[str] | None = None) -> dict[str, Any]: ...

    def iter_email_activity(self, campaign_id: str, since: datetime | None = None) -> Iterator[dict[str, Any]]: ...

    def iter_sent_to(self, campaign_id: str) -> Iterator[dict[str, Any]]: ...

    def iter_unsubscribed(self, campaign_id: str) -> Iterator[dict[str, Any]]: ...

    def create_webhook(
        self, list_id: str, url: str, events: Mapping[str, bool], sources: Mapping[str, bool]
    ) -> dict[str, Any]: ...

    def webhooks(self, list_id: str) -> list[dict[str, Any]]: ...

    def delete_webhook(self, list_id: str, webhook_id: str) -> bool: ...


class DataversePort(Protocol):
    """The Dataverse Web API as the product uses it: reads, $batch writes and schema metadata."""

    @property
    def last_server_time(self) -> datetime | None:
        """Dataverse's clock (the Date header of the latest answer): watermarks are set on it."""

    def set_throttle_observer(self, observer: ThrottleObserver | None) -> None:
        """``observer(wait_seconds)`` is told of each throttled request before it is retried."""

    def whoami(self) -> dict[str, Any]: ...

    def get(
        self, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]: ...

    def iter_pages(
        self,
        path: str,
        *,
        select: Sequence[str] | str | None = None,
        filter: str | None = None,  # noqa: A002 - the OData option's name
        orderby: str | None = None,
        page_size: int | None = None,
        track_changes: bool = False,
    ) -> Iterator[list[dict[str, Any]]]: ...

    def iter_fetchxml(
        self, entity_set: str, fetch_xml: str, page_size: int = ...
    ) -> Iterator[list[dict[str, Any]]]: ...

    def create(self, entity_set: str, body: dict[str, Any], *, solution: str | None = None) -> str: ...

    def update(self, entity_set: str, id: str, changes: dict[str, Any], *, if_match: str | None = "*") -> None: ...  # noqa: A002

    def delete(self, entity_set: str, id: str, *, if_match: str | None = None) -> None: ...  # noqa: A002

    def batch(
        self, operations: Sequence[BatchOperation], *, atomic: bool = False, continue_on_error: bool = True
    ) -> list[DataverseBatchResult]: ...

    def supports_message(self, logical_name: str, message: str) -> bool: ...

    def remember_messages(
        self, known: Callable[[], Mapping[str, frozenset[str]]], learned: Callable[[str, frozenset[str]], None]
    ) -> None: ...

    def update_multiple(
        self, entity_set: str, logical_name: str, targets: Sequence[dict[str, Any]]
    ) -> datetime | None: ...

    def create_multiple(self, entity_set: str, logical_name: str, targets: Sequence[dict[str, Any]]) -> list[str]: ...

    @property
    def api(self) -> str:
        """The Web API root (``<url>/api/data/v9.2``)."""

    @property
    def parallelism(self) -> int:
        """How many writes may be in flight at once (the service's x-ms-dop-hint, bounded by a setting)."""

    @property
    def chunk_sizes(self) -> dict[str, int]:
        """Records per bulk message, per table, once the service answered a larger one with a timeout."""

    def write_slot(self) -> AbstractContextManager[None]:
        """One of ``parallelism`` write slots, held while a write is in flight."""

    def entity_definition(self, logical_name: str, select: Sequence[str] = ...) -> dict[str, Any] | None: ...

    def attribute_definition(
        self, entity_logical_name: str, attribute_logical_name: str, select: Sequence[str] = ...
    ) -> dict[str, Any] | None: ...

    def relationship_definition(self, schema_name: str, select: Sequence[str] = ...) -> dict[str, Any] | None: ...

    def create_entity(self, metadata: dict[str, Any], *, solution: str | None = None) -> None: ...

    def create_attribute(
        self, entity_logical_name: str, attribute_metadata: dict[str, Any], *, solution: str | None = None
    ) -> None: ...

    def create_relationship(self, metadata: dict[str, Any], *, solution: str | None = None) -> None: ...

    def publish(self, entity_logical_names: Sequence[str]) -> None: ...


class StoragePort(Protocol):
    """The product's tables and queues in one storage account."""

    @property
    def tables(self) -> TableServiceClient: ...

    @property
    def queues(self) -> QueueServiceClient: ...

    def table(self, name: str) -> TableClient: ...

    def queue(self, name: str) -> QueueClient: ...

    def ensure(self) -> list[str]: ...

    def send(self, queue: str, message: dict[str, Any], visibility_timeout: int | None = None) -> None: ...

    def receive(self, queue: str, visibility_timeout: int, max_messages: int = 32) -> list[QueueMessage]: ...

    def delete(self, queue: str, message: QueueMessage) -> None: ...

    def queue_length(self, queue: str) -> int: ...

    def write(self, table: str, operations: Iterable[Operation]) -> int: ...

    def query(
        self, table: str, filter_: str, parameters: dict[str, Any] | None = None, select: list[str] | None = None
    ) -> Iterator[dict[str, Any]]: ...

    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...


if TYPE_CHECKING:

    def _the_adapters_fit_their_ports(
        mailchimp: Mailchimp, dataverse: Dataverse, storage: Storage, slots: ConnectionSlots
    ) -> tuple[MailchimpPort, DataversePort, StoragePort, SharedSlot]:
        """Never run: mypy checks here that each concrete adapter satisfies its port."""
        return mailchimp, dataverse, storage, slots.slot


class Services(Protocol):
    """The settings and the three doors, as the app's context holds them: what a feature needs to act on its own."""

    @property
    def settings(self) -> Settings: ...

    @property
    def storage(self) -> StoragePort: ...

    @property
    def mailchimp(self) -> MailchimpPort: ...

    @property
    def dataverse(self) -> DataversePort: ...

"""The reconcile pipeline's shapes: a unit of member hashes, the items it carries, and the steps features plug in.

A unit goes through four phases, each in one place of the Reconciler (shared/sync/reconcile.py):

    prepare   load the bases, apply address changes (rule 5), build one Item per member hash; Step.prepared
    decide    the consent rules per item (on the records as Step.consent_records has them read); then every
              Step.decided (features plan their own changes)
    write     one batch subscribe (entries carry what steps add; an entry whose merge field a step gives up
              is sent again without it), probes settled, Step.after_mailchimp, one Dataverse $batch
              (record PATCHes with the columns steps add, then the operations steps add), tags
    settle    audit entries (the core's, then every Step.audits), new bases (Step.settle_base),
              aliases and ConsentAudit rows (Step.audit_detail)

A run batch, a real-time event or an erasure all enter through ``Reconciler.reconcile(unit)``. What
happens around a unit (the run ledger, claims, watermarks) is the caller's concern.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from shared.adapters.dataverse import BatchOperation, BatchResult
from shared.model.snapshots import Group, RecordSnapshot
from shared.model.wire import BatchMessage
from shared.rules import consent
from shared.rules.audit import AuditEntry
from shared.settings import Link
from shared.state.identity import BaseRow

UNKNOWN = "unknown"  # the member was not read and the map has never seen it

StateT = TypeVar("StateT")


@dataclass
class Unit:
    """Member hashes of one link reconciled together, with what the scan (or an event) read about them."""

    link: Link
    run_id: str
    groups: list[Group]
    fresh: bool = False  # the link has no identity map yet: nothing to look up
    full: bool = False
    interests: list[list[str]] = field(default_factory=list)  # the audience's interests as [id, name]
    dry_run: bool = False
    batch_id: str = ""

    @classmethod
    def of(cls, message: BatchMessage, link: Link, *, dry_run: bool = False) -> Unit:
        return cls(
            link,
            message.run_id,
            message.groups,
            message.fresh,
            message.full,
            message.interests,
            dry_run,
            message.batch_id,
        )

    @property
    def interest_ids(self) -> list[str]:
        return [interest_id for interest_id, _ in self.interests]


@dataclass
class Item:
    """One member hash while its unit is reconciled."""

    group: Group
    base: BaseRow | None
    email: str
    member: consent.Member | str | None  # UNKNOWN until Mailchimp has been asked
    records: list[RecordSnapshot]
    decision: consent.Decision | None = None
    member_after: str | None = None
    member_last_changed: datetime | None = None
    member_interests: frozenset[str] | None = None  # chosen interests, when read or answered in this unit
    probed: bool = False  # the member was unknown until the batch subscribe answered
    mailchimp_failed: str | None = None
    record_failures: dict[str, str] = field(default_factory=dict)
    record_writes: dict[str, dict[str, Any]] = field(default_factory=dict)
    records_written_at: datetime | None = None
    email_writes: dict[str, str] = field(default_factory=dict)
    tagged: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)
    states: dict[type, object] = field(default_factory=dict)  # each step's own state for this item

    def state(self, kind: type[StateT]) -> StateT:
        """The state a step keeps for this item, created empty on first use."""
        found = self.states.get(kind)
        if found is None:
            found = self.states[kind] = kind()
        return found  # type: ignore[return-value]  # keyed by its own type

    @property
    def known_member(self) -> consent.Member | None:
        return self.member if isinstance(self.member, consent.Member) else None


@dataclass
class Outcome:
    """What reconciling a unit did: counts for the ledger and telemetry, entries for the audit and --dry-run."""

    batch_id: str
    duplicate: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    planned: list[AuditEntry] = field(default_factory=list)


DataverseWrite = tuple[BatchOperation, Callable[[BatchResult], None]]
MailchimpWrite = Callable[[list[Item]], None]  # writes what the steps add for these items (no status)


class Step:
    """A feature's part in the pipeline. Every hook does nothing unless the feature overrides it.

    ``name`` prefixes the counters the step's writes are charged to (``{name}_calls_mailchimp``, ...)."""

    name = ""

    def prepared(self, unit: Unit, items: list[Item]) -> None:
        """Every item is built (bases loaded, members read or UNKNOWN); the consent rules have not run yet."""

    def consent_records(self, unit: Unit, item: Item, records: list[consent.Record]) -> list[consent.Record]:
        """The item's records as the consent rules read them (e.g. what "opted out" means in this audience)."""
        return records

    def decided(self, unit: Unit, items: list[Item]) -> None:
        """Every item has its consent decision (members the batch subscribe will probe are still UNKNOWN)."""

    def mailchimp_fields(self, unit: Unit, item: Item, *, with_status: bool, counts: Counter[str]) -> dict[str, Any]:
        """Fields this step adds to the item's batch subscribe entry (empty: none)."""
        return {}

    def mailchimp_refused(self, unit: Unit, item: Item, reason: str, counts: Counter[str]) -> None:
        """Mailchimp refused an entry this step added fields to."""

    def mailchimp_field_refused(self, unit: Unit, item: Item, tag: str, message: str, counts: Counter[str]) -> bool:
        """Mailchimp refused the merge field ``tag`` of an entry; True: this step added it and gives it up, and the
        entry is sent again without it (so the rest of the member is still written)."""
        return False

    def after_mailchimp(self, unit: Unit, items: list[Item], write: MailchimpWrite, counts: Counter[str]) -> None:
        """The batch subscribe has answered (probed members are known now); ``write`` sends more."""

    def record_columns(self, unit: Unit, item: Item) -> dict[str, dict[str, Any]]:
        """Columns this step adds to the item's record PATCHes, per record id (a record without a consent write gets
        a PATCH of its own in the same $batch); ``record_patched`` hears how each answered."""
        return {}

    def record_patched(self, unit: Unit, item: Item, record_id: str, result: BatchResult) -> None:
        """The answer to a record PATCH that carried this step's columns."""

    def dataverse_writes(self, unit: Unit, items: list[Item], counts: Counter[str]) -> list[DataverseWrite]:
        """Operations for the unit's one $batch, each with what to do with its result."""
        return []

    def audits(self, unit: Unit, items: list[Item]) -> list[AuditEntry]:
        """The step's own audit entries, once every write has answered."""
        return []

    def settle_base(self, item: Item, base: BaseRow) -> BaseRow:
        """The item's new base with this step's fields settled."""
        return base

    def audit_detail(self, unit: Unit, entry: AuditEntry, detail: str) -> str:
        """The detail of an entry's ConsentAudit row (e.g. the campaign that caused a status change)."""
        return detail

    def causes_found(self, link: Link, causes: dict[str, str]) -> None:
        """A feature learned, outside any unit, what caused members' status changes (member hash -> words, e.g.
        the campaign whose footer they used): told once per cause, usually after the unit that applied the change
        wrote its rows."""

"""The erasure step of the reconcile pipeline.

- Rule 12: a member hash under a tombstone is never added again. Its add (or the probe that would add it)
  becomes a skip audited ``forgotten``, and no base is stored, so the address does not come back into the
  product's state through a record that still holds it. A person who signs up again through Mailchimp by
  themselves is a member again and is synced as one: that is new consent, not an add by rule 1.
- Mailchimp answered "Forgotten Email Not Subscribed" to an add: a tombstone for that link, the records'
  subscriber status shows Archived, no base is kept, and no later run tries the add again.
- A full pass sees mapped records gone from the list. Whether they were deleted or only left the list takes
  a read of their ids (one ``In`` read per record kind of the unit, only when some are gone). When the last
  record holding the address was deleted, ``ON_DYNAMICS_DELETE`` decides: keep (audited), archive, forget.

Tombstones are read only for the unit's members that rule 1 could add (no base, or never in the audience),
in one range query: a unit of known members, as in an idle or incremental run, makes no extra call.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace

from shared.adapters.dataverse import BatchOperation, BatchResult
from shared.adapters.mailchimp import MailchimpError
from shared.adapters.ports import DataversePort, MailchimpPort, StoragePort
from shared.model.kinds import KIND_SETS, KINDS
from shared.rules import consent
from shared.rules.audit import AuditEntry
from shared.settings import Settings
from shared.state.identity import BaseRow, IdentityMap
from shared.state.tombstones import Tombstones
from shared.sync.pipeline import UNKNOWN, DataverseWrite, Item, MailchimpWrite, Step, Unit

from .forget import RULE, forget

log = logging.getLogger("consent_bridge.erasure")

FORGOTTEN_REFUSAL = "forgotten-email"  # shared.adapters.mailchimp.mailchimp_refusal's name for it
DELETED_RULE = "dynamics-deleted"
IN_READ = 200  # ids per In() read: well inside the URL length Dataverse accepts


@dataclass
class _Deleted:
    """One item whose last record was deleted in Dynamics."""

    record_ids: list[str] = field(default_factory=list)
    done: str = ""  # what ON_DYNAMICS_DELETE did, for the audit


@dataclass
class _Calls:
    """Calls the step made while deciding, charged to the unit's counters once the writes start."""

    storage: int = 0
    dataverse: int = 0


class ErasureStep(Step):
    name = "erasure"

    def __init__(
        self, settings: Settings, storage: StoragePort, mailchimp: MailchimpPort, dataverse: DataversePort
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.mailchimp = mailchimp
        self.dataverse = dataverse

    # ---- decide ---------------------------------------------------------------------------------------------
    def decided(self, unit: Unit, items: list[Item]) -> None:
        if not items:
            return
        calls = items[0].state(_Calls)
        addable = [
            item
            for item in items
            if item.decision is not None
            and item.known_member is None
            and (item.base is None or item.base.member_status is None)
        ]
        if addable:
            stones = Tombstones(self.storage)
            found = stones.among(unit.link.name, [item.group.member_hash for item in addable])
            calls.storage += stones.operations
            for item in addable:
                if item.group.member_hash in found:
                    _skip_forgotten(item)
        self._find_deleted(unit, items, calls)

    def _find_deleted(self, unit: Unit, items: list[Item], calls: _Calls) -> None:
        """Items whose every mapped record left the list in this full pass: which of those records are deleted."""
        gone = [item for item in items if item.group.removed and not item.records and item.base is not None]
        if not gone:
            return
        kinds = {rid: kind for item in gone if item.base for rid, kind in item.base.records}
        asked: dict[str, list[str]] = {}
        for item in gone:
            for record_id in item.group.removed:
                if record_id in kinds:
                    asked.setdefault(kinds[record_id], []).append(record_id)
        present: set[str] = set()
        for kind_name, ids in asked.items():
            kind = KINDS[kind_name]
            for start in range(0, len(ids), IN_READ):
                values = ",".join(f"'{record_id}'" for record_id in ids[start : start + IN_READ])
                in_filter = f"Microsoft.Dynamics.CRM.In(PropertyName='{kind.id_attribute}',PropertyValues=[{values}])"
                for page in self.dataverse.iter_pages(kind.entity_set, select=[kind.id_attribute], filter=in_filter):
                    calls.dataverse += 1
                    present |= {str(row[kind.id_attribute]) for row in page}
        elsewhere = self._held_elsewhere(unit, gone, calls)
        for item in gone:
            deleted = [rid for rid in item.group.removed if rid in kinds and rid not in present]
            if deleted and len(deleted) == len(item.group.removed) and item.group.member_hash not in elsewhere:
                item.state(_Deleted).record_ids = deleted

    def _held_elsewhere(self, unit: Unit, items: list[Item], calls: _Calls) -> set[str]:
        """Hashes whose address another link still maps to records: not the last record holding it."""
        held: set[str] = set()
        identity = IdentityMap(self.storage)
        for other in self.settings.links:
            if other.name != unit.link.name:
                bases = identity.load(other.name, [item.group.member_hash for item in items])
                held |= {h for h, base in bases.items() if base.records}
        calls.storage += identity.operations
        return held

    # ---- write ----------------------------------------------------------------------------------------------
    def after_mailchimp(self, unit: Unit, items: list[Item], write: MailchimpWrite, counts: Counter[str]) -> None:
        if items:
            calls = items[0].state(_Calls)
            counts["storage_calls"] += calls.storage
            counts["erasure_calls_dataverse"] += calls.dataverse
        policy = self.settings.on_dynamics_delete
        for item in items:
            deleted = item.states.get(_Deleted)
            if not isinstance(deleted, _Deleted) or not deleted.record_ids:
                continue
            if policy == "keep":
                deleted.done = "ON_DYNAMICS_DELETE=keep: the member stays in the audience"
            elif policy == "archive":
                deleted.done = self._archive(unit, item, counts)
            else:
                deleted.done = self._forget(item, counts)

    def _archive(self, unit: Unit, item: Item, counts: Counter[str]) -> str:
        try:
            self.mailchimp.archive_member(unit.link.audience_id, item.group.member_hash)
        except MailchimpError as exc:
            if exc.status != 404:
                raise
            return "ON_DYNAMICS_DELETE=archive: the member was not in the audience"
        finally:
            counts["erasure_calls_mailchimp"] += 1
        item.member_after = "archived"
        return "ON_DYNAMICS_DELETE=archive: the member was archived in the audience"

    def _forget(self, item: Item, counts: Counter[str]) -> str:
        if not item.email:
            return "ON_DYNAMICS_DELETE=forget: no address known to forget"
        done = forget(self, item.email, reason=DELETED_RULE)
        counts["erasure_calls_mailchimp"] += len(self.settings.links)
        item.email = ""  # forgotten: no base is stored again for it
        if not done.done:
            raise RuntimeError(
                f"member {item.group.member_hash}: forgetting after its deletion in Dynamics is incomplete "
                f"({'; '.join(done.remaining)}); the batch will be retried"
            )
        return "ON_DYNAMICS_DELETE=forget: deleted permanently in every linked audience and forgotten"

    def dataverse_writes(self, unit: Unit, items: list[Item], counts: Counter[str]) -> list[DataverseWrite]:
        """Records of a member Mailchimp has forgotten show Archived (rule 9 puts it last of all statuses)."""
        column = self.settings.subscriber_status_column
        if not column:
            return []
        code = consent.SUBSCRIBER_STATUS_CODES["archived"]
        writes: list[DataverseWrite] = []
        for item in items:
            if item.mailchimp_failed != FORGOTTEN_REFUSAL:
                continue
            for record in item.records:
                if record.writable and record.status_code != code and record.record_id not in item.record_writes:
                    writes.append(
                        (
                            BatchOperation(
                                "PATCH",
                                f"{KIND_SETS[record.kind]}({record.record_id})",
                                {column: code},
                                {"If-Match": "*"},
                            ),
                            _ignore,
                        )
                    )
        return writes

    # ---- settle ---------------------------------------------------------------------------------------------
    def audits(self, unit: Unit, items: list[Item]) -> list[AuditEntry]:
        entries: list[AuditEntry] = []
        refused = [item for item in items if item.mailchimp_failed == FORGOTTEN_REFUSAL]
        if refused and not unit.dry_run:
            stones = Tombstones(self.storage)
            for item in refused:
                stones.add(item.group.member_hash, reason="mailchimp-forgotten", scope=unit.link.name)
                item.email = ""  # no base keeps the address Mailchimp has forgotten
            stale: dict[str, BaseRow | None] = {item.group.member_hash: None for item in refused if item.base}
            if stale:
                IdentityMap(self.storage).save(unit.link.name, stale)
        for item in items:
            deleted = item.states.get(_Deleted)
            if isinstance(deleted, _Deleted) and deleted.record_ids:
                entries.append(
                    AuditEntry(
                        item.group.member_hash,
                        DELETED_RULE,
                        deleted.record_ids,
                        mailchimp_old=item.base.member_status if item.base and item.member_after else None,
                        mailchimp_new=item.member_after if item.member_after == "archived" else None,
                        detail="the last record holding the address was deleted in Dynamics; "
                        + (deleted.done or f"ON_DYNAMICS_DELETE={self.settings.on_dynamics_delete} (planned)"),
                    )
                )
        return entries


def _skip_forgotten(item: Item) -> None:
    """Rule 12: the add becomes a skip; nothing is written and no base keeps the address."""
    decision = item.decision
    assert decision is not None
    skipped = tuple((record.record_id, RULE) for record in item.records) or ((item.group.member_hash, RULE),)
    item.decision = replace(decision, rule=RULE, mailchimp=None, records=(), skipped=skipped)
    item.email = ""
    item.email_writes = {}
    if item.member == UNKNOWN:
        item.member = None
        item.probed = False


def _ignore(result: BatchResult) -> None:
    """The Archived status is shown when it can be; a record refusing it changes nothing else."""

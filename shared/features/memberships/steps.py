"""The memberships feature's part in reconciling a unit.

Where the truth lives: each link's base (Table Storage) is the agreed status of its audience per record. Before
the consent rules run, the step reads the bases the record's other linked audiences hold for the same member
hashes (storage reads, no API call) and builds a ``RecordView`` per record: the columns as read, this audience's
agreed status and opt-out meaning, the other audiences' statuses. ``shared.rules.memberships`` then tells the
rules what "opted out" means in this audience (a global edit, a scoped edit, or nothing but the product's own
roll-up), and after the decision replaces the opt-out column writes by the roll-up of the statuses under
OPT_OUT_ROLLUP. A record in one audience only is left exactly as a single link treats it.

In the unit's one $batch the step adds an upsert of each record's membership row (when its status changed, the
record is new to the link, or the link's membership rows are being created for the first time) and a
``cbr_consentchange`` row for every consent change written to either side. A row for a change written to
Dynamics travels with that write (``BatchOperation.travels_with``): one change set, all or nothing.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from shared.adapters.dataverse import BatchOperation, BatchResult
from shared.adapters.ports import DataversePort, StoragePort
from shared.adapters.storage import SYNC_STATE, upsert
from shared.features.memberships.causes import CampaignCauses
from shared.features.memberships.schema import NAME_LENGTH, TEXT_LENGTH, Names
from shared.features.memberships.scoped import ScopedEdits
from shared.model.kinds import KIND_SETS, KINDS
from shared.model.snapshots import MemberSnapshot, RecordSnapshot
from shared.model.times import iso_seconds, now
from shared.rules import consent
from shared.rules.audit import AuditEntry
from shared.rules.memberships import (
    SIDE_DYNAMICS,
    SIDE_MAILCHIMP,
    RecordView,
    Reported,
    audience_opt_out,
    change_of,
    column_target,
    describe,
    reason_text,
    source_of,
)
from shared.settings import Link, Settings
from shared.state.identity import IdentityMap
from shared.sync.pipeline import DataverseWrite, Item, MailchimpWrite, Step, Unit

FEATURE = "membership"
UPGRADE_ROW = "memberships"  # SyncState row per link: the run that creates the link's membership rows
_IDS = uuid.UUID("9b7e4c1a-3f6d-4e2b-8a5c-1d0e7f9a2b64")
CAUSES = {
    "new-member": "added to the audience from Dynamics",
    "mailchimp-changed": "the person's status changed in Mailchimp",
    "both-changed-mailchimp-newer": "the person re-subscribed in Mailchimp after the change in Dynamics",
    "dynamics-opt-out": "opted out in Dynamics",
    "dynamics-opt-in": "opted in in Dynamics",
    "resubscribe-blocked": "an opt-in in Dynamics cannot re-subscribe an opted-out member: the opt-out was restored",
    "resubscribe-confirm": "an opt-in in Dynamics: Mailchimp asks the person to confirm",
    "first-meeting-opt-out-wins": "the two sides first met and disagreed: the opt-out won",
    "both-changed-opt-out-wins": "both sides changed: the opt-out won",
    "stale-base-opt-out-wins": "the sides disagreed with no change to explain it: the opt-out won",
    "member-archived-not-revived": "the member is archived in Mailchimp: not revived",
}


def membership_id(record_id: str, audience_id: str) -> str:
    """A membership row's id: the same for a (record, audience) pair in every run, so a write is an upsert."""
    return str(uuid.uuid5(_IDS, f"membership|{record_id.lower()}|{audience_id}"))


def change_id(run_id: str, audience_id: str, record_id: str, side: int) -> str:
    """A history row's id: a redelivered unit writes the same row again instead of a second one."""
    return str(uuid.uuid5(_IDS, f"change|{run_id}|{audience_id}|{record_id.lower()}|{side}"))


@dataclass
class PersonState:
    """One person's views of their records in this audience, by record id."""

    views: dict[str, RecordView] = field(default_factory=dict)
    moved: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # record id -> membership status moved


class MembershipStep(Step):
    name = FEATURE

    def __init__(self, settings: Settings, storage: StoragePort, dataverse: DataversePort) -> None:
        self.settings = settings
        self.storage = storage
        self.scoped = ScopedEdits(dataverse, storage, settings.dataverse_prefix, settings.links)
        self.names = Names(settings.dataverse_prefix)
        self.causes = CampaignCauses(dataverse, storage, self.names)
        self.policy = settings.opt_out_rollup
        self._upgrades: dict[str, str] = {}  # link -> the run that creates its rows, once read

    # ---- the first run after an upgrade ----------------------------------------------------------
    def upgrade_due(self, link: str, run_id: str, *, dry_run: bool) -> bool:
        """True for the run that creates a link's membership rows: it must be a full pass (every base is met).

        The run is recorded before it scans, so a redelivered scan of the same run answers the same."""
        row = self.storage.get(SYNC_STATE, link, UPGRADE_ROW)
        if row is not None:
            return str(row.get("run") or "") == run_id
        if dry_run:
            return False
        self.storage.write(SYNC_STATE, [upsert({"PartitionKey": link, "RowKey": UPGRADE_ROW, "run": run_id})])
        return True

    def _upgrading(self, unit: Unit) -> bool:
        if not unit.full:
            return False
        run = self._upgrades.get(unit.link.name)
        if run != unit.run_id:
            row = self.storage.get(SYNC_STATE, unit.link.name, UPGRADE_ROW) or {}
            run = self._upgrades[unit.link.name] = str(row.get("run") or "")
        return run == unit.run_id

    # ---- before and after the consent rules -------------------------------------------------------
    def prepared(self, unit: Unit, items: list[Item]) -> None:
        elsewhere = self._statuses_elsewhere(unit, items)
        edits = self.scoped.pending(unit.link.name) if items and not unit.dry_run else {}
        for item in items:
            base = item.base
            known = {record_id for record_id, _ in base.records} if base else set()
            scanned = {r.record_id for r in item.group.records}
            views = item.state(PersonState).views
            for index, record in enumerate(item.records):
                mine = record.record_id in known
                view = RecordView(
                    columns=record.opted_out,
                    status=base.member_status if base and mine else None,
                    agreed=(record.record_id in base.opted_out_records) if base and mine else None,
                    others=tuple(elsewhere.get(record.record_id, ())),
                )
                edit = edits.get(record.record_id)
                if edit is not None and edit[0] != view.status:
                    view = replace(view, scoped=edit[0])
                expected = view.expected(self.policy)
                if view.shared and record.record_id not in scanned and expected is not None:
                    # not edited since the last read: its columns hold what the roll-up wrote
                    view = replace(view, columns=expected)
                    item.records[index] = _with_columns(record, expected)
                views[record.record_id] = view

    def consent_records(self, unit: Unit, item: Item, records: list[consent.Record]) -> list[consent.Record]:
        views = item.state(PersonState).views
        return [
            replace(record, opted_out=audience_opt_out(view, self.policy))
            if (view := views.get(record.record_id)) is not None
            else record
            for record in records
        ]

    def causes_found(self, link: Link, causes: dict[str, str]) -> None:
        """The campaign behind members' status changes, learned after their rows were written (causes.py)."""
        self.causes.apply(link, causes, membership_id)

    def decided(self, unit: Unit, items: list[Item]) -> None:
        for item in items:
            self._roll_up(item)

    def after_mailchimp(self, unit: Unit, items: list[Item], write: MailchimpWrite, counts: Counter[str]) -> None:
        for item in items:
            if item.probed:  # decided again once the batch subscribe found the member
                self._roll_up(item)

    def _roll_up(self, item: Item) -> None:
        """The decision's opt-out column writes become the roll-up of the record's audiences (shared records)."""
        decision = item.decision
        if decision is None:
            return
        views = item.state(PersonState).views
        if not any(view.shared for view in views.values()):
            return
        skipped = {record_id for record_id, _ in decision.skipped}
        planned = {write.record_id: write for write in decision.records}
        writes: list[consent.RecordWrite] = []
        for record in item.records:
            view = views.get(record.record_id)
            write = planned.get(record.record_id)
            if view is not None and view.shared and record.record_id not in skipped and record.writable:
                target = column_target(view, decision.new_base.member_status, self.policy)
                if write is not None:
                    write = replace(write, opted_out=target)
                elif target is not None:
                    write = consent.RecordWrite(record.record_id, KINDS[record.kind].name, target, None)
            if write is not None and (write.opted_out is not None or write.subscriber_status is not None):
                writes.append(write)
        item.decision = replace(decision, records=tuple(writes))

    def _statuses_elsewhere(self, unit: Unit, items: list[Item]) -> dict[str, list[str]]:
        """Per record id, the agreed statuses of its memberships in the other linked audiences."""
        others = [link for link in self.settings.links if link.name != unit.link.name]
        found: dict[str, list[str]] = {}
        if not others or not items:
            return found
        hashes = [item.group.member_hash for item in items]
        identity = IdentityMap(self.storage)
        for other in others:
            for row in identity.load(other.name, hashes).values():
                if row.member_status:
                    for record_id, _ in row.records:
                        found.setdefault(record_id, []).append(row.member_status)
        return found

    def audits(self, unit: Unit, items: list[Item]) -> list[AuditEntry]:
        """Scoped edits this unit applied are done with (a refused Mailchimp write keeps its edit for the next run)."""
        applied = [
            record_id
            for item in items
            if item.decision is not None and not item.mailchimp_failed
            for record_id, view in item.state(PersonState).views.items()
            if view.scoped is not None
        ]
        self.scoped.applied(unit.link.name, applied)
        return [entry for item in items if (entry := self._membership_entry(unit, item)) is not None]

    def _membership_entry(self, unit: Unit, item: Item) -> AuditEntry | None:
        """A membership that moved with no opt-out column written is a consent write to Dynamics of its own: audited
        here, so that ConsentAudit stays the complete log."""
        moved = item.state(PersonState).moved
        if not moved or item.decision is None:
            return None
        status = self.names.column("status")
        known = item.known_member
        return AuditEntry(
            item.group.member_hash,
            item.decision.rule,
            sorted(moved),
            dynamics_old=json.dumps({rid: {status: old} for rid, (old, _) in sorted(moved.items())}),
            dynamics_new=json.dumps({rid: {status: new} for rid, (_, new) in sorted(moved.items())}),
            detail=f"audience membership ({unit.link.name})",
            member_last_changed=known.last_changed if known else None,
        )

    # ---- writes -------------------------------------------------------------------------------------
    def dataverse_writes(self, unit: Unit, items: list[Item], counts: Counter[str]) -> list[DataverseWrite]:
        upgrading = self._upgrading(unit)
        writes: list[DataverseWrite] = []
        for item in items:
            writes += self._person_writes(unit, item, upgrading, counts)
        return writes

    def _person_writes(self, unit: Unit, item: Item, upgrading: bool, counts: Counter[str]) -> list[DataverseWrite]:
        decision = item.decision
        if decision is None:
            return []
        base = item.base
        known = item.known_member
        old_status = base.member_status if base else None
        if item.mailchimp_failed:
            status = known.status if known else old_status
        else:
            status = item.member_after or decision.new_base.member_status
        in_base = {record_id for record_id, _ in base.records} if base else set()
        skipped = {record_id for record_id, _ in (*decision.skipped, *item.record_failures.items())}
        views = item.state(PersonState).views
        mailchimp_old = (known.status if known else None) or "absent"
        mailchimp_new = None
        if decision.mailchimp is not None and not item.mailchimp_failed:
            mailchimp_new = item.member_after or decision.mailchimp.status
        when = item.member_last_changed or (known.last_changed if known else None) or now()
        reported = _reported(item.group.member, status) if mailchimp_new is None else None
        writes: list[DataverseWrite] = []
        for record in item.records:
            if record.record_id in skipped or not record.writable:
                continue
            view = views.get(record.record_id)
            scoped = view is not None and change_of(view, self.policy) == "scoped"
            cause = reason_text(reported, self._cause(decision.rule, view), TEXT_LENGTH)
            if status and (status != old_status or record.record_id not in in_base or upgrading or scoped):
                source = source_of(decision.rule, scoped=scoped, reported=reported)
                body = self._membership_body(unit, record, status, source, when, cause)
                operation = BatchOperation(
                    "PATCH",
                    f"{self.names.membership_set}({membership_id(record.record_id, unit.link.audience_id)})",
                    body,
                    {},
                )
                writes.append((operation, _counted(counts, "membership_rows_written")))
            if mailchimp_new is not None and mailchimp_new != mailchimp_old:
                writes.append(
                    self._change(
                        unit, record, decision.rule, SIDE_MAILCHIMP, mailchimp_old, mailchimp_new, cause, counts
                    )
                )
            columns = {c: v for c, v in item.record_writes.get(record.record_id, {}).items() if c in record.opt_out}
            moved = status != old_status and old_status is not None and mailchimp_new is None
            if moved and record.record_id not in item.record_writes:  # no ConsentAudit row shows it otherwise
                item.state(PersonState).moved[record.record_id] = (old_status, status or "")
            if columns or moved:
                opted_out = next(iter(columns.values())) if columns else None
                old = describe(old_status, record.opted_out if columns else None)
                new = describe(status, opted_out)
                # one change set with the write it records: the record's PATCH when it sets the opt-out columns,
                # else the membership row; a refused write then leaves no row saying the change happened
                tie = record.record_id if columns else membership_id(record.record_id, unit.link.audience_id)
                writes.append(
                    self._change(unit, record, decision.rule, SIDE_DYNAMICS, old, new, cause, counts, travels_with=tie)
                )
        return writes

    def _membership_body(
        self, unit: Unit, record: RecordSnapshot, status: str, source: int, when: datetime, reason: str
    ) -> dict[str, Any]:
        c = self.names.column
        return {
            c("name"): f"{unit.link.name}: {status}"[:NAME_LENGTH],
            c("audienceid"): unit.link.audience_id,
            c("audiencename"): unit.link.name,
            c("status"): consent.SUBSCRIBER_STATUS_CODES[status],
            c("statuschangedon"): iso_seconds(when),
            c("source"): source,
            c("reason"): reason[:TEXT_LENGTH],
            f"{self.names.navigation(record.kind)}@odata.bind": f"/{KIND_SETS[record.kind]}({record.record_id})",
        }

    def _change(
        self,
        unit: Unit,
        record: RecordSnapshot,
        rule: str,
        side: int,
        old: str,
        new: str,
        cause: str,
        counts: Counter[str],
        *,
        travels_with: str | None = None,
    ) -> DataverseWrite:
        """A history row; ``travels_with`` names the row whose write it records (see BatchOperation)."""
        c = self.names.column
        body = {
            c("name"): f"{rule}: {old} → {new}"[:NAME_LENGTH],
            c("audienceid"): unit.link.audience_id,
            c("rule"): rule,
            c("side"): side,
            c("oldvalue"): old[:TEXT_LENGTH],
            c("newvalue"): new[:TEXT_LENGTH],
            c("cause"): (cause or rule)[:TEXT_LENGTH],
            c("occurredon"): iso_seconds(now()),
            c("runid"): unit.run_id,
            f"{self.names.navigation(record.kind)}@odata.bind": f"/{KIND_SETS[record.kind]}({record.record_id})",
        }
        row = change_id(unit.run_id, unit.link.audience_id, record.record_id, side)
        operation = BatchOperation("PATCH", f"{self.names.change_set}({row})", body, {}, travels_with=travels_with)
        return operation, _counted(counts, "consent_history_rows_written")

    def _cause(self, rule: str, view: RecordView | None) -> str:
        """Why, in words: the rule's, and whether a user's change was global or for this audience only."""
        change = change_of(view, self.policy) if view is not None else "none"
        words = CAUSES.get(rule, "")
        if change == "global":
            return f"{words or rule} (global: the record's opt-out columns)"
        if change == "scoped":
            return f"{words or rule} (this audience only: its membership's status)"
        return words


def _reported(member: MemberSnapshot | None, status: str | None) -> Reported | None:
    """What Mailchimp said about the change behind the member's status, when the membership takes that status."""
    if member is None or member.status != status:
        return None
    return Reported(member.status, member.unsubscribe_reason, member.event_reason, member.campaign_id)


def _with_columns(record: RecordSnapshot, opted_out: bool) -> RecordSnapshot:
    return replace(record, opt_out=dict.fromkeys(record.opt_out, opted_out))


def _counted(counts: Counter[str], name: str) -> Callable[[BatchResult], None]:
    def settle(result: BatchResult) -> None:
        counts[f"{name if result.status < 400 else name.replace('written', 'refused')}"] += 1

    return settle

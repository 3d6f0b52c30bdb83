"""Reconcile a unit: three-way merge per member hash, bulk writes to both sides, bases and audit.

Order of work, so that a crash at any point loses nothing: decide; write Mailchimp (one batch
subscribe); write Dataverse (one $batch); then store the new bases and the audit rows. The caller marks
the unit's batches done afterwards; a redelivery of a unit that died midway decides again from the
bases, and the writes it repeats change nothing. The phases and the hooks steps plug into are described
in shared/sync/pipeline.py.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from shared.adapters.mailchimp import PAGE_SIZE_MAX
from shared.adapters.ports import DataversePort, MailchimpPort, StoragePort
from shared.model.kinds import KINDS
from shared.model.snapshots import Group, RecordSnapshot
from shared.model.times import now
from shared.rules import addresses, consent
from shared.rules.audit import AuditEntry
from shared.settings import Settings
from shared.state.aliases import AliasIndex
from shared.state.audit import AuditLog
from shared.state.identity import BaseRow, IdentityMap
from shared.sync import writers
from shared.sync.moves import Moves, apply_moves, chosen_interests
from shared.sync.pipeline import UNKNOWN, Item, Outcome, Step, Unit
from shared.sync.scan import archived_pages

log = logging.getLogger("consent_bridge.reconcile")

RECORD_FIELDS = ["email_address", "status", "last_changed", "contact_id", "timestamp_opt", "interests"]
ASK_ONE_BY_ONE = 1  # a new address is read by itself; more are looked up among the audience's archived members


class Reconciler:
    def __init__(
        self,
        *,
        settings: Settings,
        storage: StoragePort,
        mailchimp: MailchimpPort,
        dataverse: DataversePort,
        steps: Sequence[Step] = (),
        identity: IdentityMap | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.mailchimp = mailchimp
        self.dataverse = dataverse
        self.steps = list(steps)
        self.identity = identity or IdentityMap(storage)
        self.policy = consent.Policy(
            resubscribe=settings.resubscribe_policy, new_member_status=settings.new_member_status
        )

    def reconcile(self, unit: Unit) -> Outcome:
        """The one entry point: a run's batches, a real-time event or an erasure, as a unit of member hashes."""
        outcome = Outcome(unit.batch_id)
        items, moves = self._prepare(unit)
        for step in self.steps:
            step.prepared(unit, items)
        self._decide_all(unit, items)
        if not unit.dry_run:
            self._write_mailchimp(unit, items, outcome.counts)
        self._plan_dynamics(items, self._statuses_elsewhere(unit, items))
        if not unit.dry_run:
            writers.write_dataverse(self.dataverse, unit, items, self.steps, outcome.counts)
            writers.write_tags(self.mailchimp, unit.link, items, outcome.counts)
        outcome.planned = [
            *moves.audits,
            *(self._audit_entry(item) for item in items),
            *(entry for step in self.steps for entry in step.audits(unit, items)),
        ]
        for planned in outcome.planned:
            outcome.counts[f"rule:{planned.rule}"] += 1
            for _, reason in planned.skipped:
                outcome.counts[f"skip:{reason}"] += 1
        if not unit.dry_run:
            self._settle(unit, items, outcome, moves)
        return outcome

    # ---- prepare --------------------------------------------------------------------------
    def _prepare(self, unit: Unit) -> tuple[list[Item], Moves]:
        link = unit.link
        hashes = [g.member_hash for g in unit.groups]
        old_hashes = [h for g in unit.groups for h in [*(m[1] for m in g.moved), g.renamed_from] if h]
        bases = {} if unit.fresh else self.identity.load(link.name, [*hashes, *old_hashes])
        moves = apply_moves(self.mailchimp, link, unit.groups, bases, dry_run=unit.dry_run)
        groups = [g for g in unit.groups if g.member_hash not in moves.gone]
        for group in groups:
            group.records = [r for r in group.records if r.record_id not in moves.held]
        items = [self._item(g, bases.get(g.member_hash), unit) for g in groups]
        for item in items:
            item.email_writes = {
                rid: email for rid, email in moves.email_writes.items() if any(r.record_id == rid for r in item.records)
            }
        self._resolve_unknown(unit, items)
        return items, moves

    def _item(self, group: Group, base: BaseRow | None, unit: Unit) -> Item:
        email = group.email or (base.email if base else "")
        records = list(group.records)
        if base is not None:  # records the map knows, unchanged since (they would be in the scan otherwise)
            seen = {r.record_id for r in records}
            for record_id, kind in base.records:
                if record_id not in seen and record_id not in group.removed:
                    opted_out = record_id in base.opted_out_records
                    records.append(
                        RecordSnapshot(
                            record_id,
                            kind,
                            email,
                            dict.fromkeys(self.settings.opt_out_columns, opted_out),
                            base.records_modifiedon or now(),
                            0,
                            None,
                        )
                    )
        member: consent.Member | str | None
        if group.member is not None:
            snapshot = group.member
            member = consent.Member(snapshot.status, snapshot.last_changed, snapshot.email, snapshot.opted_in)
        elif group.member_seen or unit.fresh:
            member = None
        elif base is not None:
            member = (
                None
                if base.member_status is None
                else consent.Member(base.member_status, base.member_last_changed or now(), email)
            )
        else:
            member = UNKNOWN
        chosen = group.member.interests if group.member is not None else None
        return Item(
            group,
            base,
            email,
            member,
            records,
            probed=member == UNKNOWN,
            member_interests=None if chosen is None else frozenset(chosen),
        )

    def _resolve_unknown(self, unit: Unit, items: list[Item]) -> None:
        """New records whose address may already be in the audience: ask Mailchimp before deciding.

        Opted-out records must not be added, so their member is read one by one. Records that are not opted
        out would be probed by the batch subscribe itself (status_if_new only touches new members), but a
        member the audience holds archived is one a batch subscribe brings back, and archiving hides why (it
        may follow an unsubscribe): so up to ``ASK_ONE_BY_ONE`` of them are read one by one too, and more are
        looked up in a read of the audience's archived members; those it settles as not archived are probed."""
        unknown = [item for item in items if item.member == UNKNOWN]
        consenting = [item for item in unknown if any(not r.opted_out for r in item.records if r.active)]
        archived, settled = self._archived(unit, consenting) if len(consenting) > ASK_ONE_BY_ONE else ({}, set())
        for item in unknown:
            hashed = item.group.member_hash
            if hashed in archived:
                found: dict[str, Any] | None = archived[hashed]
            elif hashed in settled:
                continue  # not archived: probed by the batch subscribe
            else:
                found = self.mailchimp.member(unit.link.audience_id, item.group.member_hash, fields=RECORD_FIELDS)
            item.member = writers.member_of(found) if found else None
            chosen = chosen_interests(found) if found else None
            item.member_interests = None if chosen is None else frozenset(chosen)
            item.probed = False

    def _archived(self, unit: Unit, items: list[Item]) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The items' members the audience holds archived, and the hashes the read settled (found, or known not to
        be archived). An audience may hold many archived members: the read stops once its pages have cost as many
        calls as asking for each member still unsettled would, and leaves those to be asked one by one."""
        wanted = {item.group.member_hash for item in items}
        found: dict[str, dict[str, Any]] = {}
        for read, page in enumerate(archived_pages(self.mailchimp, unit.link.audience_id), start=1):
            for member in page:
                hashed = addresses.member_hash(member["email_address"])
                if hashed in wanted:
                    found[hashed] = {**member, "status": "archived"}
            left = len(wanted) - len(found)
            if left == 0 or len(page) < PAGE_SIZE_MAX:  # every one found, or that was the last page
                break
            if read >= left:
                return found, set(found)
        return found, wanted

    # ---- decide ---------------------------------------------------------------------------
    def _decide_all(self, unit: Unit, items: list[Item]) -> None:
        for item in items:
            self._decide(unit, item)
        for step in self.steps:
            step.decided(unit, items)

    def _decide(self, unit: Unit, item: Item) -> None:
        member = None if item.member == UNKNOWN else item.known_member
        base = (
            None
            if item.base is None
            else consent.Base(
                item.base.member_status,
                item.base.opted_out,
                item.base.member_last_changed,
                item.base.records_modifiedon,
                frozenset(item.base.opted_out_records),
            )
        )
        records = [
            consent.Record(
                r.record_id,
                KINDS[r.kind].name,
                r.email if r.email is not None else item.email,
                r.opted_out,
                r.modifiedon,
                r.active,
                r.writable,
            )
            for r in item.records
        ]
        for step in self.steps:
            records = step.consent_records(unit, item, records)
        item.decision = consent.decide(member, records, base, self.policy)

    # ---- write ----------------------------------------------------------------------------
    def _write_mailchimp(self, unit: Unit, items: list[Item], counts: Counter[str]) -> None:
        writers.write_mailchimp(self.mailchimp, unit, items, self.steps, counts)
        self._settle_probes(unit, items, counts)
        for step in self.steps:
            step.after_mailchimp(
                unit,
                items,
                lambda late: writers.write_mailchimp(self.mailchimp, unit, late, self.steps, counts, statuses=False),
                counts,
            )

    def _settle_probes(self, unit: Unit, items: list[Item], counts: Counter[str]) -> None:
        """A probe found an existing member: this is a first meeting, decided again with the real status."""
        again = [
            item
            for item in items
            if item.known_member is not None
            and item.member_after is None
            and item.decision
            and item.decision.mailchimp
            and item.decision.mailchimp.action == "add"
        ]
        if not again:
            return
        for item in again:
            self._decide(unit, item)
        followups = [item for item in again if item.decision and item.decision.mailchimp]
        for item in again:
            if item not in followups and item.known_member is not None:
                item.member_after = item.known_member.status
        if followups:
            writers.write_mailchimp(self.mailchimp, unit, followups, self.steps, counts)

    def _statuses_elsewhere(self, unit: Unit, items: list[Item]) -> dict[str, list[str]]:
        """Rule 9: per record, its member's status in the other audiences whose lists hold that record."""
        others = [other for other in self.settings.links if other.name != unit.link.name]
        if not others:
            return {}
        hashes = [item.group.member_hash for item in items]
        found: dict[str, list[str]] = {}
        for other in others:
            for row in self.identity.load(other.name, hashes).values():
                if row.member_status:
                    for record_id, _ in row.records:
                        found.setdefault(record_id, []).append(row.member_status)
        return found

    def _plan_dynamics(self, items: list[Item], statuses: dict[str, list[str]]) -> None:
        columns = self.settings.opt_out_columns
        status_column = self.settings.subscriber_status_column
        for item in items:
            decision = item.decision
            if decision is None:
                continue
            current = {r.record_id: r for r in item.records}
            known = item.known_member
            member_status = (
                item.member_after
                or (decision.mailchimp.status if decision.mailchimp else None)
                or (known.status if known else None)
            )
            if item.mailchimp_failed:
                member_status = known.status if known else None
            for write in decision.records:
                record = current.get(write.record_id)
                if record is None or not record.writable:
                    continue
                body: dict[str, Any] = {}
                if write.opted_out is not None and not item.mailchimp_failed:
                    body.update({c: write.opted_out for c in columns if record.opt_out.get(c) != write.opted_out})
                own_status = member_status
                if own_status is None and decision.mailchimp is None:
                    own_status = write.subscriber_status  # an archived member is absent from the read
                if status_column and own_status:
                    combined = consent.subscriber_status_for([own_status, *statuses.get(write.record_id, [])])
                    code = consent.SUBSCRIBER_STATUS_CODES.get(combined or "")
                    if code is not None and record.status_code != code:
                        body[status_column] = code
                if body:
                    item.record_writes[write.record_id] = body
            for record_id, email in item.email_writes.items():
                record = current.get(record_id)
                if record is not None and record.writable:
                    item.record_writes.setdefault(record_id, {})["emailaddress1"] = email

    # ---- settle ---------------------------------------------------------------------------
    def _audit_entry(self, item: Item) -> AuditEntry:
        decision = item.decision
        assert decision is not None
        known = item.known_member
        entry = AuditEntry(
            item.group.member_hash,
            decision.rule,
            [r.record_id for r in item.records],
            skipped=list(decision.skipped),
            member_last_changed=known.last_changed if known else None,
            records_modifiedon=max((r.modifiedon for r in item.records), default=None),
        )
        if decision.mailchimp and not item.mailchimp_failed:
            entry.mailchimp_old = (known.status if known else None) or "absent"
            entry.mailchimp_new = item.member_after or decision.mailchimp.status
            if entry.mailchimp_old == entry.mailchimp_new:
                entry.mailchimp_new = None
        if item.mailchimp_failed:
            entry.skipped.append((item.group.member_hash, item.mailchimp_failed))
        written = {rid: body for rid, body in item.record_writes.items() if rid not in item.record_failures}
        if written:
            before = {r.record_id: r for r in item.records}
            entry.dynamics_old = json.dumps(
                {
                    rid: _describe(before[rid], body, self.settings.subscriber_status_column)
                    for rid, body in written.items()
                }
            )
            entry.dynamics_new = json.dumps(written)
        entry.skipped += [(rid, reason) for rid, reason in item.record_failures.items()]
        item.skipped = list(entry.skipped)
        if item.group.removed:
            entry.detail = f"left the marketing list: {len(item.group.removed)} record(s)"
        base = item.base
        entry.repeated = (
            base is not None
            and entry.side == "none"
            and not item.group.removed
            and (
                base.member_status,
                base.opted_out,
                sorted(base.opted_out_records),
                sorted(r[0] for r in base.records),
                sorted(map(tuple, base.skipped)),
            )
            == (
                decision.new_base.member_status,
                decision.new_base.opted_out,
                sorted(decision.new_base.opted_out_records),
                sorted(r.record_id for r in item.records),
                sorted(entry.skipped),
            )
        )
        return entry

    def _settle(self, unit: Unit, items: list[Item], outcome: Outcome, moves: Moves) -> None:
        link_name = unit.link.name
        changes: dict[str, BaseRow | None] = dict(moves.bases)
        for item in items:
            row = self._new_base(item)
            if row is not None and (
                item.base is None or item.group.member_hash in moves.arrived or row.encode() != item.base.encode()
            ):
                changes[item.group.member_hash] = row  # an unchanged base is not written again (unless it moved)
        if changes:
            self.identity.save(link_name, changes)
        for kind, entries in (("records", moves.records), ("contacts", moves.contacts)):
            if entries:
                index = AliasIndex(self.storage, link_name, kind)
                index.update(entries)
                outcome.counts["storage_calls"] += index.operations
        kept = [entry for entry in outcome.planned if entry.worth_keeping]
        for entry in kept:
            for step in self.steps:
                entry.detail = step.audit_detail(unit, entry, entry.detail)
            counted = f"{entry.feature}_" if entry.feature else ""  # consent and feature changes apart
            outcome.counts[f"{counted}mailchimp_writes"] += entry.mailchimp_new is not None
            outcome.counts[f"{counted}dynamics_writes"] += entry.dynamics_new is not None
            if entry.mailchimp_new is not None:
                outcome.counts[f"applied:mailchimp:{entry.rule}"] += 1
            if entry.dynamics_new is not None:
                outcome.counts[f"applied:dataverse:{entry.rule}"] += 1
            outcome.counts["skipped"] += len(entry.skipped)
        outcome.counts["storage_calls"] += AuditLog(self.storage).write(link_name, unit.run_id, kept)
        outcome.counts["storage_calls"] += self.identity.operations

    def _new_base(self, item: Item) -> BaseRow | None:
        decision = item.decision
        assert decision is not None
        if not item.email:
            return None
        records = [(r.record_id, r.kind) for r in item.records]
        if not records and item.base is None:
            return None  # a member who is not in the marketing list: nothing to remember
        new = decision.new_base
        base = item.base or BaseRow(item.email)
        member_status = new.member_status
        member_last_changed = item.member_last_changed or new.member_last_changed
        if item.mailchimp_failed:
            member_status = base.member_status if item.base else None
            member_last_changed = base.member_last_changed
        opted_out, opted_out_records = new.opted_out, sorted(new.opted_out_records)
        if item.record_failures:  # what Dynamics holds now, not what was intended
            opted_out_records = sorted(r.record_id for r in item.records if r.opted_out)
            opted_out = bool(opted_out_records)
        records_modifiedon: datetime | None = max(
            filter(None, (new.records_modifiedon, item.records_written_at)), default=None
        )
        row = replace(
            base,  # fields the steps own are carried over unless a step settles them anew
            email=item.email,
            records=records,
            member_status=member_status,
            opted_out=opted_out,
            member_last_changed=member_last_changed,
            records_modifiedon=records_modifiedon,
            contact_id=(item.group.member.contact_id if item.group.member else None) or base.contact_id,
            tagged=(item.tagged or base.tagged) and bool(records),
            refused=item.mailchimp_failed,
            opted_out_records=opted_out_records,
            skipped=sorted([list(k) for k in item.skipped]),
        )
        for step in self.steps:
            row = step.settle_base(item, row)
        return row


def _describe(record: RecordSnapshot, body: dict[str, Any], status_column: str | None) -> dict[str, Any]:
    """The values the written columns held before the write, as far as the scan read them."""
    before: dict[str, Any] = {}
    for column in body:
        if column in record.opt_out:
            before[column] = record.opt_out[column]
        elif column == status_column:
            before[column] = record.status_code
        elif column == "emailaddress1":
            before[column] = "(the previous address)"  # addresses never go into the audit
    return before

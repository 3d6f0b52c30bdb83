"""The fields feature's part in reconciling a unit: merge each person's mapped fields (rule 11), send merge fields
in the batch subscribe entries and columns in the record PATCHes the unit makes anyway, settle a digest per field
into the base, and audit every change (as a field change, not as consent)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from shared.adapters.dataverse import BatchResult, dataverse_refusal
from shared.adapters.ports import MailchimpPort, StoragePort
from shared.features.fields.definitions import Definitions, load_definitions, read_definitions, save_definitions
from shared.rules import fields
from shared.rules.audit import AuditEntry
from shared.rules.fields import FEATURE, MergeDefinition, Reading
from shared.settings import FieldMapping
from shared.state.identity import BaseRow
from shared.sync.pipeline import UNKNOWN, Item, Step, Unit

log = logging.getLogger("consent_bridge.fields")

REFUSED_MARK = "!"
NOT_EDITABLE = ("archived", "cleaned")  # statuses whose merge fields are not written


@dataclass
class FieldWork:
    """One field of one person in a unit."""

    mapping: FieldMapping
    definition: MergeDefinition
    decision: fields.FieldDecision
    mailchimp_value: Any = None  # what goes to Mailchimp (write_mailchimp)
    dynamics_columns: dict[str, dict[str, Any]] = field(default_factory=dict)  # record id -> columns
    mailchimp_before: str = ""  # digest of what Mailchimp held, or "" when unknown
    dynamics_before: str = ""
    refused: str | None = None  # why the value was not written
    refused_digest: str | None = None  # the refused value, so that it is not tried again unchanged
    cut: bool = False
    wanted: str = ""  # digest of the value written to Dynamics


@dataclass
class PersonFields:
    """One person's field work in a unit."""

    work: dict[str, FieldWork] = field(default_factory=dict)  # by merge tag
    sent: bool = False
    entry_failed: str | None = None
    record_failures: dict[str, str] = field(default_factory=dict)
    settled: dict[str, str] | None = None


class FieldStep(Step):
    name = FEATURE

    def __init__(self, field_map: tuple[FieldMapping, ...], storage: StoragePort, mailchimp: MailchimpPort) -> None:
        self.field_map = field_map
        self.storage = storage
        self.mailchimp = mailchimp
        self._definitions: dict[tuple[str, str], Definitions] = {}

    def definitions(self, unit: Unit) -> Definitions:
        """The audience's merge fields for this unit: as the run's scan kept them, else read once."""
        key = (unit.link.name, unit.run_id)
        found = self._definitions.get(key)
        if found is None:
            found = load_definitions(self.storage, unit.link.name)
            if found is None:
                found = read_definitions(self.mailchimp, unit.link.audience_id)
                if not unit.dry_run:
                    save_definitions(self.storage, unit.link.name, found)
            self._definitions = {key: found}  # one unit's worth: a long-lived process does not grow
        return found

    # ---- decide -------------------------------------------------------------------------------------
    def decided(self, unit: Unit, items: list[Item]) -> None:
        if not self.field_map:
            return
        definitions = self.definitions(unit)
        for item in items:
            self._plan(unit, item, definitions)

    def _plan(self, unit: Unit, item: Item, definitions: Definitions) -> None:
        decision = item.decision
        if decision is None or not item.records:
            return  # a member who is not in the marketing list: nothing in Dynamics to keep in step
        kind = item.records[0].kind
        skipped = {record_id for record_id, _ in decision.skipped}
        person = item.state(PersonFields)
        base_fields = item.base.fields if item.base else {}
        records = [(r.record_id, r.modifiedon, r.active, r.fields) for r in item.records if r.record_id not in skipped]
        since = item.base.records_modifiedon if item.base and item.base.fields else None
        snapshot = item.group.member
        member = item.known_member
        absent = item.member == UNKNOWN or member is None
        mailchimp_writable = (decision.mailchimp is not None and decision.mailchimp.status not in NOT_EDITABLE) or (
            member is not None and member.status not in NOT_EDITABLE and item.member != UNKNOWN
        )
        if decision.mailchimp is None and member is None:
            mailchimp_writable = False  # never create a member for a field: only consent adds people
        for mapping in fields.for_kind(self.field_map, kind):
            definition = definitions.get(mapping.merge_field)
            if definition is None:
                continue  # the audience has no such merge field: `check` names it, `provision` creates it
            stored = base_fields.get(mapping.merge_field, "")
            base, _, refused_before = stored.partition(REFUSED_MARK)
            if absent:
                m_raw: Any = ""
                m_reading = Reading("", True)
            elif snapshot is not None and snapshot.merge_fields is not None:
                m_raw = snapshot.merge_fields.get(mapping.merge_field, "")
                m_reading = Reading(fields.mailchimp_form(definition, m_raw), True)
            else:
                m_raw, m_reading = None, Reading()
            speaker, d_raw, d_converted = self._dynamics_value(mapping, definition, records, base, since)
            d_reading = Reading()
            if speaker is not None:
                d_value = d_converted.value if d_converted.refused is None else ["refused", repr(d_raw)]
                d_reading = Reading(d_value, True)
            choice = fields.merge(
                mapping.direction,
                m_reading,
                d_reading,
                base or None,
                member_changed=member.last_changed if member is not None else None,
                records_changed=records[speaker][1] if speaker is not None else None,
            )
            work = FieldWork(
                mapping,
                definition,
                choice,
                mailchimp_before=fields.digest(m_reading.value) if m_reading.known else "",
                dynamics_before=fields.digest(d_reading.value) if d_reading.known else "",
            )
            if choice.write_mailchimp:
                self._plan_mailchimp(work, d_converted, refused_before, mailchimp_writable)
            if choice.write_dynamics:
                self._plan_dynamics(work, item, m_raw, d_raw, refused_before, skipped)
            if choice.write_mailchimp or choice.write_dynamics or choice.agreed is not None:
                person.work[mapping.merge_field] = work

    @staticmethod
    def _dynamics_value(
        mapping: FieldMapping, definition: MergeDefinition, records: list[Any], base: str, since: datetime | None
    ) -> tuple[int | None, Any, fields.Converted]:
        """The record that speaks for the person on this field, its value and that value in Mailchimp's form.

        After an agreement only a record whose value moved away from it speaks (the most recently modified of
        them, modified since): a record touched for another reason, or echoing the sync's own write, keeps the
        agreed value; none: Dynamics has not changed the field."""
        converted = {
            index: fields.to_mailchimp(definition, (values or {}).get(mapping.column))
            for index, (_, _, _, values) in enumerate(records)
            if values is not None
        }
        candidates = records
        if base:
            moved = {i for i, c in converted.items() if c.refused is not None or fields.digest(c.value) != base}
            candidates = [r if i in moved else (r[0], r[1], r[2], None) for i, r in enumerate(records)]
        speaker = fields.speaking_record(candidates, since if base else None)
        if speaker is None:
            return None, None, fields.Converted()
        return speaker, (records[speaker][3] or {}).get(mapping.column), converted[speaker]

    @staticmethod
    def _plan_mailchimp(work: FieldWork, converted: fields.Converted, refused_before: str, writable: bool) -> None:
        if converted.refused is not None:
            work.refused = converted.refused
            work.refused_digest = fields.digest(["refused", converted.refused])
        elif not writable:
            work.decision.write_mailchimp = False
            work.decision.agreed = None  # written once the member can take it
        else:
            work.mailchimp_value = converted.value
            work.cut = converted.cut
            if refused_before and refused_before == fields.digest(converted.value):
                work.refused = "refused-before"  # Mailchimp refused this very value last time: not sent again
                work.refused_digest = refused_before
        if work.refused is not None:
            work.decision.write_mailchimp = False

    @staticmethod
    def _plan_dynamics(
        work: FieldWork, item: Item, m_raw: Any, d_raw: Any, refused_before: str, skipped: set[str]
    ) -> None:
        converted = fields.to_dynamics(work.definition, m_raw, d_raw)
        if converted.refused is not None:
            work.refused = converted.refused
            work.refused_digest = fields.digest(["refused", converted.refused])
            work.decision.write_dynamics = False
            return
        wanted = work.wanted = fields.digest(fields.mailchimp_form(work.definition, m_raw))
        if refused_before and refused_before == wanted:
            work.refused, work.refused_digest = "refused-before", refused_before
            work.decision.write_dynamics = False
            return
        columns = fields.patch_columns(work.mapping.column, converted.value)
        for record in item.records:
            if record.record_id in skipped or not record.writable:
                continue
            if record.fields is not None:
                held = fields.to_mailchimp(work.definition, record.fields.get(work.mapping.column))
                if held.refused is None and fields.digest(held.value) == wanted:
                    continue  # this record holds the value already
            work.dynamics_columns[record.record_id] = columns
        if not work.dynamics_columns:
            work.decision.write_dynamics = False

    # ---- write --------------------------------------------------------------------------------------
    def mailchimp_fields(self, unit: Unit, item: Item, *, with_status: bool, counts: Counter[str]) -> dict[str, Any]:
        person = item.state(PersonFields)
        merge = {tag: w.mailchimp_value for tag, w in person.work.items() if w.decision.write_mailchimp}
        if person.sent or not merge:
            return {}
        person.sent = True
        if not with_status:
            counts["field_members_written"] += 1
        return {"merge_fields": merge}

    def mailchimp_field_refused(self, unit: Unit, item: Item, tag: str, message: str, counts: Counter[str]) -> bool:
        work = item.state(PersonFields).work.get(tag)
        if work is None or not work.decision.write_mailchimp:
            return False
        work.decision.write_mailchimp = False
        work.refused = "merge-field-refused"
        work.refused_digest = fields.digest(work.mailchimp_value)
        counts["field_values_refused"] += 1
        # the refusal's wording may quote the value (a name, say): only the tag is logged, the audit says why
        log.info("member %s: merge field %s refused a value", item.group.member_hash, tag)
        return True

    def mailchimp_refused(self, unit: Unit, item: Item, reason: str, counts: Counter[str]) -> None:
        item.state(PersonFields).entry_failed = reason

    def record_columns(self, unit: Unit, item: Item) -> dict[str, dict[str, Any]]:
        person = item.state(PersonFields)
        columns: dict[str, dict[str, Any]] = {}
        for work in person.work.values():
            if work.decision.write_dynamics:
                for record_id, values in work.dynamics_columns.items():
                    columns.setdefault(record_id, {}).update(values)
        return columns

    def record_patched(self, unit: Unit, item: Item, record_id: str, result: BatchResult) -> None:
        if result.status >= 400:
            item.state(PersonFields).record_failures[record_id] = dataverse_refusal(result)

    # ---- settle -------------------------------------------------------------------------------------
    def audits(self, unit: Unit, items: list[Item]) -> list[AuditEntry]:
        found: list[AuditEntry] = []
        for item in items:
            person = item.state(PersonFields)
            if not person.work:
                continue
            person.settled = self._settle(item, person)
            found += self._entries(item, person)
        return found

    def _settle(self, item: Item, person: PersonFields) -> dict[str, str]:
        settled = dict(item.base.fields) if item.base else {}
        for tag, work in person.work.items():
            choice = work.decision
            old = settled.get(tag, "").partition(REFUSED_MARK)[0]
            mailchimp_ok = not choice.write_mailchimp or person.entry_failed is None
            dynamics_failed = [r for r in work.dynamics_columns if r in person.record_failures]
            dynamics_ok = not choice.write_dynamics or not dynamics_failed
            if work.refused is not None:
                value = old + REFUSED_MARK + (work.refused_digest or "")
            elif choice.agreed is not None and mailchimp_ok and dynamics_ok:
                value = choice.agreed
            elif choice.write_dynamics and len(dynamics_failed) == len(work.dynamics_columns):
                # Dataverse refused the value: not sent again unchanged, so the record's consent writes go alone
                value = old + REFUSED_MARK + work.wanted
            else:
                value = old
            if value:
                settled[tag] = value
            else:
                settled.pop(tag, None)
        return settled

    def _entries(self, item: Item, person: PersonFields) -> list[AuditEntry]:
        by_rule: dict[str, list[tuple[str, FieldWork]]] = {}
        for tag, work in person.work.items():
            if work.decision.write_mailchimp or work.decision.write_dynamics or work.refused:
                if work.refused == "refused-before":
                    continue  # audited when it was first refused
                by_rule.setdefault(work.decision.rule, []).append((tag, work))
        entries = []
        record_ids = [r.record_id for r in item.records]
        member = item.known_member
        newest = max((r.modifiedon for r in item.records), default=None)
        for rule, works in by_rule.items():
            entry = AuditEntry(
                item.group.member_hash,
                rule,
                record_ids,
                feature=FEATURE,
                member_last_changed=member.last_changed if member else None,
                records_modifiedon=newest,
            )
            # values are people's data: the audit keeps a digest of each, never the value
            to_mailchimp = {t: w for t, w in works if w.decision.write_mailchimp}
            if to_mailchimp and person.entry_failed is None:
                entry.mailchimp_old = json.dumps({t: w.mailchimp_before for t, w in to_mailchimp.items()})
                entry.mailchimp_new = json.dumps({t: fields.digest(w.mailchimp_value) for t, w in to_mailchimp.items()})
            elif to_mailchimp and not item.mailchimp_failed:
                # the entry carried only fields and was refused as a whole (a consent refusal is audited there)
                entry.skipped.append((item.group.member_hash, person.entry_failed or "mailchimp-refused"))
            old: dict[str, dict[str, str]] = {}
            new: dict[str, dict[str, str]] = {}
            for _, work in works:
                if not work.decision.write_dynamics:
                    continue
                for record_id, columns in work.dynamics_columns.items():
                    failure = person.record_failures.get(record_id)
                    if failure:
                        entry.skipped.append((record_id, failure))
                        continue
                    for column in columns:
                        old.setdefault(record_id, {})[column] = work.dynamics_before
                        new.setdefault(record_id, {})[column] = fields.digest(columns[column])
            if new:
                entry.dynamics_old = json.dumps(old, sort_keys=True)
                entry.dynamics_new = json.dumps(new, sort_keys=True)
            notes = []
            for tag, work in works:
                if work.refused:
                    entry.skipped.append((tag, "field-refused"))
                    notes.append(f"{tag} not written ({work.refused})")
                if work.cut:
                    notes.append(f"{tag} cut to {min(work.definition.size, fields.TEXT_LIMIT)} characters")
            written = ", ".join(
                tag
                for tag, w in works
                if (w.decision.write_mailchimp and person.entry_failed is None) or entry.dynamics_new is not None
            )
            entry.detail = "; ".join(filter(None, [f"fields: {written}" if written else "", *notes]))
            entries.append(entry)
        return entries

    def settle_base(self, item: Item, base: BaseRow) -> BaseRow:
        settled = item.state(PersonFields).settled
        return base if settled is None else replace(base, fields=settled)

"""The preferences feature's part in reconciling a unit: plan each person's pairs, send interests in the
batch subscribe, write subscription rows in the $batch, settle the preference base and audit every change."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from shared.adapters.dataverse import BatchResult, dataverse_refusal
from shared.features.preferences.catalog import Names, row_operation
from shared.model.times import parse_time
from shared.rules import preferences
from shared.rules.audit import AuditEntry
from shared.rules.preferences import FEATURE
from shared.state.identity import BaseRow
from shared.sync.pipeline import UNKNOWN, DataverseWrite, Item, MailchimpWrite, Step, Unit


@dataclass
class PersonState:
    """One person's preference work in a unit."""

    plan: preferences.MemberPlan | None = None
    sent: bool = False  # the interests went out in a batch subscribe
    failed: str | None = None  # why Mailchimp refused the entry carrying them
    row_failures: dict[tuple[str, str], str] = field(default_factory=dict)
    written_at: datetime | None = None  # the newest modifiedon of the rows written
    base: preferences.PreferenceBase | None = None  # settled once every write has answered


class PreferenceStep(Step):
    name = FEATURE

    def __init__(self, prefix: str) -> None:
        self.names = Names(prefix)

    def decided(self, unit: Unit, items: list[Item]) -> None:
        for item in items if unit.interests else []:
            self._plan(unit, item)

    def _plan(self, unit: Unit, item: Item) -> None:
        """Decides every (record, interest) pair of the person, once their status for this unit is decided."""
        decision = item.decision
        if decision is None or item.member == UNKNOWN:
            return  # an unknown member is planned once the batch subscribe has answered (after_mailchimp)
        skipped = {record_id for record_id, _ in decision.skipped}
        records = [(r.record_id, r.kind) for r in item.records if r.record_id not in skipped]
        if not records:
            return  # nothing in Dynamics can show a choice; the base keeps what was agreed
        member = item.known_member
        item.state(PersonState).plan = preferences.plan_member(
            audience_id=unit.link.audience_id,
            interests=unit.interest_ids,
            base=preferences.PreferenceBase.of(item.base),
            member=preferences.MemberView(
                member is not None, item.member_interests, member.last_changed if member else None
            ),
            records=records,
            known_records=[r for r, _ in item.base.records] if item.base else [],
            rows=item.group.preferences,
            writable=decision.new_base.member_status in preferences.WRITABLE_STATUSES,
        )

    def mailchimp_fields(self, unit: Unit, item: Item, *, with_status: bool, counts: Counter[str]) -> dict[str, object]:
        state = item.state(PersonState)
        if state.plan is None or state.sent or not state.plan.mailchimp:
            return {}
        state.sent = True
        if not with_status:
            counts["preference_members_written"] += 1
        return {"interests": dict(state.plan.mailchimp)}

    def mailchimp_refused(self, unit: Unit, item: Item, reason: str, counts: Counter[str]) -> None:
        item.state(PersonState).failed = reason
        counts["preference_mailchimp_refused"] += 1

    def after_mailchimp(self, unit: Unit, items: list[Item], write: MailchimpWrite, counts: Counter[str]) -> None:
        """Members the batch subscribe found (or added): their interests are known now; send what they lack."""
        if not unit.interests:
            return
        late = [
            item for item in items if item.probed and item.state(PersonState).plan is None and item.member != UNKNOWN
        ]
        for item in late:
            self._plan(unit, item)
        if any((plan := item.state(PersonState).plan) and plan.mailchimp for item in late):
            write(late)

    def dataverse_writes(self, unit: Unit, items: list[Item], counts: Counter[str]) -> list[DataverseWrite]:
        # in the same $batch as the status columns: preference rows cost no call of their own
        names = dict(unit.interests)
        writes: list[DataverseWrite] = []
        for item in items:
            state = item.state(PersonState)
            for row in state.plan.rows if state.plan is not None else []:
                operation = row_operation(self.names, unit.link.audience_id, row, names.get(row.interest_id, ""))
                writes.append((operation, _settle_row(state, row, counts)))
        return writes

    def audits(self, unit: Unit, items: list[Item]) -> list[AuditEntry]:
        """Settles each person's preference base from what was written, and audits every change."""
        names = dict(unit.interests)
        found: list[AuditEntry] = []
        for item in items:
            state = item.state(PersonState)
            if state.plan is None:
                continue
            state.base = preferences.settle(
                state.plan,
                mailchimp_ok=state.failed is None,
                failed_rows=set(state.row_failures),
                written_at=state.written_at,
            )
            found += preferences.audits(
                state.plan,
                names,
                member_hash=item.group.member_hash,
                record_ids=[r.record_id for r in item.records],
                mailchimp_failure=state.failed,
                row_failures=state.row_failures,
            )
        return found

    def settle_base(self, item: Item, base: BaseRow) -> BaseRow:
        settled = item.state(PersonState).base
        return base if settled is None else replace(base, **settled.fields())


def _settle_row(state: PersonState, row: preferences.RowWrite, counts: Counter[str]) -> Callable[[BatchResult], None]:
    def settle(result: BatchResult) -> None:
        if result.status >= 400:
            if row.opted_in is not None:
                state.row_failures[(row.record_id, row.interest_id)] = dataverse_refusal(result)
            counts["preference_rows_refused"] += 1
            return
        counts["preference_rows_written" if row.opted_in is not None else "preference_rows_stamped"] += 1
        if isinstance(result.body, dict) and result.body.get("modifiedon"):
            written = parse_time(result.body["modifiedon"])
            if written and (state.written_at is None or written > state.written_at):
                state.written_at = written

    return settle

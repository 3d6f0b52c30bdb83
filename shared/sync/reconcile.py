"""Reconcile one batch: three-way merge per member hash, bulk writes to both sides, bases and audit.

Order of work, so that a crash at any point loses nothing: decide; write Mailchimp (one batch
subscribe); write Dataverse (one $batch); then store the new bases and the audit rows; then mark
the batch done. A redelivered message whose batch is marked done writes nothing. A redelivery of
a batch that died midway decides again from the bases, and the writes it repeats change nothing.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.adapters.storage import CONSENT_AUDIT, Storage, upsert
from shared.features.campaigns import core as campaigns
from shared.features.preferences import core as preferences
from shared.model.snapshots import KIND_SETS, BatchMessage, Group, MemberSnapshot, RecordSnapshot
from shared.rules import consent
from shared.state.identity import AliasIndex, BaseRow, IdentityMap

log = logging.getLogger("consent_bridge.reconcile")

UNKNOWN = "unknown"  # the member was not read and the map has never seen it
BATCH_SUBSCRIBE_PAGE = 500  # members per batch subscribe call
BATCH_PAGE = 1000  # requests per $batch call
# decisions audited even when they write nothing: a refusal to act is part of the consent history
AUDITED_WITHOUT_WRITES = {
    "not-added-opted-out",
    "member-archived-not-revived",
    "resubscribe-blocked",
    "no-syncable-record",
}


@dataclass
class Planned:
    """One group's outcome, for the audit and for --dry-run."""

    member_hash: str
    rule: str
    record_ids: list[str]
    mailchimp_old: str | None = None
    mailchimp_new: str | None = None
    dynamics_old: str | None = None
    dynamics_new: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    detail: str = ""
    member_last_changed: datetime | None = None
    records_modifiedon: datetime | None = None
    repeated: bool = False  # the same refusal as last time, on unchanged input: already in the audit
    preference: bool = False  # a marketing preference change (counted apart from status changes)

    @property
    def side(self) -> str:
        sides = [
            name
            for name, new in (("mailchimp", self.mailchimp_new), ("dynamics", self.dynamics_new))
            if new is not None
        ]
        return "both" if len(sides) == 2 else (sides[0] if sides else "none")


@dataclass
class BatchOutcome:
    batch_id: str
    duplicate: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    planned: list[Planned] = field(default_factory=list)


@dataclass
class Moves:
    """Address changes applied in one batch (rule 5), to be stored with the batch's bases."""

    bases: dict[str, BaseRow | None] = field(default_factory=dict)  # old hashes rewritten or deleted
    gone: set[str] = field(default_factory=set)  # old hashes whose person now lives under another hash
    arrived: set[str] = field(default_factory=set)  # new hashes whose base came from an old one: always stored
    records: dict[str, str] = field(default_factory=dict)  # record id -> its hash now
    contacts: dict[str, str] = field(default_factory=dict)  # Mailchimp contact_id -> its hash now
    email_writes: dict[str, str] = field(default_factory=dict)  # record id -> the address Mailchimp now has
    held: set[str] = field(default_factory=set)  # records left out of this run (an address conflict)
    audits: list[Planned] = field(default_factory=list)


@dataclass
class _Work:
    """One group while its batch is being reconciled."""

    group: Group
    base: BaseRow | None
    email: str
    member: consent.Member | str | None
    records: list[RecordSnapshot]
    decision: consent.Decision | None = None
    planned: Planned | None = None
    member_after: str | None = None
    member_last_changed: datetime | None = None
    mailchimp_failed: str | None = None
    record_failures: dict[str, str] = field(default_factory=dict)
    record_writes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tagged: bool = False
    records_written_at: datetime | None = None
    email_writes: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # marketing preferences
    member_interests: frozenset[str] | None = None  # chosen interests, when read or answered in this run
    probed: bool = False  # the member was unknown until the batch subscribe answered
    preference_plan: preferences.MemberPlan | None = None
    preferences_sent: bool = False
    preference_failed: str | None = None
    preference_failures: dict[tuple[str, str], str] = field(default_factory=dict)
    preferences_written_at: datetime | None = None
    preference_base: preferences.PreferenceBase | None = None


class Reconciler:
    def __init__(
        self,
        *,
        settings: Any,
        storage: Storage,
        mailchimp: Any,
        dataverse: Any,
        ledger: Any,
        identity: IdentityMap | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.mailchimp = mailchimp
        self.dataverse = dataverse
        self.ledger = ledger
        self.identity = identity or IdentityMap(storage)
        self.policy = consent.Policy(
            resubscribe=settings.resubscribe_policy, new_member_status=settings.new_member_status
        )

    # ---- entry point ----------------------------------------------------------------------
    def reconcile(self, message: BatchMessage, *, dry_run: bool = False) -> BatchOutcome:
        outcome = BatchOutcome(message.batch_id)
        if not dry_run and self.ledger.batch_state(message.link, message.run_id, message.batch_id):
            outcome.duplicate = True
            return outcome
        link = self.settings.link(message.link)
        hashes = [g.member_hash for g in message.groups]
        old_hashes = [h for g in message.groups for h in [*(m[1] for m in g.moved), g.renamed_from] if h]
        bases = {} if message.fresh else self.identity.load(link.name, [*hashes, *old_hashes])
        moves = Moves()
        for group in message.groups:
            if group.renamed_from:
                self._mailchimp_address_change(group, bases, moves)
            for record_id, old_hash in group.moved:
                self._dynamics_address_change(link, group, record_id, old_hash, bases, moves, dry_run=dry_run)
        groups = [g for g in message.groups if g.member_hash not in moves.gone]
        for group in groups:
            group.records = [r for r in group.records if r.record_id not in moves.held]
        work = [self._prepare(g, bases.get(g.member_hash), message) for g in groups]
        for item in work:
            item.email_writes = {
                rid: email for rid, email in moves.email_writes.items() if any(r.record_id == rid for r in item.records)
            }
        self._resolve_unknown(link, work)
        for item in work:
            self._decide(item)
        interests = message.interest_ids
        for item in work if interests else []:
            self._plan_preferences(link, item, interests)
        if not dry_run:
            self._write_mailchimp(link, work, outcome.counts)
            self._settle_probes(link, work, outcome.counts)
            if interests:
                self._late_preferences(link, work, interests, outcome.counts)
        statuses = self._statuses_elsewhere(link, work)
        self._plan_dynamics(work, statuses)
        if not dry_run:
            self._write_dataverse(work, outcome.counts, link=link, interest_names=dict(message.interests))
            self._write_tags(link, work, outcome.counts)
        outcome.planned = [
            *moves.audits,
            *(self._audit_entry(item) for item in work),
            *self._preference_audits(work, dict(message.interests)),
        ]
        for planned in outcome.planned:
            outcome.counts[f"rule:{planned.rule}"] += 1
            for _, reason in planned.skipped:
                outcome.counts[f"skip:{reason}"] += 1
        if dry_run:
            return outcome
        self._save(link.name, message, work, outcome, moves)
        return outcome

    # ---- address changes (rule 5) ---------------------------------------------------------
    def _mailchimp_address_change(self, group: Group, bases: dict[str, BaseRow], moves: Moves) -> None:
        """The member's address changed in Mailchimp: the mapped records follow it, and so does their base."""
        old = bases.get(group.renamed_from or "")
        if group.member and group.member.contact_id:
            moves.contacts[group.member.contact_id] = group.member_hash
        if old is None or not old.records:
            return
        new = bases.get(group.member_hash)
        records = [*(new.records if new else []), *(r for r in old.records if not new or r not in new.records)]
        bases[group.member_hash] = replace(new or old, email=group.email, records=records)
        moves.arrived.add(group.member_hash)
        moves.gone.add(old_hash := group.renamed_from or "")
        moves.bases[old_hash] = None
        for record_id, _ in old.records:
            moves.email_writes[record_id] = group.email
            moves.records[record_id] = group.member_hash
        moves.audits.append(
            Planned(
                group.member_hash,
                "email-changed-in-mailchimp",
                [r[0] for r in old.records],
                mailchimp_old=f"member {old_hash}",
                detail="the records take the new address",
            )
        )

    def _dynamics_address_change(
        self,
        link: Any,
        group: Group,
        record_id: str,
        old_hash: str,
        bases: dict[str, BaseRow],
        moves: Moves,
        *,
        dry_run: bool,
    ) -> None:
        """A record's address changed in Dynamics: the member it alone stood for changes address with it."""
        from shared.adapters.mailchimp import MailchimpError

        old = bases.get(old_hash)
        if old is None:
            moves.records[record_id] = group.member_hash
            return
        others = [r for r in old.records if r[0] != record_id]
        member_there = old.member_status not in (None, "archived")
        target = bases.get(group.member_hash)
        taken = group.member is not None or (target is not None and target.member_status)
        if member_there and not others and not taken and not group.member_seen and not dry_run:
            # the scan read only a delta: ask whether the new address is already a member before moving anyone
            taken = self.mailchimp.member(link.audience_id, group.member_hash, fields=["status"]) is not None
        if member_there and not others and taken:
            # design rule 5: write nothing; the record stays with its old member until someone resolves it
            moves.held.add(record_id)
            moves.audits.append(
                Planned(
                    group.member_hash,
                    "email-conflict",
                    [record_id],
                    detail=f"the new address is already a member; member {old_hash} keeps its "
                    "address and nothing was written",
                )
            )
            return
        moves.records[record_id] = group.member_hash
        if others or not member_there:  # the old member stays for the others; this record is new at its address
            moves.bases[old_hash] = replace(old, records=others)
            return
        if dry_run:
            moves.audits.append(
                Planned(
                    group.member_hash,
                    "email-changed-in-dynamics",
                    [record_id],
                    mailchimp_old=f"member {old_hash}",
                    mailchimp_new=f"member {group.member_hash}",
                )
            )
            return
        try:
            answer = self.mailchimp.update_member(link.audience_id, old_hash, {"email_address": group.email})
        except MailchimpError as exc:
            if not exc.is_member_refusal:
                raise
            said = " ".join([exc.detail, *(str(e.get("message", "")) for e in exc.errors)]).lower()
            if "already" in said:  # the new address is a member the scan did not read
                moves.records.pop(record_id, None)
                moves.held.add(record_id)
                moves.audits.append(
                    Planned(
                        group.member_hash,
                        "email-conflict",
                        [record_id],
                        detail=f"the new address is already a member; member {old_hash} keeps "
                        "its address and nothing was written",
                    )
                )
                return
            moves.bases[old_hash] = replace(old, records=[])
            moves.audits.append(
                Planned(
                    group.member_hash,
                    "email-change-refused",
                    [record_id],
                    skipped=[(old_hash, _refusal(exc.title + " " + exc.detail))],
                )
            )
            return
        changed = _parse_time(answer.get("last_changed"))
        group.member = MemberSnapshot(
            group.email,
            answer["status"],
            changed or datetime.now(UTC),
            answer.get("contact_id") or old.contact_id,
            interests=_chosen(answer),
        )
        group.member_seen = True
        bases[group.member_hash] = replace(
            old, email=group.email, member_last_changed=changed, contact_id=group.member.contact_id
        )
        moves.arrived.add(group.member_hash)
        moves.gone.add(old_hash)
        moves.bases[old_hash] = None
        if group.member.contact_id:
            moves.contacts[group.member.contact_id] = group.member_hash
        moves.audits.append(
            Planned(
                group.member_hash,
                "email-changed-in-dynamics",
                [record_id],
                mailchimp_old=f"member {old_hash}",
                mailchimp_new=f"member {group.member_hash}",
            )
        )

    # ---- preparing the merge --------------------------------------------------------------
    def _prepare(self, group: Group, base: BaseRow | None, message: BatchMessage) -> _Work:
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
                            base.records_modifiedon or datetime.now(UTC),
                            0,
                            None,
                        )
                    )
        member: consent.Member | str | None
        if group.member is not None:
            member = _member(group.member)
        elif group.member_seen or message.fresh:
            member = None
        elif base is not None:
            member = (
                None
                if base.member_status is None
                else consent.Member(base.member_status, base.member_last_changed or datetime.now(UTC), email)
            )
        else:
            member = UNKNOWN
        chosen = group.member.interests if group.member is not None else None
        return _Work(
            group,
            base,
            email,
            member,
            records,
            probed=member == UNKNOWN,
            member_interests=None if chosen is None else frozenset(chosen),
        )

    def _resolve_unknown(self, link: Any, work: list[_Work]) -> None:
        """New records whose address may already be in the audience: ask Mailchimp before deciding.

        Records that are not opted out are probed by the batch subscribe itself (status_if_new only
        touches new members); opted-out ones must not be added, so their member is read one by one.
        """
        for item in work:
            if item.member != UNKNOWN:
                continue
            if any(not r.opted_out for r in item.records if r.active):
                continue  # probed in _write_mailchimp
            found = self.mailchimp.member(
                link.audience_id,
                item.group.member_hash,
                fields=["email_address", "status", "last_changed", "contact_id", "timestamp_opt", "interests"],
            )
            item.member = _member(_snapshot(found)) if found else None
            item.member_interests = _chosen(found) if found else None
            item.probed = False

    def _decide(self, item: _Work) -> None:
        member = None if item.member == UNKNOWN else item.member
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
        records = [_record(r, item.email) for r in item.records]
        item.decision = consent.decide(member, records, base, self.policy)  # type: ignore[arg-type]

    # ---- Mailchimp ------------------------------------------------------------------------
    def _write_mailchimp(self, link: Any, work: list[_Work], counts: Counter[str], *, statuses: bool = True) -> None:
        """One batch subscribe: the status decisions (unless ``statuses`` is off) and the interests to send."""
        entries: list[dict[str, Any]] = []
        with_status: set[str] = set()
        with_interests: set[str] = set()
        for item in work:
            write = item.decision.mailchimp if statuses and item.decision else None
            plan = item.preference_plan
            interests = plan.mailchimp if plan is not None and not item.preferences_sent else {}
            if write is None and not interests:
                continue
            entry: dict[str, Any] = {"email_address": item.email}
            if write is None:
                # interests only: an existing member keeps its status; one archived since the read comes back
                # only once the person confirms
                entry["status_if_new"] = "pending"
                counts["preference_members_written"] += 1
            elif write.action == "add":
                entry["status_if_new"] = write.status
                with_status.add(item.group.member_hash)
            else:
                entry["status"] = write.status
                with_status.add(item.group.member_hash)
            if interests:
                entry["interests"] = dict(interests)
                item.preferences_sent = True
                with_interests.add(item.group.member_hash)
            if link.tag and item.records:
                entry["tags"] = [link.tag]
            entries.append(entry)
        if not entries:
            return
        # calls that exist only because of interests: the efficiency report charges them to preferences
        counts["preference_calls_mailchimp"] += _pages(len(entries), BATCH_SUBSCRIBE_PAGE) - _pages(
            len(with_status), BATCH_SUBSCRIBE_PAGE
        )
        result = self.mailchimp.batch_subscribe(link.audience_id, entries, update_existing=True)
        by_hash = {item.group.member_hash: item for item in work}
        for answer, created in [(m, True) for m in result.new_members] + [(m, False) for m in result.updated_members]:
            item = by_hash.get(consent.member_hash(answer["email_address"]))
            if item is None:
                continue
            item.member_after = answer["status"]
            item.member_last_changed = _parse_time(answer.get("last_changed"))
            item.tagged = bool(link.tag)
            if item.member == UNKNOWN:
                item.member = None if created else _member(_snapshot(answer))
                item.member_interests = _chosen(answer)
                if not created:
                    item.member_after = None  # decided again in _settle_probes
        for error in result.errors:
            item = by_hash.get(error.member_hash or "")
            if item is not None:
                reason = _refusal(error.error)
                if item.group.member_hash in with_status:
                    item.mailchimp_failed = reason
                    counts["mailchimp_refused"] += 1
                if item.group.member_hash in with_interests:
                    item.preference_failed = reason
                    counts["preference_mailchimp_refused"] += 1

    def _settle_probes(self, link: Any, work: list[_Work], counts: Counter[str]) -> None:
        """A probe found an existing member: this is a first meeting, decided again with the real status."""
        again = [
            item
            for item in work
            if isinstance(item.member, consent.Member)
            and item.member_after is None
            and item.decision
            and item.decision.mailchimp
            and item.decision.mailchimp.action == "add"
        ]
        if not again:
            return
        for item in again:
            self._decide(item)
        followups = [item for item in again if item.decision and item.decision.mailchimp]
        for item in again:
            if item not in followups:
                item.member_after = item.member.status  # type: ignore[union-attr]
        if followups:
            self._write_mailchimp(link, followups, counts)

    # ---- marketing preferences -----------------------------------------------------------
    def _plan_preferences(self, link: Any, item: _Work, interests: list[str]) -> None:
        """Decides every (record, interest) pair of the person, once their status for this run is decided."""
        decision = item.decision
        if decision is None or item.member == UNKNOWN:
            return  # an unknown member is planned once the batch subscribe has answered (_late_preferences)
        skipped = {record_id for record_id, _ in decision.skipped}
        records = [(r.record_id, r.kind) for r in item.records if r.record_id not in skipped]
        if not records:
            return  # nothing in Dynamics can show a choice; the base keeps what was agreed
        member = item.member if isinstance(item.member, consent.Member) else None
        status_after = decision.new_base.member_status
        item.preference_plan = preferences.plan_member(
            audience_id=link.audience_id,
            interests=interests,
            base=preferences.PreferenceBase.of(item.base),
            member=preferences.MemberView(
                member is not None, item.member_interests, member.last_changed if member else None
            ),
            records=records,
            known_records=[r for r, _ in item.base.records] if item.base else [],
            rows=item.group.preferences,
            writable=status_after in preferences.WRITABLE_STATUSES,
        )

    def _late_preferences(self, link: Any, work: list[_Work], interests: list[str], counts: Counter[str]) -> None:
        """Members the batch subscribe found (or added): their interests are known now; send what they lack."""
        late = [item for item in work if item.probed and item.preference_plan is None and item.member != UNKNOWN]
        for item in late:
            self._plan_preferences(link, item, interests)
        if any(item.preference_plan and item.preference_plan.mailchimp for item in late):
            self._write_mailchimp(link, late, counts, statuses=False)

    def _preference_audits(self, work: list[_Work], names: dict[str, str]) -> list[Planned]:
        """Settles each person's preference base from what was written, and audits every change."""
        found = []
        for item in work:
            plan = item.preference_plan
            if plan is None:
                continue
            item.preference_base = preferences.settle(
                plan,
                mailchimp_ok=item.preference_failed is None,
                failed_rows=set(item.preference_failures),
                written_at=item.preferences_written_at,
            )
            for audit in preferences.audits(
                plan,
                names,
                member_hash=item.group.member_hash,
                record_ids=[r.record_id for r in item.records],
                mailchimp_failure=item.preference_failed,
                row_failures=item.preference_failures,
            ):
                found.append(
                    Planned(
                        item.group.member_hash,
                        audit.rule,
                        audit.record_ids,
                        mailchimp_old=audit.mailchimp_old,
                        mailchimp_new=audit.mailchimp_new,
                        dynamics_old=audit.dynamics_old,
                        dynamics_new=audit.dynamics_new,
                        skipped=audit.skipped,
                        detail=audit.detail,
                        member_last_changed=audit.member_last_changed,
                        records_modifiedon=audit.rows_modifiedon,
                        preference=True,
                    )
                )
        return found

    # ---- Dataverse ------------------------------------------------------------------------
    def _statuses_elsewhere(self, link: Any, work: list[_Work]) -> dict[str, list[str]]:
        """Rule 9: per record, its member's status in the other audiences whose lists hold that record."""
        others = [other for other in self.settings.links if other.name != link.name]
        if not others:
            return {}
        hashes = [item.group.member_hash for item in work]
        found: dict[str, list[str]] = {}
        for other in others:
            for row in self.identity.load(other.name, hashes).values():
                if row.member_status:
                    for record_id, _ in row.records:
                        found.setdefault(record_id, []).append(row.member_status)
        return found

    def _plan_dynamics(self, work: list[_Work], statuses: dict[str, list[str]]) -> None:
        columns = self.settings.opt_out_columns
        status_column = self.settings.subscriber_status_column
        for item in work:
            decision = item.decision
            if decision is None:
                continue
            current = {r.record_id: r for r in item.records}
            member_status = (
                item.member_after
                or (decision.mailchimp.status if decision.mailchimp else None)
                or (item.member.status if isinstance(item.member, consent.Member) else None)
            )
            if item.mailchimp_failed:
                member_status = item.member.status if isinstance(item.member, consent.Member) else None
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

    def _write_dataverse(
        self, work: list[_Work], counts: Counter[str], *, link: Any, interest_names: dict[str, str]
    ) -> None:
        from shared.adapters.dataverse import BatchOperation

        operations: list[BatchOperation] = []
        owners: list[tuple[_Work, str]] = []
        rows: list[tuple[_Work, preferences.RowWrite]] = []
        for item in work:
            kinds = {r.record_id: r.kind for r in item.records}
            for record_id, body in item.record_writes.items():
                # the answer's modifiedon goes into the base, so the sync's own write is not mistaken later
                # for a person's edit
                operations.append(
                    BatchOperation(
                        "PATCH",
                        f"{KIND_SETS[kinds[record_id]]}({record_id})?$select=modifiedon",
                        body,
                        {"If-Match": "*", "Prefer": "return=representation"},
                    )
                )
                owners.append((item, record_id))
        names = preferences.Names(self.settings.dataverse_prefix)
        for item in work:
            plan = item.preference_plan
            for write in plan.rows if plan is not None else []:
                # in the same $batch as the status columns: preference rows cost no call of their own
                operations.append(
                    preferences.row_operation(names, link.audience_id, write, interest_names.get(write.interest_id, ""))
                )
                rows.append((item, write))
        if not operations:
            return
        counts["preference_calls_dataverse"] += _pages(len(operations), BATCH_PAGE) - _pages(len(owners), BATCH_PAGE)
        results = self.dataverse.batch(operations, continue_on_error=True)
        for (item, write), result in zip(rows, results[len(owners) :], strict=True):
            if result.status >= 400:
                if write.opted_in is not None:
                    item.preference_failures[(write.record_id, write.interest_id)] = _dataverse_refusal(result)
                counts["preference_rows_refused"] += 1
                continue
            counts["preference_rows_written" if write.opted_in is not None else "preference_rows_stamped"] += 1
            if isinstance(result.body, dict) and result.body.get("modifiedon"):
                written = datetime.fromisoformat(str(result.body["modifiedon"]).replace("Z", "+00:00"))
                if item.preferences_written_at is None or written > item.preferences_written_at:
                    item.preferences_written_at = written
        for (item, record_id), result in zip(owners, results, strict=False):
            if result.status >= 400:
                item.record_failures[record_id] = _dataverse_refusal(result)
                counts["dataverse_refused"] += 1
            elif isinstance(result.body, dict) and result.body.get("modifiedon"):
                written = datetime.fromisoformat(str(result.body["modifiedon"]).replace("Z", "+00:00"))
                if item.records_written_at is None or written > item.records_written_at:
                    item.records_written_at = written

    def _write_tags(self, link: Any, work: list[_Work], counts: Counter[str]) -> None:
        if not link.tag:
            return
        to_remove = [
            item.email
            for item in work
            if item.group.removed and item.base and item.base.tagged and not item.records and item.email
        ]
        to_add = [
            item.email
            for item in work
            if item.records and not item.tagged and not (item.base and item.base.tagged) and _member_exists(item)
        ]
        if to_add:
            from shared.adapters.mailchimp import MailchimpError

            try:
                self.mailchimp.add_tag_members(link.audience_id, link.tag, to_add)
            except MailchimpError as exc:
                if exc.status != 404:
                    raise
                # the audience has no such tag yet: tagging one member creates it
                self.mailchimp.update_member_tags(link.audience_id, consent.member_hash(to_add[0]), {link.tag: True})
                if to_add[1:]:
                    self.mailchimp.add_tag_members(link.audience_id, link.tag, to_add[1:])
            added = set(to_add)
            for item in work:
                if item.email in added:
                    item.tagged = True
        if to_remove:
            result = self.mailchimp.remove_tag_members(link.audience_id, link.tag, to_remove)
            counts["tags_removed"] += result.changed

    # ---- bases and audit ------------------------------------------------------------------
    def _audit_entry(self, item: _Work) -> Planned:
        decision = item.decision
        assert decision is not None
        member_before = item.member.status if isinstance(item.member, consent.Member) else None
        planned = Planned(
            item.group.member_hash,
            decision.rule,
            [r.record_id for r in item.records],
            skipped=list(decision.skipped),
            member_last_changed=item.member.last_changed if isinstance(item.member, consent.Member) else None,
            records_modifiedon=max((r.modifiedon for r in item.records), default=None),
        )
        if decision.mailchimp and not item.mailchimp_failed:
            planned.mailchimp_old = member_before or "absent"
            planned.mailchimp_new = item.member_after or decision.mailchimp.status
            if planned.mailchimp_old == planned.mailchimp_new:
                planned.mailchimp_new = None
        if item.mailchimp_failed:
            planned.skipped.append((item.group.member_hash, item.mailchimp_failed))
        written = {rid: body for rid, body in item.record_writes.items() if rid not in item.record_failures}
        if written:
            before = {r.record_id: r for r in item.records}
            planned.dynamics_old = json.dumps(
                {
                    rid: _describe(before[rid], body, self.settings.subscriber_status_column)
                    for rid, body in written.items()
                }
            )
            planned.dynamics_new = json.dumps(written)
        planned.skipped += [(rid, reason) for rid, reason in item.record_failures.items()]
        item.skipped = list(planned.skipped)
        if item.group.removed:
            planned.detail = f"left the marketing list: {len(item.group.removed)} record(s)"
        base = item.base
        planned.repeated = (
            base is not None
            and planned.side == "none"
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
                sorted(planned.skipped),
            )
        )
        return planned

    def _save(
        self, link_name: str, message: BatchMessage, work: list[_Work], outcome: BatchOutcome, moves: Moves
    ) -> None:
        changes: dict[str, BaseRow | None] = dict(moves.bases)
        for item in work:
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
        now = datetime.now(UTC)
        audit = []
        seen: Counter[str] = Counter()  # keys depend on the member, not on how batches were grouped
        for planned in outcome.planned:
            if planned.side == "none" and (
                planned.repeated
                or (not planned.skipped and not planned.detail and planned.rule not in AUDITED_WITHOUT_WRITES)
            ):
                continue
            audit.append(
                upsert(
                    {
                        "PartitionKey": f"{link_name}|{now:%Y%m%d}",
                        "RowKey": f"{message.run_id}|{planned.member_hash or '-'}|{_nth(seen, planned.member_hash)}",
                        "when": now,
                        "link": link_name,
                        "run_id": message.run_id,
                        "member_hash": planned.member_hash,
                        "record_ids": json.dumps(planned.record_ids),
                        "side": planned.side,
                        "rule": planned.rule,
                        "mailchimp_old": planned.mailchimp_old or "",
                        "mailchimp_new": planned.mailchimp_new or "",
                        "dynamics_old": planned.dynamics_old or "",
                        "dynamics_new": planned.dynamics_new or "",
                        "skipped": json.dumps(planned.skipped) if planned.skipped else "",
                        "detail": campaigns.audit_detail(self.storage, link_name, message.run_id, planned),
                        "member_last_changed": planned.member_last_changed.isoformat()
                        if planned.member_last_changed
                        else "",
                        "records_modifiedon": planned.records_modifiedon.isoformat()
                        if planned.records_modifiedon
                        else "",
                    }
                )
            )
            counted = "preference_" if planned.preference else ""  # status and preference changes apart
            outcome.counts[f"{counted}mailchimp_writes"] += planned.mailchimp_new is not None
            outcome.counts[f"{counted}dynamics_writes"] += planned.dynamics_new is not None
            if planned.mailchimp_new is not None:
                outcome.counts[f"applied:mailchimp:{planned.rule}"] += 1
            if planned.dynamics_new is not None:
                outcome.counts[f"applied:dataverse:{planned.rule}"] += 1
            outcome.counts["skipped"] += len(planned.skipped)
        if audit:
            outcome.counts["storage_calls"] += self.storage.write(CONSENT_AUDIT, audit)
        outcome.counts["storage_calls"] += self.identity.operations
        self.ledger.finish_batch(link_name, message.run_id, message.batch_id, "done", outcome.counts)

    def _new_base(self, item: _Work) -> BaseRow | None:
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
        kept = item.preference_base or preferences.PreferenceBase.of(item.base)
        return BaseRow(
            email=item.email,
            records=records,
            member_status=member_status,
            opted_out=opted_out,
            member_last_changed=member_last_changed,
            records_modifiedon=max(filter(None, (new.records_modifiedon, item.records_written_at)), default=None),
            contact_id=(item.group.member.contact_id if item.group.member else None) or base.contact_id,
            tagged=(item.tagged or base.tagged) and bool(records),
            refused=item.mailchimp_failed,
            opted_out_records=opted_out_records,
            skipped=sorted([list(k) for k in item.skipped]),
            **kept.fields(),
        )


def _pages(items: int, page: int) -> int:
    return -(-items // page)


def _nth(seen: Counter[str], key: str) -> int:
    seen[key] += 1
    return seen[key]


def _member(snapshot: MemberSnapshot) -> consent.Member:
    return consent.Member(snapshot.status, snapshot.last_changed, snapshot.email, snapshot.opted_in)


def _snapshot(member: dict[str, Any]) -> MemberSnapshot:
    chosen = _chosen(member)
    return MemberSnapshot(
        member["email_address"],
        member["status"],
        _parse_time(member.get("last_changed")) or datetime.now(UTC),
        member.get("contact_id"),
        _parse_time(member.get("timestamp_opt")),
        None if chosen is None else sorted(chosen),
    )


def _chosen(member: dict[str, Any]) -> frozenset[str] | None:
    """The interest ids a member answer shows as chosen; None when the answer carries no interests."""
    interests = member.get("interests")
    return None if interests is None else frozenset(k for k, on in interests.items() if on)


def _record(record: RecordSnapshot, email: str) -> consent.Record:
    return consent.Record(
        record.record_id,
        record.kind,
        record.email if record.email is not None else email,  # type: ignore[arg-type]
        record.opted_out,
        record.modifiedon,
        record.active,
        record.writable,
    )


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _member_exists(item: _Work) -> bool:
    if item.member_after:
        return item.member_after != "archived"
    return isinstance(item.member, consent.Member) and item.member.status != "archived"


def _refusal(error_text: str) -> str:
    text = error_text.lower()
    if "compliance" in text:
        return "member-in-compliance-state"
    if "forgotten" in text or "permanently deleted" in text:
        return "forgotten-email"
    if "fake" in text or "invalid" in text:
        return "invalid-address"
    return "mailchimp-refused"


def _dataverse_refusal(result: Any) -> str:
    message = ""
    if isinstance(result.body, dict):
        message = str(result.body.get("error", {}).get("message", ""))
    lowered = message.lower()
    if "read-only" in lowered or "readonly" in lowered or "closed" in lowered or "inactive" in lowered:
        return "read-only-record"
    if result.status == 404:
        return "record-deleted"
    return f"dataverse-refused-{result.status}"


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

"""Address changes (rule 5), applied before a unit is decided: the person keeps their history, not the address.

An address changed in Mailchimp (same contact id, new hash): the mapped records take the new address and
the base moves to the new hash. An address changed in Dynamics (same record id, new hash): when the record
alone stood for its member, the member's address is changed in Mailchimp (PATCH on the old hash); when the
new address is already a member, nothing is written and the change is audited as a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shared.adapters.mailchimp import MailchimpError, mailchimp_refusal
from shared.adapters.ports import MailchimpPort
from shared.model.snapshots import Group, MemberSnapshot
from shared.model.times import now, parse_time
from shared.rules.audit import AuditEntry
from shared.settings import Link
from shared.state.identity import BaseRow


@dataclass
class Moves:
    """Address changes applied in one unit, to be stored with the unit's bases."""

    bases: dict[str, BaseRow | None] = field(default_factory=dict)  # old hashes rewritten or deleted
    gone: set[str] = field(default_factory=set)  # old hashes whose person now lives under another hash
    arrived: set[str] = field(default_factory=set)  # new hashes whose base came from an old one: always stored
    records: dict[str, str] = field(default_factory=dict)  # record id -> its hash now
    contacts: dict[str, str] = field(default_factory=dict)  # Mailchimp contact_id -> its hash now
    email_writes: dict[str, str] = field(default_factory=dict)  # record id -> the address Mailchimp now has
    held: set[str] = field(default_factory=set)  # records left out of this unit (an address conflict)
    audits: list[AuditEntry] = field(default_factory=list)

    def conflict(self, group: Group, record_id: str, old_hash: str) -> None:
        # rule 5: write nothing; the record stays with its old member until someone resolves it
        self.records.pop(record_id, None)
        self.held.add(record_id)
        self.audits.append(
            AuditEntry(
                group.member_hash,
                "email-conflict",
                [record_id],
                detail=f"the new address is already a member; member {old_hash} keeps its "
                "address and nothing was written",
            )
        )


def chosen_interests(member: dict[str, object]) -> list[str] | None:
    """The interest ids a member answer shows as chosen; None when the answer carries no interests."""
    interests = member.get("interests")
    if not isinstance(interests, dict):
        return None
    return sorted(str(key) for key, on in interests.items() if on)


def apply_moves(
    mailchimp: MailchimpPort, link: Link, groups: list[Group], bases: dict[str, BaseRow], *, dry_run: bool
) -> Moves:
    moves = Moves()
    for group in groups:
        if group.renamed_from:
            _mailchimp_address_change(group, bases, moves)
        for record_id, old_hash in group.moved:
            _dynamics_address_change(mailchimp, link, group, record_id, old_hash, bases, moves, dry_run=dry_run)
    return moves


def _mailchimp_address_change(group: Group, bases: dict[str, BaseRow], moves: Moves) -> None:
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
        AuditEntry(
            group.member_hash,
            "email-changed-in-mailchimp",
            [r[0] for r in old.records],
            mailchimp_old=f"member {old_hash}",
            detail="the records take the new address",
        )
    )


def _dynamics_address_change(
    mailchimp: MailchimpPort,
    link: Link,
    group: Group,
    record_id: str,
    old_hash: str,
    bases: dict[str, BaseRow],
    moves: Moves,
    *,
    dry_run: bool,
) -> None:
    """A record's address changed in Dynamics: the member it alone stood for changes address with it."""
    old = bases.get(old_hash)
    if old is None:
        moves.records[record_id] = group.member_hash
        return
    others = [r for r in old.records if r[0] != record_id]
    member_there = old.member_status not in (None, "archived")
    target = bases.get(group.member_hash)
    taken = group.member is not None or bool(target is not None and target.member_status)
    if member_there and not others and not taken and not group.member_seen and not dry_run:
        # the scan read only a delta: ask whether the new address is already a member before moving anyone
        taken = mailchimp.member(link.audience_id, group.member_hash, fields=["status"]) is not None
    if member_there and not others and taken:
        moves.conflict(group, record_id, old_hash)
        return
    moves.records[record_id] = group.member_hash
    if others or not member_there:  # the old member stays for the others; this record is new at its address
        moves.bases[old_hash] = replace(old, records=others)
        return
    if dry_run:
        moves.audits.append(_moved_in_dynamics(group, record_id, old_hash))
        return
    try:
        answer = mailchimp.update_member(link.audience_id, old_hash, {"email_address": group.email})
    except MailchimpError as exc:
        if not exc.is_member_refusal:
            raise
        if exc.is_member_exists:  # the new address is a member the scan did not read
            moves.conflict(group, record_id, old_hash)
            return
        moves.bases[old_hash] = replace(old, records=[])
        moves.audits.append(
            AuditEntry(
                group.member_hash, "email-change-refused", [record_id], skipped=[(old_hash, mailchimp_refusal(exc))]
            )
        )
        return
    changed = parse_time(answer.get("last_changed"))
    group.member = MemberSnapshot(
        group.email,
        answer["status"],
        changed or now(),
        answer.get("contact_id") or old.contact_id,
        interests=chosen_interests(answer),
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
    moves.audits.append(_moved_in_dynamics(group, record_id, old_hash))


def _moved_in_dynamics(group: Group, record_id: str, old_hash: str) -> AuditEntry:
    return AuditEntry(
        group.member_hash,
        "email-changed-in-dynamics",
        [record_id],
        mailchimp_old=f"member {old_hash}",
        mailchimp_new=f"member {group.member_hash}",
    )

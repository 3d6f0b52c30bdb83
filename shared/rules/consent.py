"""The consent rules as one pure decision per (email, audience) group.

design.md "Consent rules" is the authority; this module is its executable form. Nothing here reads,
writes or logs: the sync engine reads both sides, calls `decide` for every group of a batch, performs
the writes, audits them with `Decision.rule`, and stores `Decision.new_base` once the writes succeeded.

Words used below:
- a *syncable* record is active, writable and has a valid address; only syncable records take part in
  the consent meaning (D) and receive writes. Inactive rows and read-only (qualified or disqualified)
  leads are *frozen*: the sync can neither write them nor see them follow the person's later choices,
  so their flag would outvote those choices for ever (a re-subscription through Mailchimp could never
  be reflected, and a later opt-out on a syncable record would hide behind it). They are listed in
  `Decision.skipped` instead. The one place a frozen opt-out still counts is rule 1: adding someone
  to Mailchimp is the one write with no consent record of Mailchimp's own behind it.
- the member's *status now* is its Mailchimp status; a member absent from the audience reads as
  "archived" when the base shows it was once there (archived or deleted: Mailchimp holds no consent
  for it any more), and as never-present otherwise (rule 1).
- statuses fall in three camps: consenting (subscribed, pending), opted out (unsubscribed, cleaned,
  transactional) and archived. An archived member neither consents nor refuses: nothing is mailed.

Choices where design.md is silent, each argued in one line where it is made:
- Dynamics changed: D differs from the base, or a syncable record is newly opted out (rule 7), or the
  member re-subscribed and some record changed after that (an opt-out toggled out, in, out between runs).
- A Dynamics opt-in for an archived or deleted member is treated like one for an unsubscribed member,
  except that with RESUBSCRIBE_POLICY=never the opt-in stands (archiving is not an opt-out to restore).
- A base that contradicts both sides while neither changed is no agreement: the opt-out wins.

Audit reasons (`Decision.rule`): new-member, not-added-opted-out, no-syncable-record, mailchimp-changed,
dynamics-opt-out, dynamics-opt-in, resubscribe-blocked, resubscribe-confirm, member-archived-not-revived,
first-meeting-agree, first-meeting-opt-out-wins, both-changed-agree, both-changed-opt-out-wins,
both-changed-mailchimp-newer, stale-base-opt-out-wins, no-change.

Invariant, pinned by the property tests: no decision writes "subscribed" to Mailchimp except by adding
an address the audience never held; `set_status` only ever writes "unsubscribed" or "pending".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from shared.model.times import utc
from shared.rules.addresses import email_problem, member_hash

SUBSCRIBER_STATUS_CODES: dict[str, int] = {
    "subscribed": 100000000,
    "unsubscribed": 100000001,
    "cleaned": 100000002,
    "pending": 100000003,
    "transactional": 100000004,
    "archived": 100000005,
}
OPTED_OUT_STATUSES = frozenset({"unsubscribed", "cleaned", "transactional"})  # rule 2
CONSENTING_STATUSES = frozenset({"subscribed", "pending"})  # rule 3 unsubscribes these on a Dynamics opt-out
RULE_9_ORDER = ("subscribed", "pending", "transactional", "unsubscribed", "cleaned", "archived")


@dataclass(frozen=True)
class Member:
    """The member as Mailchimp holds it; pass None when Mailchimp holds no member for the address (404)."""

    status: str
    last_changed: datetime
    email: str
    # timestamp_opt: when the person last opted in; moves on a re-subscription, unlike a profile edit
    opted_in: datetime | None = None


@dataclass(frozen=True)
class Record:
    """One Dynamics row of the group.

    `opted_out`: any OPT_OUT_COLUMNS column is true. `active`: statecode says active (open, for a lead).
    `writable`: the sync may PATCH it (False for qualified or disqualified leads and for inactive rows).
    """

    record_id: str
    kind: Literal["contact", "lead", "account"]
    email: str | None
    opted_out: bool
    modifiedon: datetime
    active: bool
    writable: bool


@dataclass(frozen=True)
class Base:
    """The last state both sides agreed on, per (email, audience).

    `member_status` is None while the address has never been in the audience (rule 1).
    `opted_out_records` (added field): ids of the syncable records that were opted out at that
    agreement. A record newly opted out is a Dynamics opt-out even when another record of the person
    already was (rule 7); without it that opt-out would be invisible and a later re-subscription
    through Mailchimp would clear it. Store it with the rest of the base.
    """

    member_status: str | None
    opted_out: bool
    member_last_changed: datetime | None
    records_modifiedon: datetime | None
    opted_out_records: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Policy:
    """The two settings the rules depend on: RESUBSCRIBE_POLICY and NEW_MEMBER_STATUS."""

    resubscribe: Literal["never", "confirm"] = "never"
    new_member_status: Literal["subscribed", "pending"] = "subscribed"

    def __post_init__(self) -> None:
        if self.resubscribe not in ("never", "confirm"):
            raise ValueError(f"RESUBSCRIBE_POLICY must be 'never' or 'confirm', not {self.resubscribe!r}")
        if self.new_member_status not in ("subscribed", "pending"):
            raise ValueError(f"NEW_MEMBER_STATUS must be 'subscribed' or 'pending', not {self.new_member_status!r}")


@dataclass(frozen=True)
class MailchimpWrite:
    """At most one per group. "add": upsert with status_if_new=status, only for an absent member.
    "set_status": status=status on the existing member; only ever "unsubscribed" or "pending"."""

    action: Literal["add", "set_status"]
    status: str


@dataclass(frozen=True)
class RecordWrite:
    """One PATCH of one record; None leaves that column alone.

    `opted_out` True sets every OPT_OUT_COLUMNS column, False clears them all. `subscriber_status` is
    this audience's status (a key of SUBSCRIBER_STATUS_CODES); the engine combines the audiences of a
    record with `subscriber_status_for` (rule 9) before writing the column.
    """

    record_id: str
    kind: str
    opted_out: bool | None
    subscriber_status: str | None


@dataclass(frozen=True)
class Decision:
    """What to do for one group, and why.

    `rule` is the audit reason. `skipped` lists every record that takes no part, with why: "missing-email",
    "invalid-email", "inactive", "read-only", "read-only-lead" (rule 8; never a failure). `new_base` is
    what to store once the writes succeeded; when it equals the base passed in there is nothing to store.
    """

    rule: str
    mailchimp: MailchimpWrite | None
    records: tuple[RecordWrite, ...]
    skipped: tuple[tuple[str, str], ...]
    new_base: Base

    @property
    def writes(self) -> bool:
        return self.mailchimp is not None or bool(self.records)


def subscriber_status_for(statuses: Iterable[str | None]) -> str | None:
    """Rule 9: the first of Subscribed, Pending, Transactional, Unsubscribed, Cleaned, Archived present."""
    present = set(statuses)
    return next((status for status in RULE_9_ORDER if status in present), None)


@dataclass(frozen=True)
class _Group:
    syncable: tuple[Record, ...]
    skipped: tuple[tuple[str, str], ...]
    frozen_opt_out: bool  # a frozen record with the group's address is opted out

    @property
    def opted_out(self) -> bool:  # D, rule 7: an opt-out on any syncable record
        return any(record.opted_out for record in self.syncable)

    @property
    def opted_out_ids(self) -> frozenset[str]:
        return frozenset(record.record_id for record in self.syncable if record.opted_out)

    @property
    def newest_modifiedon(self) -> datetime | None:
        return max((utc(record.modifiedon) for record in self.syncable), default=None)


_NO_BASE = Base(member_status=None, opted_out=False, member_last_changed=None, records_modifiedon=None)


def decide(member: Member | None, records: Sequence[Record], base: Base | None, policy: Policy) -> Decision:
    """The consent decision for one address in one audience (design.md, rules 1-4, 7 and 8).

    Raises ValueError for input the engine should never pass: records of different addresses, a record
    twice, or a status the rules do not know. Errors name member hashes and record ids, never addresses.
    """
    group = _survey(member, records)
    if member is not None and member.status not in SUBSCRIBER_STATUS_CODES:
        raise ValueError(
            f"member {member_hash(member.email)} has status {member.status!r}, which the consent "
            "rules do not know; nothing was decided for it"
        )
    if base is not None and base.member_status is not None and base.member_status not in SUBSCRIBER_STATUS_CODES:
        raise ValueError(
            f"the stored base holds status {base.member_status!r}, which the consent rules do not know; "
            "remove that stored base so the next run meets both sides afresh"
        )

    if not group.syncable:
        # Keep the base: a record that becomes syncable later is then judged against what was agreed.
        return Decision("no-syncable-record", None, (), group.skipped, base or _NO_BASE)
    if base is None or base.member_status is None:
        if member is None:
            return _new_in_dynamics(group, base, policy)
        return _first_meeting(member, group, base)

    status_now = member.status if member else "archived"
    # an unsubscribe and a re-subscription between two runs leave the status as it was, but not the opt-in time
    mailchimp_changed = status_now != base.member_status or _opted_in_since(member, base)
    dynamics_changed = group.opted_out != base.opted_out or bool(group.opted_out_ids - base.opted_out_records)
    if (
        mailchimp_changed
        and status_now == "subscribed"
        and group.opted_out
        and _records_changed_since(base, group)
        and not _resubscribed_after(member, group)
    ):
        # A record changed after the re-subscription: an opt-out the base cannot show (out, in, out again).
        dynamics_changed = True
    if mailchimp_changed and dynamics_changed:
        return _both_changed(member, status_now, group, base, policy)
    if mailchimp_changed:
        return _mailchimp_changed(member, status_now, group, base)
    if dynamics_changed:
        return _dynamics_changed(member, status_now, group, base, policy)
    if _disagree(status_now, group.opted_out):
        # The base matches neither side (a lost write, a restored backup): no agreement to build on.
        return _opt_out_wins("stale-base-opt-out-wins", member, status_now, group, base)
    new_base = (
        base if base.opted_out_records == group.opted_out_ids else replace(base, opted_out_records=group.opted_out_ids)
    )  # an opt-in that left D unchanged
    return Decision("no-change", None, (), group.skipped, new_base)


def _survey(member: Member | None, records: Sequence[Record]) -> _Group:
    hashes = {member_hash(member.email)} if member else set()
    seen: set[str] = set()
    syncable: list[Record] = []
    skipped: list[tuple[str, str]] = []
    frozen_opt_out = False
    for record in records:
        if record.record_id in seen:
            raise ValueError(f"record {record.record_id} appears twice in one consent group; pass each record once")
        seen.add(record.record_id)
        problem = email_problem(record.email)
        if problem is not None:
            skipped.append((record.record_id, problem))
            continue
        hashes.add(member_hash(record.email or ""))
        if record.active and record.writable:
            syncable.append(record)
            continue
        if record.kind == "lead":
            skipped.append((record.record_id, "read-only-lead"))
        else:
            skipped.append((record.record_id, "inactive" if not record.active else "read-only"))
        frozen_opt_out = frozen_opt_out or record.opted_out
    if len(hashes) > 1:
        raise ValueError(
            f"one consent group must hold one address, got member hashes {sorted(hashes)}; "
            "group records by normalize_email before deciding"
        )
    return _Group(tuple(syncable), tuple(skipped), frozen_opt_out)


def _new_in_dynamics(group: _Group, base: Base | None, policy: Policy) -> Decision:
    """Rule 1: the audience never held the address."""
    if group.opted_out or group.frozen_opt_out:
        return _conclude("not-added-opted-out", None, group, base, status_after=None)
    add = MailchimpWrite("add", policy.new_member_status)
    return _conclude("new-member", None, group, base, status_after=policy.new_member_status, mailchimp=add)


def _first_meeting(member: Member, group: _Group, base: Base | None) -> Decision:
    """Rule 4 without a base: equal meaning records the base; otherwise the opt-out wins, no exception."""
    status = member.status
    if status == "archived":
        # Archiving is Mailchimp's own decision and hides why (it may follow an unsubscribe): never revive.
        rule = "first-meeting-agree" if group.opted_out else "member-archived-not-revived"
        return _conclude(rule, member, group, base, status_after=status)
    if (status in OPTED_OUT_STATUSES) == group.opted_out:
        return _conclude("first-meeting-agree", member, group, base, status_after=status)
    return _opt_out_wins("first-meeting-opt-out-wins", member, status, group, base)


def _mailchimp_changed(member: Member | None, status_now: str, group: _Group, base: Base) -> Decision:
    """Rule 2, applied to every syncable record of the person (rule 7)."""
    if status_now == "subscribed":
        target: bool | None = False
    elif status_now in OPTED_OUT_STATUSES:
        target = True
    else:
        target = None  # pending, archived: status column only
    return _conclude("mailchimp-changed", member, group, base, status_after=status_now, opt_out_target=target)


def _dynamics_changed(member: Member | None, status_now: str, group: _Group, base: Base, policy: Policy) -> Decision:
    """Rule 3."""
    if group.opted_out:
        if status_now in CONSENTING_STATUSES:
            unsubscribe = MailchimpWrite("set_status", "unsubscribed")
            return _conclude(
                "dynamics-opt-out", member, group, base, status_after="unsubscribed", mailchimp=unsubscribe
            )
        return _conclude("dynamics-opt-out", member, group, base, status_after=status_now)
    if status_now in CONSENTING_STATUSES:
        return _conclude("dynamics-opt-in", member, group, base, status_after=status_now)
    if status_now in OPTED_OUT_STATUSES:
        return _refuse_resubscribe(member, status_now, group, base, policy)
    return _opt_in_without_member(member, group, base, policy)


def _both_changed(member: Member | None, status_now: str, group: _Group, base: Base, policy: Policy) -> Decision:
    """Rule 4 with a base: equal meaning records the base; otherwise the opt-out wins unless the person
    re-subscribed through Mailchimp after the last change of any of their records."""
    if status_now == "archived":
        if group.opted_out:
            return _conclude("both-changed-agree", member, group, base, status_after=status_now)
        return _opt_in_without_member(member, group, base, policy)
    if (status_now in OPTED_OUT_STATUSES) == group.opted_out:
        return _conclude("both-changed-agree", member, group, base, status_after=status_now)
    if group.opted_out and status_now == "subscribed" and _resubscribed_after(member, group):
        return _conclude(
            "both-changed-mailchimp-newer", member, group, base, status_after=status_now, opt_out_target=False
        )
    return _opt_out_wins("both-changed-opt-out-wins", member, status_now, group, base)


def _refuse_resubscribe(member: Member | None, status_now: str, group: _Group, base: Base, policy: Policy) -> Decision:
    """Rule 3, a Dynamics opt-in while Mailchimp holds an opt-out: never subscribed."""
    if policy.resubscribe == "confirm" and status_now == "unsubscribed":
        pending = MailchimpWrite("set_status", "pending")  # the person's own click is what subscribes them
        return _conclude("resubscribe-confirm", member, group, base, status_after="pending", mailchimp=pending)
    return _conclude("resubscribe-blocked", member, group, base, status_after=status_now, opt_out_target=True)


def _opt_in_without_member(member: Member | None, group: _Group, base: Base, policy: Policy) -> Decision:
    """A Dynamics opt-in for a person Mailchimp once held but has archived or deleted.

    The archive may have followed an unsubscribe the base no longer shows, so it is treated like one:
    with RESUBSCRIBE_POLICY=confirm the person is asked again (pending; Mailchimp may refuse a deleted
    address, which the engine reports per member); otherwise nothing is written to Mailchimp, and the
    Dynamics opt-in stands, as archiving is not an opt-out to restore.
    """
    if policy.resubscribe == "confirm":
        pending = MailchimpWrite("add" if member is None else "set_status", "pending")
        return _conclude("resubscribe-confirm", member, group, base, status_after="pending", mailchimp=pending)
    return _conclude("member-archived-not-revived", member, group, base, status_after="archived")


def _opt_out_wins(rule: str, member: Member | None, status_now: str, group: _Group, base: Base | None) -> Decision:
    """Write the opt-out to the side that is not opted out."""
    if group.opted_out:
        unsubscribe = MailchimpWrite("set_status", "unsubscribed")
        return _conclude(rule, member, group, base, status_after="unsubscribed", mailchimp=unsubscribe)
    return _conclude(rule, member, group, base, status_after=status_now, opt_out_target=True)


def _conclude(
    rule: str,
    member: Member | None,
    group: _Group,
    base: Base | None,
    *,
    status_after: str | None,
    mailchimp: MailchimpWrite | None = None,
    opt_out_target: bool | None = None,
) -> Decision:
    """Build the record writes and the base both sides will agree on once the writes succeed."""
    # The column follows the member whenever its status differs from the agreed one, or was never agreed.
    column_due = base is None or base.member_status is None or status_after != base.member_status
    column = status_after if column_due else None
    writes: list[RecordWrite] = []
    opted_out_after: set[str] = set()
    for record in group.syncable:
        opted_out = opt_out_target if opt_out_target is not None and record.opted_out != opt_out_target else None
        if opted_out is not None or column is not None:
            writes.append(RecordWrite(record.record_id, record.kind, opted_out, column))
        if record.opted_out if opted_out is None else opted_out:
            opted_out_after.add(record.record_id)
    last_changed = member.last_changed if member else (base.member_last_changed if base else None)
    new_base = Base(
        member_status=status_after,
        opted_out=bool(opted_out_after),
        member_last_changed=last_changed,
        records_modifiedon=group.newest_modifiedon,
        opted_out_records=frozenset(opted_out_after),
    )
    return Decision(rule, mailchimp, tuple(writes), group.skipped, new_base)


def _records_changed_since(base: Base, group: _Group) -> bool:
    """A record was edited after the base was agreed (the sync's own writes are part of the base)."""
    newest = group.newest_modifiedon
    return base.records_modifiedon is None or newest is None or newest > utc(base.records_modifiedon)


def _resubscribed_after(member: Member | None, group: _Group) -> bool:
    """The person opted in through Mailchimp after the last change of every syncable record (rule 4's exception).

    The opt-in time is used when Mailchimp gives it: a later profile edit also moves last_changed, and must
    not undo an opt-out made in Dynamics in between."""
    newest = group.newest_modifiedon
    if member is None or newest is None:
        return False
    return utc(member.opted_in or member.last_changed) > newest


def _opted_in_since(member: Member | None, base: Base) -> bool:
    """The member subscribed again after the base was agreed, even if the status reads the same."""
    return (
        member is not None
        and member.status == "subscribed"
        and member.opted_in is not None
        and base.member_last_changed is not None
        and utc(member.opted_in) > utc(base.member_last_changed)
    )


def _disagree(status: str, opted_out: bool) -> bool:
    """The two sides contradict each other: subscribed against an opt-out, or an opt-out against none."""
    return (status == "subscribed" and opted_out) or (status in OPTED_OUT_STATUSES and not opted_out)

"""Marketing preferences, the pure part: the rule per (person, interest) pair and one person's plan.

Decisions only, no I/O; the feature in shared/features/preferences/ reads, writes and provisions.
Catalog. Mailchimp is the catalog's master. Every interest of a linked audience is one
``<prefix>_marketingpreference`` row (name, category, public or private, audience, category and interest
ids, active); hidden categories are private, the others public. The row id is derived from (audience,
interest), so mirroring is an upsert that needs no lookup; an interest removed in Mailchimp is deactivated,
never deleted (its subscriptions stay as history).

Subscriptions. One ``<prefix>_preferencesubscription`` row per (record, preference) with a lookup to the
contact, lead or account, a lookup to the preference, opted in yes/no, and which side changed it last and
when. The sync's rows have ids derived from (record, audience, interest); a row a user made keeps its own id,
which the identity map remembers. A missing row means "not opted in". Interests travel in the member pages
and batch subscribes of the status sync, rows in its ``$batch``: no call per interest or per person.

The rule, per (person, interest) pair, against the base both sides agreed on last time:
- only one side changed since the base: it wins;
- both changed: the later change wins (the member's ``last_changed`` against the row's ``modifiedon``, to
  the second); a tie opts out;
- first meeting (no base yet): a side that holds nothing takes the other's value, otherwise as both changed.
Mailchimp keeps one ``last_changed`` per member, not per interest, so an interest counts as changed there
when its value differs from the base. A row counts as changed when its ``modifiedon`` is later than the
newest row time agreed, or when its value differs from what the base says Dynamics holds.

Held. A Dynamics change that wins for a member who is unsubscribed, cleaned, archived or not in the audience
is not written to Mailchimp: the base keeps it (value and time) as Dynamics' side of the pair, and the first
run in which the member may be written again (re-subscribed in Mailchimp, confirmed, added) applies it like
any other Dynamics change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from shared.model.snapshots import PreferenceRow
from shared.model.times import epoch, from_epoch, utc
from shared.rules.audit import AuditEntry

_IDS = uuid.UUID("2f6d9c1e-58a4-4b7f-9e3d-7c0a1b5e8f42")  # namespace of the row ids this product derives
VISIBILITY = {"public": 100000000, "private": 100000001}
CHANGED_BY = {"mailchimp": 100000000, "dynamics": 100000001}
FEATURE = "preference"  # audit entries of preference changes are counted apart from consent
WRITABLE_STATUSES = frozenset({"subscribed", "pending", "transactional"})  # may take interest writes


def preference_id(audience_id: str, interest_id: str) -> str:
    return str(uuid.uuid5(_IDS, f"preference|{audience_id}|{interest_id}"))


def subscription_id(record_id: str, audience_id: str, interest_id: str) -> str:
    return str(uuid.uuid5(_IDS, f"subscription|{record_id.lower()}|{audience_id}|{interest_id}"))


# ---- the rule for one pair --------------------------------------------------------------------------


@dataclass(frozen=True)
class PairSide:
    """One side's view of one (person, interest) pair: its value (None: it holds nothing for the pair),
    whether it changed since the base, and when it last changed."""

    value: bool | None
    changed: bool
    at: datetime | None


@dataclass(frozen=True)
class PairDecision:
    """The value both sides should hold (None: neither holds anything), the side it came from
    ("mailchimp", "dynamics", "both" when they agree, "tie" or "stale" when the opt-out was chosen) and the rule."""

    value: bool | None
    source: str
    rule: str


def decide_pair(base: bool | None, mailchimp: PairSide, dynamics: PairSide) -> PairDecision:
    """The three-way rule for one (person, interest) pair; pure."""
    if base is None:
        if mailchimp.value is None and dynamics.value is None:
            return PairDecision(None, "both", "no-change")
        if dynamics.value is None:
            return PairDecision(mailchimp.value, "mailchimp", "preference-first-meeting-mailchimp-only")
        if mailchimp.value is None:
            return PairDecision(dynamics.value, "dynamics", "preference-first-meeting-dynamics-only")
        if mailchimp.value == dynamics.value:
            return PairDecision(mailchimp.value, "both", "preference-first-meeting-agree")
        return _later("preference-first-meeting", mailchimp, dynamics)
    m = base if mailchimp.value is None else mailchimp.value
    d = base if dynamics.value is None else dynamics.value
    if mailchimp.changed and dynamics.changed:
        if m == d:
            return PairDecision(m, "both", "preference-both-changed-agree")
        return _later("preference-both-changed", replace(mailchimp, value=m), replace(dynamics, value=d))
    if mailchimp.changed:
        return PairDecision(m, "mailchimp", "preference-mailchimp-changed")
    if dynamics.changed:
        return PairDecision(d, "dynamics", "preference-dynamics-changed")
    if m == d:
        return PairDecision(m, "both", "no-change")
    # neither changed yet they disagree (a lost write, a restored backup): no agreement to build on
    return PairDecision(False, "stale", "preference-stale-base-opt-out")


def _later(rule: str, mailchimp: PairSide, dynamics: PairSide) -> PairDecision:
    m_at, d_at = _second(mailchimp.at), _second(dynamics.at)
    if m_at is not None and (d_at is None or m_at > d_at):
        return PairDecision(mailchimp.value, "mailchimp", f"{rule}-mailchimp-later")
    if d_at is not None and (m_at is None or d_at > m_at):
        return PairDecision(dynamics.value, "dynamics", f"{rule}-dynamics-later")
    return PairDecision(False, "tie", f"{rule}-tie-opt-out")


def _second(moment: datetime | None) -> int | None:
    """Both services keep whole seconds; comparing at that precision makes a tie a tie."""
    return None if moment is None else int(utc(moment).timestamp())


# ---- one person's plan ----------------------------------------------------------------------------


@dataclass
class PreferenceBase:
    """The preference part of one identity-map base (see BaseRow)."""

    agreed: dict[str, bool] = field(default_factory=dict)
    held: dict[str, tuple[bool, datetime | None]] = field(default_factory=dict)
    rows_modifiedon: datetime | None = None
    row_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, row: Any) -> PreferenceBase:
        if row is None:
            return cls()
        return cls(
            dict(row.interests),
            {k: (bool(v[0]), from_epoch(v[1])) for k, v in row.held.items()},
            row.preferences_modifiedon,
            dict(row.preference_rows),
        )

    def fields(self) -> dict[str, Any]:
        """The BaseRow fields that store it."""
        return {
            "interests": dict(self.agreed),
            "held": {k: [v, epoch(at)] for k, (v, at) in sorted(self.held.items())},
            "preferences_modifiedon": self.rows_modifiedon,
            "preference_rows": dict(self.row_ids),
        }

    def copy(self) -> PreferenceBase:
        return PreferenceBase(dict(self.agreed), dict(self.held), self.rows_modifiedon, dict(self.row_ids))


@dataclass(frozen=True)
class MemberView:
    """What is known of the member's interests: read this run (or answered by a write), or not."""

    exists: bool  # the audience holds the member, in any status
    interests: frozenset[str] | None  # chosen interest ids; None: not read this run
    last_changed: datetime | None


@dataclass(frozen=True)
class RowWrite:
    """One upsert of one subscription row; ``opted_in`` None only stamps who changed it last and when."""

    record_id: str
    kind: str
    interest_id: str
    opted_in: bool | None
    changed_by: str
    changed_on: datetime | None
    row_id: str
    before: bool | None  # the row's value before (None: no row, or not known)


@dataclass
class PairChange:
    """What happened to one pair, for the audit."""

    interest_id: str
    rule: str
    value: bool
    mailchimp_before: bool | None
    to_mailchimp: bool  # the value is sent to Mailchimp
    held: bool  # Dynamics' value waits until the member may be written
    newly_held: bool  # held now, and not with this value before (audited once)
    was_held: bool  # a held value, now applied
    mailchimp_at: datetime | None
    dynamics_at: datetime | None


@dataclass
class MemberPlan:
    mailchimp: dict[str, bool]  # interests to send with the member's batch subscribe entry
    rows: list[RowWrite]
    changes: list[PairChange]
    base: PreferenceBase  # to store once every write succeeded
    previous: PreferenceBase

    @property
    def writes(self) -> bool:
        return bool(self.mailchimp or self.rows)


def plan_member(
    *,
    audience_id: str,
    interests: Sequence[str],
    base: PreferenceBase,
    member: MemberView,
    records: Sequence[tuple[str, str]],
    known_records: Iterable[str],
    rows: Sequence[PreferenceRow],
    writable: bool,
) -> MemberPlan:
    """Every interest of one person: decide each pair, and say what to write where (pure).

    ``records`` are the person's syncable (record id, kind); ``known_records`` those the base already covered
    (their unread rows hold what the base says); ``rows`` the subscription rows read this run; ``writable``
    whether Mailchimp may take interests for the member after this run's status decision.
    """
    known = set(known_records)
    mine = {record_id for record_id, _ in records}
    latest: dict[tuple[str, str], PreferenceRow] = {}
    for row in sorted(rows, key=lambda r: r.modifiedon):
        if row.record_id in mine:
            latest[(row.record_id, row.interest_id)] = row
    new = PreferenceBase(
        rows_modifiedon=base.rows_modifiedon,
        row_ids={k: v for k, v in base.row_ids.items() if k.split("|", 1)[0] in mine},
    )
    for (record_id, interest_id), row in latest.items():
        if row.row_id:
            new.row_ids[f"{record_id}|{interest_id}"] = row.row_id
        if new.rows_modifiedon is None or row.modifiedon > new.rows_modifiedon:
            new.rows_modifiedon = row.modifiedon
    plan = MemberPlan({}, [], [], new, base)
    for interest_id in interests:
        agreed = base.agreed.get(interest_id)
        held = base.held.get(interest_id)
        dynamics_holds = held[0] if held else agreed  # what the base says unread rows hold
        if member.interests is not None:
            m_value: bool | None = interest_id in member.interests
        elif not member.exists:
            m_value = None
        else:
            m_value = agreed  # not read: unchanged since the base
        mailchimp = PairSide(
            m_value, agreed is not None and m_value is not None and m_value != agreed, member.last_changed
        )
        pair_rows = [row for (_, i), row in latest.items() if i == interest_id]
        if agreed is None and held is None:
            newest = max(pair_rows, key=lambda r: r.modifiedon, default=None)
            winner_row = newest
            dynamics = PairSide(
                newest.opted_in if newest else None, newest is not None, newest.modifiedon if newest else None
            )
        else:
            moved = [
                row
                for row in pair_rows
                if row.opted_in != dynamics_holds
                or base.rows_modifiedon is None
                or row.modifiedon > base.rows_modifiedon
            ]
            winner_row = max(moved, key=lambda r: r.modifiedon, default=None)
            if winner_row is not None:
                dynamics = PairSide(winner_row.opted_in, True, winner_row.modifiedon)
            elif held is not None:
                dynamics = PairSide(held[0], True, held[1])
            else:
                dynamics = PairSide(dynamics_holds, False, None)
        decision = decide_pair(agreed, mailchimp, dynamics)
        if decision.value is None:
            continue
        value = decision.value
        # a new member starts with no interests; an unread one holds what is unknown, so it always takes the value
        mailchimp_now = False if not member.exists else m_value
        to_mailchimp = mailchimp_now is None or mailchimp_now != value
        keep = False
        if to_mailchimp and writable:
            plan.mailchimp[interest_id] = value
            new.agreed[interest_id] = value
        elif to_mailchimp:
            keep = True
            at = (
                dynamics.at
                if decision.source == "dynamics"
                else max(filter(None, (dynamics.at, member.last_changed)), default=None)
            )
            new.held[interest_id] = (value, at)
            if mailchimp_now is not None:
                new.agreed[interest_id] = mailchimp_now
        else:
            new.agreed[interest_id] = value
        from_mailchimp = m_value == value and decision.source != "dynamics"
        changed_by = "mailchimp" if from_mailchimp else "dynamics"
        changed_on = member.last_changed if from_mailchimp else dynamics.at
        wrote_rows = False
        for record_id, kind in records:
            read = latest.get((record_id, interest_id))
            if read is not None:
                before: bool | None = read.opted_in
            elif record_id in known:
                before = dynamics_holds
            else:
                before = None
            row_id = (
                (read.row_id if read else None)
                or base.row_ids.get(f"{record_id}|{interest_id}")
                or subscription_id(record_id, audience_id, interest_id)
            )
            if (before is None and value) or (before is not None and before != value):
                plan.rows.append(RowWrite(record_id, kind, interest_id, value, changed_by, changed_on, row_id, before))
                wrote_rows = True
            elif read is not None and read is winner_row and changed_by == "dynamics":
                # the person's own edit: say so on the row (the edit itself stays as it is)
                plan.rows.append(
                    RowWrite(record_id, kind, interest_id, None, "dynamics", read.modifiedon, row_id, before)
                )
        if not (to_mailchimp or wrote_rows):
            continue  # both sides already hold the value: nothing changed, nothing to audit
        was_held = held is not None and not keep and to_mailchimp
        plan.changes.append(
            PairChange(
                interest_id,
                "preference-held-applied" if was_held else decision.rule,
                value,
                m_value,
                to_mailchimp and not keep,
                keep,
                keep and (held is None or held[0] != value),
                was_held,
                member.last_changed,
                dynamics.at,
            )
        )
    return plan


def settle(
    plan: MemberPlan, *, mailchimp_ok: bool, failed_rows: set[tuple[str, str]], written_at: datetime | None
) -> PreferenceBase:
    """The base to store, given which writes succeeded: a failed write leaves the pair to be decided again."""
    settled = plan.base.copy()
    if not mailchimp_ok:
        for change in plan.changes:
            if change.to_mailchimp:
                # Mailchimp still holds its value; Dynamics' waits like a held one
                settled.held[change.interest_id] = (change.value, change.dynamics_at or change.mailchimp_at)
                if change.mailchimp_before is None:
                    settled.agreed.pop(change.interest_id, None)
                else:
                    settled.agreed[change.interest_id] = change.mailchimp_before
    for _, interest_id in failed_rows:
        previous = plan.previous.agreed.get(interest_id)
        if previous is None:
            settled.agreed.pop(interest_id, None)
        else:
            settled.agreed[interest_id] = previous
    if written_at is not None and (settled.rows_modifiedon is None or written_at > settled.rows_modifiedon):
        settled.rows_modifiedon = written_at
    return settled


def audits(
    plan: MemberPlan,
    names: dict[str, str],
    *,
    member_hash: str,
    record_ids: list[str],
    mailchimp_failure: str | None,
    row_failures: dict[tuple[str, str], str],
) -> list[AuditEntry]:
    """The audit rows of one person's preference changes: one per rule, naming every interest it moved."""
    by_rule: dict[str, list[PairChange]] = {}
    for change in plan.changes:
        if change.held and not change.newly_held:
            continue  # held before with the same value: already in the audit
        by_rule.setdefault("preference-held" if change.held else change.rule, []).append(change)
    found = []
    for rule, changes in by_rule.items():
        wanted = {c.interest_id for c in changes}
        entry = AuditEntry(member_hash, rule, list(record_ids), feature=FEATURE)
        sent = {c.interest_id: c for c in changes if c.to_mailchimp}
        if sent and mailchimp_failure is None:
            entry.mailchimp_old = json.dumps({i: c.mailchimp_before for i, c in sent.items()}, sort_keys=True)
            entry.mailchimp_new = json.dumps({i: c.value for i, c in sent.items()}, sort_keys=True)
        elif sent:
            entry.skipped.append((member_hash, mailchimp_failure or "mailchimp-refused"))
        old: dict[str, dict[str, bool | None]] = {}
        new: dict[str, dict[str, bool]] = {}
        for write in plan.rows:
            if write.interest_id not in wanted or write.opted_in is None:
                continue
            failure = row_failures.get((write.record_id, write.interest_id))
            if failure:
                entry.skipped.append((write.record_id, failure))
                continue
            old.setdefault(write.record_id, {})[write.interest_id] = write.before
            new.setdefault(write.record_id, {})[write.interest_id] = write.opted_in
        if new:
            entry.dynamics_old = json.dumps(old, sort_keys=True)
            entry.dynamics_new = json.dumps(new, sort_keys=True)
        listed = ", ".join(f"{names.get(c.interest_id, c.interest_id)} = {'yes' if c.value else 'no'}" for c in changes)
        entry.detail = f"preferences: {listed}"
        if rule == "preference-held":
            entry.detail += "; kept in Dynamics until the member may be written again (subscribed, pending)"
        entry.member_last_changed = max(filter(None, (c.mailchimp_at for c in changes)), default=None)
        entry.records_modifiedon = max(filter(None, (c.dynamics_at for c in changes)), default=None)
        if entry.mailchimp_new or entry.dynamics_new or entry.skipped or rule == "preference-held":
            found.append(entry)
    return found

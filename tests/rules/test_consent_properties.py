"""Invariants of the consent rules over random states of both sides, and over random histories of runs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.rules.addresses import normalize_email
from shared.rules.consent import (
    OPTED_OUT_STATUSES,
    SUBSCRIBER_STATUS_CODES,
    Base,
    Decision,
    Member,
    Policy,
    Record,
    decide,
)

NEVER = Policy()
FAST = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EMAIL = "person+news@example.com"
STATUSES = tuple(SUBSCRIBER_STATUS_CODES)
RECORD_IDS = ("c1", "c2", "l1", "a1")
KINDS = {"c": "contact", "l": "lead", "a": "account"}


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


moments = st.integers(0, 20).map(at)
spellings = st.sampled_from([EMAIL, EMAIL.upper(), f"  {EMAIL}\t", "Person+News@Example.com"])
policies = st.builds(
    Policy,
    resubscribe=st.sampled_from(["never", "confirm"]),
    new_member_status=st.sampled_from(["subscribed", "pending"]),
)
members = st.none() | st.builds(Member, status=st.sampled_from(STATUSES), last_changed=moments, email=spellings)
bases = st.none() | st.builds(
    Base,
    member_status=st.none() | st.sampled_from(STATUSES),
    opted_out=st.booleans(),
    member_last_changed=st.none() | moments,
    records_modifiedon=st.none() | moments,
    opted_out_records=st.frozensets(st.sampled_from(RECORD_IDS)),
)


@st.composite
def records(draw: st.DrawFn) -> Record:
    record_id = draw(st.sampled_from(RECORD_IDS))
    mostly = st.sampled_from([True, True, True, False])
    active = draw(mostly)
    return Record(
        record_id=record_id,
        kind=KINDS[record_id[0]],  # type: ignore[arg-type]
        email=draw(st.one_of(spellings, spellings, spellings, st.sampled_from([None, "", "person@"]))),
        opted_out=draw(st.booleans()),
        modifiedon=draw(moments),
        active=active,
        writable=active and draw(mostly),
    )


groups = st.lists(records(), max_size=4, unique_by=lambda record: record.record_id)


def syncable(record: Record) -> bool:
    return record.active and record.writable and normalize_email(record.email) is not None


def apply(
    decision: Decision, member: Member | None, group: list[Record], now: datetime
) -> tuple[Member | None, list[Record]]:
    """What both sides hold once the engine has carried the decision out."""
    write = decision.mailchimp
    if write is not None and write.action == "add":
        assert member is None, "add is only for members absent from Mailchimp"
        member = Member(write.status, now, EMAIL)
    elif write is not None:
        assert member is not None, "set_status needs a member"
        member = replace(member, status=write.status, last_changed=now)
    by_id = {record.record_id: record for record in group}
    for change in decision.records:
        record = by_id[change.record_id]
        assert syncable(record), f"{record.record_id} is frozen or has no valid address but got a write"
        by_id[change.record_id] = replace(
            record, modifiedon=now, opted_out=record.opted_out if change.opted_out is None else change.opted_out
        )
    return member, [by_id[record.record_id] for record in group]


def assert_never_resubscribes(decision: Decision, member: Member | None, base: Base | None) -> None:
    write = decision.mailchimp
    if write is None:
        return
    if member is None:
        assert write.action == "add"
    else:
        assert write.action == "set_status" and write.status in {"unsubscribed", "pending"}
    if write.status == "subscribed":
        assert member is None and (base is None or base.member_status is None)
    holds_opt_out = (member is not None and member.status in OPTED_OUT_STATUSES) or (
        base is not None and base.member_status in OPTED_OUT_STATUSES
    )
    assert not (holds_opt_out and write.status == "subscribed")


def assert_sides_agree(member: Member | None, group: list[Record]) -> None:
    """Subscribed means no syncable record opted out; an opt-out status means some record is opted out."""
    live = [record for record in group if syncable(record)]
    if member is None or not live:
        return
    opted_out = any(record.opted_out for record in live)
    if member.status == "subscribed":
        assert not opted_out
    if member.status in OPTED_OUT_STATUSES:
        assert opted_out


@FAST
@given(members, groups, bases, policies)
def test_never_resubscribes(member: Member | None, group: list[Record], base: Base | None, policy: Policy) -> None:
    assert_never_resubscribes(decide(member, group, base, policy), member, base)


@FAST
@given(members, groups, bases, policies)
def test_a_decision_applied_twice_is_a_no_op(
    member: Member | None, group: list[Record], base: Base | None, policy: Policy
) -> None:
    first = decide(member, group, base, policy)
    member_after, group_after = apply(first, member, group, at(60))

    second = decide(member_after, group_after, first.new_base, policy)

    assert not second.writes, (first.rule, second)
    assert second.rule in {"no-change", first.rule}
    assert second.new_base == first.new_base


@FAST
@given(members, groups, bases, policies)
def test_after_applying_both_sides_agree(
    member: Member | None, group: list[Record], base: Base | None, policy: Policy
) -> None:
    decision = decide(member, group, base, policy)

    assert_sides_agree(*apply(decision, member, group, at(60)))


@FAST
@given(members, groups, bases, policies)
def test_writes_reach_every_syncable_record_once_and_skips_name_the_rest(
    member: Member | None, group: list[Record], base: Base | None, policy: Policy
) -> None:
    decision = decide(member, group, base, policy)

    written = [change.record_id for change in decision.records]
    assert len(written) == len(set(written))
    assert set(written) <= {record.record_id for record in group if syncable(record)}
    assert {record_id for record_id, _ in decision.skipped} == {r.record_id for r in group if not syncable(r)}
    # Rule 7: a change reaches every syncable record of the person, not just the one that moved.
    live = {record.record_id: record for record in group if syncable(record)}
    columns = {change.subscriber_status for change in decision.records}
    targets = {change.opted_out for change in decision.records} - {None}
    if columns - {None}:
        assert len(columns) == 1 and set(written) == set(live)
    assert len(targets) <= 1
    for target in targets:
        assert all(record.opted_out == target or record_id in written for record_id, record in live.items())


@FAST
@given(members, groups, bases, policies)
def test_spelling_of_the_address_does_not_matter(
    member: Member | None, group: list[Record], base: Base | None, policy: Policy
) -> None:
    canonical_member = member and replace(member, email=EMAIL)
    canonical_group = [replace(record, email=normalize_email(record.email) or record.email) for record in group]

    assert decide(member, group, base, policy) == decide(canonical_member, canonical_group, base, policy)


# A tiny world where the person, Mailchimp admins and CRM users act between runs of the sync.
PERSON_EVENTS = (
    "subscribe",
    "signup-pending",
    "confirm",
    "unsubscribe",
    "bounce",
    "make-transactional",
    "archive",
    "delete",
)
CRM_EVENTS = ("opt-out", "opt-in", "deactivate", "reactivate")
SIM_IDS = ("c1", "l1", "a1")


@dataclass
class World:
    policy: Policy
    member: Member | None
    records: list[Record]
    base: Base | None = None
    clock: int = 0
    forgotten: bool = False  # permanently deleted: Mailchimp refuses to add the address again
    opted_out_since_subscribe: bool = False  # unsubscribed, cleaned or transactional since the person last subscribed
    last_subscribe: int = -1
    crm_opt_outs: dict[str, int] = field(default_factory=dict)  # record id -> when a CRM user opted it out

    def tick(self) -> datetime:
        self.clock += 1
        return at(self.clock)

    def mailchimp(self, event: str) -> None:
        now, status = self.tick(), self.member.status if self.member else None
        if event == "subscribe":
            self.member, self.forgotten = Member("subscribed", now, EMAIL), False
            self.opted_out_since_subscribe, self.last_subscribe = False, self.clock
        elif event == "signup-pending" and status != "subscribed":
            self.member, self.forgotten = Member("pending", now, EMAIL), False
        elif event == "confirm" and status == "pending":
            self.member = Member("subscribed", now, EMAIL)
            self.opted_out_since_subscribe, self.last_subscribe = False, self.clock
        elif event == "unsubscribe" and status in {"subscribed", "pending"}:
            self.set_member("unsubscribed", now)
        elif event == "bounce" and status not in {None, "archived"}:
            self.set_member("cleaned", now)
        elif event == "make-transactional" and status is not None:
            self.set_member("transactional", now)
        elif event == "archive" and status is not None:
            self.set_member("archived", now)
        elif event == "delete" and status is not None:
            self.member, self.forgotten = None, True

    def set_member(self, status: str, now: datetime) -> None:
        assert self.member is not None
        self.member = replace(self.member, status=status, last_changed=now)
        self.opted_out_since_subscribe = self.opted_out_since_subscribe or status in OPTED_OUT_STATUSES

    def crm(self, event: str, index: int) -> None:
        now, position = self.tick(), index % len(self.records)
        record = self.records[position]
        if event == "opt-out" and record.writable and not record.opted_out:
            self.records[position] = replace(record, opted_out=True, modifiedon=now)
            self.crm_opt_outs[record.record_id] = self.clock
        elif event == "opt-in" and record.writable and record.opted_out:
            self.records[position] = replace(record, opted_out=False, modifiedon=now)
            self.crm_opt_outs.pop(record.record_id, None)
        elif event in {"deactivate", "reactivate"}:
            active = event == "reactivate"
            self.records[position] = replace(record, active=active, writable=active, modifiedon=now)

    def run(self) -> None:
        now = self.tick()
        decision = decide(self.member, self.records, self.base, self.policy)
        assert_never_resubscribes(decision, self.member, self.base)
        write = decision.mailchimp
        if write is not None and write.action == "add" and self.forgotten:
            return  # Mailchimp: "Forgotten Email Not Subscribed"; the engine reports it and stores nothing
        if write is not None and self.member is not None:
            assert not (write.status == "subscribed" and self.member.status in OPTED_OUT_STATUSES)
        self.member, self.records = apply(decision, self.member, self.records, now)
        if write is not None and write.status in OPTED_OUT_STATUSES:
            self.opted_out_since_subscribe = True
        self.base = decision.new_base
        self.check()

    def check(self) -> None:
        subscribed = self.member is not None and self.member.status == "subscribed"
        assert not (subscribed and self.opted_out_since_subscribe), "re-subscribed a person who had opted out"
        assert_sides_agree(self.member, self.records)
        for record in self.records:
            opted_out_at = self.crm_opt_outs.get(record.record_id)
            if syncable(record) and opted_out_at is not None and opted_out_at > self.last_subscribe:
                # A CRM opt-out newer than the person's last subscription through Mailchimp is never lost.
                assert record.opted_out and not subscribed, (record, self.member)


events = st.lists(
    st.one_of(
        st.just(("run", 0)),
        st.tuples(st.sampled_from(PERSON_EVENTS), st.just(0)),
        st.tuples(st.sampled_from(CRM_EVENTS), st.integers(0, len(SIM_IDS) - 1)),
    ),
    max_size=30,
)
first_members = st.none() | st.builds(
    Member, status=st.sampled_from(STATUSES), last_changed=st.just(at(0)), email=st.just(EMAIL)
)


@settings(FAST, max_examples=400)
@example(
    NEVER,
    Member("subscribed", at(0), EMAIL),
    [True],  # an opt-out hidden by out, in, out between runs
    [("run", 0), ("subscribe", 0), ("opt-in", 0), ("opt-out", 0)],
)
@given(policies, first_members, st.lists(st.booleans(), min_size=1, max_size=len(SIM_IDS)), events)
def test_histories_never_resubscribe_an_opted_out_person(
    policy: Policy, member: Member | None, opted_out: list[bool], history: list[tuple[str, int]]
) -> None:
    world = World(
        policy,
        member,
        [
            Record(record_id, KINDS[record_id[0]], EMAIL, flag, at(0), True, True)  # type: ignore[arg-type]
            for record_id, flag in zip(SIM_IDS, opted_out, strict=False)
        ],
    )
    world.opted_out_since_subscribe = member is not None and member.status in OPTED_OUT_STATUSES
    world.last_subscribe = 0 if member is not None and member.status == "subscribed" else -1
    for event, index in [*history, ("run", 0), ("run", 0)]:
        if event == "run":
            world.run()
        elif event in PERSON_EVENTS:
            world.mailchimp(event)
        else:
            world.crm(event, index)

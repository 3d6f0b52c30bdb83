"""The consent rules, case by case: one row per situation design.md's rules name."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.rules.addresses import member_hash
from shared.rules.consent import (
    OPTED_OUT_STATUSES,
    RULE_9_ORDER,
    SUBSCRIBER_STATUS_CODES,
    Base,
    Decision,
    MailchimpWrite,
    Member,
    Policy,
    Record,
    RecordWrite,
    decide,
    subscriber_status_for,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EMAIL = "person+news@example.com"
NEVER = Policy()
CONFIRM = Policy(resubscribe="confirm")
DOUBLE_OPT_IN = Policy(new_member_status="pending")


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def member(status: str, t: int = 0, email: str = EMAIL) -> Member:
    return Member(status=status, last_changed=at(t), email=email)


def record(
    record_id: str = "c1",
    kind: str = "contact",
    *,
    opted_out: bool = False,
    t: int = 0,
    active: bool = True,
    writable: bool | None = None,
    email: str | None = EMAIL,
) -> Record:
    return Record(
        record_id=record_id,
        kind=kind,
        email=email,
        opted_out=opted_out,
        modifiedon=at(t),  # type: ignore[arg-type]
        active=active,
        writable=active if writable is None else writable,
    )


def base(status: str | None, opted_out: bool, out: set[str] | None = None) -> Base:
    """A base as a previous decision stores it: opted-out record ids default to c1 when opted out."""
    ids = out if out is not None else ({"c1"} if opted_out else set())
    return Base(
        member_status=status,
        opted_out=opted_out,
        member_last_changed=at(0) if status else None,
        records_modifiedon=at(0),
        opted_out_records=frozenset(ids),
    )


@dataclass
class Case:
    id: str
    member: Member | None
    records: list[Record]
    base: Base | None
    rule: str
    mailchimp: MailchimpWrite | None = None
    writes: dict[str, tuple[bool | None, str | None]] = field(default_factory=dict)
    agreed: tuple[str | None, bool] | None = None  # new_base (member_status, opted_out)
    policy: Policy = NEVER


ADD = MailchimpWrite("add", "subscribed")
UNSUBSCRIBE = MailchimpWrite("set_status", "unsubscribed")
PENDING = MailchimpWrite("set_status", "pending")

CASES = [
    # Rule 1: new in Dynamics, absent in Mailchimp.
    Case("r1-add", None, [record()], None, "new-member", ADD, {"c1": (None, "subscribed")}, ("subscribed", False)),
    Case(
        "r1-add-double-opt-in",
        None,
        [record()],
        None,
        "new-member",
        MailchimpWrite("add", "pending"),
        {"c1": (None, "pending")},
        ("pending", False),
        DOUBLE_OPT_IN,
    ),
    Case("r1-opted-out", None, [record(opted_out=True)], None, "not-added-opted-out", agreed=(None, True)),
    Case(
        "r1-one-of-two-opted-out",
        None,
        [record(), record("l1", "lead", opted_out=True)],
        None,
        "not-added-opted-out",
        agreed=(None, True),
    ),
    Case(
        "r1-inactive-opt-out-still-blocks-add",
        None,
        [record(), record("c2", opted_out=True, active=False)],
        None,
        "not-added-opted-out",
        agreed=(None, False),
    ),
    Case(
        "r1-added-once-opted-in",
        None,
        [record()],
        base(None, True),
        "new-member",
        ADD,
        {"c1": (None, "subscribed")},
        ("subscribed", False),
    ),
    Case("r1-nothing-syncable", None, [record(active=False)], None, "no-syncable-record", agreed=(None, False)),
    # Rule 2: only Mailchimp changed since the base.
    Case(
        "r2-resubscribed-through-mailchimp",
        member("subscribed", 5),
        [record(opted_out=True)],
        base("unsubscribed", True),
        "mailchimp-changed",
        None,
        {"c1": (False, "subscribed")},
        ("subscribed", False),
    ),
    *[
        Case(
            f"r2-{status}",
            member(status, 5),
            [record()],
            base("subscribed", False),
            "mailchimp-changed",
            None,
            {"c1": (True, status)},
            (status, True),
        )
        for status in sorted(OPTED_OUT_STATUSES)
    ],
    Case(
        "r2-opt-out-again-after-resubscription",
        member("subscribed", 2),
        [record(opted_out=True, t=4)],
        base("unsubscribed", True),
        "both-changed-opt-out-wins",
        UNSUBSCRIBE,
        {},
        ("unsubscribed", True),
    ),
    Case(
        "r2-pending-column-only",
        member("pending", 5),
        [record(opted_out=True)],
        base("unsubscribed", True),
        "mailchimp-changed",
        None,
        {"c1": (None, "pending")},
        ("pending", True),
    ),
    Case(
        "r2-archived-column-only",
        member("archived", 5),
        [record()],
        base("subscribed", False),
        "mailchimp-changed",
        None,
        {"c1": (None, "archived")},
        ("archived", False),
    ),
    Case(
        "r2-deleted-reads-as-archived",
        None,
        [record()],
        base("subscribed", False),
        "mailchimp-changed",
        None,
        {"c1": (None, "archived")},
        ("archived", False),
    ),
    # Rule 3: only Dynamics changed since the base.
    Case(
        "r3-opt-out-unsubscribes",
        member("subscribed"),
        [record(opted_out=True, t=5)],
        base("subscribed", False),
        "dynamics-opt-out",
        UNSUBSCRIBE,
        {"c1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r3-opt-out-unsubscribes-pending",
        member("pending"),
        [record(opted_out=True, t=5)],
        base("pending", False),
        "dynamics-opt-out",
        UNSUBSCRIBE,
        {"c1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r3-second-opt-out-while-unsubscribed",
        member("unsubscribed"),
        [record(opted_out=True), record("c2", opted_out=True, t=5)],
        base("unsubscribed", True),
        "dynamics-opt-out",
        agreed=("unsubscribed", True),
    ),
    Case(
        "r3-opt-out-while-archived",
        member("archived"),
        [record(opted_out=True, t=5)],
        base("archived", False),
        "dynamics-opt-out",
        agreed=("archived", True),
    ),
    Case(
        "r3-opt-in-blocked",
        member("unsubscribed"),
        [record(t=5)],
        base("unsubscribed", True),
        "resubscribe-blocked",
        None,
        {"c1": (True, None)},
        ("unsubscribed", True),
    ),
    Case(
        "r3-opt-in-confirm",
        member("unsubscribed"),
        [record(t=5)],
        base("unsubscribed", True),
        "resubscribe-confirm",
        PENDING,
        {"c1": (None, "pending")},
        ("pending", False),
        CONFIRM,
    ),
    *[
        Case(
            f"r3-opt-in-{status}-blocked-even-with-confirm",
            member(status),
            [record(t=5)],
            base(status, True),
            "resubscribe-blocked",
            None,
            {"c1": (True, None)},
            (status, True),
            CONFIRM,
        )
        for status in ("cleaned", "transactional")
    ],
    Case(
        "r3-opt-in-archived-not-revived",
        member("archived"),
        [record(t=5)],
        base("archived", True),
        "member-archived-not-revived",
        agreed=("archived", False),
    ),
    Case(
        "r3-opt-in-archived-confirm",
        member("archived"),
        [record(t=5)],
        base("archived", True),
        "resubscribe-confirm",
        PENDING,
        {"c1": (None, "pending")},
        ("pending", False),
        CONFIRM,
    ),
    Case(
        "r3-opt-in-deleted-confirm-adds-pending",
        None,
        [record(t=5)],
        base("archived", True),
        "resubscribe-confirm",
        MailchimpWrite("add", "pending"),
        {"c1": (None, "pending")},
        ("pending", False),
        CONFIRM,
    ),
    Case(
        "r3-opt-in-while-pending",
        member("pending"),
        [record(t=5)],
        base("pending", True),
        "dynamics-opt-in",
        agreed=("pending", False),
    ),
    # Rule 4: first meeting (no base).
    Case(
        "r4-first-meeting-agree-subscribed",
        member("subscribed"),
        [record()],
        None,
        "first-meeting-agree",
        None,
        {"c1": (None, "subscribed")},
        ("subscribed", False),
    ),
    Case(
        "r4-first-meeting-agree-cleaned",
        member("cleaned"),
        [record(opted_out=True)],
        None,
        "first-meeting-agree",
        None,
        {"c1": (None, "cleaned")},
        ("cleaned", True),
    ),
    Case(
        "r4-first-meeting-dynamics-opt-out-wins-even-if-older",
        member("subscribed", 99),
        [record(opted_out=True)],
        None,
        "first-meeting-opt-out-wins",
        UNSUBSCRIBE,
        {"c1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r4-first-meeting-mailchimp-opt-out-wins",
        member("unsubscribed"),
        [record()],
        None,
        "first-meeting-opt-out-wins",
        None,
        {"c1": (True, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r4-first-meeting-pending-against-opt-out",
        member("pending"),
        [record(opted_out=True)],
        None,
        "first-meeting-opt-out-wins",
        UNSUBSCRIBE,
        {"c1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r4-first-meeting-archived-not-revived",
        member("archived"),
        [record()],
        None,
        "member-archived-not-revived",
        None,
        {"c1": (None, "archived")},
        ("archived", False),
        CONFIRM,
    ),
    Case(
        "r4-member-appears-after-not-added",
        member("subscribed", 99),
        [record(opted_out=True)],
        base(None, True),
        "first-meeting-opt-out-wins",
        UNSUBSCRIBE,
        {"c1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    # Rule 4: both changed since the base.
    Case(
        "r4-both-changed-agree",
        member("unsubscribed", 5),
        [record(opted_out=True, t=5)],
        base("subscribed", False),
        "both-changed-agree",
        None,
        {"c1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r4-both-changed-mailchimp-newer",
        member("subscribed", 10),
        [record(opted_out=True, t=5)],
        base("pending", False),
        "both-changed-mailchimp-newer",
        None,
        {"c1": (False, "subscribed")},
        ("subscribed", False),
    ),
    Case(
        "r4-both-changed-dynamics-newer",
        member("subscribed", 3),
        [record(opted_out=True, t=5)],
        base("pending", False),
        "both-changed-opt-out-wins",
        UNSUBSCRIBE,
        {"c1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r4-both-changed-same-second-opt-out-wins",
        member("subscribed", 5),
        [record(opted_out=True, t=5)],
        base("pending", False),
        "both-changed-opt-out-wins",
        UNSUBSCRIBE,
        {"c1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r4-both-changed-pending-never-wins",
        member("pending", 10),
        [record(opted_out=True, t=5)],
        base("subscribed", False),
        "both-changed-opt-out-wins",
        UNSUBSCRIBE,
        {"c1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r4-both-changed-mailchimp-opt-out-wins",
        member("unsubscribed", 10),
        [record(t=5)],
        base("pending", True),
        "both-changed-opt-out-wins",
        None,
        {"c1": (True, "unsubscribed")},
        ("unsubscribed", True),
        CONFIRM,
    ),
    Case(
        "r4-new-opt-out-behind-an-old-one-wins",
        member("subscribed", 5),
        [record(opted_out=True, t=1), record("c2", opted_out=True, t=6)],
        base("unsubscribed", True),
        "both-changed-opt-out-wins",
        UNSUBSCRIBE,
        {},
        ("unsubscribed", True),
    ),
    Case(
        "r4-resubscribed-after-the-new-opt-out",
        member("subscribed", 7),
        [record(opted_out=True, t=1), record("c2", opted_out=True, t=6)],
        base("unsubscribed", True),
        "both-changed-mailchimp-newer",
        None,
        {"c1": (False, "subscribed"), "c2": (False, "subscribed")},
        ("subscribed", False),
    ),
    Case(
        "r4-deleted-and-opted-in-not-revived",
        None,
        [record(t=5)],
        base("unsubscribed", True),
        "member-archived-not-revived",
        None,
        {"c1": (None, "archived")},
        ("archived", False),
    ),
    Case(
        "r4-deleted-and-opted-in-confirm",
        None,
        [record(t=5)],
        base("unsubscribed", True),
        "resubscribe-confirm",
        MailchimpWrite("add", "pending"),
        {"c1": (None, "pending")},
        ("pending", False),
        CONFIRM,
    ),
    # No change, and a base that contradicts both sides.
    Case(
        "no-change",
        member("subscribed"),
        [record()],
        base("subscribed", False),
        "no-change",
        agreed=("subscribed", False),
    ),
    Case(
        "stale-base-mailchimp-opted-out",
        member("unsubscribed"),
        [record()],
        base("unsubscribed", False),
        "stale-base-opt-out-wins",
        None,
        {"c1": (True, None)},
        ("unsubscribed", True),
    ),
    Case(
        "stale-base-dynamics-opted-out",
        member("subscribed"),
        [record(opted_out=True)],
        base("subscribed", True),
        "stale-base-opt-out-wins",
        UNSUBSCRIBE,
        {"c1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    # Rule 7: several records with one email.
    Case(
        "r7-mailchimp-unsubscribe-reaches-every-record",
        member("unsubscribed", 5),
        [record(), record("l1", "lead"), record("a1", "account")],
        base("subscribed", False),
        "mailchimp-changed",
        None,
        dict.fromkeys(("c1", "l1", "a1"), (True, "unsubscribed")),
        ("unsubscribed", True),
    ),
    Case(
        "r7-opt-out-on-the-lead-unsubscribes",
        member("subscribed"),
        [record(), record("l1", "lead", opted_out=True)],
        base("subscribed", False),
        "dynamics-opt-out",
        UNSUBSCRIBE,
        {"c1": (None, "unsubscribed"), "l1": (None, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r7-resubscribe-clears-every-record",
        member("subscribed", 9),
        [record(opted_out=True), record("l1", "lead", opted_out=True)],
        base("unsubscribed", True, {"c1", "l1"}),
        "mailchimp-changed",
        None,
        {"c1": (False, "subscribed"), "l1": (False, "subscribed")},
        ("subscribed", False),
    ),
    Case(
        "r7-opt-in-on-one-record-keeps-the-person-out",
        member("unsubscribed"),
        [record(t=5), record("l1", "lead", opted_out=True)],
        base("unsubscribed", True, {"c1", "l1"}),
        "no-change",
        agreed=("unsubscribed", True),
    ),
    # Rule 8: per-record refusals never fail the decision.
    Case(
        "r8-frozen-records-skipped",
        member("unsubscribed", 5),
        [
            record(),
            record("c2", active=False),
            record("l1", "lead", active=False),
            record("l2", "lead", writable=False),
            record("a1", "account", writable=False),
        ],
        base("subscribed", False),
        "mailchimp-changed",
        None,
        {"c1": (True, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r8-addresses-missing-or-invalid",
        member("unsubscribed", 5),
        [record(), record("c2", email=None), record("c3", email="  "), record("c4", email="person@@example.com")],
        base("subscribed", False),
        "mailchimp-changed",
        None,
        {"c1": (True, "unsubscribed")},
        ("unsubscribed", True),
    ),
    Case(
        "r8-only-frozen-records",
        member("unsubscribed", 5),
        [record(active=False), record("l1", "lead", writable=False)],
        base("subscribed", False),
        "no-syncable-record",
        agreed=("subscribed", False),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decision(case: Case) -> None:
    decision = decide(case.member, case.records, case.base, case.policy)

    assert decision.rule == case.rule
    assert decision.mailchimp == case.mailchimp
    assert {write.record_id: (write.opted_out, write.subscriber_status) for write in decision.records} == case.writes
    assert (decision.new_base.member_status, decision.new_base.opted_out) == case.agreed
    if decision.rule == "no-change":  # only the opted-out record ids may move (an opt-in that left D unchanged)
        assert replace(decision.new_base, opted_out_records=case.base.opted_out_records) == case.base


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_never_subscribes_a_member_mailchimp_holds(case: Case) -> None:
    decision = decide(case.member, case.records, case.base, case.policy)

    if decision.mailchimp is not None:
        assert (decision.mailchimp.action == "add") == (case.member is None)
        if decision.mailchimp.status == "subscribed":
            assert case.member is None and (case.base is None or case.base.member_status is None)


def test_frozen_and_invalid_records_are_skipped_with_their_reason() -> None:
    records = [
        record(),
        record("c2", active=False),
        record("l1", "lead", active=False),
        record("l2", "lead", writable=False),
        record("a1", "account", writable=False),
        record("c3", email=None),
        record("c4", email=" \t"),
        record("c5", email="person@example"),
    ]

    decision = decide(member("unsubscribed", 5), records, base("subscribed", False), NEVER)

    assert decision.skipped == (
        ("c2", "inactive"),
        ("l1", "read-only-lead"),
        ("l2", "read-only-lead"),
        ("a1", "read-only"),
        ("c3", "missing-email"),
        ("c4", "missing-email"),
        ("c5", "invalid-email"),
    )
    assert [write.record_id for write in decision.records] == ["c1"]


def test_record_writes_carry_the_record_kind() -> None:
    decision = decide(
        member("cleaned", 5),
        [record(), record("l1", "lead"), record("a1", "account")],
        base("subscribed", False),
        NEVER,
    )

    assert decision.records == (
        RecordWrite("c1", "contact", True, "cleaned"),
        RecordWrite("l1", "lead", True, "cleaned"),
        RecordWrite("a1", "account", True, "cleaned"),
    )


def test_partial_opt_in_is_remembered_so_a_later_opt_out_is_seen() -> None:
    # c1 opts in while l1 stays out: nothing to write, but the base forgets c1's opt-out...
    first = decide(
        member("pending"),
        [record(t=5), record("l1", "lead", opted_out=True)],
        base("pending", True, {"c1", "l1"}),
        NEVER,
    )
    assert first.rule == "no-change" and not first.writes
    assert first.new_base.opted_out_records == frozenset({"l1"})
    # ...so that c1 opting out again unsubscribes the pending member (rule 7).
    second = decide(
        member("pending"), [record(opted_out=True, t=9), record("l1", "lead", opted_out=True)], first.new_base, NEVER
    )
    assert second.rule == "dynamics-opt-out" and second.mailchimp == UNSUBSCRIBE


def test_naive_timestamps_read_as_utc() -> None:
    naive_member = Member("subscribed", datetime(2025, 3, 1, 12, 0, 10), EMAIL)
    aware_record = record(opted_out=True, t=5)

    decision = decide(naive_member, [aware_record], base("pending", False), NEVER)

    assert decision.rule == "both-changed-mailchimp-newer"


# Rules 5 and 6 belong to the engine; the decision itself must not care how an address is spelled.
@pytest.mark.parametrize(
    "spelling", ["Person+News@Example.COM", "  person+news@example.com\t", "PERSON+NEWS@EXAMPLE.COM "]
)
def test_decision_ignores_case_and_surrounding_whitespace(spelling: str) -> None:
    canonical = decide(member("unsubscribed", 5), [record(), record("l1", "lead")], base("subscribed", False), NEVER)

    spelled = decide(
        member("unsubscribed", 5, email=spelling),
        [record(email=spelling), record("l1", "lead")],
        base("subscribed", False),
        NEVER,
    )

    assert spelled == canonical


def test_records_of_different_addresses_are_refused_by_hash_only() -> None:
    with pytest.raises(ValueError, match="one address") as refused:
        decide(member("subscribed"), [record(email="someone.else@example.com")], None, NEVER)

    assert "example.com" not in str(refused.value)
    assert member_hash(EMAIL) in str(refused.value)


def test_plus_addresses_are_distinct_people() -> None:
    with pytest.raises(ValueError, match="one address"):
        decide(None, [record(email="person@example.com"), record("c2", email="person+news@example.com")], None, NEVER)


def test_a_record_passed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="c1 appears twice"):
        decide(None, [record(), record()], None, NEVER)


def test_unknown_member_status_is_refused_by_hash() -> None:
    with pytest.raises(ValueError, match="'deleted'") as refused:
        decide(member("deleted"), [record()], None, NEVER)

    assert member_hash(EMAIL) in str(refused.value) and EMAIL not in str(refused.value)


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [({"resubscribe": "always"}, "RESUBSCRIBE_POLICY"), ({"new_member_status": "transactional"}, "NEW_MEMBER_STATUS")],
)
def test_policy_names_the_setting_it_refuses(kwargs: dict[str, str], setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        Policy(**kwargs)  # type: ignore[arg-type]


# Rule 9.
@pytest.mark.parametrize(
    ("statuses", "shown"),
    [
        ([], None),
        ([None], None),
        (["archived"], "archived"),
        (["archived", "cleaned"], "cleaned"),
        (["cleaned", "unsubscribed", "archived"], "unsubscribed"),
        (["unsubscribed", "transactional"], "transactional"),
        (["archived", "pending", "cleaned"], "pending"),
        (["pending", "subscribed", "unsubscribed"], "subscribed"),
    ],
)
def test_subscriber_status_for(statuses: list[str | None], shown: str | None) -> None:
    assert subscriber_status_for(statuses) == shown


def test_rule_9_order_is_the_designs_for_every_pair() -> None:
    assert RULE_9_ORDER == ("subscribed", "pending", "transactional", "unsubscribed", "cleaned", "archived")
    for earlier, later in itertools.combinations(RULE_9_ORDER, 2):
        assert subscriber_status_for([later, earlier]) == earlier
        assert subscriber_status_for(iter([earlier, later])) == earlier


def test_subscriber_status_codes_are_the_contract() -> None:
    assert SUBSCRIBER_STATUS_CODES == {
        "subscribed": 100000000,
        "unsubscribed": 100000001,
        "cleaned": 100000002,
        "pending": 100000003,
        "transactional": 100000004,
        "archived": 100000005,
    }


def test_decision_reports_whether_it_writes() -> None:
    assert not Decision("no-change", None, (), (), base("subscribed", False)).writes
    assert Decision("x", UNSUBSCRIBE, (), (), base("subscribed", False)).writes

"""The preference rule without I/O: one pair's three-way decision, one person's plan, the compact forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model.snapshots import Group, MemberSnapshot, PreferenceRow, RecordSnapshot
from shared.model.wire import BatchMessage
from shared.rules.addresses import member_hash
from shared.rules.preferences import (
    MemberView,
    PairSide,
    PreferenceBase,
    decide_pair,
    plan_member,
    settle,
    subscription_id,
)
from shared.state.identity import BaseRow

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
INTERESTS = ["i1", "i2", "i3"]
moments = st.integers(0, 5).map(lambda n: T0 + timedelta(seconds=n))
values = st.booleans()


# ---- one pair -----------------------------------------------------------------------------------
@given(base=values, value=values, at=moments, other_at=moments)
def test_only_one_side_changed_it_wins(base, value, at, other_at):
    changed = PairSide(value, True, at)
    still = PairSide(base, False, other_at)
    assert decide_pair(base, changed, still).value == value
    assert decide_pair(base, still, changed).value == value


@given(base=values, m=values, m_at=moments, d_at=moments)
def test_both_changed_differently_the_later_wins_and_a_tie_opts_out(base, m, m_at, d_at):
    decision = decide_pair(base, PairSide(m, True, m_at), PairSide(not m, True, d_at))
    if m_at == d_at:
        assert decision.value is False and decision.rule.endswith("tie-opt-out")
    else:
        assert decision.value == (m if m_at > d_at else not m)


@given(m=st.one_of(st.none(), values), d=st.one_of(st.none(), values), m_at=moments, d_at=moments)
def test_a_first_meeting_takes_the_only_value_or_the_later_one(m, d, m_at, d_at):
    decision = decide_pair(None, PairSide(m, m is not None, m_at), PairSide(d, d is not None, d_at))
    if m is None or d is None:
        assert decision.value == (d if m is None else m)
    elif m == d:
        assert decision.value == m
    else:
        assert decision.value == (False if m_at == d_at else (m if m_at > d_at else d))


def test_a_change_to_the_same_value_on_both_sides_is_agreement_not_a_tie():
    assert decide_pair(False, PairSide(True, True, T0), PairSide(True, True, T0)).value is True


# ---- one person ---------------------------------------------------------------------------------
record_ids = ["0000000a-0000-4000-8000-000000000001", "0000000b-0000-4000-8000-000000000002"]
agreed = st.fixed_dictionaries(dict.fromkeys(INTERESTS, values))
edits = st.lists(
    st.tuples(st.sampled_from(record_ids), st.sampled_from(INTERESTS), values, st.integers(10, 20)), max_size=5
)


@settings(max_examples=200, deadline=None)
@given(
    base_values=agreed,
    member_values=agreed,
    member_at=st.integers(10, 20),
    edits=edits,
    writable=st.booleans(),
    read=st.booleans(),
)
def test_a_plan_leaves_both_sides_agreeing_and_a_second_plan_writes_nothing(
    base_values, member_values, member_at, edits, writable, read
):
    """After the plan's writes both sides hold the decided values (or Dynamics' waits, held, while Mailchimp
    may not be written); deciding again on what the writes left is a no-op."""
    base = PreferenceBase(dict(base_values), {}, T0, {})
    records = [(rid, "contact") for rid in record_ids]
    mailchimp = dict(base_values) if not read else dict(member_values)
    dynamics = {(rid, i): base_values[i] for rid in record_ids for i in INTERESTS}
    rows = []
    for rid, interest, value, second in edits:
        row = PreferenceRow(rid, "contact", interest, value, T0 + timedelta(seconds=second))
        rows = [r for r in rows if (r.record_id, r.interest_id) != (rid, interest)] + [row]
        dynamics[(rid, interest)] = value
    view = MemberView(
        True,
        frozenset(i for i, v in mailchimp.items() if v) if read else None,
        T0 + timedelta(seconds=member_at) if read else T0,
    )
    plan = plan_member(
        audience_id="aud",
        interests=INTERESTS,
        base=base,
        member=view,
        records=records,
        known_records=record_ids,
        rows=rows,
        writable=writable,
    )
    if not writable:
        assert plan.mailchimp == {}
    mailchimp.update(plan.mailchimp)
    written = T0 + timedelta(seconds=30)
    for write in plan.rows:
        if write.opted_in is not None:
            dynamics[(write.record_id, write.interest_id)] = write.opted_in
        assert write.row_id == subscription_id(write.record_id, "aud", write.interest_id)
    settled = settle(plan, mailchimp_ok=True, failed_rows=set(), written_at=written if plan.rows else None)
    for interest in INTERESTS:
        on_records = {dynamics[(rid, interest)] for rid in record_ids}
        assert len(on_records) == 1, (interest, plan)
        if interest in settled.held:
            assert not writable and settled.held[interest][0] == on_records.pop()
        else:
            assert mailchimp[interest] == on_records.pop() == settled.agreed[interest]
    again = plan_member(
        audience_id="aud",
        interests=INTERESTS,
        base=settled,
        member=MemberView(True, frozenset(i for i, v in mailchimp.items() if v), written),
        records=records,
        known_records=record_ids,
        rows=[
            PreferenceRow(w.record_id, "contact", w.interest_id, dynamics[(w.record_id, w.interest_id)], written)
            for w in plan.rows
        ],
        writable=writable,
    )
    assert again.mailchimp == {} and [w for w in again.rows if w.opted_in is not None] == []


def test_a_held_change_is_applied_once_the_member_may_be_written():
    base = PreferenceBase({"i1": False}, {}, T0, {})
    row = PreferenceRow(record_ids[0], "contact", "i1", True, T0 + timedelta(seconds=5))
    unsubscribed = MemberView(True, frozenset(), T0)
    plan = plan_member(
        audience_id="aud",
        interests=["i1"],
        base=base,
        member=unsubscribed,
        records=[(record_ids[0], "contact")],
        known_records=[record_ids[0]],
        rows=[row],
        writable=False,
    )
    assert plan.mailchimp == {} and plan.changes[0].held and plan.changes[0].newly_held
    kept = settle(plan, mailchimp_ok=True, failed_rows=set(), written_at=None)
    assert kept.agreed == {"i1": False} and kept.held["i1"][0] is True
    again = plan_member(
        audience_id="aud",
        interests=["i1"],
        base=kept,
        member=unsubscribed,
        records=[(record_ids[0], "contact")],
        known_records=[record_ids[0]],
        rows=[],
        writable=False,
    )
    assert again.mailchimp == {} and not again.changes[0].newly_held  # audited once
    back = plan_member(
        audience_id="aud",
        interests=["i1"],
        base=kept,
        member=MemberView(True, frozenset(), T0 + timedelta(seconds=9)),
        records=[(record_ids[0], "contact")],
        known_records=[record_ids[0]],
        rows=[],
        writable=True,
    )
    assert back.mailchimp == {"i1": True} and back.changes[0].rule == "preference-held-applied"
    assert settle(back, mailchimp_ok=True, failed_rows=set(), written_at=None).held == {}


def test_a_new_member_takes_dynamics_choices_with_its_add():
    row = PreferenceRow(record_ids[0], "contact", "i2", True, T0)
    plan = plan_member(
        audience_id="aud",
        interests=INTERESTS,
        base=PreferenceBase(),
        member=MemberView(False, None, None),
        records=[(record_ids[0], "contact")],
        known_records=[],
        rows=[row],
        writable=True,
    )
    assert plan.mailchimp == {"i2": True}


def test_a_user_made_row_keeps_its_id():
    row = PreferenceRow(record_ids[0], "contact", "i1", True, T0 + timedelta(seconds=3), row_id="user-row")
    plan = plan_member(
        audience_id="aud",
        interests=["i1"],
        base=PreferenceBase({"i1": False}, {}, T0, {}),
        member=MemberView(True, frozenset({"i1"}), T0 + timedelta(seconds=9)),
        records=[(record_ids[0], "contact")],
        known_records=[record_ids[0]],
        rows=[row],
        writable=True,
    )
    assert plan.base.row_ids == {f"{record_ids[0]}|i1": "user-row"}
    assert all(w.row_id == "user-row" for w in plan.rows)


# ---- compact forms ------------------------------------------------------------------------------
def test_a_batch_message_carries_interests_and_rows_compactly():
    group = Group(
        "",
        "ada@example.org",
        MemberSnapshot("ada@example.org", "subscribed", T0, interests=["i3", "i1"]),
        True,
        [RecordSnapshot(record_ids[0], "contact", "ada@example.org", {"donotbulkemail": False}, T0)],
        preferences=[
            PreferenceRow(record_ids[0], "contact", "i2", True, T0),
            PreferenceRow(record_ids[1], "lead", "i3", False, T0, "user-row"),
        ],
    )
    message = BatchMessage(
        "l", "r", "b", False, False, [group], ["donotbulkemail"], [[i, i.upper()] for i in INTERESTS]
    )
    back = BatchMessage.decode(message.encode(), hasher=member_hash)
    assert back.interests == message.interests
    assert sorted(back.groups[0].member.interests) == ["i1", "i3"]
    assert back.groups[0].preferences == group.preferences
    retried = Group.decode(group.encode())
    assert retried.preferences == group.preferences and retried.member.interests == ["i3", "i1"]


def test_a_base_without_preferences_is_stored_exactly_as_before():
    plain = BaseRow("ada@example.org", [("r1", "contact")], "subscribed")
    assert set(plain.encode()) == {"e", "r", "s", "o", "m", "d"}
    full = BaseRow(
        "ada@example.org",
        interests={"i1": True, "i2": False},
        held={"i2": [True, 1700000000]},
        preferences_modifiedon=T0,
        preference_rows={"r1|i1": "row"},
    )
    assert BaseRow.decode(full.encode()) == full

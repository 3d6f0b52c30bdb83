"""Consent per audience as pure rules: the roll-up, who changed what, and what each audience reads and writes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.rules.consent import OPTED_OUT_STATUSES, SUBSCRIBER_STATUS_CODES, Base, Member, Policy, Record, decide
from shared.rules.memberships import (
    SOURCE_DYNAMICS_USER,
    SOURCE_PRODUCT,
    SOURCE_SUBSCRIBER,
    RecordView,
    audience_opt_out,
    change_of,
    column_target,
    counts_as_opted_out,
    describe,
    roll_up,
    source_of,
)

FAST = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
STATUSES = tuple(SUBSCRIBER_STATUS_CODES)
statuses = st.sampled_from(STATUSES)
maybe_status = st.none() | statuses
policies = st.sampled_from(["all", "any"])
views = st.builds(
    RecordView,
    columns=st.booleans(),
    status=maybe_status,
    agreed=st.none() | st.booleans(),
    others=st.lists(statuses, max_size=3).map(tuple),
    scoped=st.none() | st.sampled_from(["subscribed", "unsubscribed"]),
)


# ---- the roll-up ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("found", "policy", "rolled"),
    [
        (["subscribed", "unsubscribed"], "all", False),
        (["subscribed", "unsubscribed"], "any", True),
        (["cleaned", "unsubscribed", "transactional"], "all", True),
        (["pending", "archived"], "any", False),
        (["unsubscribed", None], "all", True),  # not a member there: no say
        ([None, None], "any", None),
        ([], "all", None),
    ],
)
def test_the_roll_up_under_each_policy(found, policy, rolled):
    assert roll_up(found, policy) is rolled


@FAST
@given(statuses, policies)
def test_with_one_membership_both_policies_mean_what_the_status_says(status, policy):
    assert roll_up([status], policy) == (status in OPTED_OUT_STATUSES) == counts_as_opted_out(status)


@FAST
@given(st.lists(statuses, min_size=1, max_size=4))
def test_all_is_never_stricter_than_any(found):
    assert roll_up(found, "all") <= roll_up(found, "any")  # type: ignore[operator]


# ---- what one audience reads --------------------------------------------------------------------------
@FAST
@given(views, policies)
def test_a_record_of_one_audience_reads_its_columns_as_a_single_link_does(view, policy):
    view = replace(view, others=(), scoped=None)
    assert change_of(view, policy) == "none"
    assert audience_opt_out(view, policy) is view.columns
    assert column_target(view, "unsubscribed", policy) is None


@FAST
@given(views, policies)
def test_columns_that_hold_the_roll_up_are_nobodys_change_and_each_audience_keeps_its_own_meaning(view, policy):
    expected = view.expected(policy)
    view = replace(view, columns=bool(expected), scoped=None)
    if view.shared and expected is not None:
        assert change_of(view, policy) == "none"
        assert audience_opt_out(view, policy) is bool(view.agreed)


@FAST
@given(views, policies)
def test_columns_that_differ_from_the_roll_up_are_a_global_change_every_audience_reads(view, policy):
    expected = view.expected(policy)
    if not view.shared or expected is None:
        return
    view = replace(view, columns=not expected)
    assert change_of(view, policy) == "global"
    assert audience_opt_out(view, policy) is view.columns


@FAST
@given(views, policies)
def test_a_scoped_edit_is_read_by_its_own_audience(view, policy):
    if change_of(view, policy) != "scoped":
        return
    assert audience_opt_out(view, policy) is counts_as_opted_out(view.scoped or "")


@FAST
@given(views, policies, maybe_status)
def test_the_roll_up_never_clears_a_persons_global_opt_out_midway(view, policy, after):
    if view.columns and change_of(view, policy) == "global":
        assert column_target(view, after, policy) is None


@FAST
@given(views, policies, maybe_status)
def test_after_the_write_the_columns_hold_the_roll_up_unless_a_person_opted_out_globally(view, policy, after):
    target = column_target(view, after, policy)
    columns = view.columns if target is None else target
    rolled = roll_up([after, *view.others], policy)
    if view.shared and rolled is not None and not (view.columns and change_of(view, policy) == "global"):
        assert columns is rolled


# ---- who changed it, and how it reads ---------------------------------------------------------------
def test_the_source_of_a_membership_follows_the_deciding_rule():
    assert source_of("mailchimp-changed") == SOURCE_SUBSCRIBER
    assert source_of("dynamics-opt-out") == SOURCE_DYNAMICS_USER
    assert source_of("no-change", scoped=True) == SOURCE_DYNAMICS_USER
    assert source_of("first-meeting-agree") == SOURCE_PRODUCT


def test_values_of_the_history_name_the_status_and_the_columns_when_they_moved():
    assert describe("unsubscribed", True) == "unsubscribed; opt-out columns set"
    assert describe(None) == "absent"


# ---- random interleavings over two audiences ---------------------------------------------------------
T0 = datetime(2025, 3, 1, tzinfo=UTC)
EMAIL = "person@example.org"
AUDIENCES = ("news", "events")


@dataclass
class Audience:
    status: str | None  # the member's status in Mailchimp (None: not a member)
    base: Base | None = None
    held: bool = False  # the audience has held the address once
    last_changed: datetime = T0
    opted_in: datetime | None = None
    scoped: str | None = None  # a user's edit of this membership, not read yet


@dataclass
class Person:
    audiences: dict[str, Audience]
    columns: bool = False
    modifiedon: datetime = T0
    clock: int = 0
    product_subscribed: list[str] = field(default_factory=list)

    def tick(self) -> datetime:
        self.clock += 1
        return T0 + timedelta(minutes=self.clock)

    def run(self, name: str, policy: str, resubscribe: str) -> None:
        """One link's run for the person, through the same rules the memberships step applies."""
        mine = self.audiences[name]
        others = tuple(
            a.base.member_status for n, a in self.audiences.items() if n != name and a.base and a.base.member_status
        )
        view = RecordView(
            self.columns,
            mine.base.member_status if mine.base else None,
            mine.base.opted_out if mine.base else None,
            others,
            mine.scoped if mine.scoped != (mine.base.member_status if mine.base else None) else None,
        )
        member = Member(mine.status, mine.last_changed, EMAIL, mine.opted_in) if mine.status else None
        record = Record("c1", "contact", EMAIL, audience_opt_out(view, policy), self.modifiedon, True, True)  # type: ignore[arg-type]
        decision = decide(member, [record], mine.base, Policy(resubscribe))  # type: ignore[arg-type]
        if decision.mailchimp is not None:
            if decision.mailchimp.status == "subscribed" and not (decision.mailchimp.action == "add" and not mine.held):
                self.product_subscribed.append(name)
            if (
                decision.mailchimp.action == "add" and mine.status is None
            ) or decision.mailchimp.action == "set_status":
                mine.status = decision.mailchimp.status
                mine.held = True
                mine.last_changed = self.tick()
        target = column_target(view, decision.new_base.member_status, policy)
        written = None
        if view.shared:
            written = target
        else:
            write = next(iter(decision.records), None)
            written = write.opted_out if write else None
        if written is not None and written != self.columns:
            self.columns = written
            self.modifiedon = self.tick()
        mine.base = replace(
            decision.new_base, member_last_changed=mine.last_changed, records_modifiedon=self.modifiedon
        )
        mine.scoped = None


actions = st.lists(
    st.tuples(
        st.sampled_from(
            ["run", "unsubscribe", "resubscribe", "clean", "global-out", "global-in", "scoped-out", "scoped-in"]
        ),
        st.sampled_from(AUDIENCES),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, policies, st.sampled_from(["never", "confirm"]), st.sampled_from(["subscribed", "unsubscribed"]))
def test_random_interleavings_over_two_audiences(steps, policy, resubscribe, start):
    person = Person({name: Audience(start, held=True) for name in AUDIENCES}, columns=start == "unsubscribed")
    for action, name in steps:
        audience = person.audiences[name]
        if action == "run":
            person.run(name, policy, resubscribe)
        elif action == "unsubscribe" and audience.status in ("subscribed", "pending"):
            audience.status, audience.last_changed = "unsubscribed", person.tick()
        elif action == "resubscribe" and audience.status is not None:  # the person's own signup form
            audience.status = "subscribed"
            audience.last_changed = audience.opted_in = person.tick()
        elif action == "clean" and audience.status is not None:
            audience.status, audience.last_changed = "cleaned", person.tick()
        elif action in ("global-out", "global-in"):
            person.columns, person.modifiedon = action == "global-out", person.tick()
        elif action in ("scoped-out", "scoped-in"):
            audience.scoped = "unsubscribed" if action == "scoped-out" else "subscribed"
    for _ in range(2):  # two quiet runs of every link
        for name in AUDIENCES:
            person.run(name, policy, resubscribe)
    assert person.product_subscribed == []  # never set subscribed, except by adding an address never held
    statuses = [a.status for a in person.audiences.values()]
    for audience in person.audiences.values():  # both sides agree
        assert audience.base is not None and audience.base.member_status == audience.status
    rolled = roll_up(statuses, policy)
    global_opt_out_stands = person.columns and not rolled
    assert person.columns is rolled or global_opt_out_stands
    if global_opt_out_stands:  # only a person's opt-out the audiences could not follow (archived, pending asked)
        assert all(s in ("archived", "pending") or s in OPTED_OUT_STATUSES for s in statuses if s)

"""Consent per audience end to end: two links over two audiences, real handlers, the emulators and Azurite."""

from __future__ import annotations

import pytest

from shared.features.memberships.steps import membership_id
from tests.features.memberships.support import EVENTS, NAMES, assert_history_matches_the_audit, two_audiences
from tests.sync.test_rules import subscribed_writes
from tests.sync_world import SyncWorld


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite, tag=None)


def test_every_record_gets_one_membership_row_per_audience_and_agreeing_runs_write_no_history(world):
    two = two_audiences(world)
    two.sync()
    two.sync()
    for person in two.people:
        assert two.memberships(person["contactid"]) == {world.audience: "subscribed", EVENTS: "subscribed"}
    assert len(two.membership_rows()) == 4
    assert two.history() == []  # both sides agreed from the start: no consent change


@pytest.mark.parametrize(("policy", "columns"), [("all", (False, False)), ("any", (True, True))])
def test_an_unsubscribe_in_one_audience_reaches_only_its_membership(world, policy, columns):
    world.overrides["OPT_OUT_ROLLUP"] = policy
    two = two_audiences(world)
    two.sync()
    ada = two.people[0]
    two.person("unsubscribe", ada["emailaddress1"], EVENTS)
    two.sync()
    two.sync()
    assert two.statuses(ada["emailaddress1"]) == {world.audience: "subscribed", EVENTS: "unsubscribed"}
    assert two.memberships(ada["contactid"]) == {world.audience: "subscribed", EVENTS: "unsubscribed"}
    assert two.opted_out(ada["contactid"]) == columns
    (row,) = two.history(ada["contactid"])  # one change written to Dynamics: the membership (and the roll-up)
    assert row[NAMES.column("side")] == 100000001
    assert row[NAMES.column("audienceid")] == EVENTS
    assert row[NAMES.column("rule")] == "mailchimp-changed"
    assert row[NAMES.column("newvalue")].startswith("unsubscribed")
    assert ("opt-out columns set" in row[NAMES.column("newvalue")]) == (policy == "any")
    assert two.history(two.people[1]["contactid"]) == []
    assert_history_matches_the_audit(two, ada["emailaddress1"], ada["contactid"])


def test_under_all_the_columns_are_set_once_every_audience_is_opted_out(world):
    two = two_audiences(world)
    two.sync()
    ada = two.people[0]
    two.person("unsubscribe", ada["emailaddress1"], EVENTS)
    two.sync()
    assert two.opted_out(ada["contactid"]) == (False, False)
    two.person("unsubscribe", ada["emailaddress1"], world.audience)
    two.sync()
    two.sync()
    assert two.opted_out(ada["contactid"]) == (True, True)
    assert two.statuses(ada["emailaddress1"]) == {world.audience: "unsubscribed", EVENTS: "unsubscribed"}


def test_a_global_opt_out_in_dynamics_unsubscribes_in_every_audience(world):
    two = two_audiences(world)
    two.sync()
    ada = two.people[0]
    two.edit(ada["contactid"], donotbulkemail=True)
    two.sync()
    two.sync()
    assert two.statuses(ada["emailaddress1"]) == {world.audience: "unsubscribed", EVENTS: "unsubscribed"}
    assert two.memberships(ada["contactid"]) == {world.audience: "unsubscribed", EVENTS: "unsubscribed"}
    assert_history_matches_the_audit(two, ada["emailaddress1"], ada["contactid"])
    assert two.opted_out(ada["contactid"])[0]  # the roll-up never cleared the user's opt-out midway
    sides = sorted((r[NAMES.column("audienceid")], r[NAMES.column("side")]) for r in two.history(ada["contactid"]))
    assert sides[:2] == sorted([(world.audience, 100000000), (EVENTS, 100000000)])
    assert all("global" in r[NAMES.column("cause")] for r in two.history(ada["contactid"]))
    before = len(two.history())
    two.sync()
    assert len(two.history()) == before  # a quiet run: no consent change, no row


def test_a_resubscription_through_one_audience_is_not_undone_by_the_other(world):
    two = two_audiences(world, statuses=("unsubscribed", "unsubscribed"))
    ada = two.people[0]
    two.edit(ada["contactid"], donotbulkemail=True, donotsendmm=True)
    two.sync()
    assert two.opted_out(ada["contactid"]) == (True, True)
    two.person("resubscribe", ada["emailaddress1"], world.audience)
    two.sync()
    two.sync()
    two.sync()
    assert two.statuses(ada["emailaddress1"]) == {world.audience: "subscribed", EVENTS: "unsubscribed"}
    assert two.opted_out(ada["contactid"]) == (False, False)  # `all`: one audience consents
    assert two.memberships(ada["contactid"]) == {world.audience: "subscribed", EVENTS: "unsubscribed"}
    assert_history_matches_the_audit(two, ada["emailaddress1"], ada["contactid"])


def test_a_scoped_opt_out_unsubscribes_only_in_its_audience_and_a_scoped_opt_in_is_restored(world):
    two = two_audiences(world)
    two.sync()
    ada = two.people[0]
    two.edit_membership(membership_id(ada["contactid"], EVENTS), "unsubscribed")
    two.sync()
    assert two.statuses(ada["emailaddress1"])[EVENTS] == "subscribed"  # read by the next full pass
    two.sync(FULL_RESYNC_HOURS="0.0001")
    two.sync()
    assert two.statuses(ada["emailaddress1"]) == {world.audience: "subscribed", EVENTS: "unsubscribed"}
    assert two.memberships(ada["contactid"]) == {world.audience: "subscribed", EVENTS: "unsubscribed"}
    assert two.opted_out(ada["contactid"]) == (False, False)  # `all`: the other audience still consents
    (change,) = two.history(ada["contactid"])
    assert (change[NAMES.column("side")], change[NAMES.column("audienceid")]) == (100000000, EVENTS)
    assert "this audience only" in change[NAMES.column("cause")]

    two.edit_membership(membership_id(ada["contactid"], EVENTS), "subscribed")  # never a re-subscription
    two.sync(FULL_RESYNC_HOURS="0.0001")
    two.sync()
    assert two.statuses(ada["emailaddress1"]) == {world.audience: "subscribed", EVENTS: "unsubscribed"}
    assert two.memberships(ada["contactid"]) == {world.audience: "subscribed", EVENTS: "unsubscribed"}
    assert not subscribed_writes(world, {ada["emailaddress1"]})
    assert_history_matches_the_audit(two, ada["emailaddress1"], ada["contactid"])

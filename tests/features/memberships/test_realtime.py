"""A user's edit of an audience membership in Dynamics arrives in seconds through the real-time path: the
registered step on the membership table, `serve`, and the sync-events handler."""

from __future__ import annotations

import io

import pytest

from shared.cli import manage_webhooks
from shared.features.memberships.steps import membership_id
from tests.features.memberships.support import EVENTS, NAMES, two_audiences
from tests.features.realtime.support import delivering_world, serve, wait_for
from tests.sync.test_rules import subscribed_writes


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return delivering_world(mailchimp_emulator, dataverse_emulator, azurite)


def test_a_scoped_opt_out_reaches_its_audience_in_seconds_and_an_opt_in_never_re_subscribes(world):
    two = two_audiences(world)
    two.sync()
    ada, bob = two.people
    with serve(world):
        out = io.StringIO()
        assert manage_webhooks(world.context(), "register", out) == 0, out.getvalue()
        assert "Update of cbr_audiencemembership" in out.getvalue()
        steps = world.dataverse.admin.state(entity="sdkmessageprocessingsteps")["rows"]
        [watching] = [s for s in steps if s["name"] == "Consent Bridge: Update of cbr_audiencemembership"]
        assert watching["filteringattributes"] == NAMES.column("status")

        two.edit_membership(membership_id(ada["contactid"], EVENTS), "unsubscribed")
        assert wait_for(lambda: two.statuses(ada["emailaddress1"])[EVENTS] == "unsubscribed"), "no scoped opt-out"
        assert two.statuses(ada["emailaddress1"])[world.audience] == "subscribed"  # the other audience: untouched
        assert two.opted_out(ada["contactid"]) == (False, False)  # `all`: the other audience still consents
        (change,) = two.history(ada["contactid"])
        assert (change[NAMES.column("side")], change[NAMES.column("audienceid")]) == (100000000, EVENTS)

        two.edit_membership(membership_id(ada["contactid"], EVENTS), "subscribed")  # never a re-subscription
        assert wait_for(lambda: two.memberships(ada["contactid"])[EVENTS] == "unsubscribed"), "opt-in not restored"
    assert two.statuses(ada["emailaddress1"]) == {world.audience: "subscribed", EVENTS: "unsubscribed"}
    assert two.statuses(bob["emailaddress1"]) == {world.audience: "subscribed", EVENTS: "subscribed"}
    assert not subscribed_writes(world, {ada["emailaddress1"]})

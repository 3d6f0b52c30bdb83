"""Random interleavings end to end, two links over two audiences: per-audience Mailchimp changes, global and scoped
Dynamics changes and runs. Small on purpose: each example is a handful of real runs against the emulators."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.features.memberships.steps import membership_id
from shared.rules.memberships import roll_up
from tests.features.memberships.support import EVENTS, NAMES, assert_history_matches_the_audit, two_audiences
from tests.sync.test_rules import subscribed_writes
from tests.sync_world import SyncWorld

ACTIONS = ("run", "unsubscribe", "resubscribe", "global-out", "global-in", "scoped-out", "scoped-in")
steps = st.lists(st.tuples(st.sampled_from(ACTIONS), st.booleans()), min_size=1, max_size=5)


@settings(
    max_examples=3,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps, st.sampled_from(["all", "any"]))
def test_random_interleavings_keep_consent_per_audience(
    mailchimp_emulator, dataverse_emulator, azurite, actions, policy
):
    world = SyncWorld(
        mailchimp_emulator,
        dataverse_emulator,
        azurite,
        tag=None,
        overrides={"OPT_OUT_ROLLUP": policy},
    )
    world.audience = f"n{uuid.uuid4().hex[:9]}"
    two = two_audiences(world, count=1)
    (ada,) = two.people
    email, record = ada["emailaddress1"], ada["contactid"]
    two.sync()
    history_before = len(two.history(record))
    for action, first in actions:
        audience = world.audience if first else EVENTS
        if action == "run":
            two.sync()
        elif action == "unsubscribe" and two.statuses(email)[audience] == "subscribed":
            two.person("unsubscribe", email, audience)
        elif action == "resubscribe":
            two.person("resubscribe", email, audience)
        elif action in ("global-out", "global-in"):
            flag = action == "global-out"
            two.edit(record, donotbulkemail=flag, donotsendmm=flag)
        elif action in ("scoped-out", "scoped-in"):
            two.edit_membership(
                membership_id(record, audience), "unsubscribed" if action == "scoped-out" else "subscribed"
            )
    two.sync(FULL_RESYNC_HOURS="0.0001")  # a full pass reads scoped edits
    two.sync()
    two.sync()  # two quiet runs

    assert not subscribed_writes(world, {email})  # the product never subscribed anyone
    statuses = two.statuses(email)
    assert two.memberships(record) == statuses  # both sides agree, audience by audience
    columns = two.opted_out(record)
    rolled = roll_up(statuses.values(), policy)
    assert columns[0] is rolled or (columns[0] and not rolled and "global" in _causes(two, record))
    assert_history_matches_the_audit(two, email, record)
    quiet = len(two.history(record))
    two.sync()
    assert len(two.history(record)) == quiet >= history_before  # no consent change, no history row


def _causes(two, record: str) -> str:
    return " ".join(row[NAMES.column("cause")] for row in two.history(record))

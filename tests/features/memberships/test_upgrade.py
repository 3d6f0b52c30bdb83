"""Upgrade in place: a deployment whose bases were written by the release before memberships gets its rows on the
next run, from what the bases and members say, with no write to Mailchimp and no change of any opt-out column."""

from __future__ import annotations

import io

import pytest

from shared.adapters.storage import SYNC_STATE
from shared.cli import QueueRules, run_sync
from shared.features.memberships.steps import UPGRADE_ROW
from tests.features.memberships.support import EVENTS, two_audiences
from tests.sync_world import SyncWorld


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite, tag=None)


def sync_as_the_release_before(world: SyncWorld) -> None:
    """A run of the pipeline without the memberships feature: bases, aliases and watermarks, no membership row."""
    ctx = world.context()
    ctx.steps = [step for step in ctx.steps if step is not ctx.memberships]
    out = io.StringIO()
    code = run_sync(ctx, out, rules=QueueRules(max_dequeue_count=5, visibility_timeout=0.0), progress=lambda _: None)
    assert code == 0, out.getvalue()
    for link in ctx.settings.links:  # that release kept no marker either
        ctx.storage.table(SYNC_STATE).delete_entity(link.name, UPGRADE_ROW)


def test_the_first_run_after_the_upgrade_creates_every_row_and_writes_nothing_else(world):
    two = two_audiences(world, count=3)
    ada, bob, cy = two.people
    two.edit(bob["contactid"], donotbulkemail=True, donotsendmm=True)
    sync_as_the_release_before(world)
    two.person("unsubscribe", cy["emailaddress1"], EVENTS)
    sync_as_the_release_before(world)
    sync_as_the_release_before(world)  # the release before: the unsubscribe spread to the other audience
    assert two.statuses(cy["emailaddress1"]) == {world.audience: "unsubscribed", EVENTS: "unsubscribed"}
    assert two.membership_rows() == []
    columns = {p["contactid"]: two.opted_out(p["contactid"]) for p in two.people}
    statuses = {p["emailaddress1"]: two.statuses(p["emailaddress1"]) for p in two.people}
    world.mailchimp.admin.clear_requests()

    two.sync()

    writes = [r for r in world.mailchimp.admin.requests() if r["method"] in ("POST", "PUT", "PATCH", "DELETE")]
    assert writes == []
    assert {p["contactid"]: two.opted_out(p["contactid"]) for p in two.people} == columns
    assert {p["emailaddress1"]: two.statuses(p["emailaddress1"]) for p in two.people} == statuses
    assert two.memberships(ada["contactid"]) == {world.audience: "subscribed", EVENTS: "subscribed"}
    assert two.memberships(bob["contactid"]) == {world.audience: "unsubscribed", EVENTS: "unsubscribed"}
    assert two.memberships(cy["contactid"]) == {world.audience: "unsubscribed", EVENTS: "unsubscribed"}
    assert len(two.membership_rows()) == 6
    assert two.history() == []  # creating the rows is no consent change

    two.sync()
    two.sync(full=True)  # later full passes rewrite nothing
    assert len(two.membership_rows()) == 6
    assert two.history() == []

"""The campaign behind an unsubscribe or a hard bounce reaches the membership row on the scheduled path: the
campaign activity's pass learns it after the status change's unit wrote the row, and the row takes it then."""

from __future__ import annotations

import pytest

from shared.features.memberships.steps import membership_id
from tests.features.campaigns.test_campaigns import activity, send_campaign, synced
from tests.features.memberships.support import NAMES
from tests.sync_world import SyncWorld, contact, member


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def reason_of(world: SyncWorld, record_id: str) -> str:
    rows = world.dataverse.admin.state(entity=NAMES.membership_set, id=membership_id(record_id, world.audience))
    [row] = rows["rows"]
    return str(row[NAMES.column("reason")])


def test_the_campaign_behind_an_unsubscribe_and_a_bounce_is_put_in_front_of_the_rows_reason(world):
    leaving, bouncing, staying = (contact(f"{name}@example.org") for name in ("leaving", "bouncing", "staying"))
    world.seed([leaving, bouncing, staying], [member(c["emailaddress1"]) for c in (leaving, bouncing, staying)])
    synced(world)
    send_campaign(world)
    activity(
        world,
        [
            ("leaving@example.org", "unsubscribe", {"reason": "Too many emails"}),
            ("bouncing@example.org", "bounce", {"type": "hard"}),
        ],
    )
    synced(world)

    reason = reason_of(world, leaving["contactid"])
    assert reason.startswith("an unsubscribe in campaign Spring news (spring-news); ")
    assert "Too many emails" in reason  # Mailchimp's own reason stays
    assert reason_of(world, bouncing["contactid"]).startswith("a hard bounce in campaign Spring news")
    assert "campaign" not in reason_of(world, staying["contactid"])  # nobody else's row changes

    synced(world)  # a later pass finds no new cause: the rows stay as they are
    assert reason_of(world, leaving["contactid"]).count("Spring news") == 1

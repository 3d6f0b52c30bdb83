"""Who changed a membership and why, from what Mailchimp reports: the member's unsubscribe reason on the pages a run
already reads, and a real-time event's reason and campaign. Real handlers, the emulators and Azurite."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from shared.adapters.storage import EVENTS_QUEUE
from shared.rules.memberships import SOURCE_ADMIN, SOURCE_DYNAMICS_USER, SOURCE_SUBSCRIBER
from tests.emulators.webhook_receiver import receiving
from tests.features.memberships.support import NAMES, STATUS_BY_CODE
from tests.features.realtime.support import SECRET, realtime_world
from tests.sync_world import API_KEY, SyncWorld, contact, member

RULE = "the person's status changed in Mailchimp"  # the deciding rule's words after Mailchimp's


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return realtime_world(mailchimp_emulator, dataverse_emulator, azurite, tag=None)


def seeded(world: SyncWorld, count: int) -> list[dict[str, Any]]:
    people = [contact(f"why{n}.{world.link}@example.org") for n in range(count)]
    world.seed(people, [member(p["emailaddress1"]) for p in people])
    assert world.sync()[0] == 0
    return people


def mailchimp(world: SyncWorld, path: str, body: dict[str, Any]) -> Any:
    """Something a person or an admin does in Mailchimp, a few seconds after the product's last write."""
    world.mailchimp.admin.advance_clock(5)
    return world.mailchimp.admin.call("POST", path, {"list_id": world.audience, **body})


def membership(world: SyncWorld, record_id: str) -> dict[str, Any]:
    rows = world.dataverse.admin.state(entity=NAMES.membership_set)["rows"]
    (row,) = [r for r in rows if r.get(NAMES.lookup_value("contact")) == record_id]
    return row


def history(world: SyncWorld, record_id: str) -> list[dict[str, Any]]:
    rows = world.dataverse.admin.state(entity=NAMES.change_set)["rows"]
    return [r for r in rows if r.get(NAMES.lookup_value("contact")) == record_id]


def why(row: dict[str, Any]) -> tuple[str, int, str]:
    return STATUS_BY_CODE[row[NAMES.column("status")]], row[NAMES.column("source")], row[NAMES.column("reason")]


def test_a_subscribers_own_unsubscribe_gives_the_person_as_source_and_their_reason(world):
    ada, bob = seeded(world, 2)
    mailchimp(world, "people/unsubscribe", {"email_address": ada["emailaddress1"], "reason": "Too many emails"})
    assert world.sync()[0] == 0
    said = f'unsubscribed by the person, reason: "Too many emails"; {RULE}'
    assert why(membership(world, ada["contactid"])) == ("unsubscribed", SOURCE_SUBSCRIBER, said)
    (change,) = history(world, ada["contactid"])
    assert change[NAMES.column("cause")] == said
    assert why(membership(world, bob["contactid"]))[:2] == ("subscribed", 100000003)  # created by the product
    assert history(world, bob["contactid"]) == []


def test_an_admins_unsubscribe_single_or_bulk_gives_the_admin_as_source(world):
    ada, bob, cy = seeded(world, 3)
    mailchimp(world, "people/unsubscribe", {"email_address": ada["emailaddress1"], "by": "admin"})
    mailchimp(world, "people/bulk-unsubscribe", {"email_addresses": [bob["emailaddress1"]]})
    mailchimp(world, "people/unsubscribe", {"email_address": cy["emailaddress1"]})
    assert world.sync()[0] == 0
    said = f"unsubscribed by an admin in Mailchimp; {RULE}"
    for person in (ada, bob):
        assert why(membership(world, person["contactid"])) == ("unsubscribed", SOURCE_ADMIN, said)
        assert [r[NAMES.column("cause")] for r in history(world, person["contactid"])] == [said]
    own = f'unsubscribed by the person, reason: "I no longer want to receive these emails"; {RULE}'
    assert why(membership(world, cy["contactid"])) == ("unsubscribed", SOURCE_SUBSCRIBER, own)


def test_a_cleaned_member_says_it_bounced(world):
    ada, _ = seeded(world, 2)
    campaign = mailchimp(world, "campaigns", {"title": "Spring", "send": True})
    mailchimp(
        world, f"campaigns/{campaign['id']}/activity", {"email_address": ada["emailaddress1"], "action": "bounce"}
    )
    assert world.sync()[0] == 0
    said = f"cleaned by Mailchimp: the address bounced; {RULE}"
    # the campaign pass that follows the status batches puts the campaign in front (causes.py)
    found = f"a hard bounce in campaign Spring ({campaign['id']}); {said}"
    assert why(membership(world, ada["contactid"])) == ("cleaned", SOURCE_SUBSCRIBER, found)


def test_the_products_own_unsubscribe_stays_the_dynamics_users_when_read_back(world):
    ada, _ = seeded(world, 2)
    world.dataverse.admin.call(
        "POST", "edit", {"entity": "contacts", "id": ada["contactid"], "changes": {"donotbulkemail": True}}
    )
    assert world.sync()[0] == 0
    assert world.members()[ada["emailaddress1"]]["unsubscribe_reason"] == "N/A (Unsubscribed by admin)"
    first = membership(world, ada["contactid"])
    assert why(first) == ("unsubscribed", SOURCE_DYNAMICS_USER, "opted out in Dynamics")
    assert world.sync()[0] == 0
    assert world.sync(full=True)[0] == 0
    assert membership(world, ada["contactid"]) == first  # Mailchimp's "admin" was the product: not rewritten


def test_real_time_events_name_the_campaign_their_webhook_named(world):
    ada, bob, _ = seeded(world, 3)
    campaign = mailchimp(world, "campaigns", {"title": "Spring", "send": True})
    with receiving() as receiver:
        created = requests.post(
            f"{world.mailchimp.url}/3.0/lists/{world.audience}/webhooks",
            json={
                "url": f"{receiver.url}/hook",
                "events": {"unsubscribe": True, "cleaned": True},
                "sources": {"user": True, "admin": True, "api": False},
            },
            auth=("x", API_KEY),
            timeout=10,
        )
        assert created.status_code == 200, created.text
        mailchimp(
            world,
            f"campaigns/{campaign['id']}/activity",
            {
                "events": [
                    {"email_address": ada["emailaddress1"], "action": "unsubscribe", "reason": "Too many emails"},
                    {"email_address": bob["emailaddress1"], "action": "bounce", "type": "hard"},
                ]
            },
        )
        deliveries = receiver.wait_for_posts(2)
    assert sorted(d.form["type"] for d in deliveries) == ["cleaned", "unsubscribe"]
    assert {d.form["data[campaign_id]"] for d in deliveries} == {campaign["id"]}
    ctx = world.context()
    for delivery in deliveries:  # through the route, as Mailchimp posts them
        assert ctx.webhooks.mailchimp("POST", {"secret": SECRET}, {}, delivery.body).status == 200
    messages = ctx.storage.receive(EVENTS_QUEUE, visibility_timeout=60, max_messages=2)
    assert len(messages) == 2
    counts = ctx.events.handle(json.loads(messages[0].content), gather=False)
    counts += ctx.events.handle(json.loads(messages[1].content), gather=False)
    for message in messages:
        ctx.storage.delete(EVENTS_QUEUE, message)
    assert counts["dynamics_writes"] == 2

    said = f'unsubscribed by the person in campaign {campaign["id"]}, reason: "Too many emails"; {RULE}'
    assert why(membership(world, ada["contactid"])) == ("unsubscribed", SOURCE_SUBSCRIBER, said)
    assert [r[NAMES.column("cause")] for r in history(world, ada["contactid"])] == [said]
    bounced = f"cleaned by Mailchimp: a hard bounce in campaign {campaign['id']}; {RULE}"
    assert why(membership(world, bob["contactid"])) == ("cleaned", SOURCE_SUBSCRIBER, bounced)
    assert [r[NAMES.column("cause")] for r in history(world, bob["contactid"])] == [bounced]


def test_at_first_meeting_the_row_says_who_unsubscribed_the_member_in_mailchimp(world):
    ada, bob = (contact(f"first{n}.{world.link}@example.org") for n in range(2))
    world.seed(
        [ada, bob],
        [
            member(ada["emailaddress1"], "unsubscribed", unsubscribed_by="admin"),
            member(bob["emailaddress1"], "unsubscribed", unsubscribe_reason="Moved abroad"),
        ],
    )
    assert world.sync()[0] == 0
    opt_out_won = "the two sides first met and disagreed: the opt-out won"
    assert why(membership(world, ada["contactid"])) == (
        "unsubscribed",
        SOURCE_ADMIN,
        f"unsubscribed by an admin in Mailchimp; {opt_out_won}",
    )
    said = f'unsubscribed by the person, reason: "Moved abroad"; {opt_out_won}'
    assert why(membership(world, bob["contactid"])) == ("unsubscribed", SOURCE_SUBSCRIBER, said)
    assert world.records()[bob["contactid"]]["donotbulkemail"] is True

"""The sync-events handler: events read again, reconciled through the pipeline, duplicates and echoes harmless."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared import app as engine
from shared.adapters.storage import EVENTS_QUEUE
from shared.features.realtime.events import DATAVERSE, MAILCHIMP, Event
from shared.rules.addresses import member_hash
from tests.features.realtime.support import realtime_world
from tests.sync_world import contact, member


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return realtime_world(mailchimp_emulator, dataverse_emulator, azurite, tag=None)


def unsubscribe_event(world, email: str) -> Event:
    return Event(
        MAILCHIMP, datetime.now(UTC), None, audience=world.audience, type="unsubscribe", member_hash=member_hash(email)
    )


def record_event(record_id: str, user: str, entity: str = "contact") -> Event:
    return Event(DATAVERSE, datetime.now(UTC), None, entity=entity, record_id=record_id, message="Update", user=user)


def seeded(world, count: int = 1):
    people = [contact(f"person{n}@example.org") for n in range(count)]
    world.seed(people, [member(f"person{n}@example.org") for n in range(count)])
    assert world.sync()[0] == 0  # the first run meets everyone: the bases exist
    return people


def written(world) -> int:
    parts = world.dataverse.admin.call("GET", "batch-parts")["parts"]
    return sum(n for route, n in parts.items() if not route.startswith("GET"))


def dynamics_user(world) -> str:
    """The user the Dataverse emulator names for an edit made in Dynamics (not the product's)."""
    return "00000000-0000-4000-8000-00000000d365"


def test_a_mailchimp_unsubscribe_reaches_dynamics_and_its_duplicate_writes_nothing(world):
    [person] = seeded(world)
    world.mailchimp.admin.call(
        "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": "person0@example.org"}
    )
    ctx = world.context()
    first = ctx.events.handle(unsubscribe_event(world, "person0@example.org").encode(), gather=False)
    assert first["dynamics_writes"] == 1 and first["mailchimp_writes"] == 0
    assert world.records()[person["contactid"]]["donotbulkemail"] is True
    patches = written(world)
    again = ctx.events.handle(unsubscribe_event(world, "person0@example.org").encode(), gather=False)
    assert again["dynamics_writes"] == 0 and again["mailchimp_writes"] == 0
    assert written(world) == patches  # a replayed event read the record again and wrote nothing
    rows = [r for r in world.audit() if "real-time event" in str(r.get("detail"))]
    assert [(r["side"], r["member_hash"]) for r in rows] == [("dynamics", member_hash("person0@example.org"))]
    assert engine.link_statuses(ctx)[0]["lastEvent"]


def test_a_dynamics_opt_out_reaches_mailchimp(world):
    [person] = seeded(world)
    world.dataverse.admin.call(
        "POST", "edit", {"entity": "contacts", "id": person["contactid"], "changes": {"donotbulkemail": True}}
    )
    ctx = world.context()
    counts = ctx.events.handle(record_event(person["contactid"], dynamics_user(world)).encode(), gather=False)
    assert counts["mailchimp_writes"] == 1
    assert world.members()["person0@example.org"]["status"] == "unsubscribed"


def test_the_products_own_writes_cause_no_event_work(world):
    [person] = seeded(world)
    ctx = world.context()
    own = ctx.dataverse.whoami()["UserId"]
    world.dataverse.admin.reset_calls()
    world.mailchimp.admin.reset_calls()
    counts = ctx.events.handle(record_event(person["contactid"], own).encode(), gather=False)
    assert counts["echo"] == 1
    assert not any(n for name, n in world.mailchimp.admin.calls().items())
    assert sum(world.dataverse.admin.calls().values()) <= 1  # at most the one WhoAmI, remembered afterwards
    world.dataverse.admin.reset_calls()
    assert ctx.events.handle(record_event(person["contactid"], own).encode(), gather=False)["echo"] == 1
    assert not sum(world.dataverse.admin.calls().values())


def test_an_audience_no_link_uses_is_ignored(world):
    seeded(world)
    event = Event(MAILCHIMP, datetime.now(UTC), None, audience="zz99", type="unsubscribe", member_hash="0" * 32)
    counts = world.context().events.handle(event.encode(), gather=False)
    assert counts["ignored"] == 1 and not counts["dynamics_writes"]


def test_a_burst_is_gathered_into_one_unit_read_in_one_page(world):
    people = seeded(world, 40)
    emails = [f"person{n}@example.org" for n in range(40)]
    world.mailchimp.admin.call(
        "POST", "people/bulk-unsubscribe", {"list_id": world.audience, "email_addresses": emails}
    )
    ctx = world.context()
    events = [unsubscribe_event(world, email).encode() for email in emails]
    for event in events[1:]:
        ctx.storage.send(EVENTS_QUEUE, event)
    world.mailchimp.admin.reset_calls()
    world.dataverse.admin.reset_calls()
    counts = ctx.events.handle(events[0])
    assert counts["events"] == 40 and counts["dynamics_writes"] == 40
    assert ctx.storage.queue_length(EVENTS_QUEUE) == 0
    assert all(world.records()[p["contactid"]]["donotbulkemail"] for p in people)
    mailchimp_calls = sum(world.mailchimp.admin.calls().values())
    assert mailchimp_calls <= 2, world.mailchimp.admin.calls()  # one since_last_changed page, not 40 reads


def test_an_address_change_in_mailchimp_moves_the_records(world):
    [person] = seeded(world)
    world.mailchimp.admin.call(
        "POST",
        "people/change-email",
        {"list_id": world.audience, "email_address": "person0@example.org", "new_email_address": "moved@example.org"},
    )
    event = Event(
        MAILCHIMP,
        datetime.now(UTC),
        None,
        audience=world.audience,
        type="upemail",
        member_hash=member_hash("moved@example.org"),
        old_hash=member_hash("person0@example.org"),
    )
    world.context().events.handle(event.encode(), gather=False)
    assert world.records()[person["contactid"]]["emailaddress1"] == "moved@example.org"


def test_an_address_change_in_dynamics_changes_the_members_address(world):
    [person] = seeded(world)
    world.dataverse.admin.call(
        "POST",
        "edit",
        {"entity": "contacts", "id": person["contactid"], "changes": {"emailaddress1": "new@example.org"}},
    )
    counts = world.context().events.handle(
        record_event(person["contactid"], dynamics_user(world)).encode(), gather=False
    )
    assert counts["rule:email-changed-in-dynamics"] == 1
    members = world.members()
    assert "new@example.org" in members and "person0@example.org" not in members


def test_a_new_record_meeting_an_archived_member_does_not_bring_it_back(world):
    [person] = seeded(world)
    gone = "gone@example.org"
    world.mailchimp.admin.seed(
        {"members": [{"list_id": world.audience, **member(gone, "archived", status_before_archive="unsubscribed")}]}
    )
    newcomer = contact(gone)
    world.dataverse.admin.seed(
        {
            "contacts": [newcomer],
            "lists": [
                {
                    "listid": world.list_id,
                    "listname": f"List {world.link}",
                    "type": False,
                    "createdfromcode": 2,
                    "members": [person["contactid"], newcomer["contactid"]],
                }
            ],
        }
    )
    ctx = world.context()
    created = Event(
        DATAVERSE,
        datetime.now(UTC),
        None,
        entity="contact",
        record_id=newcomer["contactid"],
        message="Create",
        user=dynamics_user(world),
    )
    counts = ctx.events.handle(created.encode(), gather=False)
    assert counts["rule:member-archived-not-revived"] == 1, counts
    assert world.members()[gone]["status"] == "archived"
    assert not counts["mailchimp_writes"]

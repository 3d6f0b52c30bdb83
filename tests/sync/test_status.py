"""Two-way subscription status through the real handlers, emulators and Azurite."""

from __future__ import annotations

import pytest

from tests.sync_world import SyncWorld, contact, member

NEW = 100000000  # Subscribed
UNSUB = 100000001
CLEANED = 100000002
PENDING = 100000003


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite, mailchimp_compliance):
    """Under both of the Mailchimp emulator's compliance modes: the product keeps the consent rules itself."""
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def test_first_run_adds_new_records_and_fills_dynamics_from_mailchimp(world):
    fresh = contact("fresh@example.org")
    gone = contact("gone@example.org")
    bounced = contact("bounced@example.org")
    waiting = contact("waiting@example.org")
    refused = contact("refused@example.org", opted_out=True)
    world.seed(
        [fresh, gone, bounced, waiting, refused],
        [
            member("gone@example.org", "unsubscribed"),
            member("bounced@example.org", "cleaned"),
            member("waiting@example.org", "pending"),
        ],
    )
    code, out = world.sync()
    assert code == 0, out
    members = world.members()
    assert members["fresh@example.org"]["status"] == "subscribed"
    assert "refused@example.org" not in members  # rule 1: opted out, not added
    assert members["gone@example.org"]["status"] == "unsubscribed"
    records = world.records()
    assert records[gone["contactid"]]["donotbulkemail"] is True
    assert records[gone["contactid"]]["donotsendmm"] is True
    assert records[gone["contactid"]]["cbr_subscriberstatus"] == UNSUB
    assert records[bounced["contactid"]]["donotbulkemail"] is True
    assert records[bounced["contactid"]]["cbr_subscriberstatus"] == CLEANED
    assert records[waiting["contactid"]]["donotbulkemail"] is False  # pending: status column only
    assert records[waiting["contactid"]]["cbr_subscriberstatus"] == PENDING
    assert records[fresh["contactid"]]["cbr_subscriberstatus"] == NEW
    rules = {row["rule"] for row in world.audit()}
    assert {"new-member", "not-added-opted-out", "first-meeting-agree"} <= rules


def test_an_unsubscribe_in_mailchimp_reaches_dynamics_and_a_signup_clears_it(world):
    person = contact("person@example.org")
    world.seed([person], [member("person@example.org")])
    assert world.sync()[0] == 0
    world.mailchimp.admin.call(
        "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": "person@example.org"}
    )
    assert world.sync()[0] == 0
    record = world.records()[person["contactid"]]
    assert (record["donotbulkemail"], record["donotsendmm"], record["cbr_subscriberstatus"]) == (True, True, UNSUB)
    world.mailchimp.admin.call(
        "POST", "people/resubscribe", {"list_id": world.audience, "email_address": "person@example.org"}
    )
    assert world.sync()[0] == 0
    record = world.records()[person["contactid"]]
    assert (record["donotbulkemail"], record["donotsendmm"], record["cbr_subscriberstatus"]) == (False, False, NEW)


def test_an_opt_out_in_dynamics_unsubscribes_and_an_opt_in_never_resubscribes(world):
    person = contact("person@example.org")
    world.seed([person], [member("person@example.org")])
    assert world.sync()[0] == 0
    world.dataverse.admin.call(
        "POST",
        "edit",
        {"entity": "contacts", "edits": [{"id": person["contactid"], "changes": {"donotbulkemail": True}}]},
    )
    assert world.sync()[0] == 0
    assert world.members()["person@example.org"]["status"] == "unsubscribed"
    world.dataverse.admin.call(
        "POST",
        "edit",
        {
            "entity": "contacts",
            "edits": [{"id": person["contactid"], "changes": {"donotbulkemail": False, "donotsendmm": False}}],
        },
    )
    assert world.sync()[0] == 0
    assert world.members()["person@example.org"]["status"] == "unsubscribed"
    assert world.records()[person["contactid"]]["donotbulkemail"] is True  # the opt-out is restored
    assert "resubscribe-blocked" in {row["rule"] for row in world.audit()}


def test_confirm_policy_sets_pending_and_mailchimp_sends_the_confirmation(world):
    world.overrides["RESUBSCRIBE_POLICY"] = "confirm"
    person = contact("person@example.org", opted_out=True)
    world.seed([person], [member("person@example.org", "unsubscribed")])
    assert world.sync()[0] == 0
    world.dataverse.admin.call(
        "POST",
        "edit",
        {
            "entity": "contacts",
            "edits": [{"id": person["contactid"], "changes": {"donotbulkemail": False, "donotsendmm": False}}],
        },
    )
    assert world.sync()[0] == 0
    assert world.members()["person@example.org"]["status"] == "pending"
    sent = world.mailchimp.admin.call("GET", f"confirmations?list_id={world.audience}")
    assert len(sent["confirmations"]) == 1
    world.mailchimp.admin.call(
        "POST", "people/confirm", {"list_id": world.audience, "email_address": "person@example.org"}
    )
    assert world.sync()[0] == 0
    assert world.records()[person["contactid"]]["cbr_subscriberstatus"] == NEW


def test_the_opt_out_wins_when_the_sides_first_meet(world):
    out_in_crm = contact("crm-out@example.org", opted_out=True)
    world.seed([out_in_crm], [member("crm-out@example.org", "subscribed")])
    assert world.sync()[0] == 0
    assert world.members()["crm-out@example.org"]["status"] == "unsubscribed"


def test_a_message_handled_twice_writes_nothing_the_second_time(world):
    from shared import app as engine
    from shared.adapters.storage import BATCHES_QUEUE

    world.seed([contact(f"p{i}@example.org") for i in range(5)], [member("p0@example.org", "unsubscribed")])
    ctx = world.context()
    ctx.storage.ensure()
    [planned] = engine.plan_sync(ctx)
    [link_message] = ctx.storage.receive("sync-links", visibility_timeout=30)
    import json

    body = json.loads(link_message.content)
    engine.scan_link(ctx, body)
    [batch_message] = ctx.storage.receive(BATCHES_QUEUE, visibility_timeout=30)
    batch = json.loads(batch_message.content)
    engine.reconcile_batch(ctx, batch)
    mailchimp_before, dataverse_before = world.mailchimp.admin.calls(), world.dataverse.admin.calls()
    engine.reconcile_batch(ctx, batch)
    engine.scan_link(ctx, body)
    assert world.mailchimp.admin.calls() == mailchimp_before
    assert world.dataverse.admin.calls() == dataverse_before
    assert ctx.ledger.run(world.link, planned.run_id)["status"] == "completed"


def test_an_address_change_in_dynamics_moves_the_member(world):
    person = contact("old.address@example.org")
    world.seed([person], [member("old.address@example.org")])
    assert world.sync()[0] == 0
    world.dataverse.admin.call(
        "POST",
        "edit",
        {
            "entity": "contacts",
            "edits": [{"id": person["contactid"], "changes": {"emailaddress1": "New.Address@example.org"}}],
        },
    )
    assert world.sync()[0] == 0
    members = world.members()
    assert "old.address@example.org" not in members
    assert members["new.address@example.org"]["status"] == "subscribed"
    assert "email-changed-in-dynamics" in {row["rule"] for row in world.audit()}
    assert world.sync()[0] == 0  # and it settles: one member, one record
    assert [e for e in world.members() if "address" in e] == ["new.address@example.org"]


def test_an_address_change_in_mailchimp_reaches_the_record(world):
    person = contact("before@example.org")
    world.seed([person], [member("before@example.org")])
    assert world.sync()[0] == 0
    world.mailchimp.admin.call(
        "POST",
        "people/change-email",
        {"list_id": world.audience, "email_address": "before@example.org", "new_email_address": "after@example.org"},
    )
    assert world.sync()[0] == 0
    assert world.records()[person["contactid"]]["emailaddress1"] == "after@example.org"
    assert "email-changed-in-mailchimp" in {row["rule"] for row in world.audit()}
    assert world.sync()[0] == 0
    assert set(world.members()) == {"after@example.org"}


def test_an_address_change_onto_an_existing_member_is_a_conflict(world):
    person = contact("mine@example.org")
    world.seed([person], [member("mine@example.org"), member("taken@example.org")])
    assert world.sync()[0] == 0
    world.dataverse.admin.call(
        "POST",
        "edit",
        {
            "entity": "contacts",
            "edits": [{"id": person["contactid"], "changes": {"emailaddress1": "taken@example.org"}}],
        },
    )
    assert world.sync()[0] == 0
    members = world.members()
    assert members["mine@example.org"]["status"] == "subscribed" and "taken@example.org" in members
    assert "email-conflict" in {row["rule"] for row in world.audit()}


def test_a_record_added_to_the_list_without_being_edited_is_added_to_mailchimp(world):
    first = contact("first@example.org")
    joiner = contact("joiner@example.org", modifiedon="2024-03-01T10:00:00Z")
    world.seed([first, joiner], in_list=[first["contactid"]])
    assert world.sync()[0] == 0
    assert "joiner@example.org" not in world.members()
    world.dataverse.admin.call("POST", "members", {"listid": world.list_id, "add": [joiner["contactid"]]})
    calls_before = world.dataverse.admin.calls()
    assert world.sync()[0] == 0
    assert world.members()["joiner@example.org"]["status"] == "subscribed"
    assert world.members()["joiner@example.org"]["tags"] == ["crm"]
    reads = {k: v - calls_before.get(k, 0) for k, v in world.dataverse.admin.calls().items()}
    assert reads.get("GET /api/data/v9.2/{entityset}", 0) <= 3  # list, changed records, newly joined records

"""Mapped fields end to end: the real handlers, the emulators on loopback and Azurite."""

from __future__ import annotations

import json

import pytest

from shared.rules.addresses import member_hash
from tests.features.fields.support import (
    field_audits,
    field_map,
    merge_values,
    person_edits,
    provision_with_mailchimp,
    seed,
    synced,
    user_edits,
)
from tests.sync_world import SyncWorld, contact, member, new_id

BOTH_FIRST_NAME = field_map(
    {"column": "firstname", "mergeField": "FNAME", "direction": "both"},
    {"column": "lastname", "mergeField": "LNAME"},
)


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def test_names_arrive_in_mailchimp_with_the_default_map(world):
    jane = contact("jane@example.org", firstname="Jane", lastname="Doe")
    seed(world, [jane])
    synced(world)
    assert merge_values(world, "jane@example.org")["FNAME"] == "Jane"
    assert merge_values(world, "jane@example.org")["LNAME"] == "Doe"
    audits = field_audits(world)
    assert [a["rule"] for a in audits] == ["field-first-meeting"]
    assert "Jane" not in json.dumps(audits, default=str)  # the audit keeps digests, never the value
    assert audits[0]["mailchimp_new"] is not None


def test_a_dynamics_edit_reaches_mailchimp_and_a_mailchimp_edit_does_not_come_back_by_default(world):
    jane = contact("jane@example.org", firstname="Jane", lastname="Doe")
    seed(world, [jane])
    synced(world)
    user_edits(world, jane["contactid"], firstname="Janet")
    person_edits(world, "jane@example.org", LNAME="Smith")
    synced(world)
    assert merge_values(world, "jane@example.org")["FNAME"] == "Janet"
    assert merge_values(world, "jane@example.org")["LNAME"] == "Smith"  # to-mailchimp: Mailchimp's edit stays there
    assert world.records()[jane["contactid"]]["lastname"] == "Doe"


def test_a_name_edited_in_mailchimp_reaches_dynamics_for_a_both_field(world):
    world.overrides["FIELD_MAP"] = BOTH_FIRST_NAME
    jane = contact("jane@example.org", firstname="Jane", lastname="Doe")
    seed(world, [jane])
    synced(world)
    person_edits(world, "jane@example.org", FNAME="Janey")
    synced(world)
    assert world.records()[jane["contactid"]]["firstname"] == "Janey"
    rules = [a["rule"] for a in field_audits(world)]
    assert "field-mailchimp-changed" in rules
    before = len(world.audit())
    synced(world)
    synced(world)
    assert world.records()[jane["contactid"]]["firstname"] == "Janey"
    assert len(world.audit()) == before  # quiet runs write nothing


def test_to_dynamics_fields_take_mailchimps_value_at_the_first_meeting(world):
    world.overrides["FIELD_MAP"] = field_map({"column": "jobtitle", "mergeField": "JOB", "direction": "to-dynamics"})
    ada = contact("ada@example.org", jobtitle="Clerk")
    seed(
        world,
        [ada],
        [member("ada@example.org", merge_fields={"JOB": "Engineer"})],
        merge_fields=[{"tag": "JOB", "name": "Job", "type": "text"}],
    )
    synced(world)
    assert world.records()[ada["contactid"]]["jobtitle"] == "Engineer"
    user_edits(world, ada["contactid"], jobtitle="Manager")
    synced(world)
    assert merge_values(world, "ada@example.org")["JOB"] == "Engineer"  # Dynamics edits stay in Dynamics


@pytest.mark.parametrize("later", ["mailchimp", "dynamics"])
def test_both_changed_the_later_edit_wins(world, later):
    world.overrides["FIELD_MAP"] = BOTH_FIRST_NAME
    jane = contact("jane@example.org", firstname="Jane", lastname="Doe")
    seed(world, [jane])
    synced(world)
    world.mailchimp.admin.advance_clock(60)
    world.dataverse.admin.advance_clock(60)
    if later == "mailchimp":
        user_edits(world, jane["contactid"], firstname="FromDynamics")
        world.mailchimp.admin.advance_clock(30)
        person_edits(world, "jane@example.org", FNAME="FromMailchimp")
        winner = "FromMailchimp"
    else:
        person_edits(world, "jane@example.org", FNAME="FromMailchimp")
        world.dataverse.admin.advance_clock(30)
        user_edits(world, jane["contactid"], firstname="FromDynamics")
        winner = "FromDynamics"
    synced(world)
    assert world.records()[jane["contactid"]]["firstname"] == winner
    assert merge_values(world, "jane@example.org")["FNAME"] == winner
    assert f"field-both-changed-{later}-later" in [a["rule"] for a in field_audits(world)]


def test_a_refused_value_is_skipped_and_the_consent_write_still_happens(world):
    world.overrides["FIELD_MAP"] = field_map(
        {"column": "firstname", "mergeField": "FNAME"}, {"column": "telephone1", "mergeField": "PHONE"}
    )
    bob = contact("bob@example.org", firstname="Bob", telephone1="555-0100")  # not a US number of ten digits
    seed(
        world,
        [bob],
        merge_fields=[
            {"tag": "FNAME", "name": "First Name", "type": "text"},
            {"tag": "PHONE", "name": "Phone", "type": "phone", "options": {"phone_format": "US"}},
        ],
    )
    synced(world)
    added = world.members()["bob@example.org"]
    assert added["status"] == "subscribed"  # the member's consent write went through
    assert added["merge_fields"]["FNAME"] == "Bob"
    assert added["merge_fields"].get("PHONE", "") == ""
    skipped = [a for a in field_audits(world) if "PHONE" in (a.get("skipped") or "")]
    assert skipped and "field-refused" in skipped[0]["skipped"]
    world.mailchimp.admin.clear_requests()
    synced(world)
    sent = [r for r in world.mailchimp.admin.requests() if r["method"] == "POST"]
    assert sent == []  # the refused value is not sent again while it is unchanged


def test_a_value_refused_before_sending_is_audited_and_the_member_still_added(world):
    world.overrides["FIELD_MAP"] = field_map({"column": "telephone1", "mergeField": "PHONE"})
    eve = contact("eve@example.org", telephone1="no phone")
    seed(world, [eve])
    synced(world)
    assert world.members()["eve@example.org"]["status"] == "subscribed"
    skipped = field_audits(world)
    assert skipped and "not-a-phone-number" in skipped[0]["detail"]


def test_the_address_composite_travels_both_ways(world):
    world.overrides["FIELD_MAP"] = field_map(
        {"column": "address1_composite", "mergeField": "ADDRESS", "direction": "both"}
    )
    ann = contact(
        "ann@example.org",
        address1_line1="1 Main St",
        address1_city="Springfield",
        address1_stateorprovince="IL",
        address1_postalcode="62701",
        address1_country="US",
    )
    seed(world, [ann])
    synced(world)
    assert merge_values(world, "ann@example.org")["ADDRESS"] == {
        "addr1": "1 Main St",
        "addr2": "",
        "city": "Springfield",
        "state": "IL",
        "zip": "62701",
        "country": "US",
    }
    moved = {"addr1": "9 Elm Rd", "addr2": "Flat 2", "city": "Shelbyville", "state": "IL", "zip": "62565"}
    person_edits(world, "ann@example.org", ADDRESS={**moved, "country": "US"})
    synced(world)
    row = world.records()[ann["contactid"]]
    assert (row["address1_line1"], row["address1_line2"], row["address1_city"], row["address1_postalcode"]) == (
        "9 Elm Rd",
        "Flat 2",
        "Shelbyville",
        "62565",
    )


def test_account_fields_follow_their_kind_and_provision_creates_the_merge_field(world):
    world.overrides["FIELD_MAP"] = field_map(
        {"column": "firstname", "mergeField": "FNAME"},
        {"column": "name", "mergeField": "COMPANY", "kinds": ["account"]},
    )
    account = {
        "accountid": new_id(),
        "name": "Contoso Ltd",
        "emailaddress1": "office@contoso.example.org",
        "donotbulkemail": False,
        "donotsendmm": False,
    }
    seed(world, [account], list_type=1)
    created = provision_with_mailchimp(world)
    assert created == [f"created merge field COMPANY (text) in audience {world.audience}"]
    assert provision_with_mailchimp(world) == []  # idempotent
    synced(world)
    values = merge_values(world, "office@contoso.example.org")
    assert values["COMPANY"] == "Contoso Ltd"
    assert values.get("FNAME", "") == ""  # firstname is a contact and lead column: not read on an account


def test_several_records_the_most_recently_modified_active_one_speaks(world):
    older = contact("sam@example.org", firstname="Samuel")
    newer = contact("sam@example.org", firstname="Sam")
    seed(world, [older, newer])
    world.dataverse.admin.advance_clock(5)
    user_edits(world, newer["contactid"], firstname="Sammy")
    synced(world)
    assert merge_values(world, "sam@example.org")["FNAME"] == "Sammy"
    assert member_hash("sam@example.org") in {a["member_hash"] for a in field_audits(world)}


def test_two_records_with_different_names_do_not_take_turns_on_the_echo_of_the_syncs_own_writes(world):
    first = contact("pat@example.org", firstname="Patricia")
    second = contact("pat@example.org", firstname="Patrick")
    seed(world, [first, second])
    synced(world)  # writes the status column on both records: the next run reads both again
    spoke = merge_values(world, "pat@example.org")["FNAME"]
    assert spoke in ("Patricia", "Patrick")
    world.mailchimp.admin.clear_requests()
    synced(world)
    synced(world)
    assert merge_values(world, "pat@example.org")["FNAME"] == spoke
    assert [r for r in world.mailchimp.admin.requests() if r["method"] == "POST"] == []


def test_a_value_dataverse_refuses_is_not_sent_again_so_the_consent_write_goes_through_next(world):
    world.overrides["FIELD_MAP"] = BOTH_FIRST_NAME
    jane = contact("jane@example.org", firstname="Jane", lastname="Doe")
    seed(world, [jane])
    synced(world)
    too_long = "J" * 60  # firstname holds 50 characters in Dataverse
    person_edits(world, "jane@example.org", FNAME=too_long)
    world.mailchimp.admin.call(
        "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": "jane@example.org"}
    )
    synced(world)
    refused = [a for a in field_audits(world) if jane["contactid"] in (a.get("skipped") or "")]
    assert refused, field_audits(world)
    synced(world)
    row = world.records()[jane["contactid"]]
    assert row["donotbulkemail"] is True  # the opt-out reached Dynamics once the refused name stopped riding along
    assert row["firstname"] == "Jane"

"""The consent rules of design.md, end to end: real handlers, the emulators on loopback and Azurite."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from shared.rules.addresses import member_hash
from shared.state.aliases import AliasIndex
from tests.sync_world import API_KEY, SyncWorld, contact, member, new_id

SUBSCRIBED, UNSUBSCRIBED, CLEANED, PENDING, TRANSACTIONAL, ARCHIVED = range(100000000, 100000006)
OTHER_AUDIENCE = "f0e1d2c3b4"


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite, mailchimp_compliance):
    """Under both of the Mailchimp emulator's compliance modes: the product keeps the consent rules itself."""
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


# ---- what a person does on either side ----------------------------------------------------------
def person(world: SyncWorld, action: str, email: str, audience: str | None = None, **extra: Any) -> dict[str, Any]:
    """The person acts in Mailchimp: unsubscribe, resubscribe (a signup form), confirm, bounce, change-email."""
    return world.mailchimp.admin.call(
        "POST", f"people/{action}", {"list_id": audience or world.audience, "email_address": email, **extra}
    )


def edit(world: SyncWorld, record_id: str, entity: str = "contacts", **changes: Any) -> None:
    """A user edits a record in Dynamics."""
    world.dataverse.admin.call("POST", "edit", {"entity": entity, "id": record_id, "changes": changes})


def mailchimp_api(world: SyncWorld, method: str, path: str, body: Any = None) -> requests.Response:
    """Another Mailchimp user working through the API (archiving, setting transactional)."""
    response = requests.request(
        method, f"{world.mailchimp.url}/3.0/{path}", json=body, auth=("anystring", API_KEY), timeout=30
    )
    assert response.status_code < 300, response.text
    return response


def columns(world: SyncWorld, record_id: str, entity: str = "contacts") -> tuple[bool, bool, int | None]:
    row = world.records(entity)[record_id]
    return row["donotbulkemail"], row["donotsendmm"], row.get("cbr_subscriberstatus")


def statuses(world: SyncWorld) -> dict[str, str]:
    return {email: m["status"] for email, m in world.members().items()}


def audited(world: SyncWorld) -> list[str]:
    return [row["rule"] for row in world.audit()]


def synced(world: SyncWorld, *, full: bool = False, **overrides: str) -> str:
    code, out = world.sync(full=full, **overrides)
    assert code == 0, out
    return out


def subscribed_writes(world: SyncWorld, emails: set[str]) -> list[dict[str, Any]]:
    """Every request the sync sent to Mailchimp that tried to set one of these addresses to subscribed."""
    hashes = {member_hash(e) for e in emails}
    found = []
    for request in world.mailchimp.admin.requests():
        if request["method"] not in ("POST", "PUT", "PATCH"):
            continue
        body = request.get("body")
        entries = body.get("members", [body]) if isinstance(body, dict) else []
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            addressed = entry.get("email_address", "")
            in_path = any(h in request["path"] for h in hashes)
            if (in_path or (addressed and member_hash(addressed) in hashes)) and entry.get("status") == "subscribed":
                found.append(request)
    return found


# ---- rule 1 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("new_status", ["subscribed", "pending"])
def test_rule_1_new_records_join_with_the_new_member_status_and_opted_out_ones_stay_out(world, new_status):
    world.overrides["NEW_MEMBER_STATUS"] = new_status
    joining = contact("joining@example.org")
    refusing = contact("refusing@example.org", donotsendmm=True)  # any opt-out column counts
    world.seed([joining, refusing])
    synced(world)
    assert statuses(world) == {"joining@example.org": new_status}
    assert columns(world, joining["contactid"])[2] == (SUBSCRIBED if new_status == "subscribed" else PENDING)
    assert columns(world, refusing["contactid"])[:2] == (False, True)  # left as the user set it
    sent = world.mailchimp.admin.call("GET", f"confirmations?list_id={world.audience}")["confirmations"]
    assert len(sent) == (1 if new_status == "pending" else 0)
    refused = [row for row in world.audit() if row["rule"] == "not-added-opted-out"]
    assert [row["member_hash"] for row in refused] == [member_hash("refusing@example.org")]
    assert refusing["contactid"] in refused[0]["record_ids"]


# ---- rule 2 -------------------------------------------------------------------------------------
def test_rule_2_every_mailchimp_status_reaches_the_opt_out_and_status_columns(world):
    came_back = contact("came-back@example.org", opted_out=True)
    left = contact("left@example.org")
    bounced = contact("bounced@example.org")
    transactional = contact("transactional@example.org")
    waiting = contact("waiting@example.org")
    world.seed(
        [came_back, left, bounced, transactional, waiting],
        [
            member("came-back@example.org", "unsubscribed"),
            member("left@example.org"),
            member("bounced@example.org"),
            member("transactional@example.org"),
            member("waiting@example.org"),
        ],
    )
    synced(world)
    person(world, "resubscribe", "came-back@example.org")
    person(world, "unsubscribe", "left@example.org")
    person(world, "bounce", "bounced@example.org", type="hard")
    mailchimp_api(
        world,
        "PUT",
        f"lists/{world.audience}/members/{member_hash('transactional@example.org')}",
        {"email_address": "transactional@example.org", "status": "transactional"},
    )
    mailchimp_api(
        world, "PATCH", f"lists/{world.audience}/members/{member_hash('waiting@example.org')}", {"status": "pending"}
    )
    synced(world)
    assert columns(world, came_back["contactid"]) == (False, False, SUBSCRIBED)
    assert columns(world, left["contactid"]) == (True, True, UNSUBSCRIBED)
    assert columns(world, bounced["contactid"]) == (True, True, CLEANED)
    assert columns(world, transactional["contactid"]) == (True, True, TRANSACTIONAL)
    assert columns(world, waiting["contactid"]) == (False, False, PENDING)  # status column only
    # the sync wrote nothing back to Mailchimp: each status is the person's
    assert statuses(world) == {
        "came-back@example.org": "subscribed",
        "left@example.org": "unsubscribed",
        "bounced@example.org": "cleaned",
        "transactional@example.org": "transactional",
        "waiting@example.org": "pending",
    }
    assert audited(world).count("mailchimp-changed") == 5


def test_rule_2_an_archived_member_shows_in_the_status_column_only(world):
    archived = contact("archived@example.org")
    world.seed([archived], [member("archived@example.org")])
    synced(world)
    mailchimp_api(world, "DELETE", f"lists/{world.audience}/members/{member_hash('archived@example.org')}")
    synced(world, full=True)  # archived members are not listed: a full pass is what notices them
    assert columns(world, archived["contactid"]) == (False, False, ARCHIVED)
    assert "mailchimp-changed" in audited(world)


# ---- rule 3 -------------------------------------------------------------------------------------
def test_rule_3_a_dynamics_opt_out_unsubscribes_subscribed_and_pending_members(world):
    reader = contact("reader@example.org")
    waiting = contact("waiting@example.org")
    world.seed([reader, waiting], [member("reader@example.org"), member("waiting@example.org", "pending")])
    synced(world)
    edit(world, reader["contactid"], donotbulkemail=True)
    edit(world, waiting["contactid"], donotsendmm=True)
    synced(world)
    assert statuses(world) == {"reader@example.org": "unsubscribed", "waiting@example.org": "unsubscribed"}
    assert columns(world, reader["contactid"])[2] == UNSUBSCRIBED
    assert columns(world, waiting["contactid"])[2] == UNSUBSCRIBED
    assert audited(world).count("dynamics-opt-out") == 2


@pytest.mark.parametrize("policy", ["never", "confirm"])
def test_rule_3_an_opt_in_in_dynamics_never_subscribes_an_opted_out_member(world, policy):
    world.overrides["RESUBSCRIBE_POLICY"] = policy
    left = contact("left@example.org", opted_out=True)
    dropped = contact("dropped@example.org", opted_out=True)  # an admin unsubscribed them: Mailchimp would allow it
    bounced = contact("bounced@example.org", opted_out=True)
    transactional = contact("transactional@example.org", opted_out=True)
    world.seed(
        [left, dropped, bounced, transactional],
        [
            member("left@example.org", "unsubscribed"),
            member("dropped@example.org", "unsubscribed", unsubscribed_by="admin"),
            member("bounced@example.org", "cleaned"),
            member("transactional@example.org", "transactional"),
        ],
    )
    synced(world)
    for record in (left, dropped, bounced, transactional):
        edit(world, record["contactid"], donotbulkemail=False, donotsendmm=False)
    synced(world)
    synced(world)  # and a run with nothing new keeps it so
    expected_left = "pending" if policy == "confirm" else "unsubscribed"
    assert statuses(world) == {
        "left@example.org": expected_left,
        "dropped@example.org": expected_left,
        "bounced@example.org": "cleaned",
        "transactional@example.org": "transactional",
    }
    everyone = {"left@example.org", "dropped@example.org", "bounced@example.org", "transactional@example.org"}
    assert subscribed_writes(world, everyone) == []
    # refused opt-ins are reverted in Dynamics; the confirm policy waits for the person's click
    assert columns(world, bounced["contactid"])[:2] == (True, True)
    assert columns(world, transactional["contactid"])[:2] == (True, True)
    rules = audited(world)
    if policy == "confirm":
        assert columns(world, left["contactid"]) == (False, False, PENDING)
        assert columns(world, dropped["contactid"]) == (False, False, PENDING)
        sent = world.mailchimp.admin.call("GET", f"confirmations?list_id={world.audience}")["confirmations"]
        assert len(sent) == 2
        assert rules.count("resubscribe-confirm") == 2 and rules.count("resubscribe-blocked") == 2
    else:
        assert columns(world, left["contactid"]) == (True, True, UNSUBSCRIBED)
        assert columns(world, dropped["contactid"]) == (True, True, UNSUBSCRIBED)
        assert rules.count("resubscribe-blocked") == 4


def test_rule_3_the_confirmation_click_subscribes_and_flows_back(world):
    world.overrides["RESUBSCRIBE_POLICY"] = "confirm"
    left = contact("left@example.org", opted_out=True)
    world.seed([left], [member("left@example.org", "unsubscribed")])
    synced(world)
    edit(world, left["contactid"], donotbulkemail=False, donotsendmm=False)
    synced(world)
    assert statuses(world) == {"left@example.org": "pending"}
    person(world, "confirm", "left@example.org")
    synced(world)
    assert statuses(world) == {"left@example.org": "subscribed"}
    assert columns(world, left["contactid"]) == (False, False, SUBSCRIBED)


# ---- rule 4 -------------------------------------------------------------------------------------
def test_rule_4_the_opt_out_wins_when_the_sides_first_meet(world):
    crm_out = contact("crm-out@example.org", opted_out=True)
    crm_out_pending = contact("crm-out-pending@example.org", donotbulkemail=True)
    mc_out = contact("mc-out@example.org")
    mc_cleaned = contact("mc-cleaned@example.org")
    world.seed(
        [crm_out, crm_out_pending, mc_out, mc_cleaned],
        [
            member("crm-out@example.org"),
            member("crm-out-pending@example.org", "pending"),
            member("mc-out@example.org", "unsubscribed"),
            member("mc-cleaned@example.org", "cleaned"),
        ],
    )
    synced(world)
    assert statuses(world) == {
        "crm-out@example.org": "unsubscribed",
        "crm-out-pending@example.org": "unsubscribed",
        "mc-out@example.org": "unsubscribed",
        "mc-cleaned@example.org": "cleaned",
    }
    assert columns(world, crm_out["contactid"]) == (True, True, UNSUBSCRIBED)
    assert columns(world, mc_out["contactid"]) == (True, True, UNSUBSCRIBED)
    assert columns(world, mc_cleaned["contactid"]) == (True, True, CLEANED)
    assert audited(world).count("first-meeting-opt-out-wins") == 4


def test_rule_4_both_changed_the_later_mailchimp_subscription_wins(world):
    record = contact("person@example.org")
    world.seed([record], [member("person@example.org", "pending")])
    synced(world)
    edit(world, record["contactid"], donotbulkemail=True)
    world.mailchimp.admin.advance_clock(5)  # the person's click comes after the CRM change
    person(world, "confirm", "person@example.org")
    synced(world)
    assert statuses(world) == {"person@example.org": "subscribed"}
    assert columns(world, record["contactid"]) == (False, False, SUBSCRIBED)
    assert "both-changed-mailchimp-newer" in audited(world)


def test_rule_4_both_changed_the_later_crm_opt_out_wins(world):
    record = contact("person@example.org")
    world.seed([record], [member("person@example.org", "pending")])
    synced(world)
    person(world, "confirm", "person@example.org")
    world.dataverse.admin.advance_clock(5)  # the CRM opt-out comes after the click
    edit(world, record["contactid"], donotbulkemail=True)
    synced(world)
    assert statuses(world) == {"person@example.org": "unsubscribed"}
    assert columns(world, record["contactid"]) == (True, False, UNSUBSCRIBED)  # the user's opt-out stands as set
    assert "both-changed-opt-out-wins" in audited(world)


def test_rule_4_a_resubscription_through_mailchimp_after_a_crm_opt_out_wins(world):
    record = contact("person@example.org")
    world.seed([record], [member("person@example.org")])
    synced(world)
    edit(world, record["contactid"], donotbulkemail=True)
    world.mailchimp.admin.advance_clock(5)
    person(world, "unsubscribe", "person@example.org")
    person(world, "resubscribe", "person@example.org")  # the person signs up again after the CRM opt-out
    synced(world)
    assert statuses(world) == {"person@example.org": "subscribed"}
    assert columns(world, record["contactid"])[:2] == (False, False)


# ---- rule 5 -------------------------------------------------------------------------------------
def test_rule_5_an_email_change_in_dynamics_moves_the_member(world):
    record = contact("old@example.org")
    world.seed([record], [member("old@example.org")])
    synced(world)
    contact_id = world.members()["old@example.org"]["contact_id"]
    edit(world, record["contactid"], emailaddress1="new@example.org")
    synced(world)
    synced(world)
    members = world.members()
    assert list(members) == ["new@example.org"]
    assert members["new@example.org"]["contact_id"] == contact_id  # the same member, PATCHed
    assert members["new@example.org"]["status"] == "subscribed"
    assert len(world.records()) == 1
    patches = [
        r
        for r in world.mailchimp.admin.requests()
        if r["method"] in ("PATCH", "PUT") and member_hash("old@example.org") in r["path"]
    ]
    assert patches, "the address change goes through the old member's hash"


def test_rule_5_an_email_change_in_mailchimp_updates_the_record(world):
    record = contact("old@example.org")
    world.seed([record], [member("old@example.org")])
    synced(world)
    person(world, "change-email", "old@example.org", new_email_address="new@example.org")
    synced(world)
    synced(world, full=True)
    assert world.records()[record["contactid"]]["emailaddress1"] == "new@example.org"
    assert statuses(world) == {"new@example.org": "subscribed"}
    assert columns(world, record["contactid"]) == (False, False, SUBSCRIBED)


def test_rule_5_an_email_change_to_an_existing_member_is_a_conflict(world):
    record = contact("old@example.org")
    world.seed([record], [member("old@example.org"), member("taken@example.org", "unsubscribed")])
    synced(world)
    before = world.members()
    edit(world, record["contactid"], emailaddress1="taken@example.org")
    world.mailchimp.admin.clear_requests()
    synced(world)
    assert "email-conflict" in audited(world)
    assert world.members() == before
    assert [r for r in world.mailchimp.admin.requests() if r["method"] != "GET"] == []
    assert world.records()[record["contactid"]]["donotbulkemail"] is False  # nothing written to Dynamics


# ---- rule 6 -------------------------------------------------------------------------------------
def test_rule_6_leaving_the_list_removes_the_tag_and_never_unsubscribes(world):
    leaving = contact("leaving@example.org")
    staying = contact("staying@example.org")
    world.seed([leaving, staying])
    synced(world)
    assert {e: m["tags"] for e, m in world.members().items()} == {
        "leaving@example.org": ["crm"],
        "staying@example.org": ["crm"],
    }
    world.dataverse.admin.call("POST", "members", {"listid": world.list_id, "remove": [leaving["contactid"]]})
    synced(world)  # a delta run does not see removals; it must not unsubscribe either
    assert statuses(world) == {"leaving@example.org": "subscribed", "staying@example.org": "subscribed"}
    synced(world, full=True)
    members = world.members()
    assert members["leaving@example.org"]["tags"] == []
    assert members["leaving@example.org"]["status"] == "subscribed"
    assert members["staying@example.org"]["tags"] == ["crm"]
    assert columns(world, leaving["contactid"])[:2] == (False, False)
    # the map still knows the person: the member's base and the record's address stay
    ctx, leaving_hash = world.context(), member_hash("leaving@example.org")
    assert ctx.identity.load(world.link, [leaving_hash])[leaving_hash].member_status == "subscribed"
    assert AliasIndex(ctx.storage, world.link, "records").get([leaving["contactid"]]) == {
        leaving["contactid"]: leaving_hash
    }
    assert any("left the marketing list" in row["detail"] for row in world.audit())
    world.dataverse.admin.call("POST", "members", {"listid": world.list_id, "add": [leaving["contactid"]]})
    synced(world)  # joining again brings the tag back
    assert world.members()["leaving@example.org"]["tags"] == ["crm"]
    assert statuses(world) == {"leaving@example.org": "subscribed", "staying@example.org": "subscribed"}


# ---- rule 7 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("who_opts_out", [0, 1])
def test_rule_7_several_records_with_one_email_are_one_member(world, who_opts_out):
    pair = [contact("shared@example.org", firstname="First"), contact("Shared@Example.org", firstname="Second")]
    world.seed(pair)
    synced(world)
    assert statuses(world) == {"shared@example.org": "subscribed"}
    assert [columns(world, r["contactid"]) for r in pair] == [(False, False, SUBSCRIBED)] * 2
    edit(world, pair[who_opts_out]["contactid"], donotbulkemail=True)  # an opt-out on either one
    synced(world)
    assert statuses(world) == {"shared@example.org": "unsubscribed"}
    assert [columns(world, r["contactid"])[2] for r in pair] == [UNSUBSCRIBED] * 2
    person(world, "resubscribe", "shared@example.org")  # a Mailchimp change reaches both
    synced(world)
    assert [columns(world, r["contactid"]) for r in pair] == [(False, False, SUBSCRIBED)] * 2
    person(world, "unsubscribe", "shared@example.org")
    synced(world)
    assert [columns(world, r["contactid"]) for r in pair] == [(True, True, UNSUBSCRIBED)] * 2
    assert len(world.members()) == 1


# ---- rule 9 -------------------------------------------------------------------------------------
def test_rule_9_the_status_column_shows_the_first_status_across_audiences(world):
    second_list = new_id()
    world.extra_links.append({"name": f"{world.link}-b", "marketingListId": second_list, "audienceId": OTHER_AUDIENCE})
    lead = {
        "leadid": new_id(),
        "firstname": "Lena",
        "lastname": "Lead",
        "emailaddress1": "lena@example.org",
        "donotbulkemail": False,
        "donotsendmm": False,
    }
    world.seed([lead], [member("lena@example.org", "pending")], list_type=4)
    world.dataverse.admin.seed(
        {
            "lists": [
                {
                    "listid": second_list,
                    "listname": "Second",
                    "type": False,
                    "createdfromcode": 4,
                    "members": [lead["leadid"]],
                }
            ]
        }
    )
    world.mailchimp.admin.seed(
        {
            "audiences": [{"id": OTHER_AUDIENCE, "name": "Events"}],
            "members": [{"list_id": OTHER_AUDIENCE, **member("lena@example.org")}],
        }
    )
    synced(world)
    assert columns(world, lead["leadid"], "leads") == (False, False, SUBSCRIBED)  # subscribed before pending
    person(world, "bounce", "lena@example.org", audience=OTHER_AUDIENCE, type="hard")
    synced(world)
    synced(world)  # a bounce in one audience is no opt-out from the other (rule 2, OPT_OUT_ROLLUP=all)
    assert statuses(world) == {"lena@example.org": "pending"}
    assert columns(world, lead["leadid"], "leads") == (False, False, PENDING)  # pending before cleaned


# ---- dynamic marketing lists --------------------------------------------------------------------
READERS = (
    '<fetch version="1.0" mapping="logical"><entity name="contact"><attribute name="contactid"/>'
    '<filter type="and"><condition attribute="jobtitle" operator="eq" value="Reader"/></filter>'
    "</entity></fetch>"
)


def test_a_dynamic_marketing_list_flows_from_dynamics_to_mailchimp(world):
    reader = contact("reader@example.org", jobtitle="Reader")
    refusing = contact("refusing@example.org", jobtitle="Reader", opted_out=True)
    writer = contact("writer@example.org", jobtitle="Writer")
    world.dataverse.admin.seed(
        {
            "contacts": [reader, refusing, writer],
            "lists": [
                {"listid": world.list_id, "listname": "Readers", "type": True, "createdfromcode": 2, "query": READERS}
            ],
        }
    )
    world.mailchimp.admin.seed({"audiences": [{"id": world.audience, "name": "Newsletter"}]})
    world.provision()
    synced(world)
    assert statuses(world) == {"reader@example.org": "subscribed"}
    assert "not-added-opted-out" in audited(world)
    edit(world, writer["contactid"], jobtitle="Reader")  # joins the list by its query
    edit(world, reader["contactid"], donotbulkemail=True)
    synced(world)
    assert statuses(world) == {"reader@example.org": "unsubscribed", "writer@example.org": "subscribed"}
    assert columns(world, writer["contactid"])[2] == SUBSCRIBED

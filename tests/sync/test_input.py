"""Bad input on either side: each gives a clear named error or an audited skip, and none stops a batch."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from shared.cli import main
from shared.rules.addresses import member_hash
from tests.sync_world import SyncWorld, contact, member, new_id

SUBSCRIBED, UNSUBSCRIBED = 100000000, 100000001


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def skips(world: SyncWorld) -> dict[str, str]:
    """Audited skips: record id (or member hash) -> reason."""
    found: dict[str, str] = {}
    for row in world.audit():
        for key, reason in json.loads(row["skipped"] or "[]"):
            found[key] = reason
    return found


def lead(email: str | None, **columns: Any) -> dict[str, Any]:
    row = {
        "leadid": new_id(),
        "firstname": "Lea",
        "lastname": "Lead",
        "emailaddress1": email,
        "donotbulkemail": False,
        "donotsendmm": False,
    }
    row.update(columns)
    return row


# ---- addresses ----------------------------------------------------------------------------------
def test_missing_invalid_upper_case_and_plus_addresses(world):
    missing, empty, blank = contact(None), contact(""), contact("   ")
    invalid = [
        contact("not-an-email"),
        contact("two@@example.org"),
        contact("dotless@localhost"),
        contact("spaced out@example.org"),
    ]
    upper = contact("Upper.Case@Example.ORG")
    plus = contact("reader+news@example.org")
    padded = contact("  padded@example.org ")
    mixed = contact("mixed@example.org")  # Mailchimp holds it in another case
    fake = contact("someone@site.test")  # well formed, but Mailchimp refuses reserved domains
    good = contact("good@example.org")
    records = [missing, empty, blank, *invalid, upper, plus, padded, mixed, fake, good]
    world.seed(records, [member("Mixed@Example.org", "unsubscribed")])
    code, out = world.sync()
    assert code == 0, out
    members = {email.lower(): m["status"] for email, m in world.members().items()}
    assert members == {
        "upper.case@example.org": "subscribed",
        "reader+news@example.org": "subscribed",
        "padded@example.org": "subscribed",
        "mixed@example.org": "unsubscribed",
        "good@example.org": "subscribed",
    }
    found = skips(world)
    assert {found.get(r["contactid"]) for r in (missing, empty, blank)} == {"missing-email"}
    assert [found.get(r["contactid"]) for r in invalid] == ["invalid-email"] * 4
    assert found.get(member_hash("someone@site.test")) == "invalid-address"  # Mailchimp's refusal, audited
    rows = world.records()
    assert rows[mixed["contactid"]]["donotbulkemail"] is True  # one member despite the case
    for record in (upper, plus, padded, good):
        assert rows[record["contactid"]].get("cbr_subscriberstatus") == SUBSCRIBED
        assert rows[record["contactid"]]["emailaddress1"] == record["emailaddress1"]  # the address is left alone
    for record in (missing, empty, blank, *invalid, fake):
        assert rows[record["contactid"]].get("cbr_subscriberstatus") is None
    assert "skip" in out  # the summary counts the skips
    code, out = world.sync()  # a second run neither fails nor writes again for them
    assert code == 0, out
    assert len(world.members()) == 5


def test_an_upper_case_record_matches_its_lower_case_member(world):
    record = contact("Shouting@EXAMPLE.org")
    world.seed([record], [member("shouting@example.org")])
    assert world.sync()[0] == 0
    world.mailchimp.admin.call(
        "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": "shouting@example.org"}
    )
    assert world.sync()[0] == 0
    assert list(world.members()) == ["shouting@example.org"]
    assert world.records()[record["contactid"]]["donotbulkemail"] is True


def test_a_forgotten_address_is_an_audited_refusal(world):
    forgotten, good = contact("forgotten@example.org"), contact("good@example.org")
    world.seed([forgotten, good])
    world.mailchimp.admin.seed({"forgotten": [{"list_id": world.audience, "email_address": "forgotten@example.org"}]})
    code, out = world.sync()
    assert code == 0, out
    assert set(world.members()) == {"good@example.org"}
    assert skips(world).get(member_hash("forgotten@example.org")) == "forgotten-email"


# ---- record states ------------------------------------------------------------------------------
def test_inactive_contacts_are_skipped_and_never_added(world):
    inactive = contact("inactive@example.org", statecode=1, statuscode=2)
    active = contact("active@example.org")
    world.seed([inactive, active])
    code, out = world.sync()
    assert code == 0, out
    assert set(world.members()) == {"active@example.org"}
    assert skips(world).get(inactive["contactid"]) == "inactive"


def test_qualified_leads_are_read_only_skips_and_the_batch_goes_on(world):
    open_lead, to_qualify = lead("open@example.org"), lead("qualified@example.org")
    already = lead("already@example.org", statecode=1, statuscode=3)
    world.seed(
        [open_lead, to_qualify, already], [member("open@example.org"), member("qualified@example.org")], list_type=4
    )
    code, out = world.sync()
    assert code == 0, out
    assert "already@example.org" not in world.members()
    world.dataverse.admin.call("POST", "qualify-lead", {"id": to_qualify["leadid"]})
    for email in ("open@example.org", "qualified@example.org"):
        world.mailchimp.admin.call("POST", "people/unsubscribe", {"list_id": world.audience, "email_address": email})
    code, out = world.sync()
    assert code == 0, out
    leads = world.records("leads")
    assert leads[open_lead["leadid"]]["donotbulkemail"] is True
    assert leads[to_qualify["leadid"]]["donotbulkemail"] is False  # read-only: not written, not failed
    assert skips(world).get(already["leadid"]) == "read-only-lead"
    assert "read-only-lead" in out  # counted as skipped


def test_a_lead_qualified_after_it_was_synced_is_an_audited_skip(world):
    to_qualify = lead("qualified@example.org")
    world.seed([to_qualify], [member("qualified@example.org")], list_type=4)
    assert world.sync()[0] == 0
    world.dataverse.admin.call("POST", "qualify-lead", {"id": to_qualify["leadid"]})
    world.mailchimp.admin.call(
        "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": "qualified@example.org"}
    )
    code, out = world.sync()
    assert code == 0, out
    assert world.records("leads")[to_qualify["leadid"]]["donotbulkemail"] is False
    assert skips(world).get(to_qualify["leadid"]) == "read-only-lead"


# ---- settings and links -------------------------------------------------------------------------
MALFORMED_LINKS = {
    "not JSON": "[{",
    "an object": '{"name": "a", "marketingListId": "00000000-0000-0000-0000-000000000001", "audienceId": "x"}',
    "an empty array": "[]",
    "no list id": '[{"name": "a", "audienceId": "a1b2c3d4e5"}]',
    "a bad name": '[{"name": "Bad Name!", "marketingListId": "00000000-0000-0000-0000-000000000001", '
    '"audienceId": "a1b2c3d4e5"}]',
    "twice one name": '[{"name": "a", "marketingListId": "00000000-0000-0000-0000-000000000001", '
    '"audienceId": "a1b2c3d4e5"}, {"name": "a", "marketingListId": '
    '"00000000-0000-0000-0000-000000000002", "audienceId": "a1b2c3d4e5"}]',
}


def write_settings(path: Any, values: dict[str, str]) -> str:
    target = path / "local.settings.json"
    target.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return str(target)


@pytest.mark.parametrize("case", sorted(MALFORMED_LINKS))
def test_malformed_sync_links_exit_2_naming_the_setting(world, tmp_path, monkeypatch, case):
    monkeypatch.delenv("SYNC_LINKS", raising=False)
    settings = write_settings(tmp_path, {**world.env(), "SYNC_LINKS": MALFORMED_LINKS[case]})
    out = io.StringIO()
    assert main(["--settings", settings, "sync"], out=out) == 2
    lines = out.getvalue().splitlines()
    assert any("SYNC_LINKS" in line for line in lines), lines
    assert world.mailchimp.admin.calls() == {} and world.dataverse.admin.calls() == {}  # failed before any call


def test_well_formed_settings_file_syncs_through_the_command_line(world, tmp_path, monkeypatch):
    monkeypatch.delenv("SYNC_LINKS", raising=False)
    world.seed([contact("cli@example.org")])
    out = io.StringIO()
    assert main(["--settings", write_settings(tmp_path, world.env()), "sync"], out=out) == 0, out.getvalue()
    assert world.link in out.getvalue()
    assert set(world.members()) == {"cli@example.org"}


def test_a_missing_marketing_list_or_audience_fails_that_link_and_the_others_go_on(world):
    no_list, no_audience = f"{world.link}-nolist", f"{world.link}-noaud"
    missing_list = new_id()
    world.extra_links += [
        {"name": no_list, "marketingListId": missing_list, "audienceId": world.audience},
        {"name": no_audience, "marketingListId": world.list_id, "audienceId": "ffffffffff"},
    ]
    world.seed([contact("fine@example.org")])
    code, out = world.sync()
    assert code == 1, out
    lines = {line.split(":", 1)[0]: line for line in out.splitlines()}
    assert "failed" in lines[no_list] and f"link {no_list}: marketing list {missing_list} does not exist" in out
    assert "failed" in lines[no_audience]
    assert f"link {no_audience}: Mailchimp audience ffffffffff does not exist" in out
    assert "completed" in lines[world.link]
    assert set(world.members()) == {"fine@example.org"}

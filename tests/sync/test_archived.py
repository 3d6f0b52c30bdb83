"""A member the audience holds archived is never brought back by a record that meets it: archiving hides why
(it may follow an unsubscribe), and a batch subscribe would revive it. Under both compliance modes, with the
member unsubscribed by an admin (which Mailchimp itself would let the API subscribe again) or by the person."""

from __future__ import annotations

import pytest

from shared.rules.addresses import member_hash
from tests.sync.test_rules import audited, columns, mailchimp_api, statuses, synced
from tests.sync_world import SyncWorld, contact, member

ARCHIVED_CODE = 100000005


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite, mailchimp_compliance):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def archive_after_unsubscribe(world: SyncWorld, email: str, by: str) -> None:
    if by == "person":
        world.mailchimp.admin.call("POST", "people/unsubscribe", {"list_id": world.audience, "email_address": email})
    else:
        response = mailchimp_api(
            world, "PATCH", f"lists/{world.audience}/members/{member_hash(email)}", {"status": "unsubscribed"}
        )
        assert response.status_code == 200, response.text
    assert mailchimp_api(world, "DELETE", f"lists/{world.audience}/members/{member_hash(email)}").status_code == 204


def join_the_list(world: SyncWorld, listed: list[dict], new: list[dict]) -> None:
    """New contacts, added to the link's static marketing list beside those already in it."""
    world.dataverse.admin.seed(
        {
            "contacts": new,
            "lists": [
                {
                    "listid": world.list_id,
                    "listname": f"List {world.link}",
                    "type": False,
                    "createdfromcode": 2,
                    "members": [c["contactid"] for c in [*listed, *new]],
                }
            ],
        }
    )


@pytest.mark.parametrize("by", ["admin", "person"])
def test_a_record_met_by_a_full_pass_does_not_revive_an_archived_member(world, by):
    staying, gone = contact("staying@example.org"), contact("gone@example.org")
    world.seed([staying, gone], [member("staying@example.org"), member("gone@example.org")])
    archive_after_unsubscribe(world, "gone@example.org", by)

    synced(world)  # the first run: a full pass

    assert statuses(world)["gone@example.org"] == "archived"
    assert columns(world, gone["contactid"]) == (False, False, ARCHIVED_CODE)
    assert "member-archived-not-revived" in audited(world)


@pytest.mark.parametrize("by", ["admin", "person"])
@pytest.mark.parametrize("count", [1, 3])
def test_new_records_between_full_passes_do_not_revive_archived_members(world, by, count):
    staying = contact("staying@example.org")
    emails = [f"gone{n}@example.org" for n in range(count)]
    world.seed([staying], [member("staying@example.org"), *(member(e) for e in emails)])
    synced(world)
    for email in emails:
        archive_after_unsubscribe(world, email, by)
    synced(world)
    newcomer = contact("newcomer@example.org")  # a new address beside them: added as ever
    joined = [contact(e) for e in emails]
    join_the_list(world, [staying], [newcomer, *joined])

    synced(world)  # not a full pass: the unit asks Mailchimp about the new addresses

    assert statuses(world)["newcomer@example.org"] == "subscribed"
    assert all(statuses(world)[e] == "archived" for e in emails)
    assert all(columns(world, c["contactid"])[2] == ARCHIVED_CODE for c in joined)
    assert audited(world).count("member-archived-not-revived") == count


def test_many_archived_members_are_not_read_whole_for_a_few_new_addresses(world):
    # the read of the archived members stops once it has cost as many calls as asking for each new address would
    staying = contact("staying@example.org")
    emails = ["gone0@example.org", "gone1@example.org"]
    others = [member(f"archived{n}@example.org", "archived") for n in range(2100)]  # three pages, the two on the last
    world.seed([staying], [member("staying@example.org"), *(member(e) for e in emails), *others])
    synced(world)
    for email in emails:
        archive_after_unsubscribe(world, email, "admin")
    synced(world)
    joined = [contact(e) for e in emails]
    join_the_list(world, [staying], joined)
    world.mailchimp.admin.clear_requests()

    synced(world)

    assert all(statuses(world)[e] == "archived" for e in emails)
    assert all(columns(world, c["contactid"])[2] == ARCHIVED_CODE for c in joined)
    reads = [r for r in world.mailchimp.admin.requests() if r["method"] == "GET"]
    pages = [r for r in reads if r["route"].endswith("/members") and r["query"].get("status") == ["archived"]]
    asked = [r for r in reads if r["path"].rsplit("/", 1)[-1] in {member_hash(e) for e in emails}]
    assert (len(pages), len(asked)) == (2, 2)

"""The Mailchimp emulator through a second, independent client (mailchimp3 3.0.21), each answer compared with
the emulator's admin state: paging, since_last_changed, upserts, batch subscribe, tags, interests and reports.

The product's adapter and the official client share assumptions; a client written by other people, with its own
paging loop and URL building, catches an emulator that only answers what our own code asks.
"""

from __future__ import annotations

from typing import Any

import pytest
from mailchimp3.mailchimpclient import MailChimpError

from tests.emulators.mailchimp_support import LIST, independent_client, md5

STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")


@pytest.fixture
def client(mailchimp_emulator: Any) -> Any:
    mailchimp_emulator.admin.seed(
        {
            "audiences": [{"id": LIST, "name": "Newsletter"}],
            "interest_categories": [
                {
                    "list_id": LIST,
                    "id": "cat1",
                    "title": "Topics",
                    "type": "checkboxes",
                    "interests": [{"id": "i-news", "name": "News"}, {"id": "i-events", "name": "Events"}],
                }
            ],
        }
    )
    return independent_client(mailchimp_emulator)


def state(emulator: Any) -> dict[str, Any]:
    return emulator.admin.state(list_id=LIST)["audiences"][LIST]["members"]


def seed_many(emulator: Any, n: int) -> None:
    emulator.admin.seed(
        {
            "members": [
                {
                    "list_id": LIST,
                    "email_address": f"p{i}@example.org",
                    "status": STATUSES[i % len(STATUSES)],
                    "last_changed": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00+00:00",
                }
                for i in range(n)
            ]
        }
    )


def test_paging_reads_every_member_once(client: Any, mailchimp_emulator: Any) -> None:
    seed_many(mailchimp_emulator, 1_234)
    admin = state(mailchimp_emulator)
    page = client.lists.members.all(LIST, get_all=True, count=500, fields="members.id,members.status")
    ids = [m["id"] for m in page["members"]]
    listed = {key for key, m in admin.items() if m["status"] != "archived"}  # archived only when asked for
    assert len(ids) == len(set(ids)) == page["total_items"] == len(listed)
    assert set(ids) == listed
    assert {m["id"]: m["status"] for m in page["members"]} == {k: admin[k]["status"] for k in listed}
    archived = client.lists.members.all(LIST, get_all=True, count=100, status="archived", fields="members.id")
    assert {m["id"] for m in archived["members"]} == {k for k, m in admin.items() if m["status"] == "archived"}


def test_since_last_changed_returns_exactly_the_later_changes(client: Any, mailchimp_emulator: Any) -> None:
    seed_many(mailchimp_emulator, 400)
    bound = "2026-01-20T00:00:00+00:00"
    page = client.lists.members.all(
        LIST,
        get_all=True,
        count=100,
        since_last_changed=bound,
        sort_field="last_changed",
        sort_dir="DESC",
        fields="members.id,members.last_changed",
    )
    changed = [m["last_changed"] for m in page["members"]]
    assert changed == sorted(changed, reverse=True)
    expected = {
        k for k, m in state(mailchimp_emulator).items() if m["status"] != "archived" and m["last_changed"] > bound
    }
    assert {m["id"] for m in page["members"]} == expected and expected


def test_upserts_create_then_change_only_what_changed(client: Any, mailchimp_emulator: Any) -> None:
    email = "Upsert.Me@Example.org"
    created = client.lists.members.create_or_update(
        LIST, md5(email), {"email_address": email, "status_if_new": "pending", "merge_fields": {"FNAME": "Uma"}}
    )
    assert (created["id"], created["status"]) == (md5(email), "pending")
    mailchimp_emulator.admin.call("POST", "clock", {"advanceSeconds": 120})
    same = client.lists.members.create_or_update(
        LIST, md5(email), {"email_address": email, "status_if_new": "subscribed", "merge_fields": {"FNAME": "Uma"}}
    )
    assert same["status"] == "pending"  # status_if_new does not touch an existing member
    assert same["last_changed"] == created["last_changed"]  # nothing changed, so last_changed stays
    renamed = client.lists.members.update(LIST, md5(email), {"merge_fields": {"FNAME": "Una"}})
    assert renamed["last_changed"] > created["last_changed"]
    held = state(mailchimp_emulator)[md5(email)]
    assert (held["status"], held["merge_fields"]["FNAME"], held["last_changed"]) == (
        "pending",
        "Una",
        renamed["last_changed"],
    )
    with pytest.raises(MailChimpError) as caught:
        client.lists.members.create(LIST, {"email_address": email, "status": "subscribed"})
    assert caught.value.args[0]["title"] == "Member Exists"


def test_batch_subscribe_matches_the_admin_state(client: Any, mailchimp_emulator: Any) -> None:
    mailchimp_emulator.admin.seed(
        {
            "members": [
                {"list_id": LIST, "email_address": "left@example.org", "status": "unsubscribed"},
                {
                    "list_id": LIST,
                    "email_address": "dropped@example.org",
                    "status": "unsubscribed",
                    "unsubscribed_by": "api",
                },
                {"list_id": LIST, "email_address": "reader@example.org", "status": "subscribed"},
            ]
        }
    )
    result = client.lists.update_members(
        LIST,
        {
            "update_existing": True,
            "members": [
                {"email_address": "left@example.org", "status": "subscribed"},
                {"email_address": "dropped@example.org", "status": "subscribed"},
                {"email_address": "reader@example.org", "status": "unsubscribed", "tags": ["moved"]},
                {"email_address": "new@example.org", "status_if_new": "subscribed", "interests": {"i-news": True}},
            ],
        },
    )
    assert (result["total_created"], result["total_updated"], result["error_count"]) == (1, 2, 1)
    assert result["errors"][0]["email_address"] == "left@example.org"
    held = state(mailchimp_emulator)
    assert {held[md5(e)]["status"] for e in ("dropped@example.org", "new@example.org")} == {"subscribed"}
    assert held[md5("left@example.org")]["status"] == "unsubscribed"
    assert held[md5("reader@example.org")]["tags"] == ["moved"]
    assert held[md5("new@example.org")]["interests"] == ["i-news"]
    for member in result["new_members"] + result["updated_members"]:
        assert member["status"] == held[member["id"]]["status"]
        assert member["last_changed"] == held[member["id"]]["last_changed"]


def test_tags_member_tags_and_segment_members(client: Any, mailchimp_emulator: Any) -> None:
    mailchimp_emulator.admin.seed(
        {"members": [{"list_id": LIST, "email_address": f"t{i}@example.org", "status": "subscribed"} for i in range(5)]}
    )
    assert (
        client.lists.members.tags.update(LIST, md5("t0@example.org"), {"tags": [{"name": "donor", "status": "active"}]})
        is None
    )  # 204 No Content
    assert [t["name"] for t in client.lists.members.tags.all(LIST, md5("t0@example.org"))["tags"]] == ["donor"]
    donor = client.lists.segments.all(LIST, get_all=True)["segments"][0]
    assert (donor["name"], donor["type"], donor["member_count"]) == ("donor", "static", 1)
    bulk = client.lists.segments.update_members(
        LIST,
        donor["id"],
        {"members_to_add": ["t1@example.org", "t2@example.org"], "members_to_remove": ["t0@example.org"]},
    )
    assert (bulk["total_added"], bulk["total_removed"]) == (2, 1)
    members = client.lists.segments.members.all(LIST, donor["id"], get_all=True)
    tagged = {k for k, m in state(mailchimp_emulator).items() if "donor" in m["tags"]}
    assert {m["id"] for m in members["members"]} == tagged == {md5("t1@example.org"), md5("t2@example.org")}


def test_interests_read_and_written(client: Any, mailchimp_emulator: Any) -> None:
    mailchimp_emulator.admin.seed({"members": [{"list_id": LIST, "email_address": "i@example.org"}]})
    categories = client.lists.interest_categories.all(LIST, get_all=True)["categories"]
    assert [(c["id"], c["title"]) for c in categories] == [("cat1", "Topics")]
    interests = client.lists.interest_categories.interests.all(LIST, "cat1", get_all=True)["interests"]
    assert [(i["id"], i["name"]) for i in interests] == [("i-news", "News"), ("i-events", "Events")]
    changed = client.lists.members.update(LIST, md5("i@example.org"), {"interests": {"i-events": True}})
    assert changed["interests"] == {"i-news": False, "i-events": True}
    assert state(mailchimp_emulator)[md5("i@example.org")]["interests"] == ["i-events"]
    matched = client.lists.members.all(
        LIST, interest_category_id="cat1", interest_ids="i-events", interest_match="any", fields="members.id"
    )
    assert [m["id"] for m in matched["members"]] == [md5("i@example.org")]
    assert client.lists.interest_categories.interests.get(LIST, "cat1", "i-events")["subscriber_count"] == "1"


def test_reports_and_their_activity(client: Any, mailchimp_emulator: Any) -> None:
    admin = mailchimp_emulator.admin
    admin.seed(
        {"members": [{"list_id": LIST, "email_address": f"r{i}@example.org", "status": "subscribed"} for i in range(4)]}
    )
    sent = admin.call("POST", "campaigns", {"list_id": LIST, "title": "Spring", "send": True})
    admin.call(
        "POST",
        f"campaigns/{sent['id']}/activity",
        {
            "events": [
                {"email_address": "r0@example.org", "action": "open"},
                {"email_address": "r0@example.org", "action": "click", "url": "https://example.org/a"},
                {"email_address": "r1@example.org", "action": "bounce", "type": "hard"},
                {"email_address": "r2@example.org", "action": "unsubscribe"},
            ]
        },
    )
    reports = client.reports.all(get_all=True)
    assert [r["id"] for r in reports["reports"]] == [sent["id"]]
    report = client.reports.get(sent["id"])
    assert report == reports["reports"][0]
    assert (report["emails_sent"], report["unsubscribed"], report["bounces"]["hard_bounces"]) == (4, 1, 1)
    assert (report["opens"]["opens_total"], report["clicks"]["clicks_total"]) == (1, 1)
    activity = client.reports.email_activity.all(sent["id"], get_all=True)
    actions = {e["email_address"]: sorted(a["action"] for a in e["activity"]) for e in activity["emails"]}
    assert actions["r0@example.org"] == ["click", "open"] and actions["r1@example.org"] == ["bounce"]
    unsubscribes = client.reports.unsubscribes.all(sent["id"], get_all=True)
    assert [u["email_address"] for u in unsubscribes["unsubscribes"]] == ["r2@example.org"]
    held = state(mailchimp_emulator)
    assert (held[md5("r1@example.org")]["status"], held[md5("r2@example.org")]["status"]) == ("cleaned", "unsubscribed")
    assert held[md5("r2@example.org")]["unsubscribed_by"] == "person"
    with pytest.raises(MailChimpError) as caught:
        client.reports.get("nope")
    assert caught.value.args[0]["status"] == 404

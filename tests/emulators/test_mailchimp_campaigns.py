"""Campaigns, reports and the people's own actions (admin routes) in the Mailchimp emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mailchimp_marketing.api_client import ApiClientError

from tests.emulators.mailchimp_support import LIST, md5, official_client


@pytest.fixture
def mc(mailchimp_emulator: Any) -> Any:
    mailchimp_emulator.admin.seed(
        {
            "audiences": [{"id": LIST, "name": "Newsletter"}, {"id": "other", "name": "Other", "double_optin": True}],
            "members": [
                {
                    "list_id": LIST,
                    "email_address": f"r{i}@example.org",
                    "status": "subscribed",
                    "last_changed": "2024-03-01T00:00:00+00:00",
                }
                for i in range(4)
            ]
            + [{"list_id": LIST, "email_address": "quiet@example.org", "status": "unsubscribed"}],
        }
    )
    return official_client(mailchimp_emulator)


def admin(emulator: Any, method: str, path: str, body: Any = None) -> Any:
    return emulator.admin.call(method, path, body)


def sent_campaign(emulator: Any, campaign_id: str, at: str) -> None:
    admin(
        emulator,
        "POST",
        "campaigns",
        {"list_id": LIST, "id": campaign_id, "title": f"Issue {campaign_id}", "create_time": at},
    )
    admin(emulator, "POST", f"campaigns/{campaign_id}/send", {"at": at})


def test_campaigns_filter_by_status_list_and_send_time(mc: Any, mailchimp_emulator: Any) -> None:
    sent_campaign(mailchimp_emulator, "c-may", "2024-05-01T09:00:00+00:00")
    sent_campaign(mailchimp_emulator, "c-june", "2024-06-01T09:00:00+00:00")
    admin(mailchimp_emulator, "POST", "campaigns", {"list_id": LIST, "id": "draft"})
    sent = mc.campaigns.list(status="sent", list_id=LIST, sort_field="send_time", sort_dir="DESC")
    assert [c["id"] for c in sent["campaigns"]] == ["c-june", "c-may"]
    assert sent["total_items"] == 2
    assert sent["campaigns"][0]["recipients"]["recipient_count"] == 4
    later = mc.campaigns.list(since_send_time="2024-05-01T09:00:00+00:00")
    assert [c["id"] for c in later["campaigns"]] == ["c-june"]  # since is exclusive
    assert mc.campaigns.list(count=1, offset=0, status="save")["campaigns"][0]["id"] == "draft"
    assert mc.campaigns.list(list_id="other")["total_items"] == 0


def test_sent_to_lists_the_subscribed_members_at_send_time(mc: Any, mailchimp_emulator: Any) -> None:
    sent_campaign(mailchimp_emulator, "c1", "2024-05-01T09:00:00+00:00")
    recipients = mc.reports.get_campaign_recipients("c1", count=100)
    assert recipients["total_items"] == 4
    assert {r["email_address"] for r in recipients["sent_to"]} == {f"r{i}@example.org" for i in range(4)}
    assert recipients["sent_to"][0]["status"] == "sent"
    assert recipients["sent_to"][0]["email_id"] == md5(recipients["sent_to"][0]["email_address"])


def test_activity_updates_reports_and_members(mc: Any, mailchimp_emulator: Any) -> None:
    sent_campaign(mailchimp_emulator, "c1", "2024-05-01T09:00:00+00:00")
    admin(
        mailchimp_emulator,
        "POST",
        "campaigns/c1/activity",
        {
            "events": [
                {"email_address": "r0@example.org", "action": "open", "at": "2024-05-01T10:00:00+00:00"},
                {
                    "email_address": "r0@example.org",
                    "action": "click",
                    "url": "https://example.org/a",
                    "at": "2024-05-01T10:01:00+00:00",
                },
                {
                    "email_address": "r1@example.org",
                    "action": "bounce",
                    "type": "hard",
                    "at": "2024-05-01T09:05:00+00:00",
                },
                {
                    "email_address": "r2@example.org",
                    "action": "bounce",
                    "type": "soft",
                    "at": "2024-05-01T09:06:00+00:00",
                },
                {
                    "email_address": "r3@example.org",
                    "action": "unsubscribe",
                    "reason": "Too many emails",
                    "at": "2024-05-02T08:00:00+00:00",
                },
            ]
        },
    )
    report = mc.reports.get_campaign_report("c1")
    assert report["emails_sent"] == 4 and report["unsubscribed"] == 1
    assert report["bounces"] == {"hard_bounces": 1, "soft_bounces": 1, "syntax_errors": 0}
    assert report["opens"]["unique_opens"] == 1 and report["clicks"]["clicks_total"] == 1

    cleaned = mc.lists.get_list_member(LIST, md5("r1@example.org"))
    assert (cleaned["status"], cleaned["last_changed"]) == ("cleaned", "2024-05-01T09:05:00+00:00")
    assert mc.lists.get_list_member(LIST, md5("r2@example.org"))["status"] == "subscribed"
    left = mc.lists.get_list_member(LIST, md5("r3@example.org"))
    assert (left["status"], left["unsubscribe_reason"], left["last_changed"]) == (
        "unsubscribed",
        "Too many emails",
        "2024-05-02T08:00:00+00:00",
    )

    unsubscribes = mc.reports.get_unsubscribed_list_for_campaign("c1")
    assert unsubscribes["unsubscribes"][0]["email_address"] == "r3@example.org"
    assert unsubscribes["unsubscribes"][0]["reason"] == "Too many emails"
    assert unsubscribes["unsubscribes"][0]["timestamp"] == "2024-05-02T08:00:00+00:00"

    activity = mc.reports.get_email_activity_for_campaign("c1", count=100)
    by_email = {e["email_address"]: e["activity"] for e in activity["emails"]}
    assert [a["action"] for a in by_email["r0@example.org"]] == ["open", "click"]
    assert by_email["r0@example.org"][1]["url"] == "https://example.org/a"
    assert by_email["r1@example.org"] == [
        {"action": "bounce", "type": "hard", "timestamp": "2024-05-01T09:05:00+00:00"}
    ]
    later = mc.reports.get_email_activity_for_campaign("c1", since="2024-05-01T10:00:00+00:00")
    assert [(e["email_address"], [a["action"] for a in e["activity"]]) for e in later["emails"]] == [
        ("r0@example.org", ["click"])
    ]
    sent_to = {r["email_address"]: r for r in mc.reports.get_campaign_recipients("c1")["sent_to"]}
    assert sent_to["r1@example.org"]["status"] == "hard" and sent_to["r0@example.org"]["open_count"] == 1


def test_unknown_campaign_report_is_404(mc: Any) -> None:
    with pytest.raises(ApiClientError) as caught:
        mc.reports.get_campaign_report("missing")
    assert caught.value.status_code == 404
    assert json.loads(caught.value.text)["title"] == "Resource Not Found"


def test_people_unsubscribe_and_resubscribe_through_a_form(mc: Any, mailchimp_emulator: Any) -> None:
    moved = admin(
        mailchimp_emulator,
        "POST",
        "people/unsubscribe",
        {
            "list_id": LIST,
            "email_address": "r0@example.org",
            "reason": "No longer interested",
            "at": "2024-04-01T12:00:00+00:00",
        },
    )
    assert moved["status"] == "unsubscribed"
    member = mc.lists.get_list_member(LIST, md5("r0@example.org"))
    assert member["unsubscribe_reason"] == "No longer interested"
    assert member["last_changed"] == "2024-04-01T12:00:00+00:00"
    with pytest.raises(ApiClientError) as caught:
        mc.lists.update_list_member(LIST, md5("r0@example.org"), {"status": "subscribed"})
    assert json.loads(caught.value.text)["title"] == "Member In Compliance State"
    admin(
        mailchimp_emulator,
        "POST",
        "people/resubscribe",
        {"list_id": LIST, "email_address": "r0@example.org", "at": "2024-04-02T12:00:00+00:00"},
    )
    back = mc.lists.get_list_member(LIST, md5("r0@example.org"))
    assert (back["status"], back["last_changed"]) == ("subscribed", "2024-04-02T12:00:00+00:00")


def test_double_optin_signup_needs_the_click(mc: Any, mailchimp_emulator: Any) -> None:
    admin(mailchimp_emulator, "POST", "people/resubscribe", {"list_id": "other", "email_address": "d@example.org"})
    assert mc.lists.get_list_member("other", md5("d@example.org"))["status"] == "pending"
    assert len(mailchimp_emulator.admin.state(list_id="other")["confirmations"]) == 1
    admin(
        mailchimp_emulator,
        "POST",
        "people/confirm",
        {"list_id": "other", "email_address": "d@example.org", "at": "2030-01-01T00:00:00+00:00"},
    )
    confirmed = mc.lists.get_list_member("other", md5("d@example.org"))
    assert (confirmed["status"], confirmed["timestamp_opt"]) == ("subscribed", "2030-01-01T00:00:00+00:00")
    with pytest.raises(RuntimeError):  # only a pending member can confirm
        admin(mailchimp_emulator, "POST", "people/confirm", {"list_id": "other", "email_address": "d@example.org"})


def test_people_bounce_change_email_and_preferences(mc: Any, mailchimp_emulator: Any) -> None:
    seeded = mailchimp_emulator.admin.seed(
        {
            "interest_categories": [
                {"list_id": LIST, "title": "Topics", "type": "checkboxes", "interests": [{"name": "Events"}]}
            ]
        }
    )
    events = seeded["interest_categories"][0]["interests"][0]["id"]
    admin(
        mailchimp_emulator,
        "POST",
        "people/bounce",
        {"list_id": LIST, "email_address": "r1@example.org", "type": "hard"},
    )
    assert mc.lists.get_list_member(LIST, md5("r1@example.org"))["status"] == "cleaned"
    before = mc.lists.get_list_member(LIST, md5("r2@example.org"))
    admin(
        mailchimp_emulator,
        "POST",
        "people/change-email",
        {"list_id": LIST, "email_address": "r2@example.org", "new_email_address": "r2.new@example.org"},
    )
    after = mc.lists.get_list_member(LIST, md5("r2.new@example.org"))
    assert after["contact_id"] == before["contact_id"]
    assert after["last_changed"] >= before["last_changed"]
    admin(
        mailchimp_emulator,
        "POST",
        "people/preferences",
        {
            "list_id": LIST,
            "email_address": "r3@example.org",
            "interests": {events: True},
            "at": "2031-01-01T00:00:00+00:00",
        },
    )
    chosen = mc.lists.get_list_member(LIST, md5("r3@example.org"))
    assert chosen["interests"] == {events: True}
    assert chosen["last_changed"] == "2031-01-01T00:00:00+00:00"

"""Fields and endpoints of the real API that clients read, driven through the official 3.0.80 client:
marketing permissions and SMS fields on members, ``unsubscribed_since``, segment members, the reports list,
tag search, and segment ids unique across the account."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mailchimp_marketing.api_client import ApiClientError

from tests.emulators.mailchimp_support import LIST, md5, official_client

OTHER = "f0e1d2c3b4"
PERMISSIONS = [{"id": "p-email", "text": "Email"}, {"id": "p-post", "text": "Direct Mail"}]


@pytest.fixture
def mc(mailchimp_emulator: Any) -> Any:
    mailchimp_emulator.admin.seed(
        {
            "audiences": [
                {"id": LIST, "name": "Newsletter", "marketing_permissions": PERMISSIONS},
                {"id": OTHER, "name": "Events"},
            ]
        }
    )
    return official_client(mailchimp_emulator)


def seed(emulator: Any, *members: dict[str, Any]) -> None:
    emulator.admin.seed({"members": [{"list_id": LIST, **m} for m in members]})


# ---- members: marketing permissions and SMS fields -----------------------------------------------


def test_members_carry_marketing_permissions_that_the_api_writes(mc: Any, mailchimp_emulator: Any) -> None:
    assert mc.lists.get_list(LIST)["marketing_permissions"] is True
    assert mc.lists.get_list(OTHER)["marketing_permissions"] is False
    created = mc.lists.add_list_member(
        LIST,
        {
            "email_address": "gdpr@example.org",
            "status": "subscribed",
            "marketing_permissions": [{"marketing_permission_id": "p-email", "enabled": True}],
        },
    )
    assert created["marketing_permissions"] == [
        {"marketing_permission_id": "p-email", "text": "Email", "enabled": True},
        {"marketing_permission_id": "p-post", "text": "Direct Mail", "enabled": False},
    ]
    before = created["last_changed"]
    mailchimp_emulator.admin.call("POST", "clock", {"advanceSeconds": 60})
    changed = mc.lists.update_list_member(
        LIST,
        md5("gdpr@example.org"),
        {"marketing_permissions": [{"marketing_permission_id": "p-email", "enabled": False}]},
    )
    assert [p["enabled"] for p in changed["marketing_permissions"]] == [False, False]
    assert changed["last_changed"] > before  # a consent change is a change of the member's info
    page = mc.lists.get_list_members_info(LIST, fields=["members.marketing_permissions"])
    assert page["members"][0]["marketing_permissions"][0]["marketing_permission_id"] == "p-email"
    with pytest.raises(ApiClientError) as caught:
        mc.lists.update_list_member(
            LIST,
            md5("gdpr@example.org"),
            {"marketing_permissions": [{"marketing_permission_id": "x", "enabled": True}]},
        )
    assert (caught.value.status_code, json.loads(caught.value.text)["title"]) == (400, "Invalid Resource")
    state = mailchimp_emulator.admin.state(list_id=LIST)["audiences"][LIST]
    assert state["members"][md5("gdpr@example.org")]["marketing_permissions"] == {"p-email": False}


def test_members_carry_the_sms_fields(mc: Any, mailchimp_emulator: Any) -> None:
    seed(
        mailchimp_emulator,
        {"email_address": "texts@example.org", "sms_phone_number": "+15555550123"},
        {"email_address": "mail-only@example.org"},
    )
    texts = mc.lists.get_list_member(LIST, md5("texts@example.org"))
    assert (texts["sms_phone_number"], texts["sms_subscription_status"]) == ("+15555550123", "subscribed")
    assert texts["sms_subscription_last_updated"]
    page = mc.lists.get_list_members_info(
        LIST, fields=["members.email_address", "members.sms_subscription_status", "members.sms_phone_number"]
    )
    assert {m["email_address"]: m["sms_subscription_status"] for m in page["members"]} == {
        "texts@example.org": "subscribed",
        "mail-only@example.org": "",
    }
    assert mc.lists.get_list_member(LIST, md5("mail-only@example.org"))["marketing_permissions"][1] == {
        "marketing_permission_id": "p-post",
        "text": "Direct Mail",
        "enabled": False,
    }


def test_unsubscribed_since_filters_on_the_unsubscribe_time_not_last_changed(mc: Any, mailchimp_emulator: Any) -> None:
    seed(
        mailchimp_emulator,
        {"email_address": "early@example.org", "last_changed": "2026-01-01T00:00:00+00:00"},
        {"email_address": "late@example.org", "last_changed": "2026-01-01T00:00:00+00:00"},
    )
    unsubscribe = {"list_id": LIST, "reason": "Too many emails"}
    mailchimp_emulator.admin.call(
        "POST",
        "people/unsubscribe",
        {**unsubscribe, "email_address": "early@example.org", "at": "2026-02-01T00:00:00Z"},
    )
    mailchimp_emulator.admin.call(
        "POST", "people/unsubscribe", {**unsubscribe, "email_address": "late@example.org", "at": "2026-04-01T00:00:00Z"}
    )
    # a later profile change moves early's last_changed past the bound, but not its unsubscribe time
    mailchimp_emulator.admin.call(
        "POST",
        "people/preferences",
        {
            "list_id": LIST,
            "email_address": "early@example.org",
            "merge_fields": {"FNAME": "Ed"},
            "at": "2026-05-01T00:00:00Z",
        },
    )
    page = mc.lists.get_list_members_info(LIST, status="unsubscribed", unsubscribed_since="2026-03-01T00:00:00+00:00")
    assert [m["email_address"] for m in page["members"]] == ["late@example.org"]
    assert page["total_items"] == 1
    changed = mc.lists.get_list_members_info(
        LIST, status="unsubscribed", since_last_changed="2026-03-01T00:00:00+00:00"
    )
    assert changed["total_items"] == 2
    state = mailchimp_emulator.admin.state(list_id=LIST)["audiences"][LIST]["members"]
    assert state[md5("early@example.org")]["unsubscribed_at"] == "2026-02-01T00:00:00+00:00"


# ---- segment members, reports, tag search, segment ids -------------------------------------------


def test_segment_members_lists_a_tags_members_like_the_service(mc: Any, mailchimp_emulator: Any) -> None:
    seed(
        mailchimp_emulator,
        {"email_address": "in@example.org", "tags": ["donor"]},
        {"email_address": "waiting@example.org", "status": "pending", "tags": ["donor"]},
        {"email_address": "out@example.org", "status": "unsubscribed", "tags": ["donor"]},
        {"email_address": "gone@example.org", "status": "cleaned", "tags": ["donor"]},
        {"email_address": "receipts@example.org", "status": "transactional", "tags": ["donor"]},
        {"email_address": "untagged@example.org"},
    )
    donor = mc.lists.list_segments(LIST)["segments"][0]["id"]
    default = mc.lists.get_segment_members_list(LIST, donor)
    assert sorted(m["email_address"] for m in default["members"]) == ["in@example.org", "waiting@example.org"]
    assert default["total_items"] == 2
    everyone = mc.lists.get_segment_members_list(
        LIST, donor, include_cleaned=True, include_unsubscribed=True, include_transactional=True, count=2, offset=2
    )
    assert everyone["total_items"] == 5 and len(everyone["members"]) == 2
    addresses = mc.lists.get_segment_members_list(LIST, donor, fields=["members.email_address", "total_items"])
    assert set(addresses) == {"members", "total_items"}
    with pytest.raises(ApiClientError) as caught:
        mc.lists.get_segment_members_list(LIST, 999_999)
    assert caught.value.status_code == 404


def test_segment_ids_are_unique_across_the_account(mc: Any, mailchimp_emulator: Any) -> None:
    mailchimp_emulator.admin.seed(
        {
            "members": [
                {"list_id": LIST, "email_address": "a@example.org", "tags": ["vip"]},
                {"list_id": OTHER, "email_address": "a@example.org", "tags": ["vip"]},
            ]
        }
    )
    mc.lists.update_list_member_tags(OTHER, md5("a@example.org"), {"tags": [{"name": "speaker", "status": "active"}]})
    ours = [s["id"] for s in mc.lists.list_segments(LIST)["segments"]]
    theirs = [s["id"] for s in mc.lists.list_segments(OTHER)["segments"]]
    assert len(set(ours + theirs)) == 3
    with pytest.raises(ApiClientError) as caught:  # another audience's segment is not this one's
        mc.lists.get_segment(LIST, theirs[0])
    assert caught.value.status_code == 404


def test_tag_search_matches_tag_names_by_prefix(mc: Any, mailchimp_emulator: Any) -> None:
    seed(mailchimp_emulator, {"email_address": "a@example.org", "tags": ["donor", "Donation 2024", "volunteer"]})
    found = mc.lists.tag_search(LIST, name="don")
    assert sorted(t["name"] for t in found["tags"]) == ["Donation 2024", "donor"]
    assert found["total_items"] == 2
    assert all(set(t) == {"id", "name"} for t in found["tags"])
    assert mc.lists.tag_search(LIST)["total_items"] == 3
    assert mc.lists.tag_search(LIST, name="zzz")["tags"] == []


def test_reports_lists_the_sent_campaigns(mc: Any, mailchimp_emulator: Any) -> None:
    seed(mailchimp_emulator, {"email_address": "reader@example.org"})
    admin = mailchimp_emulator.admin
    first = admin.call("POST", "campaigns", {"list_id": LIST, "send": True, "send_time": "2026-03-01T10:00:00Z"})
    second = admin.call("POST", "campaigns", {"list_id": LIST, "send": True, "send_time": "2026-04-01T10:00:00Z"})
    admin.call("POST", "campaigns", {"list_id": LIST})  # a draft has no report
    reports = mc.reports.get_all_campaign_reports()
    assert [r["id"] for r in reports["reports"]] == [first["id"], second["id"]]
    assert reports["total_items"] == 2
    assert reports["reports"][0] == mc.reports.get_campaign_report(first["id"])
    later = mc.reports.get_all_campaign_reports(since_send_time="2026-03-15T00:00:00+00:00")
    assert [r["id"] for r in later["reports"]] == [second["id"]]
    paged = mc.reports.get_all_campaign_reports(count=1, offset=1, fields=["reports.id", "total_items"])
    assert paged == {"reports": [{"id": second["id"]}], "total_items": 2}

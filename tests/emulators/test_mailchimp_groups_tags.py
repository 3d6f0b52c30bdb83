"""Interest categories, interests, tags, tag segments and webhooks in the Mailchimp emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from tests.emulators.mailchimp_support import KEY, LIST, md5, official_client


@pytest.fixture
def mc(mailchimp_emulator: Any) -> Any:
    mailchimp_emulator.admin.seed(
        {
            "audiences": [{"id": LIST, "name": "Newsletter"}],
            "members": [
                {"list_id": LIST, "email_address": e, "status": "subscribed"}
                for e in ("a@example.org", "b@example.org")
            ],
        }
    )
    return official_client(mailchimp_emulator)


def test_interest_categories_and_interests(mc: Any) -> None:
    topics = mc.lists.create_list_interest_category(LIST, {"title": "Topics", "type": "checkboxes"})
    region = mc.lists.create_list_interest_category(LIST, {"title": "Region", "type": "dropdown"})
    events = mc.lists.create_interest_category_interest(LIST, topics["id"], {"name": "Events"})
    offers = mc.lists.create_interest_category_interest(LIST, topics["id"], {"name": "Offers"})
    listed = mc.lists.get_list_interest_categories(LIST)
    assert [(c["title"], c["type"]) for c in listed["categories"]] == [("Topics", "checkboxes"), ("Region", "dropdown")]
    assert listed["total_items"] == 2
    interests = mc.lists.list_interest_category_interests(LIST, topics["id"])
    assert [i["name"] for i in interests["interests"]] == ["Events", "Offers"]
    assert interests["category_id"] == topics["id"]
    member = mc.lists.update_list_member(LIST, md5("a@example.org"), {"interests": {events["id"]: True}})
    assert member["interests"] == {events["id"]: True, offers["id"]: False}
    counted = mc.lists.get_interest_category_interest(LIST, topics["id"], events["id"])
    assert counted["subscriber_count"] == "1"
    renamed = mc.lists.update_interest_category(LIST, region["id"], {"title": "Where"})
    assert renamed["title"] == "Where"
    assert mc.lists.delete_interest_category_interest(LIST, topics["id"], offers["id"]).status_code == 204
    assert mc.lists.get_list_member(LIST, md5("a@example.org"))["interests"] == {events["id"]: True}


def test_category_type_and_title_are_checked(mc: Any) -> None:
    with pytest.raises(ApiClientError) as caught:
        mc.lists.create_list_interest_category(LIST, {"title": "Bad", "type": "slider"})
    assert json.loads(caught.value.text)["errors"][0]["field"] == "type"
    mc.lists.create_list_interest_category(LIST, {"title": "Topics", "type": "hidden"})
    with pytest.raises(ApiClientError) as caught:
        mc.lists.create_list_interest_category(LIST, {"title": "topics", "type": "radio"})
    assert "already exists" in json.loads(caught.value.text)["detail"]


def test_member_tags_add_remove_and_list(mc: Any) -> None:
    response = mc.lists.update_list_member_tags(
        LIST,
        md5("a@example.org"),
        {"tags": [{"name": "donor", "status": "active"}, {"name": "volunteer", "status": "active"}]},
    )
    assert (response.status_code, response.content) == (204, b"")
    tags = mc.lists.get_list_member_tags(LIST, md5("a@example.org"))
    assert [t["name"] for t in tags["tags"]] == ["donor", "volunteer"]
    assert set(tags["tags"][0]) == {"id", "name", "date_added"}
    mc.lists.update_list_member_tags(LIST, md5("a@example.org"), {"tags": [{"name": "Donor", "status": "inactive"}]})
    assert [t["name"] for t in mc.lists.get_list_member_tags(LIST, md5("a@example.org"))["tags"]] == ["volunteer"]
    with pytest.raises(ApiClientError) as caught:
        mc.lists.update_list_member_tags(LIST, md5("a@example.org"), {"tags": [{"name": "x", "status": "on"}]})
    assert caught.value.status_code == 400
    with pytest.raises(ApiClientError) as caught:
        mc.lists.update_list_member_tags(LIST, md5("nobody@example.org"), {"tags": [{"name": "x", "status": "active"}]})
    assert caught.value.status_code == 404


def test_tag_segments_and_bulk_membership(mc: Any) -> None:
    mc.lists.update_list_member_tags(LIST, md5("a@example.org"), {"tags": [{"name": "donor", "status": "active"}]})
    segments = mc.lists.list_segments(LIST, type="static")
    assert [(s["name"], s["member_count"], s["type"]) for s in segments["segments"]] == [("donor", 1, "static")]
    assert mc.lists.list_segments(LIST, type="saved")["total_items"] == 0
    donor = segments["segments"][0]["id"]
    result = mc.lists.batch_segment_members(
        {"members_to_add": ["b@example.org", "stranger@example.org"], "members_to_remove": ["a@example.org"]},
        LIST,
        donor,
    )
    assert (result["total_added"], result["total_removed"], result["error_count"]) == (1, 1, 1)
    assert result["members_added"][0]["email_address"] == "b@example.org"
    assert result["errors"][0]["email_addresses"] == ["stranger@example.org"]
    assert mc.lists.get_segment(LIST, donor)["member_count"] == 1
    assert [t["name"] for t in mc.lists.get_list_member(LIST, md5("b@example.org"))["tags"]] == ["donor"]


def test_webhooks_are_recorded(mc: Any, mailchimp_emulator: Any) -> None:
    created = mc.lists.create_list_webhook(
        LIST,
        {
            "url": "https://bridge.example.org/api/mailchimp-webhook?key=s3cret",
            "events": {
                "subscribe": True,
                "unsubscribe": True,
                "profile": True,
                "cleaned": True,
                "upemail": True,
                "campaign": False,
            },
            "sources": {"user": True, "admin": True, "api": False},
        },
    )
    assert created["sources"] == {"user": True, "admin": True, "api": False}
    assert created["events"]["campaign"] is False
    listed = mc.lists.get_list_webhooks(LIST)
    assert [w["id"] for w in listed["webhooks"]] == [created["id"]]
    recorded = mailchimp_emulator.admin.call("GET", f"webhooks?list_id={LIST}")["webhooks"]
    assert recorded[0]["url"] == "https://bridge.example.org/api/mailchimp-webhook?key=s3cret"
    with pytest.raises(ApiClientError) as caught:
        mc.lists.create_list_webhook(LIST, {"url": "not a url"})
    assert json.loads(caught.value.text)["errors"][0]["field"] == "url"
    with pytest.raises(ApiClientError):
        mc.lists.create_list_webhook(LIST, {"url": "https://bridge.example.org/api/mailchimp-webhook?key=s3cret"})
    response = requests.delete(
        f"{mailchimp_emulator.url}/3.0/lists/{LIST}/webhooks/{created['id']}", auth=("x", KEY), timeout=10
    )
    assert response.status_code == 204
    assert mc.lists.get_list_webhooks(LIST)["total_items"] == 0

"""Batch subscribe (POST /lists/{id}) and batch operations (/batches) of the Mailchimp emulator."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from tests.emulators.mailchimp_support import LIST, md5, official_client


@pytest.fixture
def mc(mailchimp_emulator: Any) -> Any:
    mailchimp_emulator.admin.seed({"audiences": [{"id": LIST, "name": "Newsletter"}]})
    return official_client(mailchimp_emulator)


def seed_members(emulator: Any, *members: dict[str, Any]) -> None:
    emulator.admin.seed({"members": [{"list_id": LIST, **m} for m in members]})


# ---- batch subscribe -------------------------------------------------------------------------


def test_batch_subscribe_creates_and_reports_each_refusal(mc: Any, mailchimp_emulator: Any) -> None:
    seed_members(
        mailchimp_emulator,
        {"email_address": "exists@example.org", "status": "subscribed"},
        {"email_address": "unsub@example.org", "status": "unsubscribed"},
    )
    result = mc.lists.batch_list_members(
        LIST,
        {
            "members": [
                {"email_address": "new1@example.org", "status": "subscribed", "merge_fields": {"FNAME": "Nia"}},
                {"email_address": "new2@example.org", "status_if_new": "pending", "tags": ["spring"]},
                {"email_address": "exists@example.org", "status": "subscribed"},
                {"email_address": "bad@", "status": "subscribed"},
            ]
        },
    )
    assert result["total_created"] == 2 and result["total_updated"] == 0 and result["error_count"] == 2
    assert [m["email_address"] for m in result["new_members"]] == ["new1@example.org", "new2@example.org"]
    assert result["new_members"][1]["tags"][0]["name"] == "spring"
    codes = {e["email_address"]: e["error_code"] for e in result["errors"]}
    assert codes == {"exists@example.org": "ERROR_CONTACT_EXISTS", "bad@": "ERROR_GENERIC"}
    exists = next(e for e in result["errors"] if e["email_address"] == "exists@example.org")
    assert exists["error"] == (
        "exists@example.org is already a list member, do you want to update? "
        "please provide update_existing:true in the request body"
    )


def test_update_existing_changes_status_and_keeps_going_past_refusals(mc: Any, mailchimp_emulator: Any) -> None:
    seed_members(
        mailchimp_emulator,
        {"email_address": "a@example.org", "status": "subscribed"},
        {"email_address": "cleaned@example.org", "status": "cleaned"},
    )
    result = mc.lists.batch_list_members(
        LIST,
        {
            "update_existing": True,
            "members": [
                {"email_address": "a@example.org", "status": "unsubscribed"},
                {"email_address": "cleaned@example.org", "status": "subscribed"},
                {"email_address": "b@example.org", "status_if_new": "subscribed", "status": "unsubscribed"},
            ],
        },
    )
    assert result["total_updated"] == 1 and result["total_created"] == 1 and result["error_count"] == 1
    assert result["updated_members"][0]["status"] == "unsubscribed"
    assert result["new_members"][0]["status"] == "subscribed"  # a new member takes status_if_new
    assert result["errors"][0]["error_code"] == "ERROR_GENERIC"
    assert "compliance state" in result["errors"][0]["error"]


def test_status_if_new_does_not_touch_existing_members(mc: Any, mailchimp_emulator: Any) -> None:
    seed_members(mailchimp_emulator, {"email_address": "u@example.org", "status": "unsubscribed"})
    result = mc.lists.batch_list_members(
        LIST,
        {
            "update_existing": True,
            "members": [
                {"email_address": "u@example.org", "status_if_new": "subscribed", "merge_fields": {"FNAME": "Uma"}}
            ],
        },
    )
    assert result["error_count"] == 0
    assert result["updated_members"][0]["status"] == "unsubscribed"
    assert result["updated_members"][0]["merge_fields"]["FNAME"] == "Uma"


def test_sync_tags_replaces_tags_only_with_update_existing(mc: Any, mailchimp_emulator: Any) -> None:
    seed_members(
        mailchimp_emulator, {"email_address": "t@example.org", "status": "subscribed", "tags": ["old", "keep"]}
    )
    added = mc.lists.batch_list_members(
        LIST,
        {
            "update_existing": True,
            "members": [{"email_address": "t@example.org", "status_if_new": "subscribed", "tags": ["keep", "new"]}],
        },
    )
    assert sorted(t["name"] for t in added["updated_members"][0]["tags"]) == ["keep", "new", "old"]
    synced = mc.lists.batch_list_members(
        LIST,
        {
            "update_existing": True,
            "sync_tags": True,
            "members": [{"email_address": "t@example.org", "status_if_new": "subscribed", "tags": ["keep"]}],
        },
    )
    assert [t["name"] for t in synced["updated_members"][0]["tags"]] == ["keep"]
    ignored = mc.lists.batch_list_members(
        LIST,
        {"sync_tags": True, "members": [{"email_address": "t@example.org", "status_if_new": "subscribed", "tags": []}]},
    )
    assert ignored["errors"][0]["error_code"] == "ERROR_CONTACT_EXISTS"


def test_more_than_500_members_fail_the_call(mc: Any) -> None:
    members = [{"email_address": f"m{i}@example.org", "status": "subscribed"} for i in range(501)]
    with pytest.raises(ApiClientError) as caught:
        mc.lists.batch_list_members(LIST, {"members": members})
    assert caught.value.status_code == 400
    assert json.loads(caught.value.text)["title"] == "Invalid Resource"
    assert mc.lists.batch_list_members(LIST, {"members": members[:500]})["total_created"] == 500


def test_schema_errors_fail_the_call_and_write_nothing(mc: Any, mailchimp_emulator: Any) -> None:
    with pytest.raises(ApiClientError) as caught:
        mc.lists.batch_list_members(
            LIST,
            {
                "members": [
                    {"email_address": "ok@example.org", "status": "subscribed"},
                    {"email_address": "x@example.org", "status": "archived"},
                ]
            },
        )
    body = json.loads(caught.value.text)
    assert body["errors"][0]["field"] == "members.item:1.status"
    assert mailchimp_emulator.admin.state(list_id=LIST)["audiences"][LIST]["members"] == {}


def test_duplicates_in_one_request(mc: Any) -> None:
    twice = [
        {"email_address": "d@example.org", "status": "subscribed"},
        {"email_address": "D@example.org", "status": "unsubscribed"},
    ]
    result = mc.lists.batch_list_members(LIST, {"members": twice})
    assert (result["total_created"], result["error_count"]) == (1, 1)
    again = [
        {"email_address": "e@example.org", "status": "pending"},
        {"email_address": "e@example.org", "status": "subscribed"},
    ]
    skipped = mc.lists.batch_list_members(LIST, {"members": again}, skip_duplicate_check=True)
    assert (skipped["total_created"], skipped["error_count"]) == (1, 0)
    assert skipped["new_members"][0]["status"] == "pending"  # the first appearance wins


# ---- batch operations --------------------------------------------------------------------------


def results_of(url: str) -> list[dict[str, Any]]:
    archive = requests.get(url, timeout=10)
    assert archive.status_code == 200
    entries: list[dict[str, Any]] = []
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            entries += json.loads(handle.read())
    return entries


def test_batch_operations_run_against_the_same_store(mc: Any, mailchimp_emulator: Any) -> None:
    seed_members(mailchimp_emulator, {"email_address": "u@example.org", "status": "unsubscribed"})
    operations = [
        {
            "method": "PUT",
            "path": f"/lists/{LIST}/members/{md5('new@example.org')}",
            "operation_id": "put-new",
            "body": json.dumps({"email_address": "new@example.org", "status_if_new": "subscribed"}),
        },
        {
            "method": "PATCH",
            "path": f"/lists/{LIST}/members/{md5('u@example.org')}",
            "operation_id": "resub",
            "body": json.dumps({"status": "subscribed"}),
        },
        {
            "method": "GET",
            "path": f"/lists/{LIST}/members/{md5('u@example.org')}",
            "operation_id": "read",
            "params": {"fields": "status"},
        },
    ]
    started = mc.batches.start({"operations": operations})
    assert (started["status"], started["total_operations"], started["response_body_url"]) == ("pending", 3, "")
    running = mc.batches.status(started["id"])
    assert running["status"] == "started"
    done = mc.batches.status(started["id"])
    assert done["status"] == "finished"
    assert (done["finished_operations"], done["errored_operations"]) == (3, 1)
    entries = {e["operation_id"]: e for e in results_of(done["response_body_url"])}
    assert entries["put-new"]["status_code"] == 200
    assert json.loads(entries["put-new"]["response"])["status"] == "subscribed"
    assert entries["resub"]["status_code"] == 400
    assert json.loads(entries["resub"]["response"])["title"] == "Member In Compliance State"
    assert json.loads(entries["read"]["response"]) == {"status": "unsubscribed"}
    assert mc.lists.get_list_member(LIST, md5("new@example.org"))["status"] == "subscribed"


def test_batch_body_must_be_a_string(mc: Any) -> None:
    with pytest.raises(ApiClientError) as caught:
        mc.batches.start(
            {
                "operations": [
                    {
                        "method": "POST",
                        "path": f"/lists/{LIST}/members",
                        "body": {"email_address": "x@example.org", "status": "subscribed"},
                    }
                ]
            }
        )
    assert json.loads(caught.value.text)["errors"][0]["field"] == "operations.item:0.body"


def test_paged_get_without_count_and_expiring_url(mc: Any, mailchimp_emulator: Any) -> None:
    seed_members(
        mailchimp_emulator, *({"email_address": f"p{i}@example.org", "status": "subscribed"} for i in range(2500))
    )
    batch = mc.batches.start(
        {
            "operations": [
                {
                    "method": "GET",
                    "path": f"/lists/{LIST}/members",
                    "operation_id": "all",
                    "params": {"fields": "members.id,total_items"},
                }
            ]
        }
    )
    mc.batches.status(batch["id"])
    done = mc.batches.status(batch["id"])
    assert done["total_operations"] == 3  # one result per page of 1,000
    pages = results_of(done["response_body_url"])
    assert sum(len(json.loads(p["response"])["members"]) for p in pages) == 2500
    mailchimp_emulator.admin.advance_clock(601)
    assert requests.get(done["response_body_url"], timeout=10).status_code == 403
    fresh = mc.batches.status(batch["id"])["response_body_url"]
    assert requests.get(fresh, timeout=10).status_code == 200
    assert [b["id"] for b in mc.batches.list()["batches"]] == [batch["id"]]

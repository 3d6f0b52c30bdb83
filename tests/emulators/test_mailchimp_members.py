"""The members endpoints of the Mailchimp emulator, driven through the official 3.0.80 client."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

from tests.emulators.mailchimp_support import KEY, LIST, md5, official_client


def problem(error: ApiClientError) -> dict[str, Any]:
    """3.0.80 hands problem+json bodies over as a string."""
    assert isinstance(error.text, str)
    return json.loads(error.text)


@pytest.fixture
def mc(mailchimp_emulator: Any) -> Any:
    return official_client(mailchimp_emulator)


@pytest.fixture
def audience(mailchimp_emulator: Any) -> Any:
    mailchimp_emulator.admin.seed({"audiences": [{"id": LIST, "name": "Newsletter"}]})
    return mailchimp_emulator


def seed_members(emulator: Any, *members: dict[str, Any]) -> None:
    emulator.admin.seed({"members": [{"list_id": LIST, **m} for m in members]})


def refusal(call: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiClientError) as caught:
        call(*args, **kwargs)
    return caught.value.status_code, problem(caught.value)


# ---- reading ---------------------------------------------------------------------------------


def test_audience_shows_subscribed_count_and_double_optin(mc: Any, audience: Any) -> None:
    seed_members(
        audience,
        {"email_address": "a@example.org", "status": "subscribed"},
        {"email_address": "b@example.org", "status": "unsubscribed"},
        {"email_address": "c@example.org", "status": "subscribed"},
    )
    info = mc.lists.get_list(LIST)
    assert (info["id"], info["name"], info["double_optin"]) == (LIST, "Newsletter", False)
    assert info["stats"]["member_count"] == 2
    assert info["stats"]["unsubscribe_count"] == 1
    assert [a["id"] for a in mc.lists.get_all_lists()["lists"]] == [LIST]


def test_unknown_audience_is_resource_not_found(mc: Any, audience: Any) -> None:
    status, body = refusal(mc.lists.get_list, "nope")
    assert status == 404
    assert body["title"] == "Resource Not Found"
    assert set(body) >= {"type", "title", "status", "detail", "instance"}


def test_member_by_hash_and_by_email_and_absent(mc: Any, audience: Any) -> None:
    seed_members(
        audience, {"email_address": "Ann@Example.org", "status": "subscribed", "merge_fields": {"FNAME": "Ann"}}
    )
    by_hash = mc.lists.get_list_member(LIST, md5("ann@example.org"))
    assert by_hash["id"] == md5("ann@example.org")
    assert by_hash["email_address"] == "Ann@Example.org"
    assert by_hash["merge_fields"]["FNAME"] == "Ann"
    assert by_hash["list_id"] == LIST
    for name in (
        "unique_email_id",
        "contact_id",
        "web_id",
        "timestamp_opt",
        "timestamp_signup",
        "last_changed",
        "source",
        "vip",
        "language",
        "email_type",
        "tags",
        "tags_count",
    ):
        assert name in by_hash
    by_email = requests.get(f"{audience.url}/3.0/lists/{LIST}/members/ann%40example.org", auth=("x", KEY), timeout=10)
    assert by_email.json()["id"] == by_hash["id"]
    status, body = refusal(mc.lists.get_list_member, LIST, md5("nobody@example.org"))
    assert (status, body["title"]) == (404, "Resource Not Found")


def test_list_pages_with_total_items_and_hides_archived(mc: Any, audience: Any) -> None:
    seed_members(
        audience,
        *({"email_address": f"p{i}@example.org", "status": "subscribed"} for i in range(25)),
        {"email_address": "gone@example.org", "status": "archived"},
    )
    first = mc.lists.get_list_members_info(LIST)
    assert len(first["members"]) == 10  # the default count
    assert first["total_items"] == 25
    assert first["list_id"] == LIST and first["_links"]
    last = mc.lists.get_list_members_info(LIST, count=10, offset=20)
    assert len(last["members"]) == 5
    archived = mc.lists.get_list_members_info(LIST, status="archived")
    assert [m["email_address"] for m in archived["members"]] == ["gone@example.org"]


def test_count_above_1000_is_refused(mc: Any, audience: Any) -> None:
    with pytest.raises(ValueError):  # 3.0.80 refuses before sending
        mc.lists.get_list_members_info(LIST, count=1001)
    raw = requests.get(f"{audience.url}/3.0/lists/{LIST}/members", params={"count": 1001}, auth=("x", KEY), timeout=10)
    assert raw.status_code == 400
    assert raw.headers["Content-Type"] == "application/problem+json; charset=utf-8"


def test_status_filter(mc: Any, audience: Any) -> None:
    seed_members(
        audience,
        {"email_address": "s@example.org", "status": "subscribed"},
        {"email_address": "u@example.org", "status": "unsubscribed"},
        {"email_address": "c@example.org", "status": "cleaned"},
    )
    found = mc.lists.get_list_members_info(LIST, status="unsubscribed")
    assert [m["email_address"] for m in found["members"]] == ["u@example.org"]
    assert found["total_items"] == 1
    status, _ = refusal(mc.lists.get_list_members_info, LIST, status="gone")
    assert status == 400


def test_since_and_before_last_changed_are_exclusive(mc: Any, audience: Any) -> None:
    seed_members(
        audience,
        *(
            {
                "email_address": f"t{i}@example.org",
                "status": "subscribed",
                "last_changed": f"2024-01-01T1{i}:00:00+00:00",
            }
            for i in range(3)
        ),
    )

    def emails(**query: Any) -> list[str]:
        page = mc.lists.get_list_members_info(LIST, sort_field="last_changed", sort_dir="ASC", **query)
        return [m["email_address"] for m in page["members"]]

    assert emails(since_last_changed="2024-01-01T11:00:00+00:00") == ["t2@example.org"]
    assert emails(since_last_changed="2024-01-01T10:59:59+00:00") == ["t1@example.org", "t2@example.org"]
    assert emails(before_last_changed="2024-01-01T11:00:00+00:00") == ["t0@example.org"]
    # the offset counts: 11:59:59+01:00 is 10:59:59 UTC
    assert emails(since_last_changed="2024-01-01T11:59:59+01:00") == ["t1@example.org", "t2@example.org"]
    # a value without an offset is unreadable: the filter is ignored and everything comes back
    assert len(emails(since_last_changed="2024-01-01T11:00:00")) == 3


def test_sort_by_last_changed_both_directions_with_offset(mc: Any, audience: Any) -> None:
    seed_members(
        audience,
        *(
            {
                "email_address": f"m{i}@example.org",
                "status": "subscribed",
                "last_changed": f"2024-02-01T00:00:{i:02d}+00:00",
            }
            for i in (5, 1, 3, 2, 4)
        ),
    )
    ascending = mc.lists.get_list_members_info(LIST, sort_field="last_changed", sort_dir="ASC", count=2, offset=1)
    assert [m["email_address"] for m in ascending["members"]] == ["m2@example.org", "m3@example.org"]
    descending = mc.lists.get_list_members_info(LIST, sort_field="last_changed", sort_dir="DESC", count=3)
    assert [m["email_address"] for m in descending["members"]] == ["m5@example.org", "m4@example.org", "m3@example.org"]
    assert descending["total_items"] == 5
    by_opt = mc.lists.get_list_members_info(LIST, sort_field="timestamp_opt", sort_dir="DESC", count=1)
    assert by_opt["members"][0]["email_address"] == "m5@example.org"


def test_fields_and_exclude_fields(mc: Any, audience: Any) -> None:
    seed_members(
        audience,
        {"email_address": "f@example.org", "status": "subscribed", "merge_fields": {"FNAME": "Fay", "LNAME": "Fox"}},
    )
    slim = mc.lists.get_list_members_info(
        LIST, fields=["members.email_address", "members.merge_fields.FNAME", "total_items"]
    )
    assert slim == {"members": [{"email_address": "f@example.org", "merge_fields": {"FNAME": "Fay"}}], "total_items": 1}
    without = mc.lists.get_list_members_info(LIST, exclude_fields=["members._links", "_links", "members.merge_fields"])
    member = without["members"][0]
    assert "_links" not in without and "_links" not in member and "merge_fields" not in member
    assert member["status"] == "subscribed"
    one = mc.lists.get_list_member(LIST, md5("f@example.org"), fields=["status", "email_address"])
    assert one == {"status": "subscribed", "email_address": "f@example.org"}
    status, body = refusal(mc.lists.get_list_members_info, LIST, fields=["members.shoe_size"])
    assert status == 400 and "members.shoe_size" in body["detail"]
    status, _ = refusal(mc.lists.get_list_members_info, LIST, fields=["total_items"], exclude_fields=["_links"])
    assert status == 400


# ---- writing ---------------------------------------------------------------------------------


def test_put_adds_with_status_if_new_and_never_overwrites_with_it(mc: Any, audience: Any) -> None:
    added = mc.lists.set_list_member(
        LIST, md5("new@example.org"), {"email_address": "new@example.org", "status_if_new": "subscribed"}
    )
    assert (added["status"], added["id"]) == ("subscribed", md5("new@example.org"))
    mc.lists.update_list_member(LIST, md5("new@example.org"), {"status": "unsubscribed"})
    again = mc.lists.set_list_member(
        LIST, md5("new@example.org"), {"email_address": "new@example.org", "status_if_new": "subscribed"}
    )
    assert again["status"] == "unsubscribed"


def test_put_accepts_status_and_status_if_new_together(mc: Any, audience: Any) -> None:
    body = {"email_address": "both@example.org", "status_if_new": "pending", "status": "subscribed"}
    created = mc.lists.set_list_member(LIST, md5("both@example.org"), body)
    assert created["status"] == "pending"  # a new member takes status_if_new
    updated = mc.lists.set_list_member(LIST, md5("both@example.org"), body)
    assert updated["status"] == "subscribed"  # an existing member takes status


def test_put_needs_email_address_for_a_new_member(mc: Any, audience: Any) -> None:
    status, body = refusal(mc.lists.set_list_member, LIST, md5("x@example.org"), {"status_if_new": "subscribed"})
    assert (status, body["title"]) == (400, "Invalid Resource")
    assert body["errors"][0]["message"] == "Required fields were not provided: email_address"


def test_put_with_another_members_address_is_member_exists(mc: Any, audience: Any) -> None:
    seed_members(audience, {"email_address": "taken@example.org", "status": "subscribed"})
    wrong_hash = hashlib.md5(b"Taken@Example.org").hexdigest()  # hashed without lowercasing
    status, body = refusal(
        mc.lists.set_list_member,
        LIST,
        wrong_hash,
        {"email_address": "taken@example.org", "status_if_new": "subscribed"},
    )
    assert (status, body["title"]) == (400, "Member Exists")
    assert body["detail"] == "taken@example.org is already a list member. Use PUT to insert or update list members."


def test_post_creates_and_refuses_an_existing_member(mc: Any, audience: Any) -> None:
    created = mc.lists.add_list_member(
        LIST, {"email_address": "p@example.org", "status": "subscribed", "tags": ["donor"]}
    )
    assert created["status"] == "subscribed" and created["tags"][0]["name"] == "donor"
    status, body = refusal(mc.lists.add_list_member, LIST, {"email_address": "P@example.org", "status": "pending"})
    assert (status, body["title"]) == (400, "Member Exists")


def test_status_enums_per_endpoint(mc: Any, audience: Any) -> None:
    seed_members(audience, {"email_address": "e@example.org", "status": "subscribed"})
    status, body = refusal(mc.lists.update_list_member, LIST, md5("e@example.org"), {"status": "transactional"})
    assert (status, body["title"], body["errors"][0]["field"]) == (400, "Invalid Resource", "status")
    made = mc.lists.set_list_member(
        LIST, md5("e@example.org"), {"email_address": "e@example.org", "status": "transactional"}
    )
    assert made["status"] == "transactional"
    for call, args in (
        (
            mc.lists.set_list_member,
            (LIST, md5("e@example.org"), {"email_address": "e@example.org", "status": "archived"}),
        ),
        (mc.lists.add_list_member, (LIST, {"email_address": "z@example.org", "status": "archived"})),
    ):
        status, body = refusal(call, *args)
        assert (status, body["title"]) == (400, "Invalid Resource")


def test_patch_changes_the_address_and_keeps_the_contact(mc: Any, audience: Any) -> None:
    seed_members(audience, {"email_address": "old@example.org", "status": "subscribed"})
    before = mc.lists.get_list_member(LIST, md5("old@example.org"))
    moved = mc.lists.update_list_member(LIST, md5("old@example.org"), {"email_address": "new@example.org"})
    assert moved["id"] == md5("new@example.org")
    assert moved["contact_id"] == before["contact_id"]
    assert mc.lists.get_list_member(LIST, md5("new@example.org"))["email_address"] == "new@example.org"
    status, _ = refusal(mc.lists.get_list_member, LIST, md5("old@example.org"))
    assert status == 404


def test_address_change_onto_an_existing_member_is_refused(mc: Any, audience: Any) -> None:
    seed_members(
        audience,
        {"email_address": "one@example.org", "status": "subscribed"},
        {"email_address": "two@example.org", "status": "unsubscribed"},
    )
    status, body = refusal(
        mc.lists.update_list_member, LIST, md5("one@example.org"), {"email_address": "two@example.org"}
    )
    assert (status, body["title"]) == (400, "Invalid Resource")
    message = '"two@example.org" is already in this list with a status of "unsubscribed".'
    assert body["errors"][0] == {"field": "email_address", "message": message}
    assert (
        audience.admin.state(list_id=LIST)["audiences"][LIST]["members"][md5("one@example.org")]["email_address"]
        == "one@example.org"
    )


def test_address_change_only_for_subscribers(mc: Any, audience: Any) -> None:
    seed_members(audience, {"email_address": "gone@example.org", "status": "cleaned"})
    status, body = refusal(
        mc.lists.update_list_member, LIST, md5("gone@example.org"), {"email_address": "back@example.org"}
    )
    assert status == 400 and "cleaned" in body["detail"]


def test_delete_archives_with_an_empty_204(mc: Any, audience: Any) -> None:
    seed_members(audience, {"email_address": "arc@example.org", "status": "subscribed"})
    response = mc.lists.delete_list_member(LIST, md5("arc@example.org"))
    assert isinstance(response, requests.Response)  # 3.0.80 returns empty-body responses raw
    assert (response.status_code, response.content) == (204, b"")
    assert mc.lists.get_list_member(LIST, md5("arc@example.org"))["status"] == "archived"
    assert mc.lists.get_list_members_info(LIST)["total_items"] == 0
    status, _ = refusal(mc.lists.delete_list_member, LIST, md5("never@example.org"))
    assert status == 404


def test_archived_member_comes_back_with_its_history(mc: Any, audience: Any) -> None:
    seed_members(
        audience,
        {"email_address": "was-unsub@example.org", "status": "archived", "status_before_archive": "unsubscribed"},
        {"email_address": "was-sub@example.org", "status": "archived", "status_before_archive": "subscribed"},
    )
    _, body = refusal(
        mc.lists.set_list_member,
        LIST,
        md5("was-unsub@example.org"),
        {"email_address": "was-unsub@example.org", "status_if_new": "subscribed"},
    )
    assert body["title"] == "Member In Compliance State"
    back = mc.lists.add_list_member(LIST, {"email_address": "was-sub@example.org", "status": "subscribed"})
    assert back["status"] == "subscribed"


def test_delete_permanent_forgets_the_address_for_good(mc: Any, audience: Any) -> None:
    seed_members(audience, {"email_address": "forget@example.org", "status": "subscribed"})
    response = mc.lists.delete_list_member_permanent(LIST, md5("forget@example.org"))
    assert (response.status_code, response.content) == (204, b"")
    status, _ = refusal(mc.lists.get_list_member, LIST, md5("forget@example.org"))
    assert status == 404
    expected = (
        "forget@example.org was permanently deleted and cannot be re-imported. "
        "The contact must re-subscribe to get back on the list."
    )
    pending = {"email_address": "forget@example.org", "status_if_new": "pending", "status": "pending"}
    for call, args in (
        (mc.lists.add_list_member, (LIST, pending)),
        (mc.lists.set_list_member, (LIST, md5("forget@example.org"), pending)),
    ):
        status, body = refusal(call, *args)
        assert (status, body["title"], body["detail"]) == (400, "Forgotten Email Not Subscribed", expected)
    result = mc.lists.batch_list_members(
        LIST, {"members": [{"email_address": "forget@example.org", "status": "subscribed"}]}
    )
    assert result["errors"][0]["error_code"] == "ERROR_GENERIC"
    assert result["errors"][0]["error"] == expected


# ---- consent rules ---------------------------------------------------------------------------

COMPLIANCE = "{} is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed."


@pytest.mark.parametrize("prior", ["unsubscribed", "cleaned"])
def test_subscribed_after_unsubscribe_or_bounce_is_compliance_state(mc: Any, audience: Any, prior: str) -> None:
    email = f"{prior}@example.org"
    seed_members(audience, {"email_address": email, "status": prior})
    attempts = [
        (mc.lists.set_list_member, (LIST, md5(email), {"email_address": email, "status": "subscribed"})),
        (mc.lists.update_list_member, (LIST, md5(email), {"status": "subscribed"})),
    ]
    for call, args in attempts:
        status, body = refusal(call, *args)
        assert status == 400
        assert body["title"] == "Member In Compliance State"
        assert body["detail"] == COMPLIANCE.format(email)
        assert body["type"] == "https://mailchimp.com/developer/marketing/docs/errors/"
    batch = mc.lists.batch_list_members(
        LIST, {"members": [{"email_address": email, "status": "subscribed"}], "update_existing": True}
    )
    assert batch["error_count"] == 1 and batch["total_updated"] == 0
    assert batch["errors"][0]["error"] == COMPLIANCE.format(email)
    assert mc.lists.get_list_member(LIST, md5(email))["status"] == prior


def test_pending_is_allowed_after_unsubscribe_but_not_after_a_bounce(mc: Any, audience: Any) -> None:
    seed_members(
        audience,
        {"email_address": "u@example.org", "status": "unsubscribed"},
        {"email_address": "c@example.org", "status": "cleaned"},
    )
    assert mc.lists.update_list_member(LIST, md5("u@example.org"), {"status": "pending"})["status"] == "pending"
    _, body = refusal(mc.lists.update_list_member, LIST, md5("c@example.org"), {"status": "pending"})
    assert body["title"] == "Member In Compliance State"
    sent = audience.admin.call("GET", f"confirmations?list_id={LIST}")["confirmations"]
    assert [c["subscriber_hash"] for c in sent] == [md5("u@example.org")]


def test_repeated_pending_writes_send_one_confirmation(mc: Any, audience: Any) -> None:
    body = {"email_address": "dbl@example.org", "status_if_new": "pending", "status": "pending"}
    mc.lists.set_list_member(LIST, md5("dbl@example.org"), body)
    mc.lists.set_list_member(LIST, md5("dbl@example.org"), body)
    mc.lists.update_list_member(LIST, md5("dbl@example.org"), {"status": "pending"})
    state = audience.admin.state(list_id=LIST)
    assert len(state["confirmations"]) == 1
    audience.admin.call("POST", "people/confirm", {"list_id": LIST, "email_address": "dbl@example.org"})
    assert mc.lists.get_list_member(LIST, md5("dbl@example.org"))["status"] == "subscribed"


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign.example.org",
        "two words@example.org",
        "x@nodot",
        "x@-bad-.org",
        "x@example.test",
        "x@mail.invalid",
        "x@host.localhost",
        "x@@example.org",
    ],
)
def test_fake_or_invalid_addresses_are_refused(mc: Any, audience: Any, address: str) -> None:
    status, body = refusal(mc.lists.add_list_member, LIST, {"email_address": address, "status": "subscribed"})
    assert (status, body["title"]) == (400, "Invalid Resource")
    assert body["detail"] == f"{address} looks fake or invalid, please enter a real email address."


def test_configured_fake_domains_are_refused(mc: Any, audience: Any) -> None:
    assert mc.lists.add_list_member(LIST, {"email_address": "ok@example.com", "status": "subscribed"})
    audience.admin.call("POST", "settings", {"fakeDomains": ["mailinator.com"]})
    _, body = refusal(mc.lists.add_list_member, LIST, {"email_address": "x@mailinator.com", "status": "subscribed"})
    assert "looks fake or invalid" in body["detail"]


def test_last_changed_moves_only_on_a_real_change(mc: Any, audience: Any) -> None:
    body = {"email_address": "lc@example.org", "status_if_new": "subscribed", "merge_fields": {"FNAME": "Lee"}}
    first = mc.lists.set_list_member(LIST, md5("lc@example.org"), body)
    audience.admin.advance_clock(120)
    same = mc.lists.set_list_member(LIST, md5("lc@example.org"), body)
    assert same == first  # nothing changed: neither last_changed nor anything else
    patched = mc.lists.update_list_member(LIST, md5("lc@example.org"), {"merge_fields": {"FNAME": "Lea"}})
    assert patched["last_changed"] > first["last_changed"]
    audience.admin.advance_clock(120)
    tagged = mc.lists.update_list_member_tags(
        LIST, md5("lc@example.org"), {"tags": [{"name": "vip", "status": "active"}]}
    )
    assert tagged.status_code == 204
    assert mc.lists.get_list_member(LIST, md5("lc@example.org"))["last_changed"] == patched["last_changed"]


def test_interests_show_every_interest_of_the_audience(mc: Any, audience: Any) -> None:
    seeded = audience.admin.seed(
        {
            "interest_categories": [
                {
                    "list_id": LIST,
                    "title": "Topics",
                    "type": "checkboxes",
                    "interests": [{"name": "Events"}, {"name": "Offers"}, {"name": "News"}],
                }
            ]
        }
    )
    ids = [i["id"] for i in seeded["interest_categories"][0]["interests"]]
    member = mc.lists.set_list_member(
        LIST,
        md5("i@example.org"),
        {"email_address": "i@example.org", "status_if_new": "subscribed", "interests": {ids[1]: True}},
    )
    assert member["interests"] == {ids[0]: False, ids[1]: True, ids[2]: False}
    status, body = refusal(mc.lists.update_list_member, LIST, md5("i@example.org"), {"interests": {"nope": True}})
    assert status == 400 and "Invalid interest ID" in body["detail"]


def test_tags_shown_up_to_fifty_with_the_full_count(mc: Any, audience: Any) -> None:
    seed_members(
        audience, {"email_address": "t@example.org", "status": "subscribed", "tags": [f"tag-{i}" for i in range(60)]}
    )
    member = mc.lists.get_list_member(LIST, md5("t@example.org"))
    assert member["tags_count"] == 60
    assert len(member["tags"]) == 50
    assert set(member["tags"][0]) == {"id", "name"}
    assert mc.lists.get_list_member_tags(LIST, md5("t@example.org"), count=100)["total_items"] == 60


def test_required_merge_fields_unless_skipped(mc: Any, mailchimp_emulator: Any) -> None:
    mailchimp_emulator.admin.seed(
        {
            "audiences": [
                {
                    "id": LIST,
                    "name": "Strict",
                    "merge_fields": [{"tag": "FNAME", "name": "First", "type": "text", "required": True}],
                }
            ]
        }
    )
    status, body = refusal(mc.lists.add_list_member, LIST, {"email_address": "m@example.org", "status": "subscribed"})
    assert status == 400
    assert body["detail"] == "Your merge fields were invalid."
    assert body["errors"] == [{"field": "FNAME", "message": "Please enter a value"}]
    added = mc.lists.add_list_member(
        LIST, {"email_address": "m@example.org", "status": "subscribed"}, skip_merge_validation=True
    )
    assert added["status"] == "subscribed"

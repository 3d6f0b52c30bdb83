"""Merge fields in the Mailchimp emulator: the definitions' endpoints, and values checked per type, required and
length in single member writes and in batch subscribe, with the service's error titles."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mailchimp_marketing.api_client import ApiClientError

from tests.emulators.mailchimp_support import LIST, md5, official_client

FIELDS = [
    {"tag": "FNAME", "name": "First Name", "type": "text"},
    {"tag": "LNAME", "name": "Last Name", "type": "text", "required": True},
    {"tag": "SEATS", "name": "Seats", "type": "number"},
    {"tag": "JOINED", "name": "Joined", "type": "date", "options": {"date_format": "DD/MM/YYYY"}},
    {"tag": "BIRTHDAY", "name": "Birthday", "type": "birthday", "options": {"date_format": "MM/DD"}},
    {"tag": "PHONE", "name": "Phone", "type": "phone", "options": {"phone_format": "US"}},
    {"tag": "ADDRESS", "name": "Address", "type": "address"},
    {"tag": "SHORT", "name": "Short", "type": "text", "options": {"size": 5}},
]


@pytest.fixture
def mc(mailchimp_emulator: Any) -> Any:
    mailchimp_emulator.admin.seed({"audiences": [{"id": LIST, "name": "Newsletter", "merge_fields": FIELDS}]})
    return official_client(mailchimp_emulator)


def refusal(call: Any) -> dict[str, Any]:
    with pytest.raises(ApiClientError) as caught:
        call()
    assert caught.value.status_code == 400
    return json.loads(caught.value.text)


def put(mc: Any, email: str, merge: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"email_address": email, "status_if_new": "subscribed", "merge_fields": merge, **extra}
    return mc.lists.set_list_member(LIST, md5(email), body)


# ---- values ------------------------------------------------------------------------------------------------
def test_values_of_every_type_are_accepted_in_their_form(mc: Any) -> None:
    member = put(
        mc,
        "ok@example.org",
        {
            "FNAME": "Ada",
            "LNAME": "Lovelace",
            "SEATS": "3",
            "JOINED": "2024-03-05",
            "BIRTHDAY": "7/4",
            "PHONE": "(555) 010-0100",
            "ADDRESS": {"addr1": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"},
        },
    )
    values = member["merge_fields"]
    assert values["SEATS"] == 3
    assert values["JOINED"] == "05/03/2024"  # stored in the field's date format
    assert values["BIRTHDAY"] == "07/04"
    assert values["ADDRESS"]["city"] == "Springfield" and values["ADDRESS"]["country"] == ""


@pytest.mark.parametrize(
    ("tag", "value", "message"),
    [
        ("SEATS", "many", "Please enter a number"),
        ("JOINED", "31/31/2024", "Please enter the date"),
        ("BIRTHDAY", "13/40", "Please enter a month (01-12) and a day (01-31)"),
        ("PHONE", "555-0100", "Please enter a valid US phone number in the format (###) ###-####"),
        ("ADDRESS", {"addr1": "1 Main St"}, "Please enter a complete address"),
        ("SHORT", "abcdefgh", "Please enter a value of at most 5 characters"),
        ("FNAME", "x" * 256, "Please enter a value of at most 255 characters"),
        ("LNAME", "", "Please enter a value"),
    ],
)
def test_a_value_the_type_refuses_is_invalid_resource_naming_the_field(mc: Any, tag: str, value: Any, message: str):
    merge = {"LNAME": "Doe", tag: value}
    problem = refusal(lambda: put(mc, "bad@example.org", merge))
    assert problem["title"] == "Invalid Resource"
    assert problem["detail"] == "Your merge fields were invalid."
    assert problem["errors"] == [{"field": tag, "message": message}]


def test_a_required_merge_field_is_needed_to_create_a_member_unless_validation_is_skipped(mc: Any) -> None:
    problem = refusal(lambda: put(mc, "noname@example.org", {"FNAME": "Ann"}))
    assert problem["errors"] == [{"field": "LNAME", "message": "Please enter a value"}]
    created = mc.lists.set_list_member(
        LIST,
        md5("noname@example.org"),
        {"email_address": "noname@example.org", "status_if_new": "subscribed", "merge_fields": {"FNAME": "Ann"}},
        skip_merge_validation=True,
    )
    assert created["status"] == "subscribed"
    updated = mc.lists.update_list_member(LIST, md5("noname@example.org"), {"merge_fields": {"FNAME": "Anne"}})
    assert updated["merge_fields"]["FNAME"] == "Anne"  # an update that leaves LNAME alone is fine


def test_batch_subscribe_refuses_each_bad_member_alone_naming_the_field(mc: Any) -> None:
    result = mc.lists.batch_list_members(
        LIST,
        {
            "members": [
                {"email_address": "good@example.org", "status": "subscribed", "merge_fields": {"LNAME": "Good"}},
                {
                    "email_address": "date@example.org",
                    "status": "subscribed",
                    "merge_fields": {"LNAME": "Bad", "JOINED": "yesterday"},
                },
                {"email_address": "empty@example.org", "status": "subscribed", "merge_fields": {"FNAME": "No"}},
            ],
            "update_existing": True,
        },
    )
    assert [m["email_address"] for m in result["new_members"]] == ["good@example.org"]
    errors = {e["email_address"]: e for e in result["errors"]}
    assert errors["date@example.org"]["error_code"] == "ERROR_GENERIC"
    assert (errors["date@example.org"]["field"], errors["date@example.org"]["field_message"]) == (
        "JOINED",
        "Please enter the date",
    )
    assert (errors["empty@example.org"]["field"], errors["empty@example.org"]["field_message"]) == (
        "LNAME",
        "Please enter a value",
    )


def test_unknown_merge_tags_are_ignored(mc: Any) -> None:
    member = put(mc, "x@example.org", {"LNAME": "X", "NOSUCH": "value"})
    assert "NOSUCH" not in member["merge_fields"]


# ---- the definitions ---------------------------------------------------------------------------------------
def test_merge_fields_are_listed_with_their_types_and_options(mc: Any) -> None:
    listed = mc.lists.get_list_merge_fields(LIST, count=100)
    by_tag = {m["tag"]: m for m in listed["merge_fields"]}
    assert listed["total_items"] == len(FIELDS)
    assert by_tag["JOINED"]["type"] == "date" and by_tag["JOINED"]["options"]["date_format"] == "DD/MM/YYYY"
    assert by_tag["FNAME"]["options"]["size"] == 255
    assert by_tag["LNAME"]["required"] is True
    one = mc.lists.get_list_merge_field(LIST, str(by_tag["SEATS"]["merge_id"]))
    assert one["tag"] == "SEATS" and one["list_id"] == LIST


def test_a_merge_field_is_created_updated_and_deleted_but_its_type_never_changes(mc: Any) -> None:
    created = mc.lists.add_list_merge_field(
        LIST, {"tag": "COMPANY", "name": "Company", "type": "text", "required": False}
    )
    assert created["tag"] == "COMPANY" and created["type"] == "text"
    merge_id = str(created["merge_id"])
    renamed = mc.lists.update_list_merge_field(LIST, merge_id, {"name": "Organisation"})
    assert renamed["name"] == "Organisation"
    problem = refusal(lambda: mc.lists.update_list_merge_field(LIST, merge_id, {"name": "X", "type": "number"}))
    assert problem["errors"][0]["field"] == "type"
    duplicate = refusal(
        lambda: mc.lists.add_list_merge_field(LIST, {"tag": "COMPANY", "name": "Again", "type": "text"})
    )
    assert duplicate["title"] == "Invalid Resource"
    put(mc, "c@example.org", {"LNAME": "C", "COMPANY": "Contoso"})
    mc.lists.delete_list_merge_field(LIST, merge_id)
    member = mc.lists.get_list_member(LIST, md5("c@example.org"))
    assert "COMPANY" not in member["merge_fields"]
    with pytest.raises(ApiClientError) as gone:
        mc.lists.get_list_merge_field(LIST, merge_id)
    assert gone.value.status_code == 404


def test_a_merge_field_needs_a_name_and_a_known_type(mc: Any) -> None:
    missing = refusal(lambda: mc.lists.add_list_merge_field(LIST, {"tag": "X"}))
    assert "Required fields were not provided: name, type" in missing["errors"][0]["message"]
    unknown = refusal(lambda: mc.lists.add_list_merge_field(LIST, {"name": "X", "type": "colour"}))
    assert unknown["errors"][0]["field"] == "type"
    bad_format = refusal(
        lambda: mc.lists.add_list_merge_field(
            LIST, {"name": "When", "type": "date", "options": {"date_format": "YYYY/MM/DD"}}
        )
    )
    assert bad_format["errors"][0]["field"] == "options.date_format"


def test_an_audience_holds_at_most_thirty_merge_fields(mc: Any) -> None:
    for n in range(30 - len(FIELDS)):
        mc.lists.add_list_merge_field(LIST, {"name": f"Extra {n}", "type": "text"})
    problem = refusal(lambda: mc.lists.add_list_merge_field(LIST, {"name": "One too many", "type": "text"}))
    assert "limit of 30" in problem["detail"]

"""Compliance state in the Mailchimp emulator, driven through the official 3.0.80 client.

Mailchimp holds a member in compliance state after the person's own unsubscribe or a bounce: the API may set
them pending (a confirmation email goes out) but never subscribed, and only the person's click makes them
subscribed again. A member an admin or an API call unsubscribed can be subscribed through the API; the strict
mode (a setting) refuses that too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mailchimp_marketing.api_client import ApiClientError

from tests.emulators.mailchimp_support import LIST, md5, official_client

COMPLIANCE = "Member In Compliance State"


@pytest.fixture
def mc(mailchimp_emulator: Any) -> Any:
    mailchimp_emulator.admin.seed({"audiences": [{"id": LIST, "name": "Newsletter"}]})
    return official_client(mailchimp_emulator)


def person(emulator: Any, action: str, email: str, **extra: Any) -> dict[str, Any]:
    return emulator.admin.call("POST", f"people/{action}", {"list_id": LIST, "email_address": email, **extra})


def add(mc: Any, email: str, status: str = "subscribed") -> None:
    mc.lists.set_list_member(LIST, md5(email), {"email_address": email, "status_if_new": status})


def title_of_refusal(call: Any, *args: Any) -> str:
    with pytest.raises(ApiClientError) as caught:
        call(*args)
    assert caught.value.status_code == 400
    return json.loads(caught.value.text)["title"]


def status(mc: Any, email: str) -> str:
    return mc.lists.get_list_member(LIST, md5(email))["status"]


def member_state(emulator: Any, email: str) -> dict[str, Any]:
    return emulator.admin.state(list_id=LIST)["audiences"][LIST]["members"][md5(email)]


# ---- the person's own unsubscribe and bounces -----------------------------------------------------


@pytest.mark.parametrize("how", ["link", "campaign", "bounce"])
def test_pending_does_not_lift_compliance_state_through_the_api(mc: Any, mailchimp_emulator: Any, how: str) -> None:
    email = f"{how}@example.org"
    add(mc, email)
    if how == "link":
        person(mailchimp_emulator, "unsubscribe", email)
    elif how == "bounce":
        person(mailchimp_emulator, "bounce", email, type="hard")
    else:
        campaign = mailchimp_emulator.admin.call("POST", "campaigns", {"list_id": LIST, "send": True})
        mailchimp_emulator.admin.call(
            "POST", f"campaigns/{campaign['id']}/activity", {"email_address": email, "action": "unsubscribe"}
        )
    if how == "bounce":  # a cleaned address cannot even be asked to confirm
        assert title_of_refusal(mc.lists.update_list_member, LIST, md5(email), {"status": "pending"}) == COMPLIANCE
        return
    assert mc.lists.update_list_member(LIST, md5(email), {"status": "pending"})["status"] == "pending"
    # the loophole: pending, then subscribed, without the person ever confirming
    assert title_of_refusal(mc.lists.update_list_member, LIST, md5(email), {"status": "subscribed"}) == COMPLIANCE
    assert (
        title_of_refusal(mc.lists.set_list_member, LIST, md5(email), {"email_address": email, "status": "subscribed"})
        == COMPLIANCE
    )
    batch = mc.lists.batch_list_members(
        LIST, {"members": [{"email_address": email, "status": "subscribed"}], "update_existing": True}
    )
    assert (batch["total_updated"], batch["error_count"]) == (0, 1)
    assert "compliance state" in batch["errors"][0]["error"]
    assert status(mc, email) == "pending"
    assert member_state(mailchimp_emulator, email)["in_compliance_state"] is True
    # only the person's click on the confirmation makes them subscribed
    person(mailchimp_emulator, "confirm", email)
    assert status(mc, email) == "subscribed"
    assert member_state(mailchimp_emulator, email)["in_compliance_state"] is False
    mc.lists.update_list_member(LIST, md5(email), {"status": "unsubscribed"})  # an API unsubscribe now
    assert mc.lists.update_list_member(LIST, md5(email), {"status": "subscribed"})["status"] == "subscribed"


def test_compliance_state_survives_archive_and_an_api_unsubscribe_on_top(mc: Any, mailchimp_emulator: Any) -> None:
    add(mc, "left@example.org")
    person(mailchimp_emulator, "unsubscribe", "left@example.org")
    mc.lists.update_list_member(LIST, md5("left@example.org"), {"status": "pending"})
    mc.lists.update_list_member(LIST, md5("left@example.org"), {"status": "unsubscribed"})
    mc.lists.delete_list_member(LIST, md5("left@example.org"))
    assert member_state(mailchimp_emulator, "left@example.org")["unsubscribed_by"] == "person"
    assert (
        title_of_refusal(mc.lists.add_list_member, LIST, {"email_address": "left@example.org", "status": "subscribed"})
        == COMPLIANCE
    )


def test_the_persons_signup_form_lifts_compliance_state(mc: Any, mailchimp_emulator: Any) -> None:
    add(mc, "back@example.org")
    person(mailchimp_emulator, "unsubscribe", "back@example.org")
    person(mailchimp_emulator, "resubscribe", "back@example.org")
    assert status(mc, "back@example.org") == "subscribed"
    assert member_state(mailchimp_emulator, "back@example.org")["unsubscribed_by"] is None


# ---- admin and API unsubscribes -----------------------------------------------------------------


@pytest.mark.parametrize("by", ["admin", "api"])
def test_a_member_an_admin_or_the_api_unsubscribed_can_be_subscribed_through_the_api(
    mc: Any, mailchimp_emulator: Any, by: str
) -> None:
    emails = [f"{by}-{n}@example.org" for n in range(3)]
    for email in emails:
        add(mc, email)
        if by == "admin":
            person(mailchimp_emulator, "unsubscribe", email, by="admin")
        else:
            mc.lists.update_list_member(LIST, md5(email), {"status": "unsubscribed"})
        state = member_state(mailchimp_emulator, email)
        assert (state["status"], state["unsubscribed_by"], state["in_compliance_state"]) == ("unsubscribed", by, False)
        assert mc.lists.get_list_member(LIST, md5(email))["unsubscribe_reason"] == "N/A (Unsubscribed by admin)"
    assert mc.lists.update_list_member(LIST, md5(emails[0]), {"status": "subscribed"})["status"] == "subscribed"
    put = mc.lists.set_list_member(LIST, md5(emails[1]), {"email_address": emails[1], "status": "subscribed"})
    assert put["status"] == "subscribed"
    batch = mc.lists.batch_list_members(
        LIST, {"members": [{"email_address": emails[2], "status": "subscribed"}], "update_existing": True}
    )
    assert (batch["total_updated"], batch["error_count"]) == (1, 0)


def test_strict_mode_refuses_every_resubscribe_and_a_reset_keeps_the_constructor_mode(
    mc: Any, mailchimp_emulator: Any
) -> None:
    settings = mailchimp_emulator.admin.call("POST", "settings", {"compliance": "strict"})
    assert settings["compliance"] == "strict"
    add(mc, "by-api@example.org")
    add(mc, "by-admin@example.org")
    mc.lists.update_list_member(LIST, md5("by-api@example.org"), {"status": "unsubscribed"})
    person(mailchimp_emulator, "unsubscribe", "by-admin@example.org", by="admin")
    for email in ("by-api@example.org", "by-admin@example.org"):
        assert title_of_refusal(mc.lists.update_list_member, LIST, md5(email), {"status": "subscribed"}) == COMPLIANCE
        assert mc.lists.update_list_member(LIST, md5(email), {"status": "pending"})["status"] == "pending"
        assert title_of_refusal(mc.lists.update_list_member, LIST, md5(email), {"status": "subscribed"}) == COMPLIANCE
    person(mailchimp_emulator, "confirm", "by-api@example.org")
    assert status(mc, "by-api@example.org") == "subscribed"
    mailchimp_emulator.admin.reset()
    assert mailchimp_emulator.admin.call("POST", "settings", {})["compliance"] == "documented"
    with pytest.raises(RuntimeError, match="compliance must be one of"):
        mailchimp_emulator.admin.call("POST", "settings", {"compliance": "lenient"})


def test_seeded_unsubscribes_say_who_unsubscribed(mc: Any, mailchimp_emulator: Any) -> None:
    mailchimp_emulator.admin.seed(
        {
            "members": [
                {"list_id": LIST, "email_address": "self@example.org", "status": "unsubscribed"},
                {
                    "list_id": LIST,
                    "email_address": "admin@example.org",
                    "status": "unsubscribed",
                    "unsubscribed_by": "admin",
                },
                {"list_id": LIST, "email_address": "gone@example.org", "status": "cleaned"},
            ]
        }
    )
    assert title_of_refusal(mc.lists.update_list_member, LIST, md5("self@example.org"), {"status": "subscribed"}) == (
        COMPLIANCE
    )
    assert title_of_refusal(mc.lists.update_list_member, LIST, md5("gone@example.org"), {"status": "subscribed"}) == (
        COMPLIANCE
    )
    subscribed = mc.lists.update_list_member(LIST, md5("admin@example.org"), {"status": "subscribed"})
    assert subscribed["status"] == "subscribed"

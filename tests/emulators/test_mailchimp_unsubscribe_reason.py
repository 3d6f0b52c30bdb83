"""The member's ``unsubscribe_reason`` in the Mailchimp emulator: who unsubscribed decides it, reads show it while
the member is unsubscribed (``fields=`` included), and webhooks carry their own ``data[reason]``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.emulators.mailchimp_support import LIST, md5, official_client
from tests.emulators.test_mailchimp_webhooks import ALL_EVENTS, flush, register
from tests.emulators.webhook_receiver import Receiver, receiving

ADMIN = "N/A (Unsubscribed by admin)"
PEOPLE = [f"u{n}@example.org" for n in range(6)]


@pytest.fixture
def mc(mailchimp_emulator: Any) -> Any:
    mailchimp_emulator.admin.seed(
        {
            "audiences": [{"id": LIST, "name": "Newsletter"}],
            "members": [{"list_id": LIST, "email_address": e, "status": "subscribed"} for e in PEOPLE]
            + [
                {
                    "list_id": LIST,
                    "email_address": f"seeded-{by}@example.org",
                    "status": "unsubscribed",
                    "unsubscribed_by": by,
                }
                for by in ("admin", "api")
            ]
            + [
                {"list_id": LIST, "email_address": "seeded-person@example.org", "status": "unsubscribed"},
                {
                    "list_id": LIST,
                    "email_address": "seeded-said@example.org",
                    "status": "unsubscribed",
                    "unsubscribe_reason": "Moved away",
                },
            ],
        }
    )
    mailchimp_emulator.admin.call("POST", "webhooks/settings", {"timeScale": 0.0005})
    return official_client(mailchimp_emulator)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


def person(emulator: Any, action: str, email: str, **body: Any) -> Any:
    return emulator.admin.call("POST", f"people/{action}", {"list_id": LIST, "email_address": email, **body})


def reason(mc: Any, email: str) -> str | None:
    return mc.lists.get_list_member(LIST, md5(email)).get("unsubscribe_reason")


def test_the_persons_own_unsubscribe_keeps_their_reason_or_the_forms_default(mc: Any, mailchimp_emulator: Any) -> None:
    person(mailchimp_emulator, "unsubscribe", PEOPLE[0], reason="Too many emails")
    person(mailchimp_emulator, "unsubscribe", PEOPLE[1])
    assert reason(mc, PEOPLE[0]) == "Too many emails"
    assert reason(mc, PEOPLE[1]) == "I no longer want to receive these emails"
    assert reason(mc, PEOPLE[2]) is None  # subscribed: the field is not shown


def test_an_admin_unsubscribe_single_or_bulk_reads_as_an_admins(mc: Any, mailchimp_emulator: Any) -> None:
    person(mailchimp_emulator, "unsubscribe", PEOPLE[0], by="admin", reason="whatever the admin typed")
    mailchimp_emulator.admin.call("POST", "people/bulk-unsubscribe", {"list_id": LIST, "email_addresses": PEOPLE[1:3]})
    assert [reason(mc, e) for e in PEOPLE[:3]] == [ADMIN] * 3
    assert mc.lists.get_list_member(LIST, md5(PEOPLE[0]))["status"] == "unsubscribed"


def test_every_api_unsubscribe_reads_as_an_admins(mc: Any) -> None:
    mc.lists.update_list_member(LIST, md5(PEOPLE[0]), {"status": "unsubscribed"})
    mc.lists.set_list_member(LIST, md5(PEOPLE[1]), {"email_address": PEOPLE[1], "status": "unsubscribed"})
    answer = mc.lists.batch_list_members(
        LIST, {"members": [{"email_address": PEOPLE[2], "status": "unsubscribed"}], "update_existing": True}
    )
    assert answer["error_count"] == 0
    assert [reason(mc, e) for e in PEOPLE[:3]] == [ADMIN] * 3


def test_an_api_write_keeps_the_persons_reason_and_a_resubscription_clears_it(mc: Any, mailchimp_emulator: Any) -> None:
    person(mailchimp_emulator, "unsubscribe", PEOPLE[0], reason="Too many emails")
    mc.lists.update_list_member(LIST, md5(PEOPLE[0]), {"status": "unsubscribed", "merge_fields": {"FNAME": "U"}})
    assert reason(mc, PEOPLE[0]) == "Too many emails"  # still the person's unsubscribe
    person(mailchimp_emulator, "resubscribe", PEOPLE[0])
    assert mc.lists.get_list_member(LIST, md5(PEOPLE[0]))["status"] == "subscribed"
    assert reason(mc, PEOPLE[0]) is None
    mc.lists.update_list_member(LIST, md5(PEOPLE[0]), {"status": "unsubscribed"})
    assert reason(mc, PEOPLE[0]) == ADMIN


def test_a_cleaned_member_has_no_unsubscribe_reason(mc: Any, mailchimp_emulator: Any) -> None:
    person(mailchimp_emulator, "bounce", PEOPLE[0], type="hard")
    read = mc.lists.get_list_member(LIST, md5(PEOPLE[0]))
    assert read["status"] == "cleaned" and "unsubscribe_reason" not in read


def test_seeded_members_say_who_unsubscribed_them(mc: Any) -> None:
    assert reason(mc, "seeded-admin@example.org") == ADMIN
    assert reason(mc, "seeded-api@example.org") == ADMIN
    assert reason(mc, "seeded-person@example.org") == "I no longer want to receive these emails"
    assert reason(mc, "seeded-said@example.org") == "Moved away"


def test_a_member_page_returns_the_reason_when_fields_names_it(mc: Any, mailchimp_emulator: Any) -> None:
    person(mailchimp_emulator, "unsubscribe", PEOPLE[0], reason="Too many emails")
    page = mc.lists.get_list_members_info(
        LIST, fields=["members.email_address", "members.status", "members.unsubscribe_reason"], count=100
    )
    by_email = {m["email_address"]: m for m in page["members"]}
    assert by_email[PEOPLE[0]] == {
        "email_address": PEOPLE[0],
        "status": "unsubscribed",
        "unsubscribe_reason": "Too many emails",
    }
    assert by_email[PEOPLE[1]] == {"email_address": PEOPLE[1], "status": "subscribed"}
    assert by_email["seeded-admin@example.org"]["unsubscribe_reason"] == ADMIN
    one = mc.lists.get_list_member(LIST, md5(PEOPLE[0]), fields=["status", "unsubscribe_reason"])
    assert one == {"status": "unsubscribed", "unsubscribe_reason": "Too many emails"}
    without = mc.lists.get_list_members_info(LIST, fields=["members.email_address"], count=100)
    assert all(set(m) == {"email_address"} for m in without["members"])


def test_webhooks_say_manual_for_an_admin_and_name_the_campaign_of_a_footer_unsubscribe(
    mc: Any, mailchimp_emulator: Any, receiver: Receiver
) -> None:
    register(mailchimp_emulator, receiver.url + "/hook", events=ALL_EVENTS)
    person(mailchimp_emulator, "unsubscribe", PEOPLE[0], by="admin", reason="reported as spam by phone")
    campaign = mailchimp_emulator.admin.call("POST", "campaigns", {"list_id": LIST, "title": "Spring", "send": True})
    mailchimp_emulator.admin.call(
        "POST",
        f"campaigns/{campaign['id']}/activity",
        {"email_address": PEOPLE[1], "action": "unsubscribe", "reason": "Too many emails"},
    )
    flush(mailchimp_emulator)
    forms = {p.form["data[email]"]: p.form for p in receiver.posts()}
    assert (forms[PEOPLE[0]]["data[reason]"], forms[PEOPLE[0]]["data[campaign_id]"]) == ("manual", "")
    assert (forms[PEOPLE[1]]["data[reason]"], forms[PEOPLE[1]]["data[campaign_id]"]) == ("manual", campaign["id"])
    assert reason(mc, PEOPLE[1]) == "Too many emails"

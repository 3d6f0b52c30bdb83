"""Audience webhooks delivered by the Mailchimp emulator: validation, form bodies, sources, signing, retries, faults."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators.common import AdminClient, EmulatorServer
from emulators.mailchimp import MailchimpEmulator
from tests.emulators.mailchimp_support import KEY, LIST, md5
from tests.emulators.webhook_receiver import Receiver, receiving

ALL_EVENTS = {"subscribe": True, "unsubscribe": True, "profile": True, "cleaned": True, "upemail": True}
PEOPLE_SOURCES = {"user": True, "admin": True, "api": False}
FIRED_AT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


@pytest.fixture
def mc(mailchimp_emulator: Any) -> Any:
    """The emulator seeded with one audience (an interest category) and three subscribed members; fast retries."""
    admin = mailchimp_emulator.admin
    admin.seed(
        {
            "audiences": [{"id": LIST, "name": "Newsletter"}],
            "interest_categories": [
                {
                    "list_id": LIST,
                    "id": "cat1",
                    "title": "Topics",
                    "type": "checkboxes",
                    "interests": [{"id": "i1", "name": "News"}],
                }
            ],
            "members": [
                {
                    "list_id": LIST,
                    "email_address": f"p{n}@example.com",
                    "status": "subscribed",
                    "merge_fields": {"FNAME": f"P{n}"},
                }
                for n in range(3)
            ],
        }
    )
    admin.call("POST", "webhooks/settings", {"timeScale": 0.0005})
    return mailchimp_emulator


def register(
    running: Any, url: str, sources: dict[str, bool] = PEOPLE_SOURCES, events: Any = None
) -> requests.Response:
    return requests.post(
        f"{running.url}/3.0/lists/{LIST}/webhooks",
        json={"url": url, "events": events or ALL_EVENTS, "sources": sources},
        auth=("x", KEY),
        timeout=10,
    )


def flush(running: Any) -> dict[str, Any]:
    result = running.admin.call("POST", "webhooks/flush", {"timeoutSeconds": 10})
    assert result["idle"]
    return running.admin.call("GET", "webhooks/deliveries")


def person(running: Any, action: str, **body: Any) -> Any:
    return running.admin.call("POST", f"people/{action}", {"list_id": LIST, **body})


def test_registration_validates_the_url_with_a_get_and_shows_the_signing_secret_once(
    mc: Any, receiver: Receiver
) -> None:
    receiver.statuses.append(404)
    refused = register(mc, receiver.url + "/hook?secret=s")
    assert refused.status_code == 400 and refused.json()["title"] == "Invalid Resource"
    assert refused.json()["errors"][0]["field"] == "url"
    assert "HTTP Code: 404" in refused.json()["errors"][0]["message"]
    assert mc.admin.call("GET", f"webhooks?list_id={LIST}")["webhooks"] == []

    created = register(mc, receiver.url + "/hook?secret=s")
    assert created.status_code == 200
    assert len(created.json()["signing_secret"]) == 64 and created.json()["signing_enabled"] is True
    validations = [r for r in receiver.requests if r.method == "GET"]
    assert len(validations) == 2 and validations[-1].headers["User-Agent"] == "MailChimp.com WebHook Validator"
    assert validations[-1].query == {"secret": "s"}
    listed = requests.get(f"{mc.url}/3.0/lists/{LIST}/webhooks", auth=("x", KEY), timeout=10).json()["webhooks"]
    one = requests.get(f"{mc.url}/3.0/lists/{LIST}/webhooks/{created.json()['id']}", auth=("x", KEY), timeout=10)
    assert "signing_secret" not in listed[0] and "signing_secret" not in one.json()
    assert "signing_secret" not in mc.admin.call("GET", "webhooks")["webhooks"][0]
    again = register(mc, receiver.url + "/hook?secret=s")
    assert again.json()["detail"] == "Sorry, you can't set up multiple WebHooks for one URL on the same list."


def test_each_event_type_carries_the_documented_form_fields(mc: Any, receiver: Receiver) -> None:
    register(mc, receiver.url + "/hook")
    person(mc, "unsubscribe", email_address="p0@example.com", reason="This is spam, abuse")
    person(mc, "resubscribe", email_address="new@example.com", merge_fields={"FNAME": "Nea"})
    person(mc, "preferences", email_address="p1@example.com", interests={"i1": True}, merge_fields={"LNAME": "L"})
    person(mc, "change-email", email_address="p2@example.com", new_email_address="p2-new@example.com")
    person(mc, "bounce", email_address="p1@example.com", type="hard")
    flush(mc)
    posts = receiver.posts()
    by_type = {p.form["type"]: p for p in posts}
    assert sorted(by_type) == ["cleaned", "profile", "subscribe", "unsubscribe", "upemail"] and len(posts) == 5
    for post in posts:
        assert post.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert post.headers["User-Agent"] == "MailChimp.com"
        assert FIRED_AT.match(post.form["fired_at"])
        assert post.form["data[list_id]"] == LIST
    unsubscribe = by_type["unsubscribe"].form
    assert unsubscribe["data[email]"] == "p0@example.com" and unsubscribe["data[merges][EMAIL]"] == "p0@example.com"
    assert (unsubscribe["data[action]"], unsubscribe["data[reason]"], unsubscribe["data[campaign_id]"]) == (
        "unsub",
        "abuse",
        "",
    )
    assert unsubscribe["data[merges][FNAME]"] == "P0" and len(unsubscribe["data[id]"]) == 10
    assert unsubscribe["data[email_type]"] == "html" and "data[ip_signup]" not in unsubscribe
    subscribe = by_type["subscribe"].form
    assert subscribe["data[email]"] == "new@example.com" and subscribe["data[merges][FNAME]"] == "Nea"
    assert "data[ip_signup]" in subscribe and "data[action]" not in subscribe
    profile = by_type["profile"].form
    assert profile["data[merges][INTERESTS]"] == "News" and profile["data[merges][LNAME]"] == "L"
    upemail = by_type["upemail"].form
    assert (upemail["data[old_email]"], upemail["data[new_email]"]) == ("p2@example.com", "p2-new@example.com")
    assert len(upemail["data[new_id]"]) == 10
    cleaned = by_type["cleaned"].form
    assert (cleaned["data[email]"], cleaned["data[reason]"], cleaned["data[campaign_id]"]) == (
        "p1@example.com",
        "hard",
        "",
    )


def test_api_changes_reach_only_webhooks_with_the_api_source(mc: Any, receiver: Receiver) -> None:
    register(mc, receiver.url + "/people", PEOPLE_SOURCES)
    register(mc, receiver.url + "/api", {"user": False, "admin": False, "api": True})
    register(mc, receiver.url + "/admin", {"user": False, "admin": True, "api": False})
    patched = requests.patch(
        f"{mc.url}/3.0/lists/{LIST}/members/{md5('p0@example.com')}",
        json={"status": "unsubscribed"},
        auth=("x", KEY),
        timeout=10,
    )
    assert patched.status_code == 200
    batch = requests.post(
        f"{mc.url}/3.0/lists/{LIST}",
        json={"members": [{"email_address": "b@example.com", "status": "subscribed"}], "update_existing": True},
        auth=("x", KEY),
        timeout=10,
    )
    assert batch.json()["total_created"] == 1
    person(mc, "unsubscribe", email_address="p1@example.com")
    person(mc, "unsubscribe", email_address="p2@example.com", by="admin")
    flush(mc)
    seen = sorted((p.path, p.form["type"], p.form.get("data[email]")) for p in receiver.posts())
    assert seen == [
        ("/admin", "unsubscribe", "p2@example.com"),
        ("/api", "subscribe", "b@example.com"),
        ("/api", "unsubscribe", "p0@example.com"),
        ("/people", "unsubscribe", "p1@example.com"),
        ("/people", "unsubscribe", "p2@example.com"),
    ]
    sources = {d["source"] for d in mc.admin.call("GET", "webhooks/deliveries")["deliveries"]}
    assert sources == {"api", "user", "admin"}


def test_a_patch_changes_the_url_events_and_sources(mc: Any, receiver: Receiver) -> None:
    hook = register(mc, receiver.url + "/old").json()
    where = f"{mc.url}/3.0/lists/{LIST}/webhooks/{hook['id']}"
    receiver.statuses.append(500)
    refused = requests.patch(where, json={"url": receiver.url + "/new"}, auth=("x", KEY), timeout=10)
    assert refused.status_code == 400 and "HTTP Code: 500" in refused.json()["errors"][0]["message"]
    patched = requests.patch(
        where,
        json={"url": receiver.url + "/new", "sources": {"api": True}, "events": {"subscribe": False}},
        auth=("x", KEY),
        timeout=10,
    ).json()
    assert patched["url"] == receiver.url + "/new" and "signing_secret" not in patched
    assert patched["sources"] == {"user": True, "admin": True, "api": True} and patched["events"]["subscribe"] is False
    requests.patch(
        f"{mc.url}/3.0/lists/{LIST}/members/{md5('p0@example.com')}",
        json={"status": "unsubscribed"},
        auth=("x", KEY),
        timeout=10,
    )
    flush(mc)
    assert [(p.path, p.form["type"]) for p in receiver.posts()] == [("/new", "unsubscribe")]


def test_signed_deliveries_verify_with_the_signing_secret(mc: Any, receiver: Receiver) -> None:
    secret = register(mc, receiver.url + "/signed").json()["signing_secret"]
    mc.admin.call("POST", "settings", {"signWebhooks": False})
    assert "signing_secret" not in register(mc, receiver.url + "/legacy").json()
    person(mc, "unsubscribe", email_address="p0@example.com")
    flush(mc)
    posts = {p.path: p for p in receiver.posts()}
    header = posts["/signed"].headers["X-Mailchimp-Signature"]
    found = re.match(r"^t=(\d+),v1=([0-9a-f]{64})$", header)
    assert found is not None
    expected = hmac.new(secret.encode(), found.group(1).encode() + b"." + posts["/signed"].body, hashlib.sha256)
    assert hmac.compare_digest(expected.hexdigest(), found.group(2))
    forged = hmac.new(b"another secret", found.group(1).encode() + b"." + posts["/signed"].body, hashlib.sha256)
    assert not hmac.compare_digest(forged.hexdigest(), found.group(2))
    assert "X-Mailchimp-Signature" not in posts["/legacy"].headers


def test_a_failed_delivery_is_retried_until_it_succeeds(mc: Any, receiver: Receiver) -> None:
    register(mc, receiver.url + "/hook")
    receiver.statuses.extend([500, 503])
    person(mc, "unsubscribe", email_address="p0@example.com")
    (delivery,) = flush(mc)["deliveries"]
    assert delivery["state"] == "delivered"
    assert [a["status"] for a in delivery["attempts"]] == [500, 503, 200]
    assert [p.body for p in receiver.posts()] == [receiver.posts()[0].body] * 3


def test_a_delivery_that_keeps_failing_is_given_up_after_the_schedule(mc: Any, receiver: Receiver) -> None:
    register(mc, receiver.url + "/hook")
    mc.admin.call("POST", "webhooks/settings", {"timeScale": 0.0001})  # 75 minutes in under half a second
    receiver.default = 500
    person(mc, "unsubscribe", email_address="p0@example.com")
    (delivery,) = flush(mc)["deliveries"]
    assert delivery["state"] == "failed" and len(delivery["attempts"]) == 8  # the first try and 7 retries


def test_a_410_disables_the_webhook(mc: Any, receiver: Receiver) -> None:
    register(mc, receiver.url + "/gone")
    receiver.statuses.append(410)
    person(mc, "unsubscribe", email_address="p0@example.com")
    flush(mc)
    person(mc, "unsubscribe", email_address="p1@example.com")
    result = flush(mc)
    assert [d["state"] for d in result["deliveries"]] == ["disabled"]
    assert len(receiver.posts()) == 1
    assert mc.admin.call("GET", "webhooks")["webhooks"][0]["disabled"] is True


def test_a_bulk_admin_unsubscribe_delivers_one_event_per_member(mailchimp_emulator: Any, receiver: Receiver) -> None:
    admin = mailchimp_emulator.admin
    people = [f"bulk{n}@example.com" for n in range(600)]
    admin.seed(
        {
            "audiences": [{"id": LIST, "name": "Newsletter"}],
            "members": [{"list_id": LIST, "email_address": e, "status": "subscribed"} for e in people],
        }
    )
    register(mailchimp_emulator, receiver.url + "/bulk")
    done = admin.call("POST", "people/bulk-unsubscribe", {"list_id": LIST, "email_addresses": people})
    assert done["unsubscribed"] == 600
    result = flush(mailchimp_emulator)
    assert result["counts"] == {"delivered": 600}
    posts = receiver.posts()
    assert sorted(p.form["data[email]"] for p in posts) == sorted(people)
    assert {(p.form["type"], p.form["data[reason]"]) for p in posts} == {("unsubscribe", "manual")}


def _faulty_run(running: Any, url: str) -> list[tuple[str, str]]:
    admin = running.admin
    admin.reset()
    people = [f"f{n}@example.com" for n in range(500)]
    admin.seed(
        {
            "audiences": [{"id": LIST, "name": "Newsletter"}],
            "members": [{"list_id": LIST, "email_address": e, "status": "subscribed"} for e in people],
        }
    )
    admin.call("POST", "webhooks/faults", {"drop": 0.3, "duplicate": 0.1, "seed": 7})
    register(running, url)
    admin.call("POST", "people/bulk-unsubscribe", {"list_id": LIST, "email_addresses": people})
    deliveries = flush(running)["deliveries"]
    return sorted((d["state"], d["body"].split("data%5Bemail%5D=")[1].split("&")[0]) for d in deliveries)


def test_dropped_and_duplicated_deliveries_follow_the_seeded_shares(
    mailchimp_emulator: Any, receiver: Receiver
) -> None:
    first = _faulty_run(mailchimp_emulator, receiver.url + "/faulty")
    dropped = [email for state, email in first if state == "dropped"]
    delivered = [email for state, email in first if state == "delivered"]
    assert 120 <= len(dropped) <= 180  # 30 % of 500
    duplicated = len(delivered) - len(set(delivered))
    assert 20 <= duplicated <= 55  # 10 % of the 350 or so sent
    assert len(set(delivered)) + len(dropped) == 500
    received = [p.form["data[email]"] for p in receiver.posts()]
    assert len(received) == len(delivered)
    assert _faulty_run(mailchimp_emulator, receiver.url + "/faulty") == first  # the same seed, the same faults


def test_a_reset_forgets_queued_deliveries(mc: Any, receiver: Receiver) -> None:
    register(mc, receiver.url + "/slow")
    mc.admin.call("POST", "webhooks/settings", {"timeScale": 1.0})
    receiver.default = 500
    person(mc, "unsubscribe", email_address="p0@example.com")
    receiver.wait_for_posts(1)
    deadline = time.monotonic() + 5
    while mc.admin.call("GET", "webhooks/deliveries")["inFlight"] and time.monotonic() < deadline:
        time.sleep(0.01)  # the first attempt's answer is being recorded
    before = mc.admin.call("GET", "webhooks/deliveries")
    assert before["queued"] == 1 and not before["idle"]  # the retry waits a minute
    mc.admin.reset()
    after = mc.admin.call("GET", "webhooks/deliveries")
    assert after["deliveries"] == [] and after["idle"] and after["queued"] == 0
    assert mc.admin.call("GET", "webhooks/settings")["timeScale"] == 1.0


def test_campaign_activity_delivers_the_campaign_and_its_unsubscribes(mc: Any, receiver: Receiver) -> None:
    register(mc, receiver.url + "/hook", events={**ALL_EVENTS, "campaign": True})
    campaign = mc.admin.call("POST", "campaigns", {"list_id": LIST, "subject_line": "Spring", "send": True})
    mc.admin.call(
        "POST",
        f"campaigns/{campaign['id']}/activity",
        {
            "events": [
                {"email_address": "p0@example.com", "action": "unsubscribe"},
                {"email_address": "p1@example.com", "action": "bounce"},
            ]
        },
    )
    flush(mc)
    forms = {p.form["type"]: p.form for p in receiver.posts()}
    assert forms["campaign"]["data[id]"] == campaign["id"] and forms["campaign"]["data[subject]"] == "Spring"
    assert forms["campaign"]["data[status]"] == "sent"
    assert (
        forms["unsubscribe"]["data[campaign_id"]
        if False
        else forms["unsubscribe"]["data[campaign_id]"] == campaign["id"]
    )
    assert forms["cleaned"]["data[campaign_id]"] == campaign["id"]


def test_stopping_the_server_stops_the_delivery_workers(receiver: Receiver) -> None:
    running_before = set(threading.enumerate())
    with EmulatorServer(MailchimpEmulator()) as server:
        admin = AdminClient(server.url)
        admin.seed(
            {
                "audiences": [{"id": LIST, "name": "Newsletter"}],
                "members": [{"list_id": LIST, "email_address": "w@example.com", "status": "subscribed"}],
            }
        )
        register(server, receiver.url + "/hook")
        admin.call("POST", "people/unsubscribe", {"list_id": LIST, "email_address": "w@example.com"})
        assert admin.call("POST", "webhooks/flush", {})["counts"] == {"delivered": 1}
        workers = [t for t in set(threading.enumerate()) - running_before if t.name.startswith("mailchimp-webhooks-")]
        assert workers
    assert not any(t.is_alive() for t in workers)

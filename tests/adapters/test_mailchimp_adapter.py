"""The Mailchimp adapter against the Mailchimp emulator over loopback: every method and every quirk."""

from __future__ import annotations

import logging
import random
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from shared.adapters.mailchimp import (
    BatchResult,
    Mailchimp,
    MailchimpError,
    mailchimp_time,
)
from shared.errors import ConfigurationError
from shared.rules.addresses import member_hash, redact_emails
from tests.conftest import Running

KEY = "0123456789abcdef0123456789abcdef-us21"
LIST = "a1b2c3d4e5"
HASH = re.compile(r"^[0-9a-f]{32}$")
EVENTS = {"subscribe": True, "unsubscribe": True, "profile": True, "cleaned": True, "upemail": True, "campaign": False}
SOURCES = {"user": True, "admin": True, "api": False}


def fresh_key() -> str:
    """A key no other test uses, so the process-wide connection cap starts clean."""
    return f"{uuid.uuid4().hex}-us21"


def adapter(running: Running, key: str = KEY, **options: Any) -> Mailchimp:
    options = {"backoff_seconds": 0.001, "timeout": 10, **options}
    return Mailchimp(key, running.url + "/3.0", **options)


@pytest.fixture
def mc(mailchimp_emulator: Running) -> Mailchimp:
    return adapter(mailchimp_emulator)


def seed(running: Running, members: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    body = {
        "audiences": [{"id": LIST, "name": "Newsletter"}],
        "members": [{"list_id": LIST, **m} for m in members or []],
        **extra,
    }
    return running.admin.seed(body)


def people(count: int, prefix: str = "person", status: str = "subscribed") -> list[dict[str, Any]]:
    return [{"email_address": f"{prefix}{i}@example.com", "status": status} for i in range(count)]


def member_state(running: Running, email: str) -> dict[str, Any] | None:
    return running.admin.state(list_id=LIST)["audiences"][LIST]["members"].get(member_hash(email))


def faults_injected(running: Running) -> dict[str, int]:
    return running.admin.call("GET", "calls")["faultsInjected"]


def first_draw_faults(rate: float) -> int:
    """A fault seed whose first request draws a fault and whose second does not (the base draws once per call)."""
    for candidate in range(1000):
        rng = random.Random(candidate)
        if rng.random() < rate and rng.random() >= rate:
            return candidate
    raise AssertionError("no such seed")


# ---- values and configuration ----------------------------------------------------------------------


def test_the_subscriber_hash_is_the_md5_of_the_trimmed_lower_case_address() -> None:
    assert member_hash("  Ann.Lee@Example.COM ") == "ac22d1dff811ced3068af057a3ed7029"
    # refused before any request is made, so no emulator is needed
    with pytest.raises(ValueError, match="empty"):
        Mailchimp(KEY, "http://127.0.0.1:9/3.0").upsert_member(LIST, "   ", status_if_new="subscribed")


def test_times_go_out_as_whole_seconds_in_utc() -> None:
    cet = timezone(timedelta(hours=1))
    assert mailchimp_time(datetime(2024, 5, 1, 13, 30, 15, 987654, tzinfo=cet)) == "2024-05-01T12:30:15+00:00"
    with pytest.raises(ValueError, match="timezone-aware"):
        mailchimp_time(datetime(2024, 5, 1, 12, 0))


def test_emails_in_text_become_member_hashes() -> None:
    text = redact_emails("Ann.Lee@Example.com is in a compliance state; so is bo@x.org.")
    assert text == (
        f"member {member_hash('ann.lee@example.com')} is in a compliance state; so is member {member_hash('bo@x.org')}."
    )


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:4010/server/3.0", "https://mailserver.example.com/3.0", "https://SERVER.example.com/3.0"],
)
def test_a_base_url_containing_server_is_refused(base_url: str) -> None:
    with pytest.raises(ConfigurationError, match="MAILCHIMP_BASE_URL: must not contain the word 'server'") as refused:
        Mailchimp(KEY, base_url)
    assert refused.value.subject == "MAILCHIMP_BASE_URL"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://10.1.2.3:4010/3.0", "must use https"),
        ("http://127.0.0.1:4010", "ending in /3.0"),
        ("https://user:pw@us21.api.mailchimp.com/3.0", "without credentials"),
        ("ftp://us21.api.mailchimp.com/3.0", "must be an https URL"),
    ],
)
def test_other_unusable_base_urls_are_refused_with_the_setting_named(base_url: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=f"MAILCHIMP_BASE_URL.*{expected}"):
        Mailchimp(KEY, base_url)


def test_the_api_root_defaults_to_the_data_center_of_the_key() -> None:
    assert Mailchimp(KEY).base_url == "https://us21.api.mailchimp.com/3.0"
    assert Mailchimp(KEY, "").base_url == "https://us21.api.mailchimp.com/3.0"
    with pytest.raises(ConfigurationError, match="MAILCHIMP_API_KEY: must end in -<dc>") as refused:
        Mailchimp("0123456789abcdef0123456789abcdef")
    assert "0123456789abcdef" not in str(refused.value)
    with pytest.raises(ConfigurationError, match="MAILCHIMP_API_KEY: is empty"):
        Mailchimp(" ")
    assert KEY not in repr(Mailchimp(KEY))


def test_the_client_rewrite_of_server_is_off_so_ids_containing_it_reach_the_api(
    mailchimp_emulator: Running, mc: Mailchimp
) -> None:
    # the 3.0.80 client would turn /lists/serverlist into /lists/us21list
    mailchimp_emulator.admin.seed({"audiences": [{"id": "serverlist", "name": "Odd id"}]})
    assert mc.audience("serverlist")["id"] == "serverlist"
    assert mailchimp_emulator.admin.requests()[-1]["path"] == "/3.0/lists/serverlist"


@dataclass(frozen=True)
class FakeSettings:
    mailchimp_api_key: str
    mailchimp_base_url: str
    mailchimp_max_connections: int


def test_from_settings_reads_key_root_and_connection_cap(mailchimp_emulator: Running) -> None:
    settings = FakeSettings(fresh_key(), mailchimp_emulator.url + "/3.0", 3)
    mc = Mailchimp.from_settings(settings)
    assert (mc.base_url, mc.max_connections) == (settings.mailchimp_base_url, 3)
    mc.ping()
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/ping": 1}


# ---- account and audience ---------------------------------------------------------------------------


def test_ping_and_audience(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(3))
    assert mc.ping() is None
    audience = mc.audience(LIST)
    assert (audience["id"], audience["name"], audience["stats"]["member_count"]) == (LIST, "Newsletter", 3)


def test_a_wrong_key_is_a_401_that_names_the_setting_and_is_not_retried(mailchimp_emulator: Running) -> None:
    mc = adapter(mailchimp_emulator, key="not-a-real-key-us21")
    with pytest.raises(MailchimpError) as refused:
        mc.ping()
    assert (refused.value.status, refused.value.title, refused.value.attempts) == (401, "API Key Invalid", 1)
    assert "MAILCHIMP_API_KEY" in str(refused.value)
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/ping": 1}


def test_an_unknown_audience_is_a_404_that_says_where_to_look(mc: Mailchimp) -> None:
    with pytest.raises(MailchimpError, match="SYNC_LINKS") as refused:
        mc.audience("0000000000")
    assert refused.value.status == 404


# ---- reading members --------------------------------------------------------------------------------


def test_paging_over_2500_members_is_3_calls_oldest_change_first(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    order = list(range(2500))
    random.Random(3).shuffle(order)
    seed(
        mailchimp_emulator,
        [
            {
                "email_address": f"person{i}@example.com",
                "status": "subscribed",
                "last_changed": (start + timedelta(minutes=order[i])).isoformat(),
            }
            for i in range(2500)
        ],
    )
    pages = list(
        mc.iter_member_pages(LIST, since_last_changed=None, fields=["email_address", "status", "last_changed"])
    )
    assert [len(page) for page in pages] == [1000, 1000, 500]
    members = [m for page in pages for m in page]
    assert {m["email_address"] for m in members} == {f"person{i}@example.com" for i in range(2500)}
    assert [m["last_changed"] for m in members] == sorted(m["last_changed"] for m in members)
    assert set(members[0]) == {"email_address", "status", "last_changed"}
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/lists/{list_id}/members": 3}
    sent = [r["query"] for r in mailchimp_emulator.admin.requests()]
    assert [q["offset"] for q in sent] == [["0"], ["1000"], ["2000"]]
    for query in sent:
        assert query["fields"] == ["members.email_address,members.status,members.last_changed,total_items"]
        assert (query["count"], query["sort_field"], query["sort_dir"]) == (["1000"], ["last_changed"], ["ASC"])


@pytest.mark.parametrize("newest_first, skips", [(True, False), (False, True)])
def test_a_change_during_the_read_skips_nobody_when_reading_newest_first(
    mailchimp_emulator: Running, mc: Mailchimp, newest_first: bool, skips: bool
) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    seed(
        mailchimp_emulator,
        [
            {
                "email_address": f"person{i}@example.com",
                "status": "subscribed",
                "last_changed": (start + timedelta(minutes=i)).isoformat(),
            }
            for i in range(2500)
        ],
    )
    pages = mc.iter_member_pages(LIST, since_last_changed=None, fields=["email_address"], newest_first=newest_first)
    seen = {m["email_address"] for m in next(pages)}
    first_page = sorted(seen, key=lambda e: int(e[6:].split("@")[0]))
    mailchimp_emulator.admin.call(
        "POST", "people/unsubscribe", {"list_id": LIST, "email_address": first_page[len(first_page) // 2]}
    )
    for page in pages:
        seen |= {m["email_address"] for m in page}
    missing = {f"person{i}@example.com" for i in range(2500)} - seen
    # oldest first, the changed member jumps to the end and the offsets skip its neighbour
    assert bool(missing) is skips


def test_paging_stops_at_total_items_without_an_empty_extra_call(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(2000))
    pages = list(mc.iter_member_pages(LIST, since_last_changed=None, fields=["email_address"]))
    assert [len(page) for page in pages] == [1000, 1000]
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/lists/{list_id}/members": 2}


def test_an_empty_audience_yields_no_pages(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator)
    assert list(mc.iter_member_pages(LIST, since_last_changed=None, fields=["email_address"])) == []


def test_since_last_changed_reads_only_later_changes_and_goes_out_in_whole_utc_seconds(
    mailchimp_emulator: Running, mc: Mailchimp
) -> None:
    seed(
        mailchimp_emulator,
        [
            {"email_address": "old@example.com", "status": "subscribed", "last_changed": "2024-05-01T08:00:00+00:00"},
            {"email_address": "new@example.com", "status": "unsubscribed", "last_changed": "2024-05-01T11:00:00+00:00"},
            {"email_address": "pending@example.com", "status": "pending", "last_changed": "2024-05-01T12:00:00+00:00"},
        ],
    )
    since = datetime(2024, 5, 1, 11, 30, 0, 250000, tzinfo=timezone(timedelta(hours=1)))  # 10:30:00.25 UTC
    pages = list(mc.iter_member_pages(LIST, since_last_changed=since, fields=["email_address", "status"]))
    assert [[m["email_address"] for m in page] for page in pages] == [["new@example.com", "pending@example.com"]]
    only_unsubscribed = list(
        mc.iter_member_pages(
            LIST, since_last_changed=since, fields=["email_address"], status="unsubscribed", page_size=1
        )
    )
    assert only_unsubscribed == [[{"email_address": "new@example.com"}]]
    queries = [r["query"] for r in mailchimp_emulator.admin.requests()]
    assert {q["since_last_changed"][0] for q in queries} == {"2024-05-01T10:30:00+00:00"}
    assert queries[-1]["status"] == ["unsubscribed"]


def test_fields_given_as_one_string_still_go_out_as_a_comma_list(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(1))
    found = mc.member(LIST, member_hash("person0@example.com"), fields="email_address,status")  # type: ignore[arg-type]
    assert found == {"email_address": "person0@example.com", "status": "subscribed"}
    assert mailchimp_emulator.admin.requests()[-1]["query"] == {"fields": ["email_address,status"]}


def test_a_page_size_over_1000_is_refused_before_any_call(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    with pytest.raises(ValueError, match="1000"):
        next(mc.iter_member_pages(LIST, since_last_changed=None, fields=["email_address"], page_size=1001))
    assert mailchimp_emulator.admin.calls() == {}


def test_member_returns_the_member_or_none(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(1))
    found = mc.member(LIST, member_hash("person0@example.com"))
    assert found is not None and (found["id"], found["status"]) == (
        member_hash("person0@example.com"),
        "subscribed",
    )
    assert mc.member(LIST, member_hash("nobody@example.com")) is None


def test_an_email_is_never_sent_where_a_subscriber_hash_belongs(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, [{"email_address": "serverops@example.com", "status": "subscribed"}])
    for call in (
        lambda: mc.member(LIST, "serverops@example.com"),
        lambda: mc.update_member(LIST, "serverops@example.com", {"status": "unsubscribed"}),
        lambda: mc.archive_member(LIST, "serverops@example.com"),
        lambda: mc.update_member_tags(LIST, "serverops@example.com", {"vip": True}),
    ):
        with pytest.raises(ValueError, match="subscriber_hash") as refused:
            call()
        assert "serverops" not in str(refused.value)
    assert mailchimp_emulator.admin.calls() == {}
    assert mc.member(LIST, member_hash("serverops@example.com"))["status"] == "subscribed"


# ---- writing members --------------------------------------------------------------------------------


def test_upsert_adds_with_status_if_new_and_never_overrides_an_existing_choice(
    mailchimp_emulator: Running, mc: Mailchimp
) -> None:
    seed(mailchimp_emulator, [{"email_address": "gone@example.com", "status": "unsubscribed"}])
    added = mc.upsert_member(LIST, " New.Person@Example.com", status_if_new="pending", merge_fields={"FNAME": "Ann"})
    assert (added["id"], added["status"]) == (member_hash("new.person@example.com"), "pending")
    kept = mc.upsert_member(LIST, "gone@example.com", status_if_new="subscribed")
    assert kept["status"] == "unsubscribed"
    bodies = [r["body"] for r in mailchimp_emulator.admin.requests()]
    assert bodies[0] == {
        "email_address": "New.Person@Example.com",
        "status_if_new": "pending",
        "merge_fields": {"FNAME": "Ann"},
    }
    assert "status" not in bodies[1]
    paths = [r["path"] for r in mailchimp_emulator.admin.requests()]
    assert paths == [
        f"/3.0/lists/{LIST}/members/{member_hash('new.person@example.com')}",
        f"/3.0/lists/{LIST}/members/{member_hash('gone@example.com')}",
    ]


def test_upsert_with_status_changes_an_existing_member(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(1))
    changed = mc.upsert_member(LIST, "person0@example.com", status_if_new="subscribed", status="unsubscribed")
    assert changed["status"] == "unsubscribed"
    assert member_state(mailchimp_emulator, "person0@example.com")["status"] == "unsubscribed"


def test_update_member_unsubscribes_and_changes_the_address(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(2))
    old = member_hash("person0@example.com")
    moved = mc.update_member(LIST, old, {"email_address": "moved@example.com"})
    assert moved["id"] == member_hash("moved@example.com")
    assert mc.member(LIST, old) is None
    unsubscribed = mc.update_member(LIST, member_hash("person1@example.com"), {"status": "unsubscribed"})
    assert unsubscribed["status"] == "unsubscribed"
    assert [r["method"] for r in mailchimp_emulator.admin.requests()] == ["PATCH", "GET", "PATCH"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"status": "transactional"}, "status must be one of"),
        ({"status": "archived"}, "status must be one of"),
        ({"status_if_new": "subscribed"}, "not accepted here"),
        ({"tags": ["vip"]}, "not accepted here"),
        ({"interests": {"abc": "yes"}}, "true or false"),
        ({}, "at least one change"),
    ],
)
def test_update_member_sends_only_what_the_schema_allows(
    mailchimp_emulator: Running, mc: Mailchimp, changes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        mc.update_member(LIST, member_hash("a@example.com"), changes)
    assert mailchimp_emulator.admin.calls() == {}


def test_member_in_compliance_state_is_a_typed_error_with_the_hash_and_without_the_email(
    mailchimp_emulator: Running, mc: Mailchimp, caplog: pytest.LogCaptureFixture
) -> None:
    email = "Opted.Out@Example.com"
    seed(mailchimp_emulator, [{"email_address": email, "status": "unsubscribed"}])
    hashed = member_hash(email)
    with caplog.at_level(logging.DEBUG), pytest.raises(MailchimpError) as refused:
        mc.update_member(LIST, hashed, {"status": "subscribed"})
    error = refused.value
    assert (error.status, error.title, error.member_hash) == (400, "Member In Compliance State", hashed)
    assert error.is_member_refusal and not error.retryable and error.attempts == 1
    assert hashed in str(error)
    everything = " ".join([str(error), repr(error.args), error.detail, repr(error.errors), caplog.text]).lower()
    assert "opted.out" not in everything and "@" not in everything
    assert "compliance state" in error.detail
    assert mailchimp_emulator.admin.calls() == {"PATCH /3.0/lists/{list_id}/members/{subscriber_hash}": 1}
    # the same refusal through PUT, where the email also travels in the body
    with pytest.raises(MailchimpError) as again:
        mc.upsert_member(LIST, email, status_if_new="subscribed", status="subscribed")
    assert again.value.member_hash == hashed and "@" not in str(again.value)


def test_a_permanently_deleted_address_is_a_member_refusal(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, forgotten=[{"list_id": LIST, "email_address": "erased@example.com"}])
    with pytest.raises(MailchimpError) as refused:
        mc.upsert_member(LIST, "erased@example.com", status_if_new="pending")
    assert refused.value.title == "Forgotten Email Not Subscribed" and refused.value.is_member_refusal
    assert "erased" not in str(refused.value)


def test_archive_member_turns_the_empty_204_into_none(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(1))
    hashed = member_hash("person0@example.com")
    assert mc.archive_member(LIST, hashed) is None
    assert member_state(mailchimp_emulator, "person0@example.com")["status"] == "archived"
    with pytest.raises(MailchimpError) as refused:
        mc.archive_member(LIST, member_hash("nobody@example.com"))
    assert refused.value.status == 404


# ---- batch subscribe --------------------------------------------------------------------------------


def test_batch_subscribe_splits_1200_members_into_3_calls_and_reports_refusals_by_hash(
    mailchimp_emulator: Running, mc: Mailchimp
) -> None:
    seed(mailchimp_emulator, [*people(100), {"email_address": "opted.out@example.com", "status": "unsubscribed"}])
    members = [
        {"email_address": f"person{i}@example.com", "status_if_new": "subscribed", "merge_fields": {"FNAME": f"P{i}"}}
        for i in range(1197)
    ]
    members += [
        {"email_address": "opted.out@example.com", "status": "subscribed"},
        {"email_address": "robot@mailinator.test", "status_if_new": "subscribed"},
        {
            "email_address": "timed@example.com",
            "status_if_new": "subscribed",
            "timestamp_signup": datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=UTC),
        },
    ]
    result = mc.batch_subscribe(LIST, members)
    assert isinstance(result, BatchResult)
    assert (len(result.new_members), len(result.updated_members), result.calls) == (1098, 100, 3)
    assert {e.member_hash for e in result.errors} == {
        member_hash("opted.out@example.com"),
        member_hash("robot@mailinator.test"),
    }
    assert all("@" not in e.error and e.error_code == "ERROR_GENERIC" for e in result.errors)
    bodies = [r["body"] for r in mailchimp_emulator.admin.requests()]
    assert [len(b["members"]) for b in bodies] == [500, 500, 200]
    assert all(b["update_existing"] is True for b in bodies)
    assert bodies[-1]["members"][-1]["timestamp_signup"] == "2024-05-01T12:00:00+00:00"
    assert member_state(mailchimp_emulator, "person1100@example.com")["merge_fields"] == {"FNAME": "P1100"}


def test_batch_subscribe_without_update_existing_reports_existing_members(
    mailchimp_emulator: Running, mc: Mailchimp
) -> None:
    seed(mailchimp_emulator, people(2))
    result = mc.batch_subscribe(
        LIST,
        [
            {"email_address": "person0@example.com", "status": "unsubscribed"},
            {"email_address": "fresh@example.com", "status": "subscribed"},
        ],
        update_existing=False,
    )
    assert [m["email_address"] for m in result.new_members] == ["fresh@example.com"]
    assert [(e.member_hash, e.error_code) for e in result.errors] == [
        (member_hash("person0@example.com"), "ERROR_CONTACT_EXISTS")
    ]
    assert member_state(mailchimp_emulator, "person0@example.com")["status"] == "subscribed"


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ({"email_address": "a@example.com"}, "needs status or status_if_new"),
        ({"status": "subscribed"}, "needs an email_address"),
        ({"email_address": "a@example.com", "status": "archived"}, "status must be one of"),
        ({"email_address": "a@example.com", "status": "subscribed", "marketing_permissions": []}, "not accepted"),
    ],
)
def test_batch_subscribe_refuses_members_the_schema_does_not_allow(
    mailchimp_emulator: Running, mc: Mailchimp, member: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        mc.batch_subscribe(LIST, [member])
    assert mailchimp_emulator.admin.calls() == {}


# ---- tags -------------------------------------------------------------------------------------------


def test_member_tags_go_on_and_off_through_the_empty_204(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(1))
    hashed = member_hash("person0@example.com")
    assert mc.update_member_tags(LIST, hashed, {"Newsletter 2024": True, "VIP": True}) is None
    assert sorted(member_state(mailchimp_emulator, "person0@example.com")["tags"]) == ["Newsletter 2024", "VIP"]
    mc.update_member_tags(LIST, hashed, {"VIP": False})
    assert member_state(mailchimp_emulator, "person0@example.com")["tags"] == ["Newsletter 2024"]
    mc.update_member_tags(LIST, hashed, {})  # nothing to change, nothing sent
    assert [r["body"] for r in mailchimp_emulator.admin.requests()] == [
        {"tags": [{"name": "Newsletter 2024", "status": "active"}, {"name": "VIP", "status": "active"}]},
        {"tags": [{"name": "VIP", "status": "inactive"}]},
    ]


def test_tag_members_are_added_and_removed_in_bulk_500_per_call(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(
        mailchimp_emulator,
        [*people(600), {"email_address": "tagged@example.com", "status": "subscribed", "tags": ["Newsletter"]}],
    )
    assert mc.tag_segment_id(LIST, "nope") is None
    segment_id = mc.tag_segment_id(LIST, "Newsletter")
    assert segment_id is not None and mc.tag_segment_id(LIST, "newsletter") == segment_id
    emails = [f"person{i}@example.com" for i in range(600)]
    added = mc.add_tag_members(LIST, "Newsletter", [*emails, "stranger@example.com"])
    assert (added.changed, added.calls) == (600, 2)
    assert [e.member_hash for e in added.errors] == [member_hash("stranger@example.com")]
    removed = mc.remove_tag_members(LIST, "Newsletter", [*emails[:550], "tagged@example.com"])
    assert (removed.changed, removed.calls, removed.errors) == (551, 2, [])
    tagged = [
        m
        for m in mailchimp_emulator.admin.state(list_id=LIST)["audiences"][LIST]["members"].values()
        if "Newsletter" in m["tags"]
    ]
    assert len(tagged) == 50
    segment_bodies = [r["body"] for r in mailchimp_emulator.admin.requests() if r["method"] == "POST"]
    assert [len(next(iter(b.values()))) for b in segment_bodies] == [500, 101, 500, 51]
    assert all(set(b) in ({"members_to_add"}, {"members_to_remove"}) for b in segment_bodies)


def test_removing_members_of_a_tag_that_does_not_exist_is_a_no_op(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(1))
    result = mc.remove_tag_members(LIST, "Never created", ["person0@example.com"])
    assert (result.changed, result.calls) == (0, 0)
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/lists/{list_id}/segments": 1}
    with pytest.raises(MailchimpError, match="update_member_tags"):
        mc.add_tag_members(LIST, "Never created", ["person0@example.com"])


# ---- interests --------------------------------------------------------------------------------------


def test_interest_categories_and_their_interests(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seeded = seed(
        mailchimp_emulator,
        people(1),
        interest_categories=[
            {
                "list_id": LIST,
                "title": "Topics",
                "type": "checkboxes",
                "interests": [{"name": "Events"}, {"name": "Offers"}],
            },
            {"list_id": LIST, "title": "Frequency", "type": "radio", "interests": [{"name": "Weekly"}]},
        ],
    )
    categories = mc.interest_categories(LIST)
    assert [(c["title"], c["type"]) for c in categories] == [("Topics", "checkboxes"), ("Frequency", "radio")]
    topics = mc.interests(LIST, categories[0]["id"])
    assert [i["name"] for i in topics] == ["Events", "Offers"]
    assert [i["id"] for i in topics] == [i["id"] for i in seeded["interest_categories"][0]["interests"]]
    chosen = mc.upsert_member(
        LIST,
        "person0@example.com",
        status_if_new="subscribed",
        interests={topics[0]["id"]: True, topics[1]["id"]: False},
    )
    assert chosen["interests"][topics[0]["id"]] is True and chosen["interests"][topics[1]["id"]] is False


# ---- campaigns and reports --------------------------------------------------------------------------


def test_campaigns_and_their_activity_page_through_the_reports(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(1500))
    admin = mailchimp_emulator.admin
    sent_at = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
    campaign = admin.call(
        "POST", "campaigns", {"list_id": LIST, "title": "June", "send": True, "send_time": sent_at.isoformat()}
    )
    admin.call(
        "POST",
        f"campaigns/{campaign['id']}/activity",
        {
            "events": [
                {"email_address": "person1@example.com", "action": "open", "at": "2024-06-01T10:00:00+00:00"},
                {
                    "email_address": "person2@example.com",
                    "action": "click",
                    "url": "https://example.com/offer",
                    "at": "2024-06-01T12:00:00+00:00",
                },
                {"email_address": "person3@example.com", "action": "unsubscribe", "at": "2024-06-01T13:00:00+00:00"},
            ]
        },
    )
    assert [c["id"] for c in mc.iter_campaigns(LIST, sent_at - timedelta(days=1))] == [campaign["id"]]
    assert list(mc.iter_campaigns(LIST, sent_at + timedelta(hours=1))) == []
    activity = list(mc.iter_email_activity(campaign["id"]))
    assert {a["email_address"] for a in activity if a["activity"]} >= {"person1@example.com", "person2@example.com"}
    later = list(mc.iter_email_activity(campaign["id"], since=datetime(2024, 6, 1, 11, 0, tzinfo=UTC)))
    assert {a["email_address"] for a in later} == {"person2@example.com"}  # an unsubscribe is not email activity
    admin.reset_calls()
    assert len(list(mc.iter_sent_to(campaign["id"]))) == 1500
    assert admin.calls() == {"GET /3.0/reports/{campaign_id}/sent-to": 2}
    assert [u["email_address"] for u in mc.iter_unsubscribed(campaign["id"])] == ["person3@example.com"]
    reads = [r for r in admin.requests() if r["route"].startswith("/3.0/reports/")]
    assert reads and all(r["query"]["count"] == ["1000"] for r in reads)


def test_campaign_filters_go_out_as_utc_seconds(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator)
    assert list(mc.iter_campaigns(LIST, datetime(2024, 6, 1, 11, 0, 0, 999, tzinfo=timezone(timedelta(hours=2))))) == []
    query = mailchimp_emulator.admin.requests()[-1]["query"]
    assert query == {
        "list_id": [LIST],
        "status": ["sent"],
        "since_send_time": ["2024-06-01T09:00:00+00:00"],
        "sort_field": ["send_time"],
        "sort_dir": ["ASC"],
        "count": ["1000"],
        "offset": ["0"],
    }


# ---- webhooks ---------------------------------------------------------------------------------------


def test_create_webhook_registers_events_and_all_three_sources(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator)
    created = mc.create_webhook(LIST, "https://bridge.example.com/api/mailchimp-webhook?key=k", EVENTS, SOURCES)
    assert created["url"].startswith("https://bridge.example.com/") and created["sources"] == SOURCES
    registered = mailchimp_emulator.admin.state(list_id=LIST)["audiences"][LIST]["webhooks"]
    assert [(w["events"], w["sources"]) for w in registered] == [(EVENTS, SOURCES)]
    with pytest.raises(ValueError, match="unknown names"):
        mc.create_webhook(LIST, "https://bridge.example.com/x", {"subscribed": True}, SOURCES)
    with pytest.raises(ValueError, match="true or false"):
        mc.create_webhook(LIST, "https://bridge.example.com/x", EVENTS, {"api": "no"})  # type: ignore[dict-item]


# ---- batch operations -------------------------------------------------------------------------------


def test_batch_operations_run_and_their_responses_are_parsed(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(2))
    first, second = member_hash("person0@example.com"), member_hash("person1@example.com")
    results = mc.run_batch_operations(
        [
            {
                "method": "GET",
                "path": f"/lists/{LIST}/members/{first}",
                "operation_id": "read",
                "params": {"fields": "email_address,status"},
            },
            {
                "method": "PATCH",
                "path": f"/lists/{LIST}/members/{second}",
                "operation_id": "unsubscribe",
                "body": {"status": "unsubscribed"},
            },
            {
                "method": "patch",
                "path": f"/lists/{LIST}/members/{first}",
                "operation_id": "refused",
                "body": {"status": "transactional"},
            },
        ],
        poll_seconds=0.01,
    )
    by_id = {r["operation_id"]: r for r in results}
    assert by_id["read"]["status_code"] == 200
    assert by_id["read"]["response"] == {"email_address": "person0@example.com", "status": "subscribed"}
    assert by_id["unsubscribe"]["response"]["status"] == "unsubscribed"
    assert by_id["refused"]["status_code"] == 400 and by_id["refused"]["response"]["title"] == "Invalid Resource"
    assert member_state(mailchimp_emulator, "person1@example.com")["status"] == "unsubscribed"
    posted = next(r["body"] for r in mailchimp_emulator.admin.requests() if r["method"] == "POST")
    assert [op["method"] for op in posted["operations"]] == ["GET", "PATCH", "PATCH"]
    assert posted["operations"][1]["body"] == '{"status": "unsubscribed"}'  # the API wants a JSON string


def test_batch_operations_refuse_email_paths_and_unknown_fields(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    with pytest.raises(ValueError, match="subscriber hash"):
        mc.run_batch_operations([{"method": "GET", "path": f"/lists/{LIST}/members/a@example.com"}])
    with pytest.raises(ValueError, match="not accepted"):
        mc.run_batch_operations([{"method": "GET", "path": "/ping", "headers": {}}])
    assert mc.run_batch_operations([]) == []
    assert mailchimp_emulator.admin.calls() == {}


# ---- retries and faults -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["429-empty", "429", "500", "503", "502-html", "403-empty"])
def test_a_passing_fault_is_retried_and_the_call_succeeds(
    mailchimp_emulator: Running, mc: Mailchimp, kind: str
) -> None:
    seed(mailchimp_emulator, people(1))
    mailchimp_emulator.admin.faults(0.5, {kind: 1}, seed=first_draw_faults(0.5))
    found = mc.member(LIST, member_hash("person0@example.com"))
    assert found is not None and found["status"] == "subscribed"
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/lists/{list_id}/members/{subscriber_hash}": 2}
    assert faults_injected(mailchimp_emulator) == {kind: 1}


def test_an_empty_429_that_never_passes_ends_as_a_typed_retryable_error(mailchimp_emulator: Running) -> None:
    mc = adapter(mailchimp_emulator, max_attempts=3)
    mailchimp_emulator.admin.faults(1.0, {"429-empty": 1})
    with pytest.raises(MailchimpError) as refused:
        mc.ping()
    error = refused.value
    assert (error.status, error.retryable, error.attempts) == (429, True, 3)
    assert "MAILCHIMP_MAX_CONNECTIONS" in str(error)
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/ping": 3}


def test_the_throttle_observer_hears_each_429_before_its_retry(mailchimp_emulator: Running) -> None:
    mc = adapter(mailchimp_emulator, max_attempts=3)
    waits: list[float] = []
    mc.set_throttle_observer(waits.append)
    mailchimp_emulator.admin.faults(1.0, {"429-empty": 1})
    with pytest.raises(MailchimpError):
        mc.ping()
    assert len(waits) == 2 and all(wait > 0 for wait in waits)  # three attempts, two waits
    mc.set_throttle_observer(None)
    with pytest.raises(MailchimpError):
        mc.ping()
    assert len(waits) == 2


def test_an_html_502_becomes_a_readable_error(mailchimp_emulator: Running) -> None:
    mc = adapter(mailchimp_emulator, max_attempts=2)
    mailchimp_emulator.admin.faults(1.0, {"502-html": 1})
    with pytest.raises(MailchimpError) as refused:
        mc.ping()
    assert refused.value.status == 502 and "HTML" in refused.value.detail and "<html" not in str(refused.value)


def test_a_non_retryable_4xx_raises_at_once(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(1))
    mailchimp_emulator.admin.fail_next(3, pattern="/members/", status=400)
    with pytest.raises(MailchimpError) as refused:
        mc.member(LIST, member_hash("person0@example.com"))
    assert (refused.value.status, refused.value.attempts, refused.value.retryable) == (400, 1, False)
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/lists/{list_id}/members/{subscriber_hash}": 1}


def test_backoff_grows_between_attempts(mailchimp_emulator: Running) -> None:
    mc = adapter(mailchimp_emulator, max_attempts=4, backoff_seconds=0.05)
    mailchimp_emulator.admin.fail_next(3, pattern="/ping", status=503)
    started = datetime.now(UTC)
    mc.ping()
    waited = (datetime.now(UTC) - started).total_seconds()
    # three waits of 0.05, 0.1 and 0.2 s, each jittered down to no less than half (and not run away)
    assert 0.175 <= waited < 30
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/ping": 4}


def test_timeouts_are_retried_then_reported_as_network_errors(mailchimp_emulator: Running) -> None:
    mc = adapter(mailchimp_emulator, timeout=0.2, max_attempts=3)
    mailchimp_emulator.admin.faults(0.5, {"slow": 1}, seed=first_draw_faults(0.5), slow_seconds=0.5)
    mc.ping()
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/ping": 2}
    mailchimp_emulator.admin.faults(1.0, {"slow": 1}, slow_seconds=0.5)
    with pytest.raises(MailchimpError) as refused:
        adapter(mailchimp_emulator, timeout=0.2, max_attempts=2).ping()
    assert (refused.value.status, refused.value.title, refused.value.attempts) == (None, "Network Error", 2)
    assert isinstance(refused.value.__cause__, requests.RequestException)


def test_a_refused_connection_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the calls: nothing listens there
    mc = Mailchimp(fresh_key(), f"http://127.0.0.1:{port}/3.0", max_attempts=2, backoff_seconds=0.001)
    with pytest.raises(MailchimpError) as refused:
        mc.ping()
    assert (refused.value.status, refused.value.attempts, refused.value.retryable) == (None, 2, True)


def test_ten_percent_faults_still_give_the_right_result(
    mailchimp_emulator: Running, mc: Mailchimp, caplog: pytest.LogCaptureFixture
) -> None:
    seed(mailchimp_emulator, people(300, prefix="known"))
    mailchimp_emulator.admin.faults(0.1, {"429": 1, "429-empty": 1, "500": 1, "503": 1, "502-html": 1}, seed=11)
    with caplog.at_level(logging.WARNING, logger="shared.adapters.mailchimp"):
        result = mc.batch_subscribe(
            LIST, [{"email_address": f"new{i}@example.com", "status_if_new": "subscribed"} for i in range(1200)]
        )
        for i in range(30):
            mc.update_member(LIST, member_hash(f"known{i}@example.com"), {"status": "unsubscribed"})
            mc.upsert_member(LIST, f"known{i + 100}@example.com", status_if_new="subscribed", status="pending")
        read = [
            m
            for page in mc.iter_member_pages(LIST, since_last_changed=None, fields=["email_address", "status"])
            for m in page
        ]
    assert (len(result.new_members), result.errors) == (1200, [])
    statuses = {m["email_address"]: m["status"] for m in read}
    assert len(statuses) == 1500
    assert sum(s == "unsubscribed" for s in statuses.values()) == 30
    assert sum(s == "pending" for s in statuses.values()) == 30
    injected = faults_injected(mailchimp_emulator)
    assert sum(injected.values()) >= 5, injected
    assert sum(mailchimp_emulator.admin.calls().values()) == 3 + 60 + 2 + sum(injected.values())
    assert caplog.records and all("@" not in r.getMessage() for r in caplog.records)


# ---- the connection cap -----------------------------------------------------------------------------


def _hammer(clients: list[Mailchimp], calls: int) -> list[BaseException]:
    failures: list[BaseException] = []

    def one(client: Mailchimp) -> None:
        try:
            client.ping()
        except MailchimpError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(clients[i % len(clients)],)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def test_at_most_max_connections_requests_are_in_flight_across_instances(mailchimp_emulator: Running) -> None:
    mailchimp_emulator.admin.call("POST", "settings", {"latencySeconds": 0.05})
    key = fresh_key()
    # two adapters with one key share one cap; no retries, so a single 429 from the emulator fails the test
    clients = [adapter(mailchimp_emulator, key=key, max_connections=8, max_attempts=1) for _ in range(2)]
    failures = _hammer(clients, 60)
    assert failures == []
    assert 2 <= clients[0].peak_connections <= 8
    assert mailchimp_emulator.admin.calls() == {"GET /3.0/ping": 60}


def test_without_the_cap_the_emulator_would_refuse_the_eleventh_connection(mailchimp_emulator: Running) -> None:
    """The control for the test above: 16 connections at once do get Mailchimp's 429."""
    mailchimp_emulator.admin.call("POST", "settings", {"latencySeconds": 0.1})
    loose = adapter(mailchimp_emulator, key=fresh_key(), max_connections=16, max_attempts=1)
    failures = _hammer([loose], 32)
    assert failures and all(isinstance(f, MailchimpError) and f.status == 429 for f in failures)


def test_a_tags_segment_is_looked_up_once(mailchimp_emulator: Running, mc: Mailchimp) -> None:
    seed(mailchimp_emulator, people(4))
    mc.update_member_tags(LIST, member_hash("person0@example.com"), {"crm": True})
    mailchimp_emulator.admin.reset_calls()
    mc.add_tag_members(LIST, "crm", ["person1@example.com"])
    mc.add_tag_members(LIST, "crm", ["person2@example.com"])
    calls = mailchimp_emulator.admin.calls()
    assert calls["GET /3.0/lists/{list_id}/segments"] == 1
    assert calls["POST /3.0/lists/{list_id}/segments/{segment_id}"] == 2

"""Reading and checking webhook deliveries: form bodies, signatures, RemoteExecutionContext JSON, the message."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from shared.errors import StoredFormatError
from shared.features.realtime.deliveries import (
    UnreadableDeliveryError,
    operation_time,
    read_dataverse,
    read_mailchimp,
    secret_matches,
    sign,
    signature_problem,
)
from shared.features.realtime.events import DATAVERSE, MAILCHIMP, Event
from shared.rules.addresses import member_hash

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "s" * 40


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


def unsubscribe(email: str = "Person@Example.org") -> bytes:
    return form(
        **{
            "type": "unsubscribe",
            "fired_at": "2026-03-01 11:59:58",
            "data[action]": "unsub",
            "data[reason]": "manual",
            "data[id]": "8a25ff1d98",
            "data[list_id]": "a1b2c3d4e5",
            "data[email]": email,
            "data[merges][FNAME]": "Pat",
        }
    )


def test_an_unsubscribe_names_its_audience_and_member_by_hash_only():
    delivery = read_mailchimp(unsubscribe())
    event = delivery.event(NOW)
    assert (event.side, event.type, event.audience) == (MAILCHIMP, "unsubscribe", "a1b2c3d4e5")
    assert event.member_hash == member_hash("person@example.org")
    assert event.at == datetime(2026, 3, 1, 11, 59, 58, tzinfo=UTC)
    assert "example" not in json.dumps(event.encode())  # addresses never travel on the queue


def test_an_address_change_names_both_hashes():
    raw = form(
        type="upemail",
        fired_at="2026-03-01 11:00:00",
        **{"data[list_id]": "a1b2c3d4e5", "data[new_email]": "new@example.org", "data[old_email]": "old@example.org"},
    )
    event = read_mailchimp(raw).event(NOW)
    assert (event.member_hash, event.old_hash) == (member_hash("new@example.org"), member_hash("old@example.org"))


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe not text",
        b'{"type": "unsubscribe"}',
        form(type="opened", **{"data[list_id]": "a1"}),
        form(type="unsubscribe", **{"data[email]": "a@example.org"}),
        form(type="unsubscribe", **{"data[list_id]": "a1b2c3d4e5"}),
        form(type="upemail", **{"data[list_id]": "a1b2c3d4e5", "data[new_email]": "n@example.org"}),
    ],
)
def test_a_body_that_is_not_a_member_event_is_unreadable(raw):
    with pytest.raises(UnreadableDeliveryError) as caught:
        read_mailchimp(raw)
    assert "@" not in str(caught.value)


def test_a_signature_is_checked_on_the_raw_bytes_within_five_minutes():
    raw = unsubscribe()
    header = sign("signing-secret", raw, NOW)
    assert signature_problem(header, raw, ["other", "signing-secret"], NOW + timedelta(minutes=4)) is None
    assert signature_problem(header, raw + b"&x=1", ["signing-secret"], NOW) == "the signature does not match"
    assert signature_problem(header, raw, ["another"], NOW) == "the signature does not match"
    assert "five minutes" in (signature_problem(header, raw, ["signing-secret"], NOW + timedelta(minutes=6)) or "")
    assert "t=<unix time>" in (signature_problem("v1=abc", raw, ["signing-secret"], NOW) or "")


def test_the_secret_compare_refuses_missing_and_wrong_values():
    assert secret_matches(SECRET, SECRET)
    assert not secret_matches(SECRET, SECRET[:-1] + "t")
    assert not secret_matches(SECRET, None)
    assert not secret_matches(None, SECRET)


def test_a_dataverse_context_names_table_record_user_and_time():
    context = {
        "MessageName": "Update",
        "PrimaryEntityName": "contact",
        "PrimaryEntityId": "7D6F1C0A-0000-4000-8000-000000000001",
        "InitiatingUserId": "A1B2C3D4-0000-4000-8000-000000000002",
        "UserId": "ffffffff-0000-4000-8000-000000000003",
        "OperationCreatedOn": "/Date(1772366400000)/",
        "InputParameters": [{"key": "Target", "value": {"Attributes": [{"key": "emailaddress1", "value": "x@y.org"}]}}],
    }
    event = read_dataverse(json.dumps(context).encode(), NOW)
    assert (event.side, event.entity, event.message) == (DATAVERSE, "contact", "Update")
    assert event.record_id == "7d6f1c0a-0000-4000-8000-000000000001"
    assert event.user == "a1b2c3d4-0000-4000-8000-000000000002"
    assert event.at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert "x@y.org" not in json.dumps(event.encode())


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", json.dumps({"MessageName": "Update", "PrimaryEntityName": "contact"}).encode()],
)
def test_a_context_without_its_names_is_unreadable(body):
    with pytest.raises(UnreadableDeliveryError):
        read_dataverse(body, NOW)


def test_operation_times_in_both_forms():
    assert operation_time("/Date(1772366400000-0700)/") == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert operation_time("2026-03-01T12:00:00Z") == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert operation_time(None) is None


def test_the_event_message_round_trips_and_refuses_other_versions():
    event = Event(MAILCHIMP, NOW, NOW - timedelta(seconds=3), audience="a1", type="cleaned", member_hash="0" * 32)
    assert Event.decode(event.encode()) == event
    record = Event(DATAVERSE, NOW, None, entity="lead", record_id="r1", message="Create", user="u1")
    assert Event.decode(record.encode()) == record
    with pytest.raises(StoredFormatError, match="format version 2"):
        Event.decode({**event.encode(), "v": 2})

"""Why Mailchimp or Dataverse refused a member or a record: classified from the title or code the API answers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared.adapters.dataverse import BatchOperation, BatchResult, Dataverse, DataverseError, dataverse_refusal
from shared.adapters.mailchimp import Mailchimp, MailchimpError, MemberError, mailchimp_refusal
from shared.rules.addresses import member_hash
from tests.conftest import Running

LIST = "a1b2c3d4e5"
HASH = member_hash("ann@example.com")


def problem(
    title: str, detail: str = "", status: int = 400, errors: list[dict[str, str]] | None = None
) -> MailchimpError:
    return MailchimpError(status, title, detail, member_hash=HASH, errors=errors, operation="PATCH member")


# ---- Mailchimp: a single member's call says why in the problem's title ---------------------------------


@pytest.mark.parametrize(
    ("title", "reason"),
    [
        ("Member In Compliance State", "member-in-compliance-state"),
        ("Forgotten Email Not Subscribed", "forgotten-email"),
        ("Invalid Resource", "invalid-address"),
        ("Member Exists", "mailchimp-refused"),
        ("Bad Request", "mailchimp-refused"),
    ],
)
def test_a_refused_member_is_classified_by_the_title(title: str, reason: str) -> None:
    refused = problem(title, f"member {HASH} was refused")
    assert mailchimp_refusal(refused) == reason
    assert refused.refusal == reason


def test_only_a_400_is_a_member_refusal_reason() -> None:
    assert mailchimp_refusal(problem("Member In Compliance State", status=500)) == "mailchimp-refused"
    assert mailchimp_refusal(MailchimpError(None, "Invalid Resource", "")) == "mailchimp-refused"


def test_member_exists_is_the_title_or_an_address_change_onto_a_taken_address() -> None:
    assert problem("Member Exists", "member x is already a list member.").is_member_exists
    taken = [{"field": "email_address", "message": f'"member {HASH}" is already in this list with a status of "x".'}]
    assert problem("Invalid Resource", "The resource submitted could not be validated.", errors=taken).is_member_exists
    assert not problem("Invalid Resource", "member x looks fake or invalid").is_member_exists
    merge = [{"field": "merge_fields.FNAME", "message": "Data did not match"}]
    assert not problem("Invalid Resource", errors=merge).is_member_exists
    assert not problem("Member In Compliance State").is_member_exists
    assert not problem("Member Exists", status=404).is_member_exists


# ---- Mailchimp: batch subscribe has two error codes; ERROR_GENERIC carries the problem's detail -------------


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        ("member x is already a list member, do you want to update?", "ERROR_CONTACT_EXISTS", "mailchimp-refused"),
        ("member x is in a compliance state due to unsubscribe", "ERROR_GENERIC", "member-in-compliance-state"),
        ("member x was permanently deleted and cannot be re-imported.", "ERROR_GENERIC", "forgotten-email"),
        ("member x looks fake or invalid, please enter a real email address.", "ERROR_GENERIC", "invalid-address"),
        ("Please provide a valid email address.", "ERROR_GENERIC", "mailchimp-refused"),
        ("member x is in a compliance state", None, "member-in-compliance-state"),
    ],
)
def test_a_batch_refusal_is_classified_by_its_code_and_detail(error: str, code: str | None, reason: str) -> None:
    refused = MemberError(HASH, error, code)
    assert mailchimp_refusal(refused) == reason
    assert refused.refusal == reason


def test_the_mailchimp_emulator_refusals_classify_as_documented(mailchimp_emulator: Running) -> None:
    mailchimp_emulator.admin.seed(
        {
            "audiences": [{"id": LIST, "name": "Newsletter"}],
            "members": [
                {"list_id": LIST, "email_address": "out@example.com", "status": "unsubscribed"},
                {"list_id": LIST, "email_address": "here@example.com", "status": "subscribed"},
                {"list_id": LIST, "email_address": "mover@example.com", "status": "subscribed"},
            ],
            "forgotten": [{"list_id": LIST, "email_address": "erased@example.com"}],
        }
    )
    mc = Mailchimp(f"{uuid.uuid4().hex}-us21", mailchimp_emulator.url + "/3.0", backoff_seconds=0.001, timeout=10)
    with pytest.raises(MailchimpError) as compliance:
        mc.update_member(LIST, member_hash("out@example.com"), {"status": "subscribed"})
    assert compliance.value.refusal == "member-in-compliance-state" and not compliance.value.is_member_exists
    with pytest.raises(MailchimpError) as forgotten:
        mc.upsert_member(LIST, "erased@example.com", status_if_new="pending")
    assert forgotten.value.refusal == "forgotten-email"
    with pytest.raises(MailchimpError) as taken:
        mc.update_member(LIST, member_hash("mover@example.com"), {"email_address": "here@example.com"})
    assert taken.value.is_member_exists and taken.value.is_member_refusal
    result = mc.batch_subscribe(
        LIST,
        [
            {"email_address": "out@example.com", "status": "subscribed"},
            {"email_address": "erased@example.com", "status_if_new": "subscribed"},
            {"email_address": "robot@mailinator.test", "status_if_new": "subscribed"},
        ],
    )
    assert {e.member_hash: e.refusal for e in result.errors} == {
        member_hash("out@example.com"): "member-in-compliance-state",
        member_hash("erased@example.com"): "forgotten-email",
        member_hash("robot@mailinator.test"): "invalid-address",
    }
    existing = mc.batch_subscribe(
        LIST, [{"email_address": "here@example.com", "status": "subscribed"}], update_existing=False
    )
    assert [(e.error_code, e.refusal) for e in existing.errors] == [("ERROR_CONTACT_EXISTS", "mailchimp-refused")]


# ---- Dataverse: the error code says read-only or inactive, a 404 says the record is gone -----------------------


def answer(status: int, code: str = "", message: str = "") -> BatchResult:
    return BatchResult(status, {"error": {"code": code, "message": message}} if code or message else None)


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (answer(400, "0x8004022e", "The object cannot be updated because it is read-only."), "read-only-record"),
        (answer(400, "0x8004022E", "whatever the wording"), "read-only-record"),
        (answer(400, "0x80040230", "The object cannot be updated because it is inactive."), "read-only-record"),
        (answer(404, "0x80040217", "contact With Id = x Does Not Exist"), "record-deleted"),
        (answer(404), "record-deleted"),
        (answer(400, "0x80044331", "A validation error occurred."), "dataverse-refused-400"),
        (answer(424), "dataverse-refused-424"),
        (BatchResult(500, "an HTML page"), "dataverse-refused-500"),
    ],
)
def test_a_refused_record_is_classified_by_the_error_code(result: BatchResult, reason: str) -> None:
    assert dataverse_refusal(result) == reason
    assert result.refusal == reason
    error = result.error()
    assert error is not None and dataverse_refusal(error) == reason and error.refusal == reason


def test_an_error_without_the_code_is_not_read_only_whatever_it_says() -> None:
    assert dataverse_refusal(DataverseError(400, "", "the record is read-only and inactive")) == "dataverse-refused-400"


def test_the_dataverse_emulator_refusals_classify_by_code(dataverse_emulator: Any) -> None:
    lead_id, contact_id, missing = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    dataverse_emulator.admin.seed(
        {
            "leads": [{"leadid": lead_id, "lastname": "Prospect"}],
            "contacts": [{"contactid": contact_id, "lastname": "Gone", "statecode": 1}],
        }
    )
    dataverse_emulator.admin.call("POST", "qualify-lead", {"id": lead_id})
    results = Dataverse(dataverse_emulator.url, max_attempts=2).batch(
        [
            BatchOperation("PATCH", f"leads({lead_id})", {"donotbulkemail": True}, {"If-Match": "*"}),
            BatchOperation("PATCH", f"contacts({contact_id})", {"donotbulkemail": True}, {"If-Match": "*"}),
            BatchOperation("PATCH", f"contacts({missing})", {"donotbulkemail": True}, {"If-Match": "*"}),
        ]
    )
    assert [r.refusal for r in results] == ["read-only-record", "read-only-record", "record-deleted"]

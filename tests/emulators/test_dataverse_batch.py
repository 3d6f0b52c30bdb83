"""The Dataverse emulator's ``$batch`` with several change sets in one request: each change set is all or nothing,
a failed one answers with a single error part for all its requests, and ``odata.continue-on-error`` lets the other
change sets and loose requests run (without it the batch stops at the first failure)."""

from __future__ import annotations

import email.parser
import uuid
from email.message import Message
from typing import Any

import requests

from tests.emulators.dataverse_support import API, contacts_seeded


def part(method: str, path: str, body: str | None = None, content_id: str | None = None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{method} {API}/{path} HTTP/1.1"]
    if body is not None:
        lines.append("Content-Type: application/json; type=entry")
    return "\r\n".join(lines) + "\r\n\r\n" + (body or "")


def changeset(name: str, *parts: str) -> str:
    inner = "".join(f"--{name}\r\n{p}\r\n" for p in parts) + f"--{name}--\r\n"
    return f"Content-Type: multipart/mixed; boundary={name}\r\n\r\n{inner}"


def send(api: str, *items: str, continue_on_error: bool) -> requests.Response:
    body = "".join(f"--batch_b\r\n{item}\r\n" for item in items) + "--batch_b--\r\n"
    headers = {"Content-Type": "multipart/mixed; boundary=batch_b"}
    if continue_on_error:
        headers["Prefer"] = "odata.continue-on-error"
    return requests.post(f"{api}/$batch", data=body.encode(), headers=headers, timeout=30)


def answer_parts(response: requests.Response) -> list[Message]:
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode() + response.content
    )
    payload = message.get_payload()
    assert isinstance(payload, list)
    return payload


def status_of(part: Message) -> int:
    text = part.get_payload()
    assert isinstance(text, str)
    return int(text.split(" ", 2)[1])


def lastnames(api: str) -> dict[str, str]:
    rows = requests.get(f"{api}/contacts?$select=lastname", timeout=30).json()["value"]
    return {row["contactid"]: row["lastname"] for row in rows}


def test_each_change_set_is_all_or_nothing_and_the_others_still_run(dataverse_emulator: Any) -> None:
    api = dataverse_emulator.url + API
    first, second, third = contacts_seeded(dataverse_emulator.admin, 3)
    response = send(
        api,
        changeset(
            "cs_a",
            part("PATCH", f"contacts({first})", '{"lastname": "A1"}'),
            part("POST", "contacts", '{"lastname": "Created in A"}'),
        ),
        changeset(
            "cs_b",
            part("PATCH", f"contacts({second})", '{"lastname": "B1"}'),  # runs, then is rolled back
            part("PATCH", f"contacts({second})", '{"nosuchcolumn": 1}'),
            part("POST", "contacts", '{"lastname": "Never created"}'),  # never runs
        ),
        part("PATCH", f"contacts({third})", '{"lastname": "Loose"}'),
        continue_on_error=True,
    )

    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "odata.continue-on-error"
    succeeded, failed, loose = answer_parts(response)
    assert succeeded.get_content_type() == "multipart/mixed"  # a changesetresponse with one part per request
    assert [status_of(p) for p in succeeded.get_payload()] == [204, 204]
    assert failed.get_content_type() == "application/http"  # one error part answers for the whole change set
    assert status_of(failed) == 400 and "nosuchcolumn" in str(failed.get_payload())
    assert loose.get_content_type() == "application/http" and status_of(loose) == 204
    names = lastnames(api)
    assert names[first] == "A1" and names[second] == "L1" and names[third] == "Loose"
    assert sorted(n for i, n in names.items() if i not in (first, second, third)) == ["Created in A"]


def test_without_continue_on_error_the_batch_stops_at_the_failed_change_set(dataverse_emulator: Any) -> None:
    api = dataverse_emulator.url + API
    first, second, third = contacts_seeded(dataverse_emulator.admin, 3)
    response = send(
        api,
        changeset("cs_a", part("PATCH", f"contacts({first})", '{"lastname": "A1"}')),
        changeset(
            "cs_b",
            part("PATCH", f"contacts({second})", '{"lastname": "B1"}'),
            part("PATCH", f"contacts({second})", '{"nosuchcolumn": 1}'),
        ),
        changeset("cs_c", part("PATCH", f"contacts({third})", '{"lastname": "C1"}')),
        continue_on_error=False,
    )

    assert response.status_code == 400  # the batch answers with the error that stopped it
    succeeded, failed = answer_parts(response)  # nothing after the failed change set ran or answered
    assert [status_of(p) for p in succeeded.get_payload()] == [204]
    assert status_of(failed) == 400
    names = lastnames(api)
    assert (names[first], names[second], names[third]) == ("A1", "L1", "L2")


def test_a_read_only_record_takes_its_change_set_with_it(dataverse_emulator: Any) -> None:
    api = dataverse_emulator.url + API
    admin = dataverse_emulator.admin
    lead, other = str(uuid.uuid4()), str(uuid.uuid4())
    admin.seed({"leads": [{"leadid": i, "lastname": "Lead", "donotbulkemail": False} for i in (lead, other)]})
    admin.call("POST", "qualify-lead", {"id": lead})
    note = '{{"lastname": "History of {0}", "description": "{0}"}}'

    response = send(
        api,
        changeset(
            "cs_a",
            part("PATCH", f"leads({lead})", '{"donotbulkemail": true}'),
            part("POST", "contacts", note.format(lead)),
        ),
        changeset(
            "cs_b",
            part("PATCH", f"leads({other})", '{"donotbulkemail": true}'),
            part("POST", "contacts", note.format(other)),
        ),
        continue_on_error=True,
    )

    refused, written = answer_parts(response)
    assert status_of(refused) == 400 and "read-only" in str(refused.get_payload())
    assert [status_of(p) for p in written.get_payload()] == [204, 204]
    leads = {row["leadid"]: row for row in admin.state(entity="leads")["rows"]}
    assert leads[lead]["donotbulkemail"] is False and leads[other]["donotbulkemail"] is True
    assert sorted(lastnames(api).values()) == [f"History of {other}"]


def test_a_content_id_of_a_failed_change_set_cannot_be_referred_to_later(dataverse_emulator: Any) -> None:
    api = dataverse_emulator.url + API
    response = send(
        api,
        changeset(
            "cs_a",
            part("POST", "contacts", '{"lastname": "Rolled back"}', content_id="1"),
            part("POST", "contacts", '{"nosuchcolumn": 1}', content_id="2"),
        ),
        changeset("cs_b", part("POST", "contacts", '{"lastname": "Kept"}', content_id="3")),
        changeset("cs_c", part("PATCH", "$1", '{"lastname": "Patched"}').replace(f"{API}/$1", "$1")),
        continue_on_error=True,
    )

    failed, kept, unknown = answer_parts(response)
    assert status_of(failed) == 400
    assert [status_of(p) for p in kept.get_payload()] == [204]
    assert status_of(unknown) == 400 and "'$1' does not exist" in str(unknown.get_payload())
    assert list(lastnames(api).values()) == ["Kept"]

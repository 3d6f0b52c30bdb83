"""The Dataverse emulator's CreateMultiple and UpdateMultiple: one transaction, their rules and their errors."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

API = "/api/data/v9.2"
CONTACT = "Microsoft.Dynamics.CRM.contact"


@pytest.fixture
def api(dataverse_emulator: Any) -> str:
    return dataverse_emulator.url + API


def post(url: str, body: Any) -> requests.Response:
    return requests.post(url, json=body, timeout=30)


def seed_contacts(admin: Any, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    admin.seed({"contacts": [{"contactid": i, "lastname": f"L{n}"} for n, i in enumerate(ids)]})
    return ids


def rows(admin: Any, entity: str) -> dict[str, dict[str, Any]]:
    key = {"contacts": "contactid", "leads": "leadid"}[entity]
    return {row[key]: row for row in admin.state(entity=entity)["rows"]}


def error_of(response: requests.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def test_update_multiple_updates_every_target_in_one_request(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed_contacts(admin, 3)
    targets = [{"@odata.type": CONTACT, "contactid": i, "donotbulkemail": True, "firstname": "Bulk"} for i in ids]

    answer = post(f"{api}/contacts/Microsoft.Dynamics.CRM.UpdateMultiple", {"Targets": targets})

    assert answer.status_code == 204 and answer.content == b""
    assert all(r["donotbulkemail"] is True and r["firstname"] == "Bulk" for r in rows(admin, "contacts").values())
    assert admin.call("GET", "bulk-targets") == {"targets": {"UpdateMultiple contacts": 3}, "total": 3}
    assert admin.calls() == {f"POST {API}/{{entityset}}/Microsoft.Dynamics.CRM.UpdateMultiple": 1}


def test_update_multiple_is_all_or_nothing_on_a_standard_table(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    leads = [str(uuid.uuid4()) for _ in range(3)]
    admin.seed({"leads": [{"leadid": i, "lastname": f"L{n}", "donotbulkemail": False} for n, i in enumerate(leads)]})
    admin.call("POST", "qualify-lead", {"id": leads[1]})
    targets = [{"@odata.type": "Microsoft.Dynamics.CRM.lead", "leadid": i, "donotbulkemail": True} for i in leads]

    answer = post(f"{api}/leads/Microsoft.Dynamics.CRM.UpdateMultiple", {"Targets": targets})

    assert answer.status_code == 400
    assert [r["donotbulkemail"] for r in rows(admin, "leads").values()] == [False, False, False]  # rolled back
    assert admin.call("GET", "bulk-targets")["total"] == 0


@pytest.mark.parametrize(
    ("target", "status", "text"),
    [
        ({"firstname": "x"}, 400, "no '@odata.type'"),
        ({"@odata.type": "Microsoft.Dynamics.CRM.lead", "firstname": "x"}, 400, "must be of the table 'contact'"),
        ({"@odata.type": CONTACT, "firstname": "x", "contactid": None}, 400, "Entity Id must be specified"),
        (
            {"@odata.type": CONTACT, "contactid": "00000000-0000-4000-8000-000000000001", "firstname": "x"},
            404,
            "contact With Ids = 00000000-0000-4000-8000-000000000001 Do Not Exist",
        ),
        ({"@odata.type": CONTACT, "contactid": "OTHER", "nosuchcolumn": 1}, 400, "nosuchcolumn"),
    ],
)
def test_update_multiple_refuses_a_bad_target_and_writes_none(
    api: str, dataverse_emulator: Any, target: dict[str, Any], status: int, text: str
) -> None:
    admin = dataverse_emulator.admin
    [good, other] = seed_contacts(admin, 2)
    if target.get("contactid") == "OTHER":  # a real record, so that only the column is wrong
        target = {**target, "contactid": other}
    targets = [{"@odata.type": CONTACT, "contactid": good, "firstname": "Changed"}, target]

    answer = post(f"{api}/contacts/Microsoft.Dynamics.CRM.UpdateMultiple", {"Targets": targets})

    code, _, message = error_of(answer)
    assert code == status and text.lower() in message.lower(), message
    assert rows(admin, "contacts")[good].get("firstname") is None


def test_update_multiple_refuses_one_record_twice(api: str, dataverse_emulator: Any) -> None:
    [record] = seed_contacts(dataverse_emulator.admin, 1)
    targets = [{"@odata.type": CONTACT, "contactid": record, "firstname": name} for name in ("A", "B")]

    status, _, message = error_of(post(f"{api}/contacts/Microsoft.Dynamics.CRM.UpdateMultiple", {"Targets": targets}))

    assert status == 400 and record in message


def test_create_multiple_answers_the_ids_in_order(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    targets = [{"@odata.type": CONTACT, "lastname": f"New{n}"} for n in range(3)]

    answer = post(f"{api}/contacts/Microsoft.Dynamics.CRM.CreateMultiple", {"Targets": targets})

    assert answer.status_code == 200
    body = answer.json()
    assert body["@odata.context"].endswith("$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse")
    created = rows(admin, "contacts")
    assert [created[i]["lastname"] for i in body["Ids"]] == ["New0", "New1", "New2"]


def test_create_multiple_rolls_back_on_a_duplicate_key(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    [existing] = seed_contacts(admin, 1)
    targets = [
        {"@odata.type": CONTACT, "lastname": "Fresh"},
        {"@odata.type": CONTACT, "lastname": "Clash", "contactid": existing},
    ]

    answer = post(f"{api}/contacts/Microsoft.Dynamics.CRM.CreateMultiple", {"Targets": targets})

    assert answer.status_code in (400, 412), answer.text
    assert list(rows(admin, "contacts")) == [existing]


def test_a_table_without_the_messages_answers_as_the_service_does(api: str) -> None:
    targets = [{"@odata.type": "Microsoft.Dynamics.CRM.list", "listname": "x"}]

    status, _, message = error_of(post(f"{api}/lists/Microsoft.Dynamics.CRM.CreateMultiple", {"Targets": targets}))

    assert status == 400
    assert "The 'CreateMultiple' method does not support entities of type 'list'" in message


def test_empty_targets_are_refused(api: str) -> None:
    status, _, message = error_of(post(f"{api}/contacts/Microsoft.Dynamics.CRM.UpdateMultiple", {"Targets": []}))

    assert status == 400 and "Targets" in message


def test_a_message_too_large_for_the_time_limit_fails_as_a_sql_timeout(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed_contacts(admin, 5)
    admin.call("POST", "latency", {"enabled": True, "timeScale": 0.001, "sqlTimeoutSeconds": 0.1})
    targets = [{"@odata.type": CONTACT, "contactid": i, "firstname": "Late"} for i in ids]

    status, code, message = error_of(
        post(f"{api}/contacts/Microsoft.Dynamics.CRM.UpdateMultiple", {"Targets": targets})
    )  # 5 x 0.03 s > 0.1 s

    assert (status, code) == (500, "0x80044151") and "SQL timeout" in message
    assert all(r.get("firstname") is None for r in rows(admin, "contacts").values())
    assert post(f"{api}/contacts/Microsoft.Dynamics.CRM.UpdateMultiple", {"Targets": targets[:3]}).status_code == 204

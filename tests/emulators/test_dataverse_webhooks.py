"""Webhook service endpoints and steps in the Dataverse emulator: registration through the Web API, delivery of the
RemoteExecutionContext with the initiating user, filtering attributes, retries and failed system jobs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators.common import AdminClient, EmulatorServer
from emulators.dataverse import DataverseEmulator
from emulators.dataverse.server import DYNAMICS_USER
from tests.conftest import Running
from tests.emulators.webhook_receiver import Receiver, receiving

CONTACT = "11111111-1111-1111-1111-111111111111"
LEAD = "22222222-2222-2222-2222-222222222222"
SECRET = "a-secret-of-at-least-thirty-two-characters"
AUTH = f'<settings><setting name="X-Consent-Bridge-Secret" value="{SECRET}" /></settings>'
FILTERED = "donotbulkemail,donotsendmm,emailaddress1,statecode"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


@pytest.fixture
def dv(dataverse_emulator: Any) -> Any:
    dataverse_emulator.admin.seed(
        {
            "contacts": [{"contactid": CONTACT, "lastname": "Ada", "emailaddress1": "ada@example.com"}],
            "leads": [{"leadid": LEAD, "lastname": "Lin", "emailaddress1": "lin@example.com"}],
        }
    )
    dataverse_emulator.admin.call("POST", "webhooks/settings", {"timeScale": 0.01})
    return dataverse_emulator


def api(running: Any, path: str) -> str:
    return f"{running.url}/api/data/v9.2/{path}"


def message_filter(running: Any, message: str, table: str) -> dict[str, Any]:
    found = requests.get(
        api(running, "sdkmessagefilters"),
        params={
            "$select": "sdkmessagefilterid,_sdkmessageid_value",
            "$filter": f"sdkmessageid/name eq '{message}' and primaryobjecttypecode eq '{table}'",
        },
        timeout=10,
    )
    assert found.status_code == 200, found.text
    (row,) = found.json()["value"]
    return row


def register(running: Any, url: str, message: str = "Update", table: str = "contact", **step: Any) -> dict[str, str]:
    """What the product's registration does: an endpoint (HttpHeader auth) and an asynchronous post-operation step."""
    endpoint = requests.post(
        api(running, "serviceendpoints"),
        json={
            "name": "consent-bridge",
            "url": url,
            "contract": 8,
            "authtype": 5,
            "messageformat": 2,
            "authvalue": AUTH,
        },
        headers={"Prefer": "return=representation"},
        timeout=10,
    )
    assert endpoint.status_code == 201, endpoint.text
    found = message_filter(running, message, table)
    body = {
        "name": f"consent-bridge: {message} of {table}",
        "mode": 1,
        "stage": 40,
        "rank": 1,
        "supporteddeployment": 0,
        "asyncautodelete": True,
        "filteringattributes": FILTERED,
        "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint.json()['serviceendpointid']})",
        "sdkmessageid@odata.bind": f"/sdkmessages({found['_sdkmessageid_value']})",
        "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({found['sdkmessagefilterid']})",
        **step,
    }
    created = requests.post(
        api(running, "sdkmessageprocessingsteps"), json=body, headers={"Prefer": "return=representation"}, timeout=10
    )
    assert created.status_code == 201, created.text
    return {"endpoint": endpoint.json()["serviceendpointid"], "step": created.json()["sdkmessageprocessingstepid"]}


def flush(running: Any) -> list[dict[str, Any]]:
    assert running.admin.call("POST", "webhooks/flush", {"timeoutSeconds": 10})["idle"]
    return running.admin.call("GET", "webhooks/deliveries")["deliveries"]


def edit(running: Any, entity: str, record_id: str, **changes: Any) -> None:
    running.admin.call("POST", "edit", {"entity": entity, "id": record_id, "changes": changes})


def contexts(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(p.body) for p in receiver.posts()]


def target_columns(context: dict[str, Any]) -> dict[str, Any]:
    (target,) = [p["value"] for p in context["InputParameters"] if p["key"] == "Target"]
    return {a["key"]: a["value"] for a in target["Attributes"]}


def test_the_registration_tables_answer_as_the_web_api_does(dv: Any, receiver: Receiver) -> None:
    names = requests.get(api(dv, "sdkmessages"), params={"$select": "name"}, timeout=10).json()["value"]
    assert {"Create", "Update", "Delete", "CreateMultiple", "UpdateMultiple"} <= {n["name"] for n in names}
    for table in ("contact", "lead", "account"):
        assert message_filter(dv, "UpdateMultiple", table)["sdkmessagefilterid"]
    none = requests.get(
        api(dv, "sdkmessagefilters"),
        params={"$filter": "sdkmessageid/name eq 'UpdateMultiple' and primaryobjecttypecode eq 'list'"},
        timeout=10,
    )
    assert none.json()["value"] == []
    ids = register(dv, receiver.url + "/api/webhooks/dataverse")
    endpoint = requests.get(api(dv, f"serviceendpoints({ids['endpoint']})"), timeout=10).json()
    assert (endpoint["contract"], endpoint["authtype"], endpoint["authvalue"]) == (8, 5, None)  # write-only
    steps = requests.get(
        api(dv, "sdkmessageprocessingsteps"),
        params={"$filter": f"_eventhandler_value eq {ids['endpoint']}", "$select": "mode,stage,filteringattributes"},
        timeout=10,
    ).json()["value"]
    assert [(s["mode"], s["stage"], s["filteringattributes"]) for s in steps] == [(1, 40, FILTERED)]
    navigated = requests.get(
        api(dv, f"serviceendpoints({ids['endpoint']})/serviceendpoint_sdkmessageprocessingstep"),
        params={"$select": "name"},
        timeout=10,
    ).json()["value"]
    assert [s["sdkmessageprocessingstepid"] for s in navigated] == [ids["step"]]
    bad = requests.post(
        api(dv, "serviceendpoints"),
        json={"name": "x", "url": "http://127.0.0.1:1/x", "contract": 8, "authtype": 5, "authvalue": "not xml"},
        timeout=10,
    )
    assert bad.status_code == 400 and "authvalue" in bad.json()["error"]["message"]
    update = message_filter(dv, "Update", "contact")["_sdkmessageid_value"]
    asynchronous_pre_operation = requests.post(
        api(dv, "sdkmessageprocessingsteps"),
        json={"name": "x", "mode": 1, "stage": 20, "sdkmessageid@odata.bind": f"/sdkmessages({update})"},
        timeout=10,
    )
    assert asynchronous_pre_operation.status_code == 400
    assert requests.delete(api(dv, f"sdkmessageprocessingsteps({ids['step']})"), timeout=10).status_code == 204


def test_a_person_editing_a_filtered_column_is_delivered_with_their_user_and_the_header(
    dv: Any, receiver: Receiver
) -> None:
    ids = register(dv, receiver.url + "/api/webhooks/dataverse")
    edit(dv, "contacts", CONTACT, telephone1="555 0100")  # not a filtering attribute: no delivery
    edit(dv, "contacts", CONTACT, donotbulkemail=True)
    edit(dv, "leads", LEAD, donotbulkemail=True)  # no step on lead
    deliveries = flush(dv)
    assert [d["type"] for d in deliveries] == ["Update"]
    (post,) = receiver.posts()
    assert post.path == "/api/webhooks/dataverse" and post.headers["X-Consent-Bridge-Secret"] == SECRET
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["x-ms-dynamics-entity-name"] == "contact"
    assert post.headers["x-ms-dynamics-request-name"] == "Update"
    context = json.loads(post.body)
    assert (context["MessageName"], context["PrimaryEntityName"], context["PrimaryEntityId"]) == (
        "Update",
        "contact",
        CONTACT,
    )
    assert context["InitiatingUserId"] == context["UserId"] == DYNAMICS_USER
    assert context["Stage"] == 40 and context["Mode"] == 1 and context["Depth"] == 1
    assert context["OwningExtension"]["Id"] == ids["step"]
    assert context["OperationCreatedOn"].startswith("/Date(") and context["OperationCreatedOn"].endswith("+0000)/")
    assert target_columns(context) == {"donotbulkemail": True}
    assert post.headers["x-ms-correlation-request-id"] == context["CorrelationId"]


def test_the_app_users_own_writes_carry_its_whoami_user(dv: Any, receiver: Receiver) -> None:
    register(dv, receiver.url + "/hook")
    me = requests.get(api(dv, "WhoAmI"), timeout=10).json()["UserId"]
    assert me != DYNAMICS_USER
    patched = requests.patch(
        api(dv, f"contacts({CONTACT})"), json={"donotsendmm": True}, headers={"If-Match": "*"}, timeout=10
    )
    assert patched.status_code == 204
    updated = requests.post(
        api(dv, "contacts/Microsoft.Dynamics.CRM.UpdateMultiple"),
        json={
            "Targets": [
                {
                    "@odata.type": "Microsoft.Dynamics.CRM.contact",
                    "contactid": CONTACT,
                    "emailaddress1": "a2@example.com",
                }
            ]
        },
        timeout=10,
    )
    assert updated.status_code == 204, updated.text
    flush(dv)
    received = contexts(receiver)
    assert [target_columns(c) for c in received] in (
        [{"donotsendmm": True}, {"emailaddress1": "a2@example.com"}],
        [{"emailaddress1": "a2@example.com"}, {"donotsendmm": True}],
    )
    assert {c["InitiatingUserId"] for c in received} == {me}


def test_changes_in_a_batch_change_set_are_delivered_only_once_it_commits(dv: Any, receiver: Receiver) -> None:
    register(dv, receiver.url + "/hook")

    def change_set(second_id: str) -> int:
        parts = []
        for n, record in enumerate((CONTACT, second_id), start=1):
            parts.append(
                "--changeset_c\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
                f"Content-ID: {n}\r\n\r\nPATCH /api/data/v9.2/contacts({record}) HTTP/1.1\r\n"
                'Content-Type: application/json\r\nIf-Match: *\r\n\r\n{"donotbulkemail": true}\r\n'
            )
        body = (
            "--batch_b\r\nContent-Type: multipart/mixed; boundary=changeset_c\r\n\r\n"
            + "".join(parts)
            + "--changeset_c--\r\n--batch_b--\r\n"
        )
        response = requests.post(
            api(dv, "$batch"),
            data=body.encode(),
            headers={"Content-Type": "multipart/mixed; boundary=batch_b"},
            timeout=10,
        )
        return response.status_code

    assert change_set("33333333-3333-3333-3333-333333333333") >= 400  # the second record is missing: rolled back
    assert flush(dv) == []
    assert change_set(CONTACT) == 200
    assert [d["state"] for d in flush(dv)] == ["delivered", "delivered"]


def test_a_create_step_runs_for_every_new_row(dv: Any, receiver: Receiver) -> None:
    register(dv, receiver.url + "/hook", message="Create", table="lead")
    created = requests.post(api(dv, "leads"), json={"lastname": "New", "emailaddress1": "n@example.com"}, timeout=10)
    assert created.status_code == 204
    flush(dv)
    (context,) = contexts(receiver)
    assert context["MessageName"] == "Create" and context["PrimaryEntityName"] == "lead"
    assert context["OutputParameters"] == [{"key": "id", "value": context["PrimaryEntityId"]}]
    assert target_columns(context)["emailaddress1"] == "n@example.com"


def test_a_503_is_tried_once_more(dv: Any, receiver: Receiver) -> None:
    register(dv, receiver.url + "/hook")
    receiver.statuses.append(503)
    edit(dv, "contacts", CONTACT, donotbulkemail=True)
    (delivery,) = flush(dv)
    assert delivery["state"] == "delivered" and [a["status"] for a in delivery["attempts"]] == [503, 200]
    jobs = requests.get(api(dv, "asyncoperations"), timeout=10).json()["value"]
    assert jobs == []  # asyncautodelete: a succeeded job leaves nothing


def test_a_failed_delivery_is_kept_as_a_failed_system_job(dv: Any, receiver: Receiver) -> None:
    ids = register(dv, receiver.url + "/hook")
    receiver.statuses.extend([503, 503])
    edit(dv, "contacts", CONTACT, donotbulkemail=True)
    flush(dv)
    receiver.statuses.append(500)
    edit(dv, "contacts", CONTACT, donotbulkemail=False)
    deliveries = flush(dv)
    assert [[a["status"] for a in d["attempts"]] for d in deliveries] == [[503, 503], [500]]  # a 500: no retry
    assert {d["state"] for d in deliveries} == {"failed"}
    failed = requests.get(
        api(dv, "asyncoperations"),
        params={
            "$filter": f"statuscode eq 31 and _owningextensionid_value eq {ids['step']}",
            "$select": "name,friendlymessage,errorcode,message,completedon,primaryentitytype",
        },
        timeout=10,
    ).json()["value"]
    assert len(failed) == 2 and {f["primaryentitytype"] for f in failed} == {"contact"}
    assert all(f["message"] and f["completedon"] for f in failed)
    refused = requests.post(api(dv, "asyncoperations"), json={"name": "x"}, timeout=10)
    assert refused.status_code == 400  # system jobs are the service's own


def test_dropped_and_duplicated_jobs_follow_the_seeded_shares(dv: Any, receiver: Receiver) -> None:
    register(dv, receiver.url + "/hook")
    dv.admin.call("POST", "webhooks/faults", {"drop": 0.5, "duplicate": 0.5, "seed": 3})
    edits = [{"id": CONTACT, "changes": {"donotbulkemail": n % 2 == 0}} for n in range(200)]
    dv.admin.call("POST", "edit", {"entity": "contacts", "edits": edits})
    deliveries = flush(dv)
    dropped = sum(d["state"] == "dropped" for d in deliveries)
    duplicates = sum(d["duplicate"] for d in deliveries)
    assert 75 <= dropped <= 125 and 25 <= duplicates <= 75
    assert len(receiver.posts()) == sum(d["state"] == "delivered" for d in deliveries) == 200 - dropped + duplicates


def test_a_reset_forgets_queued_jobs_and_stopping_the_server_stops_the_workers(receiver: Receiver) -> None:
    running_before = set(threading.enumerate())
    with EmulatorServer(DataverseEmulator()) as server:
        running = Running(server.url, AdminClient(server.url), server)
        running.admin.seed({"contacts": [{"contactid": CONTACT, "lastname": "Ada"}]})
        register(running, receiver.url + "/hook")
        edit(running, "contacts", CONTACT, donotbulkemail=True)  # picked up a second later
        queued = running.admin.call("GET", "webhooks/deliveries")
        assert queued["queued"] == 1 and not queued["idle"]
        running.admin.reset()
        after = running.admin.call("GET", "webhooks/deliveries")
        assert after["deliveries"] == [] and after["idle"]
        running.admin.seed({"contacts": [{"contactid": CONTACT, "lastname": "Ada"}]})
        register(running, receiver.url + "/hook")
        running.admin.call("POST", "webhooks/settings", {"timeScale": 0.01})
        edit(running, "contacts", CONTACT, donotbulkemail=True)
        assert [d["state"] for d in flush(running)] == ["delivered"]
        workers = [t for t in set(threading.enumerate()) - running_before if t.name.startswith("dataverse-webhooks-")]
        assert workers
    assert not any(t.is_alive() for t in workers)
    assert len(receiver.posts()) == 1


def test_a_custom_table_has_filters_for_every_message_and_its_steps_run(dv: Any, receiver: Receiver) -> None:
    label = {"LocalizedLabels": [{"Label": "Ticket", "LanguageCode": 1033}]}
    table = {
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": "new_Ticket",
        "DisplayName": label,
        "DisplayCollectionName": label,
        "OwnershipType": "UserOwned",
        "HasActivities": False,
        "HasNotes": False,
        "IsActivity": False,
        "Attributes": [
            {
                "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                "AttributeType": "String",
                "SchemaName": "new_Name",
                "DisplayName": label,
                "IsPrimaryName": True,
                "MaxLength": 100,
            }
        ],
    }
    assert requests.post(api(dv, "EntityDefinitions"), json=table, timeout=10).status_code == 204
    assert message_filter(dv, "UpdateMultiple", "new_ticket")["sdkmessagefilterid"]
    register(dv, receiver.url + "/hook", message="Create", table="new_ticket")
    assert requests.post(api(dv, "new_tickets"), json={"new_name": "T-1"}, timeout=10).status_code == 204
    flush(dv)
    (context,) = contexts(receiver)
    assert context["PrimaryEntityName"] == "new_ticket" and target_columns(context)["new_name"] == "T-1"

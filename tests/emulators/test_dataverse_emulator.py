"""The Dataverse emulator on the wire: framing, headers, error bodies, limits and the admin routes."""

from __future__ import annotations

import email.parser
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

API = "/api/data/v9.2"
ROOT = Path(__file__).resolve().parents[2]


class _Http:
    """requests with a timeout on every call."""

    def __getattr__(self, method: str) -> Any:
        return lambda url, **kwargs: requests.request(method.upper(), url, timeout=30, **kwargs)


http = _Http()


@pytest.fixture
def api(dataverse_emulator: Any) -> str:
    return dataverse_emulator.url + API


def assert_error(response: requests.Response, status: int, code: str, text: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json; odata.metadata=minimal"
    assert response.headers["OData-Version"] == "4.0"
    assert set(response.json()) == {"error"} and set(response.json()["error"]) == {"code", "message"}
    assert response.json()["error"]["code"] == code
    assert text in response.json()["error"]["message"]


def seed(admin: Any, count: int) -> list[str]:
    ids = sorted(str(uuid.uuid4()) for _ in range(count))
    admin.seed(
        {
            "contacts": [
                {"contactid": i, "lastname": f"L{n}", "emailaddress1": f"p{n}@example.com"} for n, i in enumerate(ids)
            ]
        }
    )
    return ids


def test_unknown_segments_and_error_shape(api: str) -> None:
    assert_error(http.get(f"{api}/Contacts"), 404, "0x8006088a", "Resource not found for the segment 'Contacts'.")
    assert_error(http.get(f"{api}/contacts?$format=json"), 400, "0x80060888", "$format")
    assert_error(http.get(f"{api}/contacts?$top=x"), 400, "0x80060888", "$top")
    assert_error(http.get(f"{api}/contacts?$filter=lastname eq"), 400, "0x80060888")
    assert_error(http.get(f"{api}/contacts({uuid.uuid4()})"), 404, "0x80040217", "Does Not Exist")


def test_create_with_representation_and_create_only_upserts(api: str) -> None:
    created = http.post(
        f"{api}/contacts?$select=fullname,emailaddress1",
        json={"firstname": "Ann", "lastname": "Lee", "emailaddress1": "ann@example.com"},
        headers={"Prefer": "return=representation"},
    )
    assert created.status_code == 201 and created.headers["Preference-Applied"] == "return=representation"
    body = created.json()
    assert body["fullname"] == "Ann Lee" and body["@odata.context"].endswith(
        "$metadata#contacts(fullname,emailaddress1)/$entity"
    )
    contact_url = f"{api}/contacts({body['contactid']})"
    assert_error(
        http.patch(contact_url, json={"lastname": "X"}, headers={"If-None-Match": "*"}),
        412,
        "0x80040237",
        "A record with matching key values already exists.",
    )
    fresh = f"{api}/contacts({uuid.uuid4()})"
    made = http.patch(fresh, json={"lastname": "New"}, headers={"If-None-Match": "*"})
    assert made.status_code == 204 and made.headers["OData-EntityId"].endswith(fresh.split(API)[1])
    assert http.get(contact_url, headers={"If-None-Match": body["@odata.etag"]}).status_code == 304


def test_page_size_top_and_count(api: str, dataverse_emulator: Any) -> None:
    ids = seed(dataverse_emulator.admin, 12)
    topped = http.get(f"{api}/contacts?$top=5&$count=true").json()
    assert len(topped["value"]) == 5 and "@odata.nextLink" not in topped and topped["@odata.count"] == 12
    paged = http.get(f"{api}/contacts?$top=2&$select=lastname", headers={"Prefer": "odata.maxpagesize=5"})
    assert paged.headers["Preference-Applied"] == "odata.maxpagesize=5"
    assert [r["contactid"] for r in paged.json()["value"]] == ids[:5]  # $top is ignored with a page size
    assert "$skiptoken=" in paged.json()["@odata.nextLink"] and "$select=lastname" in paged.json()["@odata.nextLink"]
    huge = http.get(f"{api}/contacts", headers={"Prefer": "odata.maxpagesize=9000"})
    assert huge.headers["Preference-Applied"] == "odata.maxpagesize=5000"
    assert http.get(f"{api}/contacts/$count?$filter=lastname eq 'L3'").text == "1"


def test_annotations_when_asked(api: str, dataverse_emulator: Any) -> None:
    seed(dataverse_emulator.admin, 1)
    prefer = 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"'
    row = http.get(f"{api}/contacts?$select=donotsendmm,statecode", headers={"Prefer": prefer}).json()["value"][0]
    assert row["donotsendmm@OData.Community.Display.V1.FormattedValue"] == "Send"
    assert row["statecode@OData.Community.Display.V1.FormattedValue"] == "Active"


def _batch(api: str, body: str, boundary: str = "batch_abc", prefer: str | None = None) -> requests.Response:
    headers = {"Content-Type": f'multipart/mixed; boundary="{boundary}"'}
    if prefer:
        headers["Prefer"] = prefer
    return http.post(f"{api}/$batch", data=body.replace("\n", "\r\n").encode(), headers=headers)


def test_batch_answer_parses_with_a_standard_mime_parser(api: str, dataverse_emulator: Any) -> None:
    ids = seed(dataverse_emulator.admin, 1)
    body = f"""--batch_abc
Content-Type: multipart/mixed; boundary=changeset_1

--changeset_1
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

POST {API}/contacts HTTP/1.1
Content-Type: application/json; type=entry

{{"lastname": "In a change set"}}
--changeset_1
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

PATCH $1 HTTP/1.1
Content-Type: application/json

{{"firstname": "Patched"}}
--changeset_1--
--batch_abc
Content-Type: application/http
Content-Transfer-Encoding: binary

GET {API}/contacts({ids[0]})?$select=lastname HTTP/1.1


--batch_abc--
"""
    response = _batch(api, body)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode() + response.content
    )
    changeset, single = message.get_payload()
    assert changeset.get_content_type() == "multipart/mixed"
    first, second = changeset.get_payload()
    assert first["Content-ID"] == "1" and first.get_payload().startswith("HTTP/1.1 204 No Content")
    assert second.get_payload().startswith("HTTP/1.1 204")
    assert single["Content-Type"] == "application/http"
    assert single.get_payload().startswith("HTTP/1.1 200 OK") and '"lastname":"L0"' in single.get_payload()
    created = [r for r in http.get(f"{api}/contacts?$select=fullname").json()["value"] if r["contactid"] != ids[0]]
    assert [r["fullname"] for r in created] == ["Patched In a change set"]


def test_batch_refusals(api: str) -> None:
    get_in_changeset = f"""--batch_abc
Content-Type: multipart/mixed; boundary=cs

--cs
Content-Type: application/http
Content-Transfer-Encoding: binary

GET {API}/contacts HTTP/1.1


--cs--
--batch_abc--
"""
    assert_error(_batch(api, get_in_changeset), 400, "0x80060888", "GET")
    unknown_reference = """--batch_abc
Content-Type: multipart/mixed; boundary=cs

--cs
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

PATCH $1 HTTP/1.1
Content-Type: application/json

{"lastname": "x"}
--cs--
--batch_abc--
"""
    answer = _batch(api, unknown_reference)
    assert answer.status_code == 400
    assert "Content-ID Reference: '$1' does not exist in the batch context." in answer.text
    part = f"""--batch_abc
Content-Type: application/http
Content-Transfer-Encoding: binary

GET {API}/WhoAmI HTTP/1.1

"""
    assert_error(_batch(api, part * 1001 + "--batch_abc--\n"), 400, "0x80060888", "1000")
    assert_error(
        http.post(f"{api}/$batch", data=b"x", headers={"Content-Type": "application/json"}),
        400,
        "0x80060888",
        "multipart/mixed",
    )


def test_faults_answer_like_dataverse(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    admin.fail_next(1, pattern="WhoAmI", status=429)
    throttled = http.get(f"{api}/WhoAmI")
    assert_error(throttled, 429, "0x80072322", "Number of requests exceeded the limit of 6000")
    assert throttled.headers["Retry-After"] == "1"
    admin.call("POST", "settings", {"faultRetryAfter": "0.1"})
    admin.call("POST", "faults", {"rate": 1.0, "kinds": {"429-empty": 1}})
    empty = http.get(f"{api}/WhoAmI")
    assert (empty.status_code, empty.content, empty.headers["Retry-After"]) == (429, b"", "0.1")
    admin.call("POST", "faults", {"rate": 1.0, "kinds": {"503": 1}})
    assert_error(http.get(f"{api}/WhoAmI"), 503, "0x80040216")
    admin.clear_faults()
    assert http.get(f"{api}/WhoAmI").status_code == 200


def test_concurrent_requests_beyond_the_limit_get_429(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    admin.call("POST", "throttling", {"concurrent": 2})
    admin.call("POST", "settings", {"latencySeconds": 0.3})
    answers: list[requests.Response] = []

    def call() -> None:
        answers.append(http.get(f"{api}/WhoAmI"))

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) >= 2 and 429 in statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert_error(refused, 429, "0x80072326", "Number of concurrent requests exceeded the limit of 2.")
    assert int(refused.headers["Retry-After"]) >= 1


def test_listmembers_are_retrieve_multiple_only(api: str, dataverse_emulator: Any) -> None:
    ids = seed(dataverse_emulator.admin, 2)
    list_id = str(uuid.uuid4())
    dataverse_emulator.admin.seed(
        {"lists": [{"listid": list_id, "listname": "L", "createdfromcode": 2, "members": ids}]}
    )
    rows = http.get(f"{api}/listmembers?$select=_entityid_value,entitytype").json()["value"]
    assert sorted(r["_entityid_value"] for r in rows) == ids and {r["entitytype"] for r in rows} == {"contact"}
    assert http.get(f"{api}/listmembers({rows[0]['listmemberid']})").status_code == 400
    added = http.post(f"{api}/lists({list_id})/Microsoft.Dynamics.CRM.AddMemberList", json={"EntityId": ids[0]})
    assert added.status_code == 200 and added.json()["Id"] in {r["listmemberid"] for r in rows}
    removed = http.delete(
        f"{api}/lists({list_id})/listcontact_association/$ref", params={"$id": f"{api}/contacts({ids[1]})"}
    )
    assert removed.status_code == 204
    assert_error(
        http.delete(f"{api}/lists({list_id})/listcontact_association({ids[1]})/$ref"),
        400,
        "0x80048458",
        "Specified Item not a member of the specified List.",
    )
    lists = http.get(f"{api}/contacts({ids[0]})/listcontact_association?$select=listname").json()["value"]
    assert [r["listid"] for r in lists] == [list_id]


def test_fetchxml_paging_cookie_annotations(api: str, dataverse_emulator: Any) -> None:
    seed(dataverse_emulator.admin, 7)
    fetch = "<fetch count='3' page='1'><entity name='contact'><attribute name='lastname'/></entity></fetch>"
    prefer = 'odata.include-annotations="*"'
    first = http.get(f"{api}/contacts?fetchXml={quote(fetch)}", headers={"Prefer": prefer}).json()
    assert len(first["value"]) == 3 and first["@Microsoft.Dynamics.CRM.morerecords"] is True
    cookie = first["@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"]
    assert cookie.startswith('<cookie pagenumber="2" pagingcookie="%253ccookie') or "%253Ccookie" in cookie
    third = quote(fetch.replace("page='1'", "page='3'"))
    last = http.get(f"{api}/contacts?fetchXml={third}", headers={"Prefer": prefer}).json()
    assert len(last["value"]) == 1 and "@Microsoft.Dynamics.CRM.morerecords" not in last
    assert_error(http.get(f"{api}/leads?fetchXml={quote(fetch)}"), 400, "0x80040203")


def test_metadata_queries(api: str) -> None:
    found = http.get(
        f"{api}/EntityDefinitions?$select=LogicalName,EntitySetName&$filter=LogicalName eq 'list' "
        "or LogicalName eq 'listmember'"
    ).json()["value"]
    assert sorted((e["LogicalName"], e["EntitySetName"]) for e in found) == [
        ("list", "lists"),
        ("listmember", "listmembers"),
    ]
    tracked = http.get(f"{api}/EntityDefinitions?$select=LogicalName&$filter=ChangeTrackingEnabled eq true")
    assert {e["LogicalName"] for e in tracked.json()["value"]} >= {"contact", "lead", "account", "list", "listmember"}
    column = http.get(
        f"{api}/EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='statecode')"
        "/Microsoft.Dynamics.CRM.StateAttributeMetadata?$select=LogicalName&$expand=OptionSet"
    )
    assert [o["Value"] for o in column.json()["OptionSet"]["Options"]] == [0, 1]
    assert_error(
        http.get(f"{api}/EntityDefinitions(LogicalName='contact')?$select=Nope"),
        400,
        "0x80060888",
        "Could not find a property named 'Nope' on type 'Microsoft.Dynamics.CRM.EntityMetadata'.",
    )
    assert http.get(f"{api}/EntityDefinitions(LogicalName='nosuchtable')").status_code == 404
    assert http.post(f"{api}/EntityDefinitions", json={"SchemaName": "cbr_Bad"}).status_code == 400


def test_admin_edits_look_like_a_user_in_dynamics(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed(admin, 1)
    me = http.get(f"{api}/WhoAmI").json()["UserId"]
    before = admin.state(entity="contacts", id=ids[0])["rows"][0]
    admin.advance_clock(60)
    edited = admin.call("POST", "edit", {"entity": "contacts", "id": ids[0], "changes": {"donotemail": True}})
    row = admin.state(entity="contacts", id=ids[0])["rows"][0]
    assert row["donotemail"] is True and row["versionnumber"] == edited["edited"][0]["versionnumber"]
    assert row["modifiedon"] > before["modifiedon"] and row["_modifiedby_value"] != me
    http.patch(f"{api}/contacts({ids[0]})", json={"donotemail": False}, headers={"If-Match": "*"})
    assert admin.state(entity="contacts", id=ids[0])["rows"][0]["_modifiedby_value"] == me
    admin.call("POST", "delete", {"entity": "contacts", "ids": ids})
    assert admin.state()["tables"]["contacts"] == 0


def test_pages_cost_the_same_at_the_end_of_100000_rows(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    started = time.perf_counter()
    ids = sorted(str(uuid.uuid4()) for _ in range(100_000))
    admin.seed(
        {
            "contacts": [
                {"contactid": i, "lastname": "L", "emailaddress1": f"p{n}@example.com"} for n, i in enumerate(ids)
            ],
            "lists": [{"listid": str(uuid.uuid4()), "listname": "All", "createdfromcode": 2, "members": ids}],
        }
    )
    seeded = time.perf_counter() - started
    list_id = admin.state(entity="lists")["rows"][0]["listid"]
    session = requests.Session()
    for url in (
        f"{api}/contacts?$select=emailaddress1",
        f"{api}/lists({list_id})/listcontact_association?$select=emailaddress1",
    ):
        examined, count = [], 0
        while url:
            before = admin.call("GET", "stats")["rowsExamined"]
            body = session.get(url, headers={"Prefer": "odata.maxpagesize=5000"}).json()
            examined.append(admin.call("GET", "stats")["rowsExamined"] - before)
            count += len(body["value"])
            url = body.get("@odata.nextLink")
        assert count == 100_000 and len(examined) == 20
        assert examined == [5000] * 20  # each page looks at its own rows only, to the end of the table
    print(f"seeded 100,000 contacts and a 100,000-member list in {seeded:.1f}s")


def test_served_as_a_module() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.dataverse", "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        port = int(line.strip().rsplit(" ", 1)[-1])
        assert http.get(f"http://127.0.0.1:{port}{API}/WhoAmI").status_code == 200
    finally:
        process.send_signal(signal.SIGINT)  # common.main's SIGTERM handler calls shutdown() on its own thread
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_tokens_when_required_and_the_execution_time_limit(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    admin.call("POST", "settings", {"requireToken": True})
    refused = http.get(f"{api}/WhoAmI")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert http.get(f"{api}/WhoAmI", headers={"Authorization": "Bearer opaque"}).status_code == 200
    admin.call("POST", "settings", {"requireToken": False, "latencySeconds": 0.02})
    admin.call("POST", "throttling", {"executionMs": 10})
    http.get(f"{api}/WhoAmI")
    assert_error(
        http.get(f"{api}/WhoAmI"),
        429,
        "0x80072321",
        "Combined execution time of incoming requests exceeded limit of 10  milliseconds",
    )


def test_remove_member_list_takes_a_member_out_of_a_static_list_and_refuses_a_dynamic_one(
    api: str, dataverse_emulator: Any
) -> None:
    ids = seed(dataverse_emulator.admin, 3)
    static, dynamic = str(uuid.uuid4()), str(uuid.uuid4())
    query = '<fetch><entity name="contact"><attribute name="contactid"/></entity></fetch>'
    dataverse_emulator.admin.seed(
        {
            "lists": [
                {"listid": static, "listname": "S", "createdfromcode": 2, "members": ids},
                {"listid": dynamic, "listname": "D", "createdfromcode": 2, "type": True, "query": query},
            ]
        }
    )
    members = http.get(f"{api}/listmembers?$select=_entityid_value,listmemberid").json()["value"]
    by_record = {r["_entityid_value"]: r["listmemberid"] for r in members}
    action = f"{api}/lists({static})/Microsoft.Dynamics.CRM.RemoveMemberList"
    assert http.post(action, json={"EntityId": ids[0]}).status_code == 204  # by the member record's id
    assert http.post(action, json={"EntityId": by_record[ids[1]]}).status_code == 204  # or by the list member's
    assert [r["contactid"] for r in http.get(f"{api}/lists({static})/listcontact_association").json()["value"]] == [
        ids[2]
    ]
    assert http.get(f"{api}/lists({static})?$select=membercount").json()["membercount"] == 1
    assert_error(http.post(action, json={"EntityId": ids[0]}), 400, "0x80048458", "not a member")
    assert_error(
        http.post(f"{api}/lists({dynamic})/Microsoft.Dynamics.CRM.RemoveMemberList", json={"EntityId": ids[2]}),
        400,
        "0x80040203",
        "dynamic marketing list",
    )
    assert_error(
        http.post(f"{api}/contacts({ids[2]})/Microsoft.Dynamics.CRM.RemoveMemberList", json={"EntityId": ids[2]}),
        404,
        "0x8006088a",
        "RemoveMemberList",
    )
    # a dynamic list's members come from its query: the service keeps no count for it
    assert http.get(f"{api}/lists({dynamic})?$select=membercount,type").json()["membercount"] is None

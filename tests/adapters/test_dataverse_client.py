"""The product's Dataverse client against the Dataverse emulator over loopback."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from shared.adapters.dataverse import (
    BatchOperation,
    Dataverse,
    DataverseError,
    DeletedRecord,
    DeltaTokenExpiredError,
    Throttled,
    environment_url,
)
from shared.adapters.schema import ensure_solution
from shared.errors import ConfigurationError

LIST_NAV = "listcontact_association"


@pytest.fixture
def client(dataverse_emulator: Any) -> Dataverse:
    return Dataverse(dataverse_emulator.url, max_attempts=4)


def seed_contacts(admin: Any, count: int, **columns: Any) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    admin.seed(
        {
            "contacts": [
                {
                    "contactid": i,
                    "firstname": f"F{n:03d}",
                    "lastname": f"L{n % 7}",
                    "emailaddress1": f"person{n}@example.com",
                    **columns,
                }
                for n, i in enumerate(ids)
            ]
        }
    )
    return ids


def fast_retries(admin: Any, seconds: str = "0.05") -> None:
    admin.call("POST", "settings", {"faultRetryAfter": seconds})


# ---- configuration ------------------------------------------------------------------------------------


def test_only_https_or_a_loopback_emulator_is_accepted() -> None:
    assert environment_url("https://contoso.crm4.dynamics.com/") == "https://contoso.crm4.dynamics.com"
    assert environment_url("http://127.0.0.1:8080/api/data/v9.2") == "http://127.0.0.1:8080"
    for bad in ("http://contoso.crm4.dynamics.com", "ftp://127.0.0.1", "", "https://contoso.crm.dynamics.com/x"):
        with pytest.raises(ConfigurationError, match="DATAVERSE_URL") as refused:
            Dataverse(bad)
        assert refused.value.subject == "DATAVERSE_URL"


def test_a_refused_url_never_shows_a_password_it_carries() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Dataverse("http://admin:s3cret@contoso.crm4.dynamics.com")
    assert "s3cret" not in str(refused.value) and "contoso.crm4.dynamics.com" in str(refused.value)


def test_an_unreachable_environment_is_named_after_retries() -> None:
    waits: list[float] = []
    unreachable = Dataverse("http://127.0.0.1:9", max_attempts=3, sleep=waits.append)
    with pytest.raises(DataverseError) as failed:
        unreachable.whoami()
    assert failed.value.status == 0 and "DATAVERSE_URL http://127.0.0.1:9" in str(failed.value)
    assert len(waits) == 2 and waits[1] > waits[0] * 0.9


@dataclass
class _AccessToken:
    token: str
    expires_on: int


class _Credential:
    def __init__(self, object_id: str) -> None:
        self.calls: list[str] = []
        claims = base64.urlsafe_b64encode(json.dumps({"oid": object_id}).encode()).decode().rstrip("=")
        self.token = f"header.{claims}.signature"

    def get_token(self, scope: str) -> _AccessToken:
        self.calls.append(scope)
        return _AccessToken(self.token, int(time.time()) + 3600)


def test_a_credential_is_asked_once_for_the_environment_scope_and_names_the_caller(dataverse_emulator: Any) -> None:
    credential = _Credential("11111111-2222-3333-4444-555555555555")
    with_token = Dataverse(dataverse_emulator.url, credential=credential)
    anonymous = Dataverse(dataverse_emulator.url)
    first, second = with_token.whoami(), with_token.whoami()
    assert credential.calls == [f"{dataverse_emulator.url}/.default"]
    assert first["UserId"] == second["UserId"] != anonymous.whoami()["UserId"]
    assert set(first) >= {"BusinessUnitId", "UserId", "OrganizationId"}


# ---- records ------------------------------------------------------------------------------------------


def test_create_read_update_delete_with_server_maintained_columns(client: Dataverse, dataverse_emulator: Any) -> None:
    contact_id = client.create(
        "contacts", {"firstname": "Ada", "lastname": "Byron", "emailaddress1": "ada@example.com"}
    )
    row = client.get(f"contacts({contact_id})", {"$select": "fullname,donotbulkemail,modifiedon,versionnumber"})
    assert row["fullname"] == "Ada Byron" and row["donotbulkemail"] is False
    assert row["@odata.etag"] == f'W/"{row["versionnumber"]}"'
    dataverse_emulator.admin.advance_clock(3600)
    client.update("contacts", contact_id, {"donotbulkemail": True})
    after = client.get(f"contacts({contact_id})", {"$select": "donotbulkemail,modifiedon,versionnumber"})
    assert after["donotbulkemail"] is True and after["versionnumber"] > row["versionnumber"]
    assert after["modifiedon"] > row["modifiedon"]
    client.delete("contacts", contact_id)
    with pytest.raises(DataverseError) as missing:
        client.get(f"contacts({contact_id})")
    assert (missing.value.status, missing.value.code) == (404, "0x80040217")
    assert f"contact With Id = {contact_id} Does Not Exist" in missing.value.message


def test_update_never_creates_unless_asked_and_honours_etags(client: Dataverse) -> None:
    absent = str(uuid.uuid4())
    with pytest.raises(DataverseError) as no_upsert:
        client.update("contacts", absent, {"lastname": "Ghost"})
    assert no_upsert.value.status == 404
    client.update("contacts", absent, {"lastname": "Upserted"}, if_match=None)
    current = client.get(f"contacts({absent})", {"$select": "lastname"})
    assert current["lastname"] == "Upserted"
    client.update("contacts", absent, {"lastname": "Again"}, if_match=current["@odata.etag"])
    with pytest.raises(DataverseError) as stale:
        client.update("contacts", absent, {"lastname": "Stale"}, if_match=current["@odata.etag"])
    assert (stale.value.status, stale.value.code) == (412, "0x80060882")
    assert "doesn't match the RowVersion" in stale.value.message


def test_unknown_and_read_only_columns_are_refused(client: Dataverse) -> None:
    contact_id = client.create("contacts", {"lastname": "Plain"})
    with pytest.raises(DataverseError) as unknown:
        client.update("contacts", contact_id, {"donotbulkmail": True})
    assert unknown.value.code == "0x80060888"
    assert "The property 'donotbulkmail' does not exist on type 'Microsoft.Dynamics.CRM.contact'" in str(unknown.value)
    with pytest.raises(DataverseError) as computed:
        client.update("contacts", contact_id, {"fullname": "Someone Else"})
    assert computed.value.status == 400
    with pytest.raises(DataverseError) as wrong_type:
        client.update("contacts", contact_id, {"donotbulkemail": "yes"})
    assert "Edm.Boolean" in wrong_type.value.message
    with pytest.raises(DataverseError) as too_long:
        client.update("contacts", contact_id, {"emailaddress1": "x" * 90 + "@example.com"})
    assert too_long.value.code == "0x80044331"
    assert "@example.com" not in str(too_long.value)


def test_qualified_leads_and_inactive_contacts_are_read_only(client: Dataverse, dataverse_emulator: Any) -> None:
    lead_id, contact_id = str(uuid.uuid4()), str(uuid.uuid4())
    dataverse_emulator.admin.seed(
        {
            "leads": [{"leadid": lead_id, "lastname": "Prospect"}],
            "contacts": [{"contactid": contact_id, "lastname": "Gone", "statecode": 1}],
        }
    )
    dataverse_emulator.admin.call("POST", "qualify-lead", {"id": lead_id})
    with pytest.raises(DataverseError) as qualified:
        client.update("leads", lead_id, {"donotbulkemail": True})
    assert (qualified.value.status, qualified.value.code) == (400, "0x8004022e")
    assert qualified.value.message == "The object cannot be updated because it is read-only."
    with pytest.raises(DataverseError) as inactive:
        client.update("contacts", contact_id, {"donotbulkemail": True})
    assert inactive.value.code == "0x80040230"
    client.update("contacts", contact_id, {"statecode": 0})  # reactivating is allowed
    client.update("contacts", contact_id, {"donotbulkemail": True})
    assert client.get(f"contacts({contact_id})", {"$select": "statuscode"})["statuscode"] == 1


def test_errors_never_carry_email_addresses(client: Dataverse) -> None:
    with pytest.raises(DataverseError) as by_key:
        client.get("contacts(emailaddress1='jane.doe+news@example.com')")
    assert "jane.doe" not in str(by_key.value) and "<member " in str(by_key.value)


# ---- queries and paging --------------------------------------------------------------------------------


def test_pages_follow_next_links_in_key_order(client: Dataverse, dataverse_emulator: Any) -> None:
    ids = seed_contacts(dataverse_emulator.admin, 25)
    pages = list(client.iter_pages("contacts", select=["emailaddress1"], page_size=10))
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [r["contactid"] for p in pages for r in p] == sorted(ids)
    assert client.last_delta_link is None


def test_filtered_and_ordered_pages_match_the_query(client: Dataverse, dataverse_emulator: Any) -> None:
    ids = seed_contacts(dataverse_emulator.admin, 40)
    dataverse_emulator.admin.call(
        "POST",
        "edit",
        {"entity": "contacts", "edits": [{"id": i, "changes": {"donotbulkemail": True}} for i in ids[::3]]},
    )
    rows = [
        r
        for page in client.iter_pages(
            "contacts",
            select="firstname,lastname",
            filter="donotbulkemail eq false",
            orderby="lastname desc,firstname",
            page_size=7,
        )
        for r in page
    ]
    expected = sorted(((f"L{n % 7}", f"F{n:03d}") for n in range(40) if n % 3), key=lambda t: t[1])
    expected.sort(key=lambda t: t[0], reverse=True)
    assert [(r["lastname"], r["firstname"]) for r in rows] == expected


def test_query_options_the_service_refuses(client: Dataverse) -> None:
    for params, text in (
        ({"$skip": "10"}, "$skip"),
        ({"$search": "x"}, "$search"),
        ({"$select": "nosuchcolumn"}, "Could not find a property named 'nosuchcolumn'"),
    ):
        with pytest.raises(DataverseError) as refused:
            client.get("contacts", params)
        assert refused.value.status == 400 and text in refused.value.message


def test_list_members_are_read_through_the_navigation_property(client: Dataverse, dataverse_emulator: Any) -> None:
    ids = seed_contacts(dataverse_emulator.admin, 12)
    list_id = str(uuid.uuid4())
    dataverse_emulator.admin.seed(
        {"lists": [{"listid": list_id, "listname": "News", "createdfromcode": 2, "members": ids[:9]}]}
    )
    pages = list(client.iter_pages(f"lists({list_id})/{LIST_NAV}", select=["emailaddress1"], page_size=4))
    assert [len(p) for p in pages] == [4, 4, 1]
    assert sorted(r["contactid"] for p in pages for r in p) == sorted(ids[:9])


# ---- change tracking -----------------------------------------------------------------------------------


def test_delta_links_return_changes_then_deletions(client: Dataverse, dataverse_emulator: Any) -> None:
    ids = seed_contacts(dataverse_emulator.admin, 12)
    initial = [
        r
        for page in client.iter_pages(
            "contacts", select=["emailaddress1", "donotbulkemail"], page_size=5, track_changes=True
        )
        for r in page
    ]
    assert len(initial) == 12 and client.last_delta_link and "$deltatoken=" in client.last_delta_link
    first_link = client.last_delta_link
    dataverse_emulator.admin.call(
        "POST", "edit", {"entity": "contacts", "id": ids[0], "changes": {"donotbulkemail": True}}
    )
    created = client.create("contacts", {"lastname": "New", "emailaddress1": "new@example.com"})
    client.delete("contacts", ids[1])
    changes = [r for page in client.iter_delta(first_link) for r in page]
    assert [r["contactid"] for r in changes if isinstance(r, dict)] == [ids[0], created]
    assert changes[0]["donotbulkemail"] is True and set(changes[0]) >= {"emailaddress1", "@odata.etag"}
    assert [r for r in changes if isinstance(r, DeletedRecord)] == [DeletedRecord(ids[1], "deleted")]
    next_link = client.last_delta_link
    assert next_link and next_link != first_link
    assert [r for page in client.iter_delta(next_link) for r in page] == []


def test_change_tracking_refuses_filters_expired_tokens_and_untracked_tables(
    client: Dataverse, dataverse_emulator: Any
) -> None:
    with pytest.raises(DataverseError) as filtered:
        list(client.iter_pages("contacts", filter="donotbulkemail eq true", track_changes=True))
    assert filtered.value.message == 'The "$filter" query parameter isn\'t supported when Change Tracking is enabled.'
    list(client.iter_pages("contacts", select=["emailaddress1"], track_changes=True))
    link = client.last_delta_link
    assert link is not None
    dataverse_emulator.admin.advance_clock(8 * 86400)
    with pytest.raises(DeltaTokenExpiredError) as expired:
        list(client.iter_delta(link))
    assert expired.value.code == "0x80044352"
    client.create_entity(_table_metadata("cbr_Untracked", change_tracking=False))
    with pytest.raises(DataverseError) as untracked:
        list(client.iter_pages("cbr_untrackeds", track_changes=True))
    assert untracked.value.code == "0x80072491"


# ---- throttling and faults -----------------------------------------------------------------------------


def test_429_retry_after_is_honoured_then_gives_up(client: Dataverse, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    fast_retries(admin, "0.2")
    admin.fail_next(2, pattern="/contacts$", status=429)
    started = time.monotonic()
    assert list(client.iter_pages("contacts")) == [[]]
    assert time.monotonic() - started >= 0.4
    assert admin.calls()["GET /api/data/v9.2/{entityset}"] == 3
    admin.fail_next(5, pattern="/contacts$", status=429)
    impatient = Dataverse(dataverse_emulator.url, max_attempts=2)
    with pytest.raises(Throttled) as throttled:
        impatient.get("contacts")
    assert (throttled.value.status, throttled.value.code) == (429, "0x80072322")


def test_503_and_empty_429_are_retried(client: Dataverse, dataverse_emulator: Any) -> None:
    fast_retries(dataverse_emulator.admin)
    dataverse_emulator.admin.fail_next(1, pattern="WhoAmI", status=503)
    assert "UserId" in client.whoami()
    dataverse_emulator.admin.call("POST", "faults", {"rate": 1.0, "kinds": {"429-empty": 1}})
    with pytest.raises(Throttled):
        Dataverse(dataverse_emulator.url, max_attempts=2).whoami()


def test_the_request_window_throttles_until_it_moves_on(client: Dataverse, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    admin.call("POST", "throttling", {"requests": 3, "windowSeconds": 300, "retryAfter": "0.05"})
    impatient = Dataverse(dataverse_emulator.url, max_attempts=2)
    for _ in range(3):
        impatient.whoami()
    with pytest.raises(Throttled) as limited:
        impatient.whoami()
    assert limited.value.message == "Number of requests exceeded the limit of 3 over time window of 300 seconds."
    admin.advance_clock(301)
    assert "UserId" in impatient.whoami()


# ---- $batch ----------------------------------------------------------------------------------------------


def test_batch_continues_on_error_by_default(client: Dataverse, dataverse_emulator: Any) -> None:
    ids = seed_contacts(dataverse_emulator.admin, 2)
    missing = str(uuid.uuid4())
    results = client.batch(
        [
            BatchOperation("PATCH", f"contacts({i})", {"donotbulkemail": True}, {"If-Match": "*"})
            for i in (ids[0], missing, ids[1])
        ]
    )
    assert [r.status for r in results] == [204, 404, 204]
    error = results[1].error()
    assert error is not None and error.code == "0x80040217"
    rows = [r for p in client.iter_pages("contacts", select=["donotbulkemail"]) for r in p]
    assert all(r["donotbulkemail"] for r in rows)


def test_batch_stops_at_the_first_error_when_asked(client: Dataverse, dataverse_emulator: Any) -> None:
    ids = seed_contacts(dataverse_emulator.admin, 2)
    results = client.batch(
        [
            BatchOperation("PATCH", f"contacts({i})", {"lastname": "Z"}, {"If-Match": "*"})
            for i in (ids[0], str(uuid.uuid4()), ids[1])
        ],
        continue_on_error=False,
    )
    assert [r.status for r in results] == [204, 404, 424]
    assert client.get(f"contacts({ids[1]})", {"$select": "lastname"})["lastname"] != "Z"


def test_an_atomic_batch_rolls_back_everything(client: Dataverse, dataverse_emulator: Any) -> None:
    ids = seed_contacts(dataverse_emulator.admin, 1)
    results = client.batch(
        [
            BatchOperation("POST", "contacts", {"lastname": "Created"}),
            BatchOperation("PATCH", f"contacts({ids[0]})", {"donotbulkemail": True}),
            BatchOperation("PATCH", f"contacts({ids[0]})", {"nosuchcolumn": 1}),
        ],
        atomic=True,
    )
    assert {r.status for r in results} == {400}
    rows = [r for p in client.iter_pages("contacts", select=["lastname", "donotbulkemail"]) for r in p]
    assert [(r["contactid"], r["donotbulkemail"]) for r in rows] == [(ids[0], False)]


def test_batch_content_ids_link_a_new_contact_to_a_list(client: Dataverse, dataverse_emulator: Any) -> None:
    list_id = str(uuid.uuid4())
    dataverse_emulator.admin.seed({"lists": [{"listid": list_id, "listname": "L", "createdfromcode": 2}]})
    results = client.batch(
        [
            BatchOperation("POST", "contacts", {"lastname": "Joined"}, content_id="1"),
            BatchOperation("POST", f"lists({list_id})/{LIST_NAV}/$ref", {"@odata.id": "$1"}),
        ],
        atomic=True,
    )
    assert [r.status for r in results] == [204, 204]
    members = [r["contactid"] for p in client.iter_pages(f"lists({list_id})/{LIST_NAV}") for r in p]
    assert members == [results[0].entity_id]


def test_large_batches_are_split_and_a_throttled_batch_is_retried(client: Dataverse, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    fast_retries(admin)
    waits: list[float] = []
    client.set_throttle_observer(waits.append)
    admin.fail_next(1, pattern=r"\$batch", status=429)
    results = client.batch([BatchOperation("POST", "contacts", {"lastname": f"B{n}"}) for n in range(1200)])
    assert len(results) == 1200 and all(r.status == 204 for r in results)
    assert len({r.entity_id for r in results}) == 1200
    assert admin.calls()["POST /api/data/v9.2/$batch"] == 3  # two batches, one retried after its 429
    assert len(waits) == 1  # the observer heard the one throttled request
    with pytest.raises(ValueError, match="at most 1000"):
        client.batch([BatchOperation("POST", "contacts", {})] * 1001, atomic=True)


# ---- marketing lists ---------------------------------------------------------------------------------------


def test_membership_changes_write_listmember_rows_not_the_contact(client: Dataverse, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed_contacts(admin, 4)
    list_id = str(uuid.uuid4())
    admin.seed({"lists": [{"listid": list_id, "listname": "Static", "createdfromcode": 2}]})
    before = client.get(f"contacts({ids[0]})", {"$select": "modifiedon,versionnumber"})
    admin.advance_clock(120)
    client.associate(list_id, LIST_NAV, "contacts", ids[0])
    client.add_list_members(list_id, 2, ids[1:3])
    client.add_list_members(list_id, 2, ids[1:3])  # already members: nothing happens
    with pytest.raises(DataverseError) as twice:
        client.associate(list_id, LIST_NAV, "contacts", ids[0])
    assert twice.value.status == 412
    client.disassociate(list_id, LIST_NAV, ids[1])
    members = sorted(r["contactid"] for p in client.iter_pages(f"lists({list_id})/{LIST_NAV}") for r in p)
    assert members == sorted([ids[0], ids[2]])
    assert client.get(f"lists({list_id})", {"$select": "membercount"})["membercount"] == 2
    after = client.get(f"contacts({ids[0]})", {"$select": "modifiedon,versionnumber"})
    assert (after["modifiedon"], after["versionnumber"]) == (before["modifiedon"], before["versionnumber"])
    rows = [
        r
        for p in client.iter_pages(
            "listmembers", select=["_entityid_value", "modifiedon", "createdon"], filter=f"_listid_value eq {list_id}"
        )
        for r in p
    ]
    assert sorted(r["_entityid_value"] for r in rows) == members
    assert all(r["modifiedon"] > before["modifiedon"] for r in rows)


def test_locked_dynamic_and_mismatched_lists_refuse_members(client: Dataverse, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed_contacts(admin, 1)
    locked, dynamic, leads = (str(uuid.uuid4()) for _ in range(3))
    admin.seed(
        {
            "lists": [
                {"listid": locked, "listname": "Locked", "createdfromcode": 2, "lockstatus": True},
                {
                    "listid": dynamic,
                    "listname": "Dynamic",
                    "createdfromcode": 2,
                    "type": True,
                    "query": "<fetch><entity name='contact'/></fetch>",
                },
                {"listid": leads, "listname": "Leads", "createdfromcode": 4},
            ]
        }
    )
    for list_id, text in ((locked, "locked"), (dynamic, "dynamic"), (leads, "member type")):
        with pytest.raises(DataverseError) as refused:
            client.add_list_members(list_id, 2, ids)
        assert refused.value.status == 400 and text in refused.value.message
    with pytest.raises(DataverseError):
        client.associate(leads, LIST_NAV, "contacts", ids[0])


def test_a_dynamic_list_is_read_by_running_its_query_with_paging_cookies(
    client: Dataverse, dataverse_emulator: Any
) -> None:
    admin = dataverse_emulator.admin
    ids = seed_contacts(admin, 30)
    admin.call(
        "POST",
        "edit",
        {"entity": "contacts", "edits": [{"id": i, "changes": {"donotbulkemail": True}} for i in ids[:5]]},
    )
    list_id = str(uuid.uuid4())
    query = (
        "<fetch><entity name='contact'><attribute name='emailaddress1'/><attribute name='donotemail'/>"
        "<order attribute='emailaddress1'/><filter><condition attribute='donotbulkemail' operator='eq' "
        "value='0'/></filter></entity></fetch>"
    )
    admin.seed(
        {"lists": [{"listid": list_id, "listname": "Dynamic", "createdfromcode": 2, "type": True, "query": query}]}
    )
    stored = client.get(f"lists({list_id})", {"$select": "type,createdfromcode,query"})
    assert stored["type"] is True and stored["createdfromcode"] == 2
    pages = list(client.iter_fetchxml("contacts", stored["query"], page_size=10))
    assert [len(p) for p in pages] == [10, 10, 5]
    emails = [r["emailaddress1"] for p in pages for r in p]
    assert emails == sorted(f"person{n}@example.com" for n in range(5, 30))
    requests_seen = [r for r in admin.requests() if r["route"].endswith("/{entityset}")]
    assert "paging-cookie" in requests_seen[-1]["query"]["fetchXml"][0]
    assert [r for p in client.iter_pages(f"lists({list_id})/{LIST_NAV}") for r in p] == []
    assert sorted(admin.state(entity="lists", id=list_id)["rows"][0]["members"]) == sorted(ids[5:])


# ---- metadata ------------------------------------------------------------------------------------------------


def _label(text: str) -> dict[str, Any]:
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.Label",
        "LocalizedLabels": [
            {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text, "LanguageCode": 1033}
        ],
    }


def _status_column(schema_name: str = "cbr_SubscriberStatus") -> dict[str, Any]:
    options = [
        {"Value": 100000000 + n, "Label": _label(text)}
        for n, text in enumerate(("Subscribed", "Unsubscribed", "Cleaned", "Pending"))
    ]
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        "AttributeType": "Picklist",
        "AttributeTypeName": {"Value": "PicklistType"},
        "SchemaName": schema_name,
        "DisplayName": _label("Subscriber Status"),
        "RequiredLevel": {"Value": "None"},
        "OptionSet": {
            "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
            "IsGlobal": False,
            "OptionSetType": "Picklist",
            "Options": options,
        },
    }


def _table_metadata(schema_name: str, change_tracking: bool = True) -> dict[str, Any]:
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": schema_name,
        "DisplayName": _label("Sync State"),
        "DisplayCollectionName": _label("Sync States"),
        "OwnershipType": "OrganizationOwned",
        "HasActivities": False,
        "HasNotes": False,
        "IsActivity": False,
        "ChangeTrackingEnabled": change_tracking,
        "Attributes": [
            {
                "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                "AttributeType": "String",
                "SchemaName": f"{schema_name.split('_')[0]}_Name",
                "IsPrimaryName": True,
                "MaxLength": 100,
                "DisplayName": _label("Name"),
                "FormatName": {"Value": "Text"},
            }
        ],
    }


def test_a_new_choice_column_becomes_usable(client: Dataverse, dataverse_emulator: Any) -> None:
    assert client.attribute_definition("contact", "cbr_subscriberstatus") is None
    ensure_solution(client, "cbr")
    client.create_attribute("contact", _status_column(), solution="ConsentBridge")
    assert client.attribute_definition("contact", "cbr_subscriberstatus")["AttributeType"] == "Picklist"
    with pytest.raises(DataverseError) as duplicate:
        client.create_attribute("contact", _status_column())
    assert duplicate.value.code == "0x80047013"
    with pytest.raises(DataverseError) as unprefixed:
        client.create_attribute("contact", _status_column("xyz_Status"))
    assert unprefixed.value.status == 400 and "prefix" in unprefixed.value.message
    ids = seed_contacts(dataverse_emulator.admin, 1)
    client.update("contacts", ids[0], {"cbr_subscriberstatus": 100000001})
    row = client.get(f"contacts({ids[0]})", {"$select": "cbr_subscriberstatus"})
    assert row["cbr_subscriberstatus"] == 100000001
    with pytest.raises(DataverseError) as out_of_range:
        client.update("contacts", ids[0], {"cbr_subscriberstatus": 7})
    assert out_of_range.value.code == "0x80044331"
    found = [r for p in client.iter_pages("contacts", filter="cbr_subscriberstatus eq 100000001") for r in p]
    assert [r["contactid"] for r in found] == ids


def test_a_custom_table_gets_an_entity_set_and_change_tracking(client: Dataverse) -> None:
    assert client.entity_definition("cbr_syncstate") is None
    client.create_entity(_table_metadata("cbr_SyncStatus"))
    definition = client.entity_definition("cbr_syncstatus")
    assert definition is not None and definition["EntitySetName"] == "cbr_syncstatuses"
    assert definition["PrimaryIdAttribute"] == "cbr_syncstatusid" and definition["ChangeTrackingEnabled"] is True
    record_id = client.create("cbr_syncstatuses", {"cbr_name": "newsletter"})
    rows = [r for p in client.iter_pages("cbr_syncstatuses", select=["cbr_name"], track_changes=True) for r in p]
    assert rows[0]["cbr_syncstatusid"] == record_id and client.last_delta_link
    contact = client.entity_definition("contact")
    assert contact == {**contact, "EntitySetName": "contacts", "ChangeTrackingEnabled": True}
    client.publish_all()


def test_list_membership_is_visible_to_filters_fetchxml_and_listmember_deltas(
    client: Dataverse, dataverse_emulator: Any
) -> None:
    admin = dataverse_emulator.admin
    ids = seed_contacts(admin, 6)
    list_id = str(uuid.uuid4())
    admin.seed({"lists": [{"listid": list_id, "listname": "News", "createdfromcode": 2, "members": ids[:3]}]})
    list(client.iter_pages("listmembers", select=["_listid_value", "_entityid_value"], track_changes=True))
    link = client.last_delta_link
    by_lambda = [
        r["contactid"]
        for p in client.iter_pages("contacts", filter=f"listcontact_association/any(l:l/listid eq {list_id})")
        for r in p
    ]
    assert sorted(by_lambda) == sorted(ids[:3])
    fetch = (
        "<fetch><entity name='contact'><attribute name='emailaddress1'/><link-entity name='listmember' "
        "from='entityid' to='contactid' intersect='true' link-type='inner'><filter><condition "
        f"attribute='listid' operator='eq' value='{list_id}'/></filter></link-entity></entity></fetch>"
    )
    by_fetch = [r["contactid"] for p in client.iter_fetchxml("contacts", fetch, page_size=2) for r in p]
    assert sorted(by_fetch) == sorted(ids[:3])
    client.disassociate(list_id, LIST_NAV, ids[0])
    client.associate(list_id, LIST_NAV, "contacts", ids[4])
    assert link is not None
    changes = [r for p in client.iter_delta(link) for r in p]
    assert [r["_entityid_value"] for r in changes if isinstance(r, dict)] == [ids[4]]
    assert len([r for r in changes if isinstance(r, DeletedRecord)]) == 1


def test_boolean_text_and_date_columns_can_be_added(client: Dataverse) -> None:
    common = {"RequiredLevel": {"Value": "None"}}
    client.create_attribute(
        "lead",
        {
            "@odata.type": "Microsoft.Dynamics.CRM.BooleanAttributeMetadata",
            "SchemaName": "cbr_Consented",
            "DisplayName": _label("Consented"),
            "DefaultValue": False,
            **common,
            "OptionSet": {
                "TrueOption": {"Value": 1, "Label": _label("Yes")},
                "FalseOption": {"Value": 0, "Label": _label("No")},
            },
        },
    )
    client.create_attribute(
        "lead",
        {
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "SchemaName": "cbr_MemberHash",
            "MaxLength": 32,
            "DisplayName": _label("Hash"),
            **common,
        },
    )
    client.create_attribute(
        "lead",
        {
            "@odata.type": "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata",
            "SchemaName": "cbr_SyncedOn",
            "DisplayName": _label("Synced On"),
            **common,
        },
    )
    lead_id = client.create(
        "leads", {"lastname": "Lead", "cbr_memberhash": "0" * 32, "cbr_syncedon": "2024-05-01T10:00:00Z"}
    )
    row = client.get(f"leads({lead_id})", {"$select": "cbr_consented,cbr_memberhash,cbr_syncedon"})
    assert (row["cbr_consented"], row["cbr_syncedon"]) == (False, "2024-05-01T10:00:00Z")
    with pytest.raises(DataverseError) as too_long:
        client.update("leads", lead_id, {"cbr_memberhash": "0" * 33})
    assert too_long.value.code == "0x80044331"
    with pytest.raises(DataverseError) as no_label:
        client.create_attribute(
            "lead", {"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "cbr_Other"}
        )
    assert no_label.value.status == 400

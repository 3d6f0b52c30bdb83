"""Lookups created through the metadata API (one-to-many relationships) and system views, on the wire."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.emulators.test_dataverse_emulator import API, assert_error, http


def label(text: str) -> dict[str, Any]:
    localized = {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text, "LanguageCode": 1033}
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.Label",
        "LocalizedLabels": [localized],
        "UserLocalizedLabel": localized,
    }


def relationship(
    schema: str = "new_contact_new_bankaccount",
    lookup: str = "new_AccountOwner",
    referenced: str = "contact",
    referencing: str = "new_bankaccount",
    delete: str = "Cascade",
    **extra: Any,
) -> dict[str, Any]:
    """The body Microsoft's "Create a one-to-many relationship" example sends."""
    return {
        "SchemaName": schema,
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "AssociatedMenuConfiguration": {
            "Behavior": "UseCollectionName",
            "Group": "Details",
            "Label": label("Bank Accounts"),
            "Order": 10000,
        },
        "CascadeConfiguration": {
            "Assign": "Cascade",
            "Delete": delete,
            "Merge": "Cascade",
            "Reparent": "Cascade",
            "Share": "Cascade",
            "Unshare": "Cascade",
        },
        "ReferencedAttribute": f"{referenced}id",
        "ReferencedEntity": referenced,
        "ReferencingEntity": referencing,
        "Lookup": {
            "AttributeType": "Lookup",
            "AttributeTypeName": {"Value": "LookupType"},
            "Description": label("The owner of the account"),
            "DisplayName": label("Account Owner"),
            "RequiredLevel": {
                "Value": "None",
                "CanBeChanged": True,
                "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
            },
            "SchemaName": lookup,
            "@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata",
        },
        **extra,
    }


@pytest.fixture
def api(dataverse_emulator: Any) -> str:
    base = dataverse_emulator.url + API
    table = {
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": "new_BankAccount",
        "DisplayName": label("Bank Account"),
        "DisplayCollectionName": label("Bank Accounts"),
        "OwnershipType": "UserOwned",
        "HasActivities": False,
        "HasNotes": False,
        "IsActivity": False,
        "Attributes": [
            {
                "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                "AttributeType": "String",
                "SchemaName": "new_Name",
                "DisplayName": label("Name"),
                "IsPrimaryName": True,
                "MaxLength": 100,
            }
        ],
    }
    assert http.post(f"{base}/EntityDefinitions", json=table).status_code == 204
    return base


def created(response: requests.Response) -> str:
    assert response.status_code == 204, response.text
    return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def test_a_one_to_many_relationship_adds_its_lookup_and_answers_by_schema_name(api: str) -> None:
    response = http.post(f"{api}/RelationshipDefinitions", json=relationship())
    metadata_id = created(response)
    assert "/RelationshipDefinitions(" in response.headers["OData-EntityId"]
    found = http.get(f"{api}/RelationshipDefinitions(SchemaName='new_contact_new_bankaccount')")
    assert found.status_code == 200
    body = found.json()
    assert body["MetadataId"] == metadata_id
    assert (body["ReferencedEntity"], body["ReferencingEntity"], body["ReferencingAttribute"]) == (
        "contact",
        "new_bankaccount",
        "new_accountowner",
    )
    assert body["ReferencingEntityNavigationPropertyName"] == "new_AccountOwner"  # the lookup's SchemaName
    assert body["CascadeConfiguration"]["Delete"] == "Cascade"
    by_id = http.get(
        f"{api}/RelationshipDefinitions({metadata_id})/Microsoft.Dynamics.CRM."
        "OneToManyRelationshipMetadata?$select=SchemaName"
    )
    assert by_id.json()["SchemaName"] == "new_contact_new_bankaccount"
    column = http.get(
        f"{api}/EntityDefinitions(LogicalName='new_bankaccount')/Attributes(LogicalName='new_accountowner')"
    ).json()
    assert (column["AttributeType"], column["SchemaName"], column["Targets"]) == (
        "Lookup",
        "new_AccountOwner",
        ["contact"],
    )
    listed = http.get(
        f"{api}/RelationshipDefinitions?$select=SchemaName&$filter=ReferencingEntity eq 'new_bankaccount'"
    ).json()["value"]
    assert [r["SchemaName"] for r in listed] == ["new_contact_new_bankaccount"]
    assert_error(http.get(f"{api}/RelationshipDefinitions(SchemaName='new_nothing')"), 404, "0x80040217")


def test_creating_the_same_relationship_twice_or_a_clashing_lookup_is_refused(api: str) -> None:
    created(http.post(f"{api}/RelationshipDefinitions", json=relationship()))
    assert_error(http.post(f"{api}/RelationshipDefinitions", json=relationship()), 400, "0x80047010", "already exists")
    assert_error(
        http.post(f"{api}/RelationshipDefinitions", json=relationship(schema="new_other")),
        400,
        "0x80047013",
        "Attribute new_AccountOwner already exists for entity new_bankaccount",
    )
    assert_error(
        http.post(f"{api}/RelationshipDefinitions", json=relationship(schema="zz_contact_bank", lookup="zz_Owner")),
        400,
        "0x80040203",
        "customization prefix",
    )
    assert_error(
        http.post(
            f"{api}/RelationshipDefinitions",
            json=relationship(schema="new_list_members", lookup="new_Member", referencing="listmember"),
        ),
        400,
        "0x80040203",
    )
    assert_error(
        http.post(
            f"{api}/RelationshipDefinitions",
            json=relationship(schema="new_x", lookup="new_X", referencing="new_nothing"),
        ),
        404,
        "0x80040217",
    )
    many = {"@odata.type": "Microsoft.Dynamics.CRM.ManyToManyRelationshipMetadata", "SchemaName": "new_a_b"}
    assert http.post(f"{api}/RelationshipDefinitions", json=many).status_code == 501


def test_lookups_are_written_by_binding_their_schema_name_and_read_as_value_properties(api: str) -> None:
    created(http.post(f"{api}/RelationshipDefinitions", json=relationship()))
    owners = [created(http.post(f"{api}/contacts", json={"lastname": name})) for name in ("Ann", "Bo")]
    first = created(
        http.post(
            f"{api}/new_bankaccounts",
            json={"new_name": "first", "new_AccountOwner@odata.bind": f"/contacts({owners[0]})"},
        )
    )
    second = created(http.post(f"{api}/new_bankaccounts", json={"new_name": "second"}))
    third = created(
        http.post(
            f"{api}/new_bankaccounts",
            json={"new_name": "third", "new_AccountOwner@odata.bind": f"{api}/contacts({owners[1]})"},
        )
    )

    def names(query: str) -> list[str]:
        answer = http.get(f"{api}/new_bankaccounts?$select=new_name,_new_accountowner_value&{query}")
        assert answer.status_code == 200, answer.text
        return sorted(row["new_name"] for row in answer.json()["value"])

    row = http.get(
        f"{api}/new_bankaccounts({first})?$select=_new_accountowner_value",
        headers={"Prefer": 'odata.include-annotations="*"'},
    ).json()
    assert row["_new_accountowner_value"] == owners[0]
    assert row["_new_accountowner_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "contact"
    assert names(f"$filter=_new_accountowner_value eq {owners[0]}") == ["first"]
    assert names("$filter=_new_accountowner_value eq null") == ["second"]
    assert names("$filter=_new_accountowner_value ne null") == ["first", "third"]
    values = ",".join(f"'{o}'" for o in owners)
    assert names(
        quote(
            f"$filter=Microsoft.Dynamics.CRM.In(PropertyName='new_accountowner',PropertyValues=[{values}])", safe="$="
        )
    ) == ["first", "third"]
    assert (
        http.patch(
            f"{api}/new_bankaccounts({second})",
            headers={"If-Match": "*"},
            json={"new_AccountOwner@odata.bind": f"/contacts({owners[1]})"},
        ).status_code
        == 204
    )
    assert names(f"$filter=_new_accountowner_value eq {owners[1]}") == ["second", "third"]
    fetch = (
        '<fetch><entity name="new_bankaccount"><attribute name="new_name"/><attribute name="new_accountowner"/>'
        "<filter><condition "
        f'attribute="new_accountowner" operator="eq" value="{owners[1]}"/></filter></entity></fetch>'
    )
    rows = http.get(f"{api}/new_bankaccounts?fetchXml={quote(fetch)}").json()["value"]
    assert sorted(r["new_name"] for r in rows) == ["second", "third"]
    assert {r["_new_accountowner_value"] for r in rows} == {owners[1]}
    assert third


def test_a_wrong_navigation_name_or_a_missing_row_is_refused_like_the_service(api: str) -> None:
    created(http.post(f"{api}/RelationshipDefinitions", json=relationship()))
    owner = created(http.post(f"{api}/contacts", json={"lastname": "Ann"}))
    wrong_case = http.post(
        f"{api}/new_bankaccounts", json={"new_name": "x", "new_accountowner@odata.bind": f"/contacts({owner})"}
    )
    assert_error(
        wrong_case,
        400,
        "0x0",
        "An undeclared property 'new_accountowner' which only has property "
        "annotations in the payload but no property value was found",
    )
    missing = str(uuid.uuid4())
    assert_error(
        http.post(
            f"{api}/new_bankaccounts", json={"new_name": "x", "new_AccountOwner@odata.bind": f"/contacts({missing})"}
        ),
        404,
        "0x80040217",
        f"contact With Id = {missing} Does Not Exist",
    )
    assert_error(
        http.post(
            f"{api}/new_bankaccounts", json={"new_name": "x", "new_AccountOwner@odata.bind": f"/accounts({owner})"}
        ),
        400,
        "0x80060888",
    )
    assert_error(
        http.post(f"{api}/new_bankaccounts", json={"new_name": "x", "_new_accountowner_value": owner}),
        400,
        "0x80060888",
        "does not exist on type",
    )
    assert http.get(f"{api}/new_bankaccounts").json()["value"] == []


def test_a_change_set_binds_to_a_row_it_created_and_deletes_cascade_or_remove_the_link(api: str) -> None:
    created(http.post(f"{api}/RelationshipDefinitions", json=relationship(delete="Cascade")))
    created(
        http.post(
            f"{api}/RelationshipDefinitions",
            json=relationship(
                schema="new_account_new_bankaccount", lookup="new_Bank", referenced="account", delete="RemoveLink"
            ),
        )
    )
    boundary, changeset = "batch_1", "changeset_1"
    parts = [
        ("1", "POST", "contacts", '{"lastname":"Ann"}'),
        ("2", "POST", "accounts", '{"name":"Contoso"}'),
        (
            "3",
            "POST",
            "new_bankaccounts",
            '{"new_name":"both","new_AccountOwner@odata.bind":"$1","new_Bank@odata.bind":"$2"}',
        ),
    ]
    inner = (
        "".join(
            f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {cid}\r\n\r\n{method} {API}/{path} HTTP/1.1\r\n"
            f"Content-Type: application/json; type=entry\r\n\r\n{body}\r\n"
            for cid, method, path, body in parts
        )
        + f"--{changeset}--\r\n"
    )
    payload = f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n{inner}--{boundary}--\r\n"
    answer = http.post(
        f"{api}/$batch", data=payload.encode(), headers={"Content-Type": f"multipart/mixed; boundary={boundary}"}
    )
    assert answer.status_code == 200 and answer.text.count("HTTP/1.1 204") == 3, answer.text
    row = http.get(f"{api}/new_bankaccounts?$select=_new_accountowner_value,_new_bank_value").json()["value"][0]
    account = row["_new_bank_value"]
    assert row["_new_accountowner_value"] and account
    assert http.delete(f"{api}/accounts({account})").status_code == 204  # RemoveLink: the lookup is cleared
    after = http.get(f"{api}/new_bankaccounts?$select=_new_bank_value").json()["value"]
    assert [r["_new_bank_value"] for r in after] == [None]
    assert http.delete(f"{api}/contacts({row['_new_accountowner_value']})").status_code == 204  # Cascade
    assert http.get(f"{api}/new_bankaccounts").json()["value"] == []


VIEW = (
    '<fetch version="1.0" mapping="logical"><entity name="new_bankaccount"><attribute name="new_name"/>'
    '<order attribute="new_name"/></entity></fetch>'
)
LAYOUT = (
    '<grid name="resultset" jump="new_name" select="1" icon="1" preview="1"><row name="result" '
    'id="new_bankaccountid"><cell name="new_name" width="150"/></row></grid>'
)


def test_system_views_are_created_and_found_by_name_and_table(api: str) -> None:
    view = {
        "name": "Bank accounts by name",
        "returnedtypecode": "new_bankaccount",
        "fetchxml": VIEW,
        "layoutxml": LAYOUT,
        "querytype": 0,
    }
    view_id = created(http.post(f"{api}/savedqueries", json=view))
    created(
        http.post(
            f"{api}/savedqueries",
            json={
                **view,
                "name": "Contacts",
                "returnedtypecode": "contact",
                "fetchxml": VIEW.replace("new_bankaccount", "contact").replace("new_name", "lastname"),
            },
        )
    )
    found = http.get(
        f"{api}/savedqueries?$select=name,returnedtypecode,querytype&$filter=name eq "
        "'Bank accounts by name' and returnedtypecode eq 'new_bankaccount'"
    ).json()["value"]
    assert [(v["savedqueryid"], v["returnedtypecode"], v["querytype"]) for v in found] == [
        (view_id, "new_bankaccount", 0)
    ]
    assert http.get(f"{api}/savedqueries?$filter=returnedtypecode eq 'lead'").json()["value"] == []
    assert_error(
        http.post(f"{api}/savedqueries", json={**view, "returnedtypecode": "new_nothing"}),
        400,
        "0x80040203",
        "returnedtypecode",
    )
    assert_error(
        http.post(f"{api}/savedqueries", json={**view, "returnedtypecode": "contact"}),
        400,
        "0x80040203",
        "returnedtypecode",
    )
    assert_error(
        http.post(f"{api}/savedqueries", json={k: v for k, v in view.items() if k != "fetchxml"}),
        400,
        "0x80040203",
        "fetchxml",
    )
    assert (
        http.post(
            f"{api}/PublishXml",
            json={
                "ParameterXml": "<importexportxml><entities><entity>"
                "new_bankaccount</entity></entities>"
                "</importexportxml>"
            },
        ).status_code
        == 204
    )

"""The emulator's metadata reads as metadata readers use them: expansions, attribute casts, and 501 for the rest."""

from __future__ import annotations

from typing import Any

import pytest
import requests

API = "/api/data/v9.2"
CRM = "Microsoft.Dynamics.CRM"


@pytest.fixture
def api(dataverse_emulator: Any) -> str:
    return dataverse_emulator.url + API


def get(url: str, **params: str) -> requests.Response:
    return requests.get(url, params=params, timeout=30)


def test_the_entity_collection_expands_attributes_and_keys(api: str) -> None:
    found = get(
        f"{api}/EntityDefinitions",
        **{
            "$select": "LogicalName",
            "$filter": "LogicalName eq 'contact'",
            "$expand": "Attributes($select=LogicalName,AttributeType;$filter=AttributeType eq 'Boolean'),"
            "Keys($select=KeyAttributes)",
        },
    )
    assert found.status_code == 200, found.text
    [contact] = found.json()["value"]
    attributes = {a["LogicalName"]: a for a in contact["Attributes"]}
    assert {"donotbulkemail", "donotsendmm"} <= set(attributes)
    assert {a["AttributeType"] for a in attributes.values()} == {"Boolean"}
    assert attributes["donotbulkemail"]["@odata.type"] == f"#{CRM}.BooleanAttributeMetadata"
    assert set(attributes["donotbulkemail"]) == {"@odata.type", "LogicalName", "AttributeType", "MetadataId"}
    assert contact["Keys"] == []  # no alternate keys exist in the emulator


def test_one_entity_expands_keys_and_refuses_what_it_does_not_reproduce(api: str) -> None:
    one = get(f"{api}/EntityDefinitions(LogicalName='lead')", **{"$select": "LogicalName", "$expand": "Keys"})
    assert one.status_code == 200 and one.json()["Keys"] == []
    for expansion in ("OneToManyRelationships", "ManyToManyRelationships", "Attributes($expand=OptionSet)"):
        refused = get(f"{api}/EntityDefinitions", **{"$expand": expansion})
        assert refused.status_code == 501, expansion
        assert "does not implement" in refused.json()["error"]["message"]
    unknown = get(f"{api}/EntityDefinitions", **{"$expand": "Nope"})
    assert unknown.status_code == 400 and "'Nope'" in unknown.json()["error"]["message"]


@pytest.mark.parametrize(
    ("table", "cast", "column", "typed"),
    [
        (
            "contact",
            "DateTimeAttributeMetadata",
            "modifiedon",
            {"Format": "DateAndTime", "DateTimeBehavior": {"Value": "UserLocal"}},
        ),
        ("contact", "StringAttributeMetadata", "emailaddress1", {"MaxLength": 100, "FormatName": {"Value": "Email"}}),
        ("contact", "BooleanAttributeMetadata", "donotbulkemail", {"DefaultValue": False}),
        ("listmember", "PicklistAttributeMetadata", "entityidtypecode", {"DefaultFormValue": -1}),
        ("contact", "LookupAttributeMetadata", "createdby", {"Targets": ["systemuser"]}),
    ],
)
def test_attribute_casts_serve_their_type_and_its_properties(
    api: str, table: str, cast: str, column: str, typed: dict[str, Any]
) -> None:
    url = f"{api}/EntityDefinitions(LogicalName='{table}')/Attributes/{CRM}.{cast}"
    answer = get(url, **{"$select": ",".join(["LogicalName", *typed])})
    assert answer.status_code == 200, answer.text
    items = answer.json()["value"]
    assert items and {item["@odata.type"] for item in items} == {f"#{CRM}.{cast}"}
    [item] = [i for i in items if i["LogicalName"] == column]
    assert {k: item[k] for k in typed} == typed


def test_typed_properties_need_the_cast_and_options_come_with_it(api: str) -> None:
    base = get(f"{api}/EntityDefinitions(LogicalName='contact')/Attributes", **{"$select": "LogicalName,MaxLength"})
    assert base.status_code == 400
    assert f"on type '{CRM}.AttributeMetadata'" in base.json()["error"]["message"]
    options = get(
        f"{api}/EntityDefinitions(LogicalName='contact')/Attributes/{CRM}.BooleanAttributeMetadata",
        **{"$select": "LogicalName", "$expand": "OptionSet"},
    ).json()["value"]
    [bulk] = [o for o in options if o["LogicalName"] == "donotbulkemail"]
    assert bulk["OptionSet"]["TrueOption"]["Value"] == 1
    refused = get(f"{api}/EntityDefinitions(LogicalName='contact')/Attributes/{CRM}.MoneyAttributeMetadata")
    assert refused.status_code == 501 and "MoneyAttributeMetadata" in refused.json()["error"]["message"]


def _column(schema_name: str) -> dict[str, Any]:
    label = {"LocalizedLabels": [{"Label": schema_name, "LanguageCode": 1033}]}
    return {
        "@odata.type": f"{CRM}.StringAttributeMetadata",
        "AttributeType": "String",
        "SchemaName": schema_name,
        "DisplayName": label,
        "MaxLength": 50,
    }


def test_components_land_in_the_solution_named_and_carry_its_publishers_prefix(
    api: str, dataverse_emulator: Any
) -> None:
    publisher = requests.post(
        f"{api}/publishers",
        json={
            "uniquename": "Other",
            "friendlyname": "Other",
            "customizationprefix": "abc",
            "customizationoptionvalueprefix": 20000,
        },
        timeout=30,
    )
    assert publisher.status_code == 204, publisher.text
    publisher_id = publisher.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    solution = {
        "uniquename": "OtherSolution",
        "friendlyname": "Other",
        "version": "1.0.0.0",
        "publisherid@odata.bind": f"/publishers({publisher_id})",
    }
    assert requests.post(f"{api}/solutions", json=solution, timeout=30).status_code == 204
    assert requests.post(f"{api}/solutions", json=solution, timeout=30).status_code == 412  # unique name
    attributes = f"{api}/EntityDefinitions(LogicalName='contact')/Attributes"
    header = {"MSCRM.SolutionUniqueName": "OtherSolution"}

    wrong = requests.post(attributes, json=_column("cbr_Wrong"), headers=header, timeout=30)
    assert wrong.status_code == 400 and "'abc_'" in wrong.json()["error"]["message"]
    missing = requests.post(
        attributes, json=_column("abc_Lost"), headers={"MSCRM.SolutionUniqueName": "Nope"}, timeout=30
    )
    assert missing.status_code == 404 and "Nope" in missing.json()["error"]["message"]
    assert requests.post(attributes, json=_column("abc_Right"), headers=header, timeout=30).status_code == 204
    assert requests.post(attributes, json=_column("cbr_Loose"), timeout=30).status_code == 204

    components = dataverse_emulator.admin.state()["solutionComponents"]
    assert components == [
        {"solution": "OtherSolution", "type": "Attribute", "name": "abc_right", "table": "contact"},
        {"solution": "Default", "type": "Attribute", "name": "cbr_loose", "table": "contact"},
    ]
    bad_prefix = {
        "uniquename": "Bad",
        "friendlyname": "Bad",
        "customizationprefix": "mscrmx",
        "customizationoptionvalueprefix": 20001,
    }
    assert requests.post(f"{api}/publishers", json=bad_prefix, timeout=30).status_code == 400

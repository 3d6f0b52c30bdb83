"""FIELD_MAP: validated at load, one line per problem naming the setting."""

from __future__ import annotations

import json

import pytest

from shared.settings import DEFAULT_FIELD_MAP, FieldMapping, SettingsError, load_settings

LIST_ID = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"


def env(field_map: object = None) -> dict[str, str]:
    values = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "MAILCHIMP_API_KEY": "0123456789abcdef0123456789abcdef-us21",
        "DATAVERSE_URL": "https://contoso.crm4.dynamics.com/",
        "SYNC_LINKS": json.dumps([{"name": "newsletter", "marketingListId": LIST_ID, "audienceId": "a1b2c3d4e5"}]),
    }
    if field_map is not None:
        values["FIELD_MAP"] = field_map if isinstance(field_map, str) else json.dumps(field_map)
    return values


def problems(field_map: object) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(env(field_map))
    return [str(p) for p in caught.value.problems]


def test_the_default_maps_first_and_last_name():
    settings = load_settings(env())
    assert settings.field_map == DEFAULT_FIELD_MAP
    assert settings.field_map == (FieldMapping("firstname", "FNAME"), FieldMapping("lastname", "LNAME"))
    assert load_settings(env([])).field_map == ()


def test_directions_and_kinds_are_read():
    settings = load_settings(
        env(
            [
                {"column": "firstname", "mergeField": "FNAME", "direction": "both"},
                {"column": "name", "mergeField": "COMPANY", "direction": "to-dynamics", "kinds": ["account"]},
            ]
        )
    )
    assert settings.field_map == (
        FieldMapping("firstname", "FNAME", "both"),
        FieldMapping("name", "COMPANY", "to-dynamics", ("account",)),
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{not json", "FIELD_MAP: is not valid JSON"),
        ({"column": "firstname"}, "FIELD_MAP: expected a JSON array"),
        (["firstname"], "FIELD_MAP[0]: expected an object"),
        ([{"column": "First Name", "mergeField": "FNAME"}], "FIELD_MAP[0].column: expected a Dataverse column"),
        ([{"column": "firstname", "mergeField": "first"}], "FIELD_MAP[0].mergeField: expected a merge tag"),
        ([{"column": "firstname", "mergeField": "FNAME", "direction": "up"}], "FIELD_MAP[0].direction: expected one"),
        ([{"column": "firstname", "mergeField": "FNAME", "kinds": ["person"]}], "FIELD_MAP[0].kinds: expected"),
        ([{"column": "firstname", "mergeField": "FNAME", "colour": 1}], "FIELD_MAP[0]: unknown key(s) colour"),
    ],
)
def test_a_malformed_map_is_one_line_naming_the_setting(value, expected):
    found = problems(value)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_merge_field_is_mapped_once_per_kind():
    found = problems(
        [
            {"column": "firstname", "mergeField": "FNAME"},
            {"column": "nickname", "mergeField": "FNAME", "kinds": ["contact"]},
        ]
    )
    assert found == [
        "FIELD_MAP[1].mergeField: FNAME is mapped twice for contact; give each mapping of one merge field its own kinds"
    ]
    allowed = [
        {"column": "firstname", "mergeField": "NAME"},  # contacts and leads have it
        {"column": "name", "mergeField": "NAME"},  # accounts have it
    ]
    assert [m.applies_to for m in load_settings(env(allowed)).field_map] == [("contact", "lead"), ("account",)]

"""`check` names every FIELD_MAP mismatch in one line; `provision` creates the missing merge fields only."""

from __future__ import annotations

import io

import pytest

from shared.cli import check
from shared.settings import load_settings
from tests.features.fields.support import field_map, provision_with_mailchimp, seed
from tests.sync_world import SyncWorld, contact


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def checked(world: SyncWorld) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = check(load_settings(world.env()), out)
    return code, out.getvalue().splitlines()


def test_check_names_each_missing_column_missing_merge_field_and_wrong_type(world):
    world.overrides["FIELD_MAP"] = field_map(
        {"column": "firstname", "mergeField": "FNAME"},
        {"column": "lastname", "mergeField": "SEATS"},
        {"column": "cbr_nosuchcolumn", "mergeField": "CUSTOM", "kinds": ["contact"]},
        {"column": "jobtitle", "mergeField": "JOB", "kinds": ["contact", "account"]},
    )
    seed(
        world,
        [contact("a@example.org")],
        merge_fields=[
            {"tag": "FNAME", "name": "First Name", "type": "text"},
            {"tag": "SEATS", "name": "Seats", "type": "number"},
            {"tag": "JOB", "name": "Job", "type": "text"},
        ],
    )
    code, lines = checked(world)
    assert code == 2
    where = f"audience {world.audience} of link {world.link}"
    assert lines == [
        "FIELD_MAP[2] (cbr_nosuchcolumn -> CUSTOM): contact has no column cbr_nosuchcolumn; "
        "correct the column or limit the mapping's kinds",
        "FIELD_MAP[3] (jobtitle -> JOB): account has no column jobtitle; "
        "correct the column or limit the mapping's kinds",
        f"FIELD_MAP[1] (lastname -> SEATS): merge field SEATS of audience {world.audience} is of type number, "
        "which cannot hold the column's values (text expected); map another merge field",
        f"FIELD_MAP[2] (cbr_nosuchcolumn -> CUSTOM): {where} has no merge field CUSTOM; `provision` creates it",
    ]


def test_check_passes_once_provision_created_the_merge_fields_and_never_changes_an_existing_one(world):
    world.overrides["FIELD_MAP"] = field_map(
        {"column": "firstname", "mergeField": "FNAME"},
        {"column": "address1_composite", "mergeField": "HOME"},
        {"column": "telephone1", "mergeField": "PHONE"},
    )
    seed(world, [contact("a@example.org")], merge_fields=[{"tag": "PHONE", "name": "Phone", "type": "text"}])
    code, lines = checked(world)
    assert code == 2 and len(lines) == 2
    assert provision_with_mailchimp(world) == [
        f"created merge field FNAME (text) in audience {world.audience}",
        f"created merge field HOME (address) in audience {world.audience}",
    ]
    types = {m["tag"]: m["type"] for m in world.context().mailchimp.merge_fields(world.audience)}
    assert types == {"PHONE": "text", "FNAME": "text", "HOME": "address"}  # PHONE stays text
    code, lines = checked(world)
    assert (code, lines[-1].startswith("ok:")) == (0, True), lines

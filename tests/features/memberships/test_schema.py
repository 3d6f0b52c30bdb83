"""The membership and consent history tables `provision` creates: columns, lookups with cascade delete, views."""

from __future__ import annotations

import pytest

from shared.features.memberships.schema import VIEW_BY_AUDIENCE, VIEW_HISTORY, VIEW_UNSUBSCRIBED
from tests.features.memberships.support import EVENTS, NAMES, two_audiences
from tests.sync_world import SyncWorld


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite, tag=None)


def test_provision_creates_both_tables_with_cascading_lookups_and_the_views_once(world):
    two_audiences(world)  # provisions
    metadata = world.dataverse.admin.state()
    assert world.provision() == []  # idempotent
    text = repr(metadata)
    for table in (NAMES.membership_table, NAMES.change_table):
        assert table in text
        for kind in ("contact", "lead", "account"):
            assert f"cbr_{kind}_{table}" in text
    views = {
        row["name"]: row
        for row in world.dataverse.admin.state(entity="savedqueries")["rows"]
        if row.get("returnedtypecode") in (NAMES.membership_table, NAMES.change_table)
    }
    assert set(views) == {VIEW_BY_AUDIENCE, VIEW_UNSUBSCRIBED, VIEW_HISTORY}
    assert 'attribute="cbr_occurredon" descending="true"' in views[VIEW_HISTORY]["fetchxml"]
    assert 'value="100000001"' in views[VIEW_UNSUBSCRIBED]["fetchxml"]


def test_a_persons_rows_go_with_the_record(world):
    two = two_audiences(world)
    two.sync()
    ada, bob = two.people
    two.person("unsubscribe", ada["emailaddress1"], EVENTS)
    two.sync()
    assert two.memberships(ada["contactid"]) and two.history(ada["contactid"])
    world.dataverse.admin.call("POST", "delete", {"entity": "contacts", "ids": [ada["contactid"]]})
    assert two.memberships(ada["contactid"]) == {}
    assert two.history(ada["contactid"]) == []
    assert len(two.memberships(bob["contactid"])) == 2  # nobody else's

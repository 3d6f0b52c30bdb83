"""The erasure step in runs: Mailchimp's forgotten addresses, and deletions in Dynamics (ON_DYNAMICS_DELETE)."""

from __future__ import annotations

import json
import uuid

import pytest

from shared.rules.addresses import member_hash
from shared.state.identity import IdentityMap
from shared.state.tombstones import Tombstones
from tests.features.erasure.support import places_holding
from tests.sync_world import SyncWorld, contact, member

ARCHIVED = 100000005


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def unique(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:8]}@example.com"


def subscribe_attempts(world: SyncWorld, email: str) -> int:
    return sum(
        1
        for request in world.mailchimp.admin.requests()
        if request["method"] in ("POST", "PUT") and email in json.dumps(request.get("body")).lower()
    )


def test_an_address_mailchimp_has_forgotten_is_tombstoned_shown_archived_and_never_tried_again(world):
    email, other = unique("erased.in.mailchimp"), unique("kept")
    person = contact(email)
    world.seed([person, contact(other)], [])
    world.mailchimp.admin.seed({"forgotten": [{"list_id": world.audience, "email_address": email}]})
    hashed = member_hash(email)

    code, out = world.sync()

    assert code == 0, out
    assert set(world.members()) == {other}
    rows = [row for row in world.audit() if row["member_hash"] == hashed]
    assert [json.loads(row["skipped"]) for row in rows] == [[[hashed, "forgotten-email"]]]
    assert [(s.scope, s.reason) for s in Tombstones(world.context().storage).of(hashed)] == [
        (world.link, "mailchimp-forgotten")
    ]
    assert world.records()[person["contactid"]]["cbr_subscriberstatus"] == ARCHIVED
    assert IdentityMap(world.context().storage).load(world.link, [hashed]) == {}

    world.mailchimp.admin.clear_requests()
    code, out = world.sync(full=True)

    assert code == 0, out
    assert subscribe_attempts(world, email) == 0
    rows = sorted((row for row in world.audit() if row["member_hash"] == hashed), key=lambda row: row["when"])
    assert [row["rule"] for row in rows] == ["new-member", "forgotten"]
    assert [p for p in places_holding(world.context().storage, email) if p.endswith("address")] == []


@pytest.mark.parametrize("policy", ["keep", "archive", "forget"])
def test_the_last_record_deleted_in_dynamics_does_what_on_dynamics_delete_says(world, policy):
    email, stays = unique(f"deleted.{policy}"), unique("stays")
    person, left_list = contact(email), contact(stays)
    world.seed([person, left_list], [member(email), member(stays)])
    assert world.sync()[0] == 0
    world.dataverse.admin.call("POST", "delete", {"entity": "contacts", "id": person["contactid"]})
    world.dataverse.admin.call("POST", "members", {"listid": world.list_id, "remove": [left_list["contactid"]]})
    world.dataverse.admin.reset_calls()

    code, out = world.sync(full=True, ON_DYNAMICS_DELETE=policy)

    assert code == 0, out
    members = world.members()
    assert members[stays]["status"] == "subscribed"  # only left the list: rule 6, whatever the setting
    hashed = member_hash(email)
    deleted = [row for row in world.audit() if row["rule"] == "dynamics-deleted"]
    assert [(row["member_hash"], json.loads(row["record_ids"])) for row in deleted] == [(hashed, [person["contactid"]])]
    assert f"ON_DYNAMICS_DELETE={policy}" in deleted[0]["detail"]
    reads = {k: v for k, v in world.dataverse.admin.calls().items() if k.startswith("GET contacts")}
    assert sum(reads.values()) <= 3  # the list's records, (forget: the address search) and one In() read
    stones = Tombstones(world.context().storage).of(hashed)
    if policy == "keep":
        assert members[email]["status"] == "subscribed" and stones == []
    elif policy == "archive":
        assert members[email]["status"] == "archived" and stones == []
        assert deleted[0]["mailchimp_new"] == "archived"
    else:
        state = world.mailchimp.admin.state(list_id=world.audience)["audiences"][world.audience]
        assert email not in members and hashed in state["forgotten"]
        assert [(s.scope, s.reason) for s in stones] == [("*", "dynamics-deleted")]
        assert [p for p in places_holding(world.context().storage, email) if p.endswith("address")] == []

"""explain, end to end: one person's links, records, bases, tombstones and ConsentAudit history."""

from __future__ import annotations

import json
import uuid

import pytest

from shared.model.times import iso
from shared.rules.addresses import member_hash
from tests.features.erasure.support import run_cli
from tests.sync_world import SyncWorld, contact, member


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def act(world: SyncWorld, action: str, email: str, **extra: object) -> None:
    world.mailchimp.admin.call("POST", f"people/{action}", {"list_id": world.audience, "email_address": email, **extra})


def edit(world: SyncWorld, record_id: str, **changes: object) -> None:
    world.dataverse.admin.call("POST", "edit", {"entity": "contacts", "id": record_id, "changes": changes})


def later(world: SyncWorld) -> None:
    world.mailchimp.admin.advance_clock(600)
    world.dataverse.admin.advance_clock(600)


def test_explain_prints_a_long_history_in_time_order_exactly_as_the_audit_holds_it(world, tmp_path):
    email = f"long.history.{uuid.uuid4().hex[:8]}@example.com"
    neighbour = f"neighbour.{uuid.uuid4().hex[:8]}@example.com"
    person, other = contact(email), contact(neighbour)
    world.seed([person, other], [member(email, "subscribed"), member(neighbour, "subscribed")])
    steps = [
        lambda: act(world, "unsubscribe", email),
        lambda: act(world, "resubscribe", email),
        lambda: edit(world, person["contactid"], donotbulkemail=True),
        lambda: edit(world, person["contactid"], donotbulkemail=False, donotsendmm=False),
        lambda: act(world, "bounce", email, type="hard"),
    ]
    assert world.sync()[0] == 0
    for step in steps:
        later(world)
        step()
        act(world, "unsubscribe", neighbour) if step is steps[0] else None
        code, out = world.sync()
        assert code == 0, out
    hashed = member_hash(email)
    stored = sorted(
        (row for row in world.audit() if row["member_hash"] == hashed), key=lambda r: (r["when"], r["RowKey"])
    )
    assert len(stored) >= 5

    code, out = run_cli(world, tmp_path, "explain", email, "--json")

    assert code == 0, out
    found = json.loads(out)
    history = found["consent_history"] + found["field_and_preference_changes"]
    history.sort(key=lambda row: row["when"])
    assert found["consent_history"] == sorted(found["consent_history"], key=lambda row: row["when"])
    expected = [
        {**{k: row.get(k, "") for k in found["consent_history"][0]}, "when": iso(row["when"])} for row in stored
    ]
    assert history == expected
    assert [row["rule"] for row in found["consent_history"]][:2] == [stored[0]["rule"], stored[1]["rule"]]
    (link,) = found["links"]
    assert link["status"] == "cleaned" and link["records"] == [{"kind": "contact", "id": person["contactid"]}]
    assert link["why"].startswith(f"{found['consent_history'][-1]['rule']} on ")
    assert found["dynamics_records"] == [{"kind": "contact", "id": person["contactid"]}]
    assert found["tombstones"] == []
    assert neighbour not in out and member_hash(neighbour) not in out and other["contactid"] not in out

    code, text = run_cli(world, tmp_path, "explain", email.upper())

    assert code == 0, text
    lines = text.splitlines()
    history_lines = [line for line in lines if line.startswith("  20")]
    assert history_lines == sorted(history_lines)  # oldest first
    assert len(history_lines) == len(stored)
    assert "status: cleaned since" in text and f"record: contact {person['contactid']}" in text
    assert neighbour not in text and member_hash(neighbour) not in text


def test_explain_shows_a_tombstone_and_refuses_what_is_not_an_address(world, tmp_path):
    email = f"gone.{uuid.uuid4().hex[:8]}@example.com"
    world.seed([], [member(email)])
    assert run_cli(world, tmp_path, "forget", email)[0] == 0

    code, text = run_cli(world, tmp_path, "explain", email)

    assert code == 0, text
    assert "forgotten in every link since" in text and "(forget): never added again" in text
    assert "unknown to Consent Bridge" in text
    assert run_cli(world, tmp_path, "explain", "nobody")[0] == 2

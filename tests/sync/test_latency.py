"""Consent scenarios on the latency model: both emulators answer after their modelled server time, the sync
drains its queues with two handlers; the outcomes are the rules' own."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest

from shared.cli import QueueRules, main, run_sync
from tests.sync_world import SyncWorld, contact, member

SUBSCRIBED, UNSUBSCRIBED = 100000000, 100000001


@pytest.fixture
def world(mailchimp_emulator: Any, dataverse_emulator: Any, azurite: str) -> SyncWorld:
    world = SyncWorld(mailchimp_emulator, dataverse_emulator, azurite, tag=None)
    world.overrides.update({"BATCH_SIZE": "4", "RECONCILE_MAX_EMAILS": "4", "DATAVERSE_MAX_PARALLEL": "4"})
    return world


def on_the_model(world: SyncWorld) -> None:
    for admin in (world.mailchimp.admin, world.dataverse.admin):
        admin.call("POST", "latency", {"enabled": True, "timeScale": 0.01})


def sync(world: SyncWorld, workers: int = 2) -> str:
    out = io.StringIO()
    code = run_sync(world.context(), out, rules=QueueRules(5, 0.0), progress=lambda _: None, workers=workers)
    assert code == 0, out.getvalue()
    return out.getvalue()


def lead(email: str, **columns: Any) -> dict[str, Any]:
    return {"leadid": str(uuid.uuid4()), "lastname": "Lead", "emailaddress1": email, "donotbulkemail": False, **columns}


def test_consent_flows_both_ways_on_the_model_with_two_handlers(world: SyncWorld) -> None:
    people = [contact(f"p{n}@example.org", opted_out=n == 3) for n in range(12)]
    world.seed(
        people,
        [member("p0@example.org"), member("p1@example.org", "unsubscribed"), member("p2@example.org", "cleaned")],
    )
    on_the_model(world)

    sync(world)

    statuses = {email: m["status"] for email, m in world.members().items()}
    assert "p3@example.org" not in statuses  # opted out in Dynamics: never added (rule 1)
    assert statuses["p0@example.org"] == "subscribed" and statuses["p11@example.org"] == "subscribed"
    records = {r["emailaddress1"]: r for r in world.records().values()}
    assert records["p1@example.org"]["donotbulkemail"] is True  # the opt-out wins at first meeting
    assert records["p2@example.org"]["donotbulkemail"] is True
    assert records["p5@example.org"]["cbr_subscriberstatus"] == SUBSCRIBED
    assert world.dataverse.admin.call("GET", "latency")["requests"]["$batch"] >= 3  # several units, side by side

    world.mailchimp.admin.call(
        "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": "p5@example.org"}
    )
    world.dataverse.admin.call(
        "POST", "edit", {"entity": "contacts", "id": people[6]["contactid"], "changes": {"donotbulkemail": True}}
    )
    world.dataverse.admin.call("POST", "edit", {"entity": "contacts", "id": people[3]["contactid"], "changes": {}})

    sync(world)

    statuses = {email: m["status"] for email, m in world.members().items()}
    assert statuses["p6@example.org"] == "unsubscribed"  # rule 3: a Dynamics opt-out reaches Mailchimp
    records = {r["emailaddress1"]: r for r in world.records().values()}
    assert records["p5@example.org"]["donotbulkemail"] is True  # rule 2: a Mailchimp unsubscribe reaches Dynamics
    assert records["p5@example.org"]["cbr_subscriberstatus"] == UNSUBSCRIBED
    assert "p3@example.org" not in statuses


def test_a_read_only_lead_costs_its_neighbours_nothing_on_the_model(world: SyncWorld) -> None:
    leads = [lead(f"l{n}@example.org") for n in range(6)]
    world.seed(leads, [member(f"l{n}@example.org") for n in range(6)], list_type=4)
    sync(world, workers=1)
    world.dataverse.admin.call("POST", "qualify-lead", {"id": leads[2]["leadid"]})
    for n in range(6):
        world.mailchimp.admin.call(
            "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": f"l{n}@example.org"}
        )
    on_the_model(world)

    out = sync(world)

    stored = world.records("leads")
    assert [stored[row["leadid"]]["donotbulkemail"] for row in leads] == [True, True, False, True, True, True]
    assert "read-only-lead" in out


def test_the_command_line_takes_workers_and_refuses_a_bad_count(world: SyncWorld, tmp_path: Any, capsys: Any) -> None:
    world.seed([contact("c0@example.org"), contact("c1@example.org")], [member("c0@example.org")])
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": world.env()}))
    out = io.StringIO()

    assert main(["--settings", str(settings), "sync", "--workers", "3"], out=out) == 0, out.getvalue()
    assert "c1@example.org" in world.members()

    with pytest.raises(SystemExit) as refused:
        main(["--settings", str(settings), "sync", "--workers", "0"], out=out)
    assert refused.value.code == 2
    assert "--workers: expected a whole number of queue handlers from 1 to 64; got '0'" in capsys.readouterr().err

"""Through `serve` with the emulators delivering: register, a change in each service arrives in seconds, status
shows the registrations, remove takes away exactly what register made, and the sweep counts what events missed."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
import requests

from shared import app as engine
from shared.cli import QueueRules, manage_webhooks, run_sync
from shared.features.realtime.registration import Registration
from tests.features.realtime.support import SECRET, delivering_world, serve, wait_for
from tests.sync_world import contact, member


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return delivering_world(mailchimp_emulator, dataverse_emulator, azurite)


def webhooks(world, action: str) -> tuple[int, str]:
    out = io.StringIO()
    return manage_webhooks(world.context(), action, out), out.getvalue()


def test_changes_on_both_sides_arrive_through_serve(world):
    person, other = contact("person@example.org"), contact("other@example.org")
    world.seed([person, other], [member("person@example.org"), member("other@example.org")])
    assert world.sync()[0] == 0
    with serve(world) as server:
        code, said = webhooks(world, "register")
        assert code == 0, said
        assert "registered (signed)" in said and "service endpoint" in said
        assert webhooks(world, "register")[0] == 0  # idempotent
        hooks = world.mailchimp.admin.call("GET", f"webhooks?list_id={world.audience}")["webhooks"]
        assert len(hooks) == 1 and hooks[0]["sources"] == {"user": True, "admin": True, "api": False}

        world.mailchimp.admin.call(
            "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": "person@example.org"}
        )
        assert wait_for(lambda: world.records()[person["contactid"]]["donotbulkemail"]), "no Dynamics opt-out"

        world.dataverse.admin.call(
            "POST", "edit", {"entity": "contacts", "id": other["contactid"], "changes": {"donotbulkemail": True}}
        )
        assert wait_for(lambda: world.members()["other@example.org"]["status"] == "unsubscribed")

        answer = requests.get(f"{server.url}/api/status", timeout=5).json()
        assert answer["links"][0]["lastEvent"]
        forged = requests.post(
            f"{server.url}/api/webhooks/mailchimp?secret=wrong{SECRET}", data={"type": "unsubscribe"}, timeout=5
        )
        assert forged.status_code == 401

        code, said = webhooks(world, "status")
        assert code == 0 and "MISSING" not in said and "last event applied" in said
        code, said = webhooks(world, "remove")
        assert code == 0 and "removed" in said
    assert world.mailchimp.admin.call("GET", f"webhooks?list_id={world.audience}")["webhooks"] == []
    endpoints = world.dataverse.admin.state(entity="serviceendpoints")["rows"]
    assert endpoints == []
    assert Registration(world.context()).registry.mailchimp_webhooks() == {}


def test_the_sweep_counts_changes_no_event_announced(world):
    people = [contact(f"p{n}@example.org") for n in range(4)]
    world.seed(people, [member(f"p{n}@example.org") for n in range(4)])
    assert world.sync()[0] == 0
    with serve(world):
        assert webhooks(world, "register")[0] == 0
        time.sleep(2)  # the first run's own writes (announced by the product) come before these changes
        world.mailchimp.admin.call(
            "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": "p2@example.org"}
        )
        assert wait_for(lambda: world.records()[people[2]["contactid"]]["donotbulkemail"])  # its event arrived
        world.mailchimp.admin.call("POST", "webhooks/faults", {"drop": 1.0, "seed": 1})  # every delivery lost
        for n in (0, 1):
            world.mailchimp.admin.call(
                "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": f"p{n}@example.org"}
            )
        world.mailchimp.admin.call("POST", "webhooks/flush", {"timeoutSeconds": 10})
    ctx = world.context()
    ctx.announced.grace = timedelta(0)  # the sweep runs right away, not minutes after the changes
    assert run_sync(ctx, io.StringIO(), rules=QueueRules(5, 0), progress=lambda _: None) == 0
    [run] = ctx.ledger.latest_runs(world.link, limit=1)
    assert run.counts["missed_by_webhooks:mailchimp"] == 2, run.counts  # p0 and p1; p2's event announced it
    assert run.counts["missed_by_webhooks:dataverse"] == 0  # the product's own writes are no one's event
    assert all(world.records()[p["contactid"]]["donotbulkemail"] for p in people[:2])
    assert engine.link_statuses(ctx)

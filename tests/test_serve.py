"""`serve`: the routes on loopback, the queue workers with host.json's retry and poison semantics, a clean stop."""

from __future__ import annotations

import pytest
import requests

from shared.adapters.storage import EVENTS_QUEUE
from shared.features.realtime.events import MAILCHIMP, Event
from shared.model.times import now
from shared.rules.addresses import member_hash
from shared.serve import Server
from tests.features.realtime.support import realtime_world, wait_for
from tests.sync_world import contact, member


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return realtime_world(mailchimp_emulator, dataverse_emulator, azurite, tag=None)


def test_the_routes_answer_and_a_run_goes_through_the_workers(world):
    world.seed([contact("person@example.org")])
    ctx = world.context()
    with Server(ctx, port=0, timers=False, say=lambda _: None) as server:
        started = requests.post(f"{server.url}/api/sync", json={"link": world.link}, timeout=10)
        assert started.status_code == 202
        [run] = started.json()["runs"]
        assert wait_for(lambda: (ctx.ledger.run(world.link, run["runId"]) or {}).get("status") == "completed")
        assert world.members()["person@example.org"]["status"] == "subscribed"
        status = requests.get(f"{server.url}/api/status", timeout=10).json()
        assert [row["link"] for row in status["links"]] == [world.link]
        assert requests.get(f"{server.url}/api/nothing", timeout=10).status_code == 404
    assert server.stopping.is_set() and not any(t.is_alive() for t in server.threads)


def test_a_failing_event_is_retried_then_dead_lettered_and_kept_for_the_next_run(world):
    world.seed([contact("person@example.org")], [member("person@example.org")])
    assert world.sync()[0] == 0
    ctx = world.context()
    hashed = member_hash("person@example.org")
    world.dataverse.admin.fail_next(20, pattern="/lists", status=500)
    event = Event(MAILCHIMP, now(), None, audience=world.audience, type="unsubscribe", member_hash=hashed)
    ctx.storage.send(EVENTS_QUEUE, event.encode())
    messages: list[str] = []
    with Server(ctx, port=0, max_dequeue_count=2, retry_seconds=0, timers=False, say=messages.append):
        assert wait_for(lambda: ctx.ledger.pending_retries(world.link), seconds=40)
    assert any("attempt 1 failed" in m for m in messages)
    assert any("moved to sync-events-poison after 2 attempts" in m for m in messages)
    [retry] = ctx.ledger.pending_retries(world.link)
    assert hashed in retry["groups"]
    world.dataverse.admin.clear_faults()

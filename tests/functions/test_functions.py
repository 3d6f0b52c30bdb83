"""The Functions themselves: bindings as the host reads them, and a run driven through the decorated functions."""

from __future__ import annotations

import functools
import json

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from shared import app as engine
from tests.sync_world import SyncWorld, contact, member


@functools.cache
def functions_by_name():
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def user_function(name: str):
    return functions_by_name()[name].get_user_function()


def test_bindings_follow_the_contract():
    found = {name: json.loads(f.get_function_json()) for name, f in functions_by_name().items()}
    assert set(found) == {
        "plan_sync",
        "scan_link",
        "reconcile_batch",
        "dead_letter_link",
        "dead_letter_batch",
        "start_sync",
        "link_status",
        "sync_now",
        "mailchimp_webhook",
        "dataverse_webhook",
        "handle_events",
        "dead_letter_event",
    }
    [timer] = found["plan_sync"]["bindings"]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%SYNC_SCHEDULE%"
    queues = {
        name: found[name]["bindings"][0]["queueName"]
        for name in ("scan_link", "reconcile_batch", "dead_letter_link", "dead_letter_batch")
    }
    assert queues == {
        "scan_link": "sync-links",
        "reconcile_batch": "sync-batches",
        "dead_letter_link": "sync-links-poison",
        "dead_letter_batch": "sync-batches-poison",
    }
    http = found["start_sync"]["bindings"][0]
    assert http["type"] == "httpTrigger" and http["route"] == "sync"
    assert http["methods"] == ["POST"] and http["authLevel"].lower() == "function"


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite, monkeypatch):
    world = SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(engine, "_context", None)  # the process-wide context is rebuilt from these settings
    return world


def queue_message(queue: str, ctx: engine.Context) -> func.QueueMessage | None:
    [message] = ctx.storage.receive(queue, visibility_timeout=30, max_messages=1) or [None]
    if message is None:
        return None
    ctx.storage.delete(queue, message)
    return func.QueueMessage(id=message.id, body=message.content, pop_receipt=message.pop_receipt)


def test_a_run_through_the_http_and_queue_functions(world):
    person = contact("person@example.org")
    world.seed([person], [member("gone@example.org", "unsubscribed")])
    request = func.HttpRequest("POST", "/api/sync", params={"link": world.link}, body=b"")
    response = user_function("start_sync")(request)
    assert response.status_code == 202
    [run] = json.loads(response.get_body())["runs"]
    assert run["link"] == world.link and run["runId"]
    ctx = engine.context()
    user_function("scan_link")(queue_message("sync-links", ctx))
    while (message := queue_message("sync-batches", ctx)) is not None:
        user_function("reconcile_batch")(message)
    assert ctx.ledger.run(world.link, run["runId"])["status"] == "completed"
    assert world.members()["person@example.org"]["status"] == "subscribed"


def test_the_timer_plans_a_run_and_skips_a_link_still_running(world):
    world.seed([contact("person@example.org")])
    timer = TimerRequest(past_due=False)
    user_function("plan_sync")(timer)
    user_function("plan_sync")(timer)
    ctx = engine.context()
    assert ctx.storage.queue_length("sync-links") == 1
    runs = ctx.ledger.latest_runs(world.link)
    assert len(runs) == 1 and runs[0].status == "planned"


def test_http_names_an_unknown_link(world):
    request = func.HttpRequest("POST", "/api/sync", params={"link": "nope"}, body=b"")
    response = user_function("start_sync")(request)
    assert response.status_code == 404
    assert "no link named 'nope'" in json.loads(response.get_body())["error"]

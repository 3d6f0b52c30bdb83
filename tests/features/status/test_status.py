"""The link rows in Dynamics, "Sync now" and GET /api/status, through the real handlers, emulators and Azurite."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from shared import app as engine
from shared.cli import QueueRules, drain, status
from shared.features.status.schema import FAILED, PARTIAL, RUNNING, SKIPPED, SUCCEEDED, VIEW_NAME, row_id
from shared.rules.schedule import next_run
from tests.functions.test_functions import functions_by_name  # the app's functions, indexed once
from tests.sync_world import SyncWorld, contact, member

ROWS = "cbr_synclinks"


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def row(world: SyncWorld) -> dict:
    [found] = [r for r in world.dataverse.admin.state(entity=ROWS)["rows"] if r["cbr_synclinkid"] == row_id(world.link)]
    return found


def press_sync_now(world: SyncWorld) -> None:
    world.dataverse.admin.call(
        "POST", "edit", {"entity": ROWS, "id": row_id(world.link), "changes": {"cbr_syncnow": True}}
    )


def drain_queues(ctx: engine.Context) -> None:
    handlers = {
        "sync-links": lambda m, _: engine.scan_link(ctx, m),
        "sync-batches": lambda m, attempt: engine.reconcile_batch(ctx, m, attempt),
        "sync-links-poison": lambda m, _: engine.dead_letter_link(ctx, m),
        "sync-batches-poison": lambda m, _: engine.dead_letter_batch(ctx, m),
    }
    drain(ctx, handlers, QueueRules(5, 0.0), lambda _: None)


def test_provision_creates_the_table_and_its_view_once(world):
    world.seed([contact("one@example.org")])
    assert world.provision() == [] or all("synclink" not in line for line in world.provision())
    metadata = world.dataverse.admin.state()
    assert "cbr_synclink" in json.dumps(metadata)
    views = world.dataverse.admin.state(entity="savedqueries")["rows"]
    [view] = [v for v in views if v["name"] == VIEW_NAME]
    for column in ("cbr_name", "cbr_lastoutcome", "cbr_lastfinished", "cbr_nextrun", "cbr_lasterror"):
        assert column in view["layoutxml"]


def test_a_successful_run_leaves_its_row_and_an_idle_run_costs_one_status_call(world):
    people = [contact("a@example.org"), contact("b@example.org"), contact(None)]
    world.seed(people, [member("a@example.org"), member("gone@example.org", "unsubscribed")])
    before = datetime.now(UTC)
    code, out = world.sync()
    assert code == 0, out
    shown = row(world)
    assert shown["cbr_name"] == world.link
    assert shown["cbr_marketinglistid"] == world.list_id and shown["cbr_audienceid"] == world.audience
    assert shown["cbr_lastoutcome"] == SUCCEEDED
    assert shown["cbr_lastsummary"].startswith(
        "read 2 members and 3 records; wrote 1 to Mailchimp and 2 to Dynamics; 1 skipped: missing email"
    ), shown["cbr_lastsummary"]
    assert not shown.get("cbr_lasterror")
    assert not shown.get("cbr_syncnow")
    expected = next_run("0 */15 * * * *", before)
    assert datetime.fromisoformat(shown["cbr_nextrun"].replace("Z", "+00:00")) in (
        expected,
        next_run("0 */15 * * * *", expected),  # a quarter hour struck during the run
    )
    assert shown["cbr_laststarted"] <= shown["cbr_lastfinished"]
    assert shown.get("cbr_lastevent") in (None, "")  # the real-time path writes it, not a run

    for _ in range(2):  # the settling run, then an idle one (both services' clocks past the re-read overlap)
        for side in (world.mailchimp, world.dataverse):
            side.admin.advance_clock(15 * 60)
        world.dataverse.admin.clear_requests()
        code, out = world.sync()
        assert code == 0, out
    assert "0 batches" in out, out
    calls = world.dataverse.admin.requests()
    print("\nidle run, Dataverse requests:", [(r["method"], r["path"]) for r in calls])
    assert [r["method"] for r in calls if r["path"].endswith("$batch")] == ["POST"]  # the finish write: one call
    assert len(calls) <= 4 + 1 + 2  # the run's four reads, the $batch, and its two parts (GET and PATCH the row)


def test_a_dead_lettered_batch_leaves_a_partial_row_with_its_first_error(world):
    world.seed([contact("new@example.org")])
    world.mailchimp.admin.fail_next(100, pattern=rf"/lists/{world.audience}$", method="POST", status=400)
    code, out = world.sync()
    world.mailchimp.admin.clear_faults()
    assert code == 1, out
    shown = row(world)
    assert shown["cbr_lastoutcome"] == PARTIAL
    assert "1 batch of 1 members set aside for the next run" in shown["cbr_lastsummary"]
    assert shown["cbr_lasterror"].startswith("1 batch failed every attempt and was set aside"), shown["cbr_lasterror"]
    assert "First error: Mailchimp" in shown["cbr_lasterror"]
    assert "new@example.org" not in json.dumps(shown)


def test_a_refused_api_key_leaves_a_failed_row_that_names_the_setting(world):
    world.seed([contact("one@example.org")])
    code, out = world.sync(MAILCHIMP_API_KEY="notavalidkey0-us21")
    assert code == 1, out
    shown = row(world)
    assert shown["cbr_lastoutcome"] == FAILED
    error = shown["cbr_lasterror"]
    assert "401" in error and "MAILCHIMP_API_KEY" in error, error
    assert "notavalidkey0" not in error and "Traceback" not in error
    assert shown["cbr_lastfinished"]


def test_a_skipped_tick_says_why_and_the_finish_overwrites_it(world):
    world.seed([contact("one@example.org")])
    ctx = world.context()
    [first] = engine.plan_sync(ctx)[:1]
    [second] = [p for p in engine.plan_sync(ctx) if p.link == world.link]
    assert second.skipped
    shown = row(world)
    assert shown["cbr_lastoutcome"] == SKIPPED
    assert f"run {first.run_id} is still in progress" in shown["cbr_lasterror"]
    drain_queues(ctx)
    assert row(world)["cbr_lastoutcome"] == SUCCEEDED


def test_sync_now_starts_exactly_one_run_and_is_cleared(world):
    world.seed([contact(f"p{i}@example.org") for i in range(3)])
    assert world.sync()[0] == 0
    ctx = world.context()
    world.dataverse.admin.clear_requests()
    assert engine.sync_now(ctx) == []  # nobody pressed: one read, nothing started
    [read] = world.dataverse.admin.requests()
    assert ROWS in read["path"] and read["method"] == "GET"
    press_sync_now(world)
    [planned] = engine.sync_now(ctx)
    assert planned.run_id and planned.link == world.link
    shown = row(world)
    assert shown["cbr_syncnow"] is False
    assert shown["cbr_lastoutcome"] == RUNNING and planned.run_id in shown["cbr_lastsummary"]
    press_sync_now(world)  # pressed again while the run is going: the lease holds, nothing more starts
    [again] = engine.sync_now(ctx)
    assert again.run_id is None and again.skipped
    assert row(world)["cbr_syncnow"] is False
    drain_queues(ctx)
    assert engine.sync_now(ctx) == []
    runs = ctx.ledger.latest_runs(world.link)
    assert [r.status for r in runs] == ["completed", "completed"]  # the first sync and the one pressed
    shown = row(world)
    assert shown["cbr_lastoutcome"] == SUCCEEDED and planned.run_id in shown["cbr_lastsummary"]


def test_a_user_edit_of_a_product_column_is_written_back_and_audited(world):
    world.seed([contact("one@example.org")])
    assert world.sync()[0] == 0
    kept = row(world)
    world.dataverse.admin.call(
        "POST",
        "edit",
        {"entity": ROWS, "id": row_id(world.link), "changes": {"cbr_lastsummary": "all fine", "cbr_audienceid": "x"}},
    )
    assert world.sync()[0] == 0
    shown = row(world)
    assert shown["cbr_audienceid"] == world.audience
    assert shown["cbr_lastsummary"] != "all fine" and shown["cbr_lastsummary"].startswith("read ")
    audited = [a for a in world.audit() if a["rule"] == "status-row-overwritten"]
    assert {a["dynamics_old"] for a in audited} == {"all fine", "x"}
    assert world.audience in {a["dynamics_new"] for a in audited}  # written back by the run's first write
    assert kept["cbr_lastsummary"] != "all fine"
    assert all(a["side"] == "dynamics" and json.loads(a["record_ids"]) == [row_id(world.link)] for a in audited)


def test_a_dry_run_leaves_the_row_alone(world):
    world.seed([contact("one@example.org")])
    assert world.sync()[0] == 0
    kept = row(world)
    assert world.sync(dry_run=True)[0] == 0
    assert row(world) == kept


# ---- the functions and the command line --------------------------------------------------------------


@pytest.fixture
def hosted(world, monkeypatch):
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(engine, "_context", None)  # the process-wide context is rebuilt from these settings
    return world


def test_the_timer_and_the_status_route_through_the_functions(hosted):
    world = hosted
    world.seed([contact("one@example.org")])
    found = {name: json.loads(f.get_function_json()) for name, f in functions_by_name().items()}
    [timer] = found["sync_now"]["bindings"]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%SYNC_NOW_SCHEDULE%"
    [route] = [b for b in found["link_status"]["bindings"] if b["type"] == "httpTrigger"]
    assert route["route"] == "status" and route["methods"] == ["GET"] and route["authLevel"].lower() == "function"

    get_status = functions_by_name()["link_status"].get_user_function()
    response = get_status(func.HttpRequest("GET", "/api/status", body=b""))
    assert response.status_code == 200
    [before] = json.loads(response.get_body())["links"]
    assert before["link"] == world.link and before["state"] == "never run"
    assert world.sync()[0] == 0  # the first run writes the row a user can press

    press_sync_now(world)
    functions_by_name()["sync_now"].get_user_function()(TimerRequest(past_due=False))
    ctx = engine.context()
    assert ctx.storage.queue_length("sync-links") == 1
    drain_queues(ctx)
    [after] = json.loads(get_status(func.HttpRequest("GET", "/api/status", body=b"")).get_body())["links"]
    shown = row(world)
    assert after["state"] == "succeeded" and shown["cbr_lastoutcome"] == SUCCEEDED
    assert after["summary"] == shown["cbr_lastsummary"] and after["runId"] in after["summary"]
    assert after["finished"] and after["nextRun"] and after["error"] is None

    out = io.StringIO()
    assert status(ctx, out) == 0
    assert f"row in Dynamics: succeeded; started {after['started']}" in out.getvalue()
    assert after["summary"] in out.getvalue()

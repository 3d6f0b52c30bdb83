"""At-least-once delivery, injected API faults, interrupted runs and dead-lettered batches: no change is lost."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from typing import Any

import pytest

from shared import app as engine
from shared.adapters.storage import BATCHES_QUEUE, LINKS_QUEUE, poison
from shared.cli import QueueRules, run_sync
from tests.sync_world import SyncWorld, contact, member

SUBSCRIBED, UNSUBSCRIBED, CLEANED, PENDING = 100000000, 100000001, 100000002, 100000003
IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(12)]  # the same records in both runs of a comparison


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def person(world: SyncWorld, action: str, email: str, **extra: Any) -> None:
    world.mailchimp.admin.call("POST", f"people/{action}", {"list_id": world.audience, "email_address": email, **extra})


def edit(world: SyncWorld, record_id: str, **changes: Any) -> None:
    world.dataverse.admin.call("POST", "edit", {"entity": "contacts", "id": record_id, "changes": changes})


def join(world: SyncWorld, record: dict[str, Any]) -> None:
    """A new contact is created in Dynamics and added to the marketing list."""
    world.dataverse.admin.seed({"contacts": [record]})
    world.dataverse.admin.call("POST", "members", {"listid": world.list_id, "add": [record["contactid"]]})


def writes(world: SyncWorld) -> Counter[str]:
    """Write calls so far on both emulators, by route."""
    found: Counter[str] = Counter()
    for side in (world.mailchimp, world.dataverse):
        found.update({route: n for route, n in side.admin.calls().items() if not route.startswith("GET ")})
    # a run's status row (shared/features/status) is written in a $batch of its own, one PATCH of the row each:
    # it says the run happened, it is not a change written twice
    found["POST /api/data/v9.2/$batch"] -= sum(
        1 for r in world.dataverse.admin.requests() if r["method"] == "PATCH" and "cbr_synclinks(" in r["path"]
    )
    return +found


def snapshot(world: SyncWorld) -> tuple[dict[str, str], dict[str, tuple[bool, bool, int | None]]]:
    """What both sides mean now, by address: Mailchimp statuses and the Dynamics consent columns."""
    statuses = {email: m["status"] for email, m in world.members().items()}
    records = {
        row["emailaddress1"]: (row["donotbulkemail"], row["donotsendmm"], row.get("cbr_subscriberstatus"))
        for row in world.records().values()
    }
    return statuses, records


def sync_collecting(world: SyncWorld, **overrides: str) -> tuple[int, str, list[str]]:
    """One `sync` as the CLI runs it, keeping the progress lines (retries, poison moves)."""
    out, progress = io.StringIO(), []
    code = run_sync(
        world.context(**overrides),
        out,
        rules=QueueRules(max_dequeue_count=5, visibility_timeout=0),
        progress=progress.append,
    )
    return code, out.getvalue(), progress


# ---- at-least-once delivery ---------------------------------------------------------------------
def run_handling_every_message_twice(world: SyncWorld) -> Counter[str]:
    """One run through the handlers, each queue message delivered a second time right after the first."""
    ctx = world.context()
    [planned] = engine.plan_sync(ctx)
    [link_message] = ctx.storage.receive(LINKS_QUEUE, visibility_timeout=60)
    scan_body = json.loads(link_message.content)
    engine.scan_link(ctx, scan_body)
    queued, before = ctx.storage.queue_length(BATCHES_QUEUE), writes(world)
    engine.scan_link(ctx, scan_body)  # redelivered
    assert ctx.storage.queue_length(BATCHES_QUEUE) == queued, "a second scan queued the batches again"
    assert writes(world) == before
    time.sleep(engine.GATHER_SECONDS)  # a group's later messages wait that long for its first to be taken
    messages = ctx.storage.receive(BATCHES_QUEUE, visibility_timeout=60, max_messages=32)
    assert len(messages) == queued >= 2
    for message in messages:
        body = json.loads(message.content)
        engine.reconcile_batch(ctx, body)
        after_first = writes(world)
        engine.reconcile_batch(ctx, body)  # redelivered
        assert writes(world) == after_first, f"batch {body['batch']} wrote again when delivered twice"
    assert ctx.ledger.run(world.link, planned.run_id)["status"] == "completed"
    done = writes(world)
    engine.scan_link(ctx, scan_body)  # and once more after the run finished
    for message in messages:
        engine.reconcile_batch(ctx, json.loads(message.content))
        ctx.storage.delete(BATCHES_QUEUE, message)
    ctx.storage.delete(LINKS_QUEUE, link_message)
    assert writes(world) == done
    assert ctx.storage.queue_length(BATCHES_QUEUE) == 0
    return done


def test_every_queue_message_delivered_twice_writes_once(world):
    world.overrides["BATCH_SIZE"] = "2"
    people = [contact(f"p{i}@example.org") for i in range(6)]
    world.seed(
        people,
        [
            member("p0@example.org"),
            member("p1@example.org"),
            member("p2@example.org", "pending"),
            member("p3@example.org", "unsubscribed"),
        ],
    )
    first = run_handling_every_message_twice(world)  # the first run: adds and first meetings
    assert first["POST /3.0/lists/{list_id}"] >= 1 and first["POST /api/data/v9.2/$batch"] >= 1
    person(world, "unsubscribe", "p0@example.org")
    edit(world, people[1]["contactid"], donotbulkemail=True)
    person(world, "confirm", "p2@example.org")
    late = contact("p6@example.org")
    join(world, late)
    second = run_handling_every_message_twice(world)  # a delta run: changes on both sides
    assert second - first, "the second run had changes to write"
    statuses, records = snapshot(world)
    assert statuses == {
        "p0@example.org": "unsubscribed",
        "p1@example.org": "unsubscribed",
        "p2@example.org": "subscribed",
        "p3@example.org": "unsubscribed",
        "p4@example.org": "subscribed",
        "p5@example.org": "subscribed",
        "p6@example.org": "subscribed",
    }
    assert records["p0@example.org"] == (True, True, UNSUBSCRIBED)
    assert records["p1@example.org"][2] == UNSUBSCRIBED
    assert records["p2@example.org"] == (False, False, SUBSCRIBED)
    before = writes(world)
    assert world.sync()[0] == 0
    assert writes(world) == before  # nothing was left half done


def test_a_dead_letter_handled_twice_records_one_retry(world):
    people = [contact("a@example.org"), contact("b@example.org")]
    world.seed(people, [member("a@example.org"), member("b@example.org")])
    assert world.sync()[0] == 0
    person(world, "unsubscribe", "a@example.org")
    ctx = world.context()
    [planned] = engine.plan_sync(ctx)
    [link_message] = ctx.storage.receive(LINKS_QUEUE, visibility_timeout=60)
    engine.scan_link(ctx, json.loads(link_message.content))
    [batch] = ctx.storage.receive(BATCHES_QUEUE, visibility_timeout=60)
    body = json.loads(batch.content)
    before = writes(world)
    engine.dead_letter_batch(ctx, body)
    engine.dead_letter_batch(ctx, body)  # the poison message delivered twice
    assert writes(world) == before
    assert len(ctx.ledger.pending_retries(world.link)) == 1
    assert ctx.ledger.run(world.link, planned.run_id)["status"] == "completed-with-dead-letters"
    for queue, message in ((LINKS_QUEUE, link_message), (BATCHES_QUEUE, batch)):
        ctx.storage.delete(queue, message)
    assert world.sync()[0] == 0
    assert snapshot(world)[1]["a@example.org"] == (True, True, UNSUBSCRIBED)


# ---- injected faults ----------------------------------------------------------------------------
def busy_scenario(world: SyncWorld) -> list[int]:
    """Three runs with changes on both sides in between; returns the exit codes."""
    world.overrides["BATCH_SIZE"] = "3"
    people = [contact(f"p{i}@example.org", contactid=IDS[i]) for i in range(8)]
    people[5].update(donotbulkemail=True, donotsendmm=True)
    world.seed(
        people,
        [
            member("p1@example.org", "unsubscribed"),
            member("p2@example.org", "cleaned"),
            member("p3@example.org", "pending"),
            member("p4@example.org"),
            member("p7@example.org"),
        ],
    )
    codes = [world.sync()[0]]
    person(world, "unsubscribe", "p4@example.org")
    person(world, "confirm", "p3@example.org")
    edit(world, IDS[0], donotbulkemail=True)
    edit(world, IDS[1], donotbulkemail=False, donotsendmm=False)  # an opt-in the rules refuse
    edit(world, IDS[6], donotsendmm=True)
    codes.append(world.sync()[0])
    person(world, "resubscribe", "p4@example.org")
    person(world, "bounce", "p7@example.org", type="hard")
    join(world, contact("p8@example.org", contactid=IDS[8]))
    codes.append(world.sync()[0])
    return codes


def test_ten_percent_faults_on_both_apis_end_in_the_fault_free_state(
    world, mailchimp_emulator, dataverse_emulator, azurite
):
    assert busy_scenario(world) == [0, 0, 0]
    calm = snapshot(world)
    for running in (mailchimp_emulator, dataverse_emulator):
        running.admin.reset()
    faulty = SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)
    dataverse_emulator.admin.call("POST", "settings", {"faultRetryAfter": "0.1"})
    mailchimp_emulator.admin.faults(0.1, {"429": 1, "429-empty": 1, "503": 1, "slow": 1}, seed=7, slow_seconds=0.05)
    dataverse_emulator.admin.faults(0.1, {"429": 1, "503": 1, "slow": 1}, seed=11, slow_seconds=0.05)
    codes = busy_scenario(faulty)
    for running in (mailchimp_emulator, dataverse_emulator):
        injected = running.admin.call("GET", "calls")["faultsInjected"]
        assert sum(injected.values()) > 0, "the scenario met no fault"
        running.admin.clear_faults()
    assert snapshot(faulty) == calm
    assert codes == [0, 0, 0]
    assert calm[0] == {
        "p0@example.org": "unsubscribed",
        "p1@example.org": "unsubscribed",
        "p2@example.org": "cleaned",
        "p3@example.org": "subscribed",
        "p4@example.org": "subscribed",
        "p6@example.org": "unsubscribed",
        "p7@example.org": "cleaned",
        "p8@example.org": "subscribed",
    }
    assert calm[1]["p1@example.org"] == (True, True, UNSUBSCRIBED)  # the refused opt-in was restored
    assert calm[1]["p4@example.org"] == (False, False, SUBSCRIBED)
    assert calm[1]["p7@example.org"] == (True, True, CLEANED)


# ---- interrupted runs ---------------------------------------------------------------------------
def changes_of_six(world: SyncWorld) -> list[dict[str, Any]]:
    people = [contact(f"p{i}@example.org") for i in range(6)]
    world.seed(people, [member(f"p{i}@example.org") for i in range(6)])
    assert world.sync()[0] == 0
    for i in range(3):
        person(world, "unsubscribe", f"p{i}@example.org")
    for record in people[3:]:
        edit(world, record["contactid"], donotbulkemail=True)
    return people


def assert_all_six_applied(world: SyncWorld) -> None:
    statuses, records = snapshot(world)
    assert statuses == {f"p{i}@example.org": "unsubscribed" for i in range(6)}
    assert {email: r[0] for email, r in records.items()} == {f"p{i}@example.org": True for i in range(6)}
    assert {r[2] for r in records.values()} == {UNSUBSCRIBED}


def test_a_run_stopped_after_the_scan_and_one_batch_loses_no_change(world):
    world.overrides["BATCH_SIZE"] = "2"
    changes_of_six(world)
    ctx = world.context()
    engine.plan_sync(ctx)
    [link_message] = ctx.storage.receive(LINKS_QUEUE, visibility_timeout=60)
    engine.scan_link(ctx, json.loads(link_message.content))
    ctx.storage.delete(LINKS_QUEUE, link_message)
    time.sleep(engine.GATHER_SECONDS)  # a group's later messages wait that long for its first to be taken
    first, held = ctx.storage.receive(BATCHES_QUEUE, visibility_timeout=60, max_messages=2)
    engine.reconcile_batch(ctx, json.loads(first.content))
    ctx.storage.delete(BATCHES_QUEUE, first)
    # the worker holding the second batch dies: the message comes back after its visibility timeout
    ctx.storage.queue(BATCHES_QUEUE).update_message(held, visibility_timeout=1)
    code, out = world.sync()  # the next tick: the old run still holds the link, its batches are finished
    assert code == 0, out
    assert_all_six_applied(world)
    code, out = world.sync()
    assert code == 0 and "completed" in out, out
    assert_all_six_applied(world)


def test_a_scan_that_fails_midway_is_retried_without_losing_a_change(world):
    changes_of_six(world)
    # the marketing list was read, then reading its members fails hard: the scan raises and is delivered again
    world.dataverse.admin.fail_next(1, pattern=r"/contacts$", method="GET", status=500)
    code, out, progress = sync_collecting(world)
    assert code == 0, out
    assert any(f"{LINKS_QUEUE}: attempt 1 failed" in line for line in progress), progress
    assert_all_six_applied(world)


def test_a_batch_that_fails_midway_is_retried_without_losing_a_change(world):
    changes_of_six(world)
    # Dataverse fails hard on the batch's first $batch, after the Mailchimp writes went through
    world.dataverse.admin.fail_next(1, pattern=r"\$batch", method="POST", status=500)
    code, out, progress = sync_collecting(world)
    assert code == 0, out
    assert any("attempt 1 failed" in line for line in progress), progress
    assert_all_six_applied(world)
    before = writes(world)
    assert world.sync()[0] == 0
    assert writes(world) == before


def test_a_batch_past_max_dequeue_count_is_dead_lettered_and_retried_next_run(world):
    changes_of_six(world)
    world.dataverse.admin.fail_next(100, pattern=r"\$batch", method="POST", status=500)
    code, out, progress = sync_collecting(world)
    world.dataverse.admin.clear_faults()
    assert code == 1, out
    assert f"{world.link}: 1 batch(es) were dead-lettered" in out
    assert any(f"moved to {poison(BATCHES_QUEUE)} after 5 attempts" in line for line in progress), progress
    ctx = world.context()
    assert len(ctx.ledger.pending_retries(world.link)) == 1
    records = snapshot(world)[1]
    assert {email: r[0] for email, r in records.items() if email < "p3"} == {
        f"p{i}@example.org": False for i in range(3)
    }  # the Mailchimp unsubscribes have not reached Dynamics yet
    code, out = world.sync()
    assert code == 0, out
    assert_all_six_applied(world)
    assert ctx.ledger.pending_retries(world.link) == []

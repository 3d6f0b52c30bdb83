"""Reconcile units: one invocation takes several waiting batches of a run, and a failure isolates them again."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from shared import app as engine
from shared.adapters.storage import BATCHES_QUEUE, LINKS_QUEUE
from shared.cli import QueueRules, run_sync
from tests.sync_world import SyncWorld, contact

BATCH_SUBSCRIBE, DATAVERSE_BATCH = "POST /3.0/lists/{list_id}", "POST /api/data/v9.2/$batch"


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    world = SyncWorld(mailchimp_emulator, dataverse_emulator, azurite, tag=None)
    world.overrides["BATCH_SIZE"] = "2"
    world.seed([contact(f"u{i}@example.org") for i in range(6)], [])
    return world


def scanned(world: SyncWorld) -> tuple[engine.Context, str, list[dict]]:
    """Plans and scans one run; returns its batch messages (held invisible, as a worker holds them)."""
    ctx = world.context()
    [planned] = engine.plan_sync(ctx)
    [link_message] = ctx.storage.receive(LINKS_QUEUE, visibility_timeout=60)
    engine.scan_link(ctx, json.loads(link_message.content))
    ctx.storage.delete(LINKS_QUEUE, link_message)
    time.sleep(engine.GATHER_SECONDS)  # a group's later messages wait that long for its first to be taken
    messages = ctx.storage.receive(BATCHES_QUEUE, visibility_timeout=300, max_messages=32)
    for message in messages:
        ctx.storage.delete(BATCHES_QUEUE, message)
    return ctx, planned.run_id, [json.loads(m.content) for m in messages]


def states(ctx: engine.Context, world: SyncWorld, run_id: str) -> dict[str, str]:
    return {
        row["RowKey"]: row["state"]
        for row in ctx.storage.query(
            "SyncRuns", "PartitionKey eq @p", {"p": f"{world.link}|{run_id}"}, select=["RowKey", "state"]
        )
    }


def test_waiting_batches_of_a_run_are_written_together_in_whole_pages(world):
    code, out = world.sync()
    assert code == 0, out
    calls = Counter(world.mailchimp.admin.calls()) + Counter(world.dataverse.admin.calls())
    assert calls[BATCH_SUBSCRIBE] == 1 and calls[DATAVERSE_BATCH] - world.status_writes() == 1, calls
    assert sorted(world.members()) == [f"u{i}@example.org" for i in range(6)]
    [run] = world.context().ledger.latest_runs(world.link, 1)
    assert (run.status, run.batches, run.counts["merged_into"], run.counts["mailchimp_writes"]) == (
        "completed",
        3,
        2,
        6,
    )


def test_several_handlers_still_take_a_run_s_batches_as_one_unit(world):
    # the batches' messages go out together, so the handler taking the first claims the others with it
    out = io.StringIO()
    rules = QueueRules(max_dequeue_count=5, visibility_timeout=0.0)
    code = run_sync(world.context(), out, rules=rules, progress=lambda _: None, workers=4)
    assert code == 0, out.getvalue()
    calls = Counter(world.mailchimp.admin.calls()) + Counter(world.dataverse.admin.calls())
    assert calls[BATCH_SUBSCRIBE] == 1 and calls[DATAVERSE_BATCH] - world.status_writes() == 1, calls
    [run] = world.context().ledger.latest_runs(world.link, 1)
    assert (run.status, run.batches, run.counts["merged_into"]) == ("completed", 3, 2)


def test_a_unit_of_one_batch_when_the_setting_says_so(world):
    code, out = world.sync(RECONCILE_MAX_EMAILS="2")
    assert code == 0, out
    calls = Counter(world.mailchimp.admin.calls()) + Counter(world.dataverse.admin.calls())
    assert calls[BATCH_SUBSCRIBE] == 3 and calls[DATAVERSE_BATCH] - world.status_writes() == 3, calls
    assert len(world.members()) == 6


def test_a_failed_unit_gives_its_other_batches_back_each_to_go_alone(world):
    ctx, run_id, [first, *others] = scanned(world)
    world.dataverse.admin.fail_next(1, pattern=r"\$batch", method="POST", status=500)
    with pytest.raises(Exception, match="500"):
        engine.reconcile_batch(ctx, first)
    assert set(states(ctx, world, run_id).values()) == {"claimed", "waiting"}
    requeued = ctx.storage.receive(BATCHES_QUEUE, visibility_timeout=300, max_messages=32)
    assert sorted(json.loads(m.content)["batch"] for m in requeued) == sorted(o["batch"] for o in others)

    def record_batches() -> int:  # the $batch calls of reconcile, not those writing the link's status row
        return world.dataverse.admin.calls().get(DATAVERSE_BATCH, 0) - world.status_writes()

    before = record_batches()
    engine.reconcile_batch(ctx, first, dequeue_count=2)  # the host delivers it again: this time alone
    assert record_batches() == before + 1
    assert [s for b, s in states(ctx, world, run_id).items() if b != first["batch"]] == ["waiting", "waiting"]
    for message in requeued:
        engine.reconcile_batch(ctx, json.loads(message.content))  # tried once already: each goes alone
        ctx.storage.delete(BATCHES_QUEUE, message)
    assert record_batches() == before + 3
    assert set(states(ctx, world, run_id).values()) == {"done"}
    assert ctx.ledger.run(world.link, run_id)["status"] == "completed"
    assert {m["status"] for m in world.members().values()} == {"subscribed"} and len(world.members()) == 6


def test_batches_claimed_by_a_worker_that_died_are_freed_when_its_message_comes_back(world):
    ctx, run_id, [first, second, third] = scanned(world)
    unit = ctx.ledger.claim_unit(world.link, run_id, first["batch"], datetime.now(UTC), alone=False, max_emails=5000)
    assert unit is not None and len(unit.batches) == 3  # the worker took all three, then died before writing
    assert engine.reconcile_batch(ctx, second).duplicate  # its own message finds it in that live unit
    assert world.mailchimp.admin.calls().get(BATCH_SUBSCRIBE, 0) == 0
    engine.reconcile_batch(ctx, first, dequeue_count=2)  # the dead worker's message becomes visible again
    requeued = ctx.storage.receive(BATCHES_QUEUE, visibility_timeout=300, max_messages=32)
    assert sorted(json.loads(m.content)["batch"] for m in requeued) == sorted([second["batch"], third["batch"]])
    for message in requeued:
        engine.reconcile_batch(ctx, json.loads(message.content))
    assert engine.reconcile_batch(ctx, third).duplicate  # the original message, late: nothing left to do
    assert ctx.ledger.run(world.link, run_id)["status"] == "completed"
    assert world.mailchimp.admin.calls().get(BATCH_SUBSCRIBE, 0) == 3 and len(world.members()) == 6


def test_a_run_summary_names_preference_and_campaign_work():
    from shared.cli import describe_run
    from shared.state.ledger import RunSummary

    started = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    run = RunSummary(
        "newsletter",
        "r1",
        "completed",
        started,
        started,
        False,
        False,
        3,
        0,
        Counter(
            mailchimp_read=10,
            dataverse_read=12,
            preference_mailchimp_writes=2,
            preference_dynamics_writes=5,
            campaign_passes=1,
            campaign_engagements_written=40,
        ),
    )
    text = describe_run(run)
    assert "preferences: 2 members written in Mailchimp, 5 changes in Dynamics" in text
    assert "campaigns: 1 read, 40 engagement rows written" in text
    assert "preferences" not in describe_run(
        RunSummary("newsletter", "r2", "completed", started, started, False, False, 1, 0, Counter(mailchimp_read=1))
    )

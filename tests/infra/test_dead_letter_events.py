"""The dead-letter alert counts dead_lettered events: the poison-queue handlers emit exactly one per scan or batch."""

from __future__ import annotations

import json
import logging

import pytest

from shared import app as engine
from shared import telemetry
from shared.adapters.storage import BATCHES_QUEUE, LINKS_QUEUE
from tests.sync_world import SyncWorld, contact, member


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def dead_letters(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    found = [getattr(r, "custom_dimensions", {}) for r in caplog.records if r.name == telemetry.LOGGER_NAME]
    return [d for d in found if d.get("event") == telemetry.EVENT_DEAD_LETTERED]


def test_a_poisoned_batch_delivered_twice_is_one_batch_event(world, caplog: pytest.LogCaptureFixture) -> None:
    world.seed([contact("a@example.org")], [member("a@example.org")])
    ctx = world.context()
    [planned] = engine.plan_sync(ctx)
    [link_message] = ctx.storage.receive(LINKS_QUEUE, visibility_timeout=60)
    engine.scan_link(ctx, json.loads(link_message.content))
    [batch] = ctx.storage.receive(BATCHES_QUEUE, visibility_timeout=60)
    body = json.loads(batch.content)
    caplog.set_level(logging.INFO, logger=telemetry.LOGGER_NAME)
    engine.dead_letter_batch(ctx, body)
    engine.dead_letter_batch(ctx, body)  # the poison message delivered again
    [event] = dead_letters(caplog)
    assert event["stage"] == telemetry.STAGE_BATCH
    assert (event["link"], event["run_id"], event["batch_id"]) == (world.link, planned.run_id, body["batch"])


def test_a_poisoned_scan_delivered_twice_is_one_scan_event(world, caplog: pytest.LogCaptureFixture) -> None:
    world.seed([contact("a@example.org")], [member("a@example.org")])
    ctx = world.context()
    [planned] = engine.plan_sync(ctx)
    [link_message] = ctx.storage.receive(LINKS_QUEUE, visibility_timeout=60)
    body = json.loads(link_message.content)
    caplog.set_level(logging.INFO, logger=telemetry.LOGGER_NAME)
    engine.dead_letter_link(ctx, body)
    engine.dead_letter_link(ctx, body)
    [event] = dead_letters(caplog)
    assert event == {
        "event": telemetry.EVENT_DEAD_LETTERED,
        "stage": telemetry.STAGE_SCAN,
        "link": world.link,
        "run_id": planned.run_id,
    }

"""A campaign of ~2,000 recipients: pages, $batch writes, and passes that fail part-way and are read again."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.features.campaigns.test_campaigns import CAMPAIGN, advance, at, engagement, send_campaign, synced
from tests.sync_world import SyncWorld, contact, member

MAPPED, OUTSIDERS = 1050, 60


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def events(world: SyncWorld, emails: list[str], action: str, **extra: Any) -> None:
    """Everyone in ``emails`` does ``action`` now (one admin call)."""
    moment = at(world)
    world.mailchimp.admin.call(
        "POST",
        f"campaigns/{CAMPAIGN}/activity",
        {"events": [{"email_address": email, "action": action, "at": moment, **extra} for email in emails]},
    )
    advance(world, 1)


def calls(world: SyncWorld, side: str) -> Counter[str]:
    running = world.mailchimp if side == "mailchimp" else world.dataverse
    return Counter({route: n for route, n in running.admin.calls().items() if n})


def test_a_large_campaign_read_in_pages_adds_every_event_once_even_when_a_pass_fails_part_way(world):
    people = [contact(f"p{i:04d}@example.org") for i in range(MAPPED)]
    outsiders = [f"o{i:03d}@example.org" for i in range(OUTSIDERS)]
    world.seed(people, [member(p["emailaddress1"]) for p in people] + [member(e) for e in outsiders])
    synced(world)
    send_campaign(world)
    mapped = [p["emailaddress1"] for p in people]
    events(world, mapped + outsiders, "open")
    events(world, mapped[:10], "unsubscribe")
    for running in (world.mailchimp, world.dataverse):
        running.admin.reset_calls()
    # the pass fails after its first $batch writes: it is read again whole and writes the same values
    world.mailchimp.admin.fail_next(1, pattern=f"/reports/{CAMPAIGN}/unsubscribed$", status=404)
    synced(world)
    rows = engagement(world)
    assert len(rows) == MAPPED
    assert Counter(row["cbr_opens"] for row in rows.values()) == {1: MAPPED}
    assert sum(row["cbr_unsubscribed"] is True for row in rows.values()) == 10
    mailchimp = calls(world, "mailchimp")
    # two attempts, each: report, 2 pages of sent-to and of email-activity; then the unsubscribed list
    assert mailchimp["GET /3.0/reports/{campaign_id}/sent-to"] == 4
    assert mailchimp["GET /3.0/reports/{campaign_id}/email-activity"] == 4
    dataverse = calls(world, "dataverse")
    print(f"\nfirst pass, failing once: Mailchimp {dict(mailchimp)}; Dataverse {dict(dataverse)}")

    events(world, mapped, "open")
    events(world, mapped, "click", url="https://example.org/offer")
    events(world, mapped[10:15], "unsubscribe")
    for running in (world.mailchimp, world.dataverse):
        running.admin.reset_calls()
    world.mailchimp.admin.fail_next(1, pattern=f"/reports/{CAMPAIGN}/unsubscribed$", status=404)
    synced(world)
    rows = engagement(world)
    assert Counter((row["cbr_opens"], row["cbr_clicks"]) for row in rows.values()) == {(2, 1): MAPPED}
    assert sum(row["cbr_unsubscribed"] is True for row in rows.values()) == 15
    mailchimp = calls(world, "mailchimp")
    assert mailchimp["GET /3.0/reports/{campaign_id}/sent-to"] == 0  # read once, in the first pass
    assert mailchimp["GET /3.0/reports/{campaign_id}/email-activity"] == 4  # since the first pass, twice
    print(f"later pass, failing once: Mailchimp {dict(mailchimp)}; Dataverse {dict(calls(world, 'dataverse'))}")

"""Campaign activity end to end: real handlers and queues, the emulators on loopback and Azurite."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.app import reconcile_batch
from shared.features.campaigns import core as campaigns
from shared.provision import provision
from shared.rules.addresses import member_hash
from tests.sync_world import SyncWorld, contact, member, new_id

HARD, SOFT = campaigns.BOUNCE_TYPES["hard"], campaigns.BOUNCE_TYPES["soft"]
CAMPAIGN = "spring-news"


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


# ---- the world's clock and what people do -----------------------------------------------------------
def now(world: SyncWorld) -> datetime:
    return datetime.fromisoformat(world.mailchimp.admin.call("GET", "clock")["now"])


def at(world: SyncWorld, minutes: float = 0) -> str:
    return (now(world) + timedelta(minutes=minutes)).replace(microsecond=0).isoformat()


def advance(world: SyncWorld, minutes: float) -> None:
    for running in (world.mailchimp, world.dataverse):
        running.admin.advance_clock(minutes * 60)


def send_campaign(world: SyncWorld, campaign_id: str = CAMPAIGN, title: str = "Spring news") -> None:
    world.mailchimp.admin.call(
        "POST",
        "campaigns",
        {
            "list_id": world.audience,
            "id": campaign_id,
            "title": title,
            "subject_line": "What is new this spring",
            "send": True,
            "send_time": at(world),
        },
    )


def activity(world: SyncWorld, events: list[tuple[str, str, dict[str, Any]]], campaign_id: str = CAMPAIGN) -> None:
    """(email, action, extra) events happening now, a second apart."""
    world.mailchimp.admin.call(
        "POST",
        f"campaigns/{campaign_id}/activity",
        {
            "events": [
                {"email_address": email, "action": action, "at": at(world, i / 60), **extra}
                for i, (email, action, extra) in enumerate(events)
            ]
        },
    )
    advance(world, 1)


def synced(world: SyncWorld) -> str:
    code, out = world.sync()
    assert code == 0, out
    return out


# ---- what landed in Dynamics ---------------------------------------------------------------------------
def campaign_rows(world: SyncWorld) -> dict[str, dict[str, Any]]:
    rows = world.dataverse.admin.state(entity="cbr_mailchimpcampaigns")["rows"]
    return {row["cbr_mailchimpid"]: row for row in rows}


def engagement(world: SyncWorld) -> dict[str, dict[str, Any]]:
    """Engagement rows by the record they belong to."""
    rows = world.dataverse.admin.state(entity="cbr_emailengagements")["rows"]
    found = {}
    for row in rows:
        record = row.get("_cbr_contact_value") or row.get("_cbr_lead_value") or row.get("_cbr_account_value")
        assert record not in found, "two engagement rows for one record and campaign"
        found[record] = row
    return found


def report_calls(world: SyncWorld) -> list[dict[str, Any]]:
    return [r for r in world.mailchimp.admin.requests() if "/reports/" in r["path"]]


# ---- the world: four people in Dynamics, two more only in Mailchimp ----------------------------------------
@pytest.fixture
def people(world: SyncWorld) -> dict[str, dict[str, Any]]:
    found = {name: contact(f"{name}@example.org") for name in ("ann", "bo", "cy", "di")}
    world.seed(
        list(found.values()),
        [member(f"{name}@example.org") for name in found]
        + [member("outsider@example.org"), member("stranger@example.org")],
    )
    synced(world)  # the identity map: who is who
    return found


def test_a_sent_campaign_lands_with_its_totals_and_engagement_for_mapped_records_only(world, people):
    send_campaign(world)
    activity(
        world,
        [
            ("ann@example.org", "open", {}),
            ("ann@example.org", "open", {}),
            ("ann@example.org", "click", {"url": "https://example.org/spring"}),
            ("bo@example.org", "open", {}),
            ("cy@example.org", "bounce", {"type": "soft"}),
            ("outsider@example.org", "open", {}),
            ("outsider@example.org", "click", {"url": "https://x.org"}),
            ("stranger@example.org", "bounce", {"type": "hard"}),
        ],
    )
    synced(world)
    (row,) = campaign_rows(world).values()
    assert (row["cbr_name"], row["cbr_subject"], row["cbr_audienceid"]) == (
        "Spring news",
        "What is new this spring",
        world.audience,
    )
    assert (
        row["cbr_recipients"],
        row["cbr_opens"],
        row["cbr_uniqueopens"],
        row["cbr_clicks"],
        row["cbr_uniqueclicks"],
        row["cbr_bounces"],
        row["cbr_hardbounces"],
        row["cbr_unsubscribes"],
    ) == (6, 4, 3, 2, 2, 2, 1, 0)  # the outsider and the stranger count in the totals
    rows = engagement(world)
    assert set(rows) == {p["contactid"] for p in people.values()}  # recipients in Dynamics only
    ann, bo, cy, di = (rows[people[n]["contactid"]] for n in ("ann", "bo", "cy", "di"))
    assert (ann["cbr_sent"], ann["cbr_opens"], ann["cbr_clicks"], ann["cbr_lastclickedurl"]) == (
        True,
        2,
        1,
        "https://example.org/spring",
    )
    assert ann["cbr_firstopen"] < ann["cbr_lastopen"] <= ann["cbr_lastactivity"]
    assert (bo["cbr_opens"], bo["cbr_clicks"], bo["cbr_bouncetype"]) == (1, 0, None)
    assert (cy["cbr_opens"], cy["cbr_bouncetype"]) == (0, SOFT)
    assert (di["cbr_sent"], di["cbr_opens"], di["cbr_clicks"], di["cbr_lastactivity"]) == (True, 0, 0, None)
    campaign_row = campaigns.campaign_row_id(CAMPAIGN)
    assert {r["_cbr_campaign_value"] for r in rows.values()} == {campaign_row}


def test_reading_again_adds_nothing_and_later_runs_read_only_what_is_new(world, people):
    send_campaign(world)
    activity(world, [("ann@example.org", "open", {}), ("bo@example.org", "click", {"url": "https://example.org/a"})])
    synced(world)
    first = engagement(world)
    world.mailchimp.admin.clear_requests()
    synced(world)  # nothing new: the campaign list shows the same opens and clicks, nothing more is read
    assert report_calls(world) == []
    assert engagement(world) == first

    ctx = world.context()  # the same campaign message delivered once more
    outcome = reconcile_batch(
        ctx,
        {
            "kind": "campaign",
            "link": world.link,
            "run": "redelivered",
            "batch": f"campaign-{CAMPAIGN}",
            "campaign": CAMPAIGN,
        },
    )
    assert outcome.counts["campaign_engagements_written"] == 0
    assert engagement(world) == first

    read_before = now(world)
    activity(
        world,
        [
            ("ann@example.org", "open", {}),
            ("ann@example.org", "click", {"url": "https://example.org/b"}),
            ("outsider@example.org", "open", {}),
        ],
    )
    world.mailchimp.admin.clear_requests()
    synced(world)
    calls = report_calls(world)
    paths = Counter(r["path"].split(f"/reports/{CAMPAIGN}")[-1] or "report" for r in calls)
    assert paths == {"report": 1, "/email-activity": 1}  # sent-to is read once, unsubscribed only when it grew
    (read,) = [r for r in calls if r["path"].endswith("/email-activity")]
    since = datetime.fromisoformat(read["query"]["since"][0])
    overlap = campaigns.ACTIVITY_OVERLAP  # the previous read's time, less an overlap for events recorded late
    assert read_before - overlap - timedelta(minutes=2) < since <= read_before - overlap
    rows = engagement(world)
    ann, bo = rows[people["ann"]["contactid"]], rows[people["bo"]["contactid"]]
    assert (ann["cbr_opens"], ann["cbr_clicks"], ann["cbr_lastclickedurl"]) == (2, 1, "https://example.org/b")
    assert ann["cbr_firstopen"] == first[people["ann"]["contactid"]]["cbr_firstopen"]
    assert (bo["cbr_opens"], bo["cbr_clicks"]) == (0, 1)
    assert campaign_rows(world)[CAMPAIGN]["cbr_opens"] == 3


def test_activity_older_than_the_window_is_not_read_again(world, people):
    send_campaign(world)
    activity(world, [("ann@example.org", "open", {})])
    synced(world)
    advance(world, 31 * 24 * 60)  # past the 30-day window
    activity(world, [("ann@example.org", "open", {})])  # a late open still counts in the last pass
    synced(world)
    assert engagement(world)[people["ann"]["contactid"]]["cbr_opens"] == 2
    activity(world, [("ann@example.org", "open", {})])
    for _ in range(2):
        world.mailchimp.admin.clear_requests()
        synced(world)
        assert report_calls(world) == []  # closed: never read again
    (listing,) = [r for r in world.mailchimp.admin.requests() if r["path"].endswith("/campaigns")]
    sent = datetime.fromisoformat(campaign_rows(world)[CAMPAIGN]["cbr_sendtime"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(listing["query"]["since_send_time"][0]) > sent  # and no longer even listed
    assert engagement(world)[people["ann"]["contactid"]]["cbr_opens"] == 2


def test_an_unsubscribe_and_a_hard_bounce_reach_dynamics_with_the_campaign_in_the_audit(world, people):
    send_campaign(world)
    activity(
        world,
        [
            ("ann@example.org", "unsubscribe", {"reason": "Too many emails"}),
            ("bo@example.org", "bounce", {"type": "hard"}),
            ("outsider@example.org", "unsubscribe", {}),
        ],
    )
    synced(world)
    records = world.records()
    for name in ("ann", "bo"):
        assert records[people[name]["contactid"]]["donotbulkemail"] is True
    rows = engagement(world)
    assert rows[people["ann"]["contactid"]]["cbr_unsubscribed"] is True
    assert rows[people["bo"]["contactid"]]["cbr_bouncetype"] == HARD
    audit = {row["member_hash"]: row for row in world.audit() if row["rule"] == "mailchimp-changed"}
    ann, bo = audit[member_hash("ann@example.org")], audit[member_hash("bo@example.org")]
    assert (ann["side"], bo["side"]) == ("dynamics", "dynamics")
    assert "an unsubscribe in campaign Spring news (spring-news)" in ann["detail"]
    assert "a hard bounce in campaign Spring news (spring-news)" in bo["detail"]
    assert not any(
        "campaign" in row["detail"]
        for row in world.audit()
        if row["member_hash"] not in (member_hash("ann@example.org"), member_hash("bo@example.org"))
    )
    assert campaign_rows(world)[CAMPAIGN]["cbr_unsubscribes"] == 2


def test_a_cause_known_before_the_status_change_is_audited_goes_into_the_audit_row(world, people):
    send_campaign(world)
    synced(world)
    activity(world, [("cy@example.org", "unsubscribe", {})])
    ctx = world.context()  # the campaign is read before the run that audits the status change
    reconcile_batch(
        ctx,
        {
            "kind": "campaign",
            "link": world.link,
            "run": "0000000001-early",
            "batch": f"campaign-{CAMPAIGN}",
            "campaign": CAMPAIGN,
        },
    )
    synced(world)
    (row,) = [
        r
        for r in world.audit()
        if r["member_hash"] == member_hash("cy@example.org") and r["rule"] == "mailchimp-changed"
    ]
    assert row["detail"].endswith("an unsubscribe in campaign Spring news (spring-news)")
    assert world.records()[people["cy"]["contactid"]]["donotbulkemail"] is True


def test_provision_creates_the_campaign_schema_once(world, people):
    ctx = world.context()
    assert provision(ctx.settings, ctx.storage, ctx.dataverse) == []  # the seed provisioned already
    state = world.dataverse.admin.state()
    assert {"cbr_mailchimpcampaign", "cbr_emailengagement"} <= set(state["customTables"])
    assert set(state["customRelationships"]) >= {
        "cbr_cbr_mailchimpcampaign_cbr_emailengagement",
        "cbr_contact_cbr_emailengagement",
        "cbr_lead_cbr_emailengagement",
        "cbr_account_cbr_emailengagement",
    }
    views = world.dataverse.admin.state(entity="savedqueries")["rows"]
    assert {(v["returnedtypecode"], v["name"]) for v in views} >= {
        ("cbr_mailchimpcampaign", "Mailchimp campaigns by send time"),
        ("cbr_emailengagement", "Email engagement by last activity"),
    }


def test_a_campaign_pass_that_keeps_failing_lets_the_run_finish_and_resumes_next_run(world, people):
    send_campaign(world)
    activity(world, [("ann@example.org", "open", {})])
    world.mailchimp.admin.fail_next(5, pattern=f"/reports/{CAMPAIGN}$", status=404)
    code, out = world.sync()
    assert code == 1 and "dead-lettered" in out
    assert engagement(world) == {}
    synced(world)
    assert engagement(world)[people["ann"]["contactid"]]["cbr_opens"] == 1


def test_a_dry_run_reads_and_writes_no_campaign(world, people):
    send_campaign(world)
    activity(world, [("ann@example.org", "open", {})])
    world.mailchimp.admin.clear_requests()
    code, out = world.sync(dry_run=True)
    assert code == 0, out
    assert report_calls(world) == [] and campaign_rows(world) == {}


def test_engagement_rows_follow_leads_and_several_records_of_one_address(world):
    lead = {
        "leadid": new_id(),
        "lastname": "Lead",
        "emailaddress1": "shared@example.org",
        "donotbulkemail": False,
        "donotsendmm": False,
    }
    world.seed([lead], [member("shared@example.org")], list_type=4)
    synced(world)
    send_campaign(world)
    activity(world, [("shared@example.org", "open", {})])
    synced(world)
    rows = world.dataverse.admin.state(entity="cbr_emailengagements")["rows"]
    assert [(r["_cbr_lead_value"], r["_cbr_contact_value"], r["cbr_opens"]) for r in rows] == [
        (lead["leadid"], None, 1)
    ]
    assert rows[0]["cbr_emailengagementid"] == campaigns.engagement_row_id(CAMPAIGN, lead["leadid"])
    assert uuid.UUID(rows[0]["cbr_emailengagementid"])


def test_the_main_jobs_campaign_lands_and_is_described(world):
    from demo.campaigns import campaign_lines
    from demo.campaigns import send_campaign as send_demo_campaign

    people = [contact(f"reader{i}@example.org") for i in range(8)]
    world.seed(people, [member(p["emailaddress1"]) for p in people] + [member("only.mailchimp@example.org")])
    synced(world)
    said = send_demo_campaign(world.mailchimp.admin, audience=world.audience)
    assert said[0] == "the campaign 'Spring newsletter' went to 9 Newsletter members"
    synced(world)
    lines = campaign_lines(world.context())
    assert lines[0].startswith("campaign 'Spring newsletter' (spring-newsletter)")
    assert "9 recipients; opens 4 (3 people); clicks 1; bounces 2 (1 hard); unsubscribes 1" in lines[0]
    # the one who clicked is in Mailchimp only: counted in the totals, no row
    assert lines[1] == "  8 engagement rows (records in Dynamics only): 2 opened, 0 clicked, 2 bounced, 1 unsubscribed"
    causes = [line for line in lines if line.startswith("audit")]
    assert len(causes) == 2 and all("in campaign Spring newsletter (spring-newsletter)" in c for c in causes)


def test_the_activity_window_is_a_setting_of_whole_days(world):
    from shared.settings import SettingsError, load_settings

    assert load_settings(world.env()).campaign_activity_days == 30
    assert load_settings(world.env(CAMPAIGN_ACTIVITY_DAYS="7")).campaign_activity_days == 7
    for bad in ("0", "181", "a week"):
        with pytest.raises(SettingsError) as raised:
            load_settings(world.env(CAMPAIGN_ACTIVITY_DAYS=bad))
        assert str(raised.value).startswith("CAMPAIGN_ACTIVITY_DAYS: expected a whole number from 1 to 180")

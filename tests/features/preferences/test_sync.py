"""Marketing preferences end to end: real handlers, the emulators on loopback and Azurite."""

from __future__ import annotations

import json

import pytest
import requests

from shared.rules.addresses import member_hash
from shared.rules.preferences import CHANGED_BY, VISIBILITY, preference_id
from tests.features.preferences.support import (
    EVENTS,
    NEWS,
    STAFF,
    audit_rules,
    derived_row,
    dynamics_interests,
    mailchimp_interests,
    person_chooses,
    preference_rows,
    seed_with_interests,
    subscription_rows,
    synced,
    user_row_id,
    user_sets,
)
from tests.sync_world import API_KEY, SyncWorld

NONE = {NEWS: False, EVENTS: False, STAFF: False}


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def person(world: SyncWorld, action: str, email: str, **extra: object) -> dict:
    return world.mailchimp.admin.call(
        "POST", f"people/{action}", {"list_id": world.audience, "email_address": email, **extra}
    )


def later(world: SyncWorld, seconds: float = 5) -> None:
    """Time passes on both services alike."""
    world.mailchimp.admin.advance_clock(seconds)
    world.dataverse.admin.advance_clock(seconds)


# ---- catalog and first meeting --------------------------------------------------------------------
def test_the_catalog_is_mirrored_and_mailchimp_interests_become_preference_rows(world):
    ids = seed_with_interests(
        world,
        [("reader@example.org", "subscribed", {NEWS: True, STAFF: True}), ("quiet@example.org", "subscribed", {})],
    )
    synced(world)
    catalog = preference_rows(world)
    assert {
        i: (row["cbr_name"], row["cbr_category"], row["cbr_visibility"], row["cbr_active"])
        for i, row in catalog.items()
    } == {
        NEWS: ("News", "Topics", VISIBILITY["public"], True),
        EVENTS: ("Events", "Topics", VISIBILITY["public"], True),
        STAFF: ("Staff", "Internal", VISIBILITY["private"], True),
    }
    assert all(row["cbr_audienceid"] == world.audience for row in catalog.values())
    assert dynamics_interests(world, ids["reader@example.org"]) == {NEWS: True, EVENTS: False, STAFF: True}
    rows = subscription_rows(world)
    assert len(rows) == 2  # a missing row means "not opted in": only the chosen pairs get one
    assert {r["cbr_changedby"] for r in rows} == {CHANGED_BY["mailchimp"]}
    assert "preference-first-meeting-mailchimp-only" in audit_rules(world)
    synced(world)  # the second run re-reads its own writes and finds nothing to do
    assert len(subscription_rows(world)) == 2
    assert audit_rules(world).count("preference-first-meeting-mailchimp-only") == 1


def test_a_preference_row_made_before_the_first_run_meets_mailchimp_and_the_later_change_wins(world):
    ids = seed_with_interests(world, [("early@example.org", "subscribed", {NEWS: True})])
    later(world, 60)  # the user's row is newer than the member's last change
    user_sets(world, ids["early@example.org"], "events", True)
    user_sets(world, ids["early@example.org"], "news", False)
    synced(world)
    assert mailchimp_interests(world, "early@example.org") == {NEWS: False, EVENTS: True, STAFF: False}
    assert dynamics_interests(world, ids["early@example.org"]) == {NEWS: False, EVENTS: True, STAFF: False}
    assert audit_rules(world) == ["preference-first-meeting-dynamics-later"]  # one row naming both interests


# ---- one side changed --------------------------------------------------------------------------------
def test_a_dynamics_edit_reaches_mailchimp_in_the_status_sync_batch_subscribe(world):
    ids = seed_with_interests(
        world, [("one@example.org", "subscribed", {NEWS: True}), ("two@example.org", "subscribed", {})]
    )
    synced(world)
    later(world)
    user_sets(world, ids["one@example.org"], "news", False)  # a row the sync made
    user_sets(world, ids["two@example.org"], "events", True)  # a row the user adds
    world.mailchimp.admin.clear_requests()
    synced(world)
    assert mailchimp_interests(world, "one@example.org") == NONE
    assert mailchimp_interests(world, "two@example.org") == {NEWS: False, EVENTS: True, STAFF: False}
    writes = [r for r in world.mailchimp.admin.requests() if r["method"] != "GET"]
    assert [r["route"] for r in writes] == ["/3.0/lists/{list_id}"]  # one batch subscribe for both people
    sent = {m["email_address"]: m for m in writes[0]["body"]["members"]}
    assert sent["two@example.org"]["interests"] == {EVENTS: True} and "status" not in sent["two@example.org"]
    stamped = {r["cbr_preferencesubscriptionid"]: r for r in subscription_rows(world)}
    assert stamped[user_row_id(ids["two@example.org"], EVENTS)]["cbr_changedby"] == CHANGED_BY["dynamics"]
    assert stamped[derived_row(world, ids["one@example.org"], NEWS)]["cbr_changedby"] == CHANGED_BY["dynamics"]
    rows = [r for r in world.audit() if r["rule"] == "preference-dynamics-changed"]
    assert {r["member_hash"] for r in rows} == {member_hash("one@example.org"), member_hash("two@example.org")}
    assert all(r["side"] == "mailchimp" for r in rows)
    one = next(r for r in rows if r["member_hash"] == member_hash("one@example.org"))
    assert json.loads(one["mailchimp_old"]) == {NEWS: True} and json.loads(one["mailchimp_new"]) == {NEWS: False}
    assert one["records_modifiedon"] and "News = no" in one["detail"]


def test_a_mailchimp_edit_reaches_dynamics_in_the_status_sync_batch(world):
    ids = seed_with_interests(world, [("one@example.org", "subscribed", {NEWS: True, EVENTS: True})])
    synced(world)
    later(world)
    person_chooses(world, "one@example.org", news=False, staff=True)
    world.dataverse.admin.reset_calls()
    synced(world)
    assert dynamics_interests(world, ids["one@example.org"]) == {NEWS: False, EVENTS: True, STAFF: True}
    writes = {route: n for route, n in world.dataverse.admin.calls().items() if not route.startswith("GET")}
    # rows ride in the status sync's one $batch; the other is the run's status row (shared/features/status)
    assert writes == {"POST /api/data/v9.2/$batch": 2}
    row = next(r for r in world.audit() if r["rule"] == "preference-mailchimp-changed")
    assert row["side"] == "dynamics" and row["member_last_changed"]
    assert json.loads(row["dynamics_new"]) == {ids["one@example.org"]: {NEWS: False, STAFF: True}}
    assert json.loads(row["dynamics_old"]) == {ids["one@example.org"]: {NEWS: True, STAFF: False}}


# ---- both changed --------------------------------------------------------------------------------------
def test_both_changed_the_later_change_wins_and_a_tie_opts_out(world):
    ids = seed_with_interests(
        world,
        [
            ("mc-later@example.org", "subscribed", {NEWS: True}),
            ("crm-later@example.org", "subscribed", {NEWS: True}),
            ("tie@example.org", "subscribed", {NEWS: True}),
        ],
    )
    synced(world)
    later(world)
    # Mailchimp drops News; the same row is edited in Dynamics (to what it holds), before or after
    user_sets(world, ids["mc-later@example.org"], "news", True)
    later(world)
    person_chooses(world, "mc-later@example.org", news=False)
    person_chooses(world, "crm-later@example.org", news=False, staff=True)
    later(world)
    user_sets(world, ids["crm-later@example.org"], "news", True)
    user_sets(world, ids["crm-later@example.org"], "staff", False)
    edited = user_sets(world, ids["tie@example.org"], "news", True)
    person_chooses(world, "tie@example.org", at=edited, news=False)  # in the same second
    synced(world)
    assert mailchimp_interests(world, "mc-later@example.org") == NONE
    assert dynamics_interests(world, ids["mc-later@example.org"]) == NONE
    assert mailchimp_interests(world, "crm-later@example.org") == {NEWS: True, EVENTS: False, STAFF: False}
    assert dynamics_interests(world, ids["crm-later@example.org"]) == {NEWS: True, EVENTS: False, STAFF: False}
    assert mailchimp_interests(world, "tie@example.org") == NONE  # a tie opts out on both sides
    assert dynamics_interests(world, ids["tie@example.org"]) == NONE
    rules = audit_rules(world)
    assert {
        "preference-both-changed-mailchimp-later",
        "preference-both-changed-dynamics-later",
        "preference-both-changed-tie-opt-out",
    } <= set(rules)


# ---- suppressed members ------------------------------------------------------------------------------
def test_an_edit_for_an_unsubscribed_member_is_kept_and_applied_when_they_subscribe_again(world):
    ids = seed_with_interests(world, [("away@example.org", "subscribed", {NEWS: True})])
    synced(world)
    person(world, "unsubscribe", "away@example.org")
    later(world)
    user_sets(world, ids["away@example.org"], "events", True)
    user_sets(world, ids["away@example.org"], "news", False)
    synced(world)
    synced(world)  # kept, and audited once
    assert mailchimp_interests(world, "away@example.org") == {NEWS: True, EVENTS: False, STAFF: False}
    assert dynamics_interests(world, ids["away@example.org"]) == {NEWS: False, EVENTS: True, STAFF: False}
    assert audit_rules(world).count("preference-held") == 1
    held = next(r for r in world.audit() if r["rule"] == "preference-held")
    assert held["side"] == "none" and "Events = yes" in held["detail"]
    later(world)
    person(world, "resubscribe", "away@example.org")  # a signup form: subscribed again (rule 2)
    synced(world)
    assert world.members()["away@example.org"]["status"] == "subscribed"
    assert mailchimp_interests(world, "away@example.org") == {NEWS: False, EVENTS: True, STAFF: False}
    assert dynamics_interests(world, ids["away@example.org"]) == {NEWS: False, EVENTS: True, STAFF: False}
    assert "preference-held-applied" in audit_rules(world)


@pytest.mark.parametrize("suppress", ["bounce", "archive"])
def test_edits_for_cleaned_or_archived_members_are_not_written_to_mailchimp(world, suppress):
    ids = seed_with_interests(world, [("gone@example.org", "subscribed", {})])
    synced(world)
    if suppress == "bounce":
        person(world, "bounce", "gone@example.org", type="hard")
    else:
        requests.delete(
            f"{world.mailchimp.url}/3.0/lists/{world.audience}/members/{member_hash('gone@example.org')}",
            auth=("x", API_KEY),
            timeout=30,
        ).raise_for_status()
    later(world)
    user_sets(world, ids["gone@example.org"], "news", True)
    world.mailchimp.admin.clear_requests()
    synced(world, full=True)
    sent = [
        m
        for r in world.mailchimp.admin.requests()
        if r["method"] == "POST"
        for m in (r.get("body") or {}).get("members", [])
    ]
    assert all("interests" not in m for m in sent)
    assert set(world.members()["gone@example.org"]["interests"]) == set()
    assert dynamics_interests(world, ids["gone@example.org"])[NEWS] is True
    assert "preference-held" in audit_rules(world)


def test_a_kept_edit_rides_with_the_confirmation_of_a_dynamics_opt_in(world):
    ids = seed_with_interests(world, [("back@example.org", "subscribed", {})])
    synced(world)
    person(world, "unsubscribe", "back@example.org")
    synced(world)
    later(world)
    user_sets(world, ids["back@example.org"], "staff", True)
    world.dataverse.admin.call(
        "POST",
        "edit",
        {
            "entity": "contacts",
            "id": ids["back@example.org"],
            "changes": {"donotbulkemail": False, "donotsendmm": False},
        },
    )
    synced(world, RESUBSCRIBE_POLICY="confirm")  # rule 3: pending, and Mailchimp mails a confirmation
    assert world.members()["back@example.org"]["status"] == "pending"
    person(world, "confirm", "back@example.org")
    synced(world, RESUBSCRIBE_POLICY="confirm")
    assert world.members()["back@example.org"]["status"] == "subscribed"
    assert mailchimp_interests(world, "back@example.org") == {NEWS: False, EVENTS: False, STAFF: True}
    assert dynamics_interests(world, ids["back@example.org"]) == {NEWS: False, EVENTS: False, STAFF: True}


# ---- email changes -------------------------------------------------------------------------------
def test_preferences_follow_the_person_through_an_email_change_on_either_side(world):
    ids = seed_with_interests(
        world,
        [("old.crm@example.org", "subscribed", {NEWS: True}), ("old.mc@example.org", "subscribed", {EVENTS: True})],
    )
    synced(world)
    later(world)
    world.dataverse.admin.call(
        "POST",
        "edit",
        {"entity": "contacts", "id": ids["old.crm@example.org"], "changes": {"emailaddress1": "new.crm@example.org"}},
    )
    person(world, "change-email", "old.mc@example.org", new_email_address="new.mc@example.org")
    synced(world)
    assert set(world.members()) == {"new.crm@example.org", "new.mc@example.org"}
    assert mailchimp_interests(world, "new.crm@example.org") == {NEWS: True, EVENTS: False, STAFF: False}
    assert mailchimp_interests(world, "new.mc@example.org") == {NEWS: False, EVENTS: True, STAFF: False}
    assert dynamics_interests(world, ids["old.crm@example.org"]) == {NEWS: True, EVENTS: False, STAFF: False}
    assert dynamics_interests(world, ids["old.mc@example.org"]) == {NEWS: False, EVENTS: True, STAFF: False}
    later(world)  # and edits keep flowing, under the new addresses
    user_sets(world, ids["old.crm@example.org"], "staff", True)
    person_chooses(world, "new.mc@example.org", events=False)
    synced(world)
    assert mailchimp_interests(world, "new.crm@example.org") == {NEWS: True, EVENTS: False, STAFF: True}
    assert dynamics_interests(world, ids["old.mc@example.org"]) == NONE
    met = [
        (r["rule"], r["member_hash"], r["detail"], r["run_id"])
        for r in world.audit()
        if r["rule"].startswith("preference-first-meeting")
    ]
    assert {h for _, h, _, _ in met} == {member_hash("old.crm@example.org"), member_hash("old.mc@example.org")}, met


# ---- catalog changes ------------------------------------------------------------------------------
def test_a_renamed_interest_is_renamed_and_a_removed_one_deactivated(world):
    ids = seed_with_interests(world, [("fan@example.org", "subscribed", {NEWS: True, EVENTS: True})])
    synced(world)
    api = f"{world.mailchimp.url}/3.0/lists/{world.audience}/interest-categories"
    requests.patch(
        f"{api}/topics01/interests/{NEWS}", json={"name": "Weekly news"}, auth=("x", API_KEY), timeout=30
    ).raise_for_status()
    requests.patch(f"{api}/internal02", json={"type": "checkboxes"}, auth=("x", API_KEY), timeout=30).raise_for_status()
    requests.delete(f"{api}/topics01/interests/{EVENTS}", auth=("x", API_KEY), timeout=30).raise_for_status()
    synced(world)  # nothing in the member pages shows a rename: the catalog waits for a full pass
    assert preference_rows(world)[NEWS]["cbr_name"] == "News"
    synced(world, full=True)
    catalog = preference_rows(world)
    assert catalog[NEWS]["cbr_name"] == "Weekly news" and catalog[NEWS]["cbr_active"] is True
    assert catalog[EVENTS]["cbr_active"] is False  # deactivated, not deleted
    assert catalog[STAFF]["cbr_visibility"] == VISIBILITY["public"]
    later(world)
    user_sets(world, ids["fan@example.org"], "events", False)  # a removed interest no longer syncs
    user_sets(world, ids["fan@example.org"], "news", False)
    synced(world)
    assert set(world.members()["fan@example.org"]["interests"]) == set()


def test_a_new_interest_seen_in_a_member_page_refreshes_the_catalog(world):
    seed_with_interests(world, [("fan@example.org", "subscribed", {NEWS: True})])
    synced(world)
    api = f"{world.mailchimp.url}/3.0/lists/{world.audience}/interest-categories/topics01/interests"
    created = requests.post(api, json={"name": "Podcasts"}, auth=("x", API_KEY), timeout=30).json()
    person_chooses(world, "fan@example.org", **{created["id"]: True})
    synced(world)
    catalog = preference_rows(world)
    assert catalog[created["id"]]["cbr_name"] == "Podcasts"
    chosen = {r["_cbr_preference_value"] for r in subscription_rows(world) if r["cbr_optedin"]}
    assert preference_id(world.audience, created["id"]) in chosen


def test_provision_creates_the_views_on_preference_subscriptions(world):
    seed_with_interests(world, [])
    views = world.dataverse.admin.state(entity="savedqueries")["rows"]
    names = {v["name"] for v in views if v["returnedtypecode"] == "cbr_preferencesubscription"}
    assert names == {
        "Preference subscriptions: opted in",
        "Preference subscriptions: opted out",
        "Preference subscriptions: private preferences",
        "Preference subscriptions: public preferences",
    }
    assert world.provision() == []  # idempotent


# ---- cost ----------------------------------------------------------------------------------------------
def test_a_run_with_nothing_changed_costs_at_most_six_calls_with_interests(world):
    seed_with_interests(
        world, [(f"p{i}@example.org", "subscribed", {NEWS: i % 2 == 0, STAFF: i % 3 == 0}) for i in range(12)]
    )
    for _ in range(2):
        synced(world)
        later(world, 900)
    for running in (world.mailchimp, world.dataverse):
        running.admin.reset_calls()
    synced(world)
    calls = {
        side: sum(running.admin.calls().values())
        for side, running in (("mailchimp", world.mailchimp), ("dataverse", world.dataverse))
    }
    assert sum(calls.values()) <= 6 + 1, calls  # and the run's status row: one $batch (shared/features/status)


def test_changed_preferences_add_no_call_per_person_or_interest(world):
    people = [(f"p{i}@example.org", "subscribed", {NEWS: i % 2 == 0}) for i in range(30)]
    ids = seed_with_interests(world, people)
    synced(world)
    later(world)
    for i in range(0, 30, 2):
        user_sets(world, ids[f"p{i}@example.org"], "events", True)
    for i in range(1, 30, 2):
        person_chooses(world, f"p{i}@example.org", staff=True)
    for running in (world.mailchimp, world.dataverse):
        running.admin.reset_calls()
        running.admin.clear_requests()
    synced(world)
    # campaign activity is read by its own part of the run; the preference part adds no call of its own here
    mailchimp = {
        k: n for k, n in world.mailchimp.admin.calls().items() if "/campaigns" not in k and "/reports" not in k
    }
    dataverse = world.dataverse.admin.calls()
    assert mailchimp == {"GET /3.0/lists/{list_id}/members": 1, "POST /3.0/lists/{list_id}": 1}, mailchimp
    rows_read = [r for r in world.dataverse.admin.requests() if r["method"] == "GET" and "preference" in r["path"]]
    assert len(rows_read) == 1, rows_read  # one page of changed rows
    assert dataverse.get("POST /api/data/v9.2/$batch") == 2, dataverse  # the writes, and the run's status row
    assert sum(dataverse.values()) == 6, dataverse  # list, records, memberships, rows, one $batch, the status row
    assert all(mailchimp_interests(world, f"p{i}@example.org")[EVENTS] for i in range(0, 30, 2))
    assert all(dynamics_interests(world, ids[f"p{i}@example.org"])[STAFF] for i in range(1, 30, 2))


def test_a_refused_row_write_is_audited_and_written_by_a_later_run(world):
    ids = seed_with_interests(world, [("one@example.org", "subscribed", {})])
    synced(world)
    # someone deletes the News preference in Dynamics: a row cannot point at it until the catalog is mirrored again
    world.dataverse.admin.call(
        "POST", "delete", {"entity": "cbr_marketingpreferences", "ids": [preference_id(world.audience, NEWS)]}
    )
    later(world)
    person_chooses(world, "one@example.org", news=True, staff=True)
    synced(world)
    assert dynamics_interests(world, ids["one@example.org"]) == {NEWS: False, EVENTS: False, STAFF: True}
    row = next(r for r in world.audit() if r["rule"] == "preference-mailchimp-changed")
    assert json.loads(row["skipped"])[0][0] == ids["one@example.org"]
    assert json.loads(row["dynamics_new"]) == {ids["one@example.org"]: {STAFF: True}}
    synced(world, full=True)  # the full pass mirrors the catalog again and meets the pair again
    assert dynamics_interests(world, ids["one@example.org"]) == {NEWS: True, EVENTS: False, STAFF: True}


def test_a_dry_run_plans_preference_changes_and_writes_none(world):
    ids = seed_with_interests(world, [("one@example.org", "subscribed", {NEWS: True})])
    synced(world)
    later(world)
    user_sets(world, ids["one@example.org"], "events", True)
    person_chooses(world, "one@example.org", news=False)
    for running in (world.mailchimp, world.dataverse):
        running.admin.reset_calls()
    code, out = world.sync(dry_run=True)
    assert code == 0, out
    writes = [
        k for running in (world.mailchimp, world.dataverse) for k in running.admin.calls() if not k.startswith("GET")
    ]
    assert writes == []
    assert mailchimp_interests(world, "one@example.org") == {NEWS: False, EVENTS: False, STAFF: False}
    assert dynamics_interests(world, ids["one@example.org"]) == {NEWS: True, EVENTS: True, STAFF: False}
    synced(world)  # the real run then does what the dry run planned
    assert (
        mailchimp_interests(world, "one@example.org")
        == dynamics_interests(world, ids["one@example.org"])
        == {NEWS: False, EVENTS: True, STAFF: False}
    )

"""forget, end to end: the real handlers and command line, the emulators on loopback and Azurite."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest

from shared import app as engine
from shared.adapters.storage import BATCHES_QUEUE, LINKS_QUEUE, SYNC_STATE, upsert
from shared.cli import QueueRules, drain
from shared.model.snapshots import Group
from shared.rules.addresses import member_hash
from shared.state.tombstones import PARTITION, Tombstones
from tests.features.erasure.support import places_holding, run_cli
from tests.sync_world import SyncWorld, contact, member


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def unique(name: str) -> str:
    """An address no other test on this Azurite uses, so that the proof searches for this one alone."""
    return f"{name}.{uuid.uuid4().hex[:8]}@example.com"


def allowed(place: str) -> bool:
    """The member hash may stay in the audit and in the tombstone; nothing may hold the address."""
    return place.endswith(": hash") and (
        place.startswith("ConsentAudit/") or place.startswith(f"SyncState/{PARTITION}/")
    )


def test_forget_erases_the_person_everywhere_and_no_run_adds_them_again(world, tmp_path):
    email, other = unique("Ann.Forget"), unique("bob")
    ann, bob = contact(email.upper()), contact(other)
    world.seed([ann, bob], [member(email, "subscribed", merge_fields={"FNAME": "Ann"})])
    code, out = world.sync()
    assert code == 0, out
    hashed = member_hash(email)
    ctx = world.context()
    # state the product keeps beside the map: a dead-lettered batch kept for retry and a campaign cause
    ctx.ledger.record_retry(
        world.link, "r1", "b1", json.dumps([Group(hashed, email, records=[]).encode(), Group("0" * 32, other).encode()])
    )
    ctx.storage.write(SYNC_STATE, [upsert({"PartitionKey": f"{world.link}|causes", "RowKey": hashed, "text": "x"})])
    assert any(p.endswith("address") for p in places_holding(ctx.storage, email))

    code, out = run_cli(world, tmp_path, "forget", f"  {email.title()} ")

    assert code == 0, out
    assert f"member {hashed}: deleted permanently in 1 audience(s)" in out
    assert f"contact {ann['contactid']}" in out  # still holds the address: the CRM owner's to delete
    assert email.lower() not in out.lower()
    assert [p for p in places_holding(ctx.storage, email) if not allowed(p)] == []
    state = world.mailchimp.admin.state(list_id=world.audience)["audiences"][world.audience]
    assert hashed in state["forgotten"] and email not in world.members()
    retry = ctx.ledger.pending_retries(world.link)[0]
    assert [g[0] for g in json.loads(retry["groups"])] == ["0" * 32]  # the other person's group stays
    forgotten = [row for row in world.audit() if row["rule"] == "forgotten"]
    assert [(row["member_hash"], json.loads(row["record_ids"])) for row in forgotten] == [(hashed, [ann["contactid"]])]

    world.mailchimp.admin.clear_requests()
    code, out = world.sync(full=True)  # the contact still holds the address and is still in the list

    assert code == 0, out
    assert email not in world.members()
    tried = [r for r in world.mailchimp.admin.requests() if email.lower() in json.dumps(r.get("body")).lower()]
    assert tried == []  # not even a refused add: the tombstone stops it before Mailchimp
    again = [row for row in world.audit() if row["rule"] == "forgotten" and row["run_id"] != forgotten[0]["run_id"]]
    assert [json.loads(row["skipped"]) for row in again] == [[[ann["contactid"], "forgotten"]]]
    assert [p for p in places_holding(ctx.storage, email) if p.endswith("address")] == []
    assert other in world.members()


def test_forget_during_a_run_keeps_its_waiting_batches_from_adding_the_person(world, tmp_path):
    emails = [unique(f"p{n}") for n in range(6)]
    people = [contact(e) for e in emails]
    world.seed(people, [])
    ctx = world.context(BATCH_SIZE="2", RECONCILE_MAX_EMAILS="2")
    engine.plan_sync(ctx, trigger="cli")
    rules = QueueRules(5, 0.0)
    drain(ctx, {LINKS_QUEUE: lambda m, _: engine.scan_link(ctx, m)}, rules, lambda _: None)  # scanned, not reconciled
    assert ctx.storage.queue_length(BATCHES_QUEUE) >= 3
    gone = emails[3]
    assert any(p.endswith("address") for p in places_holding(ctx.storage, gone))  # in a waiting batch's payload

    code, out = run_cli(world, tmp_path, "forget", gone)

    assert code == 0, out
    assert "removed: link" in out and "batch" in out
    assert [p for p in places_holding(ctx.storage, gone) if not allowed(p)] == []
    drain(ctx, {BATCHES_QUEUE: lambda m, n: engine.reconcile_batch(ctx, m, n)}, rules, lambda _: None)
    members = world.members()
    assert set(members) == set(emails) - {gone}
    assert [p for p in places_holding(ctx.storage, gone) if not allowed(p)] == []


def test_forget_during_a_run_stops_a_unit_that_already_holds_the_person(world):
    """A unit claimed before the forget still carries the address in memory: the step skips the add."""
    email = unique("claimed")
    person = contact(email)
    world.seed([person], [])
    ctx = world.context()
    Tombstones(ctx.storage).add(member_hash(email), reason="forget")  # as forget does first, mid-unit

    code, out = world.sync()

    assert code == 0, out
    assert world.members() == {}
    rows = [row for row in world.audit() if row["member_hash"] == member_hash(email)]
    assert [(row["rule"], row["side"], json.loads(row["skipped"])) for row in rows] == [
        ("forgotten", "none", [[person["contactid"], "forgotten"]])
    ]
    assert "skipped: forgotten 1" in out
    assert [p for p in places_holding(ctx.storage, email) if p.endswith("address")] == []


def test_forget_twice_and_an_unknown_address(world, tmp_path):
    email, stranger = unique("twice"), unique("stranger")
    world.seed([contact(email)], [member(email)])
    assert world.sync()[0] == 0

    first = run_cli(world, tmp_path, "forget", email)
    second = run_cli(world, tmp_path, "forget", email)
    unknown = run_cli(world, tmp_path, "forget", stranger)

    assert first[0] == 0 and "deleted permanently in 1 audience(s)" in first[1]
    assert second[0] == 0 and "already forgotten; deleted permanently in 0 audience(s)" in second[1], second[1]
    assert "removed:" not in second[1]
    assert unknown[0] == 0 and "deleted permanently in 0 audience(s)" in unknown[1]
    assert "no Dynamics contact, lead or account holds the address" in unknown[1]
    stones = Tombstones(world.context().storage)
    assert [s.scope for s in stones.of(member_hash(stranger))] == ["*"]
    rules = Counter((row["member_hash"], row["rule"]) for row in world.audit())
    assert rules[(member_hash(email), "forgotten")] == 1  # the second call found nothing left to erase
    assert rules[(member_hash(stranger), "forgotten")] == 1


def test_forget_refuses_text_that_is_not_an_address(world, tmp_path):
    world.seed([], [])
    for text in ("not-an-address", "", "two@@example.com"):
        code, out = run_cli(world, tmp_path, "forget", text)
        assert code == 2, out
        assert "not an email address" in out


def test_forget_says_what_remains_when_mailchimp_refuses_and_a_second_run_finishes(world, tmp_path):
    email = unique("refused")
    world.seed([contact(email)], [member(email)])
    assert world.sync()[0] == 0
    world.mailchimp.admin.fail_next(1, pattern="delete-permanent", status=403)

    code, out = run_cli(world, tmp_path, "forget", email)

    assert code == 1, out
    assert "NOT DONE" in out and "refused the permanent delete" in out
    assert email in world.members()  # nothing pretended
    assert Tombstones(world.context().storage).of(member_hash(email))  # but no run adds it again meanwhile
    code, out = run_cli(world, tmp_path, "forget", email)
    assert code == 0, out
    assert email not in world.members()


def test_dry_run_changes_nothing(world, tmp_path):
    email = unique("dry")
    world.seed([contact(email)], [member(email)])
    assert world.sync()[0] == 0
    before = places_holding(world.context().storage, email)

    code, out = run_cli(world, tmp_path, "forget", email, "--dry-run")

    assert code == 0, out
    assert "would be deleted permanently in 1 audience(s)" in out and "would be removed: link" in out
    assert email in world.members()
    assert places_holding(world.context().storage, email) == before

"""A consent history row of a change written to Dynamics travels with that write: the same ``$batch`` request and the
same change set as the record's PATCH (or, when no opt-out column moved, the membership row), never beside an
UpdateMultiple; a write Dynamics refuses takes its history row with it."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from shared import app as engine
from shared.adapters.storage import BATCHES_QUEUE, LINKS_QUEUE
from shared.features.memberships.steps import membership_id
from tests.emulators.dataverse_support import Sent, sent_in_batches
from tests.features.memberships.support import EVENTS, NAMES, two_audiences
from tests.sync_world import SyncWorld, contact, member

DYNAMICS_SIDE = 100000001


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite, tag=None)


def history_rows(sent: list[Sent]) -> Iterator[Sent]:
    return (s for s in sent if f"/{NAMES.change_set}(" in s.url and s.body.get(NAMES.column("side")) == DYNAMICS_SIDE)


def record_of(history: Sent) -> str:
    bind = history.body[f"{NAMES.navigation('contact')}@odata.bind"]
    return bind.removeprefix("/contacts(").removesuffix(")")


def updated_in_bulk(world: SyncWorld) -> set[str]:
    """The records UpdateMultiple wrote since the log was emptied."""
    return {
        target["contactid"]
        for r in world.dataverse.admin.requests()
        if r["route"].endswith("UpdateMultiple")
        for target in r["body"]["Targets"]
    }


def scan_then_reconcile(world: SyncWorld, meanwhile: Callable[[], None]) -> Counter[str]:
    """One run by its handlers: the scan, then ``meanwhile`` (a user at work in Dynamics), then the reconcile."""
    ctx = world.context()
    engine.plan_sync(ctx)
    [link_message] = ctx.storage.receive(LINKS_QUEUE, visibility_timeout=60)
    engine.scan_link(ctx, json.loads(link_message.content))
    ctx.storage.delete(LINKS_QUEUE, link_message)
    meanwhile()
    [message] = ctx.storage.receive(BATCHES_QUEUE, visibility_timeout=60)
    outcome = engine.reconcile_batch(ctx, json.loads(message.content))
    ctx.storage.delete(BATCHES_QUEUE, message)
    return outcome.counts


def test_each_history_row_is_in_the_change_set_of_its_record_patch_and_a_refused_patch_leaves_none(world):
    people = [contact(f"h{n}@example.org") for n in range(5)]
    world.seed(people, [member(p["emailaddress1"]) for p in people])
    assert world.sync()[0] == 0
    world.dataverse.admin.clear_requests()
    world.mailchimp.admin.advance_clock(5)
    for person in people:
        world.mailchimp.admin.call(
            "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": person["emailaddress1"]}
        )
    read_only = people[2]["contactid"]

    # the record turns read-only after the scan read it: its PATCH is refused at write time
    counts = scan_then_reconcile(
        world,
        lambda: world.dataverse.admin.call(
            "POST", "edit", {"entity": "contacts", "id": read_only, "changes": {"statecode": 1, "statuscode": 2}}
        ),
    )

    sent = sent_in_batches(world.dataverse.admin)
    histories = list(history_rows(sent))
    assert sorted(record_of(h) for h in histories) == sorted(p["contactid"] for p in people)
    for history in histories:
        [patch] = [s for s in sent if s.method == "PATCH" and s.url.split("?")[0].endswith(f"({record_of(history)})")]
        assert history.change_set is not None and patch.change_set == history.change_set, history
        assert patch.body["donotbulkemail"] is True
    assert not updated_in_bulk(world) & {p["contactid"] for p in people}
    assert counts["dataverse_refused"] == 1 and counts["consent_history_rows_refused"] == 1
    records = world.records()
    assert [records[p["contactid"]]["donotbulkemail"] for p in people] == [True, True, False, True, True]
    stored = {
        row[NAMES.lookup_value("contact")]
        for row in world.dataverse.admin.state(entity=NAMES.change_set)["rows"]
        if row[NAMES.column("side")] == DYNAMICS_SIDE
    }
    assert stored == {p["contactid"] for p in people} - {read_only}  # no row says the refused change happened


def test_a_membership_that_moved_alone_takes_its_history_row_into_its_change_set(world):
    two = two_audiences(world)
    two.sync()
    world.dataverse.admin.clear_requests()
    ada = two.people[0]
    two.person("unsubscribe", ada["emailaddress1"], EVENTS)

    two.sync()

    assert two.opted_out(ada["contactid"]) == (False, False)  # `all`: the other audience still consents
    sent = sent_in_batches(world.dataverse.admin)
    [history] = history_rows(sent)
    row = membership_id(ada["contactid"], EVENTS)
    [membership] = [s for s in sent if s.url.endswith(f"/{NAMES.membership_set}({row})")]
    assert history.change_set is not None and membership.change_set == history.change_set
    assert two.memberships(ada["contactid"])[EVENTS] == "unsubscribed"
    assert len(two.history(ada["contactid"])) == 1

"""Never re-subscribe, over random interleavings of changes, real-time events (late, out of order, duplicated or
lost) and scheduled runs, through the events handler and the run handlers, emulators and Azurite."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.features.realtime.events import DATAVERSE, MAILCHIMP, Event
from shared.rules.addresses import member_hash
from tests.features.realtime.support import realtime_world
from tests.sync.test_properties import ACTIONS, Story
from tests.sync_world import contact, member

MAILCHIMP_EVENT = {
    "unsubscribe": "unsubscribe",
    "resubscribe": "subscribe",
    "bounce": "cleaned",
    "confirm": "subscribe",
}
DYNAMICS_USER = "00000000-0000-4000-8000-00000000d365"

people = st.lists(
    st.tuples(st.sampled_from([None, "subscribed", "unsubscribed", "pending"]), st.booleans()), min_size=2, max_size=4
)
steps = st.lists(
    st.tuples(
        st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 3)), min_size=1, max_size=3),
        st.sampled_from(["events", "run", "events then run", "run then events"]),
    ),
    min_size=2,
    max_size=4,
)


def events_of(story: Story, before: int) -> list[Event]:
    """The events the services would deliver for what happened since ``before`` in the story's history."""
    found = []
    now = datetime.now(UTC)
    for entry in story.history[before:]:
        action, email = entry.split(" ", 1)
        if action in MAILCHIMP_EVENT:
            hashed = member_hash(email)
            audience = story.world.audience
            found.append(
                Event(MAILCHIMP, now, None, audience=audience, type=MAILCHIMP_EVENT[action], member_hash=hashed)
            )
        elif action in ("opt-out", "opt-in", "add-to-list"):
            [record] = [r for r in story.records if r["emailaddress1"] == email][:1] or [None]
            if record is not None:
                found.append(
                    Event(
                        DATAVERSE,
                        now,
                        None,
                        entity="contact",
                        record_id=record["contactid"],
                        message="Update",
                        user=DYNAMICS_USER,
                    )
                )
    return found


@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(people=people, steps=steps, seed=st.integers(0, 2**16))
def test_events_and_runs_in_any_order_never_resubscribe(
    mailchimp_emulator, dataverse_emulator, azurite, people, steps, seed
):
    for running in (mailchimp_emulator, dataverse_emulator):
        running.admin.reset()
    mailchimp_emulator.admin.call("POST", "settings", {"compliance": "strict"})  # the product keeps the rule itself
    world = realtime_world(mailchimp_emulator, dataverse_emulator, azurite, tag=None)
    records = [contact(f"e{i}@example.org", opted_out=out) for i, (_, out) in enumerate(people)]
    members = [member(f"e{i}@example.org", status) for i, (status, _) in enumerate(people) if status]
    in_list = {r["contactid"] for r in records}
    world.seed(records, members, in_list=sorted(in_list))
    story = Story(world, records, in_list, history=[f"people {people}"])
    story.observe("at the start")
    story.run()
    chance = random.Random(seed)
    ctx = world.context()
    waiting: list[Event] = []
    for actions, order in steps:
        before = len(story.history)
        for action, index in actions:
            story.act(action, index)
        story.observe("by the person")
        waiting += events_of(story, before)
        for part in order.split(" then "):
            if part == "run":
                story.run()
                continue
            chance.shuffle(waiting)
            delivered = [e for e in waiting if chance.random() > 0.3]  # lost on the way
            delivered += [e for e in delivered if chance.random() < 0.2]  # and sent twice
            late = [e for e in waiting if e not in delivered and chance.random() < 0.5]  # kept for later
            if delivered:
                ctx.events.apply(delivered)
            story.history.append(f"events {len(delivered)}")
            story.observe("by real-time events")
            waiting = late
    if waiting:
        ctx.events.apply(waiting)
        story.observe("by late events")
    story.run()
    story.assert_agreement()

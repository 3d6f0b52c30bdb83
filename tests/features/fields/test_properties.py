"""The field merge's property through the emulators: after any interleaving of edits on both sides and two quiet
runs, a field mapped both ways holds the later edit on both sides."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.features.fields.support import field_map, merge_values, person_edits, seed, synced, user_edits
from tests.sync_world import SyncWorld, contact

STEPS = st.lists(st.sampled_from(["mailchimp", "dynamics", "run"]), min_size=1, max_size=4)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_a_both_field_holds_its_later_edit_on_both_sides(mailchimp_emulator, dataverse_emulator, azurite, steps):
    world = SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)
    world.overrides["FIELD_MAP"] = field_map({"column": "firstname", "mergeField": "FNAME", "direction": "both"})
    person = contact("kim@example.org", firstname="Kim")
    seed(world, [person])
    synced(world)
    latest = "Kim"
    for number, step in enumerate(steps):
        if step == "run":
            synced(world)
            continue
        # both services' clocks move on together, so that each edit is later than the one before on either side
        world.mailchimp.admin.advance_clock(10)
        world.dataverse.admin.advance_clock(10)
        latest = f"{step.title()}{number}"
        if step == "mailchimp":
            person_edits(world, "kim@example.org", FNAME=latest)
        else:
            user_edits(world, person["contactid"], firstname=latest)
    synced(world)
    synced(world)
    assert merge_values(world, "kim@example.org")["FNAME"] == latest
    assert world.records()[person["contactid"]]["firstname"] == latest

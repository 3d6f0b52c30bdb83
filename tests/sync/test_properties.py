"""Random interleavings of changes on both sides and runs, through the real handlers, emulators and Azurite.

Invariants: a member the person unsubscribed (or whose address bounced) is never subscribed again unless
the person re-subscribed through Mailchimp (a signup form or a confirmation click); and after the final
run both sides mean the same for every active record with a valid address in the marketing list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sync_world import SyncWorld, contact, member

OPTED_OUT = frozenset({"unsubscribed", "cleaned"})
CONSENTING = frozenset({"subscribed", "pending"})
ACTIONS = ("unsubscribe", "resubscribe", "bounce", "confirm", "opt-out", "opt-in", "add-to-list")

people = st.lists(
    st.tuples(
        st.booleans(),  # in the marketing list from the start
        st.sampled_from([None, "subscribed", "unsubscribed", "cleaned", "pending"]),
        st.booleans(),  # opted out in Dynamics
        st.booleans(),
    ),  # shares the first person's address (rule 7)
    min_size=3,
    max_size=6,
)
steps = st.lists(
    st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 5)), min_size=1, max_size=3), min_size=2, max_size=4
)


@dataclass
class Story:
    """The world under test and what the person has said in Mailchimp."""

    world: SyncWorld
    records: list[dict[str, Any]]
    in_list: set[str]
    refused: set[str] = field(default_factory=set)  # unsubscribed or cleaned, not re-subscribed by the person since
    history: list[str] = field(default_factory=list)

    def email(self, index: int) -> str:
        return self.records[index % len(self.records)]["emailaddress1"]

    def statuses(self) -> dict[str, str]:
        return {email: m["status"] for email, m in self.world.members().items()}

    def observe(self, moment: str) -> None:
        for email, status in self.statuses().items():
            if status == "subscribed":
                assert email not in self.refused, (
                    f"{email} was subscribed {moment} after the person left; history: {self.history}"
                )
            if status in OPTED_OUT:
                self.refused.add(email)

    def act(self, action: str, index: int) -> None:
        record = self.records[index % len(self.records)]
        email, status = record["emailaddress1"], self.statuses().get(record["emailaddress1"])
        audience = {"list_id": self.world.audience, "email_address": email}
        mailchimp, dataverse = self.world.mailchimp.admin, self.world.dataverse.admin
        if action == "unsubscribe" and status in CONSENTING:
            mailchimp.call("POST", "people/unsubscribe", audience)
        elif action == "bounce" and status == "subscribed":
            mailchimp.call("POST", "people/bounce", {**audience, "type": "hard"})
        elif action == "resubscribe":
            mailchimp.call("POST", "people/resubscribe", audience)
            self.refused.discard(email)  # the person's own signup
        elif action == "confirm" and status == "pending":
            mailchimp.call("POST", "people/confirm", audience)
            self.refused.discard(email)  # the person's own click
        elif action in ("opt-out", "opt-in"):
            value = action == "opt-out"
            dataverse.call(
                "POST",
                "edit",
                {
                    "entity": "contacts",
                    "id": record["contactid"],
                    "changes": {"donotbulkemail": value, "donotsendmm": value},
                },
            )
        elif action == "add-to-list" and record["contactid"] not in self.in_list:
            dataverse.call("POST", "members", {"listid": self.world.list_id, "add": [record["contactid"]]})
            self.in_list.add(record["contactid"])
        else:
            return
        self.history.append(f"{action} {email}")

    def run(self) -> None:
        code, out = self.world.sync()
        assert code == 0, out
        self.history.append("run")
        self.observe("by a run")

    def assert_agreement(self) -> None:
        """Per address, D = any record of the list opted out (rule 7); the member consents exactly when not D."""
        statuses, opted_out = self.statuses(), {}
        for record_id, row in self.world.records().items():
            if record_id in self.in_list:
                email = row["emailaddress1"]
                opted_out[email] = opted_out.get(email, False) or row["donotbulkemail"] or row["donotsendmm"]
        for email, out in opted_out.items():
            status = statuses.get(email)
            assert not out if status in CONSENTING else out, (
                f"{email}: Mailchimp {status or 'absent'}, Dynamics {'opted out' if out else 'not opted out'}; "
                f"history: {self.history}"
            )


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(people=people, steps=steps, policy=st.sampled_from(["never", "confirm"]))
def test_random_interleavings_never_resubscribe_and_end_in_agreement(
    mailchimp_emulator, dataverse_emulator, azurite, mailchimp_compliance, people, steps, policy
):
    for running in (mailchimp_emulator, dataverse_emulator):
        running.admin.reset()
    mailchimp_emulator.admin.call("POST", "settings", {"compliance": mailchimp_compliance})  # a reset forgets it
    world = SyncWorld(mailchimp_emulator, dataverse_emulator, azurite, overrides={"RESUBSCRIBE_POLICY": policy})
    records = [
        contact(f"h{0 if twin else i}@example.org", opted_out=opted_out)
        for i, (_, _, opted_out, twin) in enumerate(people)
    ]
    members = [
        member(f"h{i}@example.org", status)
        for i, (_, status, _, twin) in enumerate(people)
        if status and (i == 0 or not twin)
    ]  # a twin's address is the first person's member
    in_list = {r["contactid"] for r, (joined, *_) in zip(records, people, strict=True) if joined}
    world.seed(records, members, in_list=sorted(in_list))
    story = Story(world, records, in_list, history=[f"policy {policy}", f"people {people}"])
    story.observe("at the start")
    story.run()
    for step in steps:
        for action, index in step:
            story.act(action, index)
        story.observe("by the person")
        story.run()
    story.assert_agreement()

"""Random interleavings of preference edits on both sides, then a run, through the handlers, emulators and Azurite.

Invariant: after each run both sides hold the same value for every (person, interest) pair, and that value is
the one of the pair's later edit: Mailchimp's when only the person changed it in Mailchimp, Dynamics' when only
a user changed the row, the later of the two when both did and differ (to the second), "not opted in" on a tie.

Mailchimp keeps one last_changed per member, so a person's changes in Mailchimp between two runs are one
profile save here (the form a person submits); Dynamics edits are per row and any number of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.features.preferences.support import (
    INTERESTS,
    dynamics_interests,
    mailchimp_interests,
    person_chooses,
    seed_with_interests,
    synced,
    user_sets,
)
from tests.sync_world import SyncWorld

PEOPLE = 2
interests = st.sampled_from(INTERESTS)
starts = st.lists(st.fixed_dictionaries({i: st.booleans() for i in INTERESTS}), min_size=PEOPLE, max_size=PEOPLE)
dynamics_edit = st.tuples(st.just("dynamics"), st.integers(0, PEOPLE - 1), interests, st.booleans())
mailchimp_save = st.tuples(
    st.just("mailchimp"),
    st.integers(0, PEOPLE - 1),
    st.dictionaries(interests, st.booleans(), min_size=1, max_size=3),
    st.booleans(),
)  # in the same second as the Dynamics edit before it
rounds = st.lists(st.lists(st.one_of(dynamics_edit, mailchimp_save), min_size=1, max_size=5), min_size=1, max_size=2)


@dataclass
class Pair:
    """The model of one pair between two runs: the agreed value and each side's last edit (value, second)."""

    agreed: bool
    mailchimp: tuple[bool, int] | None = None
    dynamics: tuple[bool, int] | None = None

    def expected(self) -> bool:
        if self.mailchimp and self.dynamics:
            if self.mailchimp[0] == self.dynamics[0]:
                return self.mailchimp[0]  # the same choice on both sides: nothing to settle
            if self.mailchimp[1] == self.dynamics[1]:
                return False  # a tie opts out
            return max(self.mailchimp, self.dynamics, key=lambda edit: edit[1])[0]
        edit = self.mailchimp or self.dynamics
        return edit[0] if edit else self.agreed


@dataclass
class Story:
    world: SyncWorld
    emails: list[str]
    ids: dict[str, str]
    pairs: dict[tuple[int, str], Pair] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    saved: set[int] = field(default_factory=set)  # people who saved their Mailchimp profile this round
    last_dynamics_edit: str | None = None

    def tick(self) -> None:
        for running in (self.world.mailchimp, self.world.dataverse):
            running.admin.advance_clock(3)

    def act(self, event: tuple) -> None:
        side, who = event[0], event[1]
        email = self.emails[who]
        if side == "dynamics":
            _, _, interest, value = event
            self.tick()
            modified = user_sets(self.world, self.ids[email], interest, value)
            self.pairs[(who, interest)].dynamics = (value, _second(modified))
            self.last_dynamics_edit = modified
            self.history.append(f"{modified} dynamics {email} {interest}={value}")
            return
        _, _, chosen, same_second = event
        if who in self.saved:
            return  # one profile save per person between two runs
        self.saved.add(who)
        at = self.last_dynamics_edit if same_second and self.last_dynamics_edit else None
        if at is None:
            self.tick()
        before = mailchimp_interests(self.world, email)
        answer = person_chooses(self.world, email, at=at, **chosen)
        for interest, value in chosen.items():
            if value != before[interest]:  # only a real change is an edit; Mailchimp records nothing otherwise
                self.pairs[(who, interest)].mailchimp = (value, _second(answer["last_changed"]))
        self.history.append(f"{answer['last_changed']} mailchimp {email} {chosen}")

    def run_and_check(self) -> None:
        synced(self.world)
        self.history.append("run")
        for who, email in enumerate(self.emails):
            in_mailchimp = mailchimp_interests(self.world, email)
            in_dynamics = dynamics_interests(self.world, self.ids[email])
            for interest in INTERESTS:
                pair = self.pairs[(who, interest)]
                wanted = pair.expected()
                assert in_mailchimp[interest] == in_dynamics[interest] == wanted, (
                    f"{email} {interest}: Mailchimp {in_mailchimp[interest]}, Dynamics {in_dynamics[interest]}, "
                    f"expected {wanted} from {pair}; history: {self.history}"
                )
                self.pairs[(who, interest)] = Pair(wanted)
        self.saved.clear()
        self.tick()


def _second(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


# no shrinking: each example costs several runs, and a failure names the whole history of edits and runs
@settings(
    max_examples=5,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(start=starts, rounds=rounds)
def test_after_any_interleaving_both_sides_agree_on_each_pairs_later_edit(
    mailchimp_emulator, dataverse_emulator, azurite, start, rounds
):
    for running in (mailchimp_emulator, dataverse_emulator):
        running.admin.reset()
    world = SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)
    emails = [f"pref{n}@example.org" for n in range(PEOPLE)]
    ids = seed_with_interests(
        world, [(email, "subscribed", chosen) for email, chosen in zip(emails, start, strict=True)]
    )
    story = Story(
        world, emails, ids, {(n, i): Pair(start[n][i]) for n in range(PEOPLE) for i in INTERESTS}, [f"start {start}"]
    )
    story.run_and_check()
    for events in rounds:
        for event in events:
            story.act(event)
        story.run_and_check()

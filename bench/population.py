"""The benchmark's people: one static contact list linked to one audience, seeded in chunks.

Shape of a population of N records (seeded deterministically from one number):
- N contacts in the "newsletter" static marketing list, last modified long ago (2024);
- about 75 % of them are already members of the Newsletter audience: 85 % subscribed, 8 % unsubscribed,
  4 % cleaned, 3 % pending, last changed long ago;
- about 5 % of the contacts are opted out in Dynamics ("Do not allow Bulk Emails", half of those also
  "Do Not Send" marketing materials), independently of their Mailchimp status, so the first run meets
  real disagreements;
- 10 % of N more members are in the audience only (people who signed up through a Mailchimp form);
- a few oddities: 0.2 % of contacts without a usable address, 0.1 % inactive, 0.1 % upper-case
  addresses, 0.1 % sharing an address with another contact;
- ``interests`` marketing preferences (default 5): the first three in a visible category "Topics", the rest
  in a hidden one "Internal"; every member has chosen each with a 20 % chance. Dynamics holds no preference
  rows yet: the first run makes them.

Only what the changes of the incremental step need is kept in memory (ids, flags and statuses, not
the payloads), so the driver stays small at 4 x N.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from demo.scenario import NEWSLETTER_AUDIENCE, NEWSLETTER_LIST

LINK = {"name": "newsletter", "marketingListId": NEWSLETTER_LIST, "audienceId": NEWSLETTER_AUDIENCE}
DEFAULT_INTERESTS = 5  # marketing preferences (interests) of the benchmark's audience
CHUNK = 10_000  # rows per admin seed call: fast, and no single request of hundreds of megabytes
FIRST = ["ada", "ben", "cleo", "dev", "eve", "finn", "gia", "hal", "ines", "jo", "kai", "lena", "milo", "nia"]
LAST = ["archer", "brook", "castell", "dunmore", "ellis", "frost", "garner", "holt", "irving", "joss"]
LONG_AGO = datetime(2024, 1, 8, 9, 0, tzinfo=UTC)
YEAR_SECONDS = 340 * 24 * 3600


@dataclass
class Person:
    """What the benchmark remembers of one contact (its payload is not kept)."""

    contact_id: str
    email: str | None
    opted_out: bool
    member_status: str | None  # None: not in the audience
    active: bool = True
    interests: frozenset[int] = frozenset()  # positions of the member's chosen interests


def interest_id(position: int) -> str:
    return f"intr{position:06d}"


def interest_categories(interests: int) -> list[dict[str, Any]]:
    """The audience's interest categories: up to three visible interests, the rest hidden (private)."""
    visible = [{"id": interest_id(n), "name": f"Topic {n + 1}"} for n in range(min(3, interests))]
    hidden = [{"id": interest_id(n), "name": f"Internal {n - 2}"} for n in range(3, interests)]
    categories = (
        [
            {
                "list_id": NEWSLETTER_AUDIENCE,
                "id": "cattopics1",
                "title": "Topics",
                "type": "checkboxes",
                "interests": visible,
            }
        ]
        if visible
        else []
    )
    if hidden:
        categories.append(
            {
                "list_id": NEWSLETTER_AUDIENCE,
                "id": "catintern2",
                "title": "Internal",
                "type": "hidden",
                "interests": hidden,
            }
        )
    return categories


@dataclass
class Population:
    records: int
    seed: int = 11
    interests: int = DEFAULT_INTERESTS
    people: list[Person] = field(default_factory=list)
    audience_only: list[tuple[str, str]] = field(default_factory=list)  # (email, status)

    @property
    def members(self) -> int:
        return sum(p.member_status is not None for p in self.people) + len(self.audience_only)

    def chunks(self) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """(contacts, members) seed payloads, CHUNK contacts at a time; fills ``people`` as it goes."""
        rng = random.Random(self.seed)
        for start in range(0, self.records, CHUNK):
            contacts: list[dict[str, Any]] = []
            members: list[dict[str, Any]] = []
            for n in range(start, min(start + CHUNK, self.records)):
                contact, member = self._person(rng, n)
                contacts.append(contact)
                if member:
                    members.append(member)
            for n in range(start // 10, min(start + CHUNK, self.records) // 10):
                email = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{n}@example.com"
                member = _member(rng, email, self.interests)
                self.audience_only.append((email, member["status"]))
                members.append(member)
            yield contacts, members

    def _person(self, rng: random.Random, n: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        email: str | None = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{n}@example.org"
        roll = rng.random()
        if roll < 0.002:
            email = rng.choice([None, "", "not-an-address", "two@@example.org"])
        elif roll < 0.003:
            email = email.upper()
        elif roll < 0.004 and self.people and self.people[-1].email:
            email = self.people[-1].email  # two contacts, one address
        opted_out = rng.random() < 0.05
        modified = (LONG_AGO + timedelta(seconds=rng.randrange(YEAR_SECONDS))).isoformat()
        contact: dict[str, Any] = {
            "contactid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "firstname": rng.choice(FIRST).title(),
            "lastname": rng.choice(LAST).title(),
            "emailaddress1": email,
            "donotbulkemail": opted_out,
            "donotsendmm": opted_out and rng.random() < 0.5,
            "createdon": modified,
            "modifiedon": modified,
        }
        active = rng.random() >= 0.001
        if not active:
            contact.update(statecode=1, statuscode=2)
        member = None
        usable = email and "@" in email and "@@" not in email
        if usable and rng.random() < 0.75 and (not self.people or self.people[-1].email != email):
            member = _member(rng, email.lower(), self.interests)  # type: ignore[union-attr]
        chosen = frozenset(int(k[4:]) for k, on in (member or {}).get("interests", {}).items() if on)
        self.people.append(Person(contact["contactid"], email, opted_out, member and member["status"], active, chosen))
        return contact, member


def _member(rng: random.Random, email: str, interests: int = 0) -> dict[str, Any]:
    roll = rng.random()
    status = "subscribed" if roll < 0.85 else "unsubscribed" if roll < 0.93 else "cleaned" if roll < 0.97 else "pending"
    when = (LONG_AGO + timedelta(seconds=rng.randrange(YEAR_SECONDS))).isoformat()
    member = {
        "list_id": NEWSLETTER_AUDIENCE,
        "email_address": email,
        "status": status,
        "last_changed": when,
        "timestamp_opt": when,
    }
    if interests:
        member["interests"] = {interest_id(n): rng.random() < 0.2 for n in range(interests)}
    return member


def seed(world: Any, population: Population) -> None:
    """Both emulators, in chunks; the list's memberships are added with the chunk's contacts."""
    world.mailchimp_admin.seed(
        {
            "audiences": [{"id": NEWSLETTER_AUDIENCE, "name": "Newsletter"}],
            "interest_categories": interest_categories(population.interests),
        }
    )
    first = True
    for contacts, members in population.chunks():
        ids = [c["contactid"] for c in contacts]
        if first:
            world.dataverse_admin.seed(
                {
                    "contacts": contacts,
                    "lists": [
                        {
                            "listid": NEWSLETTER_LIST,
                            "listname": "Newsletter subscribers",
                            "type": False,
                            "createdfromcode": 2,
                            "members": ids,
                        }
                    ],
                }
            )
            first = False
        else:
            world.dataverse_admin.seed({"contacts": contacts})
            world.dataverse_admin.call("POST", "members", {"listid": NEWSLETTER_LIST, "add": ids})
        world.mailchimp_admin.seed({"members": members})


@dataclass
class Changes:
    """What people and users did between two runs, as counts per kind."""

    opt_outs: int = 0
    opt_ins: int = 0
    unsubscribes: int = 0
    resubscribes: int = 0
    preference_edits_dynamics: int = 0  # rows users ticked or cleared
    preference_edits_mailchimp: int = 0  # members who changed their interests through their profile

    @property
    def dynamics(self) -> int:
        return self.opt_outs + self.opt_ins

    @property
    def mailchimp(self) -> int:
        return self.unsubscribes + self.resubscribes


def apply_changes(world: Any, population: Population, share: float = 0.01, seed: int = 5) -> Changes:
    """``share`` of the records change in Dynamics and ``share`` of the members in Mailchimp, half each way.

    Chosen from what the first run left behind: a contact that was not opted out and whose member was
    subscribed or pending (or who was added) is still opted in; an opted-out contact is still opted out;
    an unsubscribed member is still unsubscribed (the sync never re-subscribes). The two sides' changes
    touch different people, so each is a one-sided change.
    """
    rng = random.Random(seed)
    usable = [p for p in population.people if p.active and p.email and "@" in p.email and "@@" not in p.email]
    opted_in = [p for p in usable if not p.opted_out and p.member_status in (None, "subscribed", "pending")]
    opted_out = [p for p in usable if p.opted_out]
    half = max(1, round(population.records * share / 2))
    to_opt_out = rng.sample(opted_in, min(half, len(opted_in)))
    to_opt_in = rng.sample(opted_out, min(half, len(opted_out)))
    edits = [{"id": p.contact_id, "changes": {"donotbulkemail": True}} for p in to_opt_out] + [
        {"id": p.contact_id, "changes": {"donotbulkemail": False, "donotsendmm": False}} for p in to_opt_in
    ]
    for start in range(0, len(edits), CHUNK):
        world.dataverse_admin.call("POST", "edit", {"entity": "contacts", "edits": edits[start : start + CHUNK]})

    touched = {p.email.lower() for p in to_opt_out + to_opt_in if p.email}
    members_half = max(1, round(population.members * share / 2))
    subscribed = [e.lower() for e, s in _member_statuses(usable, population) if s == "subscribed"]
    unsubscribed = [e.lower() for e, s in _member_statuses(usable, population) if s == "unsubscribed"]
    leaving = rng.sample([e for e in subscribed if e not in touched], members_half)
    returning = rng.sample([e for e in unsubscribed if e not in touched], min(members_half, len(unsubscribed)))
    for email in leaving:
        world.mailchimp_admin.call(
            "POST", "people/unsubscribe", {"list_id": NEWSLETTER_AUDIENCE, "email_address": email}
        )
    for email in returning:
        world.mailchimp_admin.call(
            "POST", "people/resubscribe", {"list_id": NEWSLETTER_AUDIENCE, "email_address": email}
        )
    changes = Changes(len(to_opt_out), len(to_opt_in), len(leaving), len(returning))
    if population.interests:
        touched |= set(leaving) | set(returning)
        changes.preference_edits_dynamics, changes.preference_edits_mailchimp = change_preferences(
            world, population, share, rng, touched
        )
    return changes


def change_preferences(
    world: Any, population: Population, share: float, rng: random.Random, touched: set[str]
) -> tuple[int, int]:
    """``share`` of the subscribed members get one preference changed: half by a Dynamics user on the contact,
    half by the person in Mailchimp; none of them is a person whose status changed."""
    from shared.rules.preferences import preference_id, subscription_id

    people = [
        p
        for p in population.people
        if p.active
        and p.email
        and p.member_status == "subscribed"
        and not p.opted_out
        and p.email.lower() not in touched
    ]
    chosen = rng.sample(people, min(len(people), max(2, round(population.records * share))))
    half = len(chosen) // 2
    rows, edits = [], []
    for person in chosen[:half]:
        position = rng.randrange(population.interests)
        interest = interest_id(position)
        if position in person.interests:  # the sync made this row in the first run: the user clears it
            edits.append(
                {
                    "id": subscription_id(person.contact_id, NEWSLETTER_AUDIENCE, interest),
                    "changes": {"cbr_optedin": False},
                }
            )
        else:  # the user ticks a preference the contact does not have: a new row
            rows.append(
                {
                    "cbr_preferencesubscriptionid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "cbr_name": interest,
                    "_cbr_contact_value": person.contact_id,
                    "_cbr_preference_value": preference_id(NEWSLETTER_AUDIENCE, interest),
                    "cbr_optedin": True,
                }
            )
    for start in range(0, len(rows), CHUNK):
        world.dataverse_admin.seed({"cbr_preferencesubscriptions": rows[start : start + CHUNK]})
    for start in range(0, len(edits), CHUNK):
        world.dataverse_admin.call(
            "POST", "edit", {"entity": "cbr_preferencesubscriptions", "edits": edits[start : start + CHUNK]}
        )
    for person in chosen[half:]:
        position = rng.randrange(population.interests)
        world.mailchimp_admin.call(
            "POST",
            "people/preferences",
            {
                "list_id": NEWSLETTER_AUDIENCE,
                "email_address": (person.email or "").lower(),
                "interests": {interest_id(position): position not in person.interests},
            },
        )
    return half, len(chosen) - half


def _member_statuses(usable: list[Person], population: Population) -> Iterator[tuple[str, str]]:
    """Members whose status the first run left as seeded: contacts' members that were not opted out, and
    the audience-only members (an opted-out contact's subscribed member was unsubscribed by the first run)."""
    for person in usable:
        if person.member_status and not person.opted_out:
            yield person.email, person.member_status  # type: ignore[misc]
    yield from population.audience_only

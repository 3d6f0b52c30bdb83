"""A realistic starting point on the emulators: two marketing lists over two audiences.

- "newsletter": a static contact list linked to the Newsletter audience (tag crm-newsletter);
- "events": a static lead list linked to the Events audience (tag crm-events).
Both sides hold people the other does not; some members unsubscribed, bounced (cleaned) or are pending;
some records opted out; a few contacts share an address with a lead, two contacts share one address;
some records have bad or odd addresses (missing, invalid, upper-case, plus-addressed), some are inactive,
and a few leads are already qualified (read-only).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

NEWSLETTER_LIST = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
EVENTS_LIST = "7a2d3e4f-5b6c-4d7e-9f80-1b2c3d4e5f60"
NEWSLETTER_AUDIENCE = "a1b2c3d4e5"
EVENTS_AUDIENCE = "f6e5d4c3b2"
LINKS = [
    {
        "name": "newsletter",
        "marketingListId": NEWSLETTER_LIST,
        "audienceId": NEWSLETTER_AUDIENCE,
        "tag": "crm-newsletter",
    },
    {"name": "events", "marketingListId": EVENTS_LIST, "audienceId": EVENTS_AUDIENCE, "tag": "crm-events"},
]
FIRST = ["ada", "ben", "cleo", "dev", "eve", "finn", "gia", "hal", "ines", "jo", "kai", "lena", "milo", "nia"]
LAST = ["archer", "brook", "castell", "dunmore", "ellis", "frost", "garner", "holt", "irving", "joss"]


def guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class Scenario:
    contacts: list[dict[str, Any]] = field(default_factory=list)
    leads: list[dict[str, Any]] = field(default_factory=list)
    newsletter_members: list[str] = field(default_factory=list)
    events_members: list[str] = field(default_factory=list)
    mailchimp_members: list[dict[str, Any]] = field(default_factory=list)

    def dataverse_seed(self) -> dict[str, Any]:
        return {
            "contacts": self.contacts,
            "leads": self.leads,
            "lists": [
                {
                    "listid": NEWSLETTER_LIST,
                    "listname": "Newsletter subscribers",
                    "type": False,
                    "createdfromcode": 2,
                    "members": self.newsletter_members,
                },
                {
                    "listid": EVENTS_LIST,
                    "listname": "Event leads",
                    "type": False,
                    "createdfromcode": 4,
                    "members": self.events_members,
                },
            ],
        }

    def mailchimp_seed(self) -> dict[str, Any]:
        return {
            "audiences": [{"id": NEWSLETTER_AUDIENCE, "name": "Newsletter"}, {"id": EVENTS_AUDIENCE, "name": "Events"}],
            "members": self.mailchimp_members,
        }


def build(
    contacts: int = 2000,
    leads: int = 1000,
    seed: int = 7,
    *,
    oddities: bool = True,
    overlap: float = 0.75,
    since: datetime | None = None,
) -> Scenario:
    """A scenario of the given size. ``overlap``: share of records whose address is already a member."""
    rng = random.Random(seed)
    old = since or datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    scenario = Scenario()

    def address(n: int, domain: str) -> str:
        return f"{rng.choice(FIRST)}.{rng.choice(LAST)}{n}@{domain}"

    def member(list_id: str, email: str, offset: int) -> dict[str, Any]:
        roll = rng.random()
        status = (
            "subscribed" if roll < 0.85 else "unsubscribed" if roll < 0.93 else "cleaned" if roll < 0.97 else "pending"
        )
        when = (old + timedelta(minutes=offset)).isoformat()
        return {
            "list_id": list_id,
            "email_address": email,
            "status": status,
            "last_changed": when,
            "timestamp_opt": when,
        }

    for n in range(contacts):
        email = address(n, "example.org")
        opted_out = rng.random() < 0.05
        scenario.contacts.append(
            {
                "contactid": guid(rng),
                "firstname": rng.choice(FIRST).title(),
                "lastname": rng.choice(LAST).title(),
                "emailaddress1": email,
                "donotbulkemail": opted_out,
                "donotsendmm": opted_out and rng.random() < 0.5,
            }
        )
        scenario.newsletter_members.append(scenario.contacts[-1]["contactid"])
        if rng.random() < overlap:
            scenario.mailchimp_members.append(member(NEWSLETTER_AUDIENCE, email, n))
    shared_with_contacts = [c["emailaddress1"] for c in scenario.contacts[: leads // 5]]
    for n in range(leads):
        email = shared_with_contacts[n] if n < len(shared_with_contacts) else address(n, "example.net")
        opted_out = rng.random() < 0.05
        scenario.leads.append(
            {
                "leadid": guid(rng),
                "firstname": rng.choice(FIRST).title(),
                "lastname": rng.choice(LAST).title(),
                "companyname": f"Company {n % 97}",
                "emailaddress1": email,
                "donotbulkemail": opted_out,
                "donotsendmm": False,
            }
        )
        scenario.events_members.append(scenario.leads[-1]["leadid"])
        if rng.random() < overlap:
            scenario.mailchimp_members.append(member(EVENTS_AUDIENCE, email, n))
    for n in range(contacts // 10):  # people in the audience who are not in Dynamics
        scenario.mailchimp_members.append(member(NEWSLETTER_AUDIENCE, address(n, "example.com"), n))
    if oddities:
        _add_oddities(scenario, rng)
    return scenario


def _add_oddities(scenario: Scenario, rng: random.Random) -> None:
    contacts = scenario.contacts
    for index, bad in enumerate(["", "not-an-address", "two@@example.org", "spaces in@example.org"]):
        contacts[10 + index]["emailaddress1"] = bad or None
    contacts[20]["emailaddress1"] = contacts[20]["emailaddress1"].upper()
    local, domain = contacts[21]["emailaddress1"].split("@")
    contacts[21]["emailaddress1"] = f"{local}+news@{domain}"
    twin = dict(contacts[30], contactid=guid(rng), firstname="Twin")  # two contacts, one address
    contacts.append(twin)
    scenario.newsletter_members.append(twin["contactid"])
    for index in (40, 41):
        contacts[index]["statecode"] = 1
        contacts[index]["statuscode"] = 2
    for index in (5, 6):
        scenario.leads[len(scenario.leads) - index]["statecode"] = 1
        scenario.leads[len(scenario.leads) - index]["statuscode"] = 3

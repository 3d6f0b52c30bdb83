"""What the preference tests share: an audience with interests, and what people and users do with them."""

from __future__ import annotations

from typing import Any

from shared.rules.preferences import preference_id, subscription_id
from tests.sync_world import SyncWorld, contact, member

SUBSCRIPTIONS = "cbr_preferencesubscriptions"
PREFERENCES = "cbr_marketingpreferences"
# two visible interests and one in a hidden (private) category
CATEGORIES = [
    {
        "id": "topics01",
        "title": "Topics",
        "type": "checkboxes",
        "interests": [{"id": "news00001a", "name": "News"}, {"id": "events001b", "name": "Events"}],
    },
    {"id": "internal02", "title": "Internal", "type": "hidden", "interests": [{"id": "staff0001c", "name": "Staff"}]},
]
NEWS, EVENTS, STAFF = "news00001a", "events001b", "staff0001c"
INTERESTS = (NEWS, EVENTS, STAFF)


def seed_with_interests(
    world: SyncWorld, people: list[tuple[str, str | None, dict[str, bool]]], **seed: Any
) -> dict[str, str]:
    """Contacts in the marketing list; for each (email, Mailchimp status or None, chosen interests) a member.

    Returns contact ids by email."""
    contacts = [contact(email) for email, _, _ in people]
    world.seed(contacts, [], **seed)
    world.mailchimp.admin.seed(
        {
            "interest_categories": [{"list_id": world.audience, **category} for category in CATEGORIES],
            "members": [
                {"list_id": world.audience, **member(email, status), "interests": chosen}
                for email, status, chosen in people
                if status is not None
            ],
        }
    )
    return {c["emailaddress1"]: c["contactid"] for c in contacts}


def synced(world: SyncWorld, *, full: bool = False, **overrides: str) -> str:
    code, out = world.sync(full=full, **overrides)
    assert code == 0, out
    return out


def mailchimp_interests(world: SyncWorld, email: str) -> dict[str, bool]:
    chosen = set(world.members()[email]["interests"])
    return {i: i in chosen for i in INTERESTS}


def dynamics_interests(world: SyncWorld, record_id: str) -> dict[str, bool]:
    """What Dynamics shows for one contact: a row's opted-in value, no row meaning not opted in."""
    rows = subscription_rows(world)
    found = dict.fromkeys(INTERESTS, False)
    for interest_id in INTERESTS:
        pid = preference_id(world.audience, interest_id)
        mine = [r for r in rows if r.get("_cbr_contact_value") == record_id and r.get("_cbr_preference_value") == pid]
        if mine:
            found[interest_id] = bool(max(mine, key=lambda r: r["modifiedon"])["cbr_optedin"])
    return found


def subscription_rows(world: SyncWorld) -> list[dict[str, Any]]:
    return world.dataverse.admin.state(entity=SUBSCRIPTIONS)["rows"]


def preference_rows(world: SyncWorld) -> dict[str, dict[str, Any]]:
    """Marketing preference rows by interest id."""
    return {row["cbr_interestid"]: row for row in world.dataverse.admin.state(entity=PREFERENCES)["rows"]}


def person_chooses(world: SyncWorld, email: str, at: str | None = None, **chosen: bool) -> dict[str, Any]:
    """The person edits their preferences through their Mailchimp profile."""
    body: dict[str, Any] = {
        "list_id": world.audience,
        "email_address": email,
        "interests": {_interest(k): v for k, v in chosen.items()},
    }
    if at:
        body["at"] = at
    return world.mailchimp.admin.call("POST", "people/preferences", body)


def user_sets(world: SyncWorld, record_id: str, interest: str, opted_in: bool) -> str:
    """A Dynamics user ticks or clears a preference on a contact: edits its row, or adds one. Returns modifiedon."""
    interest_id = _interest(interest)
    pid = preference_id(world.audience, interest_id)
    mine = [
        r
        for r in subscription_rows(world)
        if r.get("_cbr_contact_value") == record_id and r.get("_cbr_preference_value") == pid
    ]
    if mine:
        answer = world.dataverse.admin.call(
            "POST",
            "edit",
            {
                "entity": SUBSCRIPTIONS,
                "id": mine[0]["cbr_preferencesubscriptionid"],
                "changes": {"cbr_optedin": opted_in},
            },
        )
        return answer["edited"][0]["modifiedon"]
    row = {
        "cbr_preferencesubscriptionid": user_row_id(record_id, interest_id),
        "cbr_name": interest,
        "_cbr_contact_value": record_id,
        "_cbr_preference_value": pid,
        "cbr_optedin": opted_in,
    }
    world.dataverse.admin.seed({SUBSCRIPTIONS: [row]})
    return next(
        r["modifiedon"]
        for r in subscription_rows(world)
        if r["cbr_preferencesubscriptionid"] == row["cbr_preferencesubscriptionid"]
    )


def user_row_id(record_id: str, interest_id: str) -> str:
    """A row id as Dynamics gives a row a user adds (not the one the sync derives)."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"user-row/{record_id}/{interest_id}"))


def derived_row(world: SyncWorld, record_id: str, interest_id: str) -> str:
    return subscription_id(record_id, world.audience, interest_id)


def audit_rules(world: SyncWorld) -> list[str]:
    return [row["rule"] for row in world.audit() if row["rule"].startswith("preference-")]


def _interest(name: str) -> str:
    return {"news": NEWS, "events": EVENTS, "staff": STAFF}.get(name, name)

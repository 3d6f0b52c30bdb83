"""Mapped fields in the main job: names reach Mailchimp, and a first name edited in Mailchimp reaches Dynamics.

The demo maps ``firstname`` both ways and ``lastname`` from Dynamics to Mailchimp (``FIELD_MAP``). Call
``arrived`` after the first sync, ``change`` between the two syncs and ``report`` after the second one.
The people are made up by the scenario; the lines show their names to show what flowed.
"""

from __future__ import annotations

import json
from typing import Any

from demo import scenario as sc

FIELD_MAP = json.dumps(
    [
        {"column": "firstname", "mergeField": "FNAME", "direction": "both"},
        {"column": "lastname", "mergeField": "LNAME"},
    ]
)
NEW_FIRST_NAME = "Alexandra"
_edited: list[str] = []  # the contact whose member change() edited


def _newsletter_contacts(story: sc.Scenario) -> list[dict[str, Any]]:
    listed = set(story.newsletter_members)
    return [
        c for c in story.contacts if c["contactid"] in listed and c.get("emailaddress1") and c.get("statecode", 0) == 0
    ]


def _members(world: Any) -> dict[str, dict[str, Any]]:
    state = world.mailchimp_admin.state(list_id=sc.NEWSLETTER_AUDIENCE)
    members = state["audiences"][sc.NEWSLETTER_AUDIENCE]["members"]
    return {m["email_address"].lower(): m for m in members.values()}


def _chosen(world: Any, story: sc.Scenario) -> dict[str, Any] | None:
    """A subscribed member of the Newsletter audience whose contact is in the list."""
    members = _members(world)
    for contact in _newsletter_contacts(story):
        found = members.get(contact["emailaddress1"].strip().lower())
        if found and found["status"] == "subscribed" and found["merge_fields"].get("FNAME"):
            return contact
    return None


def arrived(world: Any, story: sc.Scenario) -> list[str]:
    """How many Newsletter members carry their contact's names now, with two examples."""
    members = _members(world)
    named, examples = 0, []
    for contact in _newsletter_contacts(story):
        found = members.get(contact["emailaddress1"].strip().lower())
        if found is None or found["status"] in ("archived", "cleaned"):
            continue
        values = found["merge_fields"]
        if (values.get("FNAME"), values.get("LNAME")) == (contact.get("firstname"), contact.get("lastname")):
            named += 1
            if len(examples) < 2:
                examples.append(f"FNAME={values['FNAME']!r}, LNAME={values['LNAME']!r}")
    return [f"{named} Newsletter members now carry their contact's first and last name (e.g. {'; '.join(examples)})"]


def change(world: Any, story: sc.Scenario) -> list[str]:
    """A person corrects their first name through their Mailchimp profile."""
    contact = _chosen(world, story)
    if contact is None:
        return ["no subscribed Newsletter member to edit a name"]
    world.mailchimp_admin.call(
        "POST",
        "people/preferences",
        {
            "list_id": sc.NEWSLETTER_AUDIENCE,
            "email_address": contact["emailaddress1"].strip(),
            "merge_fields": {"FNAME": NEW_FIRST_NAME},
        },
    )
    _edited[:] = [contact["contactid"]]  # remembered for report()
    before = contact["firstname"]
    return [f"a Newsletter subscriber changes their first name in Mailchimp from {before!r} to {NEW_FIRST_NAME!r}"]


def report(world: Any, story: sc.Scenario) -> list[str]:
    """The edited person's first name as Dynamics shows it now."""
    if not _edited:
        return ["no name was edited"]
    record_id = _edited[0]
    rows = world.dataverse_admin.state(entity="contacts")["rows"]
    row = next(r for r in rows if r["contactid"] == record_id)
    reached = "reached" if row.get("firstname") == NEW_FIRST_NAME else "did NOT reach"
    now = row.get("firstname")
    return [f"the first name edited in Mailchimp {reached} Dynamics: the contact's firstname is {now!r}"]

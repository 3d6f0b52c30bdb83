"""Marketing preferences in the main job: interests on the Newsletter audience, edits on both sides, what flowed.

Call ``seed`` after the scenario is seeded and before the first sync, ``change`` between the two syncs, and
``report`` after the second one (with the Context the syncs used).
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

from demo import scenario as sc

CATEGORIES = [
    {
        "id": "demotopics",
        "title": "Topics",
        "type": "checkboxes",
        "interests": [
            {"id": "demonews01", "name": "Product news"},
            {"id": "demoevent1", "name": "Events"},
            {"id": "demooffer1", "name": "Offers"},
            {"id": "demoguide1", "name": "Guides"},
        ],
    },
    {
        "id": "demointern",
        "title": "Internal",
        "type": "hidden",
        "interests": [{"id": "demovip001", "name": "VIP customers"}],
    },
]
INTERESTS = {i["id"]: i["name"] for c in CATEGORIES for i in c["interests"]}
WHY = {
    "preference-first-meeting-mailchimp-only": "had interests in Mailchimp and no preference rows yet: rows created",
    "preference-first-meeting-dynamics-only": "had preferences in Dynamics only: sent to Mailchimp",
    "preference-first-meeting-agree": "met with the same preferences on both sides",
    "preference-mailchimp-changed": "changed interests in Mailchimp: the preference rows follow",
    "preference-dynamics-changed": "had preferences changed in Dynamics: Mailchimp follows",
    "preference-both-changed-mailchimp-later": "changed on both sides: Mailchimp's change was later and wins",
    "preference-both-changed-dynamics-later": "changed on both sides: Dynamics' change was later and wins",
    "preference-both-changed-tie-opt-out": "changed on both sides in the same second: opted out",
    "preference-held": "is not subscribed in Mailchimp: the Dynamics change is kept until they are",
    "preference-held-applied": "is subscribed again: the kept Dynamics change reached Mailchimp",
}


def seed(world: Any, story: sc.Scenario, seed_value: int = 3) -> list[str]:
    """Interest categories on the Newsletter audience, and the interests its members had already chosen."""
    rng = random.Random(seed_value)
    world.mailchimp_admin.seed({"interest_categories": [{"list_id": sc.NEWSLETTER_AUDIENCE, **c} for c in CATEGORIES]})
    members = [m for m in story.mailchimp_members if m["list_id"] == sc.NEWSLETTER_AUDIENCE]
    for member in members:  # kept on the scenario, so that change() knows what each person had chosen
        member["interests"] = {i: rng.random() < 0.25 for i in INTERESTS}
    world.mailchimp_admin.seed({"members": members})
    chosen = sum(sum(m["interests"].values()) for m in members)
    return [
        f"the Newsletter audience has {len(INTERESTS)} interests in {len(CATEGORIES)} categories (one hidden); "
        f"its {len(members)} members had chosen {chosen} of them"
    ]


def change(world: Any, story: sc.Scenario) -> list[str]:
    """People and users change preferences between two syncs."""
    from shared.rules.preferences import preference_id, subscription_id

    contacts = {c["emailaddress1"]: c for c in story.contacts if c.get("emailaddress1") and not c.get("statecode")}
    members = [
        m
        for m in story.mailchimp_members
        if m["list_id"] == sc.NEWSLETTER_AUDIENCE
        and m["email_address"] in contacts
        and not contacts[m["email_address"]]["donotbulkemail"]
    ]
    subscribed = [m for m in members if m["status"] == "subscribed"][20:]  # clear of the status changes
    unsubscribed = [m for m in members if m["status"] == "unsubscribed"][2:]
    said = []

    for member in subscribed[:3]:
        world.mailchimp_admin.call(
            "POST",
            "people/preferences",
            {
                "list_id": sc.NEWSLETTER_AUDIENCE,
                "email_address": member["email_address"],
                "interests": {"demooffer1": not member["interests"]["demooffer1"], "demoguide1": True},
            },
        )
    said.append("3 people changed their interests through their Mailchimp profile (Offers toggled, Guides ticked)")

    ticked = [
        _user_row(
            contacts[m["email_address"]]["contactid"],
            "demoevent1",
            True,
            preference_id(sc.NEWSLETTER_AUDIENCE, "demoevent1"),
        )
        for m in subscribed[3:6]
        if not m["interests"]["demoevent1"]
    ]
    cleared = [
        {
            "id": subscription_id(contacts[m["email_address"]]["contactid"], sc.NEWSLETTER_AUDIENCE, "demonews01"),
            "changes": {"cbr_optedin": False},
        }
        for m in subscribed[6:12]
        if m["interests"]["demonews01"]
    ][:2]
    if ticked:
        world.dataverse_admin.seed({"cbr_preferencesubscriptions": ticked})
    if cleared:
        world.dataverse_admin.call("POST", "edit", {"entity": "cbr_preferencesubscriptions", "edits": cleared})
    said.append(
        f"{len(ticked)} contacts were given the Events preference and {len(cleared)} lost Product news in Dynamics"
    )

    away = unsubscribed[0]
    world.dataverse_admin.seed(
        {
            "cbr_preferencesubscriptions": [
                _user_row(
                    contacts[away["email_address"]]["contactid"],
                    "demovip001",
                    True,
                    preference_id(sc.NEWSLETTER_AUDIENCE, "demovip001"),
                )
            ]
        }
    )
    said.append(
        "1 contact who had unsubscribed in Mailchimp was marked 'VIP customers' in Dynamics (kept until "
        "they subscribe again)"
    )

    world.mailchimp_admin.call(
        "POST",
        "people/preferences",
        {
            "list_id": sc.NEWSLETTER_AUDIENCE,
            "email_address": subscribed[12]["email_address"],
            "interests": {"demovip001": True},
        },
    )
    said.append("1 person was added to the hidden 'VIP customers' group in Mailchimp (a private preference)")
    return said


def report(ctx: Any, link: str = "newsletter", examples: int = 2) -> list[str]:
    """The preference rows of the link's latest run's audit, by rule, and the catalog as Dynamics shows it."""
    from shared.adapters.storage import CONSENT_AUDIT
    from shared.features.preferences.catalog import Names
    from shared.rules.preferences import VISIBILITY

    run = ctx.ledger.latest_runs(link, 1)[0]
    rows = [
        r
        for r in ctx.storage.query(
            CONSENT_AUDIT,
            "RowKey ge @a and RowKey lt @b and link eq @l",
            {"a": f"{run.run_id}|", "b": f"{run.run_id}}}", "l": link},
        )
        if str(r["rule"]).startswith("preference-")
    ]
    lines = []
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_rule.setdefault(row["rule"], []).append(row)
    for rule, found in sorted(by_rule.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"{link}: {len(found)} x {rule}")
        for row in found[:examples]:
            text = f"    member {row['member_hash'][:8]} {WHY.get(rule, rule)}; {row['detail']}"
            if row.get("mailchimp_new"):
                text += f"; Mailchimp {_names(row['mailchimp_old'])} → {_names(row['mailchimp_new'])}"
            if row.get("dynamics_new"):
                text += f"; Dynamics rows on {len(json.loads(row['dynamics_new']))} record(s)"
            lines.append(text)
    names = Names(ctx.settings.dataverse_prefix)
    catalog = list(
        ctx.dataverse.iter_pages(
            names.preference_set,
            select=[names.column("name"), names.column("category"), names.column("visibility"), names.column("active")],
        )
    )
    shown = [
        f"{r[names.column('name')]} ({r[names.column('category')]}, "
        f"{'private' if r[names.column('visibility')] == VISIBILITY['private'] else 'public'})"
        for page in catalog
        for r in page
        if r.get(names.column("active"))
    ]
    lines.append(f"Dynamics marketing preferences: {', '.join(sorted(shown))}")
    opted_in = sum(
        1
        for page in ctx.dataverse.iter_pages(
            names.subscription_set,
            select=[f"{names.subscription_table}id"],
            filter=f"{names.column('optedin')} eq true",
        )
        for _ in page
    )
    lines.append(f"Preference subscriptions opted in, in Dynamics: {opted_in}")
    return lines or [f"{link}: no preference changed"]


def _user_row(contact_id: str, interest_id: str, opted_in: bool, preference: str) -> dict[str, Any]:
    """A row as a Dynamics user adds it on a contact's form (its own id, not one the sync derives)."""
    return {
        "cbr_preferencesubscriptionid": str(uuid.uuid4()),
        "cbr_name": INTERESTS[interest_id],
        "_cbr_contact_value": contact_id,
        "_cbr_preference_value": preference,
        "cbr_optedin": opted_in,
    }


def _names(text: str) -> str:
    chosen = json.loads(text or "{}")
    return ", ".join(f"{INTERESTS.get(i, i)} {'yes' if on else 'no'}" for i, on in chosen.items())
